"""The attack job's config: validation at the edge (one-line `ConfigError`s before anything is
loaded or written), the attack it names (`registry.ATTACKS[config.attack.name]`), its judges
(`config.classifier`, the attack's classifier, read as the judge "attack"; `config.judges`, further
judges named as in every job: scorers and image judges such as "oracle", `jaxdiffattack.judges`),
and the resume hash without the run-shape keys."""

import math

from jaxdiffattack import costs
from jaxdiffattack import judges as judges_lib
from jaxdiffattack import runs
from jaxdiffattack.attacks import modes
from jaxdiffattack.attacks import registry
from jaxdiffattack.errors import check

EVAL_NOISE = ("per_sample", "fixed", "both")
BASELINES = ("random_substitution", "")
# Keys that change how a run is split or saved, not its results (excluded from the resume hash).
RUN_SHAPE_KEYS = ("microbatch", "memory_budget_gb", "checkpoint_every", "eval_batch", "steps_per_call",
                  "images_per_prompt", "report_only", "sharded_checkpoint_mb",
                  "results_file")
# The judge name of the attack's classifier (config.classifier) in rows, reports and verdicts.
ATTACK_JUDGE = "attack"
# Keys that named the attack's judges before config.classifier and config.judges: old key → what
# to write instead (`judges.check_retired_keys`).
RETIRED_KEYS = {
    "judge": "the attack's classifier is config.classifier (a scorer name, e.g. "
             "--config.classifier=toy_clip)",
    "oracle": judges_lib.RETIRED_KEYS["oracle"]}


def attack_name(config) -> str:
  """config.attack.name ("atm" when the key is absent, as in configs written before it)."""
  return config["attack"].get("name", "atm") if "attack" in config else "atm"


def attack_module(config):
  """The registry entry of config.attack.name (one-line error for an unknown name)."""
  name = attack_name(config)
  check(name in registry.ATTACKS, "attack.name", name, f"use one of {sorted(registry.ATTACKS)}")
  return registry.ATTACKS[name]


def validate(config) -> None:
  """One-line ConfigErrors for bad values, before anything is loaded or written."""
  judges_lib.check_retired_keys(config, RETIRED_KEYS)
  attack_module(config).validate(config)
  costs.validate_microbatch(config.get("microbatch"), config.get("memory_budget_gb"))
  check(config.mode in modes.MODES, "mode", config.mode, f"use one of {sorted(modes.MODES)}")
  check(isinstance(config.num_samples, int) and config.num_samples >= 1, "num_samples",
        config.num_samples, "use an integer >= 1")
  check(isinstance(config.population, int) and config.population >= 0, "population",
        config.population, "use an integer >= 1, or 0 for all prompts at once")
  check(config.eval_noise in EVAL_NOISE, "eval_noise", config.eval_noise, f"use one of {EVAL_NOISE}")
  check(config.baseline in BASELINES, "baseline", config.baseline, f"use one of {BASELINES}")
  check(isinstance(config.checkpoint_every, int) and config.checkpoint_every >= 1,
        "checkpoint_every", config.checkpoint_every, "use an integer >= 1 (iterations)")
  check(isinstance(config.steps_per_call, int) and config.steps_per_call >= 1
        and config.checkpoint_every % config.steps_per_call == 0, "steps_per_call",
        config.steps_per_call, "use an integer >= 1 that divides checkpoint_every")
  sharded_mb = config.get("sharded_checkpoint_mb", 0.0)
  check(isinstance(sharded_mb, (int, float)) and math.isfinite(sharded_mb) and sharded_mb >= 0,
        "sharded_checkpoint_mb", sharded_mb,
        "use a finite number >= 0 (MB of attack state above which checkpoints are sharded; "
        "0: never)")
  check(isinstance(config.eval_batch, int) and config.eval_batch >= 1, "eval_batch",
        config.eval_batch, "use an integer >= 1")
  check(len(config.prompt_sets) > 0, "prompt_sets", dict(config.prompt_sets),
        "name at least one set, e.g. {'short': 'short'}")
  for name in config.prompt_sets:
    check(name in ("short", "long"), f"prompt_sets.{name}", config.prompt_sets[name],
          "the sets are named 'short' and 'long'")
  check(math.isfinite(config.guidance_scale), "guidance_scale", config.guidance_scale,
        "use a finite number")
  check(isinstance(config.classifier, str) and bool(config.classifier), "classifier",
        config.classifier, "name the attack's classifier, a scorer (e.g. 'clip_vit_b16')")
  judges = config.judges
  check(isinstance(judges, (tuple, list)) and all(isinstance(j, str) and j for j in judges)
        and ATTACK_JUDGE not in judges, "judges", judges,
        f"use a tuple of scorer names and image judges {sorted(judges_lib.IMAGE_JUDGES)} "
        f"('{ATTACK_JUDGE}' is the classifier's own name)")
  for name in judges:
    if name in judges_lib.IMAGE_JUDGES:
      judges_lib.check_label_set(name, config.label_set)


def config_hash(config) -> str:
  """16 hex digits of the resolved config (a ConfigDict or its JSON dict) without run-shape keys."""
  return runs.config_hash(config, RUN_SHAPE_KEYS)
