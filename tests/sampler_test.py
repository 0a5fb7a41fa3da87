"""The population sampler against the PyTorch diffusers pipeline, plus its invariants."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import schedulers
from jaxdiffattack import text
from jaxdiffattack.errors import ConfigError

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


# ----------------------------------------------------------------- gradients and gradient depth --
STEPS = 3     # DDIM steps of the gradient checks
SCALE = 5.0   # their guidance scale


def _reference_steps(sd, scheduler, params, x, cond, uncond, steps):
  """An independent statement of the sampler for stateless DDIM: per step s, ε̂ = ε(x, ∅) +
  w (ε(x, c) − ε(x, ∅)) (Ho & Salimans 2022, eq. 6), then the scheduler's update. Returns the
  latents after each step."""
  after = []
  for s in steps:
    t = jnp.full((2 * x.shape[0],), scheduler.timesteps[s], x.dtype)
    context = jnp.concatenate([jnp.broadcast_to(uncond, cond.shape), cond])
    eps = sd.unet.apply({"params": params["unet"]}, jnp.concatenate([x, x]), t, context).sample
    eps_uncond, eps_cond = jnp.split(eps, 2)
    x, _, _ = scheduler.step((), s, eps_uncond + SCALE * (eps_cond - eps_uncond), x)
    after.append(x)
  return after


def _directional_fd(fn, args, index, direction, eps=1e-4):
  plus, minus = list(args), list(args)
  plus[index] = args[index] + eps * direction
  minus[index] = args[index] - eps * direction
  return float((fn(*plus) - fn(*minus)) / (2 * eps))


@pytest.fixture(scope="module")
def x64(tiny_sd_model):
  """The tiny SD, one prompt and random read-out weights, all in float64 (finite differences
  in float32 are swamped by rounding: they agree with the gradient to ~2 % at best)."""
  sd, params = tiny_sd_model
  cond, uncond = _embeddings(sd, params, ["a red cube"])
  rng = np.random.default_rng(4)
  with jax.enable_x64(True):
    sd64, params64 = tiny_sd.as_float64(sd, params)
    scheduler = schedulers.make_scheduler("ddim", sd.scheduler_config, STEPS)
    assert scheduler.init_noise_sigma == 1.0 and scheduler.init_state(None) == ()
    problem = dict(
        sd=sd64, params=params64, scheduler=scheduler,
        latents=jnp.asarray(rng.standard_normal((1, 4, 8, 8))),
        cond=jnp.asarray(cond, jnp.float64), uncond=jnp.asarray(uncond, jnp.float64),
        latent_weights=jnp.asarray(rng.standard_normal((1, 4, 8, 8))),
        image_weights=jnp.asarray(rng.standard_normal((16, 16, 3))),
        directions=[rng.standard_normal((1, 4, 8, 8)), rng.standard_normal(cond.shape)])
    path = jax.jit(lambda z, c: _reference_steps(sd64, scheduler, params64, z, c,
                                                 problem["uncond"], range(STEPS)))
    problem["reference"] = lambda z, c: jnp.sum(path(z, c)[-1] * problem["latent_weights"])
    problem["reference_path"] = path(problem["latents"], problem["cond"])
    return problem


def _score_fn(image_weights):
  def score_fn(score_params, images, aux):
    del score_params, aux
    return {"weighted": jnp.sum(images * image_weights, axis=(1, 2, 3))}
  return score_fn


@pytest.mark.parametrize("remat", [False, True])
def test_full_depth_gradient_matches_finite_differences(x64, remat):
  """d Σ w·z_0 / d (latents, text embeddings) through every step (grad_steps=None, with and
  without remat) == central differences of the independent reference sampler, in float64."""
  p = x64
  with jax.enable_x64(True):
    fused = sampler_lib.FusedSampler.build(p["sd"], sampler_lib.SamplerSettings(
        num_steps=STEPS, return_latents=True, return_images=False, remat=remat))
    params = sampler_lib.fused_params(p["params"])
    loss = lambda z, c: jnp.sum(fused(params, z, c, p["uncond"], SCALE).latents *
                                p["latent_weights"])
    args = (p["latents"], p["cond"])
    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(*args)
    np.testing.assert_allclose(value, p["reference"](*args), rtol=1e-8)
    for index in (0, 1):
      direction = p["directions"][index]
      numeric = _directional_fd(p["reference"], args, index, direction)
      analytic = float(jnp.sum(grads[index] * direction))
      assert abs(numeric) > 1e-3  # the check is not vacuous
      np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


def test_last_k_gradient_equals_sampler_with_early_steps_outside(x64):
  """K = 2 of 3 steps, read through the VAE and a fused scorer: the gradient w.r.t. the text
  embeddings equals the gradient of a sampler that starts from the latents after step S − K
  (computed outside the differentiated function), and its finite differences; the gradient
  w.r.t. the latents is zero (they enter only through the frozen step)."""
  p = x64
  k = 2
  with jax.enable_x64(True):
    fused = sampler_lib.FusedSampler.build(
        p["sd"], sampler_lib.SamplerSettings(num_steps=STEPS, return_images=False, grad_steps=k),
        _score_fn(p["image_weights"]))
    params = sampler_lib.fused_params(p["params"])
    loss = lambda z, c: fused(params, z, c, p["uncond"], SCALE).scores["weighted"].sum()
    args = (p["latents"], p["cond"])
    value, (grad_latents, grad_cond) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(*args)
    start = p["reference_path"][STEPS - k - 1]       # after the first S − K steps, a constant

    def late(c):
      z0 = _reference_steps(p["sd"], p["scheduler"], p["params"], start, c, p["uncond"],
                            range(STEPS - k, STEPS))[-1]
      images = sampler_lib.decode_latents(p["sd"], p["params"]["vae"], z0)
      return jnp.sum(images * p["image_weights"])

    expected_value, expected = jax.jit(jax.value_and_grad(late))(p["cond"])
    np.testing.assert_allclose(value, expected_value, rtol=1e-8)
    np.testing.assert_array_equal(grad_latents, 0.0)
    np.testing.assert_allclose(grad_cond, expected, rtol=1e-7, atol=1e-10)
    direction = p["directions"][1]
    numeric = _directional_fd(jax.jit(late), (p["cond"],), 0, direction)
    assert abs(numeric) > 1e-3
    np.testing.assert_allclose(float(jnp.sum(grad_cond * direction)), numeric, rtol=1e-6)
    # Depth 0: no gradient reaches the latents or the text embeddings.
    none = sampler_lib.FusedSampler.build(
        p["sd"], sampler_lib.SamplerSettings(num_steps=STEPS, return_images=False, grad_steps=0),
        _score_fn(p["image_weights"]))
    grads = jax.jit(jax.grad(lambda z, c: none(params, z, c, p["uncond"], SCALE)
                             .scores["weighted"].sum(), argnums=(0, 1)))(*args)
    for g in grads:
      np.testing.assert_array_equal(g, 0.0)


def test_frozen_steps_keep_no_residuals(tiny_sd_model):
  """What the backward pass keeps (the residuals of `jax.vjp`, by shape alone): for K = 1 the
  same for 2 and 4 steps; for full depth it grows with the steps."""
  sd, params = tiny_sd_model
  cond, uncond = _embeddings(sd, params, ["a"])
  latents = jnp.asarray(_latents(1, seed=6))

  def residual_bytes(num_steps, grad_steps):
    fused = sampler_lib.FusedSampler.build(sd, sampler_lib.SamplerSettings(
        num_steps=num_steps, grad_steps=grad_steps))
    loss = lambda z, c: fused(sampler_lib.fused_params(params), z, c, uncond, SCALE).images.sum()
    residuals = jax.eval_shape(lambda z, c: jax.vjp(loss, z, c)[1], latents, cond)
    return sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves(residuals))

  last_one = [residual_bytes(s, 1) for s in (2, 4)]
  every = [residual_bytes(s, None) for s in (2, 4)]
  assert last_one[0] == last_one[1], last_one
  assert every[1] - every[0] > 1e5 and every[0] > last_one[0], (every, last_one)


def test_grad_steps_validated():
  with pytest.raises(ConfigError, match="config.grad_steps=4 is invalid"):
    sampler_lib.SamplerSettings(num_steps=3, grad_steps=4).validate()
  with pytest.raises(ConfigError, match="config.grad_steps=-1 is invalid"):
    sampler_lib.SamplerSettings(num_steps=3, grad_steps=-1).validate()


def test_fused_function_under_jit_and_vmap_traces_once(tiny_sd_model):
  """The fused function is one pure function: jitted it traces once for same-shaped calls, and
  vmapped over a leading group axis it equals one call per group."""
  sd, params = tiny_sd_model
  latents = _latents(4, seed=7).reshape(2, 2, 4, 8, 8)
  cond, uncond = _embeddings(sd, params, ["a", "b", "c", "d"])
  cond = cond.reshape((2, 2) + cond.shape[1:])
  scale = np.array([[1.0, 4.0], [7.5, 2.0]], np.float32)
  weights = jnp.linspace(0.0, 1.0, 16 * 16 * 3).reshape(16, 16, 3)
  fused = sampler_lib.FusedSampler.build(
      sd, sampler_lib.SamplerSettings(num_steps=2, return_images=False), _score_fn(weights))
  all_params = sampler_lib.fused_params(params)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(latents, cond, scale):
    return fused(all_params, latents, cond, uncond, scale).scores["weighted"]

  per_group = np.stack([run(latents[g], cond[g], scale[g]) for g in range(2)])
  batched = jax.jit(jax.vmap(lambda z, c, s: fused(all_params, z, c, uncond, s).scores[
      "weighted"]))(latents, cond, scale)
  np.testing.assert_allclose(batched, per_group, rtol=1e-5)
  assert np.abs(per_group[0] - per_group[1]).max() > 1e-3


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
