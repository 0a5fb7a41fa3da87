"""The search with the real scorer stack (`jaxdiffattack.objectives` roles through
`objectives.make_scoring`): tiny random SD + tiny random CLIP/ViT/ResNet (tests/tiny_vision.py)."""

import json

import numpy as np

from jaxdiffattack import objectives
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import search
from jaxdiffattack import text

import tiny_vision
from search_multidevice_worker import tiny_config  # pylint: disable=g-bad-import-order


def test_latent_search_with_fitness_roles(tiny_sd_dirs, tiny_sd_model, tmp_path_factory,
                                          tmp_path):
  dirs = tiny_vision.build_all_cached(tmp_path_factory)
  config = tiny_config("latent", tiny_sd_dirs[1])
  config.scoring.kind = "models"
  config.label_set = "toy"
  config.labels = ("red circle", "blue star")
  config.criterion.fitness = "surrogate/margin"
  config.criterion.verdict = "top1_miss"
  config.judges = ("evaluator", "toy_resnet")    # a scorer named as a judge: a role of its own
  config.criterion.clip = "evaluator/clip_score"
  config.criterion.clip_filter.mode = "max"      # CLIP also sees the prompt missed ...
  config.criterion.clip_filter.threshold = 1.5   # ... (loose: random CLIP) — exercised, reported
  config.scoring.scorers = tiny_vision.fitness_config(dirs).scorers.to_dict()
  config.num_generations = 2
  config.save_images = False
  out = search.run(config, tmp_path)
  rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
  assert len(rows) == 4
  # Independently: regenerate each target's best image from its saved latent with the plain
  # sampler, score it with the same roles outside the sampler, and compare with what the
  # search recorded for it (the CLIP score is against the clean prompt).
  sd, params = tiny_sd_model
  judge = objectives.build(tiny_vision.fitness_config(dirs))
  plain = sampler_lib.PopulationSampler(sd, params, sampler_lib.SamplerSettings(num_steps=3))
  uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0])
  latents = np.stack([np.load(tmp_path / next(n for n in r["best"]["files"]
                                                  if n.endswith("latent.npy"))) for r in rows])
  cond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [r["prompt"] for r in rows]))
  images = plain(latents, cond, uncond, config.guidance_scale).images
  expected = judge.score(images, labels=[r["label"] for r in rows],
                         prompts=[r["prompt"] for r in rows])
  for i, r in enumerate(rows):
    recorded = r["best"]["records"]
    for name in ("surrogate/margin", "surrogate/target_prob", "evaluator/clip_score"):
      np.testing.assert_allclose(recorded[f"score/{name}"], expected[name][i], atol=1e-3,
                                 err_msg=name)
    assert recorded["score/evaluator/top1_hit"] == expected["evaluator/top1_hit"][i]
    assert r["best"]["verdict"] == bool(expected["evaluator/top1_hit"][i] < 0.5)
    assert r["best"]["scores"]["fitness_score"] == recorded["score/surrogate/margin"]
    assert r["best"]["judges"]["evaluator"]["failure"] == r["best"]["verdict"]
    assert set(r["best"]["judges"]) == {"evaluator", "toy_resnet"}
  # Every evaluator-confirmed member is either a counted failure or rejected by the CLIP filter
  # (the latent sphere has no infeasible members).
  s = out["summary"]["methods"]["Sep_CMA_ES"]
  assert s["rule_confirmed"] == s["failures_found"] + s["clip_filter_rejected"]
  assert s["constraint_rejected"] == 0
