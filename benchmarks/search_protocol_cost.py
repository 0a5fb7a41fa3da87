r"""What `configs/latent_search.py:world2,protocol` (issue #26 item 1) costs on this machine's CPUs.

  JAXDIFFATTACK_WORLD2_ASSETS=<smoke export> nice -n 5 python benchmarks/search_protocol_cost.py \
      --out docs/results/search_protocol_world2_cost.json

Two measurements, then an extrapolation (every step is in the output):
  1. `smoke`: the real protocol (every method of world2,protocol: the sampler, the surrogate
     ensemble, the evaluator and the scene oracle, gradients through the sampler for Adam / PGD)
     on the smoke world 2 ($JAXDIFFATTACK_WORLD2_ASSETS: a `configs/train_world2.py:smoke`
     export, tiny networks) at the real 20 sampler steps, on the census prompts of
     `configs/census.py:world2,smoke`, population 2, run for `--short` generations (twice: the
     first fills the compilation cache) and `--long` generations; a method's steady-state wall
     seconds per evaluation = the difference of its evaluation times over the difference of
     evaluations (the compile and first call cancel). Wall time on a shared machine: noisy. Its
     gradient / forward ratio (the whole pipeline, small networks) is reported beside the full
     architectures' (UNet + VAE only), as the estimate's upper variant.
  2. `full`: world 2's full UNet and VAE (configs/train_world2.py; random weights: the cost does
     not depend on them), one guided UNet call on 2·B latents and one VAE decode of B, forward
     and forward + backward (`jax.vjp`), in CPU seconds (all threads; minimum of `--repeats`).
  Extrapolation: per evaluation, forward f = 20 · unet(2B)/B + decode(B)/B + the oracle per image
  (docs/results/census_cost.json's measurement), and a gradient evaluation
  g = 20 · unet_vjp(2B)/B + decode_vjp(B)/B + the oracle; the study = targets × budget × (3 f +
  2 g) for random, Sep-CMA-ES, LM-MA-ES (forward) and Adam, PGD (forward + backward). Not
  counted: the five classifiers (about 0.1 GFLOP per image each, docs/results/
  world2_regnet_cost.json, vs ~9 GFLOP of sampling), ask/tell, the transfer test (~5 % more
  forward passes), and the memory a 20-step backward pass keeps (with `strategy.remat` it costs
  one more forward pass).
"""
import datetime
import json
import os
import pathlib
import platform
import subprocess
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp

from jaxdiffattack.io import write_json

_OUT = flags.DEFINE_string("out", "", "results JSON (printed when empty)")
_BATCH = flags.DEFINE_integer("batch", 16, "members per timed call (the protocol's population)")
_REPEATS = flags.DEFINE_integer("repeats", 2, "timed calls per program (the minimum is kept)")
_SHORT = flags.DEFINE_integer("short", 1, "generations of the shorter smoke run")
_LONG = flags.DEFINE_integer("long", 3, "generations of the longer smoke run")
_TARGETS = flags.DEFINE_integer("targets", 40, "targets of the study (issue #26: >= 40)")


def _cpu(fn, *args, repeats):
  jax.block_until_ready(fn(*args))          # compile + first run
  cpu = []
  for _ in range(repeats):
    c = time.process_time()
    jax.block_until_ready(fn(*args))
    cpu.append(time.process_time() - c)
  return min(cpu)


def smoke(short: int, long: int) -> dict:
  """Steady-state wall seconds per evaluation of every method on the smoke world."""
  from jaxdiffattack import census  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import search  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import variants  # pylint: disable=g-import-not-at-top
  census_config = variants.load_config("census", "world2,smoke")
  prompts = census.make_prompts(census_config)
  picked = [next(p for p in prompts if p.kind == k) for k in census.KINDS]
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    write_json(tmp / "targets.json", {"targets": [
        {"prompt": p.prompt, "label": p.label, "kind": p.kind, "rate": None} for p in picked]})
    times = {}
    # A first short run fills JAX's persistent compilation cache, so that the two measured runs
    # load the same compiled programs alike (their difference is then steady-state work).
    for run, gens in enumerate((short, short, long)):
      config = variants.load_config("latent_search", "world2,protocol,smoke")
      config.targets_file = str(tmp / "targets.json")
      config.num_steps = 20
      config.num_generations = gens
      config.transfer_per_target = 0
      config.filter_clean = False       # every target searched: the same work per method
      search.run(config, tmp / f"run{run}")
      timing = json.loads((tmp / f"run{run}" / "timing.json").read_text())
      times[gens] = {m: t["time/evaluate"] for m, t in timing.items()}
    evaluations = (long - short) * config.population_size * len(picked)
    per = {m: (times[long][m] - times[short][m]) / evaluations for m in times[long]}
  return {"num_steps": 20, "population_size": config.population_size,
          "targets": len(picked), "generations": [short, long],
          "evaluate_s": {str(g): t for g, t in times.items()},
          "wall_s_per_evaluation": per,
          "gradient_over_forward": {
              m: per[m] / (sum(per[f] for f in ("random", "Sep_CMA_ES", "LM_MA_ES")) / 3)
              for m in ("adam", "pgd")}}


def full(batch: int, repeats: int) -> dict:
  """CPU seconds of world 2's full UNet (2B) and VAE decode (B), forward and forward+backward."""
  from jaxdiffattack import variants  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.world2 import train  # pylint: disable=g-import-not-at-top
  train_config = variants.load_config("train_world2", None)
  key = jax.random.PRNGKey(0)
  ch, hw = train_config.vae.latent_channels, train.latent_size(train_config)
  b = batch
  unet = train.unet_module(train_config)
  z = jax.random.normal(key, (2 * b, ch, hw, hw))
  t = jnp.full((2 * b,), 500, jnp.int32)
  text = jax.random.normal(key, (2 * b, 77, train_config.clip.text_width))
  unet_params = jax.jit(unet.init)(key, z[:1], t[:1], text[:1])
  unet_fwd = jax.jit(lambda p, z: unet.apply(p, z, t, text))
  unet_vjp = jax.jit(lambda p, z: jax.vjp(lambda x: unet.apply(p, x, t, text), z)[1](z)[0])
  vae = train.vae_module(train_config)
  size = train_config.data.image_size
  vae_params = jax.jit(vae.init)(key, jnp.zeros((1, 3, size, size)))
  dec_fwd = jax.jit(lambda p, z: vae.apply(p, z, method=vae.decode))
  dec_vjp = jax.jit(lambda p, z: jax.vjp(lambda x: vae.apply(p, x, method=vae.decode), z)[1](
      vae.apply(p, z, method=vae.decode))[0])
  return {"batch": b, "unet_2b_cpu_s": _cpu(unet_fwd, unet_params, z, repeats=repeats),
          "unet_vjp_2b_cpu_s": _cpu(unet_vjp, unet_params, z, repeats=repeats),
          "vae_decode_b_cpu_s": _cpu(dec_fwd, vae_params, z[:b], repeats=repeats),
          "vae_decode_vjp_b_cpu_s": _cpu(dec_vjp, vae_params, z[:b], repeats=repeats)}


def main(_):
  from jaxdiffattack import variants  # pylint: disable=g-import-not-at-top
  out = {"command": "JAXDIFFATTACK_WORLD2_ASSETS=<smoke export> nice -n 5 python "
                    f"benchmarks/search_protocol_cost.py --out {_OUT.value or '-'}",
         "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "machine": f"{platform.node()} {platform.machine()} ({jax.device_count()} "
                    f"{jax.devices()[0].platform} device(s), shared with other jobs)",
         "code_version": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                        text=True).stdout.strip(),
         "assets": os.environ.get("JAXDIFFATTACK_WORLD2_ASSETS", "")}
  logging.info("smoke world: the protocol's methods, steady state")
  out["smoke"] = smoke(_SHORT.value, _LONG.value)
  logging.info("full world-2 architectures: forward and backward")
  out["full"] = f = full(_BATCH.value, _REPEATS.value)
  census_cost = json.loads(pathlib.Path("docs/results/census_cost.json").read_text())
  oracle = census_cost["oracle_b"]["cpu_s"] / census_cost["batch"]
  config = variants.load_config("latent_search", "world2,protocol")
  steps, b = config.num_steps, f["batch"]
  forward = (steps * f["unet_2b_cpu_s"] + f["vae_decode_b_cpu_s"]) / b + oracle
  grad = (steps * f["unet_vjp_2b_cpu_s"] + f["vae_decode_vjp_b_cpu_s"]) / b + oracle
  budget = config.population_size * config.num_generations
  methods = list(config.methods)
  n_forward = sum(not m in ("adam", "pgd") for m in methods)
  total = _TARGETS.value * budget * (n_forward * forward + (len(methods) - n_forward) * grad)
  out["estimate"] = {
      "targets": _TARGETS.value, "budget_per_target": budget, "methods": methods,
      "num_steps": steps, "oracle_cpu_s_per_image": oracle,
      "forward_cpu_s_per_evaluation": forward, "gradient_cpu_s_per_evaluation": grad,
      "gradient_over_forward_full": grad / forward,
      "gradient_over_forward_smoke": out["smoke"]["gradient_over_forward"],
      "total_cpu_hours": total / 3600,
      "not_counted": "the five classifiers (~0.1 GFLOP per image each), ask/tell, the transfer "
                     "test (~5 % more forward passes), remat's extra forward pass"}
  text_out = json.dumps(out, indent=2)
  if _OUT.value:
    write_json(_OUT.value, out)
  print(text_out)


if __name__ == "__main__":
  app.run(main)
