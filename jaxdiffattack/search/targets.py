"""The targets of a batch of searches: one per (label, seed), each with its clean prompt.

Target t has the prompt `template.format(label)`; its evaluator/surrogate class is the label's index
in `config.label_set` (the scorer maps label-set indices to its own outputs); for targeted searches
(the adversarial token: "the model draws a chosen target") `config.target_labels` names the class
the images should show instead, one per label. The scoring judges every target against
`target_index` (`Scoring.aux(labels=...)`). Targets are label-major: t = label_i · seeds + s.
"""

import dataclasses

from jaxdiffattack import labels as labels_lib
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


def make_targets(config) -> list[Target]:
  """Targets from config.labels (or the first config.num_labels of config.label_set)."""
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
