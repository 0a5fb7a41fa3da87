"""The defaults every search config shares (configs/<space>_search.py start from `base_config`).

Keys (all validated by `experiment.validate`):
  model, dtype, scheduler, num_steps, guidance_scale   the generator and its sampler
  seed                                                  the run's PRNG seed
  space                                                 latent | embedding | token | prompt
  label_set, labels, num_labels, template,              the targets: one search per label × seed
  seeds_per_label, target_labels                        (target_labels: targeted searches)
  population_size, num_generations                      budget per target = P × generations
  strategy.{name, std_init, params, kwargs,             any evosax strategy by name, "random", or
            param_overrides, max_full_cov_dims,         a gradient method ("adam", "pgd":
            lr, pgd_norm, grad_steps, remat}            search.gradient; P restarts per target,
                                                        std_init their spread, lr the step,
                                                        grad_steps the sampler's gradient depth,
                                                        remat per-step rematerialisation);
                                                        evosax params overridable
                                                        (param_overrides: "c_std=0.1,d_std=2")
  baseline                                              "random" (SAGE's equal-budget baseline) | ""
  methods                                               every method to run at the same budget
                                                        (empty: strategy.name, then baseline)
  judges                                                who reads every image (jaxdiffattack.
                                                        judges): scoring roles, scorer names,
                                                        "oracle" (toy world)
  targets_file                                          a census workdir or its targets.json:
                                                        the census's selected prompts are the
                                                        targets (search.targets.census_targets;
                                                        "" = label × template, as before)
  filter_clean                                          search only targets whose clean image
                                                        every judge reads as the prompt's class
  filter_clean_judges                                   ... or (non-empty) none of these judges
                                                        fails (e.g. the success judge only)
  yield_stats                                           protocol: also compare each method with
                                                        random by failure yield and by
                                                        evaluations to the first failure (paired)
  stop_after_failures                                   stop a target after this many failures
                                                        (0: never)
  archive_size                                          failures kept per target
  scoring.{kind, roles, objectives, scorers}            what scores the images: "models"
                                                        (roles, objectives, scorers override
                                                        objectives.default_config(label_set)) |
                                                        "synthetic"; see jaxdiffattack.scoring
  criterion.{fitness, fitness_sign, verdict, judge,     which score is minimised / which rule
             margin, agree, clip,                       calls an image a failure; see
             clip_filter.{mode, threshold, relative,    jaxdiffattack.search.criterion
             penalty}, diversity_weight}
  latent / embedding / token / prompt                   each space's options
  ngr_alpha                                             significance level of the NGR tests
  transfer_per_target                                   found latents per target tried with every
                                                        other label's prompt (0: no transfer test)
  transfer_prompts                                      0: every other label; K: the K labels
                                                        after the target's (cyclic)
  export                                                also write protocol.{md,json} to
                                                        <export>.{md,json} (e.g. docs/results/...)
  microbatch, checkpoint_every, save_images, report_only
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = "runwayml/stable-diffusion-v1-5"
  c.dtype = "float32"
  c.scheduler = "ddim"
  c.num_steps = 50
  c.guidance_scale = 7.5
  c.seed = 0
  c.space = "latent"
  # Targets.
  c.label_set = "imagenet100"
  c.labels = ()
  c.num_labels = 10
  c.template = "a photo of a {}"
  c.seeds_per_label = 1
  c.target_labels = ()
  # Budget and strategy.
  c.population_size = 64
  c.num_generations = 50
  c.strategy = ml_collections.ConfigDict({
      "name": "Sep_CMA_ES", "std_init": 0.5, "params": {}, "kwargs": {},
      "param_overrides": "", "max_full_cov_dims": 4096,
      # Gradient methods only.
      "lr": 0.05, "pgd_norm": "l2", "remat": False,
      "grad_steps": ml_collections.config_dict.placeholder(int)})  # None: every step
  c.baseline = "random"
  c.methods = ()
  c.judges = ("evaluator", "surrogate")
  c.targets_file = ""
  c.filter_clean = False
  c.filter_clean_judges = ()
  c.yield_stats = False
  c.stop_after_failures = 1
  c.archive_size = 4
  # What scores the images. roles / objectives / scorers override jaxdiffattack.objectives.
  # default_config(label_set) (empty: its defaults — surrogate and evaluator are different
  # classifiers; the evaluator role also has a CLIP for clip_score).
  c.scoring = ml_collections.ConfigDict({"kind": "models", "roles": {}, "objectives": {},
                                         "scorers": {}})
  # The criterion: which score is minimised, which judges a failure, CLIP filter, diversity.
  c.criterion = ml_collections.ConfigDict({
      "fitness": "surrogate/margin",   # minimised × fitness_sign: the prompt class's margin
      "fitness_sign": 1.0,
      "verdict": "top1_miss",           # jaxdiffattack.judges.VERDICTS
      "judge": "evaluator",             # top1_miss / confident_miss: whose top-1
      "margin": 1.0,                    # confident_miss: margin below −margin
      "agree": (),                      # agree: every one of these judges fails
      "clip": "evaluator/clip_score",
      "clip_filter": ml_collections.ConfigDict({
          "mode": "off", "threshold": 1.0, "relative": True, "penalty": 0.0}),
      "diversity_weight": 0.0,
  })
  # Spaces.
  c.latent = ml_collections.ConfigDict({"mode": "sphere", "penalty_weight": 100.0,
                                        "max_kl": 0.01})
  c.embedding = ml_collections.ConfigDict({"level": "hidden", "positions": "prompt",
                                           "epsilon": 0.2})
  c.token = ml_collections.ConfigDict({"init": "mean", "max_norm": 1.0})
  c.prompt = ml_collections.ConfigDict({
      "vocabulary": "toy_extra", "words": (), "exclude_label_words": True, "substitute": True,
      "insertions": ("before_noun", "end", "end"), "encoding": "integer",
      "min_similarity": 0.8, "penalty_weight": 10.0, "keep_margin": 3.0})
  c.ngr_alpha = 0.05
  c.transfer_per_target = 0
  c.transfer_prompts = 0
  c.export = ""
  c.microbatch = ml_collections.config_dict.placeholder(object)  # None | int | "auto"
  c.memory_budget_gb = ml_collections.config_dict.placeholder(float)  # "auto": GB per device
  c.checkpoint_every = 1
  c.save_images = True
  c.report_only = False
  return c


def toy(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The toy world (shipped 32×32 model, toy classifiers and CLIP): minutes on 2 CPU cores."""
  c.model = "toy"
  c.label_set = "toy"
  c.labels = ("red circle", "green square", "blue triangle", "yellow star", "red cross")
  c.num_steps = 20
  c.population_size = 16
  c.num_generations = 8
  # Every image is read by the evaluator (toy ViT), each surrogate member on its own (toy ResNet,
  # CLIP zero-shot) and the oracle.
  c.judges = ("evaluator", "toy_resnet", "toy_clip", "oracle")
  return c


# World 2's search targets: near neighbours (red / crimson / orange, circle / oval / ring, square /
# rounded square, 5- and 6-pointed stars) and the polysemous "orange".
WORLD2_LABELS = ("red circle", "crimson oval", "blue rounded square", "green six-pointed star",
                 "orange orange")


def world2(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """World 2 (its 64² generator and judges, `world2` in `models.hub`): short grammar captions,
  surrogate = its ViT + ResNet + noise-trained ResNet + CLIP, held-out evaluator = its RegNetY
  (`objectives.DEFAULT_ROLES["world2"]`), judged also by the scene oracle ("world2_oracle")."""
  from jaxdiffattack import labels as labels_lib  # pylint: disable=g-import-not-at-top
  c.model = "world2"
  c.label_set = "world2"
  c.labels = WORLD2_LABELS
  c.template = labels_lib.WORLD2_SHORT
  c.num_steps = 20
  c.population_size = 16
  c.num_generations = 8
  c.judges = ("evaluator", "world2_vit", "world2_resnet", "world2_robust", "world2_clip",
              "world2_oracle")
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Tiny enough for the tests (with `world2`): 2 labels, population 2 × 1 generation, 2 steps."""
  c.labels = tuple(c.labels)[:2]
  c.target_labels = tuple(c.target_labels)[:2]
  c.num_steps = 2
  c.population_size = 2
  c.num_generations = 1
  return c


def wide(c: ml_collections.ConfigDict, seeds_per_label: int = 2) -> ml_collections.ConfigDict:
  """Every label of the label set × `seeds_per_label` seeds: enough targets to compare methods."""
  from jaxdiffattack import labels as labels_lib  # pylint: disable=g-import-not-at-top
  c.labels = ()
  c.num_labels = len(labels_lib.get_label_set(c.label_set).names)
  c.seeds_per_label = seeds_per_label
  return c


def _equal_budget(c: ml_collections.ConfigDict) -> None:
  """What every search-vs-random protocol shares: clean-passing targets only, the whole budget
  used (no early stop), two failures kept per target, the first found latent tried with 5 other
  prompts, no images."""
  c.filter_clean = True
  c.stop_after_failures = 0
  c.archive_size = 2
  c.transfer_per_target = 1
  c.transfer_prompts = 5
  c.save_images = False


def protocol(c: ml_collections.ConfigDict, seeds_per_label: int = 4) -> ml_collections.ConfigDict:
  """The search-vs-random protocol (`search.protocol`, issue #14): every label × `seeds_per_label`
  seeds, searched only where the clean image passes every judge, each method (random, the
  config's evosax strategy, Adam through the sampler) at the same budget, the whole budget used
  (every failing image counted), found latents tried with the other labels' prompts; writes
  docs/results/search_protocol.{md,json} (`export`)."""
  wide(c, seeds_per_label)
  _equal_budget(c)
  c.methods = ("random", c.strategy.name, "adam")
  c.population_size = 4
  c.num_generations = 4
  c.strategy.lr = 0.1   # not tuned: 4 Adam steps can move each coordinate ≈ 0.4 prior σ
  c.export = "docs/results/search_protocol"
  return c


# Census targets' default location: configs/census.py's documented workdir.
WORLD2_CENSUS_TARGETS = "runs/census_world2/targets.json"
WORLD2_PROTOCOL_METHODS = ("random", "Sep_CMA_ES", "LM_MA_ES", "adam", "pgd")


def world2_protocol(c: ml_collections.ConfigDict, smoke: bool = False
                    ) -> ml_collections.ConfigDict:
  """SAGE's search-vs-random protocol on world 2 (issue #26 item 1; after `world2`): the targets
  are a census's selected prompts (`targets_file`: clean per-seed failure rate 1–10 % by the
  scene oracle), each searched from its clean latent unless that image already fails by the
  oracle; random, Sep-CMA-ES, LM-MA-ES (both diagonal / limited-memory: n = 4·h·w), Adam and PGD
  at 16 × 16 = 256 evaluations per target, the whole budget used; fitness = the surrogate
  ensemble's margin (ViT + ResNet + noise-trained ResNet + CLIP); success = the scene oracle's
  "violated" against the target's caption, read beside the held-out RegNetY evaluator and each
  surrogate member; paired comparisons with random by targets failed, failure yield and
  evaluations to the first failure (`yield_stats`); found latents tried with the 5 next targets'
  captions; writes docs/results/search_protocol_world2.{md,json}. `smoke`: population 2 × 2
  generations, 2 sampler steps, transfer to 1 caption (the tests)."""
  c.targets_file = WORLD2_CENSUS_TARGETS
  c.seeds_per_label = 1
  _equal_budget(c)
  c.filter_clean_judges = ("world2_oracle",)
  c.methods = WORLD2_PROTOCOL_METHODS
  c.criterion.verdict = "top1_miss"          # reads the judge's failure flag: the oracle's
  c.criterion.judge = "world2_oracle"        # "violated" (a fact of the caption does not hold)
  c.population_size = 16
  c.num_generations = 16
  c.strategy.lr = 0.05    # not tuned: 16 Adam steps can move each coordinate ≈ 0.8 prior σ
  c.yield_stats = True
  c.export = "docs/results/search_protocol_world2"
  c.command = ("python launch/search.py --config configs/latent_search.py:world2,protocol "
               "--config.targets_file={targets_file} --workdir {workdir}")
  if smoke:
    c.num_steps = 2
    c.population_size = 2
    c.num_generations = 2
    c.transfer_prompts = 1
    c.export = ""
    c.command = c.command.replace("world2,protocol", "world2,protocol,smoke")
  return c
