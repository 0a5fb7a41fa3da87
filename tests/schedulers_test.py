"""Parity of jaxdiffattack.schedulers with the PyTorch diffusers schedulers.

No UNet: both sides are driven by the same smooth synthetic "model"
eps(x, t) = 0.3 tanh(x) + 0.05 cos(t / 97 + x), from the same
x_T = z * init_noise_sigma.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffattack import schedulers as sch

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

torch.set_num_threads(1)
# diffusers 0.39 + numpy 2 warn about `__array__(copy=...)`; not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SD15 = {"_class_name": "PNDMScheduler", "beta_start": 0.00085,
        "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000, "set_alpha_to_one": False,
        "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False,
        "trained_betas": None}
SD2V = {**SD15, "_class_name": "DDIMScheduler",
        "prediction_type": "v_prediction"}
PT_CLASSES = {"ddim": diffusers.DDIMScheduler, "pndm": diffusers.PNDMScheduler,
              "dpmsolver++": diffusers.DPMSolverMultistepScheduler,
              "euler": diffusers.EulerDiscreteScheduler}
SHAPE = (2, 4, 8, 8)
# Max |ours - diffusers| / max(1, max |diffusers|), per step and at the end.
TOL = 1e-5


def _model(x, t, lib):
  """Synthetic nonlinear model output; lib is torch or jax.numpy."""
  return 0.3 * lib.tanh(x) + 0.05 * lib.cos(t / 97 + x)


def _z(seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)


def _torch_scheduler(name, config, n):
  sched = PT_CLASSES[name].from_config(config)
  sched.set_timesteps(n)
  return sched


def _run_torch(name, config, n, z):
  """diffusers' denoising loop -> (final sample, [S, *x] x0 predictions)."""
  sched = _torch_scheduler(name, config, n)
  x = z * sched.init_noise_sigma
  x0s = []
  for t in sched.timesteps:
    model_output = _model(sched.scale_model_input(x, t), t, torch)
    out = sched.step(model_output, t, x)
    if name == "dpmsolver++":  # The converted model output is the x0 pred.
      x0s.append(sched.model_outputs[-1])
    elif name == "pndm":  # Not exposed by diffusers: x0 from the raw output.
      a = sched.alphas_cumprod[t].double()
      x64, m64 = x.double(), model_output.double()
      if sched.config.prediction_type == "epsilon":
        x0s.append((x64 - (1 - a).sqrt() * m64) / a.sqrt())
      else:
        x0s.append(a.sqrt() * x64 - (1 - a).sqrt() * m64)
    else:
      x0s.append(out.pred_original_sample)
    x = out.prev_sample
  return x, torch.stack(x0s)


def _run_jax(sched, z):
  """Our sampler: one lax.scan over the S model calls."""
  def body(carry, s):
    x, state = carry
    t = jnp.asarray(sched.timesteps)[s]
    model_output = _model(sched.scale_model_input(state, x, s), t, jnp)
    x, state, x0 = sched.step(state, s, model_output, x)
    return (x, state), x0

  x = z * sched.init_noise_sigma
  steps = jnp.arange(len(sched.timesteps), dtype=jnp.int32)
  (x, _), x0s = jax.lax.scan(body, (x, sched.init_state(x)), steps)
  return x, x0s


def _run_jax_eager(sched, z):
  """Python loop, no jit and no scan."""
  x = jnp.asarray(z) * sched.init_noise_sigma
  state, x0s = sched.init_state(x), []
  for s in range(len(sched.timesteps)):
    t = jnp.asarray(sched.timesteps)[s]
    model_output = _model(sched.scale_model_input(state, x, s), t, jnp)
    x, state, x0 = sched.step(state, jnp.int32(s), model_output, x)
    x0s.append(x0)
  return x, jnp.stack(x0s)


def _rel_err(ours, ref) -> float:
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  return float(np.abs(ours - ref).max() / max(1.0, np.abs(ref).max()))


def _check_parity(name, config, n, **overrides):
  z = _z(n)
  sched = sch.make_scheduler(name, config, n, **overrides)
  ref_x, ref_x0 = _run_torch(name, {**config, **overrides}, n,
                             torch.from_numpy(z))
  x, x0s = jax.jit(lambda z: _run_jax(sched, z))(z)
  assert x0s.shape == tuple(ref_x0.shape)
  assert np.isfinite(np.asarray(x)).all()
  for s in range(len(sched.timesteps)):
    err = _rel_err(x0s[s], ref_x0[s])
    assert err <= TOL, f"pred_original_sample at step {s}: {err:.2e}"
  err = _rel_err(x, ref_x)
  assert err <= TOL, f"final sample: {err:.2e}"


@pytest.mark.parametrize("n", [1, 2, 3, 5, 50])
@pytest.mark.parametrize("config", [SD15, SD2V], ids=["eps", "v"])
@pytest.mark.parametrize("name", list(sch.SCHEDULERS))
def test_parity_sd_configs(name, config, n):
  _check_parity(name, config, n)


@pytest.mark.parametrize("name, n, overrides", [
    ("ddim", 5, dict(timestep_spacing="trailing")),
    ("ddim", 50, dict(timestep_spacing="trailing")),
    ("ddim", 5, dict(timestep_spacing="linspace")),
    ("ddim", 20, dict(timestep_spacing="linspace")),
    ("ddim", 4, dict(clip_sample=True, clip_sample_range=1.5)),
    ("ddim", 10, dict(prediction_type="sample", set_alpha_to_one=True,
                      beta_schedule="linear", beta_start=1e-4, beta_end=0.02)),
    ("ddim", 6, dict(timestep_spacing="trailing", rescale_betas_zero_snr=True,
                     prediction_type="v_prediction")),
    ("pndm", 4, dict(timestep_spacing="trailing")),
    ("pndm", 7, dict(timestep_spacing="linspace",
                     beta_schedule="squaredcos_cap_v2")),
    ("dpmsolver++", 20, dict(solver_order=1)),
    ("dpmsolver++", 20, dict(solver_order=3)),
    ("dpmsolver++", 4, dict(solver_order=3)),
    ("dpmsolver++", 8, dict(solver_type="heun")),
    ("dpmsolver++", 20, dict(timestep_spacing="leading")),
    ("dpmsolver++", 7, dict(timestep_spacing="trailing",
                            final_sigmas_type="sigma_min")),
    ("dpmsolver++", 10, dict(prediction_type="sample")),
    ("euler", 20, dict(timestep_spacing="leading")),
    ("euler", 7, dict(timestep_spacing="trailing")),
    ("euler", 6, dict(final_sigmas_type="sigma_min",
                      prediction_type="sample")),
])
def test_parity_config_variants(name, n, overrides):
  _check_parity(name, SD15, n, **overrides)


@pytest.mark.parametrize("name", list(sch.SCHEDULERS))
def test_timesteps_and_init_noise_sigma_match_diffusers(name):
  for spacing in ("leading", "trailing", "linspace"):
    for n in (1, 2, 3, 5, 7, 10, 20, 25, 50, 100, 999):
      config = {**SD15, "timestep_spacing": spacing}
      if (name, spacing, n) == ("dpmsolver++", "leading", 999):
        # t = 1000 and 999 share a sigma: diffusers' update divides by zero.
        with pytest.raises(ValueError, match="repeats a noise level"):
          sch.make_scheduler(name, config, n)
        continue
      ours = sch.make_scheduler(name, config, n)
      ref = _torch_scheduler(name, config, n)
      expected = ref.timesteps.numpy()
      np.testing.assert_array_equal(ours.timesteps, expected,
                                    err_msg=f"{spacing}, n={n}")
      assert ours.timesteps.dtype == (np.float32 if name == "euler"
                                      else np.int32)
      assert ours.num_inference_steps == n
      if name == "pndm":
        assert len(ours.timesteps) == (n + 1 if n > 1 else 1)
      np.testing.assert_allclose(ours.init_noise_sigma,
                                 float(ref.init_noise_sigma), rtol=1e-6)


@pytest.mark.parametrize("name", list(sch.SCHEDULERS))
def test_grad_matches_torch_autograd(name):
  n, z = 5, _z(1)
  sched = sch.make_scheduler(name, SD2V, n)
  grad = jax.jit(jax.grad(lambda z: _run_jax(sched, z)[0].sum()))(z)
  z_pt = torch.from_numpy(z).requires_grad_(True)
  _run_torch(name, SD2V, n, z_pt)[0].sum().backward()
  assert np.isfinite(np.asarray(grad)).all()
  assert np.abs(np.asarray(grad)).max() > 0
  assert _rel_err(grad, z_pt.grad.numpy()) <= 1e-5


@pytest.mark.parametrize("name", list(sch.SCHEDULERS))
def test_jit_scan_matches_eager_loop(name):
  z = _z(2)
  sched = sch.make_scheduler(name, SD15, 5)
  x, x0s = jax.jit(lambda z: _run_jax(sched, z))(z)
  x_eager, x0s_eager = _run_jax_eager(sched, z)
  assert _rel_err(x, x_eager) <= 1e-6
  assert _rel_err(x0s, x0s_eager) <= 1e-6


def test_vmap_over_population_and_bf16():
  sched = sch.make_scheduler("dpmsolver++", SD15, 6)
  zs = np.stack([_z(3), _z(4)])
  xs, _ = jax.jit(jax.vmap(lambda z: _run_jax(sched, z)))(zs)
  for i in range(2):
    assert _rel_err(xs[i], _run_jax(sched, zs[i])[0]) <= 1e-6
  # bf16 inputs: computed in float32, returned in bf16.
  x = jnp.asarray(_z(5), jnp.bfloat16)
  state = sched.init_state(x)
  prev, state, x0 = sched.step(state, jnp.int32(0), 0.3 * jnp.tanh(x), x)
  assert prev.dtype == x0.dtype == jnp.bfloat16
  assert state["x0"].dtype == jnp.float32


def test_unknown_name_lists_allowed():
  allowed = "ddim, ddpm, dpmsolver\\+\\+, euler, pndm"
  with pytest.raises(ValueError, match=f"'lms'.*{allowed}"):
    sch.make_scheduler("lms", SD15, 10)


@pytest.mark.parametrize("n", [0, -3, 1001])
def test_bad_num_inference_steps(n):
  with pytest.raises(ValueError, match="num_inference_steps"):
    sch.make_scheduler("ddim", SD15, n)


@pytest.mark.parametrize("name, overrides, match", [
    ("ddim", dict(beta_schedule="cosine"), "beta_schedule='cosine'"),
    ("euler", dict(prediction_type="flow"), "prediction_type='flow'"),
    ("pndm", dict(prediction_type="sample"), "prediction_type='sample'"),
    ("pndm", dict(skip_prk_steps=False), "skip_prk_steps=False"),
    ("ddim", dict(thresholding=True), "thresholding=True"),
    ("dpmsolver++", dict(use_karras_sigmas=True), "use_karras_sigmas=True"),
    ("dpmsolver++", dict(algorithm_type="sde-dpmsolver++"), "algorithm_type"),
    ("euler", dict(timestep_spacing="uniform"), "timestep_spacing='uniform'"),
    ("ddim", dict(timestep_spacing="trailing"), "negative timestep"),
])
def test_unsupported_config_values(name, overrides, match):
  n = 61 if match == "negative timestep" else 10
  with pytest.raises(ValueError, match=match):
    sch.make_scheduler(name, SD15, n, **overrides)
