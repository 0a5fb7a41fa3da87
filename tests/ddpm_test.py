"""jaxdiffattack.ddpm (posterior, learned variance, hybrid loss) and the ancestral DDPM step rule.

References: the DDPM posterior re-derived by conditioning the joint Gaussian of (x_prev, x_t)
given x_0 (not the closed form the code uses), the Gaussian KL in its standard-deviation form,
scipy's normal log-density, and PyTorch diffusers' `DDPMScheduler` driven by the same synthetic
model and the same noise.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxdiffattack import ddpm
from jaxdiffattack import schedulers as sch

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SD = {"_class_name": "DDPMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
      "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "steps_offset": 1,
      "clip_sample": False, "set_alpha_to_one": False, "variance_type": "learned_range",
      "trained_betas": None}
SHAPE = (2, 4, 8, 8)
TOL = 1e-5  # max |ours - reference| / max(1, max |reference|)


def _abar() -> np.ndarray:
  betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
  return np.cumprod(1.0 - betas)


def _ref_posterior(abar_t, abar_prev, x0, xt):
  """Mean and variance of x_prev | x_t, x_0 by Gaussian conditioning (float64).

  x_prev = √ᾱ_prev x0 + √(1 − ᾱ_prev) e1,  x_t = √(ᾱ_t / ᾱ_prev) x_prev + √(1 − ᾱ_t / ᾱ_prev) e2.
  """
  var_prev = 1.0 - abar_prev
  cov = np.sqrt(abar_t / abar_prev) * var_prev
  var_t = 1.0 - abar_t
  mean = np.sqrt(abar_prev) * x0 + cov / var_t * (xt - np.sqrt(abar_t) * x0)
  return mean, var_prev - cov ** 2 / var_t


def _model(x, t, lib):
  """Synthetic 2C-channel output on axis 1: ε, then v (partly outside [-1, 1])."""
  eps = 0.3 * lib.tanh(x) + 0.05 * lib.cos(t / 97 + x)
  v = 1.2 * lib.tanh(0.5 * x + t / 500 - 1.0)
  return lib.concatenate([eps, v], 1) if lib is jnp else torch.cat([eps, v], 1)


def _rel_err(ours, ref) -> float:
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  return float(np.abs(ours - ref).max() / max(1.0, np.abs(ref).max()))


# ------------------------------------------------------------------------------ ddpm.py maths --

def test_normal_kl_matches_the_std_form():
  rng = np.random.default_rng(0)
  m1, m2 = rng.normal(size=(2, 50))
  lv1, lv2 = rng.uniform(-8, 1, size=(2, 50))
  s1, s2 = np.exp(lv1 / 2), np.exp(lv2 / 2)
  ref = np.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5
  np.testing.assert_allclose(ddpm.normal_kl(m1, lv1, m2, lv2), ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ddpm.normal_kl(m1, lv1, m1, lv1), 0.0, atol=1e-6)


def test_gaussian_nll_matches_scipy():
  rng = np.random.default_rng(1)
  x, mean = rng.normal(size=(2, 40))
  logvar = rng.uniform(-9, 1, size=40)
  ref = -stats.norm.logpdf(x, mean, np.exp(logvar / 2))
  np.testing.assert_allclose(ddpm.gaussian_nll(x, mean, logvar), ref, rtol=1e-5, atol=1e-5)


def test_posterior_matches_gaussian_conditioning():
  abar = _abar()
  rng = np.random.default_rng(2)
  ts = np.array([999, 981, 500, 41, 1])
  prev = np.array([981, 961, 480, 21, 0])  # respaced: gaps of 18-20 train steps
  post = ddpm.posterior(abar[ts], abar[prev])
  x0, xt = rng.normal(size=(2, len(ts)))
  ref_mean, ref_var = _ref_posterior(abar[ts], abar[prev], x0, xt)
  np.testing.assert_allclose(post.coef_x0 * x0 + post.coef_xt * xt, ref_mean, rtol=1e-10)
  np.testing.assert_allclose(np.exp(post.log_beta_tilde), ref_var, rtol=1e-10)
  np.testing.assert_allclose(np.exp(post.log_beta), 1 - abar[ts] / abar[prev], rtol=1e-12)
  # The end of the chain: ᾱ_prev = 1, β̃ = 0 (floored), the mean is x0.
  end = ddpm.posterior(abar[[3]], np.ones(1))
  assert end.log_beta_tilde[0] == np.log(ddpm.VARIANCE_FLOOR)
  np.testing.assert_allclose([end.coef_x0[0], end.coef_xt[0]], [1.0, 0.0], atol=1e-12)


def test_train_tables_clip_the_first_log_variance():
  abar = _abar()
  tables = ddpm.train_tables(abar)
  _, var1 = _ref_posterior(abar[1], abar[0], 0.0, 0.0)
  np.testing.assert_allclose(np.asarray(tables.log_beta_tilde)[:2], np.log([var1, var1]), rtol=1e-6)
  np.testing.assert_allclose(tables.log_beta[0], np.log(1 - abar[0]), rtol=1e-6)


def test_learned_log_variance_interpolates():
  lo, hi = np.log(1e-4), np.log(1e-2)
  out = ddpm.learned_log_variance(jnp.array([-1.0, 0.0, 1.0]), lo, hi)
  np.testing.assert_allclose(out, [lo, (lo + hi) / 2, hi], rtol=1e-6)


def _hybrid_batch(seed=3):
  rng = np.random.default_rng(seed)
  t = np.array([0, 1, 500, 999])
  x0 = rng.normal(size=(4, 2, 3, 3)).astype(np.float32)
  noise = rng.normal(size=x0.shape).astype(np.float32)
  a = _abar()[t][:, None, None, None]
  xt = (np.sqrt(a) * x0 + np.sqrt(1 - a) * noise).astype(np.float32)
  out = np.concatenate([noise + 0.3 * rng.normal(size=x0.shape),
                        rng.uniform(-1.2, 1.2, size=x0.shape)], 1).astype(np.float32)
  return out, x0, xt, noise, t


def test_hybrid_loss_matches_numpy():
  out, x0, xt, noise, t = _hybrid_batch()
  abar = _abar()
  loss, parts = ddpm.hybrid_loss(out, x0, xt, noise, t, ddpm.train_tables(abar), 0.001)
  eps, v = out[:, :2].astype(np.float64), out[:, 2:].astype(np.float64)
  mse = np.mean((eps - noise) ** 2)
  vlb = []
  for i, ti in enumerate(t):
    a, ap = abar[ti], (abar[ti - 1] if ti > 0 else 1.0)
    x0_pred = (xt[i] - np.sqrt(1 - a) * eps[i]) / np.sqrt(a)
    mean_true, var_true = _ref_posterior(a, ap, x0[i], xt[i])
    mean_model, _ = _ref_posterior(a, ap, x0_pred, xt[i])
    var_min = var_true if ti > 0 else _ref_posterior(abar[1], abar[0], 0.0, 0.0)[1]
    frac = (v[i] + 1) / 2
    sd_model = np.exp(0.5 * (frac * np.log(1 - a / ap) + (1 - frac) * np.log(var_min)))
    if ti == 0:
      nats = -stats.norm.logpdf(x0[i], mean_model, sd_model)
    else:
      sd_true = np.sqrt(var_true)
      nats = (np.log(sd_model / sd_true) - 0.5
              + (sd_true ** 2 + (mean_true - mean_model) ** 2) / (2 * sd_model ** 2))
    vlb.append(np.mean(nats) / np.log(2))
  np.testing.assert_allclose(parts["mse"], mse, rtol=1e-5)
  np.testing.assert_allclose(parts["vlb"], np.mean(vlb), rtol=2e-4)
  np.testing.assert_allclose(loss, mse + 0.001 * 1000 * np.mean(vlb), rtol=2e-4)


def test_hybrid_loss_trains_the_mean_only_through_l_simple():
  out, x0, xt, noise, t = _hybrid_batch(4)
  tables = ddpm.train_tables(_abar())
  grad = jax.grad(lambda o: ddpm.hybrid_loss(o, x0, xt, noise, t, tables)[0])(jnp.asarray(out))
  # ε half: exactly the gradient of the mean squared error (L_vlb is stop-gradiented there).
  np.testing.assert_allclose(grad[:, :2], 2 * (out[:, :2] - noise) / noise.size, rtol=1e-5,
                             atol=1e-9)
  assert np.abs(np.asarray(grad[:, 2:])).max() > 0  # v learns from L_vlb.


def test_hybrid_loss_refuses_an_epsilon_only_output():
  out, x0, xt, noise, t = _hybrid_batch()
  with pytest.raises(ValueError, match="2C-channel"):
    ddpm.hybrid_loss(out[:, :2], x0, xt, noise, t, ddpm.train_tables(_abar()))


# ------------------------------------------------------------------ the ancestral step rule --

@pytest.mark.parametrize("n", [10, 25, 500])
def test_learned_step_matches_the_numpy_posterior(n):
  sched = sch.make_scheduler("ddpm", SD, n)
  ts = np.arange(n)[::-1] * (1000 // n) + 1  # "leading" spacing, steps_offset 1
  np.testing.assert_array_equal(sched.timesteps, ts)
  abar = _abar()
  rng = np.random.default_rng(n)
  for s in sorted({0, 1, n // 2, n - 2, n - 1}):
    x = rng.normal(size=SHAPE).astype(np.float32)
    out = np.asarray(_model(jnp.asarray(x), float(ts[s]), jnp))
    noise = rng.normal(size=SHAPE).astype(np.float32)
    mean, log_var, x0 = sched.posterior(jnp.int32(s), out, x)
    prev, _, _ = sched.step((), jnp.int32(s), out, x, noise)
    a, ap = abar[ts[s]], (abar[ts[s + 1]] if s + 1 < n else 1.0)
    eps, v = out[:, :4].astype(np.float64), out[:, 4:].astype(np.float64)
    ref_x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
    ref_mean, ref_var = _ref_posterior(a, ap, ref_x0, x)
    frac = (v + 1) / 2
    ref_log_var = (frac * np.log(1 - a / ap)
                   + (1 - frac) * np.log(max(ref_var, ddpm.VARIANCE_FLOOR)))
    assert _rel_err(x0, ref_x0) <= TOL
    assert _rel_err(mean, ref_mean) <= TOL, f"mean at step {s}"
    np.testing.assert_allclose(log_var, ref_log_var, rtol=1e-5, atol=1e-5)
    ref_prev = ref_mean + np.exp(0.5 * ref_log_var) * noise  # t > 0 everywhere here
    assert _rel_err(prev, ref_prev) <= TOL, f"sample at step {s}"


def _run_torch(config, n, z, seed):
  sched = diffusers.DDPMScheduler.from_config(config)
  sched.set_timesteps(n)
  gen = torch.Generator().manual_seed(seed)
  x, x0s = torch.from_numpy(z), []
  for t in sched.timesteps:
    model_output = _model(x, t, torch)
    if config["variance_type"] != "learned_range":  # diffusers splits only a learned output
      model_output = model_output[:, :SHAPE[1]]
    out = sched.step(model_output, t, x, generator=gen)
    x0s.append(out.pred_original_sample)
    x = out.prev_sample
  return x.numpy(), torch.stack(x0s).numpy(), sched.timesteps.numpy()


def _torch_noises(timesteps, seed):
  """The noises diffusers draws: one standard normal per step with t > 0, in step order."""
  gen = torch.Generator().manual_seed(seed)
  return np.stack([torch.randn(SHAPE, generator=gen).numpy() if t > 0
                   else np.zeros(SHAPE, np.float32) for t in timesteps])


def _run_jax(sched, z, noises):
  def body(x, inputs):
    s, noise = inputs
    out = _model(x, jnp.asarray(sched.timesteps, jnp.float32)[s], jnp)
    x, _, x0 = sched.step((), s, out, x, noise)
    return x, x0
  steps = jnp.arange(len(sched.timesteps), dtype=jnp.int32)
  return jax.lax.scan(body, jnp.asarray(z), (steps, noises))


@pytest.mark.parametrize("n, overrides", [
    (1, {}), (10, {}), (50, {}),
    (10, dict(variance_type="fixed_small")),
    (10, dict(variance_type="fixed_large")),
    (20, dict(timestep_spacing="linspace")),
    (7, dict(timestep_spacing="trailing", variance_type="fixed_large")),
    (8, dict(prediction_type="v_prediction", variance_type="fixed_small")),
    (6, dict(clip_sample=True, clip_sample_range=1.5, steps_offset=0)),
])
def test_parity_with_diffusers_ddpm(n, overrides):
  config = {**SD, **overrides}
  z = np.random.default_rng(n).standard_normal(SHAPE).astype(np.float32)
  ref_x, ref_x0, ref_ts = _run_torch(config, n, z, seed=n)
  sched = sch.make_scheduler("ddpm", config, n)
  np.testing.assert_array_equal(sched.timesteps, ref_ts)
  x, x0s = jax.jit(lambda z, e: _run_jax(sched, z, e))(z, _torch_noises(ref_ts, seed=n))
  for s in range(n):
    assert _rel_err(x0s[s], ref_x0[s]) <= TOL, f"pred_original_sample at step {s}"
  assert _rel_err(x, ref_x) <= TOL


def test_posterior_mean_final_step_adds_no_noise():
  n, z = 10, np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
  noises = np.random.default_rng(1).standard_normal((n,) + SHAPE).astype(np.float32)
  paper = sch.make_scheduler("ddpm", SD, n, final_step="posterior_mean")
  ours = sch.make_scheduler("ddpm", SD, n)
  assert paper.timesteps[-1] == 1  # diffusers adds noise at this last step; the paper does not.
  np.testing.assert_array_equal(paper.noise_scale, [1] * (n - 1) + [0])
  np.testing.assert_array_equal(ours.noise_scale, [1] * n)
  x_paper, _ = _run_jax(paper, z, noises)
  x_ours, _ = _run_jax(ours, z, noises)
  no_last = noises * (np.arange(n) < n - 1)[:, None, None, None, None]
  np.testing.assert_array_equal(x_paper, _run_jax(paper, z, no_last)[0])  # last noise unused
  assert np.abs(np.asarray(x_paper - x_ours)).max() > 0


def test_fixed_variances_ignore_a_variance_half():
  sched = sch.make_scheduler("ddpm", SD, 10, variance_type="fixed_large")
  x = jnp.asarray(np.random.default_rng(5).standard_normal(SHAPE), jnp.float32)
  out = _model(x, 500.0, jnp)
  full = sched.step((), jnp.int32(3), out, x, x)
  eps_only = sched.step((), jnp.int32(3), out[:, :4], x, x)
  np.testing.assert_array_equal(full[0], eps_only[0])


@pytest.mark.parametrize("overrides, match", [
    (dict(variance_type="learned"), "variance_type='learned'"),
    (dict(variance_type="fixed_small_log"), "variance_type='fixed_small_log'"),
    (dict(final_step="paper"), "final_step='paper'"),
    (dict(thresholding=True), "thresholding=True"),
])
def test_unsupported_ddpm_config(overrides, match):
  with pytest.raises(ValueError, match=match):
    sch.make_scheduler("ddpm", SD, 10, **overrides)


def test_learned_range_needs_the_variance_half():
  sched = sch.make_scheduler("ddpm", SD, 10)
  x = jnp.zeros(SHAPE)
  with pytest.raises(ValueError, match="needs a model output with 8 channels"):
    sched.step((), jnp.int32(0), x, x, x)
  with pytest.raises(ValueError, match="has 6 channels"):
    sched.step((), jnp.int32(0), jnp.zeros((2, 6, 8, 8)), x, x)
