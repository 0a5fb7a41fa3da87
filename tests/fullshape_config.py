r"""Job configs for the full-shape end-to-end tests (tests/fullshape_test.py): each is the job's own
config (configs/*.py, the real-model variant) pointed at the full-shape random checkpoints and
shrunk in run size only (2 sampler steps, 64² images, a few prompts, members and iterations).

  FULLSHAPE_ROOT=DIR python launch/attack.py --config tests/fullshape_config.py:attack,sd21 \
      --workdir W

`arg` = "<job>,<model>": job in JOBS, model in ("sd15", "sd21"). FULLSHAPE_ROOT holds
`<model>/` (diffusers layout) and `scorers/{clip_vit_b16,vit_b16,resnet50}` (fullshape_models.py).

The label set is `imagenet_fullshape`: the first NUM_CLASSES ImageNet-1k classes, registered in
jaxdiffattack.labels.LABEL_SETS here. Zero-shot CLIP embeds every class × 80 templates once per
run; all 1000 classes would be 80,000 prompts through the 12-layer text tower, hours on 2 CPU
cores (the test measures the per-prompt time; docs/results/fullshape_cpu.md extrapolates).
"""

import os
import pathlib
import sys

import ml_collections

_REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_REPO))

# pylint: disable=g-import-not-at-top,wrong-import-position
from configs import atm as atm_config
from configs import embedding_search
from configs import generate as generate_config
from configs import latent_search
from configs import prompt_search
from configs import shift_sweep
from configs import token_search
from jaxdiffattack import labels
# pylint: enable=g-import-not-at-top,wrong-import-position

JOBS = ("generate", "sweep", "latent", "embedding", "token", "prompt", "attack")
MODELS = ("sd15", "sd21")
NUM_CLASSES = 4
LABEL_SET = "imagenet_fullshape"
LABELS = ("tench", "goldfish")           # the targets / attacked classes (ImageNet-1k 0 and 1)
NUM_STEPS = 2


def imagenet_fullshape() -> labels.LabelSet:
  full = labels.imagenet1k()
  return labels.LabelSet(LABEL_SET, full.ids[:NUM_CLASSES], full.names[:NUM_CLASSES],
                         tuple(range(NUM_CLASSES)))


labels.LABEL_SETS.setdefault(LABEL_SET, imagenet_fullshape)


def _root() -> pathlib.Path:
  root = os.environ.get("FULLSHAPE_ROOT")
  if not root:
    raise ValueError("set FULLSHAPE_ROOT to the directory fullshape_models.build_all wrote")
  return pathlib.Path(root)


def scorer_overrides() -> dict:
  """The hub scorers' names, each pointing at its random full-shape checkpoint."""
  scorers = _root() / "scorers"
  return {"clip_vit_b16": {"model": str(scorers / "clip_vit_b16")},
          "vit_b16": {"model": str(scorers / "vit_b16")},
          "resnet50": {"model": str(scorers / "resnet50")}}


def _search(module, model_dir: str) -> ml_collections.ConfigDict:
  c = module.get_config()
  c.model = model_dir
  c.num_steps = NUM_STEPS
  c.label_set = LABEL_SET
  c.labels = LABELS[:1]
  if c.target_labels:
    c.target_labels = LABELS[1:2]
  c.num_labels = 1
  c.population_size = 2
  c.num_generations = 2
  c.stop_after_failures = 0
  # surrogate ResNet-50 (default), evaluator ViT-B/16 + CLIP score with CLIP ViT-B/16.
  c.scoring.roles = {"surrogate": {"classifiers": ("resnet50",)},
                     "evaluator": {"classifiers": ("vit_b16",), "clip": "clip_vit_b16"}}
  c.scoring.scorers = scorer_overrides()
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  job, model = (arg or "").split(",")
  if job not in JOBS or model not in MODELS:
    raise ValueError(f"tests/fullshape_config.py:{arg}: use <job>,<model> with job in {JOBS} "
                     f"and model in {MODELS}")
  model_dir = str(_root() / model)
  if job == "generate":
    c = generate_config.get_config("fast")
    c.model = model_dir
    c.prompts = ["a photo of a tench", "a photo of a goldfish"]
    c.images_per_prompt = 1
    c.num_steps = NUM_STEPS
    return c
  if job == "sweep":
    c = shift_sweep.get_config()
    c.settings[0].model = model_dir
    c.settings[0].name = f"{model}_cfg7.5"
    c.label_set = LABEL_SET
    c.labels = LABELS
    c.images_per_prompt = 1
    c.num_steps = NUM_STEPS
    c.shifts = ("ums", "pas")
    c.grids.ums = (0.1,)
    c.grids.pas = (16.0,)
    c.scoring.roles.evaluator.clip = "clip_vit_b16"
    c.scoring.scorers = scorer_overrides()
    c.trajectory.prompts = (0,)
    c.trajectory.shifts = ("ums",)
    c.trajectory.alphas = (0.1,)
    c.grid_prompts = 2
    return c
  if job == "attack":
    c = atm_config.get_config("sd21")
    c.model = model_dir
    c.dtype = "float32"
    c.image_size = 0                    # the checkpoint's 64²
    c.num_steps = NUM_STEPS
    c.label_set = LABEL_SET
    c.labels = ()        # every class: random judges read some clean image right (it is attacked)
    c.scorers = scorer_overrides()
    c.attack.num_iters = 2
    c.num_samples = 2
    c.eval_batch = 2
    c.population = 2
    c.checkpoint_every = 1              # a checkpoint per iteration: its time and size measured
    c.sharded_checkpoint_mb = 0.0       # ... inline in the msgpack (orbax-sharded: benchmarks/
    c.images_per_prompt = 1             # attack_checkpoint_benchmark.py)
    return c
  return _search({"latent": latent_search, "embedding": embedding_search,
                  "token": token_search, "prompt": prompt_search}[job], model_dir)
