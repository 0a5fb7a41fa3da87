"""Per-step cross-attention capture inside the sampler's scan (sampler `capture_attention`).

Reference: the UNet called once more, outside the sampler, with `unet_cross_attention` on the
sampler's own z_t at a chosen step (DDIM's model input is z_t itself), on the conditional
context alone, and its per-layer probabilities reduced in NumPy (heads averaged, each layer
repeated to the 8×8 latent grid, layers averaged: attention_maps_test's `_layer_average`).
"""

import jax
import numpy as np
import pytest

from jaxdiffattack import models
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import schedulers
from jaxdiffattack import text
from jaxdiffattack.models import unet as unet_lib

from attention_maps_test import _layer_average  # the NumPy reduction (heads, layers)

PROMPTS = ("a photo of a red circle", "a photo of a blue star and a green cross")
STEPS = 6


@pytest.fixture(scope="module")
def toy():
  sd, params = models.load_stable_diffusion("toy")
  cond = np.asarray(text.encode_prompts(sd, params["text_encoder"], list(PROMPTS)))
  uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""]))[0]
  latents = sampler_lib.member_latents(jax.random.PRNGKey(3), range(len(PROMPTS)),
                                       sd.latent_shape)
  outs = {}
  for capture in (False, True):
    settings = sampler_lib.SamplerSettings(num_steps=STEPS, trajectory=("latents",),
                                           capture_attention=capture)
    outs[capture] = sampler_lib.PopulationSampler(sd, params, settings)(latents, cond, uncond, 7.5)
  return sd, params, cond, outs


def test_capture_off_returns_no_maps_and_same_images(toy):
  _, _, _, outs = toy
  assert outs[False].attention_trajectory is None
  # The capturing path computes attention on the reference path: same images up to rounding.
  np.testing.assert_allclose(outs[True].images, outs[False].images, atol=2e-5)
  np.testing.assert_allclose(outs[True].latent_trajectory, outs[False].latent_trajectory,
                             atol=2e-5)


@pytest.mark.parametrize("step", [1, STEPS - 1])
def test_maps_equal_a_separate_capture_at_that_step(toy, step):
  sd, params, cond, outs = toy
  maps = outs[True].attention_trajectory
  assert maps.shape == (len(PROMPTS), STEPS, sd.latent_size, sd.latent_size, sd.max_length)
  np.testing.assert_allclose(maps.sum(-1), 1.0, rtol=1e-5)
  timesteps = schedulers.make_scheduler("ddim", sd.scheduler_config, STEPS).timesteps
  z_t = outs[False].latent_trajectory[:, step - 1]
  _, layers = unet_lib.unet_cross_attention(sd.unet, params["unet"], z_t, timesteps[step], cond)
  np.testing.assert_allclose(maps[:, step], _layer_average(layers, sd.latent_size), atol=2e-5)


def test_capture_with_last_k_gradient_depth(toy):
  """Both scan parts (frozen steps, differentiated steps) contribute their steps' maps."""
  sd, params, cond, outs = toy
  f = sampler_lib.FusedSampler.build(sd, sampler_lib.SamplerSettings(
      num_steps=STEPS, grad_steps=2, capture_attention=True))
  uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""]))[0]
  latents = sampler_lib.member_latents(jax.random.PRNGKey(3), range(len(PROMPTS)),
                                       sd.latent_shape)
  out = jax.jit(f)(sampler_lib.fused_params(params), latents, cond, uncond, 7.5)
  np.testing.assert_allclose(out.attention_trajectory, outs[True].attention_trajectory, atol=2e-5)


def test_token_maps_pool_finer_and_repeat_coarser_layers():
  """A 32×32 latent: maps on a 16×16 grid; a 32² layer mean-pooled by 2, an 8² one repeated."""
  rng = np.random.default_rng(0)
  layers = {}
  for name, side in (("fine", 32), ("same", 16), ("coarse", 8)):
    logits = rng.normal(size=(2, 3, side * side, 5))
    layers[name] = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  got = np.asarray(sampler_lib.token_maps({k: jax.numpy.asarray(v) for k, v in layers.items()},
                                          (32, 32)))
  heads = {k: v.mean(1).reshape(2, int(np.sqrt(v.shape[2])), -1, 5) for k, v in layers.items()}
  fine = heads["fine"].reshape(2, 16, 2, 16, 2, 5).mean((2, 4))
  coarse = heads["coarse"].repeat(2, axis=1).repeat(2, axis=2)
  np.testing.assert_allclose(got, (fine + heads["same"] + coarse) / 3, rtol=1e-5)
  np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)
