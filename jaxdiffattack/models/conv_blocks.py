"""Convolutional building blocks shared by the UNet and the VAE (NHWC, linen).

The residual block of Ho et al. 2020 (DDPM, appendix B; after Zagoruyko & Komodakis' wide ResNet):
GroupNorm (Wu & He 2018) → SiLU → 3×3 conv [+ projected timestep embedding] → GroupNorm → SiLU →
3×3 conv, plus the input (through a 1×1 conv when the channel count changes); 2× nearest-neighbour
upsampling followed by a 3×3 conv; stride-2 3×3 conv downsampling. Submodule and parameter names are
those of diffusers' modules (`norm1`, `conv1`, `time_emb_proj`, ..., `conv`), so checkpoints map
onto them by a fixed renaming (`convert_diffusers.py`).

Activations are NHWC: XLA's convolutions take channels last on every backend, and the models
transpose once at their NCHW entry and exit. Normalisation statistics are computed in float32 with
the two-pass variance (as PyTorch does), whatever the compute dtype.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def group_norm(groups: int, eps: float, dtype, name: str) -> nn.GroupNorm:
  return nn.GroupNorm(num_groups=groups, epsilon=eps, dtype=dtype, use_fast_variance=False,
                      name=name)


def conv(features: int, kernel: int, dtype, name: str, stride: int = 1,
         padding=None) -> nn.Conv:
  """A k×k conv with PyTorch's symmetric "same" padding (k // 2) unless `padding` is given."""
  if padding is None:
    padding = ((kernel // 2, kernel // 2),) * 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding,
                 dtype=dtype, name=name)


class ResnetBlock2D(nn.Module):
  """x [B, H, W, C_in] (+ temb [B, T]) → [B, H, W, out_channels]."""
  out_channels: int
  groups: int
  eps: float
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, temb=None):
    h = nn.silu(group_norm(self.groups, self.eps, self.dtype, "norm1")(x))
    h = conv(self.out_channels, 3, self.dtype, "conv1")(h)
    if temb is not None:
      emb = nn.Dense(self.out_channels, dtype=self.dtype, name="time_emb_proj")(nn.silu(temb))
      h = h + emb[:, None, None, :]
    h = nn.silu(group_norm(self.groups, self.eps, self.dtype, "norm2")(h))
    h = conv(self.out_channels, 3, self.dtype, "conv2")(h)
    if x.shape[-1] != self.out_channels:
      x = conv(self.out_channels, 1, self.dtype, "conv_shortcut")(x)
    return x + h


class Downsample2D(nn.Module):
  """Stride-2 3×3 conv. padding=1: symmetric (the UNet); 0: pad bottom/right by one (the VAE)."""
  out_channels: int
  padding: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.padding == 0:
      x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
      return conv(self.out_channels, 3, self.dtype, "conv", stride=2, padding="VALID")(x)
    return conv(self.out_channels, 3, self.dtype, "conv", stride=2,
                padding=((self.padding, self.padding),) * 2)(x)


def upsample_nearest(x, size=None):
  """Nearest-neighbour upsampling of [B, H, W, C] to 2× or to `size` (h, w).

  Source index floor(i · H / h), as PyTorch's `interpolate(mode="nearest")`; for 2× that is a
  plain repeat.
  """
  height, width = x.shape[1:3]
  if size is None or tuple(size) == (2 * height, 2 * width):
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  rows = (jnp.arange(size[0]) * height) // size[0]
  cols = (jnp.arange(size[1]) * width) // size[1]
  return x[:, rows][:, :, cols]


class Upsample2D(nn.Module):
  """Nearest 2× (or to `size`) then a 3×3 conv."""
  out_channels: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, size=None):
    return conv(self.out_channels, 3, self.dtype, "conv")(upsample_nearest(x, size))


def nchw_to_nhwc(x: jax.Array) -> jax.Array:
  return jnp.transpose(x, (0, 2, 3, 1))


def nhwc_to_nchw(x: jax.Array) -> jax.Array:
  return jnp.transpose(x, (0, 3, 1, 2))
