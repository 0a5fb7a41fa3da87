"""The KL-regularised autoencoder of latent diffusion (Rombach et al. 2022, §3.1 and appendix G).

Encoder E: image x [B, 3, H, W] in [−1, 1] → the posterior q(z|x) = N(mean, exp(logvar)) over
latents [B, C, H/f, W/f] (f = 2^(levels − 1)), read from `quant_conv` of the encoder's 2C output
channels; decoder D: latents → image, through `post_quant_conv`. The diffusion model works on
z · scaling_factor, and the sampler decodes z_0 / scaling_factor. Each encoder level is residual
blocks then (except the last) a stride-2 conv padded at the bottom/right; the decoder mirrors it
with layers_per_block + 1 residual blocks and nearest 2× upsampling; both have a middle
resnet → single-head self-attention → resnet at the lowest resolution (GroupNorm eps 1e-6
everywhere). Configured by a diffusers `AutoencoderKL` config.json (`VAEConfig`).

Written in linen, not NNX, for the reasons given in `unet.py`: params are a plain pytree argument
of jitted/sharded functions, and the shipped toy VAE is a linen param tree (diffusers'
`FlaxAutoencoderKL` names and shapes, so it loads unchanged). Images and latents are NCHW at the
module's entry and exit (the project's latent layout) and NHWC inside.
"""

import dataclasses
from typing import Any, NamedTuple

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

CLASS_NAMES = ("AutoencoderKL", "FlaxAutoencoderKL")
_EPS = 1e-6
_FIXED = {"act_fn": ("silu", "swish"), "shift_factor": (None,), "latents_mean": (None,),
          "latents_std": (None,)}
# force_upcast: diffusers' PyTorch pipelines run an fp16 VAE in float32; the dtype here is the
# caller's choice (float32 or bfloat16), so the hint changes nothing.
_IGNORED = frozenset({"force_upcast"})


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """The implemented options of a diffusers AutoencoderKL config.json (its defaults)."""
  in_channels: int = 3
  out_channels: int = 3
  down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",)
  up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",)
  block_out_channels: tuple[int, ...] = (64,)
  layers_per_block: int = 1
  latent_channels: int = 4
  norm_num_groups: int = 32
  sample_size: int = 32
  scaling_factor: float = 0.18215
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  mid_block_add_attention: bool = True

  @property
  def num_blocks(self) -> int:
    return len(self.block_out_channels)

  @property
  def downscale(self) -> int:
    """Image pixels per latent pixel along each side."""
    return 2 ** (self.num_blocks - 1)

  def validate(self, source) -> None:
    model_config.check_channels(self, source)
    req = model_config.checker(self, source)
    n = self.num_blocks
    req(self.down_block_types == ("DownEncoderBlock2D",) * n, "down_block_types",
        f"give {n} x 'DownEncoderBlock2D' (one per block_out_channels)")
    req(self.up_block_types == ("UpDecoderBlock2D",) * n, "up_block_types",
        f"give {n} x 'UpDecoderBlock2D' (one per block_out_channels)")
    req(isinstance(self.layers_per_block, int) and self.layers_per_block >= 1,
        "layers_per_block", "give a positive int")


def vae_config(raw: dict, source) -> VAEConfig:
  """VAEConfig from a config.json dict; one-line ConfigError for what is not implemented."""
  class_name = raw.get("_class_name", "AutoencoderKL")
  model_config.require(class_name in CLASS_NAMES, source, "_class_name", class_name,
                       f"use one of {CLASS_NAMES}")
  return model_config.from_dict(VAEConfig, raw, source, fixed=_FIXED, ignored=_IGNORED)


def config_json(config: VAEConfig) -> dict[str, Any]:
  """config.json data that `vae_config` reads back into `config`."""
  return {"_class_name": "AutoencoderKL", **model_config.to_dict(config)}


class Posterior(NamedTuple):
  """q(z|x) = N(mean, exp(logvar)), diagonal; both [B, C, h, w] (logvar clipped to [−30, 20])."""
  mean: jax.Array
  logvar: jax.Array

  @property
  def std(self) -> jax.Array:
    return jnp.exp(0.5 * self.logvar)

  def sample(self, key: jax.Array) -> jax.Array:
    return self.mean + self.std * jax.random.normal(key, self.mean.shape, self.mean.dtype)

  def kl(self) -> jax.Array:
    """KL(q ‖ N(0, I)) per example [B], summed over the latent elements."""
    return 0.5 * jnp.sum(self.mean ** 2 + jnp.exp(self.logvar) - 1.0 - self.logvar,
                         axis=(1, 2, 3))


class AttentionBlock(nn.Module):
  """GroupNorm → single-head self-attention over the h·w pixels → linear, plus the input
  (names query/key/value/proj_attn, as diffusers' Flax VAE)."""
  groups: int
  dtype: jnp.dtype = jnp.float32
  implementation: str = "xla"

  @nn.compact
  def __call__(self, x):
    batch, height, width, channels = x.shape
    h = group_norm(self.groups, _EPS, self.dtype, "group_norm")(x)
    h = h.reshape(batch, height * width, 1, channels)                   # [B, T, 1 head, C]
    dense = lambda name: nn.Dense(channels, dtype=self.dtype, name=name)
    q, k, v = dense("query")(h), dense("key")(h), dense("value")(h)
    h = attention_fn(q, k, v, implementation=self.implementation, site="/".join(self.path))
    h = dense("proj_attn")(h.reshape(batch, height * width, channels))
    return x + h.reshape(batch, height, width, channels)


class MidBlock(nn.Module):
  """resnet → [attention →] resnet at the lowest resolution."""
  channels: int
  groups: int
  add_attention: bool
  dtype: jnp.dtype = jnp.float32
  implementation: str = "xla"

  @nn.compact
  def __call__(self, x):
    resnet = lambda name: ResnetBlock2D(self.channels, self.groups, _EPS, self.dtype, name=name)
    x = resnet("resnets_0")(x)
    if self.add_attention:
      x = AttentionBlock(self.groups, self.dtype, self.implementation, name="attentions_0")(x)
    return resnet("resnets_1")(x)


class _LevelBlock(nn.Module):
  """`num_layers` resnets, then a stride-2 conv (down) or 2× upsampling (up) when `resample`."""
  channels: int
  groups: int
  num_layers: int
  resample: str | None   # "down", "up" or None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_layers):
      x = ResnetBlock2D(self.channels, self.groups, _EPS, self.dtype, name=f"resnets_{i}")(x)
    if self.resample == "down":
      x = Downsample2D(self.channels, 0, self.dtype, name="downsamplers_0")(x)
    elif self.resample == "up":
      x = Upsample2D(self.channels, self.dtype, name="upsamplers_0")(x)
    return x


def _head(config: VAEConfig, x, out_channels: int, dtype):
  x = nn.silu(group_norm(config.norm_num_groups, _EPS, dtype, "conv_norm_out")(x))
  return conv(out_channels, 3, dtype, "conv_out")(x)


class Encoder(nn.Module):
  """NHWC image → NHWC [mean, logvar] moments (2 × latent_channels)."""
  config: VAEConfig
  dtype: jnp.dtype = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(self, x):
    c = self.config
    x = conv(c.block_out_channels[0], 3, self.dtype, "conv_in")(x)
    for i, channels in enumerate(c.block_out_channels):
      x = _LevelBlock(channels, c.norm_num_groups, c.layers_per_block,
                      "down" if i < c.num_blocks - 1 else None, self.dtype,
                      name=f"down_blocks_{i}")(x)
    x = MidBlock(c.block_out_channels[-1], c.norm_num_groups, c.mid_block_add_attention,
                 self.dtype, self.attention, name="mid_block")(x)
    return _head(c, x, 2 * c.latent_channels, self.dtype)


class Decoder(nn.Module):
  """NHWC latents → NHWC image."""
  config: VAEConfig
  dtype: jnp.dtype = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(self, z):
    c = self.config
    x = conv(c.block_out_channels[-1], 3, self.dtype, "conv_in")(z)
    x = MidBlock(c.block_out_channels[-1], c.norm_num_groups, c.mid_block_add_attention,
                 self.dtype, self.attention, name="mid_block")(x)
    for i, channels in enumerate(reversed(c.block_out_channels)):
      x = _LevelBlock(channels, c.norm_num_groups, c.layers_per_block + 1,
                      "up" if i < c.num_blocks - 1 else None, self.dtype,
                      name=f"up_blocks_{i}")(x)
    return _head(c, x, c.out_channels, self.dtype)


class AutoencoderKL(nn.Module):
  """`encode`: images [B, 3, H, W] → Posterior over [B, C, h, w]; `decode`: latents → images.

  Calling the module runs decode(encode(x).mean) (used to create every parameter).
  """
  config: VAEConfig
  dtype: jnp.dtype = jnp.float32
  attention: str = "xla"

  def setup(self):
    c = self.config
    self.encoder = Encoder(c, self.dtype, self.attention)
    self.decoder = Decoder(c, self.dtype, self.attention)
    if c.use_quant_conv:
      self.quant_conv = conv(2 * c.latent_channels, 1, self.dtype, None)
    if c.use_post_quant_conv:
      self.post_quant_conv = conv(c.latent_channels, 1, self.dtype, None)

  def encode(self, images) -> Posterior:
    moments = self.encoder(nchw_to_nhwc(images).astype(self.dtype))
    if self.config.use_quant_conv:
      moments = self.quant_conv(moments)
    mean, logvar = jnp.split(nhwc_to_nchw(moments), 2, axis=1)
    return Posterior(mean, jnp.clip(logvar, -30.0, 20.0))

  def decode(self, latents):
    z = nchw_to_nhwc(latents).astype(self.dtype)
    if self.config.use_post_quant_conv:
      z = self.post_quant_conv(z)
    return nhwc_to_nchw(self.decoder(z))

  def __call__(self, images):
    return self.decode(self.encode(images).mean)

  def init_weights(self, key: jax.Array) -> dict:
    """Random params (the tree a checkpoint must match); for a given key, the values diffusers'
    Flax class draws (same tree, same key split), so toy training reproduces across the switch."""
    size = self.config.sample_size or 32
    images = jnp.zeros((1, self.config.in_channels, size, size), jnp.float32)
    params_key = jax.random.split(key, 3)[0]
    return flax.core.unfreeze(self.init(params_key, images)["params"])
