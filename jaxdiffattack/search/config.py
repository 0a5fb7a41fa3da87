"""The defaults every search config shares (configs/<space>_search.py start from `base_config`).

Keys (all validated by `experiment.validate`):
  model, dtype, scheduler, num_steps, guidance_scale   the generator and its sampler
  seed                                                  the run's PRNG seed
  space                                                 latent | embedding | token | prompt
  label_set, labels, num_labels, template,              the targets: one search per label × seed
  seeds_per_label, target_labels                        (target_labels: targeted searches)
  population_size, num_generations                      budget per target = P × generations
  strategy.{name, std_init, params, kwargs,             any evosax strategy by name, or "random";
            param_overrides, max_full_cov_dims}         params overridable (param_overrides:
                                                        "c_std=0.1,d_std=2" from the command line)
  baseline                                              "random" (SAGE's equal-budget baseline) | ""
  stop_after_failures                                   stop a target after this many failures
                                                        (0: never)
  archive_size                                          failures kept per target
  scoring.{kind, roles, objectives, scorers}            what scores the images: "models"
                                                        (roles, objectives, scorers override
                                                        fitness.default_config(label_set)) |
                                                        "synthetic"; see jaxdiffattack.scoring
  criterion.{fitness, fitness_sign, success,            which score is minimised / judges a
             success_when, success_threshold, clip,     failure; see
             clip_filter.{mode, threshold, relative,    jaxdiffattack.search.criterion
             penalty}, diversity_weight}
  latent / embedding / token / prompt                   each space's options
  ngr_alpha                                             significance level of the NGR tests
  microbatch, checkpoint_every, save_images, report_only
"""

import ml_collections


def parse_variants(arg: str | None, allowed: tuple[str, ...], config_file: str) -> list[str]:
  variants = [v for v in (arg or "").split(",") if v]
  for v in variants:
    if v not in allowed:
      raise ValueError(f"unknown variant {v!r} in {config_file}:{arg}; use {allowed}")
  return variants


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
      "param_overrides": "", "max_full_cov_dims": 4096})
  c.baseline = "random"
  c.stop_after_failures = 1
  c.archive_size = 4
  # What scores the images. roles / objectives / scorers override jaxdiffattack.fitness.
  # default_config(label_set) (empty: its defaults — surrogate and evaluator are different
  # classifiers; the evaluator role also has a CLIP for clip_score).
  c.scoring = ml_collections.ConfigDict({"kind": "models", "roles": {}, "objectives": {},
                                         "scorers": {}})
  # The criterion: which score is minimised, which judges a failure, CLIP filter, diversity.
  c.criterion = ml_collections.ConfigDict({
      "fitness": "surrogate/margin",   # minimised × fitness_sign: the prompt class's margin
      "fitness_sign": 1.0,
      "success": "evaluator/top1_hit",  # the evaluator still sees the prompt's class ...
      "success_when": "below",          # ... below 0.5: it does not → a failure
      "success_threshold": 0.5,
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
  c.microbatch = ml_collections.config_dict.placeholder(int)
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
  return c


def wide(c: ml_collections.ConfigDict, seeds_per_label: int = 2) -> ml_collections.ConfigDict:
  """Every label of the label set × `seeds_per_label` seeds: enough targets to compare methods."""
  from jaxdiffattack import labels as labels_lib  # pylint: disable=g-import-not-at-top
  c.labels = ()
  c.num_labels = len(labels_lib.get_label_set(c.label_set).names)
  c.seeds_per_label = seeds_per_label
  return c
