"""The sampler with a learned-variance UNet (out_channels = 2C) and ancestral DDPM steps.

The whole sampler path (guidance on ε only, v from the conditional branch, respaced DDPM
posterior with the learned interpolated variance, per-member noise from fold_in(fold_in(key,
member), step)) against a NumPy statement of it in float64 that shares only the UNet with it;
the deterministic samplers ignore the variance half; the population split does not matter
(chunks here, 8 fake devices in a subprocess).
"""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import text
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.models import load_stable_diffusion

import tiny_sd

_ROOT = pathlib.Path(__file__).resolve().parent.parent
PROMPTS = ["a red cube", "b", "two blue spheres"]
STEPS = 5
SCALE = 4.0
KEY = 11


@pytest.fixture(scope="module")
def lv_model(tiny_lv_dir):
  sd, params = load_stable_diffusion(str(tiny_lv_dir))
  assert sd.learned_variance
  cond = np.asarray(text.encode_prompts(sd, params["text_encoder"], PROMPTS))
  uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0])
  latents = np.random.default_rng(5).standard_normal((3, 4, 8, 8)).astype(np.float32)
  keys = np.asarray(sampler_lib.member_noise_keys(jax.random.PRNGKey(KEY), np.arange(3)))
  return sd, params, cond, uncond, latents, keys


def _abar(config) -> np.ndarray:
  """ᾱ_t of the scaled-linear schedule (Rombach et al. 2022), float64."""
  assert config["beta_schedule"] == "scaled_linear"
  betas = np.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5,
                      config["num_train_timesteps"]) ** 2
  return np.cumprod(1.0 - betas)


def numpy_ancestral(sd, params, latents, cond, uncond, scale, keys, variance_type):
  """One full ancestral DDPM trajectory, stated in NumPy float64 (only the UNet is shared).

  Timesteps: diffusers' "leading" spacing, t_s = s · T/S + offset, descending. Step t → t'
  (the next kept timestep; ᾱ' = 1 after the last): β = 1 − ᾱ_t/ᾱ', β̃ = (1 − ᾱ')/(1 − ᾱ_t) β
  (floored at 1e-20), x̂0 = (x − √(1−ᾱ_t) ε̂)/√ᾱ_t, μ = √ᾱ' β/(1 − ᾱ_t) x̂0 + √(1−β)(1 − ᾱ')/(1 −
  ᾱ_t) x; log σ² = f log β + (1 − f) log β̃ with f = (v + 1)/2 (learned), or log β̃ (fixed_small);
  x' = μ + σ n, n from fold_in(member key, s), no noise where t = 0. ε̂ = ε_∅ + w (ε_c − ε_∅),
  v = v_c (GLIDE). Returns (final latents, x̂0 per step [P, S, ...]).
  """
  config = sd.scheduler_config
  abar = _abar(config)
  ratio = config["num_train_timesteps"] // STEPS
  ts = np.arange(STEPS)[::-1] * ratio + config["steps_offset"]
  x = latents.astype(np.float64)
  channels = x.shape[1]
  x0s = []
  for s, t in enumerate(ts):
    a_t = abar[t]
    a_prev = abar[ts[s + 1]] if s + 1 < STEPS else 1.0
    both = np.concatenate([x, x]).astype(np.float32)
    ctx = np.concatenate([np.broadcast_to(uncond, cond.shape), cond])
    out = np.asarray(sd.unet.apply({"params": params["unet"]}, both, jnp.full((6,), t), ctx),
                     np.float64)
    out_u, out_c = out[:3], out[3:]
    eps = out_u[:, :channels] + scale * (out_c[:, :channels] - out_u[:, :channels])
    v = out_c[:, channels:]
    beta = 1.0 - a_t / a_prev
    beta_tilde = max((1.0 - a_prev) / (1.0 - a_t) * beta, 1e-20)
    x0 = (x - np.sqrt(1.0 - a_t) * eps) / np.sqrt(a_t)
    mean = (np.sqrt(a_prev) * beta / (1.0 - a_t) * x0
            + np.sqrt(1.0 - beta) * (1.0 - a_prev) / (1.0 - a_t) * x)
    if variance_type == "learned_range":
      f = (v + 1.0) / 2.0
      log_var = f * np.log(beta) + (1.0 - f) * np.log(beta_tilde)
    else:
      log_var = np.full_like(x, np.log(beta_tilde))
    noise = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(k, s), x.shape[1:]))
                      for k in keys]).astype(np.float64)
    x = mean + (np.exp(0.5 * log_var) * noise if t > 0 else 0.0)
    x0s.append(x0)
  return x, np.stack(x0s, axis=1)


@pytest.mark.parametrize("variance_type", ["learned_range", "fixed_small"])
def test_ancestral_trajectory_matches_numpy_reference(lv_model, variance_type):
  sd, params, cond, uncond, latents, keys = lv_model
  settings = sampler_lib.SamplerSettings(
      scheduler="ddpm", num_steps=STEPS, variance_type=variance_type, return_latents=True,
      trajectory=("x0", "variance"))
  got = sampler_lib.PopulationSampler(sd, params, settings)(latents, cond, uncond, SCALE,
                                                            noise_keys=keys)
  want, want_x0 = numpy_ancestral(sd, params, latents, cond, uncond, SCALE, keys, variance_type)
  np.testing.assert_allclose(got.x0_trajectory, want_x0, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got.latents, want, rtol=1e-4, atol=1e-4)
  assert got.variance_trajectory.shape == (3, STEPS, 4, 8, 8)
  # The noise matters: other noise keys (all members [0, 1]) give other final latents.
  other_keys = np.ones_like(keys)
  assert np.abs(want - numpy_ancestral(sd, params, latents, cond, uncond, SCALE, other_keys,
                                       variance_type)[0]).mean() > 1e-2


def test_learned_variance_differs_from_fixed(lv_model):
  """The v half reaches the step rule: learned and fixed variance give other latents."""
  sd, params, cond, uncond, latents, keys = lv_model
  run = lambda vt: sampler_lib.PopulationSampler(sd, params, sampler_lib.SamplerSettings(
      scheduler="ddpm", num_steps=STEPS, variance_type=vt, return_latents=True))(
          latents, cond, uncond, SCALE, noise_keys=keys).latents
  assert np.abs(run("learned_range") - run("fixed_small")).mean() > 1e-3


def test_variance_is_the_conditional_branchs(lv_model):
  """v in the trajectory is the conditional call's: at step 0 (same input with and without
  guidance) it equals the no-guidance run's."""
  sd, params, cond, uncond, latents, keys = lv_model
  run = lambda guidance: sampler_lib.PopulationSampler(sd, params, sampler_lib.SamplerSettings(
      scheduler="ddpm", num_steps=STEPS, variance_type="learned_range", guidance=guidance,
      trajectory=("variance",)))(latents, cond, uncond, SCALE, noise_keys=keys)
  with_cfg, without = run(True), run(False)
  np.testing.assert_allclose(with_cfg.variance_trajectory[:, 0], without.variance_trajectory[:, 0],
                             atol=1e-5)
  assert np.abs(with_cfg.variance_trajectory[:, 1] - without.variance_trajectory[:, 1]).max() > 0


def _zero_variance_half(sd, params, value):
  """The UNet params with the output conv's v channels set to `value` (bias) and 0 (kernel)."""
  conv = dict(params["unet"]["conv_out"])
  channels = sd.latent_channels
  conv["kernel"] = jnp.asarray(conv["kernel"]).at[..., channels:].set(0.0)
  conv["bias"] = jnp.asarray(conv["bias"]).at[channels:].set(value)
  return dict(params, unet=dict(params["unet"], conv_out=conv))


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm_fixed"])
def test_deterministic_and_fixed_rules_ignore_the_variance_half(lv_model, scheduler):
  sd, params, cond, uncond, latents, keys = lv_model
  settings = (sampler_lib.SamplerSettings(scheduler="ddpm", num_steps=STEPS,
                                          variance_type="fixed_small", return_latents=True)
              if scheduler == "ddpm_fixed" else
              sampler_lib.SamplerSettings(scheduler="ddim", num_steps=STEPS, return_latents=True))
  outs = [sampler_lib.PopulationSampler(sd, _zero_variance_half(sd, params, b), settings)(
      latents, cond, uncond, SCALE, noise_keys=keys).latents for b in (-1.0, 1.0)]
  np.testing.assert_array_equal(outs[0], outs[1])
  learned = [sampler_lib.PopulationSampler(sd, _zero_variance_half(sd, params, b),
                                           sampler_lib.SamplerSettings(
                                               scheduler="ddpm", num_steps=STEPS,
                                               variance_type="learned_range",
                                               return_latents=True))(
      latents, cond, uncond, SCALE, noise_keys=keys).latents for b in (-1.0, 1.0)]
  assert np.abs(learned[0] - learned[1]).mean() > 1e-3


def test_population_split_does_not_matter(lv_model):
  """Members sampled in chunks of 1, or alone, equal the whole population's."""
  sd, params, cond, uncond, latents, keys = lv_model
  settings = sampler_lib.SamplerSettings(scheduler="ddpm", num_steps=STEPS,
                                         variance_type="learned_range", return_latents=True)
  whole = sampler_lib.PopulationSampler(sd, params, settings)(latents, cond, uncond, SCALE,
                                                              noise_keys=keys)
  chunked = sampler_lib.PopulationSampler(sd, params, settings, microbatch=1)(
      latents, cond, uncond, SCALE, noise_keys=keys)
  alone = sampler_lib.PopulationSampler(sd, params, settings)(
      latents[2:], cond[2:], uncond, SCALE, noise_keys=keys[2:])
  # Latents of this random model reach |z| ~ 20; float32 convolutions of other batch sizes
  # round differently (~1e-5 relative).
  np.testing.assert_allclose(chunked.latents, whole.latents, rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(alone.latents[0], whole.latents[2], rtol=1e-4, atol=1e-3)


def test_errors(lv_model, tiny_sd_model):
  sd, params, cond, uncond, latents, _ = lv_model
  ancestral = sampler_lib.PopulationSampler(sd, params, sampler_lib.SamplerSettings(
      scheduler="ddpm", num_steps=2))
  with pytest.raises(ValueError, match="noise_keys"):
    ancestral(latents, cond, uncond, SCALE)
  with pytest.raises(ValueError, match="noise_keys has shape"):
    ancestral(latents, cond, uncond, SCALE, noise_keys=np.zeros((2, 2), np.uint32))
  with pytest.raises(ConfigError, match="variance_type"):
    sampler_lib.SamplerSettings(scheduler="ddim", variance_type="learned_range").validate()
  with pytest.raises(ConfigError, match="variance_type"):
    sampler_lib.SamplerSettings(scheduler="ddpm", variance_type="learned").validate()
  fixed_sd, _ = tiny_sd_model
  with pytest.raises(ConfigError, match="no variance output"):
    sampler_lib.FusedSampler.build(fixed_sd, sampler_lib.SamplerSettings(
        scheduler="ddpm", num_steps=2, variance_type="learned_range"))
  with pytest.raises(ValueError, match="learned-variance UNet"):
    sampler_lib.FusedSampler.build(fixed_sd, sampler_lib.SamplerSettings(
        num_steps=2, trajectory=("variance",)))(
            {"sd": {"unet": None, "vae": None}, "score": None}, latents, cond, uncond, 1.0)


def test_eight_devices_match_one(tiny_lv_dir, tmp_path):
  """The ancestral learned-variance sampler on 8 fake CPU devices (P = 5, and microbatch 1)
  == on one device (separate process: the device count is fixed at JAX start-up)."""
  worker = pathlib.Path(__file__).with_name("multidevice_worker.py")
  out = tmp_path / "out.npz"
  proc = subprocess.run([sys.executable, str(worker), str(tiny_lv_dir), str(out), "ancestral"],
                        env=dict(os.environ, PYTHONPATH=str(_ROOT)), capture_output=True,
                        text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = np.load(out)
  for name in ("eight", "eight_mb1"):
    np.testing.assert_allclose(r[name + "_latents"], r["single_latents"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(r[name + "_images"], r["single_images"], atol=1e-4)
    assert int(r[name + "_devices"]) == 8
  assert np.abs(r["single_latents"]).mean() > 0.1
