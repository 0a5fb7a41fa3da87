"""The shipped toy CLIP, ViT, ResNet and SD text encoder (Flax msgpack) through the own modules
against PyTorch transformers' modules filled from the very same files by transformers' own
Flax → PyTorch conversion (`load_flax_weights_in_pytorch_model`): the switch off transformers'
Flax classes keeps the toy world's outputs (≤ 1e-5 of their scale in float32).

Skipped where transformers can no longer read Flax msgpack (transformers ≥ 5); the parity tests
of models_{clip,vit,resnet}_test.py cover the modules there.
"""

import importlib.util

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxdiffattack import text
from jaxdiffattack import toy
from jaxdiffattack.models import load_stable_diffusion
from jaxdiffattack.models import vision

import parity

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("transformers.modeling_flax_pytorch_utils") is None,
    reason="this transformers cannot load Flax msgpack into PyTorch modules")

PROMPTS = ["a photo of a red circle", "a blue square and a green star", "", "yellow cross"]


def _pixels(seed=0):
  """Normalised pixels [P, 32, 32, 3] (channels last) and the same channels first for PyTorch."""
  nhwc = np.random.default_rng(seed).standard_normal((4, 32, 32, 3)).astype(np.float32)
  return jnp.asarray(nhwc), torch.from_numpy(nhwc.transpose(0, 3, 1, 2).copy())


def test_toy_clip():
  clip, params = vision.load_clip("toy")
  ref = parity.transformers_from_flax(transformers.CLIPModel, toy.CLIP_DIR)
  parity.assert_clip_close(clip, params, ref, PROMPTS, *_pixels())
  assert float(vision.clip_logit_scale(params)) == pytest.approx(
      float(ref.logit_scale.detach().exp()), rel=1e-6)


@pytest.mark.parametrize("kind,cls", [("vit", transformers.ViTForImageClassification),
                                      ("resnet", transformers.ResNetForImageClassification)])
def test_toy_classifiers(kind, cls):
  classifier, params = vision.load_image_classifier("toy", kind)
  ref = parity.transformers_from_flax(cls, toy.ASSETS_DIR / kind)
  nhwc, nchw = _pixels(1)
  with torch.no_grad():
    want = ref(pixel_values=nchw).logits.numpy()
  parity.assert_rel_close(vision.classifier_logits(classifier, params, nhwc), want, what=kind)


def test_toy_text_encoder():
  sd, params = load_stable_diffusion("toy")
  ref = parity.transformers_from_flax(transformers.CLIPTextModel, toy.SD_DIR / "text_encoder")
  ids = text.tokenize(sd, PROMPTS)
  with torch.no_grad():
    want = ref(input_ids=torch.from_numpy(ids.astype(np.int64))).last_hidden_state.numpy()
  parity.assert_rel_close(text.encode_prompts(sd, params["text_encoder"], PROMPTS), want)
