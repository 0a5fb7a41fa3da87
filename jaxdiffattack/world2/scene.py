"""World 2's scenes: what can be in a picture, and how a scene is drawn at random (issue #23).

A scene is a background and 1-3 objects. An **object class** is a (hue, shape) pair named
"<hue> <shape>", e.g. "crimson six-pointed star": every hue of `HUES` with every shape of
`SHAPES` except the fruit "orange", which comes only in `FRUIT_HUES` ("green orange"), so
``NUM_CLASSES = 8 * 10 + 3 = 83``. Size ("small" / medium / "large") and texture ("flat",
"striped", "ring", "dotted") are attributes of an object, not of its class (small objects of
scenes with several objects, rings and fruit are always flat). The hue and shape
lists hold close pairs on purpose (red / crimson / orange; green / teal; circle / oval /
ring; square / rectangle / rounded square; 5- and 6-pointed star; circle / orange fruit):
the fine-grained neighbours where a generator near a judge's boundary fails.

Polysemous words (each used by the caption grammar in both senses, `captions`):
"orange" (a hue, and the fruit shape), "star" (the 5-pointed shape, and the star-field
background), "ring" (the annulus shape, and the concentric texture).

A scene's objects come in **groups** (`GroupSpec`): a class with a count (1 or 2), one size
and one texture; a scene has one group ("a red circle", "two red circles"), two groups with
or without a relation ("a red circle left of a blue square", relation `RELATIONS`: the first
group is left of / above the second), or three groups of one object each. `LAYOUTS` lists the
kinds with their probabilities.

Class frequency is long-tailed: class ``k`` of `CLASS_ORDER` (a fixed shuffle of the class
ids) is drawn with probability proportional to ``TAIL_RATIO ** (-rank / (K - 1))``, so the
commonest class is `TAIL_RATIO` = 20 times as frequent as the rarest (`class_probs`).

Geometry is in units of the image side (centre and circumradius in [0, 1]), so one scene
renders at any resolution (`render`). Every draw comes from ``np.random.default_rng([seed,
split, index])`` (`scene_rng`): the same (split, index, seed) gives the same scene on any
machine, and the "train", "tune" and "test" splits are disjoint streams.
"""
from __future__ import annotations

import colorsys
import math
from typing import NamedTuple, Sequence

import numpy as np

from jaxdiffattack.errors import UserError

# ------------------------------------------------------------------ vocabulary --
# Hue name -> (hue in degrees, HSV saturation, HSV value) of its nominal colour. Every hue lies
# >= 17 degrees from every other (red / crimson are the closest pair); objects jitter by at
# most HUE_JITTER degrees, so the oracle separates them by hue angle alone.
HUES = {
    "red": (0.0, 0.88, 0.86),
    "crimson": (343.0, 0.86, 0.62),
    "orange": (25.0, 0.92, 0.96),
    "yellow": (52.0, 0.86, 0.92),
    "green": (122.0, 0.78, 0.66),
    "teal": (170.0, 0.82, 0.62),
    "blue": (220.0, 0.80, 0.86),
    "purple": (272.0, 0.72, 0.74),
}
HUE_NAMES = tuple(HUES)
HUE_JITTER = 3.0           # degrees, uniform
SATURATION_JITTER = (0.92, 1.0)
VALUE_JITTER = (0.9, 1.04)
SHAPES = ("circle", "oval", "ring", "square", "rectangle", "rounded square", "triangle",
          "star", "six-pointed star", "cross", "orange")
FRUIT = "orange"
FRUIT_HUES = ("orange", "green", "yellow")
TEXTURES = ("flat", "striped", "ring", "dotted")
TEXTURE_PROBS = (0.55, 0.15, 0.15, 0.15)
TEXTURE_DARK = 0.58        # A pattern's dark parts: the object's colour times this.
SIZES = ("small", "medium", "large")
SIZE_PROBS = (0.25, 0.5, 0.25)
# Circumradius range (fraction of the image side) by size, for scenes of 1 and of 2-3 objects.
RADIUS = {1: {"small": (0.13, 0.17), "medium": (0.19, 0.25), "large": (0.28, 0.34)},
          2: {"small": (0.09, 0.11), "medium": (0.12, 0.15), "large": (0.16, 0.19)}}
BACKGROUNDS = ("plain", "gradient", "noise", "stripes", "star field")
BACKGROUND_PROBS = (0.3, 0.2, 0.2, 0.15, 0.15)
MAX_BACKGROUND_CHROMA = 30.0  # max(rgb) - min(rgb) of every background colour (0-255); every
                              # object's, dark texture parts included, is >= ~60.
RELATIONS = ("left", "above")  # Group 0 is left of / above group 1.
# Scene kinds: (name, group counts, probability).
LAYOUTS = (("single", (1,), 0.40), ("two", (2,), 0.12), ("pair", (1, 1), 0.28),
           ("two_and_one", (2, 1), 0.08), ("triple", (1, 1, 1), 0.12))
RELATION_PROB = 0.6        # P(a two-group scene states a relation).
TAIL_RATIO = 20.0

# Each hue's and shape's close neighbours: the confusions a fine-grained judge must tell apart.
HUE_NEIGHBOURS = {"red": ("crimson", "orange"), "crimson": ("red", "purple"),
                  "orange": ("red", "yellow"), "yellow": ("orange", "green"),
                  "green": ("teal", "yellow"), "teal": ("green", "blue"),
                  "blue": ("teal", "purple"), "purple": ("blue", "crimson")}
SHAPE_NEIGHBOURS = {"circle": ("oval", "ring", "orange"), "oval": ("circle", "rectangle"),
                    "ring": ("circle",), "square": ("rounded square", "rectangle"),
                    "rectangle": ("square", "oval"), "rounded square": ("square", "circle"),
                    "triangle": ("star",), "star": ("six-pointed star", "cross"),
                    "six-pointed star": ("star",), "cross": ("star", "square"),
                    "orange": ("circle",)}
CLASSES = tuple(f"{h} {s}" for s in SHAPES for h in HUE_NAMES
                if s != FRUIT or h in FRUIT_HUES)
CLASS2ID = {c: i for i, c in enumerate(CLASSES)}
NUM_CLASSES = len(CLASSES)
SPLITS = {"train": 0, "tune": 1, "test": 2}
_CLASS_ORDER_SEED = 20261206


def class_hue(cls: int) -> str:
  return CLASSES[cls].split(" ", 1)[0]


def class_shape(cls: int) -> str:
  return CLASSES[cls].split(" ", 1)[1]


def class_id(hue: str, shape: str) -> int:
  name = f"{hue} {shape}"
  if name not in CLASS2ID:
    raise UserError(f"world2: no class {name!r}; classes are scene.CLASSES (the fruit "
                    f"'orange' comes only in {', '.join(FRUIT_HUES)})")
  return CLASS2ID[name]


CLASS_ORDER = tuple(int(i) for i in
                    np.random.default_rng(_CLASS_ORDER_SEED).permutation(NUM_CLASSES))


def class_probs() -> np.ndarray:
  """[NUM_CLASSES] probability of each class id: geometric in its rank in `CLASS_ORDER`, from
  1 (rank 0) to 1 / TAIL_RATIO (last rank), normalised."""
  rank = np.empty(NUM_CLASSES)
  rank[np.asarray(CLASS_ORDER)] = np.arange(NUM_CLASSES)
  w = TAIL_RATIO ** (-rank / (NUM_CLASSES - 1))
  return w / w.sum()


# ------------------------------------------------------------------------ specs --
class ObjectSpec(NamedTuple):
  """One drawn object; geometry in units of the image side."""
  cls: int                        # class id (hue, shape)
  group: int                      # index of its group in SceneSpec.groups
  cx: float
  cy: float                       # y grows downwards
  radius: float                   # circumradius
  angle: float                    # radians
  texture: str
  rgb: tuple[float, float, float]  # 0-255


class GroupSpec(NamedTuple):
  """Objects of one class that a caption names together ("two striped red circles")."""
  cls: int
  count: int
  size: str
  texture: str


class BackgroundSpec(NamedTuple):
  kind: str                        # one of BACKGROUNDS
  rgb_a: tuple[float, float, float]
  rgb_b: tuple[float, float, float]  # gradient end / second stripe tone / star colour
  angle: float                     # gradient or stripe direction (radians)
  period: float                    # stripe period (fraction of the side)
  noise_std: float                 # luminance noise std (0-255), "noise" only
  seed: int                        # noise and star positions


class SceneSpec(NamedTuple):
  background: BackgroundSpec
  groups: tuple[GroupSpec, ...]
  relation: str | None             # RELATIONS entry: group 0 <relation> group 1, or None
  objects: tuple[ObjectSpec, ...]
  layout: str                      # LAYOUTS name


# --------------------------------------------------------------------- sampling --
def scene_rng(split: str, index: int, seed: int = 0) -> np.random.Generator:
  if split not in SPLITS:
    raise UserError(f"world2: split={split!r} is invalid: use one of {', '.join(SPLITS)}")
  return np.random.default_rng([seed, SPLITS[split], index])


def hsv_rgb(hue_deg: float, s: float, v: float) -> tuple[float, float, float]:
  r, g, b = colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, min(s, 1.0), min(v, 1.0))
  return (255.0 * r, 255.0 * g, 255.0 * b)


def object_rgb(rng: np.random.Generator, hue: str) -> tuple[float, float, float]:
  h, s, v = HUES[hue]
  return hsv_rgb(h + rng.uniform(-HUE_JITTER, HUE_JITTER), s * rng.uniform(*SATURATION_JITTER),
                 v * rng.uniform(*VALUE_JITTER))


def _background_colour(rng: np.random.Generator, dark: bool = False) -> tuple[float, ...]:
  """A low-chroma colour: a grey, or a pastel (chroma <= MAX_BACKGROUND_CHROMA)."""
  v = rng.uniform(15, 45) if dark else rng.uniform(120, 240)
  chroma = rng.uniform(0, MAX_BACKGROUND_CHROMA * 0.9) if rng.random() < 0.6 else 0.0
  return hsv_rgb(rng.uniform(0, 360), chroma / v if v else 0.0, v / 255.0)


def sample_background(rng: np.random.Generator, kind: str | None = None) -> BackgroundSpec:
  if kind is None:
    kind = BACKGROUNDS[rng.choice(len(BACKGROUNDS), p=BACKGROUND_PROBS)]
  dark = kind == "star field"
  a = _background_colour(rng, dark)
  if kind == "star field":
    b = tuple(float(x) for x in np.full(3, rng.uniform(200, 255)))
  elif kind == "stripes":
    shift = rng.choice([-1, 1]) * rng.uniform(25, 50)
    b = tuple(float(np.clip(x + shift, 0, 255)) for x in a)
  else:
    b = _background_colour(rng)
  return BackgroundSpec(kind, tuple(map(float, a)), b, float(rng.uniform(0, np.pi)),
                        float(rng.uniform(0.08, 0.16)),
                        float(rng.uniform(6, 18)) if kind == "noise" else 0.0,
                        int(rng.integers(2**31)))


def _draw_classes(rng: np.random.Generator, n: int) -> list[int]:
  """n distinct classes, each by the long-tailed frequency (renormalised without repeats)."""
  p = class_probs()
  out = []
  for _ in range(n):
    q = p.copy()
    q[out] = 0
    out.append(int(rng.choice(NUM_CLASSES, p=q / q.sum())))
  return out


def _place(rng, radii, groups_of, relation, max_tries=5000):
  """Centres for objects of the given radii, non-overlapping (gap >= 0.04 of the side) and
  inside the image; with a relation, every object of group 0 is left of / above every object of
  group 1 by at least 0.1 along that axis, which dominates the other axis."""
  for _ in range(max_tries):
    centres = []
    for r, g in zip(radii, groups_of):
      lo, hi = np.full(2, r + 0.02), np.full(2, 1 - r - 0.02)
      if relation is not None:  # Group 0 in the first 55 % along the axis, group 1 in the last.
        axis = 0 if relation == "left" else 1
        if g == 0:
          hi[axis] = min(hi[axis], 0.55)
        else:
          lo[axis] = max(lo[axis], 0.45)
      centres.append(rng.uniform(lo, hi))
    c = np.asarray(centres)
    ok = all(np.hypot(*(c[i] - c[j])) >= radii[i] + radii[j] + 0.04
             for i in range(len(radii)) for j in range(i))
    if ok and relation is not None:
      axis = 0 if relation == "left" else 1
      for i in range(len(radii)):
        for j in range(len(radii)):
          if groups_of[i] == 0 and groups_of[j] == 1:
            d = c[j] - c[i]
            ok &= d[axis] >= 0.1 and d[axis] >= abs(d[1 - axis])
    if ok:
      return c
  raise RuntimeError("world2: could not place the objects")  # Never at these radii.


def sample_scene(rng: np.random.Generator, layout: str | None = None,
                 classes: Sequence[int] | None = None, relation: str | None = "random",
                 background: str | None = None, size: str | None = None,
                 texture: str | None = None) -> SceneSpec:
  """A random scene. Every argument left out is drawn: the layout by `LAYOUTS`' probabilities,
  classes by the long-tailed frequency, a relation (two-group layouts, P = RELATION_PROB;
  pass None for none), background, size and texture per group."""
  names = [l[0] for l in LAYOUTS]
  if layout is None:
    layout = names[rng.choice(len(LAYOUTS), p=[l[2] for l in LAYOUTS])]
  if layout not in names:
    raise UserError(f"world2: layout={layout!r} is invalid: use one of {', '.join(names)}")
  counts = dict((l[0], l[1]) for l in LAYOUTS)[layout]
  if classes is None:
    classes = _draw_classes(rng, len(counts))
  if len(classes) != len(counts):
    raise UserError(f"world2: layout {layout!r} has {len(counts)} groups, got classes={classes}")
  if relation == "random":
    relation = (RELATIONS[rng.integers(len(RELATIONS))]
                if len(counts) == 2 and rng.random() < RELATION_PROB else None)
  if relation is not None and (relation not in RELATIONS or len(counts) != 2):
    raise UserError(f"world2: relation={relation!r} needs a two-group layout and one of "
                    f"{RELATIONS}")
  groups = []
  for cls, count in zip(classes, counts):
    s = size or SIZES[rng.choice(len(SIZES), p=SIZE_PROBS)]
    t = texture or TEXTURES[rng.choice(len(TEXTURES), p=TEXTURE_PROBS)]
    if class_shape(cls) in ("ring", FRUIT) or (sum(counts) > 1 and s == "small"):
      t = "flat"  # A ring is too thin for a pattern, the fruit has its leaf, and a pattern on
                  # a small object of a crowded scene is under 7 pixels of radius at 64².
    groups.append(GroupSpec(int(cls), int(count), s, t))
  n_objects = sum(counts)
  table = RADIUS[1 if n_objects == 1 else 2]
  radii, groups_of = [], []
  for g, group in enumerate(groups):
    for _ in range(group.count):
      radii.append(float(rng.uniform(*table[group.size])))
      groups_of.append(g)
  centres = _place(rng, radii, groups_of, relation)
  objects = []
  for (cx, cy), r, g in zip(centres, radii, groups_of):
    group = groups[g]
    objects.append(ObjectSpec(group.cls, g, float(cx), float(cy), r,
                              float(rng.uniform(-0.3, 0.3)), group.texture,
                              object_rgb(rng, class_hue(group.cls))))
  bg = sample_background(rng, background)
  return SceneSpec(bg, tuple(groups), relation, tuple(objects), layout)


def scene(split: str, index: int, seed: int = 0, **kw) -> SceneSpec:
  """Scene `index` of a split (deterministic; keyword arguments fix parts, `sample_scene`)."""
  return sample_scene(scene_rng(split, index, seed), **kw)


def sample_scenes(split: str, start: int, count: int, seed: int = 0, **kw) -> list[SceneSpec]:
  return [scene(split, i, seed, **kw) for i in range(start, start + count)]


def radius_range(n_objects: int, size: str) -> tuple[float, float]:
  return RADIUS[1 if n_objects == 1 else 2][size]


def chroma(rgb) -> float:
  return float(max(rgb) - min(rgb))


assert math.isclose(class_probs().max() / class_probs().min(), TAIL_RATIO)
