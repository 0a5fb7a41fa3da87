r"""Search throughput: generations/s, images/s and the share of wall time spent in ask/tell.

  # ask/tell alone at the SD1.5 latent size (n = 4·64·64 = 16384), fake objective, CPU is fine:
  python benchmarks/search_benchmark.py --strategies=Sep_CMA_ES,LM_MA_ES --population=64 \
      --dims=16384
  # the whole loop with the SD1.5-shaped sampler (random weights; GPU/TPU):
  python benchmarks/search_benchmark.py --model=sd15 --population=64 --steps=50 --dtype=bfloat16 \
      --peak_tflops=989
  # any machine: ask/tell measured here, the SD1.5 sampler at an H100's bf16 peak (a bound):
  python benchmarks/search_benchmark.py --model=sd15 --population=64 --steps=50 --dtype=bfloat16 \
      --peak_tflops=989 --noloop
  # the whole loop on the toy world (or any pipeline directory):
  python benchmarks/search_benchmark.py --model=toy --population=16 --steps=20

Reports, in one process, per strategy: compile time of the batched ask and tell apart from their
steady-state time (median of --repeats, `block_until_ready`); the seconds per generation that the
driver's loop spends in ask/tell (keys, ask, population to the host, tell; what the shares below
use) and outside the objective, with an instant objective; with a model, the driver's real loop
(`jaxdiffattack.search.driver.run_loop`: ask → population to the sampler, sharded over the mesh →
fused scorer → fitness → tell) after a warm-up generation, timed by the driver itself:
generations/s, images/s, and ask/tell's share of the loop's wall time (the target is ≤ 5 % at
population 64 on the SD1.5 latent size with Sep-CMA-ES or LM-MA-ES). The objective is the
synthetic image-statistics scorer (`scoring.synthetic_scoring`) fused into the sampler; the
search space is the latent sphere (z = √n x / ‖x‖) with fixed random text hidden states. Without
--model the objective is a fake one (sphere function) and only ask/tell is timed;
--reference_images_per_s then gives the share ask/tell would have beside a sampler of that speed.

With --model and --peak_tflops, the sampler's FLOPs per image (`jaxdiffattack.costs`) give the
most images/s a device of that peak can make, hence an upper bound on ask/tell's share
(`ask_tell_share_bound`: the sampler could not be faster, scoring FLOPs are left out) and, with the
loop, its MFU. --noloop skips the loop (and builds the model from shapes alone), for machines too
slow to sample that model.
"""

import json
import statistics
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack import costs
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import scoring as scoring_lib
from jaxdiffattack.models import random_init
from jaxdiffattack.search import driver
from jaxdiffattack.search import strategies as strategies_lib

_STRATEGIES = flags.DEFINE_list("strategies", ["Sep_CMA_ES", "LM_MA_ES"], "evosax names.")
_POPULATION = flags.DEFINE_integer("population", 64, "Members per target and generation.")
_TARGETS = flags.DEFINE_integer("targets", 1, "Independent searches batched together.")
_DIMS = flags.DEFINE_integer("dims", 16384, "Solution size without --model (SD1.5: 16384).")
_MODEL = flags.DEFINE_string("model", "", "'' (fake objective), 'sd15' (random weights), 'toy' "
                             "or a pipeline directory.")
_STEPS = flags.DEFINE_integer("steps", 50, "Denoising steps.")
_GUIDANCE = flags.DEFINE_float("guidance_scale", 7.5, "CFG scale (<= 1: no guidance).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Model dtype.")
_MICROBATCH = flags.DEFINE_integer("microbatch", None, "Members per device per sampler call.")
_GENERATIONS = flags.DEFINE_integer("generations", 5, "Timed generations of the full loop.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed ask/tell repetitions.")
_REFERENCE = flags.DEFINE_float("reference_images_per_s", None,
                                "Sampler speed for the implied ask/tell share (no --model).")
_PEAK = flags.DEFINE_float("peak_tflops", None, "Device peak TFLOP/s (989: H100 SXM dense bf16) "
                           "for the ask/tell share bound and MFU (needs --model).")
_LOOP = flags.DEFINE_bool("loop", True, "Time the driver's loop with --model (--noloop: only "
                          "ask/tell and, with --peak_tflops, the bound).")
_OUT = flags.DEFINE_string("out", None, "Write the results as JSON here.")


def _strategy(name: str, num_dims: int) -> strategies_lib.BatchedStrategy:
  """The benchmarked strategy: --population members × --targets searches, std_init 0.5."""
  return strategies_lib.BatchedStrategy(
      name, _POPULATION.value, num_dims, num_targets=_TARGETS.value, std_init=0.5,
      sampling_fn=lambda k: jax.random.normal(k, (num_dims,)))


def _timed(fn):
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - start


def time_ask_tell(name: str, num_dims: int) -> dict:
  """Compile and steady-state seconds of one batched ask and one tell (fake fitness)."""
  t = _TARGETS.value
  strategy = _strategy(name, num_dims)
  key = jax.random.PRNGKey(0)
  states = strategy.init(driver.target_keys(key, t, 0, 2), jnp.zeros((t, num_dims)))
  fitness = lambda x: jnp.sum(x**2, axis=-1)
  (x, asked), ask_compile = _timed(lambda: strategy.ask(driver.target_keys(key, t, 0, 0), states))
  _, tell_compile = _timed(lambda: strategy.tell(driver.target_keys(key, t, 0, 1), x, fitness(x),
                                                 asked))
  ask_s, tell_s = [], []
  for g in range(1, _REPEATS.value + 1):
    ask_keys, tell_keys = (driver.target_keys(key, t, g, purpose) for purpose in (0, 1))
    start = time.perf_counter()
    x, asked = strategy.ask(ask_keys, states)
    np.asarray(x)  # the driver hands the population to the host (sampler inputs)
    ask_s.append(time.perf_counter() - start)
    f = fitness(x)
    states, dt = _timed(lambda: strategy.tell(tell_keys, x, f, asked))  # pylint: disable=cell-var-from-loop
    tell_s.append(dt)
  return {"ask_compile_s": ask_compile, "tell_compile_s": tell_compile,
          "ask_s": statistics.median(ask_s), "tell_s": statistics.median(tell_s)}


def time_driver(name: str, num_dims: int) -> dict:
  """Seconds per generation the driver's loop spends in ask/tell (keys, ask, the population to the
  host, tell, blocking included) and outside its objective, with an instant host objective."""
  t = _TARGETS.value
  strategy = _strategy(name, num_dims)

  def evaluate(x, active):
    f = np.sum(np.square(x, dtype=np.float32), axis=-1) / num_dims
    return driver.Evaluation(fitness=f, success=np.zeros(f.shape, bool), records={})

  generations = max(_REPEATS.value, 2)
  settings = driver.LoopSettings(num_generations=generations, stop_after_failures=0,
                                 label=f"overhead[{name}]")
  state = driver.run_loop(strategy, evaluate, jax.random.PRNGKey(0),
                          np.zeros((t, num_dims), np.float32), settings)
  outside = float(state["time/total"]) - float(state["time/evaluate"])
  return {"loop_ask_tell_s": float(state["time/ask_tell"]) / generations,
          "loop_overhead_s": outside / generations}


def time_loop(name: str, sd, params, text_shape) -> dict:
  """The driver's loop on the latent sphere with the fused synthetic scorer."""
  t, p = _TARGETS.value, _POPULATION.value
  n = int(np.prod(sd.latent_shape))
  scoring = scoring_lib.synthetic_scoring()
  guidance = _GUIDANCE.value > 1.0
  sampler = sampler_lib.PopulationSampler(
      sd, params, sampler_lib.SamplerSettings(num_steps=_STEPS.value, guidance=guidance,
                                              return_images=False),
      microbatch=_MICROBATCH.value, score_fn=scoring.score_fn, score_params=scoring.params)
  rng = np.random.default_rng(0)
  cond = rng.standard_normal((t,) + tuple(text_shape)).astype(np.float32)
  uncond = rng.standard_normal(tuple(text_shape)).astype(np.float32)

  def evaluate(x, active):
    a = len(active)
    flat = x.reshape(a * p, n)
    z = flat * (np.sqrt(n) / np.linalg.norm(flat, axis=1, keepdims=True))
    member_target = np.repeat(active, p)
    out = sampler(z.reshape((a * p,) + sd.latent_shape), cond[member_target], uncond,
                  _GUIDANCE.value, aux=scoring.aux(labels=member_target))
    f = np.asarray(out.scores["surrogate/margin"], np.float64).reshape(a, p)
    return driver.Evaluation(fitness=f, success=np.zeros_like(f, bool), records={})

  strategy = _strategy(name, n)
  means = rng.standard_normal((t, n)).astype(np.float32)
  key = jax.random.PRNGKey(0)
  _, compile_s = _timed(lambda: evaluate(means[:, None].repeat(p, 1), np.arange(t)).fitness)
  settings = driver.LoopSettings(num_generations=_GENERATIONS.value, stop_after_failures=0,
                                 label=f"bench[{name}]")
  state = driver.run_loop(strategy, evaluate, key, means, settings)
  total = float(state["time/total"])
  return {"sampler_compile_and_first_call_s": compile_s,
          "generations_per_s": _GENERATIONS.value / total,
          "images_per_s": float(state["images"]) / total,
          "ask_tell_share": float(state["time/ask_tell"]) / total,
          "loop_s_per_generation": total / _GENERATIONS.value}


def main(argv):
  del argv
  results = {"population": _POPULATION.value, "targets": _TARGETS.value,
             "devices": [str(d) for d in jax.devices()], "strategies": {}}
  if _PEAK.value and not _MODEL.value:
    raise app.UsageError("--peak_tflops needs --model (the sampler whose FLOPs bound the share)")
  loaded = (random_init.load_shape_or_pipeline(_MODEL.value, _DTYPE.value,
                                             abstract=not _LOOP.value)
            if _MODEL.value else None)
  num_dims = int(np.prod(loaded[0].latent_shape)) if loaded else _DIMS.value
  results["dims"] = num_dims
  images = _POPULATION.value * _TARGETS.value
  if _PEAK.value:
    sd, params, text_shape = loaded
    flops = costs.sampler_flops(sd, params, _STEPS.value, _GUIDANCE.value > 1.0, text_shape)
    results.update(peak_tflops=_PEAK.value, flops_per_image=flops.per_image,
                   unet_call_flops=flops.unet_call, vae_decode_flops=flops.vae_decode,
                   images_per_s_at_peak=costs.roofline_images_per_s(flops.per_image, _PEAK.value))
    logging.info("sampler %.2f TFLOP/image (UNet call %.3f, VAE %.3f): at most %.2f images/s at "
                 "%g TFLOP/s", flops.per_image / 1e12, flops.unet_call / 1e12,
                 flops.vae_decode / 1e12, results["images_per_s_at_peak"], _PEAK.value)
  for name in _STRATEGIES.value:
    r = time_ask_tell(name, num_dims)
    logging.info("%s n=%d P=%d T=%d: ask %.2f ms, tell %.2f ms (compile %.2f s + %.2f s)", name,
                 num_dims, _POPULATION.value, _TARGETS.value, 1e3 * r["ask_s"],
                 1e3 * r["tell_s"], r["ask_compile_s"], r["tell_compile_s"])
    r.update(time_driver(name, num_dims))
    logging.info("%s in the driver's loop: ask/tell %.2f ms, all but the objective %.2f ms per "
                 "generation", name, 1e3 * r["loop_ask_tell_s"], 1e3 * r["loop_overhead_s"])
    ask_tell_s = r["loop_ask_tell_s"]
    if _REFERENCE.value:
      sample_s = images / _REFERENCE.value
      r["implied_ask_tell_share"] = ask_tell_s / (ask_tell_s + sample_s)
    if _PEAK.value:
      r["ask_tell_share_bound"] = costs.share_bound(ask_tell_s, images,
                                                    results["flops_per_image"], _PEAK.value)
      logging.info("%s: ask/tell at most %.3f %% of wall time beside a sampler at %g TFLOP/s",
                   name, 100 * r["ask_tell_share_bound"], _PEAK.value)
    if loaded and _LOOP.value:
      r.update(time_loop(name, *loaded))
      logging.info("%s loop: %.3f generations/s, %.1f images/s, ask/tell %.2f %% of wall time",
                   name, r["generations_per_s"], r["images_per_s"], 100 * r["ask_tell_share"])
      if _PEAK.value:
        r["mfu"] = r["images_per_s"] * results["flops_per_image"] / (_PEAK.value * 1e12)
    results["strategies"][name] = r
  print(json.dumps(results, indent=2))
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
