"""World 2's scene oracle: reads an image without a model and judges each fact of a caption.

SAGE (arXiv 2306.00974, sec. 4) counts a failure only when a judge other than the searched
classifiers confirms that the *generator* failed; on an offline world that judge can be
procedural. World 2's scenes are low-chroma backgrounds (`scene.MAX_BACKGROUND_CHROMA`) with
saturated objects whose hues lie >= 17 degrees apart, so the reading is:

1. Objects: pixels with chroma (max - min of RGB) above `CHROMA_MIN`, 8-connected. A blob
   holding two hues (two objects that touch) is split by hue and each part is flagged.
2. Hue: the median hue angle of a blob's most saturated pixels, read as the nearest `scene.HUES`
   entry when within `HUE_TOL` degrees of it (jitter is +-3), else unreadable ("between red and
   crimson").
3. Shape: the blob's mask against every shape of `scene.SHAPES` drawn by the world's renderer
   (`render.coverage`) at the blob's centroid with the radius its area implies, over rotations
   within each shape's symmetry period and a few scales (`fit_shapes`); the best soft IoU is the
   fit, its lead over the best other shape the margin.
4. Texture: the blob's darker pixels (value below `DARK_RATIO` of its bright pixels); "flat"
   when few, "dotted" when they cover a quarter (dots) rather than a half (bands), and a banded
   blob is "striped" or "ring" by which explains the dark map better (R^2, at least
   `PATTERN_R2`): bins along the best direction, or bins of the distance to the centre.

An object is *read* when its hue and shape are (it is not small, not split from another object,
fits a shape well and clearly better than any other); else it is unreadable, with a reason.

Facts (`judge`; a caption's `captions.Facts`): per group an "object" fact (its class is drawn),
a "count" fact (exactly `count` objects of it), a "texture" fact when the caption names one, one
"relation" fact when it states one, and one "extra" fact (nothing else is drawn). Each fact is
``holds``, ``violated`` with a reason ("drawn: crimson circle", "3 drawn, caption says 2",
"red circle is right of blue square") or ``unclear`` with a reason: the oracle says unclear
whenever an unreadable object could change the answer (it could be the missing object, another
instance, ...), as a person would hesitate. A caption's verdict: violated if any fact is,
else unclear if any is, else holds. Thresholds are module constants tuned on the "tune" split;
the agreement on the separate "test" split is in docs/results/world2_oracle.json
(benchmarks/world2_oracle.py).
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import numpy as np
from scipy import ndimage

from jaxdiffattack.errors import UserError
from jaxdiffattack.world2 import captions as captions_lib
from jaxdiffattack.world2 import render
from jaxdiffattack.world2 import scene as scene_lib

CHROMA_MIN = 45.0        # An object pixel's chroma (0-255) exceeds this; backgrounds <= ~40.
HUE_TOL = 7.0            # Degrees from a palette hue within which a blob's hue is read.
SPECK_FRAC = 0.0015      # Blobs under this fraction of the image are ignored (specks).
MIN_AREA_FRAC = 0.004    # Objects under this fraction of the image are too small to read.
MIN_FIT = 0.72           # Soft IoU of the best shape template.
MIN_LEAD = 0.015         # ... and its lead over the best other shape.
DARK_RATIO = 0.8         # Texture: darker than this fraction of the blob's bright value.
FLAT_MAX_DARK = 0.08     # Fraction of dark interior pixels up to which a blob is flat.
DOTTED_MAX_DARK = 0.35   # ... up to which it is dotted (dots cover ~25 %, bands ~50 %).
PATTERN_R2 = 0.55        # Banded: variance of the dark map explained by stripe / ring bins,
PATTERN_LEAD = 0.15      # ... and by this much more for one than for the other.
MIN_TEXTURE_RADIUS = 7.0  # Pixels: a texture is read only on objects at least this big.
RELATION_MARGIN = 0.03   # Fraction of the side by which centroids must differ.

VERDICTS = ("holds", "violated", "unclear")
FACT_KINDS = ("object", "count", "texture", "relation", "extra")
# A caption's reason as the judges store it: "holds", or the kind of its first violated (else
# unclear) fact (`reason_kind`; the full text is in `CaptionAssessment.reason`).
REASON_KINDS = ("holds",) + FACT_KINDS
_ANGLE_STEP = np.deg2rad(7.5)
_PERIOD = {"circle": 0.0, "ring": 0.0, "oval": np.pi, "rectangle": np.pi, "square": np.pi / 2,
           "rounded square": np.pi / 2, "triangle": 2 * np.pi / 3, "star": 2 * np.pi / 5,
           "six-pointed star": np.pi / 3, "cross": np.pi / 2, "orange": 0.9}  # fruit: +-0.45


class ObjectReading(NamedTuple):
  hue: str | None          # palette hue, None when off palette / between two
  shape: str | None        # best shape, None when none fits clearly (or too small)
  label: str | None        # "<hue> <shape>" class name when both are read
  texture: str | None      # TEXTURES entry, None when not read
  centroid: tuple[float, float]  # (x, y), fractions of the side
  area: int                # pixels
  radius: float            # circumradius implied by area and shape, fraction of the side
  hue_angle: float         # degrees
  fit: float               # best soft IoU
  lead: float              # over the best other shape
  mask: np.ndarray         # [S, S] bool
  reason: str              # why unreadable ("" when read)


class SceneReading(NamedTuple):
  """What the oracle reads in one image: every object found."""
  objects: tuple[ObjectReading, ...]  # largest first

  @property
  def labels(self) -> list[str | None]:
    return [o.label for o in self.objects]


class Fact(NamedTuple):
  kind: str                # "object", "count", "texture", "relation", "extra"
  group: int               # group index (-1 for relation / extra)
  text: str                # what is asserted, e.g. "two red circles"
  verdict: str             # VERDICTS entry
  reason: str


class CaptionAssessment(NamedTuple):
  """One image judged against one caption: a verdict per fact, and the caption's verdict.
  (Jobs see it as a `judges.Verdict` through the judge "world2_oracle".)"""
  verdict: str
  reason: str              # of the first violated (else unclear) fact
  facts: tuple[Fact, ...]
  reading: SceneReading


# ------------------------------------------------------------------- pixels --
def _as_pixels(images) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
    raise UserError(f"world2.oracle: images must be [N, S, S, 3] (uint8, or floats in [0, 1]), "
                    f"got shape {images.shape}")
  if images.dtype == np.uint8:
    return images.astype(np.float32)
  if not np.all(np.isfinite(images)):
    raise UserError("world2.oracle: images contain NaN or infinite values; pass floats in "
                    "[0, 1]")
  return np.clip(images.astype(np.float32), 0.0, 1.0) * 255.0


def hue_chroma(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(hue in degrees [0, 360), chroma, value) of RGB pixels [..., 3] in 0-255 (HSV hexcone)."""
  r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
  mx, mn = pixels.max(-1), pixels.min(-1)
  c = mx - mn
  safe = np.maximum(c, 1e-6)
  h = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2,
                                                        (r - g) / safe + 4))
  return (h * 60.0) % 360.0, c, mx


_PALETTE_HUES = np.asarray([scene_lib.HUES[h][0] for h in scene_lib.HUE_NAMES])


def _hue_distance(h: np.ndarray) -> np.ndarray:
  """Circular distance [..., 8] from hues [...] to each palette hue."""
  d = np.abs(np.asarray(h)[..., None] - _PALETTE_HUES) % 360.0
  return np.minimum(d, 360.0 - d)


def _circular_median(h: np.ndarray) -> float:
  """Median of hue angles (degrees), taken around their circular mean."""
  a = np.deg2rad(h)
  mean = np.arctan2(np.sin(a).mean(), np.cos(a).mean())
  d = (np.rad2deg(a - mean) + 180.0) % 360.0 - 180.0
  return float((np.rad2deg(mean) + np.median(d)) % 360.0)


# ------------------------------------------------------------------- shapes --
class _Template(NamedTuple):
  area: float              # at circumradius 1
  offset: np.ndarray       # [2] centroid (u, v) at circumradius 1, angle 0
  angles: np.ndarray       # [A] rotations searched


@functools.cache
def _templates() -> dict[str, _Template]:
  t = (np.arange(800) + 0.5) / 400 - 1.0
  u, v = np.meshgrid(t, t)
  out = {}
  for shape in scene_lib.SHAPES:
    m = render.inside(shape, u, v)
    area = m.mean() * 4.0
    offset = np.array([u[m].mean(), v[m].mean()])
    period = _PERIOD[shape]
    if shape == scene_lib.FRUIT:
      angles = np.arange(-0.45, 0.4501, _ANGLE_STEP)
    elif period == 0:
      angles = np.zeros(1)
    else:
      steps = max(1, int(round(period / _ANGLE_STEP)))
      angles = np.arange(steps) * (period / steps)
    out[shape] = _Template(area, offset, angles)
  return out


def _template_coverage(shape, centroid, radius, angles, size, window):
  """Soft coverage [K, h, w] of `shape` over pixel window (y0, y1, x0, x1) for K rotations,
  placed so that the shape's centroid lands on `centroid` (pixels)."""
  t = _templates()[shape]
  y0, y1, x0, x1 = window
  s = 2
  xs = (np.arange(x0 * s, x1 * s) + 0.5) / s
  ys = (np.arange(y0 * s, y1 * s) + 0.5) / s
  angles, radius = np.asarray(angles)[:, None, None], np.asarray(radius)[:, None, None]
  c, sn = np.cos(angles), np.sin(angles)
  ou, ov = t.offset[0] * radius, t.offset[1] * radius
  cx = centroid[0] - (c * ou - sn * ov)  # [K, 1, 1]
  cy = centroid[1] - (sn * ou + c * ov)
  dx, dy = (xs[None, None, :] - cx) / radius, (ys[None, :, None] - cy) / radius
  m = render.inside(shape, c * dx + sn * dy, -sn * dx + c * dy)  # [K, h*s, w*s]
  return m.reshape(len(m), y1 - y0, s, x1 - x0, s).mean(axis=(2, 4))


def _soft_iou(mask: np.ndarray, cov: np.ndarray) -> np.ndarray:
  inter = np.minimum(cov, mask[None]).sum((1, 2))
  union = mask.sum() + cov.sum((1, 2)) - inter
  return inter / np.maximum(union, 1e-6)


def soft_mask(chroma: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """A blob's coverage [S, S] in [0, 1]: 1 inside (the eroded mask, textures included), and at
  its edge the pixel's chroma above the local background's as a fraction of the object's
  next to it."""
  interior = ndimage.binary_erosion(mask)
  edge = ndimage.binary_dilation(mask, iterations=1)
  around = ndimage.binary_dilation(mask, iterations=3) & ~edge
  bg = float(np.median(chroma[around])) if around.any() else 0.0
  core = chroma[interior] if interior.any() else chroma[mask]
  # The object's chroma next to each edge pixel: its brightest interior neighbour's (a texture's
  # dark band reaching the edge has a lower chroma), else the blob's typical chroma.
  local = ndimage.maximum_filter(np.where(interior, chroma, 0.0), size=3)
  ref = np.where(local > 0, local, float(np.percentile(core, 75)))
  alpha = np.clip((chroma - bg) / np.maximum(ref - bg, 1.0), 0.0, 1.0)
  return np.where(interior, 1.0, np.where(edge, alpha, 0.0))


def fit_shapes(mask: np.ndarray, soft: np.ndarray | None = None
               ) -> tuple[dict[str, float], dict[str, float], dict[str, float], dict]:
  """Best soft IoU, rotation, radius (pixels) and centre ((x, y) pixels) of every shape for a
  blob mask [S, S] (its coverage `soft` [S, S] when given, else the mask itself)."""
  size = mask.shape[0]
  if soft is None or not (soft > 0).any():  # No coverage above the background (a faint blob
    soft = mask.astype(np.float32)          # of a generated image): fit the mask itself.
  ys, xs = np.nonzero(soft > 0)
  w = soft[ys, xs]
  area = float(w.sum())
  centroid = np.array([(w * (xs + 0.5)).sum() / area, (w * (ys + 0.5)).sum() / area])
  pad = 3 + int(0.15 * np.sqrt(area))
  window = (max(ys.min() - pad, 0), min(ys.max() + pad + 1, size),
            max(xs.min() - pad, 0), min(xs.max() + pad + 1, size))
  sub = soft[window[0]:window[1], window[2]:window[3]].astype(np.float32)
  ious, best_angle, best_radius, best_centre = {}, {}, {}, {}
  for shape, t in _templates().items():
    r0 = np.sqrt(area / t.area)
    iou = _soft_iou(sub, _template_coverage(shape, centroid, np.full(len(t.angles), r0),
                                            t.angles, size, window))
    a0 = t.angles[int(iou.argmax())]
    step = _ANGLE_STEP / 3 if len(t.angles) > 1 else 0.0
    da, ds = np.meshgrid([-step, 0.0, step], [0.94, 1.0, 1.06], indexing="ij")
    angles, radii = a0 + da.ravel(), r0 * ds.ravel()
    iou2 = _soft_iou(sub, _template_coverage(shape, centroid, radii, angles, size, window))
    k = int(iou2.argmax())
    ious[shape], best_angle[shape], best_radius[shape] = float(iou2[k]), float(angles[k]), float(
        radii[k])
    c, sn = np.cos(angles[k]), np.sin(angles[k])
    ou, ov = t.offset * radii[k]
    best_centre[shape] = (float(centroid[0] - (c * ou - sn * ov)),
                          float(centroid[1] - (sn * ou + c * ov)))
  return ious, best_angle, best_radius, best_centre


# ------------------------------------------------------------------ texture --
def _binned_r2(coord: np.ndarray, dark: np.ndarray, width: float = 0.5) -> float:
  """Variance of `dark` (0/1) explained by its means in bins of `coord` of the given width."""
  if dark.var() == 0:
    return 0.0
  bins = np.floor(coord / width).astype(np.int64)
  bins -= bins.min()
  n = np.bincount(bins)
  s = np.bincount(bins, dark)
  means = s[bins] / n[bins]
  return float(1.0 - ((dark - means) ** 2).sum() / ((dark - dark.mean()) ** 2).sum())


def read_texture(pixels: np.ndarray, mask: np.ndarray, radius_px: float,
                 centre: tuple[float, float] | None = None) -> str | None:
  """Texture of an object (mask [S, S]) in pixels [S, S, 3], or None when too small or
  ambiguous. `centre`: the fitted shape's centre (x, y) in pixels (rings are centred there),
  default the centroid of the mask."""
  inner = ndimage.binary_erosion(mask)
  if inner.sum() < 6:
    return None
  value = pixels[inner].max(-1)
  bright = np.percentile(value, 90)
  dark = (value < DARK_RATIO * bright).astype(np.float64)
  if dark.mean() <= FLAT_MAX_DARK:
    return "flat"  # Readable at any size: no pattern.
  if radius_px < MIN_TEXTURE_RADIUS:
    return None  # A pattern, but too small to tell which.
  if dark.mean() <= DOTTED_MAX_DARK:
    return "dotted"
  ys, xs = np.nonzero(inner)
  xs, ys = xs + 0.5, ys + 0.5
  cx, cy = (xs.mean(), ys.mean()) if centre is None else centre
  ring = _binned_r2(np.hypot(xs - cx, ys - cy), dark)
  stripe = max(_binned_r2(np.cos(a) * xs + np.sin(a) * ys, dark)
               for a in np.arange(0, np.pi, _ANGLE_STEP))
  if max(ring, stripe) >= PATTERN_R2 and abs(ring - stripe) >= PATTERN_LEAD:
    return "ring" if ring > stripe else "striped"
  return None


# ------------------------------------------------------------------ reading --
def _read_one(pixels: np.ndarray) -> SceneReading:
  size = pixels.shape[0]
  hue, chroma, _ = hue_chroma(pixels)
  candidate = chroma > CHROMA_MIN
  ids, count = ndimage.label(candidate, np.ones((3, 3), bool))
  blobs = []  # (mask, touching)
  for i in range(1, count + 1):
    m = ids == i
    if m.sum() < SPECK_FRAC * size * size:
      continue
    near = _hue_distance(hue[m]).argmin(-1)
    share = np.bincount(near, minlength=len(_PALETTE_HUES)) / len(near)
    top = np.argsort(-share)
    if share[top[1]] >= 0.2 and _hue_distance(_PALETTE_HUES[top[0]])[top[1]] > 12:
      nearest = np.full(m.shape, -1)
      nearest[m] = near
      for k in top[:2]:
        sub_ids, n_sub = ndimage.label(nearest == k, np.ones((3, 3), bool))
        for j in range(1, n_sub + 1):
          sm = sub_ids == j
          if sm.sum() >= SPECK_FRAC * size * size:
            blobs.append((sm, True))
    else:
      blobs.append((m, False))
  objects = []
  for m, touching in blobs:
    area = int(m.sum())
    sat = m & (chroma >= np.percentile(chroma[m], 50))
    h = _circular_median(hue[sat])
    d = _hue_distance(np.asarray(h))
    k = int(d.argmin())
    hue_name = scene_lib.HUE_NAMES[k] if d[k] <= HUE_TOL else None
    ys, xs = np.nonzero(m)
    centroid = ((xs.mean() + 0.5) / size, (ys.mean() + 0.5) / size)
    reason = ""
    shape = texture = None
    fit = lead = 0.0
    radius = np.sqrt(area / np.pi) / size
    if area < MIN_AREA_FRAC * size * size:
      reason = f"small object ({area} px)"
    else:
      ious, _, radii, centres = fit_shapes(m, soft_mask(chroma, m))
      ranked = sorted(ious, key=ious.get, reverse=True)
      best = ranked[0]
      fit, lead = ious[best], ious[best] - ious[ranked[1]]
      radius = radii[best] / size
      if touching:
        reason = "touches an object of another hue"
      elif fit < MIN_FIT:
        reason = f"no shape fits (best IoU {fit:.2f}, {best})"
      elif lead < MIN_LEAD:
        reason = f"shape ambiguous ({best} or {ranked[1]}, IoU lead {lead:.3f})"
      else:
        shape = best
        texture = read_texture(pixels, m, radii[best], centres[best])
    if not reason and hue_name is None:
      n1, n2 = np.argsort(d)[:2]
      reason = (f"hue {h:.0f} between {scene_lib.HUE_NAMES[n1]} and "
                f"{scene_lib.HUE_NAMES[n2]}")
    label = None
    if not reason:
      name = f"{hue_name} {shape}"
      if name in scene_lib.CLASS2ID:
        label = name
      else:
        reason = f"no such class ({name})"
    objects.append(ObjectReading(hue_name, shape, label, texture, centroid, area, float(radius),
                                 h, float(fit), float(lead), m, reason))
  objects.sort(key=lambda o: -o.area)
  return SceneReading(tuple(objects))


def read(images) -> list[SceneReading]:
  """The oracle's reading of images [N, S, S, 3] (uint8, or floats in [0, 1])."""
  return [_read_one(p) for p in _as_pixels(images)]


# -------------------------------------------------------------------- facts --
def _group_text(g: captions_lib.GroupFacts) -> str:
  name = scene_lib.CLASSES[g.cls]
  return f"two {name}s" if g.count == 2 else f"a {name}"


def judge_reading(reading: SceneReading, facts: captions_lib.Facts) -> CaptionAssessment:
  """Each fact of a caption against a reading (see the module docstring)."""
  objs = reading.objects
  unread = [o for o in objs if not o.label]
  out = []
  found = []
  for gi, g in enumerate(facts.groups):
    name = scene_lib.CLASSES[g.cls]
    mine = [o for o in objs if o.label == name]
    found.append(mine)
    text = _group_text(g)
    others = sorted({o.label for o in objs if o.label and o.label != name})
    if mine:
      out.append(Fact("object", gi, text, "holds", ""))
    elif unread:
      out.append(Fact("object", gi, text, "unclear", f"no {name} read; unreadable: "
                      f"{unread[0].reason}"))
    else:
      out.append(Fact("object", gi, text, "violated",
                      f"no {name}; drawn: {', '.join(others) or 'nothing'}"))
    if len(mine) > g.count:
      out.append(Fact("count", gi, text, "violated",
                      f"{len(mine)} {name} drawn, caption says {g.count}"))
    elif len(mine) == g.count:
      out.append(Fact("count", gi, text, "unclear" if unread else "holds",
                      f"an unreadable object could be another: {unread[0].reason}"
                      if unread else ""))
    elif len(mine) + len(unread) >= g.count:
      out.append(Fact("count", gi, text, "unclear",
                      f"{len(mine)} {name} read, {len(unread)} unreadable"))
    else:
      out.append(Fact("count", gi, text, "violated",
                      f"{len(mine)} {name} drawn, caption says {g.count}"))
    if g.texture is not None:
      textures = [o.texture for o in mine]
      if not mine or None in textures:
        out.append(Fact("texture", gi, f"{text}, {g.texture}", "unclear",
                        "object not read" if not mine else "texture not readable"))
      elif all(t == g.texture for t in textures):
        out.append(Fact("texture", gi, f"{text}, {g.texture}", "holds", ""))
      else:
        out.append(Fact("texture", gi, f"{text}, {g.texture}", "violated",
                        f"texture read: {', '.join(sorted(set(textures)))}"))
  if facts.relation is not None:
    a, b = found[0], found[1]
    text = (f"{_group_text(facts.groups[0])} {facts.relation} "
            f"{_group_text(facts.groups[1])}")
    axis = 0 if facts.relation == "left" else 1
    if not a or not b:
      out.append(Fact("relation", -1, text, "unclear", "an object of the relation is not read"))
    else:
      d = np.asarray([[q.centroid[axis] - p.centroid[axis] for q in b] for p in a])
      word = {0: ("left of", "right of"), 1: ("above", "below")}[axis]
      if (d >= RELATION_MARGIN).all():
        out.append(Fact("relation", -1, text, "holds", ""))
      elif (d <= -RELATION_MARGIN).any():
        out.append(Fact("relation", -1, text, "violated",
                        f"{scene_lib.CLASSES[facts.groups[0].cls]} is {word[1]} "
                        f"{scene_lib.CLASSES[facts.groups[1].cls]}"))
      else:
        out.append(Fact("relation", -1, text, "unclear", "centroids too close along the axis"))
  named = {scene_lib.CLASSES[g.cls] for g in facts.groups}
  extra = sorted({o.label for o in objs if o.label and o.label not in named})
  if extra:
    out.append(Fact("extra", -1, "nothing else", "violated", f"also drawn: {', '.join(extra)}"))
  elif unread:
    out.append(Fact("extra", -1, "nothing else", "unclear", f"unreadable: {unread[0].reason}"))
  else:
    out.append(Fact("extra", -1, "nothing else", "holds", ""))
  for v in ("violated", "unclear"):
    bad = [f for f in out if f.verdict == v]
    if bad:
      return CaptionAssessment(v, f"{bad[0].kind}: {bad[0].reason}", tuple(out), reading)
  return CaptionAssessment("holds", "", tuple(out), reading)


def judge(images, captions: Sequence[str | captions_lib.Facts]) -> list[CaptionAssessment]:
  """Verdicts of images [N, S, S, 3] against captions (grammar texts or `captions.Facts`)."""
  pixels = _as_pixels(images)
  if len(captions) != len(pixels):
    raise UserError(f"world2.oracle.judge: {len(pixels)} images but {len(captions)} captions; "
                    "pass one caption per image")
  facts = [c if isinstance(c, captions_lib.Facts) else captions_lib.parse(c) for c in captions]
  return [judge_reading(_read_one(p), f) for p, f in zip(pixels, facts)]


def first_object(assessment: CaptionAssessment) -> str | None:
  """The class read for the caption's first object: its own class when drawn, else the
  largest read object's class (what is drawn instead), None when no object is read."""
  first = next(f for f in assessment.facts if f.kind == "object" and f.group == 0)
  if first.verdict == "holds":  # its text is _group_text's "a <class>" or "two <class>s"
    return (first.text[4:-1] if first.text.startswith("two ") else first.text[2:])
  labels = [label for label in assessment.reading.labels if label]
  return labels[0] if labels else None


def reason_kind(reason: str) -> str:
  """A caption's reason text ("object: no red circle; drawn: ...", or "holds") → its entry of
  REASON_KINDS."""
  kind = reason.split(":", 1)[0] if reason else "holds"
  if kind not in REASON_KINDS:
    raise ValueError(f"world2.oracle: reason {reason!r} has no kind of {REASON_KINDS}")
  return kind


def describe_reason(kind: str, pred: str | None, label: str) -> str:
  """The text a stored verdict shows (the judges keep the reason's kind, the class read for the
  caption's first object and the label, not the whole text)."""
  if kind == "holds":
    return kind
  read = f"read {pred}" if pred else "no object read"
  return f"{kind} fact ({read}; made for {label})"


def verdict(images, captions) -> list[dict]:
  """The record a job stores per image: {"verdict", "reason", "failure", "unclear", "pred",
  "facts": [{"kind", "group", "text", "verdict", "reason"}]}; "pred" is the read objects'
  labels (None for unreadable)."""
  return [{"verdict": v.verdict, "reason": v.reason, "failure": v.verdict == "violated",
           "unclear": v.verdict == "unclear", "pred": v.reading.labels,
           "facts": [f._asdict() for f in v.facts]} for v in judge(images, captions)]
