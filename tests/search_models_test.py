"""The search with the real scorer stack (`jaxdiffattack.fitness` roles through
`scoring.make_scoring`): tiny random SD + tiny random CLIP/ViT/ResNet (tests/tiny_vision.py)."""

import json

import pytest

from jaxdiffattack import search

from search_multidevice_worker import tiny_config  # pylint: disable=g-bad-import-order


def test_latent_search_with_fitness_roles(tiny_sd_dirs, tmp_path_factory, tmp_path):
  tiny_vision = pytest.importorskip("tiny_vision")
  dirs = tiny_vision.build_all_cached(tmp_path_factory)
  config = tiny_config("latent", tiny_sd_dirs[1])
  config.scoring.kind = "models"
  config.label_set = "toy"
  config.labels = ("red circle", "blue star")
  config.criterion.fitness = "surrogate/margin"
  config.criterion.success = "evaluator/top1_hit"
  config.criterion.clip = "evaluator/clip_score"
  config.criterion.clip_filter.mode = "max"      # CLIP also sees the prompt missed ...
  config.criterion.clip_filter.threshold = 1.5   # ... (loose: random CLIP) — exercised, reported
  config.scoring.scorers = tiny_vision.fitness_config(dirs).scorers.to_dict()
  config.num_generations = 2
  config.save_images = False
  out = search.run(config, tmp_path)
  rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
  assert len(rows) == 4
  for r in rows:
    # The scorer's "<role>/<objective>" outputs were recorded for the best member and the clean
    # generation; the CLIP score is against the clean prompt.
    assert set(r["best"]["scores"]) == {"fitness_score", "verdict_score", "clip"}
    assert r["best"]["records"]["score/surrogate/target_prob"] is not None
    assert r["clean"]["clip"] is not None and r["clean"]["scores"]["evaluator/top1_hit"] in (0, 1)
    assert r["best"]["verdict"] in (True, False)
  s = out["summary"]["methods"]["Sep_CMA_ES"]
  assert s["evaluator_confirmed"] >= s["failures_found"]
