"""Preprocessing in JAX against the transformers image processors and Pillow itself.

Tolerances (in [0, 1] pixel units; normalised values are divided by std):
  * quantize=True reproduces the processors' uint8 Pillow pipeline: equal to 1e-5 (float32
    normalisation only), on smooth and random images;
  * quantize=False differs only by Pillow's per-pass uint8 rounding: max < 1.5/255, mean
    < 0.45/255 (measured: max ~1.05/255, mean ~0.3/255).
"""

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
from transformers import CLIPImageProcessor
from transformers import ConvNextImageProcessor
from transformers import ViTImageProcessor
from transformers.image_transforms import center_crop as hf_center_crop

from jaxdiffattack import preprocess
from jaxdiffattack.errors import UserError

PROCESSORS = {
    "clip": lambda: CLIPImageProcessor(size={"shortest_edge": 24},
                                       crop_size={"height": 24, "width": 24}),
    "clip_int_sizes": lambda: CLIPImageProcessor(size=20, crop_size=18),  # old-style ints
    "vit": lambda: ViTImageProcessor(size={"height": 24, "width": 20}),
    "resnet": lambda: ConvNextImageProcessor(size={"shortest_edge": 24}, crop_pct=0.875,
                                             resample=3),
    "convnext_default": lambda: ConvNextImageProcessor(size={"shortest_edge": 24}),
    "convnext_warp": lambda: ConvNextImageProcessor(size={"shortest_edge": 384}),
}
SIZES = [(37, 53), (16, 16), (40, 30)]  # downsample, upsample, mixed
_preprocess = jax.jit(preprocess.preprocess, static_argnums=0, static_argnames="quantize")
_resize = jax.jit(preprocess.resize, static_argnums=(1, 2, 3), static_argnames="quantize")


def _smooth(rng, h, w):
  yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
  phase = rng.uniform(0, 2 * np.pi, 3)
  img = np.stack([0.5 + 0.4 * np.sin(3 * xx + yy + phase[0]),
                  0.5 + 0.4 * np.cos(2 * yy - xx + phase[1]),
                  0.3 + 0.6 * xx * yy], -1)
  return np.round(img * 255).astype(np.uint8)


def _images(kind, h, w, n=2, seed=0):
  rng = np.random.default_rng(seed)
  if kind == "smooth":
    return np.stack([_smooth(rng, h, w) for _ in range(n)])
  return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", sorted(PROCESSORS))
@pytest.mark.parametrize("kind", ["smooth", "random"])
def test_matches_transformers_processors(name, kind):
  processor = PROCESSORS[name]()
  spec = preprocess.spec_from_processor(processor)
  std = np.asarray(spec.std)
  for i, (h, w) in enumerate(SIZES):
    images = _images(kind, h, w, seed=i)
    expected = processor(list(images), return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
    x = jnp.asarray(images / 255.0, jnp.float32)
    exact = np.asarray(_preprocess(spec, x, quantize=True))
    smooth = np.asarray(_preprocess(spec, x, quantize=False))
    assert exact.shape == smooth.shape == expected.shape
    assert exact.shape[1:3] == spec.output_shape(h, w)
    np.testing.assert_allclose(exact * std, expected * std, atol=1e-5, rtol=0)
    diff = np.abs(smooth - expected) * std * 255  # in 1/255 pixel steps
    assert diff.max() < 1.5 and diff.mean() < 0.45, (h, w, diff.max(), diff.mean())


@pytest.mark.parametrize("method,code", [("bicubic", 3), ("bilinear", 2), ("lanczos", 1),
                                         ("box", 4), ("hamming", 5)])
def test_resize_equals_pillow(method, code):
  rng = np.random.default_rng(code)
  for (h, w, out_h, out_w) in [(37, 53, 20, 24), (16, 16, 24, 40), (64, 48, 17, 17)]:
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(image).resize((out_w, out_h), resample=code))
    x = jnp.asarray(image[None] / 255.0, jnp.float32)
    got = np.asarray(_resize(x, out_h, out_w, method, quantize=True))[0]
    np.testing.assert_allclose(got * 255, expected, atol=1e-3, rtol=0)
    smooth = np.asarray(_resize(x, out_h, out_w, method))[0]
    assert np.abs(smooth * 255 - expected).max() < 1.5


@pytest.mark.parametrize("method,jax_method", [("bicubic", "cubic"), ("bilinear", "linear"),
                                               ("lanczos", "lanczos3")])
def test_weights_equal_jax_image_resize_without_clipping(method, jax_method):
  """An independent check of the antialiased kernels: jax.image.resize uses the same ones."""
  rng = np.random.default_rng(0)
  for (h, w, out_h, out_w) in [(37, 53, 20, 24), (16, 16, 24, 40)]:
    x = rng.random((1, h, w, 3)).astype(np.float32)
    ours = np.einsum("oh,phwc->powc", preprocess.resize_weights(h, out_h, method),
                     np.einsum("ow,phwc->phoc", preprocess.resize_weights(w, out_w, method), x))
    theirs = jax.image.resize(jnp.asarray(x), (1, out_h, out_w, 3), jax_method, antialias=True)
    np.testing.assert_allclose(ours, np.asarray(theirs), atol=1e-5)


@pytest.mark.parametrize("in_hw,crop", [((10, 7), (6, 6)), ((5, 9), (8, 6)), ((4, 4), (7, 9))])
def test_center_crop_matches_transformers(in_hw, crop):
  image = np.random.default_rng(0).random((*in_hw, 3)).astype(np.float32)
  expected = hf_center_crop(image, crop, input_data_format="channels_last")
  got = np.asarray(preprocess.center_crop(jnp.asarray(image[None]), *crop))[0]
  np.testing.assert_array_equal(got, expected)


def test_differentiable_jittable_vmappable():
  spec = preprocess.spec_from_processor(PROCESSORS["resnet"]())
  images = jnp.asarray(_images("random", 20, 30, n=3) / 255.0, jnp.float32)
  for quantize in (False, True):
    fn = lambda x, q=quantize: preprocess.preprocess(spec, x, quantize=q)
    expected = _preprocess(spec, images, quantize=quantize)
    np.testing.assert_allclose(jax.jit(jax.vmap(fn))(images[None])[0], expected, atol=1e-6)
    grad = jax.jit(jax.grad(lambda x, f=fn: jnp.sum(f(x) * jnp.arange(3.0))))(images)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_unsupported_processor_settings_are_one_line_errors():
  with pytest.raises(UserError, match="nearest"):
    preprocess.spec_from_processor(ViTImageProcessor(resample=0))
  with pytest.raises(UserError, match="not supported"):
    preprocess.spec_from_processor(CLIPImageProcessor(size={"longest_edge": 30}))
  with pytest.raises(UserError, match="not supported"):
    preprocess.resize_weights(8, 4, "nearest")
