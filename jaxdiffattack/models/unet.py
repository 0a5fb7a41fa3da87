"""The conditional UNet of Stable Diffusion 1.x / 2.x (Rombach et al. 2022, §3.3 and appendix E).

ε_θ(z_t, t, c): a UNet over latents whose resolution levels hold residual blocks (conditioned on a
sinusoidal timestep embedding, Vaswani et al. 2017 §3.5 / Ho et al. 2020) and spatial transformers
(self-attention, cross-attention to the text states c, GEGLU feed-forward — Shazeer 2020) at the
levels whose block type says `CrossAttn...`. Configured by a diffusers `UNet2DConditionModel`
config.json (`UNetConfig`): SD1's conv 1×1 and SD2's linear transformer projections, one head count
for all levels or one per level (diffusers' `attention_head_dim`, which counts heads), SD2.1's
`upcast_attention`, `only_cross_attention`, `flip_sin_to_cos` / `freq_shift`, GroupNorm groups and
eps, any sample size (odd sizes upsample to the skip connection's size, as diffusers does), and
`out_channels` = 2 × `in_channels` for a learned-variance model (Nichol & Dhariwal 2021 §3.1;
the model outputs [ε, v] stacked on the channel axis).

Written in linen, not NNX: every model in jaxdiffattack is a pure function of a params pytree
passed as an argument to jitted, sharded code (`sampler.sample`, `PopulationSampler`), and the
shipped toy checkpoints are linen param trees stored as msgpack. A linen module holds no state, so
its params stay plain arguments; the parameter tree is exactly that of diffusers' Flax UNet (same
names, same shapes), so those msgpack files load unchanged.

Attention goes through `jaxdiffattack.models.attention.attention` with the implementation
(`attention`: "xla", "cudnn", "reference") a static field of the module. Cross-attention maps:
with `capture_cross_attention=True` every attention whose keys come from the text runs the
"reference" path and sows its probabilities [B, heads, h·w, L] into the "intermediates"
collection; `unet_cross_attention` returns them per layer. With the flag off (the default) the
module is the plain fast path: capture costs nothing unless asked for.

Numerics of diffusers' Flax class: checkpoints written by diffusers' `FlaxUNet2DConditionModel`
(config `_class_name`), such as the shipped toy UNet, were trained with that class, which computes
GEGLU with the tanh approximation of GELU and normalises the transformer input with GroupNorm eps
1e-5; diffusers' PyTorch UNet uses the exact GELU and eps 1e-6. `UNetConfig.flax_numerics` (set
from `_class_name`) picks the arithmetic the checkpoint was trained with.
"""

import dataclasses
import math
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdiffattack.models import model_config
from jaxdiffattack.models.attention import attention as attention_fn
from jaxdiffattack.models.conv_blocks import Downsample2D
from jaxdiffattack.models.conv_blocks import ResnetBlock2D
from jaxdiffattack.models.conv_blocks import Upsample2D
from jaxdiffattack.models.conv_blocks import conv
from jaxdiffattack.models.conv_blocks import group_norm
from jaxdiffattack.models.conv_blocks import nchw_to_nhwc
from jaxdiffattack.models.conv_blocks import nhwc_to_nchw

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")
# Class names of the config.json files whose checkpoints this module computes.
CLASS_NAMES = ("UNet2DConditionModel", "FlaxUNet2DConditionModel")

# diffusers UNet2DConditionModel options implemented only at their default value.
_FIXED = {
    "mid_block_type": ("UNetMidBlock2DCrossAttn",), "act_fn": ("silu", "swish"),
    "center_input_sample": (False,), "downsample_padding": (1,), "mid_block_scale_factor": (1,),
    "num_attention_heads": (None,), "dual_cross_attention": (False,),
    "class_embed_type": (None,), "addition_embed_type": (None,),
    "addition_time_embed_dim": (None,), "num_class_embeds": (None,),
    "projection_class_embeddings_input_dim": (None,), "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,), "resnet_time_scale_shift": ("default",),
    "resnet_skip_time_act": (False,), "resnet_out_scale_factor": (1.0,),
    "time_embedding_type": ("positional",), "time_embedding_dim": (None,),
    "time_embedding_act_fn": (None,), "timestep_post_act": (None,), "time_cond_proj_dim": (None,),
    "conv_in_kernel": (3,), "conv_out_kernel": (3,), "attention_type": ("default",),
    "class_embeddings_concat": (False,), "mid_block_only_cross_attention": (None,),
    "cross_attention_norm": (None,), "reverse_transformer_layers_per_block": (None,),
}
# Keys that do not change the numbers: how diffusers' Flax class scheduled its attention (ours is
# the `attention` field), and the head count of an addition embedding that is refused above.
_IGNORED = frozenset({"use_memory_efficient_attention", "split_head_dim",
                      "addition_embed_type_num_heads"})


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """The implemented options of a diffusers UNet2DConditionModel config.json (its defaults)."""
  sample_size: int = 64
  in_channels: int = 4
  out_channels: int = 4
  down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                       "CrossAttnDownBlock2D", "DownBlock2D")
  up_block_types: tuple[str, ...] = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                     "CrossAttnUpBlock2D")
  block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
  layers_per_block: int = 2
  attention_head_dim: int | tuple[int, ...] = 8   # diffusers' name: the number of HEADS
  cross_attention_dim: int = 1280
  transformer_layers_per_block: int | tuple[int, ...] = 1
  use_linear_projection: bool = False
  only_cross_attention: bool | tuple[bool, ...] = False
  upcast_attention: bool = False
  flip_sin_to_cos: bool = True
  freq_shift: int = 0
  norm_num_groups: int = 32
  norm_eps: float = 1e-5
  dropout: float = 0.0    # training-time only; these modules are deterministic
  flax_numerics: bool = False  # derived from `_class_name`, see the module docstring

  @property
  def num_blocks(self) -> int:
    return len(self.block_out_channels)

  @property
  def heads(self) -> tuple[int, ...]:
    return model_config.per_block(self.attention_head_dim, self.num_blocks, "", "")

  @property
  def depths(self) -> tuple[int, ...]:
    return model_config.per_block(self.transformer_layers_per_block, self.num_blocks, "", "")

  @property
  def cross_only(self) -> tuple[bool, ...]:
    return model_config.per_block(self.only_cross_attention, self.num_blocks, "", "")

  @property
  def learned_variance(self) -> bool:
    """The model predicts [ε, v] (Improved DDPM): out_channels = 2 × in_channels."""
    return self.out_channels == 2 * self.in_channels

  def validate(self, source) -> None:
    model_config.check_channels(self, source)
    req = model_config.checker(self, source)
    n = self.num_blocks
    req(len(self.down_block_types) == n and set(self.down_block_types) <= set(DOWN_BLOCK_TYPES),
        "down_block_types", f"give {n} entries (one per block_out_channels) from "
        f"{DOWN_BLOCK_TYPES}")
    req(len(self.up_block_types) == n and set(self.up_block_types) <= set(UP_BLOCK_TYPES),
        "up_block_types", f"give {n} entries (one per block_out_channels) from {UP_BLOCK_TYPES}")
    req(isinstance(self.layers_per_block, int) and self.layers_per_block >= 1,
        "layers_per_block", "give one positive int (per-block lists are not implemented)")
    req(isinstance(self.cross_attention_dim, int) and self.cross_attention_dim > 0,
        "cross_attention_dim", "give one positive int (per-block lists are not implemented)")
    req(self.out_channels in (self.in_channels, 2 * self.in_channels), "out_channels",
        f"use in_channels ({self.in_channels}) or 2 × in_channels for learned variance")
    for key in ("attention_head_dim", "transformer_layers_per_block", "only_cross_attention"):
      model_config.per_block(getattr(self, key), n, source, key)
    for channels, heads in zip(self.block_out_channels, self.heads):
      req(channels % heads == 0, "attention_head_dim",
          f"each level's channels {self.block_out_channels} must divide by its head count")
    req(self.sample_size is None or self.sample_size >= 1, "sample_size", "give a positive int")


def unet_config(raw: dict, source) -> UNetConfig:
  """UNetConfig from a config.json dict; one-line ConfigError for what is not implemented."""
  class_name = raw.get("_class_name", "UNet2DConditionModel")
  model_config.require(class_name in CLASS_NAMES, source, "_class_name", class_name,
                       f"use one of {CLASS_NAMES}")
  return model_config.from_dict(UNetConfig, raw, source, fixed=_FIXED, ignored=_IGNORED,
                                flax_numerics=class_name == "FlaxUNet2DConditionModel")


def config_json(config: UNetConfig) -> dict[str, Any]:
  """config.json data that `unet_config` reads back into `config`."""
  data = model_config.to_dict(config)
  del data["flax_numerics"]
  name = "FlaxUNet2DConditionModel" if config.flax_numerics else "UNet2DConditionModel"
  return {"_class_name": name, **data}


def timestep_embedding(timesteps, dim: int, flip_sin_to_cos: bool, freq_shift: float):
  """Sinusoidal embedding [B, dim] (float32) of timesteps [B]: frequencies
  exp(−ln(10⁴)·i / (dim/2 − freq_shift)), i < dim/2; [sin, cos] or [cos, sin] when flipped."""
  half = dim // 2
  exponent = -math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
  angles = timesteps.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
  parts = (jnp.cos(angles), jnp.sin(angles)) if flip_sin_to_cos else (jnp.sin(angles),
                                                                       jnp.cos(angles))
  return jnp.concatenate(parts, axis=-1)


class Attention(nn.Module):
  """Multi-head attention with diffusers' parameter names (to_q, to_k, to_v, to_out_0).

  x [B, T, C] attends to itself, or to `context` [B, S, D] (cross-attention).
  """
  heads: int
  dim_head: int
  dtype: jnp.dtype = jnp.float32
  implementation: str = "xla"
  upcast: bool = False
  capture: bool = False   # also sow the probabilities (computed on the "reference" path)

  @nn.compact
  def __call__(self, x, context=None):
    inner = self.heads * self.dim_head
    context = x if context is None else context
    dense = lambda name: nn.Dense(inner, use_bias=False, dtype=self.dtype, name=name)
    split = lambda a: a.reshape(a.shape[:2] + (self.heads, self.dim_head))   # [B, T, N, H]
    q, k, v = (split(dense(name)(src)) for name, src in
               (("to_q", x), ("to_k", context), ("to_v", context)))
    if self.capture:
      out, probs = attention_fn(q, k, v, upcast=self.upcast, return_probs=True)
      self.sow("intermediates", "probs", probs)                       # [B, N, T, S]
    else:
      out = attention_fn(q, k, v, implementation=self.implementation, upcast=self.upcast,
                         site="/".join(self.path))
    out = out.reshape(out.shape[:2] + (inner,))
    return nn.Dense(x.shape[-1], dtype=self.dtype, name="to_out_0")(out)


class GEGLU(nn.Module):
  """Linear to 2·inner, then value · GELU(gate) (Shazeer 2020, eq. 6)."""
  inner: int
  approximate: bool
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    value, gate = jnp.split(nn.Dense(2 * self.inner, dtype=self.dtype, name="proj")(x), 2, -1)
    return value * nn.gelu(gate, approximate=self.approximate)


class FeedForward(nn.Module):
  dim: int
  approximate: bool
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = GEGLU(4 * self.dim, self.approximate, self.dtype, name="net_0")(x)
    return nn.Dense(self.dim, dtype=self.dtype, name="net_2")(x)


class BasicTransformerBlock(nn.Module):
  """Pre-norm self-attention (or cross-only), cross-attention and GEGLU, each residual."""
  heads: int
  dim_head: int
  only_cross_attention: bool
  upcast: bool
  flax_numerics: bool
  implementation: str
  capture: bool
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context):
    def norm(name):
      return nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, use_fast_variance=False, name=name)

    def attn(name, capture):
      return Attention(self.heads, self.dim_head, self.dtype, self.implementation, self.upcast,
                       capture, name=name)

    cross_only = self.only_cross_attention
    x = x + attn("attn1", self.capture and cross_only)(
        norm("norm1")(x), context if cross_only else None)
    x = x + attn("attn2", self.capture)(norm("norm2")(x), context)
    ff = FeedForward(x.shape[-1], self.flax_numerics, self.dtype, name="ff")
    return x + ff(norm("norm3")(x))


class Transformer2DModel(nn.Module):
  """GroupNorm → proj_in → transformer blocks over the h·w tokens → proj_out, plus the input."""
  heads: int
  depth: int
  config: UNetConfig
  only_cross_attention: bool
  implementation: str
  capture: bool
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context):
    c = self.config
    batch, height, width, channels = x.shape
    linear = c.use_linear_projection
    proj = lambda name: (nn.Dense(channels, dtype=self.dtype, name=name) if linear
                         else conv(channels, 1, self.dtype, name))
    eps = 1e-5 if c.flax_numerics else 1e-6
    h = group_norm(c.norm_num_groups, eps, self.dtype, "norm")(x)
    if linear:
      h = proj("proj_in")(h.reshape(batch, height * width, channels))
    else:
      h = proj("proj_in")(h).reshape(batch, height * width, channels)
    for i in range(self.depth):
      h = BasicTransformerBlock(
          self.heads, channels // self.heads, self.only_cross_attention, c.upcast_attention,
          c.flax_numerics, self.implementation, self.capture, self.dtype,
          name=f"transformer_blocks_{i}")(h, context)
    if linear:
      h = proj("proj_out")(h).reshape(batch, height, width, channels)
    else:
      h = proj("proj_out")(h.reshape(batch, height, width, channels))
    return h + x


class TimestepEmbedding(nn.Module):
  """Linear → SiLU → linear on the sinusoidal embedding (diffusers' `time_embedding`)."""
  dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, emb):
    emb = nn.silu(nn.Dense(self.dim, dtype=self.dtype, name="linear_1")(emb))
    return nn.Dense(self.dim, dtype=self.dtype, name="linear_2")(emb)


class _Level(nn.Module):
  """What the blocks of one resolution level share: the config, its head count and settings."""
  config: UNetConfig
  level: int
  dtype: jnp.dtype
  attention: str
  capture: bool

  def resnet(self, name: str) -> ResnetBlock2D:
    c = self.config
    return ResnetBlock2D(c.block_out_channels[self.level], c.norm_num_groups, c.norm_eps,
                         self.dtype, name=name)

  def transformer(self, name: str, cross_only: bool | None = None) -> Transformer2DModel:
    c = self.config
    cross_only = c.cross_only[self.level] if cross_only is None else cross_only
    return Transformer2DModel(c.heads[self.level], c.depths[self.level], c, cross_only,
                              self.attention, self.capture, self.dtype, name=name)


class DownBlock(_Level):
  """CrossAttnDownBlock2D (with_attention) or DownBlock2D: (resnet [→ transformer]) × layers,
  then a stride-2 conv except at the last level; returns (x, the skip activations)."""
  with_attention: bool = True

  @nn.compact
  def __call__(self, x, temb, context):
    skips = []
    for i in range(self.config.layers_per_block):
      x = self.resnet(f"resnets_{i}")(x, temb)
      if self.with_attention:
        x = self.transformer(f"attentions_{i}")(x, context)
      skips.append(x)
    if self.level < self.config.num_blocks - 1:
      x = Downsample2D(self.config.block_out_channels[self.level], 1, self.dtype,
                       name="downsamplers_0")(x)
      skips.append(x)
    return x, skips


class UpBlock(_Level):
  """CrossAttnUpBlock2D or UpBlock2D: (concat a skip → resnet [→ transformer]) × (layers + 1),
  then nearest upsampling to the next skip's size and a conv, except at the top level."""
  with_attention: bool = True

  @nn.compact
  def __call__(self, x, temb, context, skips, upsample_size):
    for i, skip in enumerate(skips):
      x = self.resnet(f"resnets_{i}")(jnp.concatenate([x, skip], axis=-1), temb)
      if self.with_attention:
        x = self.transformer(f"attentions_{i}")(x, context)
    if upsample_size is not None:
      x = Upsample2D(self.config.block_out_channels[self.level], self.dtype,
                     name="upsamplers_0")(x, upsample_size)
    return x


class MidBlock(_Level):
  """UNetMidBlock2DCrossAttn: resnet → transformer → resnet at the lowest resolution (its
  transformer always self-attends first: diffusers applies `only_cross_attention` to the down
  and up blocks only)."""

  @nn.compact
  def __call__(self, x, temb, context):
    x = self.resnet("resnets_0")(x, temb)
    x = self.transformer("attentions_0", cross_only=False)(x, context)
    return self.resnet("resnets_1")(x, temb)


class UNet2DConditionModel(nn.Module):
  """ε_θ(sample, t, c): sample [B, C, h, w] (NCHW), timesteps [B] or scalar, text states
  [B, L, D] → [B, out_channels, h, w] in `dtype`."""
  config: UNetConfig
  dtype: jnp.dtype = jnp.float32
  attention: str = "xla"
  capture_cross_attention: bool = False

  @nn.compact
  def __call__(self, sample, timesteps, encoder_hidden_states):
    c = self.config
    channels = c.block_out_channels
    level = lambda cls, i, name, **kw: cls(c, i, self.dtype, self.attention,
                                           self.capture_cross_attention, name=name, **kw)
    timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (sample.shape[0],))
    temb = timestep_embedding(timesteps, channels[0], c.flip_sin_to_cos, c.freq_shift)
    temb = TimestepEmbedding(4 * channels[0], self.dtype, name="time_embedding")(temb)
    context = encoder_hidden_states

    x = conv(channels[0], 3, self.dtype, "conv_in")(nchw_to_nhwc(sample).astype(self.dtype))
    skips = [x]
    for i, block_type in enumerate(c.down_block_types):
      x, block_skips = level(DownBlock, i, f"down_blocks_{i}",
                             with_attention=block_type == "CrossAttnDownBlock2D")(x, temb, context)
      skips += block_skips
    x = level(MidBlock, c.num_blocks - 1, "mid_block")(x, temb, context)
    for i, block_type in enumerate(c.up_block_types):
      block_skips = [skips.pop() for _ in range(c.layers_per_block + 1)]
      upsample_size = skips[-1].shape[1:3] if skips else None
      x = level(UpBlock, c.num_blocks - 1 - i, f"up_blocks_{i}",
                with_attention=block_type == "CrossAttnUpBlock2D")(
                    x, temb, context, block_skips, upsample_size)

    x = nn.silu(group_norm(c.norm_num_groups, c.norm_eps, self.dtype, "conv_norm_out")(x))
    x = conv(c.out_channels, 3, self.dtype, "conv_out")(x)
    return nhwc_to_nchw(x)

  def init_weights(self, key: jax.Array) -> dict:
    """Random params (the tree a checkpoint must match); for a given key, the values diffusers'
    Flax class draws (same tree, same key split), so toy training reproduces across the switch."""
    size = self.config.sample_size or 8
    sample = jnp.zeros((1, self.config.in_channels, size, size), jnp.float32)
    context = jnp.zeros((1, 1, self.config.cross_attention_dim), jnp.float32)
    params_key, _ = jax.random.split(key)
    return flax.core.unfreeze(self.init(params_key, sample, jnp.ones((1,)), context)["params"])


def unet_cross_attention(unet: UNet2DConditionModel, params, sample, timesteps, context):
  """One UNet call that also returns every cross-attention map.

  Args:
    unet: the model (e.g. `sd.unet`); its capture flag is switched on for this call only.
    params: its params (e.g. `params["unet"]`).
    sample, timesteps, context: as for the module: [B, C, h, w], [B] or scalar, [B, L, D].

  Returns:
    (out [B, out_channels, h, w], {layer: probs}): probs [B, heads, h'·w', L] float32 (each row
    sums to 1 over the L text tokens) of every attention that attends to the text, keyed by its
    module path, e.g. "down_blocks_0/attentions_0/transformer_blocks_0/attn2"; h'·w' is that
    layer's resolution, raster order. Jit-able; per-step capture inside the sampler is not
    provided here (call this on the sampler's latents at the step of interest).
  """
  capturing = unet.clone(capture_cross_attention=True)
  out, state = capturing.apply({"params": params}, sample, timesteps, context,
                               mutable=["intermediates"])
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(state["intermediates"]), sep="/")
  maps = {name.rsplit("/", 1)[0]: probs for name, (probs,) in flat.items()}
  return out, maps
