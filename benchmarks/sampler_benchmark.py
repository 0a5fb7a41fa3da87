r"""Sampler throughput: the compiled JAX population sampler vs PyTorch diffusers, side by side.

  python benchmarks/sampler_benchmark.py --model=toy --population=16 --steps=50
  python benchmarks/sampler_benchmark.py --model=sd15 --population=64 --dtype=bfloat16 \
      --peak_tflops=989          # H100 SXM dense bf16; on GPUs/TPUs

Reports, in one process: compile time apart from steady state; images/s of the JAX sampler;
FLOPs per image (`jaxdiffattack.costs.sampler_flops`: XLA's cost analysis of one UNet call and of
the VAE decode, combined as steps × (1 + CFG) × UNet + VAE, because XLA's cost analysis counts a
scan body once whatever its trip count); achieved TFLOP/s and MFU when --peak_tflops is given; and the same candidates generated
by the PyTorch diffusers modules and scheduler (a) one candidate at a time — how the published
attack code evaluates — and (b) as one batch; then ratios. `--model=sd15` is the real SD1.5 shape
(860 M-parameter UNet, 512², 77×768 text) with random weights: weights' values do not change speed.
Text conditions are random hidden states (text encoding is outside the timed loop for both sides).
"""

import json
import os
import statistics
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from jaxdiffattack import costs
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import sharding
from jaxdiffattack.models import random_init

_MODEL = flags.DEFINE_string("model", "toy", "'toy', 'sd15' (random weights) or a pipeline dir.")
_POPULATION = flags.DEFINE_integer("population", 16, "Candidates per compiled call.")
_STEPS = flags.DEFINE_integer("steps", 50, "Denoising steps.")
_SCHEDULER = flags.DEFINE_string("scheduler", "ddim", "Scheduler name.")
_GUIDANCE = flags.DEFINE_float("guidance_scale", 7.5, "CFG scale (<= 1: no guidance).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "JAX dtype.")
_MICROBATCH = flags.DEFINE_integer("microbatch", None, "Members per device per call.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed steady-state repetitions.")
_PEAK = flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s of the device (for MFU).")
_TORCH = flags.DEFINE_bool("torch", True, "Also time the PyTorch diffusers baselines.")
_TORCH_ONE_BY_ONE = flags.DEFINE_integer(
    "torch_one_by_one", 4, "Candidates timed one at a time in PyTorch (rate extrapolated).")
_OUT = flags.DEFINE_string("out", None, "Write the results as JSON here.")


def time_jax(sd, params, text_shape):
  population = _POPULATION.value
  guidance = _GUIDANCE.value > 1.0
  settings = sampler_lib.SamplerSettings(scheduler=_SCHEDULER.value, num_steps=_STEPS.value,
                                         guidance=guidance)
  pop_sampler = sampler_lib.PopulationSampler(sd, params, settings, microbatch=_MICROBATCH.value)
  rng = np.random.default_rng(0)
  latents = rng.standard_normal((population,) + sd.latent_shape).astype(np.float32)
  cond = rng.standard_normal((population,) + tuple(text_shape)).astype(np.float32)
  uncond = rng.standard_normal(tuple(text_shape)).astype(np.float32)
  chunk = sharding.chunk_size(pop_sampler.mesh, population, _MICROBATCH.value)
  args = [sharding.put_population(sharding.pad_population(a, chunk)[:chunk], pop_sampler.mesh)
          for a in (latents, cond, np.broadcast_to(uncond, cond.shape),
                    np.full(population, _GUIDANCE.value, np.float32))]
  start = time.perf_counter()
  pop_sampler.compiled.lower(pop_sampler.params, *args, {}).compile()
  compile_s = time.perf_counter() - start
  pop_sampler(latents, cond, uncond, _GUIDANCE.value)  # warm-up (fills the jit cache)
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    out = pop_sampler(latents, cond, uncond, _GUIDANCE.value)
    jax.block_until_ready(out.images)
    times.append(time.perf_counter() - start)
  seconds = statistics.median(times)
  flops = costs.sampler_flops(sd, pop_sampler.params["sd"], len(pop_sampler.scheduler.timesteps),
                              guidance, text_shape).per_image
  return {"compile_s": compile_s, "steady_s": seconds, "images_per_s": population / seconds,
          "flops_per_image": flops, "tflops_per_s": flops * population / seconds / 1e12,
          "latents": latents, "cond": cond, "uncond": uncond}


def time_torch(sd, latents, cond, uncond):
  """The diffusers PyTorch modules + scheduler in the StableDiffusionPipeline loop."""
  import diffusers  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  device = "cuda" if torch.cuda.is_available() else "cpu"
  dtype = torch.float32 if (_DTYPE.value == "float32" or device == "cpu") else torch.bfloat16
  unet = diffusers.UNet2DConditionModel.from_config(dict(sd.unet.config)).to(device, dtype).eval()
  vae = diffusers.AutoencoderKL.from_config(dict(sd.vae.config)).to(device, dtype).eval()
  classes = {"ddim": diffusers.DDIMScheduler, "pndm": diffusers.PNDMScheduler,
             "dpmsolver++": diffusers.DPMSolverMultistepScheduler,
             "euler": diffusers.EulerDiscreteScheduler}
  scheduler = classes[_SCHEDULER.value].from_config(sd.scheduler_config)
  guidance = _GUIDANCE.value > 1.0

  @torch.no_grad()
  def generate(z, c):
    z = torch.from_numpy(z).to(device, dtype)
    c = torch.from_numpy(c).to(device, dtype)
    if guidance:
      u = torch.from_numpy(np.broadcast_to(uncond, c.shape).copy()).to(device, dtype)
      c = torch.cat([u, c])
    scheduler.set_timesteps(_STEPS.value, device=device)
    z = z * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
      x = torch.cat([z, z]) if guidance else z
      x = scheduler.scale_model_input(x, t)
      eps = unet(x, t, encoder_hidden_states=c).sample
      if guidance:
        eps_u, eps_c = eps.chunk(2)
        eps = eps_u + _GUIDANCE.value * (eps_c - eps_u)
      z = scheduler.step(eps, t, z).prev_sample
    images = vae.decode(z / sd.scaling_factor).sample
    if device == "cuda":
      torch.cuda.synchronize()
    return images

  generate(latents[:1], cond[:1])  # warm-up
  n_one = max(1, min(_TORCH_ONE_BY_ONE.value, len(latents)))
  start = time.perf_counter()
  for i in range(n_one):
    generate(latents[i:i + 1], cond[i:i + 1])
  one_rate = n_one / (time.perf_counter() - start)
  generate(latents, cond)  # warm-up at the batch shape
  start = time.perf_counter()
  generate(latents, cond)
  batch_rate = len(latents) / (time.perf_counter() - start)
  return {"device": device, "dtype": str(dtype), "one_by_one_images_per_s": one_rate,
          "batched_images_per_s": batch_rate, "one_by_one_timed": n_one}


def main(argv):
  del argv
  jax.config.update("jax_compilation_cache_dir", None)  # measure real compile time
  sd, params, text_shape = random_init.load_shape_or_pipeline(_MODEL.value, _DTYPE.value)
  result = {"model": _MODEL.value, "population": _POPULATION.value, "steps": _STEPS.value,
            "scheduler": _SCHEDULER.value, "guidance_scale": _GUIDANCE.value,
            "dtype": _DTYPE.value, "devices": [str(d) for d in jax.devices()],
            "image_size": sd.image_size, "cpu_count": os.cpu_count()}
  jax_result = time_jax(sd, params, text_shape)
  latents, cond, uncond = (jax_result.pop(k) for k in ("latents", "cond", "uncond"))
  result["jax"] = jax_result
  if _PEAK.value:
    result["jax"]["mfu"] = jax_result["tflops_per_s"] / _PEAK.value
  if _TORCH.value:
    result["torch"] = time_torch(sd, latents, cond, uncond)
    rate = jax_result["images_per_s"]
    result["ratios"] = {
        "jax_vs_torch_one_by_one": rate / result["torch"]["one_by_one_images_per_s"],
        "jax_vs_torch_batched": rate / result["torch"]["batched_images_per_s"]}
  logging.info("%s", json.dumps(result, indent=2))
  j = result["jax"]
  print(f"model={_MODEL.value} P={_POPULATION.value} steps={_STEPS.value} "
        f"{_SCHEDULER.value} cfg={_GUIDANCE.value} {_DTYPE.value} on {jax.devices()[0].platform}"
        f" x{jax.device_count()}")
  print(f"  JAX   compile {j['compile_s']:.1f} s | steady {j['steady_s']:.2f} s | "
        f"{j['images_per_s']:.2f} images/s | {j['flops_per_image'] / 1e9:.2f} GFLOP/image | "
        f"{j['tflops_per_s']:.3f} TFLOP/s" + (f" | MFU {j['mfu']:.1%}" if "mfu" in j else ""))
  if "torch" in result:
    t = result["torch"]
    print(f"  torch one-by-one {t['one_by_one_images_per_s']:.2f} images/s | batched "
          f"{t['batched_images_per_s']:.2f} images/s ({t['device']}, {t['dtype']})")
    r = result["ratios"]
    print(f"  ratio JAX/torch-one-by-one {r['jax_vs_torch_one_by_one']:.2f}x | "
          f"JAX/torch-batched {r['jax_vs_torch_batched']:.2f}x")
  if _OUT.value:
    from jaxdiffattack import io  # pylint: disable=g-import-not-at-top
    io.write_json(_OUT.value, result)


if __name__ == "__main__":
  app.run(main)
