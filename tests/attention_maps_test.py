"""Cross-attention maps of the shipped toy model put the named object's token on its pixels.

For a few single-object prompts the toy pipeline generates an image (DDIM 20 steps, CFG 7.5); the
object is segmented by colour (pixels within 60 RGB units of the nominal colour; backgrounds are
at least 95 away by construction, see toy/world.py); the UNet is called once more on the
sampler's latents at step 14 of 20 with `unet_cross_attention`, and the shape token's map
(probabilities averaged over heads and over all 7 cross-attention layers, each upsampled to the
8×8 latent grid) is compared with the object mask (the fraction of each latent pixel's 4×4
image pixels inside the mask).

Measured on all 20 classes × 2 seeds (2026-11-29, CPU): the shape token puts 1.62× the area
share of its mass inside the object on average (10th percentile 1.07×; squares, the model's weak
class, ≈ 1.0×); the colour token does not localise (0.99×): the toy text encoder is causal, so the
colour word's state precedes the shape word, and only the shape token's state names the object.
The test's 8 images (no squares) measure 1.49–2.42× per image, 1.78× on average (colour token
0.58–1.01×); the margins below (every prompt's seed mean ≥ 1.2×, mean ≥ 1.4×) leave room for
platform numerics while staying well above the 1.0× of a map unrelated to the object.
"""

import jax
import numpy as np
import pytest

from jaxdiffattack import models
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import schedulers
from jaxdiffattack import text
from jaxdiffattack.models import unet as unet_lib
from jaxdiffattack.toy import world

PROMPTS = ("a photo of a red circle", "a photo of a green triangle", "a photo of a blue star",
           "a photo of a yellow cross")
SEEDS = 2
STEPS, CAPTURE_STEP = 20, 14
MASK_DISTANCE = 60.0
MIN_RATIO_PER_PROMPT, MIN_MEAN_RATIO = 1.2, 1.4


def _token_index(sd, prompt: str, word: str) -> int:
  tokens = sd.tokenizer.tokenize(prompt)
  return 1 + [t.replace("</w>", "") for t in tokens].index(word)   # +1: the BOS token


def _layer_average(maps, side: int) -> np.ndarray:
  """{layer: [B, heads, h·w, L]} → [B, side, side, L], heads and layers averaged."""
  grids = []
  for probs in maps.values():
    probs = np.asarray(probs).mean(1)
    s = int(round(np.sqrt(probs.shape[1])))
    grid = probs.reshape(probs.shape[0], s, s, -1)
    grids.append(grid.repeat(side // s, axis=1).repeat(side // s, axis=2))
  return np.mean(grids, axis=0)


@pytest.fixture(scope="module")
def toy_run():
  sd, params = models.load_stable_diffusion("toy")
  prompts = [p for p in PROMPTS for _ in range(SEEDS)]
  cond = np.asarray(text.encode_prompts(sd, params["text_encoder"], prompts))
  uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""]))[0]
  settings = sampler_lib.SamplerSettings(num_steps=STEPS, trajectory=("latents",))
  latents = sampler_lib.member_latents(jax.random.PRNGKey(1), range(len(prompts)),
                                       sd.latent_shape)
  out = sampler_lib.PopulationSampler(sd, params, settings)(latents, cond, uncond, 7.5)
  timesteps = schedulers.make_scheduler("ddim", sd.scheduler_config, STEPS).timesteps
  # DDIM's model input is z_t itself: the latents after step CAPTURE_STEP − 1.
  z_t = out.latent_trajectory[:, CAPTURE_STEP - 1]
  _, maps = jax.jit(lambda p, x, t, c: unet_lib.unet_cross_attention(sd.unet, p, x, t, c))(
      params["unet"], z_t, timesteps[CAPTURE_STEP], cond)
  return sd, prompts, out.images, maps


def test_shape_token_attends_to_the_object(toy_run):
  sd, prompts, images, maps = toy_run
  side = sd.latent_size
  factor = sd.image_size // side
  average = _layer_average(maps, side)                                 # [B, 8, 8, L]
  ratios = []
  for i, prompt in enumerate(prompts):
    colour, shape = prompt.split()[-2:]
    distance = np.linalg.norm(images[i] * 255.0 - np.asarray(world.COLOUR_RGB[colour]), axis=-1)
    mask = (distance < MASK_DISTANCE).reshape(side, factor, side, factor).mean((1, 3))
    share = mask.mean()
    assert 0.03 < share < 0.5, (prompt, share)     # an object was drawn, not the whole image
    attention_map = average[i, :, :, _token_index(sd, prompt, shape)]
    inside = float((attention_map * mask).sum() / attention_map.sum())
    ratios.append(inside / share)
  per_prompt = np.asarray(ratios).reshape(len(PROMPTS), SEEDS).mean(1)
  assert np.all(per_prompt >= MIN_RATIO_PER_PROMPT), dict(zip(PROMPTS, per_prompt.round(2)))
  assert per_prompt.mean() >= MIN_MEAN_RATIO, per_prompt.round(2)


def test_capture_shapes(toy_run):
  sd, prompts, _, maps = toy_run
  assert len(maps) == 7               # 2 down, 1 mid, 4 up transformer blocks
  for probs in maps.values():
    assert probs.shape[0] == len(prompts) and probs.shape[-1] == sd.max_length
    np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, rtol=1e-5)
