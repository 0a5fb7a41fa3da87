"""CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision"): the text transformer Stable Diffusion conditions on, the vision transformer, and the
two projections + logit scale the scorers use.

Text tower (§2.4 of the paper; SD1's ViT-L/14 text tower with quick_gelu, SD2's OpenCLIP ViT-H
text tower with gelu): token embedding + learned position embedding → pre-LayerNorm transformer
layers with a causal mask → final LayerNorm. The pooled text feature is the final state at the EOS
token, found as transformers does: `eos_token_id == 2` (configs written before transformers
fixed CLIP's eos id) → the position of the highest token id (the EOS has the highest id in the
original vocabulary); otherwise → the first position whose id equals `eos_token_id`.

"Clip skip" / penultimate layer. diffusers' SD 2.x checkpoints express SD2's use of OpenCLIP's
penultimate layer in the config itself: their `text_encoder/config.json` has
`num_hidden_layers: 23` (OpenCLIP ViT-H's 24th block is dropped at conversion), and the
conditioning is that model's last hidden state after `final_layer_norm` — so loading the config
as written is already SD2's conditioning, and nothing else is applied. diffusers' pipelines also
take a `clip_skip=k` call argument: hidden_states[-(k + 1)] of the text encoder (the state after
its first `num_hidden_layers − k` layers), then `final_layer_norm`. `clip_skip` here is that
argument, literally: counted from the end of the config's own layer stack (so clip_skip=1 on
SD2's 23-layer encoder runs 22 layers), followed by the final LayerNorm; the pooled output then
comes from that state too. Default 0 (the config as written); `text.with_clip_skip` sets it.

`encode_embeddings` is the token-embedding entry point of soft-token attacks (ATM's
Gumbel-softmax mixtures, SAGE's adversarial token embeddings): input token embeddings
[P, L, D] → hidden states, differentiable; position embeddings are added inside.

Parameter trees (names, nesting, shapes) are those of transformers' Flax CLIP classes, so the
toy world's `flax_model.msgpack` files load unchanged; PyTorch safetensors map onto them in
`convert_transformers`. Written with flax.linen rather than NNX: the project passes params as
pure pytrees into jitted and sharded functions (replicated across the mesh, cast, donated), and the
shipped msgpack files are linen param trees. Every attention goes through
`jaxdiffattack.models.attention.attention` with the implementation chosen at load time.
"""

import dataclasses
from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdiffattack.errors import ConfigError
from jaxdiffattack.models import transformers_config as tc
from jaxdiffattack.models.attention import attention as attention_fn

# Keys of CLIP configs that only matter for training (dropout, initialisation).
_TRAINING_KEYS = frozenset({"attention_dropout", "dropout", "hidden_dropout",
                            "initializer_range", "initializer_factor"})


def _check_heads(config, source: str) -> None:
  if config.hidden_size % config.num_attention_heads:
    raise ConfigError(f"{source}: hidden_size={config.hidden_size} is not a multiple of "
                      f"num_attention_heads={config.num_attention_heads}")


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
  """The text tower's config.json keys (defaults: transformers' CLIPTextConfig)."""
  vocab_size: int = 49408
  hidden_size: int = 512
  intermediate_size: int = 2048
  num_hidden_layers: int = 12
  num_attention_heads: int = 8
  max_position_embeddings: int = 77
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  eos_token_id: int = 49407
  projection_dim: int = 512       # CLIPTextModelWithProjection's; CLIPModel uses its own

  @classmethod
  def from_dict(cls, raw: Mapping[str, Any], source: str) -> "CLIPTextConfig":
    # use_attention_mask=True makes diffusers' pipelines pass the padding mask to the SD text
    # encoder; `text.encode_ids` does not, so such a checkpoint is refused.
    config = tc.parse(cls, raw, source, ignored=_TRAINING_KEYS,
                      pinned={"use_attention_mask": (False,)},
                      choices={"hidden_act": tc.ACTIVATIONS})
    _check_heads(config, source)
    return config


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
  """The vision tower's config.json keys (defaults: transformers' CLIPVisionConfig)."""
  hidden_size: int = 768
  intermediate_size: int = 3072
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  image_size: int = 224
  patch_size: int = 32
  num_channels: int = 3
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  projection_dim: int = 512

  @classmethod
  def from_dict(cls, raw: Mapping[str, Any], source: str) -> "CLIPVisionConfig":
    config = tc.parse(cls, raw, source, ignored=_TRAINING_KEYS,
                      choices={"hidden_act": tc.ACTIVATIONS})
    _check_heads(config, source)
    return config


@dataclasses.dataclass(frozen=True)
class _CLIPTopConfig:
  """The top level of a two-tower CLIP config.json (the towers' sub-configs apart)."""
  projection_dim: int = 512
  logit_scale_init_value: float = 2.6592  # log(1/0.07); initialisation only


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
  """A two-tower CLIP's config.json (model_type "clip")."""
  text: CLIPTextConfig = CLIPTextConfig()
  vision: CLIPVisionConfig = CLIPVisionConfig()
  projection_dim: int = 512
  logit_scale_init_value: float = 2.6592  # log(1/0.07); initialisation only

  @classmethod
  def from_dict(cls, raw: Mapping[str, Any], source: str) -> "CLIPConfig":
    raw = dict(raw)
    # As transformers: the legacy *_config_dict entries override *_config.
    text = dict(raw.pop("text_config", None) or {}, **(raw.pop("text_config_dict", None) or {}))
    vision = dict(raw.pop("vision_config", None) or {},
                  **(raw.pop("vision_config_dict", None) or {}))
    top = tc.parse(_CLIPTopConfig, raw, source, ignored=_TRAINING_KEYS)
    return cls(text=CLIPTextConfig.from_dict(text, f"{source} text_config"),
               vision=CLIPVisionConfig.from_dict(vision, f"{source} vision_config"),
               projection_dim=top.projection_dim,
               logit_scale_init_value=top.logit_scale_init_value)


def eos_positions(input_ids: jax.Array, eos_token_id: int) -> jax.Array:
  """[P] index of the EOS token in each row of ids [P, L] (transformers' two conventions)."""
  if eos_token_id == 2:  # configs older than transformers' CLIP eos fix: highest id = EOS
    return jnp.argmax(input_ids, axis=-1)
  return jnp.argmax(input_ids == eos_token_id, axis=-1)


# ---------------------------------------------------------------------------- shared layers --
# `config` below is a CLIPTextConfig or a CLIPVisionConfig: both towers share the layer design.


class CLIPAttention(nn.Module):
  """Multi-head self-attention with q/k/v/out projections (names as transformers')."""
  config: Any
  dtype: Any = jnp.float32
  causal: bool = False
  attention: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    batch, length, width = x.shape                              # [B, T, D]
    heads = self.config.num_attention_heads
    dense = lambda name: nn.Dense(width, dtype=self.dtype, name=name,
                                  kernel_init=jax.nn.initializers.normal(0.01))
    split = lambda y: y.reshape(batch, length, heads, width // heads)
    q, k, v = (split(dense(f"{n}_proj")(x)) for n in ("q", "k", "v"))   # [B, T, N, H]
    out = attention_fn(q, k, v, mask=mask, is_causal=self.causal,
                       implementation=self.attention, site="/".join(self.path))
    return dense("out_proj")(out.reshape(batch, length, width))


class CLIPEncoderLayer(nn.Module):
  """Pre-LayerNorm block: x + attn(LN1 x), then x + fc2(act(fc1(LN2 x)))."""
  config: Any
  dtype: Any = jnp.float32
  causal: bool = False
  attention: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    c = self.config
    norm = lambda name: nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name=name)
    x = x + CLIPAttention(c, self.dtype, self.causal, self.attention, name="self_attn")(
        norm("layer_norm1")(x), mask)
    return x + _CLIPMLP(c, self.dtype, name="mlp")(norm("layer_norm2")(x))


class _CLIPMLP(nn.Module):
  config: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dense = lambda width, name: nn.Dense(width, dtype=self.dtype, name=name,
                                         kernel_init=jax.nn.initializers.normal(0.01))
    x = tc.ACTIVATIONS[self.config.hidden_act](dense(self.config.intermediate_size, "fc1")(x))
    return dense(self.config.hidden_size, "fc2")(x)


class _CLIPLayers(nn.Module):
  """The layer stack (params `layers/0`, `layers/1`, ...); runs the first `num_layers`."""
  config: Any
  dtype: Any = jnp.float32
  causal: bool = False
  attention: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None, num_layers: int) -> jax.Array:
    for i in range(num_layers):
      x = CLIPEncoderLayer(self.config, self.dtype, self.causal, self.attention, name=str(i))(
          x, mask)
    return x


class CLIPEncoder(nn.Module):
  config: Any
  dtype: Any = jnp.float32
  causal: bool = False
  attention: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None,
               num_layers: int | None = None) -> jax.Array:
    num_layers = self.config.num_hidden_layers if num_layers is None else num_layers
    return _CLIPLayers(self.config, self.dtype, self.causal, self.attention, name="layers")(
        x, mask, num_layers)


# ------------------------------------------------------------------------------ text tower --


class TextOutput(NamedTuple):
  last_hidden_state: jax.Array   # [P, L, D] after final_layer_norm
  pooled: jax.Array              # [P, D] the state at each row's EOS token


class CLIPTextTransformer(nn.Module):
  """Token ids or input token embeddings → hidden states [P, L, D] (causal; final LayerNorm)."""
  config: CLIPTextConfig
  dtype: Any = jnp.float32
  attention: str = "xla"
  clip_skip: int = 0   # layers skipped from the end of the stack (diffusers' `clip_skip`)

  def setup(self):
    c = self.config
    self.embeddings = _CLIPTextEmbeddings(c, self.dtype)
    self.encoder = CLIPEncoder(c, self.dtype, causal=True, attention=self.attention)
    self.final_layer_norm = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype)

  def embed_tokens(self, input_ids: jax.Array) -> jax.Array:
    """Input token embeddings [P, L, D] (no position embedding) of ids [P, L]."""
    return self.embeddings.token_embedding(input_ids)

  def encode_embeddings(self, token_embeds: jax.Array,
                        attention_mask: jax.Array | None = None) -> jax.Array:
    """Hidden states [P, L, D] from input token embeddings [P, L, D]; differentiable.

    attention_mask: optional [P, L], 1 = real token, 0 = padding (keys masked out).
    """
    length = token_embeds.shape[-2]
    hidden = token_embeds.astype(self.dtype) + self.embeddings.position_embedding(
        jnp.arange(length))
    mask = None
    if attention_mask is not None:
      mask = (attention_mask > 0)[:, None, None, :]              # [P, 1, 1, L]
    hidden = self.encoder(hidden, mask, self.config.num_hidden_layers - self.clip_skip)
    return self.final_layer_norm(hidden)

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None):
    hidden = self.encode_embeddings(self.embed_tokens(input_ids), attention_mask)
    rows = jnp.arange(hidden.shape[0])
    return TextOutput(hidden, hidden[rows, eos_positions(input_ids, self.config.eos_token_id)])


class _CLIPTextEmbeddings(nn.Module):
  config: CLIPTextConfig
  dtype: Any = jnp.float32

  def setup(self):
    init = jax.nn.initializers.normal(0.01)
    c = self.config
    self.token_embedding = nn.Embed(c.vocab_size, c.hidden_size, dtype=self.dtype,
                                    embedding_init=init)
    self.position_embedding = nn.Embed(c.max_position_embeddings, c.hidden_size,
                                       dtype=self.dtype, embedding_init=init)


class CLIPTextModel(nn.Module):
  """The SD text encoder (transformers' CLIPTextModel): params {"text_model": ...}."""
  config: CLIPTextConfig
  dtype: Any = jnp.float32
  attention: str = "xla"
  clip_skip: int = 0

  def setup(self):
    self.text_model = CLIPTextTransformer(self.config, self.dtype, self.attention,
                                          self.clip_skip)

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None):
    return self.text_model(input_ids, attention_mask)

  def embed_tokens(self, input_ids: jax.Array) -> jax.Array:
    return self.text_model.embed_tokens(input_ids)

  def encode_embeddings(self, token_embeds: jax.Array,
                        attention_mask: jax.Array | None = None) -> jax.Array:
    return self.text_model.encode_embeddings(token_embeds, attention_mask)


# ---------------------------------------------------------------------------- vision tower --


class _CLIPVisionEmbeddings(nn.Module):
  """[CLS] + non-overlapping patch embeddings + learned position embeddings."""
  config: CLIPVisionConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pixels: jax.Array) -> jax.Array:
    c = self.config
    class_embedding = self.param("class_embedding", jax.nn.initializers.normal(0.02),
                                 (c.hidden_size,))
    patches = nn.Conv(c.hidden_size, (c.patch_size, c.patch_size),
                      strides=(c.patch_size, c.patch_size), padding="VALID", use_bias=False,
                      dtype=self.dtype, kernel_init=jax.nn.initializers.normal(0.01),
                      name="patch_embedding")(pixels)           # [P, h', w', D]
    patches = patches.reshape(patches.shape[0], -1, c.hidden_size)
    cls = jnp.broadcast_to(class_embedding.astype(patches.dtype),
                           (patches.shape[0], 1, c.hidden_size))
    tokens = jnp.concatenate([cls, patches], axis=1)            # [P, 1 + n, D]
    positions = nn.Embed(tokens.shape[1], c.hidden_size, dtype=self.dtype,
                         embedding_init=jax.nn.initializers.normal(0.01),
                         name="position_embedding")(jnp.arange(tokens.shape[1]))
    return tokens + positions


class CLIPVisionTransformer(nn.Module):
  """Normalised pixels [P, h, w, C] (channels last) → (last hidden [P, 1+n, D], pooled [P, D])."""
  config: CLIPVisionConfig
  dtype: Any = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(self, pixels: jax.Array):
    c = self.config
    norm = lambda name: nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name=name)
    hidden = _CLIPVisionEmbeddings(c, self.dtype, name="embeddings")(pixels.astype(self.dtype))
    hidden = norm("pre_layrnorm")(hidden)   # sic: transformers' parameter name
    hidden = CLIPEncoder(c, self.dtype, attention=self.attention, name="encoder")(hidden)
    return hidden, norm("post_layernorm")(hidden[:, 0])


# ------------------------------------------------------------------------------- two towers --


class CLIPModel(nn.Module):
  """Both towers, the projections to the joint space and the learned logit scale."""
  config: CLIPConfig
  dtype: Any = jnp.float32
  attention: str = "xla"

  def setup(self):
    c = self.config
    projection = lambda: nn.Dense(c.projection_dim, use_bias=False, dtype=self.dtype,
                                  kernel_init=jax.nn.initializers.normal(0.02))
    self.text_model = CLIPTextTransformer(c.text, self.dtype, self.attention)
    self.vision_model = CLIPVisionTransformer(c.vision, self.dtype, self.attention)
    self.visual_projection = projection()
    self.text_projection = projection()
    self.logit_scale = self.param(
        "logit_scale", lambda _: jnp.asarray(c.logit_scale_init_value, jnp.float32))

  def get_text_features(self, input_ids: jax.Array,
                        attention_mask: jax.Array | None = None) -> jax.Array:
    """Projected (not normalised) text features [N, projection_dim]."""
    return self.text_projection(self.text_model(input_ids, attention_mask).pooled)

  def get_image_features(self, pixels: jax.Array) -> jax.Array:
    """Projected (not normalised) image features [P, projection_dim] of pixels [P, h, w, C]."""
    return self.visual_projection(self.vision_model(pixels)[1])

  def __call__(self, input_ids: jax.Array, pixels: jax.Array,
               attention_mask: jax.Array | None = None):
    """(logits_per_image [P, N], logits_per_text [N, P]): exp(logit_scale) × cosine."""
    normalise = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    text = normalise(self.get_text_features(input_ids, attention_mask))
    image = normalise(self.get_image_features(pixels))
    logits_per_text = jnp.exp(self.logit_scale) * text @ image.T
    return logits_per_text.T, logits_per_text


def check_clip_skip(clip_skip: int, config: CLIPTextConfig, source: str) -> int:
  """`clip_skip` if 0 ≤ clip_skip < num_hidden_layers; one-line error otherwise."""
  if isinstance(clip_skip, bool) or not isinstance(clip_skip, int) or not (
      0 <= clip_skip < config.num_hidden_layers):
    raise ConfigError(f"clip_skip={clip_skip!r} is invalid for {source} "
                      f"(num_hidden_layers={config.num_hidden_layers}): use 0 ≤ clip_skip < "
                      f"{config.num_hidden_layers}")
  return clip_skip
