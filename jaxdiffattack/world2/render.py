"""World 2's renderer: a `scene.SceneSpec` to uint8 RGB pixels at any resolution, in NumPy.

Shapes are point sets in object coordinates (circumradius 1, y down; `inside`), drawn with
`supersample`² samples per pixel for anti-aliased coverage; an object rotated by ``angle`` at
(cx, cy) covers the pixels whose centres, rotated back by -angle and scaled by 1 / radius, fall
inside. Textures darken part of an object to `scene.TEXTURE_DARK` of its colour: "striped"
(bands across the object's rotated x axis), "ring" (concentric bands around its centre),
"dotted" (a square grid of dots); all in object coordinates, so they rotate and scale with it.
Objects are composited in order over the background; nothing random happens here (a
background's noise and stars come from its own seed), so a spec renders bit-identically.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from jaxdiffattack.errors import UserError
from jaxdiffattack.world2 import scene as scene_lib

SUPERSAMPLE = 3
TEXTURE_PERIOD = 0.42    # Stripe and ring period, in circumradii.
DOT_PERIOD = 0.5         # Dot grid spacing, in circumradii.
DOT_RADIUS = 0.14
STAR_DENSITY = 0.012     # Stars per pixel of a star-field background (at any resolution).


def _regular_star(points: int, inner: float) -> np.ndarray:
  a = -np.pi / 2 + np.arange(2 * points) * np.pi / points
  r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
  return np.stack([r * np.cos(a), r * np.sin(a)], -1)


def _regular(n: int, start: float = -np.pi / 2) -> np.ndarray:
  a = start + np.arange(n) * 2 * np.pi / n
  return np.stack([np.cos(a), np.sin(a)], -1)


_W = 0.32  # Cross arm half-width.
POLYGONS = {
    "triangle": _regular(3) * 1.0 + np.array([0.0, 0.15]),
    "star": _regular_star(5, 0.42),
    "six-pointed star": _regular_star(6, 0.56),
    "cross": np.array([(-_W, -0.95), (_W, -0.95), (_W, -_W), (0.95, -_W), (0.95, _W), (_W, _W),
                       (_W, 0.95), (-_W, 0.95), (-_W, _W), (-0.95, _W), (-0.95, -_W),
                       (-_W, -_W)]),
}


def _inside_polygon(u: np.ndarray, v: np.ndarray, poly: np.ndarray) -> np.ndarray:
  """Even-odd point-in-polygon test, vectorised over points of any shape."""
  inside = np.zeros(np.broadcast_shapes(u.shape, v.shape), bool)
  for i in range(len(poly)):
    x0, y0 = poly[i]
    x1, y1 = poly[(i + 1) % len(poly)]
    crosses = (y0 > v) != (y1 > v)
    with np.errstate(divide="ignore", invalid="ignore"):
      xint = x0 + (v - y0) * (x1 - x0) / (y1 - y0)
    inside ^= crosses & (u < xint)
  return inside


def inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Whether points (u, v) in object coordinates (circumradius 1, y down) are in `shape`."""
  if shape == "circle":
    return u * u + v * v <= 0.82 ** 2
  if shape == "oval":
    return (u / 0.95) ** 2 + (v / 0.55) ** 2 <= 1.0
  if shape == "ring":
    r2 = u * u + v * v
    return (r2 <= 0.9 ** 2) & (r2 >= 0.55 ** 2)
  if shape == "square":
    return (np.abs(u) <= 0.68) & (np.abs(v) <= 0.68)
  if shape == "rectangle":
    return (np.abs(u) <= 0.92) & (np.abs(v) <= 0.42)
  if shape == "rounded square":
    h, c = 0.72, 0.42  # Half side and corner radius.
    du, dv = np.maximum(np.abs(u) - (h - c), 0.0), np.maximum(np.abs(v) - (h - c), 0.0)
    return (np.abs(u) <= h) & (np.abs(v) <= h) & (du * du + dv * dv <= c * c)
  if shape == scene_lib.FRUIT:  # A round fruit with a leaf at its top right.
    body = u * u + (v - 0.12) ** 2 <= 0.76 ** 2
    lu, lv = u - 0.3, v + 0.72
    ca, sa = np.cos(0.5), np.sin(0.5)
    pu, pv = ca * lu + sa * lv, -sa * lu + ca * lv
    leaf = (pu / 0.36) ** 2 + (pv / 0.16) ** 2 <= 1.0
    stem = (np.abs(u) <= 0.06) & (v >= -0.85) & (v <= -0.55)
    return body | leaf | stem
  if shape in POLYGONS:
    return _inside_polygon(u, v, POLYGONS[shape])
  raise UserError(f"world2.render: unknown shape {shape!r}; shapes are scene.SHAPES")


def texture_dark(texture: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Where a texture darkens an object, in object coordinates."""
  if texture == "flat":
    return np.zeros(np.broadcast_shapes(u.shape, v.shape), bool)
  if texture == "striped":
    return np.mod(u / TEXTURE_PERIOD + 0.25, 1.0) < 0.5
  if texture == "ring":
    return np.mod(np.sqrt(u * u + v * v) / TEXTURE_PERIOD + 0.25, 1.0) < 0.5
  if texture == "dotted":
    gu = u / DOT_PERIOD - np.round(u / DOT_PERIOD)
    gv = v / DOT_PERIOD - np.round(v / DOT_PERIOD)
    return (gu * gu + gv * gv) * DOT_PERIOD ** 2 <= DOT_RADIUS ** 2
  raise UserError(f"world2.render: unknown texture {texture!r}; textures are scene.TEXTURES")


@functools.lru_cache(maxsize=8)
def _samples(size: int, supersample: int) -> np.ndarray:
  """Sample coordinates (fractions of the side) of a size x size image, [size * s]."""
  return (np.arange(size * supersample) + 0.5) / (size * supersample)


def object_uv(cx, cy, radius, angle, size: int, supersample: int = SUPERSAMPLE):
  """Object coordinates (u, v) of every sample point [size*s, size*s] of one object."""
  t = _samples(size, supersample)
  dx, dy = (t[None, :] - cx) / radius, (t[:, None] - cy) / radius
  c, s = np.cos(angle), np.sin(angle)
  return c * dx + s * dy, -s * dx + c * dy


def _pool(x: np.ndarray, size: int, s: int) -> np.ndarray:
  return x.reshape(size, s, size, s, *x.shape[2:]).mean(axis=(1, 3))


def coverage(shape: str, cx: float, cy: float, radius: float, angle: float, size: int,
             supersample: int = SUPERSAMPLE) -> np.ndarray:
  """Anti-aliased coverage in [0, 1] of one shape, [size, size]."""
  u, v = object_uv(cx, cy, radius, angle, size, supersample)
  return _pool(inside(shape, u, v).astype(np.float32), size, supersample)


def render_background(bg: scene_lib.BackgroundSpec, size: int) -> np.ndarray:
  """Float RGB [size, size, 3] in 0-255."""
  a, b = np.asarray(bg.rgb_a), np.asarray(bg.rgb_b)
  t = (np.arange(size) + 0.5) / size
  xx, yy = t[None, :], t[:, None]
  proj = np.cos(bg.angle) * (xx - 0.5) + np.sin(bg.angle) * (yy - 0.5)
  img = np.broadcast_to(a, (size, size, 3)).astype(np.float64)
  rng = np.random.default_rng(bg.seed)
  if bg.kind == "gradient":
    w = np.clip(proj / 0.7072 * 0.5 + 0.5, 0, 1)[..., None]
    img = a + w * (b - a)
  elif bg.kind == "stripes":
    s = SUPERSAMPLE
    ts = _samples(size, s)
    projs = np.cos(bg.angle) * (ts[None, :] - 0.5) + np.sin(bg.angle) * (ts[:, None] - 0.5)
    w = _pool((np.mod(projs / bg.period, 1.0) < 0.5).astype(np.float64), size, s)[..., None]
    img = a + w * (b - a)
  elif bg.kind == "noise":
    img = img + bg.noise_std * rng.normal(size=(size, size, 1)) + 3.0 * rng.normal(
        size=(size, size, 3))
  elif bg.kind == "star field":
    n = rng.poisson(STAR_DENSITY * size * size)
    ys, xs = rng.integers(0, size, n), rng.integers(0, size, n)
    bright = rng.uniform(0.5, 1.0, n)[:, None]
    img = img.copy()
    img[ys, xs] = a + bright * (b - a)
  return img


def render(spec: scene_lib.SceneSpec, size: int = 64,
           supersample: int = SUPERSAMPLE) -> np.ndarray:
  """uint8 RGB [size, size, 3] of a scene."""
  if not isinstance(size, (int, np.integer)) or size < 8:
    raise UserError(f"world2.render: size={size!r} is invalid: an image side of >= 8 pixels")
  img = render_background(spec.background, size)
  s = supersample
  for obj in spec.objects:
    u, v = object_uv(obj.cx, obj.cy, obj.radius, obj.angle, size, s)
    shape = scene_lib.class_shape(obj.cls)
    cov = inside(shape, u, v)
    dark = cov & texture_dark(obj.texture, u, v)
    rgb = np.asarray(obj.rgb)
    # Per sample: the object's colour (darkened where the texture says), pooled per pixel.
    samples = cov[..., None] * np.where(dark[..., None], rgb * scene_lib.TEXTURE_DARK, rgb)
    covered = _pool(cov.astype(np.float64), size, s)[..., None]
    img = img * (1 - covered) + _pool(samples, size, s)
  return np.clip(np.round(img), 0, 255).astype(np.uint8)


def render_batch(specs: Sequence[scene_lib.SceneSpec], size: int) -> np.ndarray:
  """uint8 [N, size, size, 3] (see `render`)."""
  return np.stack([render(s, size) for s in specs]) if specs else np.zeros(
      (0, size, size, 3), np.uint8)


def object_masks(spec: scene_lib.SceneSpec, size: int) -> np.ndarray:
  """Visible coverage [K, size, size] of each object after compositing (later objects on
  top); ``> 0.5`` gives the objects' pixel masks."""
  out = np.zeros((len(spec.objects), size, size))
  uncovered = np.ones((size, size))
  for k in reversed(range(len(spec.objects))):
    o = spec.objects[k]
    cov = coverage(scene_lib.class_shape(o.cls), o.cx, o.cy, o.radius, o.angle, size)
    out[k] = cov * uncovered
    uncovered = uncovered * (1 - cov)
  return out
