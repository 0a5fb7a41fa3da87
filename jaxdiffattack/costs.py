"""What sampling costs: FLOPs per image from XLA's cost analysis, and the roofline bounds they give.

FLOPs per generated image (latent diffusion, Rombach et al. 2022, with classifier-free guidance,
Ho & Salimans 2022) = S · (1 + g) · F_unet + F_vae, where S is the number of scheduler steps,
g = 1 with guidance (the UNet runs on the conditional and the unconditional half) and 0 without,
F_unet one UNet call on one latent and F_vae one VAE decode. Each part is counted by XLA's HLO cost
analysis of that part lowered alone: a `lax.scan` body is counted once whatever its trip count, so
the cost analysis of the whole sampler program would undercount by a factor of about S.

Lowering needs shapes only, so `sampler_flops` takes abstract parameters (`abstract`, or
`jax.eval_shape` of an init): the cost of SD1.5 is known on any machine, without its weights or
the memory for them.

Roofline: a device of peak P FLOP/s makes at most P / FLOPs-per-image images per second, so a
search generation of N images takes at least N · FLOPs-per-image / P seconds. Work of t seconds
per generation beside it (ask/tell) then takes at most t / (t + N · FLOPs-per-image / P) of the
loop's wall time: `share_bound`, the search benchmark's bound on the ask/tell share at a given
peak (scoring FLOPs are left out, which only lowers the true share further).
"""

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack.models import StableDiffusion


class SamplerFlops(NamedTuple):
  unet_call: float   # one UNet call on one latent
  vae_decode: float  # one VAE decode of one latent
  per_image: float   # steps · (1 + guidance) · unet_call + vae_decode


def abstract(tree):
  """The same pytree with every array replaced by its `jax.ShapeDtypeStruct`."""
  return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), a.dtype), tree)


def _flops(lowered) -> float:
  analysis = lowered.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  flops = float((analysis or {}).get("flops", 0.0))
  if flops <= 0:
    raise RuntimeError("XLA's cost analysis reported no FLOPs for this backend")
  return flops


def sampler_flops(sd: StableDiffusion, params, num_steps: int, guidance: bool,
                  text_shape: Sequence[int]) -> SamplerFlops:
  """FLOPs of generating one image (`params` {"unet", "vae"}: arrays or ShapeDtypeStructs)."""
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  x = jax.ShapeDtypeStruct((1,) + tuple(sd.latent_shape), sd.dtype)
  t = jax.ShapeDtypeStruct((1,), jnp.float32)
  ctx = jax.ShapeDtypeStruct((1,) + tuple(text_shape), sd.dtype)
  unet = jax.jit(lambda p, x, t, c: sd.unet.apply({"params": p}, x, t, c))
  unet_call = _flops(unet.lower(abstract(params["unet"]), x, t, ctx))
  z = jax.ShapeDtypeStruct((1,) + tuple(sd.latent_shape), jnp.float32)
  vae = jax.jit(lambda p, z: sampler_lib.decode_latents(sd, p, z))
  vae_decode = _flops(vae.lower(abstract(params["vae"]), z))
  calls = num_steps * (2 if guidance else 1)
  return SamplerFlops(unet_call, vae_decode, calls * unet_call + vae_decode)


def roofline_images_per_s(flops_per_image: float, peak_tflops: float) -> float:
  """The most images per second a device of `peak_tflops` can make."""
  if peak_tflops <= 0:
    raise ValueError(f"peak_tflops must be > 0, got {peak_tflops}")
  return peak_tflops * 1e12 / flops_per_image


def share_bound(overhead_s: float, images_per_generation: int, flops_per_image: float,
                peak_tflops: float) -> float:
  """Upper bound on the wall-time share of `overhead_s` per generation beside the sampler."""
  sample_s = images_per_generation / roofline_images_per_s(flops_per_image, peak_tflops)
  return overhead_s / (overhead_s + sample_s)


__all__ = ["SamplerFlops", "abstract", "roofline_images_per_s", "sampler_flops", "share_bound"]
