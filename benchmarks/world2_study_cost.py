r"""CPU cost of the three world-2 studies (issue #26 items 2-4), measured per unit on a world-2
export and scaled honestly to the real world.

  JAXDIFFATTACK_WORLD2_ASSETS=/work/w2smoke_main/export nice -n 5 \
      python benchmarks/world2_study_cost.py --out docs/results/world2_study_cost.json

What is measured (CPU seconds of this process, `time.process_time`, all threads; after one
untimed warm-up call so compiles are not counted), at the studies' 20 DDIM steps on the given
export (the smoke export: 32² images, tiny networks):
  * `image`: one hard-sample evaluation image of the ATM study (text encoding, sampler with
    guidance 7.5, VAE, the RegNetY evaluator and CLIP fused, the scene oracle on the host) —
    the unit every study's plain images cost;
  * `image_noguidance`: the same with guidance off (no unconditional pass);
  * `atm_iteration`: one ATM iteration of one prompt (population of `--prompts`);
  * `analysis_image` / `analysis_image_steps`: one image of the analysis job's generator
    (attention capture and latent trajectory), without / with each step's x0 decoded.
Only the RATIOS to `image` are carried to the real world: real cost = ratio × the real world's
measured cost per image (`--real_image_cpu_s`, default 0.28 CPU-s: world 2's census, 64², 20
steps with guidance, generator + oracle + evaluator; docs/results/census_cost_f4.json has the
generator alone at 0.21). On the smoke export the host's fixed costs (text encoding, the oracle)
dominate, so its ratios understate what the networks add; the real world's component costs
(docs/results/census_cost_f4.json: a CFG UNet step and a VAE decode per image) give a second
ratio per unit (`component_ratios`: an ATM iteration = 20 forward CFG steps + a backward through
the last one, ~2 more, + the VAE decode forward and backward, ~3 decodes; no guidance = half the
UNet; the analysis generator = an image, + 19 decodes of each step's x0 with `decode_steps`), and
the estimate takes the LARGER of the two ratios. Each study's units come from its config
(`world2,study`); ATM attacks only the prompts its classifier reads correctly when clean
(`--clean_pass`, default 0.54: world 2's CLIP zero-shot top-1,
docs/results/world2_clip_check_run2_clip_tune2000.json), so the ATM estimate is given at that
rate and as an upper bound at 100 %.
"""

import argparse
import importlib.util
import pathlib
import sys
import tempfile
import time

import numpy as np

_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT / "benchmarks"))

import evidence  # pylint: disable=g-import-not-at-top,wrong-import-position


def _config(name, arg):
  spec = importlib.util.spec_from_file_location(f"c_{name}", _ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _cpu(fn, repeats: int) -> float:
  """CPU seconds per call of fn after one warm-up call."""
  fn()
  start = time.process_time()
  for _ in range(repeats):
    fn()
  return (time.process_time() - start) / repeats


def measure(prompts: int, repeats: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import sharding  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.analysis import generation  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.attacks import experiment  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.attacks import step as step_lib  # pylint: disable=g-import-not-at-top
  out = {}
  for guidance in (7.5, 1.0):
    config = _config("atm", "world2,study")
    config.per_label = 1
    config.max_prompts = prompts
    config.population = prompts
    config.eval_batch = prompts
    config.guidance_scale = guidance
    with tempfile.TemporaryDirectory() as tmp:
      job = experiment.Job(config, pathlib.Path(tmp))
      data = job.prepare("short", config.prompt_sets.short)
      index = np.arange(prompts)
      texts = list(data.prompt_set.prompts[:prompts])
      labels = np.asarray(data.prompt_set.labels[:prompts])
      latents = job.noise(data.purpose_key(step_lib.CLEAN_NOISE), index, None)
      image = _cpu(lambda: job.sample_scores(texts, latents, labels), repeats) / prompts
      if guidance > 1:
        out["image"] = image
        padded = step_lib.pad_index(index, job.mesh.size)
        batch = jax.tree_util.tree_map(lambda a: sharding.put_population(a, job.mesh),
                                       data.prompts(padded))
        state = [job.compiled.init(sharding.put_population(data.encoded.ids[padded], job.mesh))]
        key = sharding.put_replicated(data.purpose_key(step_lib.ATTACK), job.mesh)

        def iteration():
          state[0], metrics = job.compiled.step(job.params, state[0], batch, key)
          jax.block_until_ready(metrics)
        out["atm_iteration"] = _cpu(iteration, repeats) / len(padded)
        # The analysis job's generator on the same model and prompts.
        from jaxdiffattack.models import load_stable_diffusion  # pylint: disable=g-import-not-at-top
        sd, params = load_stable_diffusion("world2")
        gen = generation.Generator(sd, params, scheduler="ddim", num_steps=config.num_steps,
                                   guidance_scale=7.5, unit=prompts, seed=0, x0_size=128)
        seeds = list(range(prompts))
        out["analysis_image"] = _cpu(lambda: gen(texts, seeds), repeats) / prompts
        out["analysis_image_steps"] = _cpu(lambda: gen(texts, seeds, decode_steps=True),
                                           repeats) / prompts
      else:
        out["image_noguidance"] = image
  return out


def units() -> dict:
  """Each study's units from its `world2,study` config (images, iterations)."""
  from jaxdiffattack import labels as labels_lib  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.analysis import run as analysis  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.attacks import prompts as prompts_lib  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.sweep import plan as plan_lib  # pylint: disable=g-import-not-at-top
  atm = _config("atm", "world2,study")
  label_set = labels_lib.get_label_set("world2")
  n = sum(len(prompts_lib.load(spec, k, label_set, None, atm.per_label))
          for k, spec in atm.prompt_sets.items())
  blocks = 3 if atm.eval_noise == "both" else 2          # fresh, fixed, baseline
  sweep = _config("shift_sweep", "world2,study")
  cells = len(plan_lib.grid_cells(sweep.grids, sweep.shifts))
  per_setting = cells * len(plan_lib.resolve_labels(sweep)[0]) * sweep.images_per_prompt
  an = _config("analysis", "world2,study")
  classes = analysis.resolve_classes(an)
  total = analysis.planned_images(an, classes)
  with_steps = len(classes) * an.seeds + an.pairs * an.seeds        # singles and pairs
  return {"atm": {"prompts": n, "prompt_iterations": n * atm.attack.num_iters,
                  "images": n * (1 + blocks * atm.num_samples),
                  "images_note": "clean check + (fresh, fixed, baseline) × samples per prompt"},
          "sweep": {"cells": cells, "images_guided": per_setting,
                    "images_unguided": per_setting},
          "analysis": {"images": total, "images_with_steps": with_steps}}


def component_ratios(path=_ROOT / "docs" / "results" / "census_cost_f4.json",
                     num_steps: int = 20) -> dict:
  """Real-world unit costs over an image's, from the census's component timings (docstring)."""
  import json  # pylint: disable=g-import-not-at-top
  got = json.loads(pathlib.Path(path).read_text())
  unet, decode = got["unet_2b"]["cpu_s"], got["vae_decode_b"]["cpu_s"]   # per batch
  image = num_steps * unet + decode
  return {"image": 1.0, "atm_iteration": ((num_steps + 2) * unet + 3 * decode) / image,
          "image_noguidance": (num_steps * unet / 2 + decode) / image,
          "analysis_image": 1.0,
          "analysis_image_steps": (num_steps * unet + num_steps * decode) / image,
          "source": str(pathlib.Path(path).relative_to(_ROOT))}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--prompts", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--real_image_cpu_s", type=float, default=0.28)
  parser.add_argument("--clean_pass", type=float, default=0.54)
  parser.add_argument("--out", default="")
  args = parser.parse_args(argv)
  cpu = measure(args.prompts, args.repeats)
  smoke = {k: v / cpu["image"] for k, v in cpu.items()}
  component = component_ratios()
  ratio = {k: max(v, component[k]) for k, v in smoke.items()}     # "image": 1
  u = units()
  real = args.real_image_cpu_s
  hours = lambda s: round(s / 3600, 2)
  n = u["atm"]["prompts"]
  per_attacked = real * (u["atm"]["images"] / n - 1
                         + ratio["atm_iteration"] * u["atm"]["prompt_iterations"] / n)
  atm_s = real * n + per_attacked * n * args.clean_pass
  atm_upper = real * n + per_attacked * n
  sweep_s = real * (u["sweep"]["images_guided"]
                    + ratio["image_noguidance"] * u["sweep"]["images_unguided"])
  an = u["analysis"]
  analysis_s = real * (ratio["analysis_image"] * (an["images"] - an["images_with_steps"])
                       + ratio["analysis_image_steps"] * an["images_with_steps"])
  out = {"command": " ".join(["python", *sys.argv]), "measured_cpu_s_per_unit": cpu,
         "smoke_ratios": smoke, "component_ratios": component, "ratio_used": ratio,
         "real_image_cpu_s": real, "clean_pass": args.clean_pass, "units": u,
         "estimate_cpu_hours": {"atm": hours(atm_s), "atm_if_every_prompt_is_attacked":
                                hours(atm_upper), "sweep": hours(sweep_s),
                                "analysis": hours(analysis_s)},
         "note": "CPU-hours; on 2 free cores the wall time is about half (the shared machine's "
                 "load makes it longer)"}
  evidence.emit(out, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
