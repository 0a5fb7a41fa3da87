"""Seed-vector shift sweep of arXiv 2312.11473 (Tables 1–5, Figs. 3, 5, 8).

  python launch/sweep.py --config configs/shift_sweep.py --workdir runs/sweep          # paper grid
  python launch/sweep.py --config configs/shift_sweep.py:toy --workdir runs/sweep_toy  # ≤ 10 min CPU
  python launch/sweep.py --config configs/shift_sweep.py:world2 --workdir runs/sweep_world2

Variants after the colon (comma-separated): `toy` (reduced grid on the toy world, 2 CPU cores),
`compare` (model-comparison mode, paper Fig. 3: guidance 7.5 vs none under RMS with
α_u ∈ [−0.3, 0.3]), `toy,smoke` (all five shifts, MS included, one or two α each, on 3 labels ×
1 seed and 5 steps: about a minute). PAS is `pas_fraction`: α_a is a fraction of the latent's
h·w pixels — the paper's 8–64 of SD's 4096 (0.2–1.6 %) — converted per latent size
(`perturb.pas_pixels`; 0–1 pixel on the toy's 8×8 latent, so the toy grid adds 25 % and 100 %).
`pas` (α_a in pixels) stays available: `--config.shifts='("pas",)'`. The paper protocol: prompts
"A photo of a {label}" over ImageNet-100, 100 images per prompt, 50 steps, guidance 7.5; evaluator
top-1/top-5 and CLIP score.

`world2` (issue #23): world 2's generator (64², or $JAXDIFFATTACK_WORLD2_ASSETS), every one of
its 83 classes × 4 seeds with the short grammar caption "a picture of a {}", judged by its
held-out RegNetY evaluator, its CLIP and its scene oracle ("world2_oracle": the caption's every
fact); `world2,smoke`: 3 labels × 1 seed, 3 steps, one α per shift.

`world2,study` (issue #26 item 3): the brittleness study on world 2, one command that writes
docs/results/sweep_world2/ (results.csv, radius.csv, paired.csv, report.md, config.json and
provenance.json: command, date, machine, code version):
  python launch/sweep.py --config configs/shift_sweep.py:world2,study --workdir runs/sweep_world2
All five shifts, MS included, on the paper's grids and wider ones (`STUDY_WIDER`: UMS/RMS up to
±1.0, SDS ±1.0, MS α_c ±0.4 × α_s ±0.6, PAS fractions 5 %, 25 %, 100 %); PAS as the paper's
fraction of the latent's pixels (`pas_fraction`: 8-64 of 4096 = 0.2-1.6 %, converted per latent
by `perturb.pas_pixels`: under one pixel of the default world 2's 8² latent, 0.5-4 of the f4
variant's 16²; hence the wider fractions); two settings, guidance 7.5 and off
(guidance_scale 1.0), with their clean quality paired (paired.csv); every one of the 83 classes ×
2 seeds per cell ("a picture of a {}"), judged by the held-out RegNetY evaluator (top-1, top-5),
world 2's CLIP score and the scene oracle (world2_oracle_top1 / _unclear). Class-wise robustness
at every α: results.csv's per-class rows (clustered CIs); robustness radii per class: radius.csv.
Object displacement: `object_positions` records the named object's centroid as world 2's scene
oracle reads it (members.csv object_cx / object_cy); displacement.csv and the report give its
mean move from the unshifted image of the same prompt and seed per setting, shift and α, with
intervals clustered by prompt (the analysis study's brittleness stage measures it as well).
COST (benchmarks/world2_study_cost.py, docs/results/world2_study_cost.json): 126 cells ×
166 members × 2 settings = 41,832 images, about 2.9 CPU-hours at world 2's 0.28 CPU-s per
guided 64² image (unguided ones: 0.78 of that, the smoke export's ratio), plus about 0.3 for
the oracle's reading of object positions (0.026 CPU-s per image, census_cost_f4.json's
oracle_b / 64): about 3.2 CPU-hours, half that in wall time on 2 free cores. `world2,study,smoke`: 2 classes × 1 seed, 3 steps, one or two α per
shift, both settings, no grids or trajectories; writes its results folder into the workdir.

`toy,variance` (issue #17; docs/results/variance_study.md): the paper's open question — does a
learned variance (GLIDE) make a generator flatter under seed shifts? Fixed-variance toy SD vs the
learned-variance toy generator × guidance 7.5 / none × UMS, RMS, SDS over α ranges wide enough to
halve top-1, with the samplers that separate the variance from the sampler: ancestral DDPM with
the learned variance, ancestral DDPM with the fixed variance β̃ ("fixed_small") and deterministic
DDIM for the learned-variance generator; DDIM and ancestral fixed-variance DDPM for the fixed one.
Judged by the toy ViT evaluator and the toy oracle; radius.csv holds the robustness radii.
`toy,variance,smoke`: the same settings on 3 labels, 5 steps and 4 shifted cells.
The generators are `config.models.fixed` / `config.models.learned` (aliases or directories),
e.g. `--config.models.learned=/path/to/sd_lv` for an exported checkpoint.
"""

import ml_collections
import numpy as np

from jaxdiffattack import variants as variants_lib

VARIANTS = ("toy", "world2", "compare", "variance", "study", "smoke")
# The paper's PAS grid, 8, 16, 32, 64 of SD's 64 × 64 latent pixels, as fractions of h·w
# (= perturb.PAPER_PAS_FRACTIONS).
PAPER_PAS_FRACTIONS = (8 / 4096, 16 / 4096, 32 / 4096, 64 / 4096)

# The variance study's settings: (name, generator, scheduler, variance_type, guidance scales);
# scale 7.5 → "<name>_cfg7.5", 1.0 → "<name>_noguidance". Every generator × sampler runs with
# and without guidance.
VARIANCE_SAMPLERS = (
    ("fixed_ddim", "fixed", "ddim", None, (7.5, 1.0)),
    ("fixed_ddpm", "fixed", "ddpm", "fixed_small", (7.5, 1.0)),
    ("lv_ddpm_learned", "learned", "ddpm", "learned_range", (7.5, 1.0)),
    ("lv_ddpm_fixed", "learned", "ddpm", "fixed_small", (7.5, 1.0)),
    ("lv_ddim", "learned", "ddim", None, (7.5, 1.0)),
)


def _range(lo, hi, step):
  return tuple(float(round(x, 4)) for x in np.arange(lo, hi + step / 2, step))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = variants_lib.parse(arg, VARIANTS, __file__)
  if "variance" in variants:
    if "toy" not in variants or "compare" in variants:
      raise ValueError(f"configs/shift_sweep.py:{arg}: 'variance' runs on the toy world: use "
                       "'toy,variance' (or 'toy,variance,smoke')")
  elif "smoke" in variants and "toy" not in variants and "world2" not in variants:
    raise ValueError(f"configs/shift_sweep.py:{arg}: 'smoke' runs on an offline world: use "
                     "'toy,smoke', 'world2,smoke' or 'toy,variance,smoke'")
  if "study" in variants and ("world2" not in variants or "compare" in variants):
    raise ValueError(f"configs/shift_sweep.py:{arg}: 'study' is the world-2 brittleness study "
                     "(it compares guidance on and off itself): use 'world2,study' (or "
                     "'world2,study,smoke')")
  if "toy" in variants and "world2" in variants:
    raise ValueError(f"configs/shift_sweep.py:{arg}: 'toy' and 'world2' are two worlds: name one")
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
  c.shifts = ("ums", "rms", "sds", "ms", "pas_fraction")
  c.grids = ml_collections.ConfigDict({
      "ums": _range(-0.2, 0.2, 0.05), "rms": _range(-0.2, 0.2, 0.05),
      "sds": _range(-0.3, 0.3, 0.1), "ms_alpha_c": _range(-0.15, 0.15, 0.05),
      "ms_alpha_s": _range(-0.3, 0.3, 0.1), "pas": (8.0, 16.0, 32.0, 64.0),
      "pas_fraction": PAPER_PAS_FRACTIONS})
  # What judges the images (jaxdiffattack.scoring): the evaluator role's classifiers (scorer
  # names of jaxdiffattack.scorers.SCORERS; an ensemble if several) and CLIP. The paper's
  # evaluator is ViT-H/14 (SWAG), the scorer "vit_h14_swag" (torchvision's state dict as one
  # .safetensors file; layout and conversion: jaxdiffattack/models/convert_transformers.py):
  #   --config.scoring.roles.evaluator.classifiers='("vit_h14_swag",)'
  # reading ~/.cache/jaxdiffattack/vit_h_14_swag.safetensors (elsewhere: scoring.scorers =
  # {"vit_h14_swag": {"model": "/path/file.safetensors"}} in a config file).
  c.scoring = ml_collections.ConfigDict({
      "kind": "models",
      "roles": {"evaluator": {"classifiers": ("vit_b16",), "clip": "clip_vit_l14"}},
      "objectives": {"evaluator": ("top1_hit", "top5_hit", "clip_score")},
      "scorers": {}})
  # Judges (jaxdiffattack.judges): their reading (class, confidence) captions the grids' tiles;
  # an image judge ("oracle": the toy world's oracle v2, toy only) also adds its metrics
  # <judge>_top1 and <judge>_unclear to members.csv.
  c.judges = ("evaluator",)
  c.microbatch = ml_collections.config_dict.placeholder(object)  # None | int | "auto"
  c.memory_budget_gb = ml_collections.config_dict.placeholder(float)  # "auto": GB per device
  c.unit = 256                  # members per checkpointed unit
  c.grid_images = True
  c.grid_prompts = 8
  c.trajectory = ml_collections.ConfigDict({"prompts": (0, 1), "shifts": ("ums", "ums", "rms"),
                                            "alphas": (-0.2, 0.2, 0.2),
                                            "settings": ()})  # names; empty = every setting
  c.report_only = False
  # Pairs of setting names (a, b): report.md / paired.csv give a − b on the unshifted cell,
  # paired by (prompt, seed), with a 95 % CI (e.g. two generators' clean quality).
  c.paired = ()
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
    c.shifts = ("ums", "rms", "sds", "ms", "pas_fraction")
    c.grids.ums = (-0.2, -0.1, 0.1, 0.2)
    c.grids.rms = (-0.2, -0.1, 0.1, 0.2)
    c.grids.sds = (-0.3, 0.3)
    c.grids.ms_alpha_c = (-0.2, 0.2)
    c.grids.ms_alpha_s = (-0.3, 0.3)
    c.grids.pas = (16.0, 64.0)
    # The paper's fractions (0–1 pixel of the toy's 64) and wider ones: 16 and 64 pixels.
    c.grids.pas_fraction = PAPER_PAS_FRACTIONS + (0.25, 1.0)
    c.unit = 64
    c.grid_prompts = 5
  if "world2" in variants and "study" in variants:
    _world2_study(c, smoke="smoke" in variants)
  elif "world2" in variants:
    _world2(c, smoke="smoke" in variants)
  elif "variance" in variants:
    _variance_study(c, smoke="smoke" in variants)
  elif "smoke" in variants:
    c.labels = ("red circle", "blue square", "green triangle")
    c.images_per_prompt = 1
    c.num_steps = 5
    c.grids.ums = (0.2,)
    c.grids.rms = (0.2,)
    c.grids.sds = (0.3,)
    c.grids.ms_alpha_c = (0.2,)
    c.grids.ms_alpha_s = (-0.3, 0.3)
    c.grids.pas_fraction = (PAPER_PAS_FRACTIONS[-1], 1.0)
    c.grid_prompts = 3
    c.trajectory.prompts = (0,)
  return c


def _world2(c: ml_collections.ConfigDict, smoke: bool) -> None:
  """The `world2[,smoke]` sweep (see the module docstring)."""
  from jaxdiffattack import labels as labels_lib  # pylint: disable=g-import-not-at-top
  for s in c.settings:
    s.model = "world2"
  if len(c.settings) == 1:  # not `compare` (whose settings are named by guidance)
    c.settings[0].name = "world2_cfg7.5"
  c.label_set = "world2"
  c.template = labels_lib.WORLD2_SHORT
  c.scoring.roles.evaluator.classifiers = ("world2_regnet",)
  c.scoring.roles.evaluator.clip = "world2_clip"
  c.judges = ("evaluator", "world2_oracle")
  c.images_per_prompt = 4
  c.num_steps = 20
  c.grids.ums = (-0.2, -0.1, 0.1, 0.2)
  c.grids.rms = (-0.2, -0.1, 0.1, 0.2)
  c.grids.sds = (-0.3, 0.3)
  c.grids.ms_alpha_c = (-0.2, 0.2)
  c.grids.ms_alpha_s = (-0.3, 0.3)
  c.grids.pas_fraction = PAPER_PAS_FRACTIONS + (0.25, 1.0)
  c.unit = 64
  c.grid_prompts = 5
  c.trajectory.prompts = (0,)
  if smoke:
    c.labels = ("red circle", "crimson circle", "blue square")
    c.images_per_prompt = 1
    c.num_steps = 3
    c.grids.ums = (0.2,)
    c.grids.rms = (0.2,)
    c.grids.sds = (0.3,)
    c.grids.ms_alpha_c = (0.2,)
    c.grids.ms_alpha_s = (0.3,)
    c.grids.pas_fraction = (1.0,)
    c.grid_prompts = 2


# The world-2 study's grids: the paper's (as in the default config) and wider ones, symmetric.
STUDY_WIDER = {"ums": (0.4, 0.6, 1.0), "rms": (0.4, 0.6, 1.0), "sds": (0.6, 1.0),
               "ms_alpha_c": (0.4,), "ms_alpha_s": (0.6,), "pas_fraction": (0.05, 0.25, 1.0)}


def _world2_study(c: ml_collections.ConfigDict, smoke: bool) -> None:
  """The `world2,study[,smoke]` sweep (see the module docstring)."""
  _world2(c, smoke=False)
  paper = {k: tuple(c.grids[k]) for k in STUDY_WIDER}
  paper |= {"ums": _range(-0.2, 0.2, 0.05), "rms": _range(-0.2, 0.2, 0.05),
            "sds": _range(-0.3, 0.3, 0.1), "ms_alpha_c": _range(-0.15, 0.15, 0.05),
            "ms_alpha_s": _range(-0.3, 0.3, 0.1), "pas_fraction": PAPER_PAS_FRACTIONS}
  for key, wider in STUDY_WIDER.items():
    both = set(paper[key]) | set(wider) | (set() if key == "pas_fraction" else
                                          {-a for a in wider})
    c.grids[key] = tuple(sorted(both))
  c.shifts = ("ums", "rms", "sds", "ms", "pas_fraction")
  c.settings = [
      ml_collections.ConfigDict({"name": "world2_cfg7.5", "model": "world2",
                                 "guidance_scale": 7.5}),
      ml_collections.ConfigDict({"name": "world2_noguidance", "model": "world2",
                                 "guidance_scale": 1.0})]
  c.paired = (("world2_cfg7.5", "world2_noguidance"),)
  c.object_positions = True         # displacement.csv: the oracle's object centroids
  c.labels = ()                     # all 83 classes
  c.images_per_prompt = 2
  c.unit = 166
  c.results_file = "docs/results/sweep_world2"
  if smoke:
    c.labels = ("red circle", "blue square")
    c.images_per_prompt = 1
    c.num_steps = 3
    c.grids.ums = (-1.0, 0.2)
    c.grids.rms = (0.2,)
    c.grids.sds = (0.3,)
    c.grids.ms_alpha_c = (0.15,)
    c.grids.ms_alpha_s = (0.3,)
    c.grids.pas_fraction = (PAPER_PAS_FRACTIONS[-1], 1.0)
    c.grid_images = False           # (the grids and trajectories run in world2,smoke's test)
    c.trajectory.prompts = ()
    c.unit = 64
    c.results_file = "{workdir}/sweep_world2_smoke"


def _variance_study(c: ml_collections.ConfigDict, smoke: bool) -> None:
  """The `toy,variance[,smoke]` study (see the module docstring)."""
  c.models = ml_collections.ConfigDict({
      "fixed": ml_collections.FieldReference("toy"),
      "learned": ml_collections.FieldReference("toy_lv")})
  c.settings = [
      ml_collections.ConfigDict({
          "name": f"{name}_{'cfg7.5' if scale > 1 else 'noguidance'}",
          "model": c.models.get_ref(generator), "guidance_scale": scale,
          "scheduler": scheduler, "variance_type": variance_type})
      for name, generator, scheduler, variance_type, scales in VARIANCE_SAMPLERS
      for scale in scales]
  c.judges = ("evaluator", "oracle")
  c.shifts = ("ums", "rms", "sds")
  # Wide enough to halve top-1 (the paper's ±0.2 / ±0.3 change nothing on the toy world).
  c.grids.ums = (-1.0, -0.5, 0.5, 1.0)
  c.grids.rms = (-2.0, -1.0, 1.0, 2.0)
  c.grids.sds = (-0.6, 0.6)
  c.images_per_prompt = 1       # 20 labels x 1 seed = 20 (prompt, seed) units per cell
  c.num_steps = 10              # CPU budget (~30 min on the shared 2-core machine)
  c.grid_images = True          # captioned grids: 4 prompts x alpha, per setting and shift
  c.grid_prompts = 4
  # Clean quality, paired: the learned- minus the fixed-variance generator with the same sampler
  # (DDIM; ancestral with β̃) and guidance, and toy_lv's learned minus fixed variance.
  c.paired = tuple(pair for g in ("cfg7.5", "noguidance") for pair in (
      (f"lv_ddim_{g}", f"fixed_ddim_{g}"), (f"lv_ddpm_fixed_{g}", f"fixed_ddpm_{g}"),
      (f"lv_ddpm_learned_{g}", f"lv_ddpm_fixed_{g}")))
  c.trajectory.prompts = (0,)
  c.trajectory.shifts = ("ums", "ums", "sds")
  c.trajectory.alphas = (-1.0, 1.0, 0.6)
  # Fig. 8 for the generator/sampler pairs that separate the variance from the sampler.
  c.trajectory.settings = ("fixed_ddim_cfg7.5", "lv_ddpm_learned_cfg7.5", "lv_ddpm_fixed_cfg7.5",
                           "lv_ddim_cfg7.5")
  if smoke:
    c.labels = ("red circle", "blue square", "green triangle")
    c.num_steps = 5
    c.grids.ums = (-1.0, 1.0)
    c.grids.rms = (2.0,)
    c.grids.sds = (-0.6,)
    c.trajectory.settings = ("lv_ddpm_learned_cfg7.5",)
    c.grid_images = False
