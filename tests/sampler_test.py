"""The population sampler against the PyTorch diffusers pipeline, plus its invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import text

import tiny_sd

PROMPTS = ["a red cube", "two blue spheres on grass"]
# float32 on CPU: the Flax and PyTorch UNets differ by ~1e-6 per call; after the VAE, images
# (in [0, 1]) agree to well under 1e-4. The bound leaves room for BLAS differences.
IMAGE_ATOL = 2e-4


def _latents(n, seed=0):
  return np.random.default_rng(seed).standard_normal((n, 4, 8, 8)).astype(np.float32)


def _embeddings(sd, params, prompts):
  cond = text.encode_prompts(sd, params["text_encoder"], prompts)
  uncond = text.encode_prompts(sd, params["text_encoder"], [""])[0]
  return np.asarray(cond), np.asarray(uncond)


@pytest.mark.parametrize("scheduler,num_steps,guidance_scale", [
    ("ddim", 10, 7.5), ("ddim", 10, 1.0), ("dpmsolver++", 8, 5.0), ("euler", 6, 1.0),
    ("pndm", 6, 7.5)])
def test_matches_pytorch_pipeline(tiny_sd_dirs, tiny_sd_model, scheduler, num_steps,
                                  guidance_scale):
  sd, params = tiny_sd_model
  latents = _latents(len(PROMPTS))
  expected = tiny_sd.torch_generate(tiny_sd.torch_pipeline(tiny_sd_dirs[0], scheduler), PROMPTS,
                                    latents, num_steps, guidance_scale)
  cond, uncond = _embeddings(sd, params, PROMPTS)
  settings = sampler_lib.SamplerSettings(scheduler=scheduler, num_steps=num_steps,
                                         guidance=guidance_scale > 1.0)
  got = sampler_lib.PopulationSampler(sd, params, settings)(latents, cond, uncond, guidance_scale)
  assert got.images.shape == expected.shape == (2, 16, 16, 3)
  np.testing.assert_allclose(got.images, expected, atol=IMAGE_ATOL, rtol=0)
  # The reference is not trivially constant: images differ between the two prompts.
  assert np.abs(expected[0] - expected[1]).mean() > 1e-3


def test_no_guidance_equals_scale_one(tiny_sd_model):
  sd, params = tiny_sd_model
  latents = _latents(3, seed=1)
  cond, uncond = _embeddings(sd, params, PROMPTS + ["x"])
  run = lambda guidance: sampler_lib.PopulationSampler(
      sd, params, sampler_lib.SamplerSettings(num_steps=4, guidance=guidance))
  np.testing.assert_allclose(run(False)(latents, cond).images,
                             run(True)(latents, cond, uncond, 1.0).images, atol=1e-5)


@pytest.fixture(scope="module")
def ddim4(tiny_sd_model):
  sd, params = tiny_sd_model
  settings = sampler_lib.SamplerSettings(num_steps=4, trajectory=("x0", "latents"),
                                         return_latents=True)
  return sampler_lib.PopulationSampler(sd, params, settings)


def test_outputs_and_trajectories(tiny_sd_model, ddim4):
  sd, params = tiny_sd_model
  latents = _latents(3, seed=2)
  cond, uncond = _embeddings(sd, params, ["a", "b", "c"])
  out = ddim4(latents, cond, uncond, np.array([1.0, 4.0, 7.5]))
  assert out.images.shape == (3, 16, 16, 3)
  assert out.images.min() >= 0.0 and out.images.max() <= 1.0
  assert out.x0_trajectory.shape == out.latent_trajectory.shape == (3, 4, 4, 8, 8)
  np.testing.assert_array_equal(out.latent_trajectory[:, -1], out.latents)
  # DDIM's last step (to t = 0, alpha_prev = alphas_cumprod[0]) lands next to its x0 estimate.
  np.testing.assert_allclose(out.latents, out.x0_trajectory[:, -1], atol=0.1)
  # Per-member guidance scales are honoured: same member with scale 7.5 alone agrees.
  alone = ddim4(latents[2:], cond[2:], uncond, 7.5)
  np.testing.assert_allclose(alone.images[0], out.images[2], atol=1e-5)


def test_microbatch_invariance_and_no_retrace(tiny_sd_model):
  sd, params = tiny_sd_model
  latents = _latents(5, seed=3)
  cond, uncond = _embeddings(sd, params, ["p%d" % i for i in range(5)])
  settings = sampler_lib.SamplerSettings(num_steps=3)
  whole = sampler_lib.PopulationSampler(sd, params, settings)(latents, cond, uncond)
  one = sampler_lib.PopulationSampler(sd, params, settings, microbatch=1)
  first = one(latents, cond, uncond)
  again = one(latents[::-1].copy(), cond[::-1].copy(), uncond)
  assert one.compiled._cache_size() == 1  # pylint: disable=protected-access
  np.testing.assert_allclose(first.images, whole.images, atol=1e-5)
  np.testing.assert_allclose(again.images[::-1], whole.images, atol=1e-5)


def test_member_latents_depend_only_on_member_index():
  key = jax.random.PRNGKey(7)
  full = sampler_lib.member_latents(key, np.arange(6), (4, 8, 8))
  part = sampler_lib.member_latents(key, np.array([4, 1]), (4, 8, 8))
  np.testing.assert_array_equal(part, full[np.array([4, 1])])
  assert abs(float(full.std()) - 1.0) < 0.1


@pytest.mark.parametrize("remat", [False, True])
def test_gradients_match_finite_differences(tiny_sd_model, remat):
  """d loss / d (latents, text embeddings) through 3 DDIM steps vs central differences.

  The loss reads the final latents: the image clip to [0, 1] has kinks that finite differences
  straddle. The image path's gradient is checked for finiteness and non-zero-ness.
  """
  sd, params = tiny_sd_model
  settings = sampler_lib.SamplerSettings(num_steps=3, remat=remat)
  from jaxdiffattack import schedulers  # pylint: disable=g-import-not-at-top
  sched = schedulers.make_scheduler("ddim", sd.scheduler_config, 3)
  cond, uncond = _embeddings(sd, params, ["a red cube"])
  latents = jnp.asarray(_latents(1, seed=4))
  weights = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 8, 8))

  @jax.jit
  def loss(latents, cond):
    out = sampler_lib.sample(sd, sched, params, latents, cond, uncond, 5.0,
                             remat=settings.remat, return_latents=True, decode=False)
    return jnp.sum(out.latents * weights)

  def image_loss(latents, cond):
    out = sampler_lib.sample(sd, sched, params, latents, cond, uncond, 5.0, remat=remat)
    return jnp.sum(out.images ** 2)

  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(latents, jnp.asarray(cond))
  image_grads = jax.jit(jax.grad(image_loss, argnums=(0, 1)))(latents, jnp.asarray(cond))
  for g in grads + image_grads:
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
  rng = np.random.default_rng(0)
  for arg_index, base in enumerate((latents, jnp.asarray(cond))):
    direction = rng.standard_normal(base.shape).astype(np.float32)
    direction /= np.linalg.norm(direction)
    eps = 1e-2
    args_plus = [latents, jnp.asarray(cond)]
    args_minus = list(args_plus)
    args_plus[arg_index] = base + eps * direction
    args_minus[arg_index] = base - eps * direction
    numeric = (loss(*args_plus) - loss(*args_minus)) / (2 * eps)
    analytic = float(jnp.sum(grads[arg_index] * direction))
    np.testing.assert_allclose(analytic, float(numeric), rtol=2e-2, atol=1e-4)


def test_fused_score_fn_returns_only_small_arrays(tiny_sd_model):
  """A scorer fused into the compiled sampler sees the images and per-member aux inputs."""
  sd, params = tiny_sd_model
  latents = _latents(3, seed=5)
  cond, uncond = _embeddings(sd, params, ["a", "b", "c"])
  weights = {"w": np.linspace(0.0, 1.0, 16 * 16 * 3, dtype=np.float32).reshape(16, 16, 3)}

  def score_fn(score_params, images, aux):
    return {"weighted": jnp.sum(images * score_params["w"], axis=(1, 2, 3)) + aux["offset"],
            "channel_mean": images.mean(axis=(1, 2))}

  base = sampler_lib.SamplerSettings(num_steps=3)
  images = sampler_lib.PopulationSampler(sd, params, base)(latents, cond, uncond).images
  fused = sampler_lib.PopulationSampler(
      sd, params, sampler_lib.SamplerSettings(num_steps=3, return_images=False),
      score_fn=score_fn, score_params=weights, microbatch=1)
  offset = np.array([0.0, 10.0, 20.0], np.float32)
  out = fused(latents, cond, uncond, aux={"offset": offset})
  assert out.images is None
  expected = (images * weights["w"]).sum(axis=(1, 2, 3)) + offset
  np.testing.assert_allclose(out.scores["weighted"], expected, rtol=1e-4)
  np.testing.assert_allclose(out.scores["channel_mean"], images.mean(axis=(1, 2)), atol=1e-5)
  with pytest.raises(ValueError, match="needs a score_fn"):
    sampler_lib.PopulationSampler(sd, params, sampler_lib.SamplerSettings(return_images=False))
