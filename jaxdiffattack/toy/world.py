"""The toy world: procedural 32x32 RGB "photos" of coloured shapes.

Everything is rendered deterministically by NumPy from integer seeds, so the
data of every split can be regenerated bit for bit on any machine.

A scene is a background (uniform grey, pastel, gradient or noise) with one or
two flat-coloured objects. An object class is a (colour, shape) pair, e.g.
"red circle"; there are ``len(COLOURS) * len(SHAPES) = 20`` classes and
``LABELS`` (ordered) is the id2label used by every toy model.

Captions: single-object scenes use one of ``SINGLE_TEMPLATES`` (the canonical
prompt is ``"a photo of a {label}"``); two-object scenes use
``PAIR_TEMPLATES`` (canonical ``"a photo of a {a} and a {b}"``).

Splits: ``"train"`` and ``"heldout"`` draw from disjoint seed streams.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import numpy as np

IMAGE_SIZE = 32

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle", "star", "cross")
# Nominal RGB of each colour (before per-object jitter).
COLOUR_RGB = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (40, 75, 215),
    "yellow": (235, 205, 35),
}
# Per-object colour jitter: rgb = base * U(*COLOUR_JITTER_SCALE) + U(-o, o) per channel, with
# o = COLOUR_JITTER_OFFSET, clipped to [0, 255].
COLOUR_JITTER_SCALE = (0.88, 1.08)
COLOUR_JITTER_OFFSET = 18.0
# Label id -> "colour shape"; colour-major order.
LABELS = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
LABEL2ID = {label: i for i, label in enumerate(LABELS)}
NUM_CLASSES = len(LABELS)

CANONICAL_TEMPLATE = "a photo of a {}"
SINGLE_TEMPLATES = (
    "a photo of a {}",
    "a picture of a {}",
    "an image of a {}",
    "a {}",
    "a photo of the {}",
    "a drawing of a {}",
    "a close-up photo of a {}",
    "a rendering of a {}",
)
CANONICAL_PAIR_TEMPLATE = "a photo of a {} and a {}"
PAIR_TEMPLATES = (
    "a photo of a {} and a {}",
    "a picture of a {} and a {}",
    "a {} and a {}",
)
BACKGROUND_KINDS = ("grey", "pastel", "gradient", "noise")

SPLIT_IDS = {"train": 0, "heldout": 1}
_SINGLE_RADIUS = (5.5, 11.0)
_PAIR_RADIUS = (4.5, 7.5)
_MIN_CONTRAST = 95.0  # Min RGB distance between object colour and background.
_SUPERSAMPLE = 4


def label_colour(label: int) -> str:
  return LABELS[label].split(" ")[0]


def label_shape(label: int) -> str:
  return LABELS[label].split(" ")[1]


def world_words() -> tuple[str, ...]:
  """Every word used by labels and caption templates (sorted, unique)."""
  words = set(COLOURS) | set(SHAPES)
  for template in SINGLE_TEMPLATES + PAIR_TEMPLATES:
    words |= set(template.replace("{}", " ").split())
  return tuple(sorted(words))


def caption(labels: Sequence[int], template: str | None = None) -> str:
  """Caption of a scene with one or two objects (canonical template default)."""
  names = [LABELS[int(i)] for i in labels]
  if template is None:
    template = CANONICAL_TEMPLATE if len(names) == 1 else CANONICAL_PAIR_TEMPLATE
  return template.format(*names)


class ObjectSpec(NamedTuple):
  """One object: class id, centre (x, y) and circumradius in pixels."""
  label: int
  cx: float
  cy: float
  radius: float
  angle: float  # Radians.
  rgb: tuple[float, float, float]


class BackgroundSpec(NamedTuple):
  kind: str
  rgb_a: tuple[float, float, float]
  rgb_b: tuple[float, float, float]  # Second colour of a gradient.
  direction: float  # Gradient direction (radians).
  noise_std: float
  noise_seed: int


class SceneSpec(NamedTuple):
  background: BackgroundSpec
  objects: tuple[ObjectSpec, ...]


# ---------------------------------------------------------------- geometry --
def _polygon(shape: str) -> np.ndarray:
  """Unit-circumradius polygon vertices (V, 2) of a shape (not circle)."""
  if shape == "square":
    a = np.pi / 4 + np.arange(4) * np.pi / 2
    return np.stack([np.cos(a), np.sin(a)], -1)
  if shape == "triangle":
    a = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3  # Apex up (y grows down).
    return np.stack([np.cos(a), np.sin(a)], -1) * 1.1 + np.array([0, 0.2])
  if shape == "star":
    a = -np.pi / 2 + np.arange(10) * np.pi / 5
    r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    return np.stack([r * np.cos(a), r * np.sin(a)], -1) * 1.1
  if shape == "cross":
    w, l = 0.33, 0.95
    return np.array([(-w, -l), (w, -l), (w, -w), (l, -w), (l, w), (w, w),
                     (w, l), (-w, l), (-w, w), (-l, w), (-l, -w), (-w, -w)])
  raise ValueError(f"unknown shape {shape!r}")


def _inside_polygon(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
  """Even-odd point-in-polygon test, vectorised over points."""
  inside = np.zeros(x.shape, bool)
  n = len(poly)
  for i in range(n):
    x0, y0 = poly[i]
    x1, y1 = poly[(i + 1) % n]
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
      xint = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    inside ^= crosses & (x < xint)
  return inside


def shape_coverage(shape: str, cx: float, cy: float, radius: float,
                   angle: float, size: int = IMAGE_SIZE,
                   supersample: int = _SUPERSAMPLE) -> np.ndarray:
  """Anti-aliased coverage in [0, 1] of a shape, shape (size, size)."""
  s = supersample
  coords = (np.arange(size * s) + 0.5) / s
  yy, xx = np.meshgrid(coords, coords, indexing="ij")
  dx, dy = (xx - cx) / radius, (yy - cy) / radius
  c, sn = np.cos(angle), np.sin(angle)
  u, v = c * dx + sn * dy, -sn * dx + c * dy  # Rotate points by -angle.
  if shape == "circle":
    inside = u * u + v * v <= 0.8 ** 2
  else:
    inside = _inside_polygon(u, v, _polygon(shape))
  return inside.reshape(size, s, size, s).mean(axis=(1, 3))


# --------------------------------------------------------------- rendering --
def render_background(bg: BackgroundSpec, size: int = IMAGE_SIZE) -> np.ndarray:
  """Float RGB background in [0, 255], shape (size, size, 3)."""
  a = np.asarray(bg.rgb_a, np.float64)
  img = np.broadcast_to(a, (size, size, 3)).copy()
  if bg.kind == "gradient":
    coords = np.arange(size) / (size - 1) - 0.5
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    t = np.clip(np.cos(bg.direction) * xx + np.sin(bg.direction) * yy + 0.5, 0, 1)
    img = a + t[..., None] * (np.asarray(bg.rgb_b) - a)
  if bg.noise_std > 0:
    noise = np.random.default_rng(bg.noise_seed).normal(size=(size, size, 3))
    img = img + bg.noise_std * noise
  return img


def object_coverage(spec: SceneSpec, size: int = IMAGE_SIZE) -> np.ndarray:
  """Visible coverage in [0, 1] of each object of a scene, (K, size, size): its own
  anti-aliased coverage times what later-drawn objects leave uncovered (as `render`
  composites them). ``object_coverage(spec) > 0.5`` are the objects' masks."""
  out = np.zeros((len(spec.objects), size, size))
  uncovered = np.ones((size, size))
  for k in reversed(range(len(spec.objects))):
    obj = spec.objects[k]
    cov = shape_coverage(label_shape(obj.label), obj.cx, obj.cy, obj.radius, obj.angle, size)
    out[k] = cov * uncovered
    uncovered = uncovered * (1 - cov)
  return out


def render(spec: SceneSpec, size: int = IMAGE_SIZE) -> np.ndarray:
  """Renders a scene to uint8 RGB (size, size, 3)."""
  img = render_background(spec.background, size)
  for obj in spec.objects:
    cov = shape_coverage(label_shape(obj.label), obj.cx, obj.cy, obj.radius,
                         obj.angle, size)[..., None]
    img = img * (1 - cov) + cov * np.asarray(obj.rgb)
  return np.clip(np.round(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- sampling --
def _sample_background(rng: np.random.Generator) -> BackgroundSpec:
  kind = BACKGROUND_KINDS[rng.integers(len(BACKGROUND_KINDS))]

  def colour():
    if rng.random() < 0.5:  # Grey.
      return tuple(np.full(3, rng.uniform(35, 225)))
    hue = rng.uniform(0, 255, 3)  # Pastel: random colour washed towards a grey.
    base = rng.uniform(150, 245)
    w = rng.uniform(0.15, 0.4)
    return tuple(w * hue + (1 - w) * base)

  rgb_a, rgb_b = colour(), colour()
  noise_std = rng.uniform(6, 22) if kind == "noise" else 0.0
  return BackgroundSpec(kind, rgb_a, rgb_b, float(rng.uniform(0, 2 * np.pi)),
                        float(noise_std), int(rng.integers(2**31)))


def _bg_far_from(bg: BackgroundSpec, rgbs) -> bool:
  means = [np.asarray(bg.rgb_a)]
  if bg.kind == "gradient":
    means.append(np.asarray(bg.rgb_b))
  return all(np.linalg.norm(m - np.asarray(c)) >= _MIN_CONTRAST
             for m in means for c in rgbs)


def _object_rgb(rng: np.random.Generator, label: int) -> tuple[float, ...]:
  base = np.asarray(COLOUR_RGB[label_colour(label)], np.float64)
  rgb = (base * rng.uniform(*COLOUR_JITTER_SCALE)
         + rng.uniform(-COLOUR_JITTER_OFFSET, COLOUR_JITTER_OFFSET, 3))
  return tuple(np.clip(rgb, 0, 255))


def sample_spec(rng: np.random.Generator, labels: Sequence[int]) -> SceneSpec:
  """Samples geometry, colours and background for the given object labels."""
  lo, hi = _SINGLE_RADIUS if len(labels) == 1 else _PAIR_RADIUS
  objects = []
  for label in labels:
    for _ in range(100):  # Rejection sampling of non-overlapping positions.
      radius = rng.uniform(lo, hi)
      m = radius * 0.95
      cx, cy = rng.uniform(m, IMAGE_SIZE - m, 2)
      if all(np.hypot(cx - o.cx, cy - o.cy) > 0.95 * (radius + o.radius)
             for o in objects):
        break
    objects.append(ObjectSpec(int(label), float(cx), float(cy), float(radius),
                              float(rng.uniform(-0.35, 0.35)),
                              _object_rgb(rng, int(label))))
  rgbs = [o.rgb for o in objects]
  while True:
    bg = _sample_background(rng)
    if _bg_far_from(bg, rgbs):
      break
  return SceneSpec(bg, tuple(objects))


def scene_rng(split: str, index: int, seed: int = 0,
              num_objects: int = 1) -> np.random.Generator:
  """The generator of scene ``index`` of a split (disjoint across splits)."""
  return np.random.default_rng([seed, SPLIT_IDS[split], num_objects, index])


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A batch of scenes. labels: (N, 2) int, -1 for "no second object"."""
  images: np.ndarray  # (N, 32, 32, 3) uint8.
  labels: np.ndarray  # (N, 2) int32.
  template_ids: np.ndarray  # (N,) int32 into the single/pair templates.

  def __len__(self) -> int:
    return len(self.images)

  def captions(self) -> list[str]:
    out = []
    for lab, t in zip(self.labels, self.template_ids):
      if lab[1] < 0:
        out.append(caption(lab[:1], SINGLE_TEMPLATES[t]))
      else:
        out.append(caption(lab, PAIR_TEMPLATES[t]))
    return out


def scene_spec(split: str, index: int, num_objects: int = 1,
               seed: int = 0) -> tuple[SceneSpec, int]:
  """(spec, template id) of scene `index` of a split, as `make_dataset` draws it: single
  scene i shows class ``i % NUM_CLASSES``, pair scenes two distinct random classes, and the
  caption template is drawn uniformly."""
  rng = scene_rng(split, index, seed, num_objects)
  if num_objects == 1:
    labels = [index % NUM_CLASSES]
  else:
    labels = rng.choice(NUM_CLASSES, 2, replace=False)
  spec = sample_spec(rng, labels)
  templates = SINGLE_TEMPLATES if num_objects == 1 else PAIR_TEMPLATES
  return spec, int(rng.integers(len(templates)))


def make_dataset(split: str, num_single: int, num_pairs: int = 0,
                 seed: int = 0) -> Dataset:
  """Deterministic dataset: class-balanced singles followed by pairs (`scene_spec`)."""
  images, labels, templates = [], [], []
  for num_objects, count in ((1, num_single), (2, num_pairs)):
    for i in range(count):
      spec, template = scene_spec(split, i, num_objects, seed)
      images.append(render(spec))
      labels.append([o.label for o in spec.objects] + [-1] * (2 - num_objects))
      templates.append(template)
  return Dataset(
      images=np.stack(images) if images else np.zeros((0, 32, 32, 3), np.uint8),
      labels=np.asarray(labels, np.int32).reshape(-1, 2),
      template_ids=np.asarray(templates, np.int32))
