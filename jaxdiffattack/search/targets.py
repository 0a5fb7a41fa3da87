"""The targets of a batch of searches: one per (label, seed), each with its clean prompt.

Target t has the prompt `template.format(label)`; its evaluator/surrogate class is the label's index
in `config.label_set` (the scorer maps label-set indices to its own outputs); for targeted searches
(the adversarial token: "the model draws a chosen target") `config.target_labels` names the class
the images should show instead, one per label. Targets are label-major: t = label_i · seeds + s.
"""

import dataclasses

import numpy as np

from jaxdiffattack.errors import check


@dataclasses.dataclass(frozen=True)
class Target:
  index: int          # t, position in the batch of searches
  label: str          # the prompt's class
  label_index: int    # its index in the label set (aux["label"])
  prompt: str         # the clean prompt
  seed_index: int     # s: several independent searches per label
  target_label: str   # the class a targeted search wants drawn ("" if untargeted)
  target_index: int   # its label-set index (aux["target"]; = label_index if untargeted)


def _label_names(config) -> tuple[str, ...]:
  if not config.get("label_set"):
    return tuple(config.labels)
  from jaxdiffattack import labels as labels_lib  # pylint: disable=g-import-not-at-top
  return tuple(labels_lib.get_label_set(config.label_set).names)


def make_targets(config) -> list[Target]:
  """Targets from config.labels (or the first config.num_labels of config.label_set)."""
  names = _label_names(config)
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


def aux_arrays(targets: list[Target], target_of_member: np.ndarray) -> dict:
  """The scorer's per-member aux: label, target (label-set indices) and prompt (target index)."""
  label = np.array([t.label_index for t in targets], np.int32)
  goal = np.array([t.target_index for t in targets], np.int32)
  return {"label": label[target_of_member], "target": goal[target_of_member],
          "prompt": np.asarray(target_of_member, np.int32)}
