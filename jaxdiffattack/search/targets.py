"""The targets of a batch of searches: one per (label, seed), each with its clean prompt.

Target t has the prompt `template.format(label)`; its evaluator/surrogate class is the label's index
in `config.label_set` (the scorer maps label-set indices to its own outputs); for targeted searches
(the adversarial token: "the model draws a chosen target") `config.target_labels` names the class
the images should show instead, one per label. The scoring judges every target against
`target_index` (`Scoring.aux(labels=...)`). Targets are label-major: t = label_i · seeds + s.

With `config.targets_file` (a census workdir or its targets.json: `jaxdiffattack.census`, issue
#26 item 1) the targets are instead the census's selected prompts (`census_targets`): the full
caption is the prompt (the scene oracle judges each image against that caption's facts: objects,
counts, textures, relations), the census row's class (the scene's first group) is the label the
classifiers are judged against, and its kind ("single", "two_objects", "long") and clean failure
rate are kept; prompt-major, t = prompt_i · seeds_per_label + s.
"""

import dataclasses
import json
import pathlib

from jaxdiffattack import labels as labels_lib
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.errors import UserError
from jaxdiffattack.errors import check


@dataclasses.dataclass(frozen=True)
class Target:
  index: int          # t, position in the batch of searches
  label: str          # the prompt's class
  label_index: int    # its index in the label set
  prompt: str         # the clean prompt
  seed_index: int     # s: several independent searches per label
  target_label: str   # the class a targeted search wants drawn ("" if untargeted)
  target_index: int   # its label-set index (= label_index if untargeted): what is judged
  kind: str = ""      # census targets: the prompt kind ("single", "two_objects", "long")
  clean_rate: float | None = None   # census targets: the clean per-seed failure rate


def make_targets(config) -> list[Target]:
  """Targets from config.targets_file (`census_targets`) when set, else from config.labels (or
  the first config.num_labels of config.label_set)."""
  if config.get("targets_file"):
    return census_targets(config.targets_file, config.get("label_set"), config.seeds_per_label)
  names = labels_lib.class_names(config.get("label_set"), config.labels)
  chosen = tuple(config.labels) or names[:config.num_labels]
  check(len(chosen) > 0, "labels", config.labels, "give at least one label (or a label_set)")
  check("{}" in config.template, "template", config.template, "must contain '{}'")
  check(config.seeds_per_label >= 1, "seeds_per_label", config.seeds_per_label,
        "use an integer >= 1")
  target_labels = tuple(config.get("target_labels", ()))
  check(not target_labels or len(target_labels) == len(chosen), "target_labels", target_labels,
        f"give one target class per label ({len(chosen)}) or none")
  index = {name: i for i, name in enumerate(names)}
  for name in chosen + target_labels:
    check(name in index, "labels", name,
          f"not in label_set {config.get('label_set')!r}; use one of {list(names)[:20]}...")
  targets = []
  for i, label in enumerate(chosen):
    target_label = target_labels[i] if target_labels else ""
    for s in range(config.seeds_per_label):
      targets.append(Target(
          index=len(targets), label=label, label_index=index[label],
          prompt=config.template.format(label), seed_index=s, target_label=target_label,
          target_index=index[target_label] if target_label else index[label]))
  return targets


CENSUS_COMMAND = ("python launch/census.py --config configs/census.py:world2 --workdir DIR, then "
                  "pass --config.targets_file=DIR/targets.json")


def _census_error(path, what: str, fix: str) -> UserError:
  return UserError(f"config.targets_file={str(path)!r}: {what}; {fix}")


def read_census_targets(path) -> tuple[pathlib.Path, list[dict]]:
  """(path of targets.json, its "targets" entries) of a census workdir or targets.json; one-line
  UserErrors for a missing or malformed file and for an empty selection."""
  path = pathlib.Path(path)
  if path.is_dir():
    path = path / "targets.json"
  if not path.is_file():
    raise _census_error(path, "no such file", f"run the census first: {CENSUS_COMMAND}")
  try:
    data = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise _census_error(path, f"not JSON ({str(e).splitlines()[0]})",
                        "rerun the census (census.finish rewrites targets.json)") from None
  entries = data.get("targets") if isinstance(data, dict) else None
  if not isinstance(entries, list):
    raise _census_error(path, "has no list under 'targets'",
                        "give the targets.json a census wrote (jaxdiffattack.census.targets)")
  for i, e in enumerate(entries):
    missing = [k for k in ("prompt", "label", "kind") if not isinstance(e, dict) or
               not isinstance(e.get(k), str) or not e.get(k)]
    if missing:
      raise _census_error(path, f"target {i} lacks {missing}",
                          "give the targets.json a census wrote (jaxdiffattack.census.targets)")
  if not entries:
    band = data.get("band")
    raise _census_error(
        path, f"the census selected no targets ({data.get('eligible')} of "
        f"{data.get('judged')} prompts judged had a clean failure rate in the band {band})",
        "widen the band (census --config.band) or census more prompts/seeds")
  return path, entries


def census_targets(path, label_set: str | None, seeds_per_label: int = 1) -> list[Target]:
  """The targets of a census's targets.json (see the module docstring): per selected prompt,
  `seeds_per_label` searches; its label must be a class of `label_set`."""
  path, entries = read_census_targets(path)
  check(seeds_per_label >= 1, "seeds_per_label", seeds_per_label, "use an integer >= 1")
  names = labels_lib.class_names(label_set, ())
  index = {name: i for i, name in enumerate(names)}
  targets = []
  for i, e in enumerate(entries):
    if e["label"] not in index:
      raise ConfigError(f"config.targets_file={str(path)!r}: target {i}'s label {e['label']!r} "
                        f"is not in label_set {label_set!r}; use the census's world "
                        f"(label_set 'world2')")
    rate = e.get("rate")
    for s in range(seeds_per_label):
      targets.append(Target(
          index=len(targets), label=e["label"], label_index=index[e["label"]],
          prompt=e["prompt"], seed_index=s, target_label="", target_index=index[e["label"]],
          kind=e["kind"], clean_rate=None if rate is None else float(rate)))
  return targets


# ------------------------------------------------ targets by clean failure rate (issue #26) --
# A search can only show an advantage over random seeds on prompts that fail rarely but do fail
# when clean: the targets are prompts whose clean per-seed failure rate by the oracle lies in a
# band (default 1–10 %), estimated from at least 64 seeds each, spread over classes and prompt
# kinds (single object, two objects, long captions).
FAILED_VERDICTS = ("violated", True)   # a per-seed verdict that counts as a clean failure
MIN_SEEDS = 64


@dataclasses.dataclass(frozen=True)
class CleanRate:
  """One prompt's clean failure rate over its seeds."""
  prompt: str
  label: str            # the class the selection spreads over (e.g. the first object's class)
  kind: str             # the prompt kind ("single", "two_objects", "long", ...)
  seeds: int            # seeds judged
  failures: int         # seeds whose verdict is a failure ("violated" / True)
  unclear: int          # seeds the oracle could not decide ("unclear" / None): not failures
  rate: float           # failures / seeds
  ci95: tuple[float, float]   # Wilson interval of the rate


def clean_rates(records, min_seeds: int = MIN_SEEDS) -> list[CleanRate]:
  """CleanRate of each record {"prompt", "label", "kind", "verdicts": [per seed: "holds" |
  "violated" | "unclear", or True (failed) / False / None]}; fewer than `min_seeds` verdicts is
  a one-line UserError."""
  from jaxdiffattack import stats  # pylint: disable=g-import-not-at-top
  out = []
  for r in records:
    verdicts = list(r["verdicts"])
    if len(verdicts) < min_seeds:
      raise UserError(f"clean failure rate of {r['prompt']!r}: {len(verdicts)} seeds judged, "
                      f"need >= {min_seeds}; judge more seeds of it or drop it")
    bad = [v for v in verdicts if v not in ("holds", "violated", "unclear", True, False, None)]
    if bad:
      raise UserError(f"clean failure rate of {r['prompt']!r}: verdict {bad[0]!r} is not one of "
                      "'holds', 'violated', 'unclear' (or True / False / None)")
    failures = sum(v in FAILED_VERDICTS for v in verdicts)
    unclear = sum(v in ("unclear", None) for v in verdicts)
    out.append(CleanRate(r["prompt"], r["label"], r.get("kind", ""), len(verdicts), failures,
                         unclear, failures / len(verdicts),
                         stats.wilson_interval(failures, len(verdicts))))
  return out


def select_by_clean_failure(records, band: tuple[float, float] = (0.01, 0.10),
                            count: int = 40, min_seeds: int = MIN_SEEDS) -> dict:
  """Targets whose clean failure rate lies in `band` (inclusive), at most `count`, spread over
  kinds and classes: kinds take turns, and within a kind its classes take turns (each class's
  prompts ordered by their rate's distance to the band's middle, then by prompt), so no class
  of a kind gets a second target while another class of that kind with eligible prompts has
  none, and kinds get equal shares while they have eligible prompts.

  Returns {"selected": [CleanRate], "eligible": n, "judged": n, "band", "count",
  "by_kind": {kind: n}, "by_label": {label: n}, "shortfall": count − selected}.
  """
  low, high = band
  check(0.0 <= low < high <= 1.0, "band", band, "give (low, high) with 0 <= low < high <= 1")
  check(count >= 1, "count", count, "use an integer >= 1")
  rates = clean_rates(records, min_seeds)
  eligible = [r for r in rates if low <= r.rate <= high]
  middle = (low + high) / 2
  # Within a kind: the classes' best prompts first (round 0: each class's prompt closest to the
  # middle, those nearest the middle first), then their second, ...; across kinds: one from
  # each kind in turn (kinds in name order).
  per_kind: dict[str, list[tuple]] = {}
  rank: dict[tuple, int] = {}
  for r in sorted(eligible, key=lambda r: (abs(r.rate - middle), r.prompt)):
    k = rank[(r.kind, r.label)] = rank.get((r.kind, r.label), -1) + 1
    per_kind.setdefault(r.kind, []).append((k, abs(r.rate - middle), r.prompt, r))
  sequences = [[x[-1] for x in sorted(per_kind[kind], key=lambda x: x[:3])]
               for kind in sorted(per_kind)]
  interleaved = [seq[i] for i in range(max(map(len, sequences), default=0))
                 for seq in sequences if i < len(seq)]
  selected = interleaved[:count]
  by_kind, by_label = {}, {}
  for r in selected:
    by_kind[r.kind] = by_kind.get(r.kind, 0) + 1
    by_label[r.label] = by_label.get(r.label, 0) + 1
  return {"selected": selected, "eligible": len(eligible), "judged": len(rates),
          "band": [low, high], "count": count, "by_kind": by_kind, "by_label": by_label,
          "shortfall": max(0, count - len(selected))}
