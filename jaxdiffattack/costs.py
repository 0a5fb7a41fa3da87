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

Memory: the device-memory planner (`program_bytes`, `memory_cost`, `auto_microbatch`, ...) is
`jaxdiffattack.planner`, below the sampler, which plans its "auto" microbatch with it; its names
are re-exported here, and `gradient_program` / `attack_program` give it the programs of the
gradient depths (`GRAD_DEPTHS`) and of the ATM attack step.
"""

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack.models import StableDiffusion
# The memory planner's names, re-exported (defined in `planner`).
from jaxdiffattack.planner import (  # pylint: disable=unused-import
    DEVICE_HEADROOM, GB, MemoryCost, MicrobatchPlan, Program, abstract, auto_microbatch,
    device_budget_bytes, members_bytes, memory_cost, stacked, program_bytes,
    sampler_program, validate_microbatch)


class SamplerFlops(NamedTuple):
  unet_call: float   # one UNet call on one latent
  vae_decode: float  # one VAE decode of one latent
  per_image: float   # steps · (1 + guidance) · unet_call + vae_decode


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


# ------------------------------------------------------------------------------------ memory --


# Gradient depths of the table and the benchmark: name → (SamplerSettings.grad_steps, remat).
GRAD_DEPTHS = {"last": (1, False), "all_remat": (None, True)}


def gradient_program(fused: sampler_lib.FusedSampler, params, latent_shape: Sequence[int],
                     text_shape: Sequence[int], aux: Any = None,
                     score_key: str | None = None) -> Program:
  """The gradient of the fused sampler w.r.t. the text embeddings [P, L, D] (what the attacks
  differentiate) at `fused.settings.grad_steps` depth: of Σ score[`score_key`] when given, else
  of Σ images."""
  forward = sampler_program(fused, params, latent_shape, text_shape, aux)

  def program(members: int):
    _, args = forward(members)

    def objective(cond, params, latents, uncond, scale, aux, *rest):
      out = fused(params, latents, cond, uncond, scale, aux, *rest)
      value = out.images if score_key is None else out.scores[score_key]
      return jnp.sum(value.astype(jnp.float32))

    grad = jax.grad(objective)
    return (lambda params, latents, cond, *rest: grad(cond, params, latents, *rest)), args

  return program


def attack_program(attack, params, length: int) -> Program:
  """One ATM iteration (`attacks.atm.Attack.step`) for `members` prompts of `length` tokens:
  θ [P, L, V], its Adam state and the prompts as arguments (the state donated, as the job's
  compiled step does). `params`: {"text_encoder", "uncond", "fused"}."""
  from jaxdiffattack.attacks import atm  # pylint: disable=g-import-not-at-top
  params = abstract(params)
  text_dim = params["uncond"].shape[-1]
  step = jax.jit(attack.step, donate_argnums=(1,))

  def program(members: int):
    ids = stacked((length,), jnp.int32, members)
    state = jax.eval_shape(attack.init, ids)
    prompts = atm.Prompts(
        index=stacked((), jnp.uint32, members), ids=ids,
        free=stacked((length,), jnp.bool_, members), label=stacked((), jnp.int32, members),
        reference=stacked((length, text_dim), jnp.float32, members),
        weights=stacked((length,), jnp.float32, members))
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    return step, (params, state, prompts, key)

  return program


__all__ = ["DEVICE_HEADROOM", "GB", "GRAD_DEPTHS", "MemoryCost", "MicrobatchPlan",
           "SamplerFlops", "abstract", "attack_program", "auto_microbatch", "device_budget_bytes",
           "gradient_program", "members_bytes", "memory_cost", "program_bytes",
           "roofline_images_per_s", "sampler_flops", "sampler_program", "share_bound", "stacked",
           "validate_microbatch"]
