"""On the toy world: a short latent search finds failures the held-out evaluator confirms, for at
least some targets, and more often than the random baseline at equal budget (SAGE's comparison).

Protocol (fixed): configs/latent_search.py:toy — the shipped toy SD (20 DDIM steps, guidance 7.5),
surrogate = toy ResNet margin of the prompt's class, evaluator = toy ViT top-1 (a different
model) — on its 5 labels × SEEDS seeds = 10 targets, population POPULATION × GENERATIONS
generations per target (the same budget for Sep-CMA-ES and for random seeds), seed 0.

Measured numbers: NOT YET MEASURED — the toy assets (jaxdiffattack/toy/assets/{sd,clip,vit,resnet})
were not shipped when this test was written, so it skips. To be filled in by whoever runs it first
with the assets: "Sep-CMA-ES a/10 targets, random b/10, wall c s on 2 CPU cores"; then tighten the
assertions below to those numbers (keeping the strict search > random comparison).
"""

import json
import pathlib
import sys

import pytest

SEEDS = 2
POPULATION = 12
GENERATIONS = 4


def _toy_or_skip():
  from jaxdiffattack import toy  # pylint: disable=g-import-not-at-top
  missing = [d.name for d in (toy.SD_DIR, toy.CLIP_DIR, toy.VIT_DIR, toy.RESNET_DIR)
             if not d.is_dir()]
  if missing:
    pytest.skip(f"toy-world assets missing ({', '.join(missing)} under {toy.ASSETS_DIR})")
  try:
    from jaxdiffattack import fitness  # pylint: disable=g-import-not-at-top
    fitness.build  # pylint: disable=pointless-statement
  except (ImportError, AttributeError) as e:
    pytest.skip(f"jaxdiffattack.fitness (the scorers) is not there yet: {e}")


def test_latent_search_beats_random_on_the_toy_world(tmp_path):
  _toy_or_skip()
  from jaxdiffattack import search  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "configs"))
  import latent_search  # pylint: disable=g-import-not-at-top
  config = latent_search.get_config("toy")
  config.seeds_per_label = SEEDS
  config.population_size = POPULATION
  config.num_generations = GENERATIONS
  config.save_images = False
  out = search.run(config, tmp_path)
  rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
  found = {m: sum(r["success"] for r in rows if r["method"] == m)
           for m in ("Sep_CMA_ES", "random")}
  # Every success is an evaluator-confirmed failure (the evaluator is not the surrogate).
  for r in rows:
    for f in r["failures"]:
      assert f["records"]["score/evaluator/top1_hit"] < 0.5
  assert found["Sep_CMA_ES"] >= 1, found
  targets = len({r["target"] for r in rows if r["method"] == "random"})
  if found["random"] == targets:
    # Measured 2026-11-22 with the first shipped toy SD (UNet 6000 steps): random seeds already
    # fail every target (its shapes are blobby; see docs/toy_model_card.md), so the comparison
    # is saturated. It becomes strict again once the toy SD meets its quality bar (issue 3).
    pytest.xfail(f"random baseline saturated ({found}); toy SD below its quality bar")
  assert found["Sep_CMA_ES"] > found["random"], (found, out["summary"])
