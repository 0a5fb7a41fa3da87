"""Label sets, prompt templates, and the map from a label set to each scorer's output indices.

A *label set* is the list of classes an experiment talks about: the targets of a search, the
classes named in prompts ("a photo of a {}"), the classes a zero-shot CLIP chooses among. Shipped
(package data in `jaxdiffattack/data/`, provenance in its README.md):
  * `imagenet1k`: the 1000 ImageNet-1k wnids in class-index order, with OpenAI's CLIP class names;
  * `imagenet100`: the CMC ImageNet-100 subset (the brittleness paper, arXiv 2312.11473, names no
    list), indexed in sorted-wnid order;
  * `toy`: the toy world's 20 labels ("red circle", ...), `jaxdiffattack.toy.world.LABELS`;
  * `world2`: world 2's 83 hue × shape classes ("crimson rounded square", ...),
    `jaxdiffattack.world2.scene.CLASSES` (= `world2.train.LABELS`, the classifiers' id2label).
Template sets: `clip_imagenet` (the 80 templates of CLIP's ImageNet notebook, Radford et al.
2021), `toy` (the toy CLIP's canonical "a photo of a {}"), `toy_all` (every toy single-object
template), `photo` ("a photo of a {}."), `world2` (a short world-2 grammar caption, 6-9 CLIP
tokens) and `world2_long` (a long one of the same scene, 40-43 tokens: prefix, background phrase
and fillers of `world2.captions`); both parse back to the one object (`world2.captions.parse`).

A classifier's outputs are its own classes (`id2label` of the checkpoint); `map_labels` gives for
every label-set class the index of the same class among those outputs, by name (toy models,
custom heads) or by ImageNet-1k index (hub ImageNet classifiers, whose `id2label` holds WordNet
lemmas such as "tench, Tinca tinca" rather than wnids; the order is checked against the CLIP
names). A label the classifier lacks is a one-line `ConfigError`.
"""

import functools
import pathlib
from typing import NamedTuple, Sequence

import numpy as np

from jaxdiffattack.errors import ConfigError
from jaxdiffattack.errors import UserError

DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
IMAGENET_CLASSES = 1000
# An id2label of 1000 WordNet-lemma strings counts as ImageNet-1k order when at least this
# fraction of its entries lists the CLIP class name among its comma-separated synonyms (real
# hub checkpoints: ~90 %; a shuffled order: ~0 %).
IMAGENET_ORDER_MIN_AGREEMENT = 0.5
MAP_MODES = ("auto", "name", "imagenet", "index")


class LabelSet(NamedTuple):
  """An ordered list of classes; a class's label index is its position here."""
  name: str
  ids: tuple[str, ...]     # stable ids: wnids for ImageNet sets, the label text for `toy`
  names: tuple[str, ...]   # readable names, substituted into prompt templates
  imagenet_index: tuple[int, ...] | None = None  # ImageNet-1k class index of each class

  def __len__(self) -> int:
    return len(self.ids)


class LabelMap(NamedTuple):
  """Where each label-set class sits among a model's outputs."""
  indices: np.ndarray          # [K] int32: label index → output index
  output_ids: tuple[str, ...]  # [C] a canonical id per output (wnid, or the id2label text)
  mode: str                    # "name", "imagenet" or "index": how the map was made


def _read_lines(filename: str) -> tuple[str, ...]:
  lines = (DATA_DIR / filename).read_text(encoding="utf-8").splitlines()
  return tuple(line.strip() for line in lines if line.strip())


@functools.lru_cache(maxsize=None)
def imagenet1k() -> LabelSet:
  wnids = _read_lines("imagenet1k_wnids.txt")
  names = _read_lines("imagenet1k_clip_classnames.txt")
  return LabelSet("imagenet1k", wnids, names, tuple(range(len(wnids))))


@functools.lru_cache(maxsize=None)
def imagenet100() -> LabelSet:
  full = imagenet1k()
  position = {wnid: i for i, wnid in enumerate(full.ids)}
  index = tuple(sorted(position[w] for w in _read_lines("imagenet100_cmc_wnids.txt")))
  return LabelSet("imagenet100", tuple(full.ids[i] for i in index),
                  tuple(full.names[i] for i in index), index)


@functools.lru_cache(maxsize=None)
def toy() -> LabelSet:
  from jaxdiffattack.toy import world  # pylint: disable=g-import-not-at-top
  return LabelSet("toy", tuple(world.LABELS), tuple(world.LABELS))


@functools.lru_cache(maxsize=None)
def world2() -> LabelSet:
  from jaxdiffattack.world2 import scene  # pylint: disable=g-import-not-at-top
  return LabelSet("world2", tuple(scene.CLASSES), tuple(scene.CLASSES))


LABEL_SETS = {"imagenet1k": imagenet1k, "imagenet100": imagenet100, "toy": toy,
              "world2": world2}

# World 2's prompt templates: captions of its grammar (`world2.captions`: a prefix, the body
# "{A}", a background phrase and fillers, each from the grammar's lists).
WORLD2_SHORT = "a picture of a {}"
WORLD2_LONG = ("a carefully composed and highly detailed studio photograph showing a {} on a "
               "plain background, high quality, sharp focus, studio lighting, vivid colors, "
               "soft shadows, clean lines, centered composition, no text")


def _toy_templates(attr: str):
  def load():
    from jaxdiffattack.toy import world  # pylint: disable=g-import-not-at-top
    value = getattr(world, attr)
    return (value,) if isinstance(value, str) else tuple(value)
  return load


TEMPLATE_SETS = {
    "clip_imagenet": lambda: _read_lines("clip_imagenet_templates.txt"),
    "toy": _toy_templates("CANONICAL_TEMPLATE"),
    "toy_all": _toy_templates("SINGLE_TEMPLATES"),
    "photo": lambda: ("a photo of a {}.",),
    "world2": lambda: (WORLD2_SHORT,),
    "world2_long": lambda: (WORLD2_LONG,),
}


def get_label_set(name) -> LabelSet:
  """The label set called `name` (a `LabelSet` passes through)."""
  if isinstance(name, LabelSet):
    return name
  if name not in LABEL_SETS:
    raise ConfigError(f"config.labels={name!r} is invalid: use one of {sorted(LABEL_SETS)}")
  return LABEL_SETS[name]()


def class_names(label_set: str, labels: Sequence[str] = ()) -> tuple[str, ...]:
  """The classes a job's labels index into: the class names of the label set called
  `label_set`, or the job's `labels` themselves when it names none (model-free scoring)."""
  if not label_set:
    return tuple(labels)
  return tuple(get_label_set(label_set).names)


def prompt_class(prompt: str, names: Sequence[str], key: str = "prompt") -> str:
  """The class of `names` that `prompt` names first (the longest one starting there), matched on
  whole words, singular or plural ("+s", "+es"); a ConfigError naming config.<key> when it names
  none."""
  low = f" {' '.join(prompt.lower().replace(',', ' ').split())} "
  found = [(low.find(f" {n.lower()}{end} "), -len(n), n) for n in names for end in ("", "s", "es")]
  found = [f for f in found if f[0] >= 0]
  if not found:
    raise ConfigError(f"config.{key} entry {prompt!r} names no class of the label set (e.g. "
                      f"{names[0]!r}): the judges need to know what it was made for")
  return min(found)[2]


def get_templates(name) -> tuple[str, ...]:
  """The prompt templates called `name`; a tuple of strings with one `{}` each passes through."""
  if isinstance(name, (tuple, list)):
    templates = tuple(name)
  elif name in TEMPLATE_SETS:
    templates = TEMPLATE_SETS[name]()
  else:
    raise ConfigError(f"config templates={name!r} is invalid: use one of {sorted(TEMPLATE_SETS)} "
                      "or a list of strings with one '{}' each")
  bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1]
  if not templates or bad:
    raise ConfigError(f"config templates={name!r} is invalid: every template needs exactly one "
                      f"'{{}}' (bad: {bad[:1]})")
  return templates


def class_prompts(label_set: LabelSet, templates: Sequence[str]) -> list[list[str]]:
  """[K][T] prompts: every template filled with every class name."""
  return [[t.format(name) for t in templates] for name in label_set.names]


def _normalise(text: str) -> str:
  return " ".join(str(text).lower().replace("_", " ").split())


def _synonyms(entry: str) -> set[str]:
  return {_normalise(s) for s in str(entry).split(",") if s.strip()}


def imagenet_order_agreement(id2label: Sequence[str]) -> float:
  """Fraction of the 1000 entries that are the class's wnid or list its CLIP name as a synonym."""
  full = imagenet1k()
  if len(id2label) != IMAGENET_CLASSES:
    return 0.0
  hits = sum(1 for entry, wnid, name in zip(id2label, full.ids, full.names)
             if _normalise(entry) == wnid or _normalise(name) in _synonyms(entry))
  return hits / IMAGENET_CLASSES


def _mismatch(label: str, label_set: LabelSet, model: str, id2label: Sequence[str]) -> ConfigError:
  shown = ", ".join(repr(x) for x in list(id2label)[:3])
  return ConfigError(
      f"label {label!r} of label set {label_set.name!r} is not a class of {model} (its id2label "
      f"has {len(id2label)} classes: {shown}{', ...' if len(id2label) > 3 else ''})")


def map_labels(label_set: LabelSet, id2label: Sequence[str], *, model: str = "the model",
               mode: str = "auto") -> LabelMap:
  """Maps every class of `label_set` to its index among a model's outputs.

  Args:
    label_set: the experiment's classes.
    id2label: the model's output class names in output order (`config.id2label` as a list).
    model: how to name the model in error messages.
    mode: "name" (an id2label entry equals the class id or name, case-insensitive), "imagenet"
      (output index = ImageNet-1k index; the id2label must be in ImageNet-1k order: wnids, or
      WordNet lemmas agreeing with the CLIP names), "index" (ImageNet-1k index, or label
      index for non-ImageNet sets, unchecked), or "auto" ("imagenet" for ImageNet label sets
      and 1000-way models, else "name").

  Raises:
    ConfigError: a label the model lacks, or an id2label that is not in ImageNet-1k order.
  """
  id2label = [str(x) for x in id2label]
  if mode not in MAP_MODES:
    raise ConfigError(f"config label_map={mode!r} is invalid: use one of {MAP_MODES}")
  if mode == "auto":
    is_imagenet = label_set.imagenet_index is not None and len(id2label) == IMAGENET_CLASSES
    mode = "imagenet" if is_imagenet else "name"
  if mode in ("imagenet", "index"):
    if mode == "imagenet":
      if label_set.imagenet_index is None:
        raise ConfigError(f"label_map='imagenet' needs an ImageNet label set, not "
                          f"{label_set.name!r}")
      agreement = imagenet_order_agreement(id2label)
      if agreement < IMAGENET_ORDER_MIN_AGREEMENT:
        raise ConfigError(
            f"{model}: its id2label ({len(id2label)} classes, first {id2label[:1]}) is not in "
            f"ImageNet-1k order ({agreement:.0%} of entries agree with the CLIP class names); "
            "use label_map='index' if you know it is")
    index = label_set.imagenet_index or tuple(range(len(label_set)))
    too_big = [i for i in index if i >= len(id2label)]
    if too_big:
      raise ConfigError(f"{model} has {len(id2label)} outputs; label set {label_set.name!r} "
                        f"needs index {too_big[0]}")
    full = imagenet1k()
    output_ids = (full.ids if label_set.imagenet_index is not None
                  and len(id2label) == IMAGENET_CLASSES else tuple(id2label))
    return LabelMap(np.asarray(index, np.int32), tuple(output_ids), mode)
  # By name: an id2label entry equal to the label's id or its readable name.
  lookup = {}
  for i, entry in enumerate(id2label):
    lookup.setdefault(_normalise(entry), []).append(i)
  indices = []
  for label_id, name in zip(label_set.ids, label_set.names):
    found = lookup.get(_normalise(label_id)) or lookup.get(_normalise(name))
    if not found:
      raise _mismatch(label_id, label_set, model, id2label)
    if len(found) > 1:
      raise ConfigError(f"label {label_id!r} matches {len(found)} classes of {model} "
                        f"(indices {found[:3]}); its id2label is ambiguous")
    indices.append(found[0])
  return LabelMap(np.asarray(indices, np.int32), tuple(id2label), "name")


def map_label_sets(label_set: LabelSet, classes: LabelSet, *, model: str = "the model") -> LabelMap:
  """Maps `label_set` into another label set `classes` (e.g. a zero-shot CLIP's classes) by id."""
  position = {label_id: i for i, label_id in enumerate(classes.ids)}
  missing = [label_id for label_id in label_set.ids if label_id not in position]
  if missing:
    raise ConfigError(f"label {missing[0]!r} of label set {label_set.name!r} is not a class of "
                      f"{model} (whose classes are label set {classes.name!r})")
  return LabelMap(np.asarray([position[i] for i in label_set.ids], np.int32), classes.ids, "name")


def indices(label_set: LabelSet, labels) -> np.ndarray:
  """[P] int32 label-set indices from indices or label ids/names; one-line error if unknown."""
  values = list(labels) if isinstance(labels, (list, tuple)) else list(np.asarray(labels).ravel())
  if values and all(isinstance(v, (str, np.str_)) for v in values):
    lookup = {v: i for i, v in enumerate(label_set.ids)}
    for i, name in enumerate(label_set.names):
      lookup.setdefault(name, i)
    missing = [v for v in values if v not in lookup]
    if missing:
      raise UserError(f"label {missing[0]!r} is not in label set {label_set.name!r}")
    return np.asarray([lookup[v] for v in values], np.int32)
  index = np.asarray(values, np.int64)
  bad = index[(index < 0) | (index >= len(label_set))]
  if bad.size:
    raise UserError(f"label index {int(bad[0])} is outside label set {label_set.name!r} "
                    f"(0..{len(label_set) - 1})")
  return index.astype(np.int32)
