"""Functional JAX versions of five diffusers samplers, for use in `lax.scan`.

Each scheduler is a frozen dataclass holding host-side float32 numpy tables
that are precomputed for a fixed `num_inference_steps`. `step` indexes them with
a traced int32 step index, so a whole denoising loop is one `jax.lax.scan` that
can be jitted, vmapped and differentiated. The numerics follow the PyTorch
schedulers of diffusers 0.39.0, built from the same scheduler config dict:

* "ddim":        `DDIMScheduler` with eta = 0, i.e. deterministic DDIM (Song
                 et al. 2020, "Denoising Diffusion Implicit Models", eq. 12).
* "pndm":        `PNDMScheduler.step_plms` with skip_prk_steps=True: pseudo
                 linear multistep (Liu et al. 2022, "Pseudo Numerical Methods
                 for Diffusion Models on Manifolds", PLMS).
* "dpmsolver++": `DPMSolverMultistepScheduler`, algorithm_type "dpmsolver++"
                 (Lu et al. 2022, "DPM-Solver++", multistep 2M; orders 1-3).
* "euler":       `EulerDiscreteScheduler` without churn (Karras et al. 2022,
                 "Elucidating the Design Space of Diffusion-Based Generative
                 Models", Algorithm 1 / Euler step of the probability-flow ODE).
* "ddpm":        `DDPMScheduler`, ancestral (Ho et al. 2020, Algorithm 2) with
                 fixed ("fixed_small" = β̃_t, "fixed_large" = β_t) or learned
                 ("learned_range", Nichol & Dhariwal 2021, §3.1) variance on
                 respaced timesteps; the maths is in `jaxdiffattack.ddpm`. Its
                 `step` takes the noise as a fifth argument (see `DDPM`); it
                 is registered in ANCESTRAL_SCHEDULERS, not SCHEDULERS, since
                 a sampler must supply that noise.

Shapes: S = len(timesteps) model calls; x: any latent shape, e.g. [B, C, H, W].
`pred_original_sample` is the x0 prediction of the model call at step s (for
PNDM, which diffusers does not expose, it is the x0 implied by the raw model
output at the input sample and timestep `timesteps[s]`; for DPM-Solver++ it is
diffusers' `convert_model_output`). `timesteps` are int32, except for Euler:
float32, since diffusers' Euler feeds fractional timesteps (its default
"linspace" spacing) to the UNet.
"""

import dataclasses
import math
from typing import Any, Callable, ClassVar, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack import ddpm

PyTree = Any
_F32 = np.float32


class Scheduler(Protocol):
  """What the population sampler needs from a scheduler."""
  name: str
  num_inference_steps: int
  timesteps: np.ndarray  # [S] UNet timestep input at model call s.
  init_noise_sigma: float

  def init_state(self, latents: jax.Array) -> PyTree:
    ...

  def scale_model_input(self, state: PyTree, sample: jax.Array,
                        step: jax.Array) -> jax.Array:
    ...

  def step(self, state: PyTree, step: jax.Array, model_output: jax.Array,
           sample: jax.Array) -> tuple[jax.Array, PyTree, jax.Array]:
    ...


# ----------------------------------------------------------------------------
# Shared helpers: config, noise schedule, timestep spacing, x0/eps conversion.
# ----------------------------------------------------------------------------

_SCHEDULE_DEFAULTS = dict(
    num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
    beta_schedule="linear", trained_betas=None, prediction_type="epsilon",
    steps_offset=0)


def _resolve(config: dict, defaults: dict) -> dict:
  """diffusers' `from_config`: known keys from `config`, class defaults else."""
  return {k: config.get(k, v) for k, v in defaults.items()}


def _require(cfg: dict, key: str, allowed: tuple) -> None:
  if cfg[key] not in allowed:
    raise ValueError(f"Unsupported scheduler config {key}={cfg[key]!r}; "
                     f"supported: {', '.join(map(repr, allowed))}.")


def _alphas_cumprod(cfg: dict) -> np.ndarray:
  """[T] float32 cumulative product of (1 - beta), as diffusers builds it."""
  n = cfg["num_train_timesteps"]
  if cfg["trained_betas"] is None:
    _require(cfg, "beta_schedule",
             ("linear", "scaled_linear", "squaredcos_cap_v2"))
  if cfg["trained_betas"] is not None:
    betas = np.asarray(cfg["trained_betas"], _F32)
    if betas.shape != (n,):
      raise ValueError(f"trained_betas has shape {betas.shape}, expected "
                       f"({n},).")
  elif cfg["beta_schedule"] == "linear":
    betas = np.linspace(cfg["beta_start"], cfg["beta_end"], n).astype(_F32)
  elif cfg["beta_schedule"] == "scaled_linear":
    betas = np.linspace(cfg["beta_start"]**0.5, cfg["beta_end"]**0.5,
                        n).astype(_F32)**2
  else:  # "squaredcos_cap_v2" (Nichol & Dhariwal 2021 cosine schedule).
    abar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2)**2
    betas = np.array([min(1 - abar((i + 1) / n) / abar(i / n), 0.999)
                      for i in range(n)], _F32)
  alphas_cumprod = np.cumprod((1 - betas).astype(np.float64))
  if cfg.get("rescale_betas_zero_snr"):  # Lin et al. 2023, Alg. 1 (not PNDM).
    sqrt_ab = np.sqrt(alphas_cumprod)
    sqrt_ab = (sqrt_ab - sqrt_ab[-1]) * sqrt_ab[0] / (sqrt_ab[0] - sqrt_ab[-1])
    alphas_cumprod = sqrt_ab**2
  return alphas_cumprod.astype(_F32)


def _spaced_timesteps(spacing: str, num_train: int, n: int,
                      steps_offset: int, round_linspace: bool = True
                     ) -> np.ndarray:
  """[n] descending float64 timesteps (diffusers; Lin et al. 2023, Tab. 2)."""
  if spacing == "linspace":
    ts = np.linspace(0, num_train - 1, n)
    ts = (ts.round() if round_linspace else ts)[::-1]
  elif spacing == "leading":
    ts = (np.arange(n) * (num_train // n)).round()[::-1] + steps_offset
  elif spacing == "trailing":
    ts = np.round(np.arange(num_train, 0, -num_train / n)) - 1
  else:
    raise ValueError(f"Unsupported scheduler config timestep_spacing="
                     f"{spacing!r}; supported: 'leading', 'trailing', "
                     "'linspace'.")
  if ts.min() < 0:  # diffusers' trailing rounding quirk (e.g. n = 61).
    raise ValueError(f"timestep_spacing={spacing!r} with num_inference_steps="
                     f"{n} yields a negative timestep in diffusers; pick "
                     "another step count.")
  return ts.copy()


def _abar(ac: np.ndarray, t: np.ndarray, final: float) -> np.ndarray:
  """abar at integer timesteps t (`final` where t < 0), as float64."""
  if t.max() >= len(ac):
    raise ValueError(f"timestep {t.max()} out of range for num_train_timesteps="
                     f"{len(ac)} (lower steps_offset or num_inference_steps).")
  return np.where(t >= 0, ac[np.maximum(t, 0)], final).astype(np.float64)


def _x0_and_eps(prediction_type: str, model_output: jax.Array,
                sample: jax.Array, alpha: jax.Array, sigma: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
  """Model output -> (x0, eps) where x = alpha * x0 + sigma * eps (VP)."""
  if prediction_type == "epsilon":
    return (sample - sigma * model_output) / alpha, model_output
  if prediction_type == "v_prediction":
    return (alpha * sample - sigma * model_output,
            alpha * model_output + sigma * sample)
  return model_output, (sample - alpha * model_output) / sigma  # "sample"


def _at(table: np.ndarray, step: jax.Array, dtype) -> jax.Array:
  return jnp.asarray(table, dtype)[step]


def _compute_dtype(x: jax.Array):
  return jnp.result_type(x.dtype, jnp.float32)  # bf16/f16 -> f32, as diffusers


@dataclasses.dataclass(frozen=True, eq=False)
class _Base:
  name: str
  num_inference_steps: int
  timesteps: np.ndarray  # [S] int32 (float32 for Euler, as in diffusers).
  init_noise_sigma: float
  prediction_type: str

  def init_state(self, latents: jax.Array) -> PyTree:
    del latents
    return ()

  def scale_model_input(self, state: PyTree, sample: jax.Array,
                        step: jax.Array) -> jax.Array:
    del state, step
    return sample


# ----------------------------------------------------------------------------
# DDIM (eta = 0): x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps.
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class DDIM(_Base):
  alpha: np.ndarray       # [S] sqrt(abar_t)
  sigma: np.ndarray       # [S] sqrt(1 - abar_t)
  alpha_prev: np.ndarray  # [S] sqrt(abar_{t - T // N}), final_alpha if t < T//N
  sigma_prev: np.ndarray  # [S] sqrt(1 - abar_prev)
  clip_range: float | None

  def step(self, state, step, model_output, sample):
    dt = _compute_dtype(sample)
    x0, eps = _x0_and_eps(self.prediction_type, model_output.astype(dt),
                          sample.astype(dt), _at(self.alpha, step, dt),
                          _at(self.sigma, step, dt))
    if self.clip_range is not None:
      x0 = jnp.clip(x0, -self.clip_range, self.clip_range)
    prev = (_at(self.alpha_prev, step, dt) * x0
            + _at(self.sigma_prev, step, dt) * eps)
    return prev.astype(sample.dtype), state, x0.astype(sample.dtype)


def make_ddim(config: dict, num_inference_steps: int) -> DDIM:
  cfg = _resolve(config, dict(
      _SCHEDULE_DEFAULTS, clip_sample=True, clip_sample_range=1.0,
      set_alpha_to_one=True, thresholding=False, timestep_spacing="leading",
      rescale_betas_zero_snr=False))
  _require(cfg, "prediction_type", ("epsilon", "v_prediction", "sample"))
  _require(cfg, "thresholding", (False,))
  ac = _alphas_cumprod(cfg)
  final = 1.0 if cfg["set_alpha_to_one"] else ac[0]
  ts = _spaced_timesteps(cfg["timestep_spacing"], cfg["num_train_timesteps"],
                         num_inference_steps, cfg["steps_offset"]).astype(int)
  prev = ts - cfg["num_train_timesteps"] // num_inference_steps
  a_t, a_prev = _abar(ac, ts, final), _abar(ac, prev, final)
  return DDIM(
      name="ddim", num_inference_steps=num_inference_steps,
      timesteps=ts.astype(np.int32), init_noise_sigma=1.0,
      prediction_type=cfg["prediction_type"],
      alpha=np.sqrt(a_t).astype(_F32), sigma=np.sqrt(1 - a_t).astype(_F32),
      alpha_prev=np.sqrt(a_prev).astype(_F32),
      sigma_prev=np.sqrt(1 - a_prev).astype(_F32),
      clip_range=(float(cfg["clip_sample_range"]) if cfg["clip_sample"]
                  else None))


# ----------------------------------------------------------------------------
# PNDM / PLMS (skip_prk_steps=True). diffusers' counter-driven `step_plms`
# becomes per-step tables: the combined eps is a weighted sum over a history of
# the last 4 model outputs (oldest first) plus the current output; step 1 is a
# Heun-like redo of step 0 from the stored `cur_sample`.
# ----------------------------------------------------------------------------

_PLMS_WEIGHTS = {1: [1.0], 2: [-1 / 2, 3 / 2], 3: [5 / 12, -16 / 12, 23 / 12],
                 4: [-9 / 24, 37 / 24, -59 / 24, 55 / 24]}


@dataclasses.dataclass(frozen=True, eq=False)
class PNDM(_Base):
  push: np.ndarray          # [S] bool: append model_output to the history
  hist_weight: np.ndarray   # [S, 4] weights over the history (after push)
  cur_weight: np.ndarray    # [S] weight of the current model output
  use_cur_sample: np.ndarray  # [S] bool: step from the stored cur_sample
  alpha: np.ndarray         # [S] sqrt(abar) at the step's source timestep
  sigma: np.ndarray         # [S] sqrt(1 - abar) at the source timestep
  sample_coef: np.ndarray   # [S] sqrt(abar_prev / abar)   (PNDM eq. 9)
  eps_coef: np.ndarray      # [S] (abar_prev - abar) / (abar sqrt(1-abar_prev)
                            #      + sqrt(abar (1-abar) abar_prev))
  model_alpha: np.ndarray   # [S] sqrt(abar) at timesteps[s] (for x0 output)
  model_sigma: np.ndarray   # [S]

  def init_state(self, latents):
    dt = _compute_dtype(latents)
    return dict(ets=jnp.zeros((4,) + latents.shape, dt),   # [4, *x]
                cur_sample=jnp.zeros(latents.shape, dt))  # [*x]

  def step(self, state, step, model_output, sample):
    dt = state["ets"].dtype
    mo, x = model_output.astype(dt), sample.astype(dt)
    pushed = jnp.concatenate([state["ets"][1:], mo[None]], axis=0)
    ets = jnp.where(_at(self.push, step, bool), pushed, state["ets"])
    combo = (jnp.tensordot(_at(self.hist_weight, step, dt), ets, axes=1)
             + _at(self.cur_weight, step, dt) * mo)
    source = jnp.where(_at(self.use_cur_sample, step, bool),
                       state["cur_sample"], x)
    _, eps = _x0_and_eps(self.prediction_type, combo, source,
                         _at(self.alpha, step, dt), _at(self.sigma, step, dt))
    prev = (_at(self.sample_coef, step, dt) * source
            - _at(self.eps_coef, step, dt) * eps)
    x0, _ = _x0_and_eps(self.prediction_type, mo, x,
                        _at(self.model_alpha, step, dt),
                        _at(self.model_sigma, step, dt))
    cur_sample = jnp.where(step == 0, x, state["cur_sample"])
    return (prev.astype(sample.dtype), dict(ets=ets, cur_sample=cur_sample),
            x0.astype(sample.dtype))


def make_pndm(config: dict, num_inference_steps: int) -> PNDM:
  cfg = _resolve(config, dict(
      _SCHEDULE_DEFAULTS, skip_prk_steps=False, set_alpha_to_one=False,
      timestep_spacing="leading"))
  _require(cfg, "prediction_type", ("epsilon", "v_prediction"))
  _require(cfg, "skip_prk_steps", (True,))  # The PRK warm-up is not supported.
  ac = _alphas_cumprod(cfg)
  final = 1.0 if cfg["set_alpha_to_one"] else ac[0]
  n_train, n = cfg["num_train_timesteps"], num_inference_steps
  asc = _spaced_timesteps(cfg["timestep_spacing"], n_train, n,
                          cfg["steps_offset"])[::-1].astype(int)
  ts = np.concatenate([asc[:-1], asc[-2:-1], asc[-1:]])[::-1]  # [S]
  ratio = n_train // n
  tab = {k: [] for k in ("push", "hist_weight", "cur_weight", "t", "t_prev")}
  n_hist = 0
  for s, t in enumerate(ts):
    hist_weight = np.zeros(4)
    if s == 1:  # Average of the eps at t and t + ratio, redone from step 0.
      tab["push"].append(False)
      hist_weight[3] = 0.5
      tab["cur_weight"].append(0.5)
      tab["t"].append(t + ratio)
      tab["t_prev"].append(t)
    else:
      n_hist = min(n_hist + 1, 4)
      tab["push"].append(True)
      hist_weight[4 - n_hist:] = _PLMS_WEIGHTS[n_hist]
      tab["cur_weight"].append(0.0)
      tab["t"].append(t)
      tab["t_prev"].append(t - ratio)
    tab["hist_weight"].append(hist_weight)
  a_t = _abar(ac, np.array(tab["t"]), final)
  a_prev = _abar(ac, np.array(tab["t_prev"]), final)
  a_model = _abar(ac, ts, final)
  denom = a_t * np.sqrt(1 - a_prev) + np.sqrt(a_t * (1 - a_t) * a_prev)
  return PNDM(
      name="pndm", num_inference_steps=n, timesteps=ts.astype(np.int32),
      init_noise_sigma=1.0, prediction_type=cfg["prediction_type"],
      push=np.array(tab["push"]),
      hist_weight=np.array(tab["hist_weight"], _F32),
      cur_weight=np.array(tab["cur_weight"], _F32),
      use_cur_sample=np.arange(len(ts)) == 1,
      alpha=np.sqrt(a_t).astype(_F32), sigma=np.sqrt(1 - a_t).astype(_F32),
      sample_coef=np.sqrt(a_prev / a_t).astype(_F32),
      eps_coef=((a_prev - a_t) / denom).astype(_F32),
      model_alpha=np.sqrt(a_model).astype(_F32),
      model_sigma=np.sqrt(1 - a_model).astype(_F32))


# ----------------------------------------------------------------------------
# DPM-Solver++ multistep (data prediction). With lambda = log(alpha / sigma),
# h = lambda_next - lambda_s, every update is linear:
#   x_next = (sigma_next / sigma_s) x + sum_k w_k x0_k
# over a history of the last `solver_order` x0 predictions (oldest first).
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class DPMSolverPP(_Base):
  alpha: np.ndarray        # [S] alpha_s = 1 / sqrt(sigma_s^2 + 1)
  sigma: np.ndarray        # [S] sigma_s * alpha_s (VP noise level)
  sample_coef: np.ndarray  # [S] sigma_next / sigma_s (VP)
  x0_weight: np.ndarray    # [S, order] weights over the x0 history

  def init_state(self, latents):
    order = self.x0_weight.shape[1]
    return dict(x0=jnp.zeros((order,) + latents.shape,
                             _compute_dtype(latents)))  # [order, *x]

  def step(self, state, step, model_output, sample):
    dt = state["x0"].dtype
    x = sample.astype(dt)
    x0, _ = _x0_and_eps(self.prediction_type, model_output.astype(dt), x,
                        _at(self.alpha, step, dt), _at(self.sigma, step, dt))
    hist = jnp.concatenate([state["x0"][1:], x0[None]], axis=0)
    prev = (_at(self.sample_coef, step, dt) * x
            + jnp.tensordot(_at(self.x0_weight, step, dt), hist, axes=1))
    return prev.astype(sample.dtype), dict(x0=hist), x0.astype(sample.dtype)


def _dpmpp_weights(order: int, lam: np.ndarray, alpha_next: float,
                   heun: bool) -> np.ndarray:
  """Weights over [x0_{s-order+1} .. x0_s]; lam: [lambda_{s-order+1 .. s+1}]."""
  h = lam[-1] - lam[-2]
  phi = np.expm1(-h)  # exp(-h) - 1
  if order == 1:
    return np.array([-alpha_next * phi])
  # D1 from divided differences, r_k = h_k / h (diffusers' multistep updates).
  m = np.eye(order)[::-1]  # rows: m0 (newest), m1, m2 as one-hot over history
  r0 = (lam[-2] - lam[-3]) / h
  d1_0 = (m[0] - m[1]) / r0
  if order == 2:
    c1 = alpha_next * (phi / h + 1.0) if heun else -0.5 * alpha_next * phi
    return -alpha_next * phi * m[0] + c1 * d1_0
  r1 = (lam[-3] - lam[-4]) / h
  d1_1 = (m[1] - m[2]) / r1
  d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
  d2 = (d1_0 - d1_1) / (r0 + r1)
  return (-alpha_next * phi * m[0] + alpha_next * (phi / h + 1.0) * d1
          - alpha_next * ((phi + h) / h**2 - 0.5) * d2)


def make_dpmsolver_pp(config: dict, num_inference_steps: int) -> DPMSolverPP:
  cfg = _resolve(config, dict(
      _SCHEDULE_DEFAULTS, solver_order=2, algorithm_type="dpmsolver++",
      solver_type="midpoint", lower_order_final=True, euler_at_final=False,
      final_sigmas_type="zero", thresholding=False, variance_type=None,
      use_karras_sigmas=False, use_exponential_sigmas=False,
      use_beta_sigmas=False, use_lu_lambdas=False, use_flow_sigmas=False,
      use_dynamic_shifting=False, lambda_min_clipped=-float("inf"),
      timestep_spacing="linspace", rescale_betas_zero_snr=False))
  _require(cfg, "prediction_type", ("epsilon", "v_prediction", "sample"))
  _require(cfg, "algorithm_type", ("dpmsolver++",))
  _require(cfg, "solver_order", (1, 2, 3))
  _require(cfg, "solver_type", ("midpoint", "heun"))
  _require(cfg, "final_sigmas_type", ("zero", "sigma_min"))
  _require(cfg, "lambda_min_clipped", (-float("inf"),))
  _require(cfg, "variance_type", (None,))
  for key in ("thresholding", "use_karras_sigmas", "use_exponential_sigmas",
              "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas",
              "use_dynamic_shifting"):
    _require(cfg, key, (False,))
  ac = _alphas_cumprod(cfg)
  if cfg["rescale_betas_zero_snr"]:
    ac[-1] = 2.0**-24
  n_train, spacing = cfg["num_train_timesteps"], cfg["timestep_spacing"]
  if spacing == "trailing":
    ts = _spaced_timesteps(spacing, n_train, num_inference_steps, 0)
  else:  # N + 1 points, the last (t = 0) dropped.
    ts = _spaced_timesteps(spacing, n_train, num_inference_steps + 1,
                           cfg["steps_offset"])[:-1]
  ts = ts.astype(int)
  train_sigmas = np.sqrt((1 - ac) / ac)  # float32, VE sigma per train step
  sigma_last = train_sigmas[0] if cfg["final_sigmas_type"] == "sigma_min" else 0
  sigmas = np.interp(ts, np.arange(len(ac)), train_sigmas)  # clamps t >= T
  sigmas = np.append(sigmas, sigma_last).astype(_F32)  # [S + 1]
  alpha = (1 / np.sqrt(sigmas**2 + 1)).astype(_F32)
  sigma_vp = (sigmas * alpha).astype(_F32)
  with np.errstate(divide="ignore"):
    lam = np.log(alpha.astype(np.float64)) - np.log(sigma_vp.astype(np.float64))
  n_steps, order = len(ts), cfg["solver_order"]
  short = cfg["lower_order_final"] and n_steps < 15
  sample_coef, weights = [], np.zeros((n_steps, order))
  for s in range(n_steps):
    last = s == n_steps - 1 and (cfg["euler_at_final"] or short
                                 or cfg["final_sigmas_type"] == "zero")
    o = min(order, s + 1)  # diffusers' lower_order_nums warm-up.
    if last:
      o = 1
    elif s == n_steps - 2 and short:
      o = min(o, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
      weights[s, order - o:] = _dpmpp_weights(
          o, lam[s + 1 - o:s + 2], float(alpha[s + 1]),
          cfg["solver_type"] == "heun")
    sample_coef.append(sigma_vp[s + 1] / np.float64(sigma_vp[s]))
  if not np.isfinite(weights).all():  # diffusers would produce NaNs here.
    raise ValueError(f"DPM-Solver++ schedule for num_inference_steps="
                     f"{num_inference_steps} repeats a noise level; pick "
                     "another step count or timestep_spacing.")
  return DPMSolverPP(
      name="dpmsolver++", num_inference_steps=num_inference_steps,
      timesteps=ts.astype(np.int32), init_noise_sigma=1.0,
      prediction_type=cfg["prediction_type"], alpha=alpha[:-1],
      sigma=sigma_vp[:-1], sample_coef=np.array(sample_coef, _F32),
      x0_weight=weights.astype(_F32))


# ----------------------------------------------------------------------------
# Euler (Karras et al. 2022) in the variance-exploding parameterisation
# x_ve = x_vp / alpha: x_next = x + (x - x0) / sigma * (sigma_next - sigma).
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class EulerDiscrete(_Base):
  sigmas: np.ndarray  # [S + 1] VE sigmas, last one 0 (or sigma_min)

  def scale_model_input(self, state, sample, step):
    del state
    sigma = _at(self.sigmas, step, _compute_dtype(sample))
    return (sample / jnp.sqrt(sigma**2 + 1)).astype(sample.dtype)

  def step(self, state, step, model_output, sample):
    dt = _compute_dtype(sample)
    x, mo = sample.astype(dt), model_output.astype(dt)
    sigma = _at(self.sigmas, step, dt)
    if self.prediction_type == "epsilon":
      x0 = x - sigma * mo
    elif self.prediction_type == "v_prediction":
      x0 = mo * (-sigma / jnp.sqrt(sigma**2 + 1)) + x / (sigma**2 + 1)
    else:
      x0 = mo
    prev = x + (x - x0) / sigma * (_at(self.sigmas, step + 1, dt) - sigma)
    return prev.astype(sample.dtype), state, x0.astype(sample.dtype)


def make_euler(config: dict, num_inference_steps: int) -> EulerDiscrete:
  cfg = _resolve(config, dict(
      _SCHEDULE_DEFAULTS, interpolation_type="linear", use_karras_sigmas=False,
      use_exponential_sigmas=False, use_beta_sigmas=False,
      timestep_type="discrete", final_sigmas_type="zero",
      timestep_spacing="linspace", rescale_betas_zero_snr=False))
  _require(cfg, "prediction_type", ("epsilon", "v_prediction", "sample"))
  _require(cfg, "interpolation_type", ("linear",))
  _require(cfg, "timestep_type", ("discrete",))
  _require(cfg, "final_sigmas_type", ("zero", "sigma_min"))
  for key in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"):
    _require(cfg, key, (False,))
  ac = _alphas_cumprod(cfg)
  if cfg["rescale_betas_zero_snr"]:
    ac[-1] = 2.0**-24
  ts = _spaced_timesteps(cfg["timestep_spacing"], cfg["num_train_timesteps"],
                         num_inference_steps, cfg["steps_offset"],
                         round_linspace=False).astype(_F32)
  train_sigmas = np.sqrt((1 - ac) / ac)  # [T] float32
  sigmas = np.interp(ts, np.arange(len(ac)), train_sigmas)  # fractional t
  sigma_last = train_sigmas[0] if cfg["final_sigmas_type"] == "sigma_min" else 0
  sigmas = np.append(sigmas, sigma_last).astype(_F32)  # [S + 1]
  max_sigma = sigmas.max()
  if cfg["timestep_spacing"] == "leading":
    init_noise_sigma = float(np.sqrt(max_sigma**2 + _F32(1)))
  else:
    init_noise_sigma = float(max_sigma)
  return EulerDiscrete(
      name="euler", num_inference_steps=num_inference_steps, timesteps=ts,
      init_noise_sigma=init_noise_sigma,
      prediction_type=cfg["prediction_type"], sigmas=sigmas)


# ----------------------------------------------------------------------------
# DDPM, ancestral: x_prev = μ̃(x0_θ, x_t) + exp(½ log Σ) · noise, between
# consecutive kept timesteps t > t' (respaced: β'_t = 1 − ᾱ_t / ᾱ_t').
# ----------------------------------------------------------------------------

DDPM_VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")
# What the last step does. "diffusers": DDPMScheduler adds noise whenever the
# last kept timestep is > 0 (e.g. t = 1 with SD's steps_offset = 1), with
# β̃ = 0 there floored at 1e-20 before the log (so a learned variance
# interpolates towards log 1e-20). "posterior_mean": Ho et al. 2020 (Alg. 2,
# z = 0 at t = 1) and improved-diffusion's respaced sampler: the last step
# returns the mean, no noise. Everything else (respaced β', the learned v
# interpolating the respaced β' and β̃') is the same in both readings.
# improved-diffusion keeps evenly strided timesteps from 0 to T - 1, i.e.
# timestep_spacing="linspace" (up to rounding), not SD's "leading".
DDPM_FINAL_STEPS = ("diffusers", "posterior_mean")


@dataclasses.dataclass(frozen=True, eq=False)
class DDPM(_Base):
  """Ancestral DDPM step with the noise as an input.

  `step(state, step, model_output, sample, noise)`: `noise` is a standard
  normal array shaped like `sample`, which the caller draws (e.g. from
  `fold_in(member_key, step)`), so a trajectory does not depend on how the
  population is split. `model_output` has C channels (ε, or v / x0 by
  `prediction_type`) or 2C on axis -3 (that, then the variance output v);
  "learned_range" needs 2C, the fixed variances ignore a second half.
  """
  variance_type: str
  alpha: np.ndarray             # [S] sqrt(abar_t)
  sigma: np.ndarray             # [S] sqrt(1 - abar_t)
  coef_x0: np.ndarray           # [S] posterior mean coefficient of x0
  coef_xt: np.ndarray           # [S] posterior mean coefficient of x_t
  min_log_variance: np.ndarray  # [S] log β̃'_t (floored at 1e-20)
  max_log_variance: np.ndarray  # [S] log β'_t
  noise_scale: np.ndarray       # [S] 1 where the step adds noise, else 0
  clip_range: float | None
  ancestral: ClassVar[bool] = True

  def posterior(self, step, model_output, sample):
    """(mean, log-variance, x0) of p_θ(x_prev | x_t) at step index `step`."""
    dt = _compute_dtype(sample)
    x = sample.astype(dt)
    out, v = ddpm.split_eps_and_v(model_output.astype(dt),
                                  x.shape[ddpm.CHANNEL_AXIS])
    x0, _ = _x0_and_eps(self.prediction_type, out, x, _at(self.alpha, step, dt),
                        _at(self.sigma, step, dt))
    if self.clip_range is not None:
      x0 = jnp.clip(x0, -self.clip_range, self.clip_range)
    mean = _at(self.coef_x0, step, dt) * x0 + _at(self.coef_xt, step, dt) * x
    min_log = _at(self.min_log_variance, step, dt)
    max_log = _at(self.max_log_variance, step, dt)
    if self.variance_type == "fixed_small":
      log_var = jnp.broadcast_to(min_log, x.shape)
    elif self.variance_type == "fixed_large":
      log_var = jnp.broadcast_to(max_log, x.shape)
    elif v is None:
      raise ValueError(
          "variance_type='learned_range' needs a model output with "
          f"{2 * x.shape[ddpm.CHANNEL_AXIS]} channels on axis "
          f"{ddpm.CHANNEL_AXIS} (ε then v); got {model_output.shape}")
    else:
      log_var = ddpm.learned_log_variance(v, min_log, max_log)
    return mean, log_var, x0

  def step(self, state, step, model_output, sample, noise):  # pylint: disable=arguments-differ
    mean, log_var, x0 = self.posterior(step, model_output, sample)
    std = jnp.exp(0.5 * log_var) * _at(self.noise_scale, step, mean.dtype)
    prev = mean + std * noise.astype(mean.dtype)
    return prev.astype(sample.dtype), state, x0.astype(sample.dtype)


def make_ddpm(config: dict, num_inference_steps: int) -> DDPM:
  cfg = _resolve(config, dict(
      _SCHEDULE_DEFAULTS, variance_type="fixed_small", clip_sample=True,
      clip_sample_range=1.0, thresholding=False, timestep_spacing="leading",
      rescale_betas_zero_snr=False, final_step="diffusers"))
  _require(cfg, "prediction_type", ("epsilon", "v_prediction", "sample"))
  _require(cfg, "variance_type", DDPM_VARIANCE_TYPES)
  _require(cfg, "final_step", DDPM_FINAL_STEPS)
  _require(cfg, "thresholding", (False,))
  ac = _alphas_cumprod(cfg)
  ts = _spaced_timesteps(cfg["timestep_spacing"], cfg["num_train_timesteps"],
                         num_inference_steps, cfg["steps_offset"]).astype(int)
  if np.any(np.diff(ts) >= 0):
    raise ValueError(f"DDPM timesteps for num_inference_steps="
                     f"{num_inference_steps} repeat a timestep ({ts.tolist()}); "
                     "pick another step count or timestep_spacing.")
  a_t = _abar(ac, ts, 1.0)
  a_prev = _abar(ac, np.append(ts[1:], -1), 1.0)  # abar = 1 after the last
  post = ddpm.posterior(a_t, a_prev)
  if cfg["final_step"] == "diffusers":
    noise_scale = ts > 0
  else:
    noise_scale = np.arange(len(ts)) < len(ts) - 1
  return DDPM(
      name="ddpm", num_inference_steps=num_inference_steps,
      timesteps=ts.astype(np.int32), init_noise_sigma=1.0,
      prediction_type=cfg["prediction_type"],
      variance_type=cfg["variance_type"],
      alpha=np.sqrt(a_t).astype(_F32), sigma=np.sqrt(1 - a_t).astype(_F32),
      coef_x0=post.coef_x0.astype(_F32), coef_xt=post.coef_xt.astype(_F32),
      min_log_variance=post.log_beta_tilde.astype(_F32),
      max_log_variance=post.log_beta.astype(_F32),
      noise_scale=noise_scale.astype(_F32),
      clip_range=(float(cfg["clip_sample_range"]) if cfg["clip_sample"]
                  else None))


# ----------------------------------------------------------------------------
# Registry.
# ----------------------------------------------------------------------------

SCHEDULERS: dict[str, Callable[[dict, int], Scheduler]] = {
    "ddim": make_ddim,
    "pndm": make_pndm,
    "dpmsolver++": make_dpmsolver_pp,
    "euler": make_euler,
}
# Step rules whose `step` takes the noise as a fifth argument.
ANCESTRAL_SCHEDULERS: dict[str, Callable[[dict, int], Any]] = {
    "ddpm": make_ddpm,
}


def make_scheduler(name: str, scheduler_config: dict, num_inference_steps: int,
                   **overrides) -> Scheduler:
  """Builds scheduler `name` from a diffusers scheduler config dict.

  Keys of `scheduler_config` (plus `overrides`, which win) that the scheduler
  class does not know are ignored, like diffusers' `from_config`; missing keys
  take that class's diffusers defaults.
  """
  makers = {**SCHEDULERS, **ANCESTRAL_SCHEDULERS}
  if name not in makers:
    raise ValueError(f"Unknown scheduler {name!r}; allowed: "
                     f"{', '.join(sorted(makers))}.")
  config = {**scheduler_config, **overrides}
  num_train = config.get("num_train_timesteps", 1000)
  if not 0 < num_inference_steps <= num_train:
    raise ValueError(f"num_inference_steps must be in [1, {num_train}], got "
                     f"{num_inference_steps}.")
  return makers[name](config, num_inference_steps)
