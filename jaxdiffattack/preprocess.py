"""Differentiable image preprocessing in JAX, matching the transformers image processors.

From images [P, H, W, 3] in [0, 1] to a model's input [P, h, w, 3]: resize, centre crop, scale,
normalise with the model's own mean/std — as `CLIPImageProcessor`, `ViTImageProcessor` and
`ConvNextImageProcessor` (ResNet checkpoints; `crop_pct`) do, read from a checkpoint's
`preprocessor_config.json` through `spec_from_processor`.

Resizing reimplements Pillow's `Image.resize` (which those processors call): a separable
convolution, horizontal pass then vertical pass, with Pillow's filters (bicubic a = −0.5,
bilinear, Lanczos-3, box, Hamming) stretched by the scale factor when downsampling (antialiasing)
and renormalised at the borders (Pillow `libImaging/Resample.c`, `precompute_coeffs`). Each pass is
a matrix product with a [out, in] weight matrix computed in NumPy at trace time, so the whole
pipeline is differentiable and jit/vmap-able.

What differs from the processors is only 8-bit arithmetic: they resize uint8 PIL images, and
Pillow computes each pass in fixed point (22-bit coefficients) and rounds and clips to uint8 after
each. Here every pass clips to [0, 1] like Pillow; `quantize=True` also rounds the input to the
1/255 grid and runs each pass in Pillow's exact integer arithmetic (int32), so its forward value
*equals* the processors', while gradients flow through the float pass (straight-through).
Measured against the processors on uint8 inputs (tests/preprocess_test.py):
  * quantize=True: identical (up to float32 normalisation, ~1e-6), smooth and random images;
  * quantize=False: |difference| < 1.1/255 in [0, 1] pixel units (asserted: 1.5/255), mean
    ~0.3/255, on smooth and uniformly random images alike — the rounding of two passes. In
    normalised units divide by std (CLIP: ×3.8; mean/std 0.5: ×2).
For comparison, `jax.image.resize(..., "cubic", antialias=True)` uses the same kernel (Keys
a = −0.5) and border renormalisation, so it equals this resize without the clipping (the test
checks the weights against it to 1e-6); against Pillow it is as close on smooth images (< 1/255)
but not on random ones (max 28/255 at 16 → 24 px, 3.4/255 at 512 → 224 px): Pillow clips the cubic
overshoot after each pass.
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack.errors import UserError

# Pillow's resampling filters: (support at scale 1, kernel).


def _bicubic(x, a=-0.5):
  x = np.abs(x)
  return np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
                  np.where(x < 2.0, (((x - 5.0) * x + 8.0) * x - 4.0) * a, 0.0))


def _bilinear(x):
  return np.maximum(1.0 - np.abs(x), 0.0)


def _box(x):
  return np.where((x > -0.5) & (x <= 0.5), 1.0, 0.0)


def _hamming(x):
  x = np.abs(x)
  px = np.pi * x
  with np.errstate(invalid="ignore", divide="ignore"):  # Pillow's constants are C floats
    value = np.sin(px) / px * (float(np.float32(0.54)) + float(np.float32(0.46)) * np.cos(px))
  return np.where(x == 0.0, 1.0, np.where(x >= 1.0, 0.0, value))


def _lanczos(x):
  return np.where((x >= -3.0) & (x < 3.0), np.sinc(x) * np.sinc(x / 3.0), 0.0)


FILTERS = {"bicubic": (2.0, _bicubic), "bilinear": (1.0, _bilinear), "lanczos": (3.0, _lanczos),
           "box": (0.5, _box), "hamming": (1.0, _hamming)}
# PIL.Image.Resampling codes, as stored in preprocessor_config.json ("resample": 3).
PIL_RESAMPLE = {1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit images


def resize_weights(in_size: int, out_size: int, method: str = "bicubic") -> np.ndarray:
  """[out_size, in_size] float64 weights of one Pillow resampling pass along one axis."""
  if method not in FILTERS:
    raise UserError(f"resample method {method!r} is not supported; use one of {sorted(FILTERS)}")
  support, kernel = FILTERS[method]
  scale = in_size / out_size
  filter_scale = max(scale, 1.0)
  support *= filter_scale
  weights = np.zeros((out_size, in_size), np.float64)
  for out in range(out_size):
    center = (out + 0.5) * scale
    lo = max(int(center - support + 0.5), 0)   # C's (int) truncation, then clamp, as Pillow
    hi = min(int(center + support + 0.5), in_size)
    taps = kernel((np.arange(lo, hi) - center + 0.5) * (1.0 / filter_scale))
    total = taps.sum()
    weights[out, lo:hi] = taps / total if total != 0.0 else taps
  return weights


def fixed_point_weights(weights: np.ndarray) -> np.ndarray:
  """Pillow's 8-bit coefficients: weights × 2^22 rounded half away from zero, as int32."""
  scaled = weights * (1 << PRECISION_BITS)
  return np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5)).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
  """What a transformers image processor does, as static data.

  resize: "shortest_edge" (the shorter side becomes size[0], the other int(size·long/short)),
    "exact" (to size = (h, w)) or "none".
  crop: centre-crop (h, w) after resizing (zero padding where the image is smaller), or None.
  scale: factor from [0, 1] images to the model's pixel range before normalising
    (255 × rescale_factor; 1.0 for the usual rescale_factor 1/255).
  """
  resize: str = "none"
  size: tuple[int, ...] = ()
  crop: tuple[int, int] | None = None
  resample: str = "bicubic"
  scale: float = 1.0
  mean: tuple[float, ...] = (0.0, 0.0, 0.0)
  std: tuple[float, ...] = (1.0, 1.0, 1.0)

  def resized_shape(self, height: int, width: int) -> tuple[int, int]:
    if self.resize == "none":
      return height, width
    if self.resize == "exact":
      return self.size[0], self.size[1]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = self.size[0], int(self.size[0] * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)

  def output_shape(self, height: int, width: int) -> tuple[int, int]:
    return self.crop if self.crop is not None else self.resized_shape(height, width)


def _size_dict(value) -> dict:
  if isinstance(value, dict):
    return dict(value)
  if dataclasses.is_dataclass(value):   # transformers 5's SizeDict
    return {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
  if isinstance(value, int):
    return {"height": value, "width": value}
  if isinstance(value, (tuple, list)) and len(value) == 2:
    return {"height": value[0], "width": value[1]}
  raise UserError(f"image processor size {value!r} is not understood")


def spec_from_processor(processor: Any) -> PreprocessSpec:
  """The `PreprocessSpec` of a (slow) transformers image processor instance.

  Supports processors configured by `size` {"shortest_edge"} or {"height", "width"}, an optional
  centre crop (`do_center_crop`, `crop_size`) and ConvNeXt's `crop_pct` rule (shortest edge
  < 384: resize the shorter side to int(edge / crop_pct), crop edge × edge; else warp to
  edge × edge), with any Pillow filter but nearest.
  """
  name = type(processor).__name__
  resize, size = "none", ()
  crop = None
  if getattr(processor, "do_resize", False):
    size_dict = _size_dict(processor.size)
    crop_pct = getattr(processor, "crop_pct", None)
    if "shortest_edge" in size_dict and crop_pct is not None and name.startswith("ConvNext"):
      edge = int(size_dict["shortest_edge"])
      if edge < 384:
        resize, size, crop = "shortest_edge", (int(edge / crop_pct),), (edge, edge)
      else:
        resize, size = "exact", (edge, edge)
    elif "shortest_edge" in size_dict and set(size_dict) <= {"shortest_edge"}:
      resize, size = "shortest_edge", (int(size_dict["shortest_edge"]),)
    elif set(size_dict) == {"height", "width"}:
      resize, size = "exact", (int(size_dict["height"]), int(size_dict["width"]))
    else:
      raise UserError(f"{name}: size {size_dict} is not supported (use shortest_edge or "
                      "height/width)")
  if getattr(processor, "do_center_crop", False) and crop is None:
    crop_dict = _size_dict(processor.crop_size)
    crop = (int(crop_dict["height"]), int(crop_dict["width"]))
  resample_code = int(getattr(processor, "resample", 3))
  if resize != "none" and resample_code not in PIL_RESAMPLE:
    raise UserError(f"{name}: resample={resample_code} (PIL nearest) is not supported; "
                    f"supported: {PIL_RESAMPLE}")
  do_rescale = getattr(processor, "do_rescale", True)
  scale = 255.0 * float(processor.rescale_factor) if do_rescale else 255.0
  mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
  if getattr(processor, "do_normalize", False):
    broadcast = lambda v: tuple(float(x) for x in (v if isinstance(v, (list, tuple)) else [v] * 3))
    mean, std = broadcast(processor.image_mean), broadcast(processor.image_std)
  return PreprocessSpec(resize=resize, size=size, crop=crop,
                        resample=PIL_RESAMPLE.get(resample_code, "bicubic"), scale=scale,
                        mean=mean, std=std)


def quantize_uint8(x: jax.Array) -> jax.Array:
  """Rounds [0, 1] values to multiples of 1/255 (round half up, as Pillow); straight-through."""
  rounded = jnp.floor(jnp.clip(x, 0.0, 1.0) * 255.0 + 0.5) / 255.0
  return x + jax.lax.stop_gradient(rounded - x)


def _resample_pass(x: jax.Array, weights: np.ndarray, subscripts: str, quantize: bool):
  """One Pillow pass along one axis; `quantize`: Pillow's exact 8-bit fixed-point arithmetic
  (int32 products of 8-bit pixels and 22-bit coefficients, round, clip) in the forward pass,
  the float pass's gradient in the backward pass."""
  w = jnp.asarray(weights, jnp.float32)
  y = jnp.clip(jnp.einsum(subscripts, w, x, precision=jax.lax.Precision.HIGHEST), 0.0, 1.0)
  if not quantize:
    return y
  pixels = jnp.round(jax.lax.stop_gradient(x) * 255.0).astype(jnp.int32)  # x is on the grid
  acc = jnp.einsum(subscripts, jnp.asarray(fixed_point_weights(weights)), pixels,
                   preferred_element_type=jnp.int32) + (1 << (PRECISION_BITS - 1))
  exact = jnp.clip(jnp.right_shift(acc, PRECISION_BITS), 0, 255).astype(jnp.float32) / 255.0
  return y + jax.lax.stop_gradient(exact - y)


def resize(images: jax.Array, height: int, width: int, method: str = "bicubic", *,
           quantize: bool = False) -> jax.Array:
  """Pillow-style antialiased resize of images [P, H, W, C] in [0, 1] to [P, height, width, C].

  Horizontal pass then vertical pass, each clipped to [0, 1] (Pillow's order); a pass whose size
  does not change is skipped, as in Pillow. `quantize=True` expects the input on the 1/255 grid
  (see `quantize_uint8`) and reproduces Pillow's uint8 result exactly.
  """
  _, in_h, in_w, _ = images.shape
  x = images
  if in_w != width:
    x = _resample_pass(x, resize_weights(in_w, width, method), "ow,phwc->phoc", quantize)
  if in_h != height:
    x = _resample_pass(x, resize_weights(in_h, height, method), "oh,phwc->powc", quantize)
  return x


def center_crop(images: jax.Array, height: int, width: int) -> jax.Array:
  """transformers' `center_crop` of [P, H, W, C]: offset (H − h) // 2, zero padding if smaller."""
  _, in_h, in_w, _ = images.shape
  if in_h < height or in_w < width:
    pad_h, pad_w = max(height - in_h, 0), max(width - in_w, 0)
    top_pad, left_pad = math.ceil(pad_h / 2), math.ceil(pad_w / 2)
    images = jnp.pad(images, ((0, 0), (top_pad, pad_h - top_pad), (left_pad, pad_w - left_pad),
                              (0, 0)))
    top = (in_h - height) // 2 + top_pad
    left = (in_w - width) // 2 + left_pad
    top, left = max(top, 0), max(left, 0)
  else:
    top, left = (in_h - height) // 2, (in_w - width) // 2
  return images[:, top:top + height, left:left + width, :]


def preprocess(spec: PreprocessSpec, images: jax.Array, *, quantize: bool = False) -> jax.Array:
  """Images [P, H, W, 3] in [0, 1] → normalised model input [P, h, w, 3] float32 (channels last;
  the transformers Flax models take channels first: transpose with (0, 3, 1, 2)).

  Args:
    spec: from `spec_from_processor`.
    images: float images in [0, 1].
    quantize: round the input and each resize pass to 1/255 steps, as the uint8 PIL pipeline
      of the processors does (gradients pass straight through the rounding).
  """
  x = images.astype(jnp.float32)
  if quantize:
    x = quantize_uint8(x)
  _, in_h, in_w, _ = x.shape
  if spec.resize != "none":
    height, width = spec.resized_shape(in_h, in_w)
    x = resize(x, height, width, spec.resample, quantize=quantize)
  if spec.crop is not None:
    x = center_crop(x, *spec.crop)
  mean = jnp.asarray(spec.mean, jnp.float32)
  std = jnp.asarray(spec.std, jnp.float32)
  return (x * spec.scale - mean) / std
