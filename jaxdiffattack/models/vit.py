"""Vision Transformer image classifier (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words",
eqs. 1–4): patch embeddings + [CLS] token + learned position embeddings, pre-LayerNorm encoder
layers, a final LayerNorm, and a linear head on the [CLS] state.

Matches transformers' `ViTForImageClassification` (no pooler: the classification head reads the
[CLS] state directly, so `pooler_act` / `pooler_output_size` have no effect and are accepted). The
parameter tree equals transformers' Flax ViT's, so `flax_model.msgpack` files load unchanged.
flax.linen, not NNX: params are pure pytrees passed into jitted/sharded scorer code, and the
shipped msgpack files are linen param trees. Attention goes through
`jaxdiffattack.models.attention.attention` (implementation chosen at load time). Dropout is not
implemented (inference and the toy world's training use rate 0).
"""

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdiffattack.errors import ConfigError
from jaxdiffattack.models import transformers_config as tc
from jaxdiffattack.models.attention import attention as attention_fn

# Keys that only matter for training or for heads this classifier does not have.
_IGNORED_KEYS = frozenset({"hidden_dropout_prob", "attention_probs_dropout_prob",
                           "initializer_range", "encoder_stride", "pooler_act",
                           "pooler_output_size"})


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  """config.json keys of a ViT classifier (defaults: transformers' ViTConfig)."""
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-12
  image_size: int = 224
  patch_size: int = 16
  num_channels: int = 3
  qkv_bias: bool = True
  num_labels: int = 2   # len(id2label)

  @classmethod
  def from_dict(cls, raw: Mapping[str, Any], source: str) -> "ViTConfig":
    raw = dict(raw, num_labels=len(tc.id2label(raw, source)))
    config = tc.parse(cls, raw, source, ignored=_IGNORED_KEYS,
                      choices={"hidden_act": tc.ACTIVATIONS})
    if config.hidden_size % config.num_attention_heads:
      raise ConfigError(f"{source}: hidden_size={config.hidden_size} is not a multiple of "
                        f"num_attention_heads={config.num_attention_heads}")
    if config.image_size % config.patch_size:
      raise ConfigError(f"{source}: image_size={config.image_size} is not a multiple of "
                        f"patch_size={config.patch_size}")
    return config


def _init():
  """transformers' ViT initialiser: truncated normal, variance 0.02² × fan-in scaling."""
  return jax.nn.initializers.variance_scaling(0.02 ** 2, "fan_in", "truncated_normal")


class _Dense(nn.Module):
  """A Dense layer one level down (`<name>/dense`), as transformers nests ViT's layers."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Dense(self.features, dtype=self.dtype, kernel_init=_init(), name="dense")(x)


class _ViTSelfAttention(nn.Module):
  config: ViTConfig
  dtype: Any = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = self.config
    batch, length, width = x.shape                              # [P, T, D]
    split = lambda y: y.reshape(batch, length, c.num_attention_heads,
                                width // c.num_attention_heads)
    q, k, v = (split(nn.Dense(width, dtype=self.dtype, use_bias=c.qkv_bias, kernel_init=_init(),
                              name=name)(x)) for name in ("query", "key", "value"))
    return attention_fn(q, k, v, implementation=self.attention).reshape(batch, length, width)


class _ViTAttention(nn.Module):
  config: ViTConfig
  dtype: Any = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = _ViTSelfAttention(self.config, self.dtype, self.attention, name="attention")(x)
    return _Dense(self.config.hidden_size, self.dtype, name="output")(x)


class ViTLayer(nn.Module):
  """x + attn(LN_before x); then x + W_out act(W_in LN_after x)."""
  config: ViTConfig
  dtype: Any = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = self.config
    norm = lambda name: nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name=name)
    x = x + _ViTAttention(c, self.dtype, self.attention, name="attention")(
        norm("layernorm_before")(x))
    h = _Dense(c.intermediate_size, self.dtype, name="intermediate")(norm("layernorm_after")(x))
    return x + _Dense(c.hidden_size, self.dtype, name="output")(tc.ACTIVATIONS[c.hidden_act](h))


class _ViTLayers(nn.Module):
  config: ViTConfig
  dtype: Any = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.config.num_hidden_layers):
      x = ViTLayer(self.config, self.dtype, self.attention, name=str(i))(x)
    return x


class _ViTEncoder(nn.Module):
  config: ViTConfig
  dtype: Any = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return _ViTLayers(self.config, self.dtype, self.attention, name="layer")(x)


class _ViTEmbeddings(nn.Module):
  config: ViTConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pixels: jax.Array) -> jax.Array:
    c = self.config
    num_patches = (c.image_size // c.patch_size) ** 2
    cls_token = self.param("cls_token", _init(), (1, 1, c.hidden_size))
    positions = self.param("position_embeddings", _init(), (1, num_patches + 1, c.hidden_size))
    patches = _PatchEmbeddings(c, self.dtype, name="patch_embeddings")(pixels)   # [P, n, D]
    cls = jnp.broadcast_to(cls_token.astype(patches.dtype), (patches.shape[0], 1, c.hidden_size))
    return jnp.concatenate([cls, patches], axis=1) + positions.astype(patches.dtype)


class _PatchEmbeddings(nn.Module):
  config: ViTConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pixels: jax.Array) -> jax.Array:
    c = self.config
    x = nn.Conv(c.hidden_size, (c.patch_size, c.patch_size), strides=(c.patch_size, c.patch_size),
                padding="VALID", dtype=self.dtype, kernel_init=_init(), name="projection")(pixels)
    return x.reshape(x.shape[0], -1, c.hidden_size)


class _ViTBackbone(nn.Module):
  config: ViTConfig
  dtype: Any = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(self, pixels: jax.Array) -> jax.Array:
    c = self.config
    x = _ViTEmbeddings(c, self.dtype, name="embeddings")(pixels.astype(self.dtype))
    x = _ViTEncoder(c, self.dtype, self.attention, name="encoder")(x)
    return nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name="layernorm")(x)


class ViTForImageClassification(nn.Module):
  """Normalised pixels [P, image_size, image_size, C] (channels last) → logits [P, num_labels]."""
  config: ViTConfig
  dtype: Any = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(self, pixels: jax.Array) -> jax.Array:
    c = self.config
    if pixels.shape[1:] != (c.image_size, c.image_size, c.num_channels):
      raise ValueError(f"ViT input must be [P, {c.image_size}, {c.image_size}, "
                       f"{c.num_channels}], got {pixels.shape}")
    hidden = _ViTBackbone(c, self.dtype, self.attention, name="vit")(pixels)
    return nn.Dense(c.num_labels, dtype=self.dtype, kernel_init=_init(),
                    name="classifier")(hidden[:, 0])
