"""Seed-vector shift sweep of arXiv 2312.11473 (Tables 1–5, Figs. 3, 5, 8).

  python launch/sweep.py --config configs/shift_sweep.py --workdir runs/sweep          # paper grid
  python launch/sweep.py --config configs/shift_sweep.py:toy --workdir runs/sweep_toy  # ≤ 10 min CPU

Variants after the colon (comma-separated): `toy` (reduced grid on the toy world, 2 CPU cores),
`compare` (model-comparison mode, paper Fig. 3: guidance 7.5 vs none under RMS with
α_u ∈ [−0.3, 0.3]). The paper protocol: prompts "A photo of a {label}" over ImageNet-100,
100 images per prompt, 50 steps, guidance 7.5; evaluator top-1/top-5 and CLIP score.
"""

import ml_collections
import numpy as np

VARIANTS = ("toy", "compare")


def _range(lo, hi, step):
  return tuple(float(round(x, 4)) for x in np.arange(lo, hi + step / 2, step))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = [v for v in (arg or "").split(",") if v]
  for v in variants:
    if v not in VARIANTS:
      raise ValueError(f"unknown variant {v!r} in configs/shift_sweep.py:{arg}; use {VARIANTS}")
  c = ml_collections.ConfigDict()
  c.dtype = "float32"
  c.scheduler = "ddim"
  c.num_steps = 50
  c.seed = 0
  # Generator settings; several = model-comparison mode (one line per setting in the plots).
  c.settings = [ml_collections.ConfigDict({"name": "sd21_cfg7.5",
                                           "model": "stabilityai/stable-diffusion-2-1-base",
                                           "guidance_scale": 7.5})]
  c.label_set = "imagenet100"   # jaxdiffattack.labels.LABEL_SETS: imagenet100, imagenet1k, toy
  c.labels = ()                 # a subset of the label set's names; empty = all of them
  c.template = "A photo of a {}"
  c.images_per_prompt = 100
  c.shifts = ("ums", "rms", "sds", "ms", "pas")
  c.grids = ml_collections.ConfigDict({
      "ums": _range(-0.2, 0.2, 0.05), "rms": _range(-0.2, 0.2, 0.05),
      "sds": _range(-0.3, 0.3, 0.1), "ms_alpha_c": _range(-0.15, 0.15, 0.05),
      "ms_alpha_s": _range(-0.3, 0.3, 0.1), "pas": (8.0, 16.0, 32.0, 64.0)})
  # What judges the images (jaxdiffattack.scoring): the evaluator role's classifiers (scorer
  # names of jaxdiffattack.scorers.SCORERS; an ensemble if several) and CLIP. The paper's
  # evaluator is ViT-H/14 (SWAG): add it under scoring.scorers, e.g. {"vit_h14": {"type":
  # "classifier", "model": "/ckpt/vit-h14-swag"}} (fields of jaxdiffattack.scorers.ScorerSpec).
  c.scoring = ml_collections.ConfigDict({
      "kind": "models",
      "roles": {"evaluator": {"classifiers": ("vit_b16",), "clip": "clip_vit_l14"}},
      "objectives": {"evaluator": ("top1_hit", "top5_hit", "clip_score")},
      "scorers": {}})
  c.microbatch = ml_collections.config_dict.placeholder(int)
  c.unit = 256                  # members per checkpointed unit
  c.grid_images = True
  c.grid_prompts = 8
  c.trajectory = ml_collections.ConfigDict({"prompts": (0, 1), "shifts": ("ums", "ums", "rms"),
                                            "alphas": (-0.2, 0.2, 0.2)})
  c.report_only = False
  if "compare" in variants:
    c.settings = [
        ml_collections.ConfigDict({"name": "cfg7.5", "model": c.settings[0].model,
                                   "guidance_scale": 7.5}),
        ml_collections.ConfigDict({"name": "no_guidance", "model": c.settings[0].model,
                                   "guidance_scale": 1.0})]
    c.shifts = ("rms",)
    c.grids.rms = _range(-0.3, 0.3, 0.1)
  if "toy" in variants:
    for s in c.settings:
      s.model = "toy"
    if "compare" not in variants:
      c.settings[0].name = "toy_cfg7.5"
    c.label_set = "toy"
    c.template = "a photo of a {}"
    c.scoring.roles.evaluator.classifiers = ("toy_vit",)
    c.scoring.roles.evaluator.clip = "toy_clip"
    c.images_per_prompt = 4
    c.num_steps = 20
    c.shifts = ("ums", "rms", "sds", "pas")
    c.grids.ums = (-0.2, -0.1, 0.1, 0.2)
    c.grids.rms = (-0.2, -0.1, 0.1, 0.2)
    c.grids.sds = (-0.3, 0.3)
    c.grids.pas = (16.0, 64.0)
    c.unit = 64
    c.grid_prompts = 5
  return c
