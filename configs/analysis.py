r"""Failure analysis job (`analyze`): why generations fail (issue #16).

ATM's four analyses (arXiv 2306.02583 §4: generation speed, coarse-feature similarity, polysemy /
injected words, word position) and the brittleness paper's discussion (arXiv 2312.11473 §5:
class-wise robustness at every α, confusion, object displacement, trajectory step distances).

  python launch/analyze.py --config configs/analysis.py:toy --workdir runs/analysis_toy
  python launch/analyze.py --config configs/analysis.py:toy,smoke --workdir runs/analysis_smoke
  python launch/analyze.py --config configs/analysis.py:world2 --workdir runs/analysis_world2
  python launch/analyze.py --config configs/analysis.py \
      --config.model=/ckpt/stable-diffusion-2-1-base --workdir runs/analysis_sd21   # real SD

Variants after the colon (comma-separated): `toy` (the toy world, every analysis, minutes on 2
CPU cores), `world2` (world 2: 64², objects found by its scene oracle, judged class by the
same oracle; single prompts are short grammar captions, pair prompts the grammar's "{A} and {B}",
injected words near neighbours), `smoke` (with `toy` or `world2`: a few classes, pairs and seeds,
< 3 minutes on 2 CPU cores; `world2,smoke` also 3 steps).
`world2,study` (issue #26 item 4): the analysis study on world 2, one command that writes
docs/results/analysis_world2/ (report.md, every stage's JSON/CSV, plots, config.json and
provenance.json: command, date, machine, code version):
  python launch/analyze.py --config configs/analysis.py:world2,study --workdir runs/analysis_world2
What item 4 asks and where: generation speed vs which object is lost in TWO-object prompts
(`speed`: per pair, which named object's region formed first and which was lost, 150 pairs ×
4 seeds); cross-attention overlap vs entanglement (`attention`: the two nouns' maps' cosine and
IoU against the outcome, the same pairs); word order on trained orders (`orders`: "{A} and {B}"
and "{B} and {A}", modifier before noun as the grammar writes it, 60 pairs × 4 seeds); polysemous
words (`polysemy`, new: "star", "ring", "orange" each in its other sense in a trained caption vs a
control caption, paired by class and seed; `inject` stays as in `world2`); and the brittleness
paper's class-wise robustness and object displacement (`brittleness`: UMS and RMS at
α = ±0.2…±1.0 on every class × 4 seeds, objects and classes found by the scene oracle).
COST (benchmarks/world2_study_cost.py, docs/results/world2_study_cost.json): 8,080 images
(932 of them with each step's x0 decoded, 2.2× an image), about 0.7 CPU-hours. `world2,study,smoke`: 5 classes (one orange one), 1 seed, 3 steps.
Add `--config.attack_workdir=DIR` (an ATM attack workdir with results.jsonl) to correlate
formation speed with ATM's success per class word and to take injected words from its
successful prompts. The default (no variant) is a real SD checkpoint directory (`config.model`)
over ImageNet-100, judged by an ImageNet classifier (`config.scoring`, the shift sweep's block:
ViT-B/16 by default) with object regions from the nouns' cross-attention maps
(`analysis.objects.FINDERS["classifier"]`); the toy variants find objects with the toy oracle.
"""

import ml_collections

from jaxdiffattack import variants as variants_lib

VARIANTS = ("toy", "world2", "study", "smoke")
ANALYSES = ("speed", "attention", "orders", "inject", "brittleness")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = variants_lib.parse(arg, VARIANTS, __file__)
  if "study" in variants and "world2" not in variants:
    raise ValueError(f"configs/analysis.py:{arg}: 'study' is the world-2 analysis study: use "
                     "'world2,study' (or 'world2,study,smoke')")
  c = ml_collections.ConfigDict()
  c.model = "/path/to/stable-diffusion-2-1-base"  # a local diffusers directory, a hub id or "toy"
  c.finder = "classifier"          # analysis.objects.FINDERS: "classifier", "oracle" (toy world),
                                   # "world2_oracle" (world 2)
  # The classifier finder's scoring (jaxdiffattack.scoring): its evaluator's top-1 and top-5.
  c.scoring = ml_collections.ConfigDict({
      "kind": "models", "roles": {"evaluator": {"classifiers": ("vit_b16",)}},
      "objectives": {"evaluator": ("pred", "top5_hit")}, "scorers": {}})
  c.label_set = "imagenet100"
  c.classes = ()                   # a subset of the label set's names; empty = all
  c.template = "a photo of a {}"
  c.pair_template = "a photo of a {} and a {}"
  c.scheduler = "ddim"
  c.num_steps = 50
  c.guidance_scale = 7.5
  c.seed = 0
  c.seeds = 4                      # seeds per prompt (the same seed indices in every analysis)
  c.unit = 16                      # members per compiled call
  c.analyses = ANALYSES
  c.attack_workdir = ""            # ATM workdir (results.jsonl) or "" (no ATM correlation)
  # SSIM on each step's decoded x0, mean-pooled to at most x0_size pixels a side (memory: SD's
  # 512² images at 50 steps would take 157 MB per member at full size, 10 MB at 128).
  c.speed = ml_collections.ConfigDict({"threshold": 0.9, "x0_size": 128})
  c.pairs = 20                     # two-object prompts (pairs of classes), chosen by pair_seed
  c.pair_seed = 0
  c.attention = ml_collections.ConfigDict({
      "steps": (0.0, 1.0),         # fractions of the run averaged over
      "iou_fraction": 0.5,         # IoU of the maps thresholded at this fraction of their max
      "overlays": 6})              # pair images drawn with their maps in the report
  # Modifier placements: ImageNet names are not (colour, shape) pairs; their words stay in order.
  c.orders = ml_collections.ConfigDict({"pairs": 10, "placements": ("before",)})
  c.inject = ml_collections.ConfigDict({
      "template": "a photo of a {word} {label}",
      "words": ("blue", "red", "circle", "star", "dog", "big"),
      "classes": 5,                # N classes evenly spaced through the class list
      "from_attack": 0})           # > 0: the N most frequent words of ATM's successful prompts
  c.brittleness = ml_collections.ConfigDict({
      "shifts": ("ums",), "alphas": (-0.2, -0.1, 0.1, 0.2)})   # the paper's UMS range
  c.report_only = False
  c.variant = arg or ""             # for the commands in report captions
  if "toy" in variants:
    c.model = "toy"
    c.finder = "oracle"
    c.label_set = "toy"
    c.scoring.roles.evaluator.classifiers = ("toy_vit",)
    c.orders.placements = ("before", "after")
    c.num_steps = 20
    c.brittleness.alphas = (-0.6, -0.4, -0.2, 0.2, 0.4, 0.6)  # robust within ±0.2 (README)
  if "world2" in variants:
    from jaxdiffattack import labels as labels_lib  # pylint: disable=g-import-not-at-top
    c.model = "world2"
    c.finder = "world2_oracle"
    c.label_set = "world2"
    c.scoring.roles.evaluator.classifiers = ("world2_regnet",)
    c.template = labels_lib.WORLD2_SHORT
    c.pair_template = "a picture of a {} and a {}"
    c.inject.template = "a picture of a {word} {label}"
    c.inject.words = ("crimson", "oval", "big", "striped", "star", "orange")
    c.num_steps = 20
    c.brittleness.alphas = (-0.6, -0.4, -0.2, 0.2, 0.4, 0.6)
  if "study" in variants:
    c.analyses = ANALYSES + ("polysemy",)
    c.polysemy = ml_collections.ConfigDict({"words": ("star", "ring", "orange")})
    c.seeds = 4
    c.pairs = 150                    # two-object prompts × 4 seeds: speed and attention
    c.orders.pairs = 60              # both trained orders ("{A} and {B}", "{B} and {A}")
    c.brittleness.shifts = ("ums", "rms")
    c.brittleness.alphas = (-1.0, -0.6, -0.4, -0.2, 0.2, 0.4, 0.6, 1.0)
    c.results_file = "docs/results/analysis_world2"
  if "smoke" in variants:
    c.classes = ("red circle", "green triangle", "blue star", "yellow cross")
    c.seeds = 2
    c.unit = 8
    c.pairs = 3
    c.orders.pairs = 1
    c.inject.words = ("blue", "star")
    c.inject.classes = 2
    c.brittleness.alphas = (-0.6, 0.6)
    c.attention.overlays = 2
    if "world2" in variants:
      c.classes = ("red circle", "crimson oval", "blue rounded square", "green star")
      c.num_steps = 3
    if "study" in variants:          # "orange circle": the "orange" case's class
      c.classes = ("red circle", "crimson oval", "blue rounded square", "green star",
                   "orange circle")
      c.seeds = 1
      c.brittleness.shifts = ("ums",)
      c.brittleness.alphas = (-1.0, 1.0)
      c.results_file = "{workdir}/analysis_world2_smoke"
  return c
