"""DDPM reverse-process maths with a learned variance: one module for training and sampling.

Ho et al. 2020 ("Denoising Diffusion Probabilistic Models", eq. 6–7): for a chain step from
noise level ᾱ_t down to ᾱ_prev (the previous *kept* timestep when sampling with S < T steps,
or t − 1 in training; ᾱ_prev = 1 at the end of the chain),

  α_t = ᾱ_t / ᾱ_prev,   β_t = 1 − α_t                      (the respaced β'_t for S < T)
  q(x_prev | x_t, x_0) = N(μ̃_t, β̃_t I),
  μ̃_t = √ᾱ_prev β_t / (1 − ᾱ_t) · x_0 + √α_t (1 − ᾱ_prev) / (1 − ᾱ_t) · x_t,
  β̃_t = (1 − ᾱ_prev) / (1 − ᾱ_t) · β_t.

Nichol & Dhariwal 2021 ("Improved Denoising Diffusion Probabilistic Models", §3.1, eq. 15):
the model outputs 2C channels, ε (first C) and v (last C), and

  Σ_θ(x_t, t) = exp(f · log β_t + (1 − f) · log β̃_t),   f = (v + 1) / 2.

Literal choice: the paper writes v itself as the interpolation weight; its released code
(improved-diffusion, `model_var_type=LEARNED_RANGE`) maps the raw output to f = (v + 1) / 2,
and diffusers' `DDPMScheduler(variance_type="learned_range")` does the same. We follow the
code: `learned_log_variance(v, ...)` takes the raw network output v.

Hybrid loss (§3.1): L_hybrid = L_simple + λ L_vlb, λ = 0.001. With t ~ U{0..T−1} the
unbiased estimate of L_vlb = Σ_t L_t is T · L_t, so the loss per batch is
mean‖ε − ε_θ‖² + λ · T · L_t (improved-diffusion's `vb * num_timesteps / 1000`). L_t is in bits
per dimension (a mean over latent elements, divided by ln 2):

* t > 0: KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)), with a stop-gradient on ε in μ_θ,
  so that L_vlb trains only the variance (the paper's "stop-gradient on μ_θ(x_t, t)").
* t = 0 (the first noise level, the paper's x_1; its "previous" is the clean latent): the
  decoder term −log p_θ(x_0 | x_1). The paper's images are discrete and use a
  discretised Gaussian; latents are continuous, so this is the Gaussian NLL (a density, which
  may be negative) of the clean latent under N(μ_θ, Σ_θ).

At t = 0, β̃_0 = 0; as in improved-diffusion the training tables use β̃_1 in its place for the
lower end of the interpolation (`posterior_log_variance_clipped`). Step rules that sample
(schedulers.DDPM) floor β̃ at `VARIANCE_FLOOR` instead, as diffusers does; only the final
step, where the paper adds no noise, sees the difference.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

VARIANCE_FLOOR = 1e-20  # diffusers' clamp of β̃ before its log.
LAMBDA_VLB = 0.001      # λ of the hybrid loss (Nichol & Dhariwal 2021, §3.1).
CHANNEL_AXIS = -3       # latents are [..., C, h, w]; learned-variance outputs [..., 2C, h, w].


class Posterior(NamedTuple):
  """Coefficients of q(x_prev | x_t, x_0) for a chain of steps (float64 numpy, [N] each)."""
  coef_x0: np.ndarray         # √ᾱ_prev β / (1 − ᾱ_t)
  coef_xt: np.ndarray         # √α (1 − ᾱ_prev) / (1 − ᾱ_t)
  log_beta: np.ndarray        # log β: the upper end of the learned range ("fixed_large")
  log_beta_tilde: np.ndarray  # log max(β̃, VARIANCE_FLOOR): the lower end ("fixed_small")


def posterior(abar_t, abar_prev) -> Posterior:
  """q(x_prev | x_t, x_0) for steps ᾱ_t → ᾱ_prev (arrays of equal shape, ᾱ_prev ≥ ᾱ_t)."""
  abar_t = np.asarray(abar_t, np.float64)
  abar_prev = np.asarray(abar_prev, np.float64)
  alpha = abar_t / abar_prev
  beta = 1.0 - alpha
  beta_tilde = (1.0 - abar_prev) / (1.0 - abar_t) * beta
  return Posterior(
      coef_x0=np.sqrt(abar_prev) * beta / (1.0 - abar_t),
      coef_xt=np.sqrt(alpha) * (1.0 - abar_prev) / (1.0 - abar_t),
      log_beta=np.log(beta),
      log_beta_tilde=np.log(np.maximum(beta_tilde, VARIANCE_FLOOR)))


def split_eps_and_v(model_output: jax.Array, channels: int
                   ) -> tuple[jax.Array, jax.Array | None]:
  """[..., 2C, h, w] → (ε [..., C, h, w], v [..., C, h, w]); a C-channel output → (it, None)."""
  n = model_output.shape[CHANNEL_AXIS]
  if n == channels:
    return model_output, None
  if n != 2 * channels:
    raise ValueError(f"model output has {n} channels on axis {CHANNEL_AXIS}; expected "
                     f"{channels} (ε) or {2 * channels} (ε and the variance v)")
  return jnp.split(model_output, 2, axis=CHANNEL_AXIS)


def learned_log_variance(v: jax.Array, min_log: jax.Array, max_log: jax.Array) -> jax.Array:
  """log Σ_θ = f · max_log + (1 − f) · min_log with f = (v + 1) / 2 (v: raw network output)."""
  frac = (v + 1.0) / 2.0
  return frac * max_log + (1.0 - frac) * min_log


def normal_kl(mean1, logvar1, mean2, logvar2) -> jax.Array:
  """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) per element, in nats."""
  return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                + (mean1 - mean2) ** 2 * jnp.exp(-logvar2))


def gaussian_nll(x, mean, logvar) -> jax.Array:
  """−log N(x; mean, e^logvar) per element, in nats (a continuous density)."""
  return 0.5 * (jnp.log(2.0 * jnp.pi) + logvar + (x - mean) ** 2 * jnp.exp(-logvar))


class TrainTables(NamedTuple):
  """Per-timestep constants of the full T-step training chain ([T] float32 each)."""
  sqrt_abar: jax.Array
  sqrt_one_minus_abar: jax.Array
  coef_x0: jax.Array
  coef_xt: jax.Array
  log_beta: jax.Array
  log_beta_tilde: jax.Array  # index 0 holds β̃_1 (improved-diffusion's clipped log-variance)


def train_tables(alphas_cumprod) -> TrainTables:
  """Tables of the T-step chain t → t − 1 (ᾱ_{−1} = 1) from ᾱ [T]."""
  abar = np.asarray(alphas_cumprod, np.float64)
  post = posterior(abar, np.concatenate([[1.0], abar[:-1]]))
  log_beta_tilde = post.log_beta_tilde.copy()
  log_beta_tilde[0] = log_beta_tilde[1]
  as32 = lambda a: jnp.asarray(a, jnp.float32)
  return TrainTables(as32(np.sqrt(abar)), as32(np.sqrt(1.0 - abar)), as32(post.coef_x0),
                     as32(post.coef_xt), as32(post.log_beta), as32(log_beta_tilde))


def _per_example_mean(x: jax.Array) -> jax.Array:
  return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


def hybrid_loss(model_output: jax.Array, x0: jax.Array, xt: jax.Array, noise: jax.Array,
                t: jax.Array, tables: TrainTables, lambda_vlb: float = LAMBDA_VLB
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L_simple + λ · T · L_t for a batch (see the module docstring).

  Args:
    model_output: [B, 2C, h, w] the network's ε (first C channels) and v (last C).
    x0: [B, C, h, w] clean latents; xt: [B, C, h, w] = √ᾱ_t x0 + √(1 − ᾱ_t) noise.
    noise: [B, C, h, w] the ε that made xt.
    t: [B] int timesteps in [0, T).
    tables: `train_tables` of the training schedule.
    lambda_vlb: λ.

  Returns:
    (loss, {"mse": L_simple, "vlb": mean L_t in bits/dim}), scalars.
  """
  eps, v = split_eps_and_v(model_output, x0.shape[CHANNEL_AXIS])
  if v is None:
    raise ValueError("hybrid_loss needs a 2C-channel model output (ε and v)")
  mse = jnp.mean((eps - noise) ** 2)
  at = lambda table: table[t].reshape((-1,) + (1,) * (x0.ndim - 1))
  x0_pred = (xt - at(tables.sqrt_one_minus_abar) * jax.lax.stop_gradient(eps)) / at(
      tables.sqrt_abar)
  mean_model = at(tables.coef_x0) * x0_pred + at(tables.coef_xt) * xt
  mean_true = at(tables.coef_x0) * x0 + at(tables.coef_xt) * xt
  min_log = at(tables.log_beta_tilde)
  logvar_model = learned_log_variance(v, min_log, at(tables.log_beta))
  kl = _per_example_mean(normal_kl(mean_true, min_log, mean_model, logvar_model))
  nll = _per_example_mean(gaussian_nll(x0, mean_model, logvar_model))
  vlb = jnp.mean(jnp.where(t == 0, nll, kl)) / np.log(2.0)
  num_timesteps = tables.sqrt_abar.shape[0]
  return mse + lambda_vlb * num_timesteps * vlb, {"mse": mse, "vlb": vlb}
