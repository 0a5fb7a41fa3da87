"""The `generate` job: prompts × seeds → images, a grid and a results table.

`python launch/generate.py --config configs/generate.py --workdir DIR` writes into DIR:
  config.json      the resolved config;
  images/NNNNN.png one PNG per member (member = prompt_index · images_per_prompt + seed_index);
  grid.png         prompts as rows, seeds as columns;
  results.jsonl    one row per image: prompt, prompt_index, seed_index, member, file and, when
                   config.judges names image judges (`judges.IMAGE_JUDGES`, e.g. "world2_oracle"),
                   "judges": {name: `judges.Verdict.record`} — each image judged against its
                   prompt and the class of `config.label_set` the prompt names first.
Member m's seed vector is drawn from fold_in(PRNGKey(config.seed), m), so images do not depend
on device count or microbatch.
"""

import math
import pathlib
import time

from absl import logging
import jax
import ml_collections
import numpy as np

from jaxdiffattack import costs
from jaxdiffattack import io
from jaxdiffattack import judges as judges_lib
from jaxdiffattack import labels as labels_lib
from jaxdiffattack import pages
from jaxdiffattack import runs
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import text
from jaxdiffattack.errors import check
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.models import load_stable_diffusion


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the key, the value and what is allowed."""
  check(isinstance(config.model, str) and bool(config.model), "model", config.model,
        "use 'toy', a local diffusers directory or a hub id")
  sampler_lib.SamplerSettings(scheduler=config.scheduler, num_steps=config.num_steps).validate()
  check(isinstance(config.guidance_scale, (int, float)) and math.isfinite(config.guidance_scale),
        "guidance_scale", config.guidance_scale, "use a finite number (<= 1 disables guidance)")
  prompts = list(config.prompts)
  check(len(prompts) > 0, "prompts", prompts, "give at least one prompt")
  check(all(isinstance(p, str) for p in prompts), "prompts", prompts, "prompts must be strings")
  check(isinstance(config.images_per_prompt, int) and config.images_per_prompt >= 1,
        "images_per_prompt", config.images_per_prompt, "use an integer >= 1")
  costs.validate_microbatch(config.microbatch, config.get("memory_budget_gb"))
  check(config.dtype in ("float32", "bfloat16"), "dtype", config.dtype,
        "use 'float32' or 'bfloat16'")
  for name in config.get("judges", ()):
    check(name in judges_lib.IMAGE_JUDGES, "judges", name,
          f"use image judges of {sorted(judges_lib.IMAGE_JUDGES)}")
  if config.get("judges", ()):
    names = labels_lib.class_names(config.label_set)
    for p in prompts:
      labels_lib.prompt_class(p, names, key="prompts")


def judge_rows(config, images: np.ndarray, prompts) -> list[dict]:
  """Per image {judge: Verdict.record} of every image judge of config.judges, each image judged
  against its prompt and the label-set class the prompt names first."""
  names = labels_lib.class_names(config.label_set)
  labels = [labels_lib.prompt_class(p, names, key="prompts") for p in prompts]
  verdicts = {name: judges_lib.image_judge(name).verdict(images, labels, False, prompts)
              for name in config.get("judges", ())}
  return [judges_lib.record(verdicts, i) for i in range(len(prompts))]


def population_sampler(config, sd, params, scoring=None) -> sampler_lib.PopulationSampler:
  """The sharded sampler of config.{scheduler, num_steps, guidance_scale (<= 1: off),
  microbatch, memory_budget_gb}, with `scoring`'s scores fused in when given (the census)."""
  settings = sampler_lib.SamplerSettings(scheduler=config.scheduler, num_steps=config.num_steps,
                                         guidance=config.guidance_scale > 1.0)
  return sampler_lib.PopulationSampler(
      sd, params, settings, microbatch=config.microbatch,
      memory_budget_gb=config.get("memory_budget_gb"),
      score_fn=None if scoring is None else scoring.score_fn,
      score_params=None if scoring is None else scoring.params)


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Generates every prompt × seed image and writes the run directory. Returns the rows."""
  validate(config)
  workdir = pathlib.Path(workdir)
  runs.check_workdir(config, workdir, "generate run")
  sd, params = load_stable_diffusion(config.model, dtype=config.dtype)
  runs.write_config(config, workdir)
  prompts = list(config.prompts)
  n = config.images_per_prompt
  guidance = config.guidance_scale > 1.0
  pop_sampler = population_sampler(config, sd, params)
  members = np.arange(len(prompts) * n)
  latents = sampler_lib.member_latents(jax.random.PRNGKey(config.seed), members, sd.latent_shape)
  prompt_emb = np.asarray(text.encode_prompts(sd, params["text_encoder"], prompts))
  cond = prompt_emb[members // n]
  uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0])
  logging.info("generating %d images (%d prompts × %d seeds) with %s, %d steps, guidance %s on "
               "%d device(s)", len(members), len(prompts), n, config.scheduler, config.num_steps,
               config.guidance_scale if guidance else "off", jax.device_count())
  start = time.perf_counter()
  out = pop_sampler(latents, cond, uncond, config.guidance_scale)
  seconds = time.perf_counter() - start
  logging.info("generated %d images in %.1f s (%.2f images/s, compile included)", len(members),
               seconds, len(members) / seconds)
  rows = []
  judged = (judge_rows(config, np.asarray(out.images), [prompts[m // n] for m in members])
            if config.get("judges", ()) else None)
  for m in members:
    name = f"images/{m:05d}.png"
    io.write_png(workdir / name, out.images[m])
    rows.append({"member": int(m), "prompt_index": int(m // n), "seed_index": int(m % n),
                 "prompt": prompts[m // n], "file": name})
    if judged is not None:
      rows[-1]["judges"] = judged[m]
  upscale = max(1, 128 // out.images.shape[1])
  io.write_png(workdir / "grid.png", io.image_grid(out.images, cols=n, upscale=upscale))
  io.write_jsonl(workdir / "results.jsonl", rows)
  pages.write_index(workdir)
  logging.info("wrote %s/{grid.png,results.jsonl,images/}", workdir)
  return rows


__all__ = ["run", "validate", "ConfigError"]
