r"""Sampler throughput: the compiled JAX population sampler vs PyTorch diffusers, side by side.

  python benchmarks/sampler_benchmark.py --model=toy --population=16 --steps=50
  python benchmarks/sampler_benchmark.py --model=sd15 --population=64 --dtype=bfloat16 \
      --peak_tflops=989 --attention=cudnn   # H100 SXM dense bf16; on GPUs/TPUs
  python benchmarks/sampler_benchmark.py --model=toy --load_shape=sd15 --load_width_divisor=2

Reports, in one process: compile time apart from steady state; images/s of the JAX sampler
(the timed repetitions of every variant, PyTorch batched included, are interleaved and each keeps
its median, so a change of load on a shared machine hits all alike);
FLOPs per image (`jaxdiffattack.costs.sampler_flops`: XLA's cost analysis of one UNet call and of
the VAE decode, combined as steps × (1 + CFG) × UNet + VAE, because XLA's cost analysis counts a
scan body once whatever its trip count); achieved TFLOP/s and MFU when --peak_tflops is given; and the same candidates generated
by the PyTorch diffusers modules and scheduler (a) one candidate at a time — how the published
attack code evaluates — and (b) as one batch; then ratios. `--model=sd15` is the real SD1.5 shape
(860 M-parameter UNet, 512², 77×768 text) with random weights: weights' values do not change speed.
Text conditions are random hidden states (text encoding is outside the timed loop for both sides).

With --diffusers_flax (default, while diffusers 0.39 is installed) the same sampler also runs on
the previous modules, diffusers' Flax UNet/VAE (`diffusers_flax_baseline.py`), on the same params
and inputs: images/s new vs old side by side, and the largest image difference between them.
--load_shape=sd15 writes a random safetensors checkpoint of that shape (UNet + VAE, PyTorch
names; --load_width_divisor shrinks every channel count, keeping the topology, for small
machines) into a temp dir and times loading it (read, rename, transpose, cast to --dtype), the
project's loader vs the previous one; best of --load_repeats each.
"""

import dataclasses
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from jaxdiffattack import costs
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack.models import convert_diffusers
from jaxdiffattack.models import random_init
from jaxdiffattack.models import unet as unet_lib
from jaxdiffattack.models import vae as vae_lib
from jaxdiffattack.models import weights
from jaxdiffattack.models.stable_diffusion import DTYPES

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import diffusers_flax_baseline  # pylint: disable=g-import-not-at-top,wrong-import-position

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
_JAX = flags.DEFINE_bool("jax", True, "Time the JAX sampler (--nojax --torch: the PyTorch "
                         "baselines alone, in a process of their own, as gpu_suite.sh runs them; "
                         "the JAX model is then built from shapes alone).")
_TORCH_ONE_BY_ONE = flags.DEFINE_integer(
    "torch_one_by_one", 4, "Candidates timed one at a time in PyTorch (rate extrapolated).")
_ATTENTION = flags.DEFINE_list("attention", ["xla"], "Attention implementations, each timed "
                               "on the same params ('xla', 'cudnn'); the first is the main row.")
_DIFFUSERS_FLAX = flags.DEFINE_bool(
    "diffusers_flax", True, "Also time the previous modules (diffusers' Flax UNet/VAE) when "
    "diffusers 0.39 is installed.")
_LOAD_SHAPE = flags.DEFINE_string("load_shape", "", "Time loading a random safetensors "
                                  "checkpoint of this shape ('sd15'), new loader vs previous.")
_LOAD_DIVISOR = flags.DEFINE_integer("load_width_divisor", 1, "Divide every channel count of "
                                     "--load_shape by this (same topology, less disk/memory).")
_LOAD_REPEATS = flags.DEFINE_integer("load_repeats", 2, "Timed loads per loader (best kept).")
_TORCH_THREADS = flags.DEFINE_integer(
    "torch_threads", None, "torch.set_num_threads for the PyTorch baselines (default: torch's). "
    "On a shared CPU compare single-threaded: this flag = 1 and XLA_FLAGS="
    "'--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'.")
_OUT = flags.DEFINE_string("out", None, "Write the results as JSON here.")


def make_inputs(sd, text_shape):
  """Random latents [P, C, h, w], text states [P, L, D] and an unconditional state [L, D]."""
  rng = np.random.default_rng(0)
  latents = rng.standard_normal((_POPULATION.value,) + sd.latent_shape).astype(np.float32)
  cond = rng.standard_normal((_POPULATION.value,) + tuple(text_shape)).astype(np.float32)
  uncond = rng.standard_normal(tuple(text_shape)).astype(np.float32)
  return latents, cond, uncond


def jax_runner(sd, params, latents, cond, uncond):
  """A closure generating the population once with the compiled sampler: (images, seconds)."""
  guidance = _GUIDANCE.value > 1.0
  settings = sampler_lib.SamplerSettings(scheduler=_SCHEDULER.value, num_steps=_STEPS.value,
                                         guidance=guidance)
  pop_sampler = sampler_lib.PopulationSampler(sd, params, settings, microbatch=_MICROBATCH.value)

  def run():
    start = time.perf_counter()
    out = pop_sampler(latents, cond, uncond, _GUIDANCE.value)
    jax.block_until_ready(out.images)
    return out.images, time.perf_counter() - start

  return run


def jax_row(first_s, times, flops_per_image, images):
  """Compile time (first call minus the median steady call) and steady-state images/s."""
  population = _POPULATION.value
  seconds = statistics.median(times)
  return {"compile_s": first_s - seconds, "steady_s": seconds,
          "images_per_s": population / seconds, "flops_per_image": flops_per_image,
          "tflops_per_s": flops_per_image * population / seconds / 1e12, "images": images,
          "times_s": times}


def with_attention(sd, implementation: str):
  """The bundle with its UNet/VAE attention switched to `implementation` (same params)."""
  return dataclasses.replace(sd, unet=sd.unet.clone(attention=implementation),
                             vae=sd.vae.clone(attention=implementation))


def torch_runner(sd, latents, cond, uncond):
  """The diffusers PyTorch modules + scheduler in the StableDiffusionPipeline loop: (the
  one-by-one rate, measured here, and a closure timing one batched generation → seconds)."""
  import diffusers  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  device = "cuda" if torch.cuda.is_available() else "cpu"
  if _TORCH_THREADS.value:
    torch.set_num_threads(_TORCH_THREADS.value)
  dtype = torch.float32 if (_DTYPE.value == "float32" or device == "cpu") else torch.bfloat16
  unet = diffusers.UNet2DConditionModel.from_config(
      unet_lib.config_json(sd.unet.config)).to(device, dtype).eval()
  vae = diffusers.AutoencoderKL.from_config(vae_lib.config_json(sd.vae.config)).to(device,
                                                                                  dtype).eval()
  classes = {"ddim": diffusers.DDIMScheduler, "pndm": diffusers.PNDMScheduler,
             "dpmsolver++": diffusers.DPMSolverMultistepScheduler,
             "euler": diffusers.EulerDiscreteScheduler}
  scheduler = classes[_SCHEDULER.value].from_config(sd.scheduler_config)
  guidance = _GUIDANCE.value > 1.0

  @torch.no_grad()
  def generate(z, c, steps=_STEPS.value):
    z = torch.from_numpy(z).to(device, dtype)
    c = torch.from_numpy(c).to(device, dtype)
    if guidance:
      u = torch.from_numpy(np.broadcast_to(uncond, c.shape).copy()).to(device, dtype)
      c = torch.cat([u, c])
    scheduler.set_timesteps(steps, device=device)
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

  generate(latents[:1], cond[:1], steps=2)  # warm-up (same shapes, fewer steps)
  n_one = max(1, min(_TORCH_ONE_BY_ONE.value, len(latents)))
  start = time.perf_counter()
  for i in range(n_one):
    generate(latents[i:i + 1], cond[i:i + 1])
  one_rate = n_one / (time.perf_counter() - start)
  generate(latents, cond, steps=2)  # warm-up at the batch shape

  def batched():
    start = time.perf_counter()
    generate(latents, cond)
    return None, time.perf_counter() - start

  return {"device": device, "dtype": str(dtype), "threads": torch.get_num_threads(),
          "one_by_one_images_per_s": one_rate, "one_by_one_timed": n_one}, batched


def _scaled(spec: dict, divisor: int) -> dict:
  """A diffusers config with every channel count divided by `divisor`: the same topology and
  tensor count. GroupNorm keeps 32 groups (the previous modules hard-code 32), so the channel
  counts must stay multiples of 32: for SD1.5, divisor 2 (UNet 160…640, VAE 64…256)."""
  channels = [c // divisor for c in spec["block_out_channels"]]
  if any(c * divisor != c0 or c % 32 for c, c0 in zip(channels, spec["block_out_channels"])):
    raise app.UsageError(f"--load_width_divisor={divisor} leaves channel counts {channels} that "
                         "are not multiples of 32")
  return dict(spec, block_out_channels=channels)


def time_loading(shape: str, divisor: int, dtype: str) -> dict:
  """Seconds to load a random safetensors checkpoint of `shape`: new loader vs previous."""
  spec = random_init.SHAPES[shape]
  out = {"shape": shape, "width_divisor": divisor}
  with tempfile.TemporaryDirectory(prefix="load_bench_") as tmp:
    root = pathlib.Path(tmp)
    for kind in ("unet", "vae"):
      module = weights.build_diffusers_model(kind, _scaled(spec[kind], divisor), "benchmark")
      rng = np.random.default_rng(0)
      flat = {key: rng.standard_normal(s.shape, np.float32) * 0.02
              for key, s in weights.expected_params(module).items()}
      out[f"{kind}_parameters"] = sum(v.size for v in flat.values())
      to_json = {"unet": unet_lib.config_json, "vae": vae_lib.config_json}[kind]
      (root / kind).mkdir()
      (root / kind / "config.json").write_text(json.dumps(to_json(module.config)))
      weights.write_safetensors(root / kind / weights.DIFFUSERS_SAFETENSORS[0],
                                convert_diffusers.to_pytorch(flat))
      del flat
    out["file_bytes"] = sum(f.stat().st_size for f in root.glob("*/*.safetensors"))
    loaders = {"new": lambda kind: weights.load_diffusers_model(kind, root / kind, DTYPES[dtype])}
    if _DIFFUSERS_FLAX.value and diffusers_flax_baseline.available():
      loaders["diffusers_flax"] = lambda kind: diffusers_flax_baseline.load(kind, root / kind,
                                                                          DTYPES[dtype])
    for name, load in loaders.items():
      times = []
      for _ in range(_LOAD_REPEATS.value):
        start = time.perf_counter()
        for kind in ("unet", "vae"):
          _, params = load(kind)
          jax.block_until_ready(params)
          del params
        times.append(time.perf_counter() - start)
      out[f"{name}_s"] = min(times)
  if "diffusers_flax_s" in out:
    out["speedup"] = out["diffusers_flax_s"] / out["new_s"]
  return out


def attention_summary(sd, params, text_shape) -> dict:
  """Which implementation each attention call site gets when "cudnn" is asked for, on this
  device (`attention.cudnn_max_head_dim`): counts by (model part, head dim, chosen) and why."""
  from jaxdiffattack.models import attention as attention_lib  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.models import stable_diffusion  # pylint: disable=g-import-not-at-top
  max_head_dim = attention_lib.cudnn_max_head_dim()
  sites = stable_diffusion.attention_sites(sd, costs.abstract(params), text_shape[0],
                                           max_head_dim=max_head_dim)
  counts = {}
  for site in sites:
    name = f"{site.site.split('/')[0]} head dim {site.query[-1]} {site.dtype}: {site.chosen}"
    counts[name] = counts.get(name, 0) + 1
  return {"max_head_dim": max_head_dim, "sites": len(sites),
          "cudnn_sites": sum(s.chosen == "cudnn" for s in sites), "counts": counts,
          "reasons": sorted({s.reason for s in sites if s.reason})}


def torch_only(result: dict) -> dict:
  """--nojax: the PyTorch baselines alone (the JAX model from shapes, for its configs)."""
  sd, _, text_shape = random_init.load_shape_or_pipeline(_MODEL.value, _DTYPE.value,
                                                         abstract=_MODEL.value in
                                                         random_init.SHAPES)
  latents, cond, uncond = make_inputs(sd, text_shape)
  torch_info, batched = torch_runner(sd, latents, cond, uncond)
  times = [batched()[1] for _ in range(_REPEATS.value)]
  torch_info["batched_times_s"] = times
  torch_info["batched_images_per_s"] = len(latents) / statistics.median(times)
  result["torch"] = torch_info
  t = torch_info
  print(f"  torch one-by-one {t['one_by_one_images_per_s']:.2f} images/s | batched "
        f"{t['batched_images_per_s']:.2f} images/s ({t['device']}, {t['dtype']})")
  return result


def main(argv):
  del argv
  jax.config.update("jax_compilation_cache_dir", None)  # measure real compile time
  attentions = _ATTENTION.value
  result = {"model": _MODEL.value, "population": _POPULATION.value, "steps": _STEPS.value,
            "scheduler": _SCHEDULER.value, "guidance_scale": _GUIDANCE.value,
            "dtype": _DTYPE.value, "attention": attentions[0],
            "cpu_count": os.cpu_count(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "load_average": os.getloadavg()[0]}
  if not _JAX.value:
    if not _TORCH.value:
      raise app.UsageError("--nojax needs --torch (nothing to time)")
    result = torch_only(result)
    if _OUT.value:
      from jaxdiffattack import io  # pylint: disable=g-import-not-at-top
      io.write_json(_OUT.value, result)
    return
  sd, params, text_shape = random_init.load_shape_or_pipeline(_MODEL.value, _DTYPE.value,
                                                              attention=attentions[0])
  result.update(devices=[str(d) for d in jax.devices()], image_size=sd.image_size)
  result["attention_sites"] = attention_summary(sd, {"unet": params["unet"],
                                                     "vae": params["vae"]}, text_shape)
  latents, cond, uncond = make_inputs(sd, text_shape)
  # The same for every row (same model, same XLA cost analysis): computed once.
  flops = costs.sampler_flops(sd, costs.abstract({"unet": params["unet"], "vae": params["vae"]}),
                              _STEPS.value, _GUIDANCE.value > 1.0, text_shape).per_image
  # Every variant is compiled / warmed up first, then the timed repetitions are interleaved
  # (variant A, B, ..., torch batched; again ...) so that a change of load on a shared machine
  # hits every variant alike; each row keeps the median.
  runners = {f"jax_{impl}": jax_runner(with_attention(sd, impl), params, latents, cond, uncond)
             for impl in attentions}
  if _DIFFUSERS_FLAX.value and diffusers_flax_baseline.available():
    runners["jax_diffusers_flax"] = jax_runner(diffusers_flax_baseline.bundle(sd), params,
                                               latents, cond, uncond)
  first = {name: run() for name, run in runners.items()}
  torch_info = None
  if _TORCH.value:
    torch_info, runners["torch_batched"] = torch_runner(sd, latents, cond, uncond)
  times = {name: [] for name in runners}
  for _ in range(_REPEATS.value):
    for name, run in runners.items():
      times[name].append(run()[1])
  rows = {name: jax_row(first[name][1], times[name], flops, first[name][0]) for name in first}
  images = rows[f"jax_{attentions[0]}"]["images"]
  for name, row in rows.items():
    row["max_image_difference"] = float(np.abs(row.pop("images") - images).max())
    if _PEAK.value:
      row["mfu"] = row["tflops_per_s"] / _PEAK.value
  result["jax"] = rows.pop(f"jax_{attentions[0]}")
  result.update(rows)
  rate = result["jax"]["images_per_s"]
  result["ratios"] = {f"jax_vs_{name}": rate / row["images_per_s"] for name, row in rows.items()}
  if torch_info is not None:
    torch_info["batched_times_s"] = times["torch_batched"]
    torch_info["batched_images_per_s"] = len(latents) / statistics.median(times["torch_batched"])
    result["torch"] = torch_info
    result["ratios"].update(
        jax_vs_torch_one_by_one=rate / torch_info["one_by_one_images_per_s"],
        jax_vs_torch_batched=rate / torch_info["batched_images_per_s"])
  if _LOAD_SHAPE.value:
    result["load"] = time_loading(_LOAD_SHAPE.value, _LOAD_DIVISOR.value, _DTYPE.value)
  logging.info("%s", json.dumps(result, indent=2))
  print(f"model={_MODEL.value} P={_POPULATION.value} steps={_STEPS.value} "
        f"{_SCHEDULER.value} cfg={_GUIDANCE.value} {_DTYPE.value} attention={attentions[0]} "
        f"on {jax.devices()[0].platform} x{jax.device_count()}")
  for name in ["jax"] + list(rows):
    if name in result:
      j = result[name]
      print(f"  {name:18s} compile {j['compile_s']:.1f} s | steady {j['steady_s']:.2f} s | "
            f"{j['images_per_s']:.2f} images/s | {j['flops_per_image'] / 1e9:.2f} GFLOP/image | "
            f"{j['tflops_per_s']:.3f} TFLOP/s" + (f" | MFU {j['mfu']:.1%}" if "mfu" in j else ""))
  if "torch" in result:
    t = result["torch"]
    print(f"  torch one-by-one {t['one_by_one_images_per_s']:.2f} images/s | batched "
          f"{t['batched_images_per_s']:.2f} images/s ({t['device']}, {t['dtype']})")
  print("  ratios " + " | ".join(f"{k} {v:.2f}x" for k, v in result["ratios"].items()))
  if "load" in result:
    print("  load " + json.dumps(result["load"]))
  if _OUT.value:
    from jaxdiffattack import io  # pylint: disable=g-import-not-at-top
    io.write_json(_OUT.value, result)


if __name__ == "__main__":
  app.run(main)
