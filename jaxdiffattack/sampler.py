"""The population sampler: P initial latents × P text conditions → P images, in one XLA program.

Latent diffusion sampling (Rombach et al. 2022): z_T = z · σ_init with z ~ N(0, I) the *seed
vector* [P, C, h, w]; for each scheduler step s the UNet predicts ε (or v) from (z_t, t, c), with
classifier-free guidance (Ho & Salimans 2022, eq. 6)

    ε̂ = ε(z_t, ∅) + w · (ε(z_t, c) − ε(z_t, ∅)),

and the scheduler maps (z_t, ε̂) → z_{t−1}; finally the VAE decodes z_0 / scaling_factor to pixels.
All steps run in one `lax.scan`, so the whole sampler is one compiled, differentiable function.
`guidance=False` is a true no-guidance mode: one UNet call per step on the condition alone (the
brittleness paper's "without guidance", arXiv 2312.11473 §4.2), which equals w = 1.

Learned variance (Nichol & Dhariwal 2021, §3.1; GLIDE, Nichol et al. 2021): a UNet with
out_channels = 2C outputs [ε (or v-prediction output), v], v the variance interpolation. Guidance
combines the first half only; v is the conditional branch's (GLIDE's released sampler does the
same). Ancestral step rules (`schedulers.ANCESTRAL_SCHEDULERS`, e.g. "ddpm" with
variance_type "learned_range") receive [ε̂, v]; the deterministic ones ε̂ alone. Ancestral steps
draw member i's noise at step s from `fold_in(noise_keys[i], s)`, with `noise_keys[i] =
fold_in(key, member i)` (`member_noise_keys`), so a trajectory does not depend on how the
population is split over devices or chunks. `trajectory=("variance",)` returns v per step.

Gradient depth (`grad_steps`, the same name in `SamplerSettings`):
  * None: `jax.grad` w.r.t. latents and text embeddings flows through every step; `remat=True`
    wraps each step in `jax.checkpoint`, keeping memory near one step's activations;
  * K ≥ 1: through the last K steps only. The first S − K steps run on `lax.stop_gradient`-ed
    inputs in a scan of their own, so they have no tangents and keep no residuals for the
    backward pass (memory and time of the backward pass are those of K steps). ATM's released
    attack code does this with K = 1 (Du et al. 2023, arXiv 2306.02583). The latents enter only
    through the first step, so their gradient is zero for K < S: last-K depth is for conditions
    that every step reads (text embeddings);
  * 0: no gradient through the sampler (only through the VAE and the scorers).

Per-step cross-attention maps (`capture_attention=True`, for failure analysis, ATM arXiv
2306.02583 §4.2): each step's UNet call on the text condition also returns every cross-attention
layer's probabilities (`models.unet.unet_cross_attention`), reduced inside the scan to one map per
text token: averaged over heads, each layer brought to one grid of at most `ATTENTION_GRID`²
(the latent grid, or for larger latents the latent grid mean-pooled: SD's 64×64 → 16×16, so maps
take 4 MB per member at 50 steps) by repeating coarser layers and mean-pooling finer ones,
averaged over layers → `SampleOutput.attention_trajectory` [P, S, g, g, L] (sums to 1 over L).
With guidance the maps are those of the conditional half. Off (the default), the step is the
plain fast path: no capture code is traced.

Three layers, each built on the one before:
  `sample`              the pure sampler (latents, text embeddings → images / latents);
  `sample_and_score`    sampler + fused scorer, `(params, latents, cond, uncond, scale, aux) →
                        SampleOutput with scores`, pure, for `jax.jit` / `jax.grad` / `jax.vmap`
                        (`FusedSampler` binds its static parts);
  `PopulationSampler`   compiles `sample_and_score` once per chunk shape with the population
                        sharded over the device mesh, runs any population size in fixed-size
                        chunks, and returns host arrays.
"""

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack import ddpm
from jaxdiffattack import planner
from jaxdiffattack import schedulers
from jaxdiffattack import sharding
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.models import StableDiffusion
from jaxdiffattack.models import unet as unet_lib

TRAJECTORIES = ("x0", "latents", "variance")
ATTENTION_GRID = 16   # captured attention maps are at most this many pixels a side


class SampleOutput(NamedTuple):
  images: jax.Array                   # [P, H, W, 3] float32 in [0, 1]
  latents: jax.Array | None = None    # [P, C, h, w] final latents z_0 (before the VAE)
  x0_trajectory: jax.Array | None = None      # [P, S, C, h, w] predicted z_0 at each step
  latent_trajectory: jax.Array | None = None  # [P, S, C, h, w] z_t after each step
  attention_trajectory: jax.Array | None = None  # [P, S, g, g, L] cross-attention per token
  variance_trajectory: jax.Array | None = None  # [P, S, C, h, w] the UNet's variance output v
                                                # (conditional branch) at each step
  scores: dict | None = None          # score_fn's per-member outputs, each [P, ...]


ScoreFn = Callable[[Any, jax.Array, Any], dict]  # (score_params, images [P, H, W, 3], aux)


def member_latents(key: jax.Array, member_indices, latent_shape: Sequence[int]) -> jax.Array:
  """Standard-normal seed vectors [P, C, h, w], member i drawn from `fold_in(key, i)`.

  Results therefore do not depend on how a population is split across devices or chunks.
  """
  member_indices = jnp.asarray(member_indices, dtype=jnp.uint32)
  draw = lambda i: jax.random.normal(jax.random.fold_in(key, i), tuple(latent_shape), jnp.float32)
  return jax.vmap(draw)(member_indices)


def member_noise_keys(key: jax.Array, member_indices) -> jax.Array:
  """Per-member keys [P, 2] of the ancestral noise: `fold_in(key, i)` for member i (step s then
  draws from `fold_in(that, s)`)."""
  member_indices = jnp.asarray(member_indices, dtype=jnp.uint32)
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(member_indices)


def _work_dtype(latents: jax.Array):
  """float32 for float32/bfloat16 latents (as the samplers of diffusers), float64 for float64."""
  return jnp.promote_types(latents.dtype, jnp.float32)


def decode_latents(sd: StableDiffusion, vae_params, latents: jax.Array) -> jax.Array:
  """VAE decode: latents [P, C, h, w] → images [P, H, W, 3] in [0, 1] (float32; float64 for
  float64 latents)."""
  scaled = (latents / sd.scaling_factor).astype(sd.dtype)
  pixels = sd.vae.apply({"params": vae_params}, scaled, method=sd.vae.decode)
  pixels = pixels.astype(_work_dtype(latents))
  return jnp.clip(pixels / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)


def sample(sd: StableDiffusion, scheduler, params, latents, cond_emb, uncond_emb=None,
           guidance_scale=7.5, *, guidance: bool = True, trajectory: Sequence[str] = (),
           return_latents: bool = False, remat: bool = False, grad_steps: int | None = None,
           decode: bool = True, capture_attention: bool = False,
           noise_keys: jax.Array | None = None) -> SampleOutput:
  """Runs the whole denoising loop for a population; pure and differentiable.

  Args:
    sd: the model bundle (static).
    scheduler: a `schedulers.Scheduler` (static): step rule and timesteps.
    params: {"unet": ..., "vae": ...} (a "text_encoder" entry is ignored).
    latents: seed vectors z [P, C, h, w], standard normal; scaled by `init_noise_sigma` here.
      float32 (or float64 under `jax.enable_x64`, with float64 params and modules: for checks).
    cond_emb: text hidden states [P, L, D].
    uncond_emb: unconditional ("") hidden states [P, L, D] or [L, D]; needed when guidance.
    guidance_scale: w, a scalar or per-member [P].
    guidance: False runs one UNet call per step on `cond_emb` alone.
    trajectory: any of "x0", "latents", "variance": also return per-step predicted z_0, z_t
      and/or the variance output v (a learned-variance UNet only).
    return_latents: also return the final latents.
    remat: rematerialise each differentiated step in the backward pass (`jax.checkpoint`).
    grad_steps: gradient depth: None = every step, K = the last K steps only, 0 = none (see the
      module docstring).
    decode: False skips the VAE (images field is then None).
    capture_attention: also return each step's cross-attention maps per text token (see the
      module docstring).
    noise_keys: [P, 2] uint32 per-member keys (`member_noise_keys`); needed by an ancestral
      scheduler, ignored by the others.

  Returns:
    SampleOutput with images [P, H, W, 3] and the requested extras.
  """
  for name in trajectory:
    if name not in TRAJECTORIES:
      raise ValueError(f"trajectory entry {name!r} is not one of {TRAJECTORIES}")
  if "variance" in trajectory and not sd.learned_variance:
    raise ValueError("trajectory 'variance' needs a learned-variance UNet (out_channels = 2 x "
                     f"latent channels); this one has {sd.unet.config.out_channels}")
  ancestral = _is_ancestral(scheduler)
  if ancestral and noise_keys is None:
    raise ValueError(f"the ancestral scheduler {scheduler.name!r} needs noise_keys "
                     "(sampler.member_noise_keys(key, member_indices))")
  num_steps = len(scheduler.timesteps)
  _check_grad_steps(grad_steps, num_steps, "grad_steps")
  population = latents.shape[0]
  latents = latents.astype(_work_dtype(latents))
  if guidance:
    if uncond_emb is None:
      raise ValueError("guidance=True needs uncond_emb (the empty prompt's hidden states)")
    uncond_emb = jnp.broadcast_to(uncond_emb, cond_emb.shape)
    context = jnp.concatenate([uncond_emb, cond_emb], axis=0).astype(sd.dtype)  # [2P, L, D]
    scale = jnp.broadcast_to(jnp.asarray(guidance_scale, latents.dtype), (population,))
    scale = scale[:, None, None, None]                                            # [P, 1, 1, 1]
  else:
    context, scale = cond_emb.astype(sd.dtype), None                              # [P, L, D]
  x = latents * scheduler.init_noise_sigma
  carry = (x, scheduler.init_state(x))
  differentiated = num_steps if grad_steps is None else grad_steps
  frozen = num_steps - differentiated
  run = functools.partial(_denoise, sd, scheduler, guidance=guidance, trajectory=trajectory,
                          capture_attention=capture_attention,
                          noise_keys=noise_keys if ancestral else None)
  parts = []
  if frozen:
    # No tangents enter these steps, so nothing of them is kept for the backward pass.
    inputs = jax.lax.stop_gradient((params["unet"], carry, context, scale))
    carry, extras = run(*inputs, jnp.arange(frozen, dtype=jnp.int32), remat=False)
    carry = jax.lax.stop_gradient(carry)
    parts.append(extras)
  if differentiated:
    carry, extras = run(params["unet"], carry, context, scale,
                        jnp.arange(frozen, num_steps, dtype=jnp.int32), remat=remat)
    parts.append(extras)
  x = carry[0]
  # [S, P, ...] per part → [P, S, ...]
  steps_of = lambda name: jnp.swapaxes(jnp.concatenate([p[name] for p in parts]), 0, 1)
  return SampleOutput(
      images=decode_latents(sd, params["vae"], x) if decode else None,
      latents=x if return_latents else None,
      x0_trajectory=steps_of("x0") if "x0" in trajectory else None,
      latent_trajectory=steps_of("latents") if "latents" in trajectory else None,
      attention_trajectory=steps_of("attention") if capture_attention else None,
      variance_trajectory=steps_of("variance") if "variance" in trajectory else None)


def _is_ancestral(scheduler) -> bool:
  """The step rule takes the noise as a fifth argument (`schedulers.ANCESTRAL_SCHEDULERS`)."""
  return bool(getattr(scheduler, "ancestral", False))


def _denoise(sd: StableDiffusion, scheduler, unet_params, carry, context, scale, steps, *,
             guidance: bool, trajectory: Sequence[str], remat: bool,
             capture_attention: bool = False, noise_keys: jax.Array | None = None):
  """Scheduler steps `steps` [k] from carry = (z_t, scheduler state), in one `lax.scan`.

  `noise_keys` [P, 2]: the members' ancestral-noise keys (ancestral schedulers only).
  Returns the final carry and the requested per-step extras {name: [k, P, ...]}.
  """
  timesteps = jnp.asarray(scheduler.timesteps, carry[0].dtype)  # [S] (float64 in x64 checks)
  population, channels = carry[0].shape[:2]

  def model_output(x_in, t):
    """(ε̂ [P, C, h, w] guided, v [P, C, h, w] of the conditional branch or None, per-token
    attention maps [P, h, w, L] of the conditional branch or None)."""
    if guidance:
      x_in = jnp.concatenate([x_in, x_in], axis=0)
    t_batch = jnp.broadcast_to(t, (x_in.shape[0],))
    maps = None
    if capture_attention:
      out, layers = unet_lib.unet_cross_attention(sd.unet, unet_params, x_in.astype(sd.dtype),
                                                  t_batch, context)
      maps = token_maps(layers, x_in.shape[2:])[x_in.shape[0] - population:]  # conditional half
    else:
      out = sd.unet.apply({"params": unet_params}, x_in.astype(sd.dtype), t_batch, context)
    out, v = ddpm.split_eps_and_v(out.astype(x_in.dtype), channels)
    if guidance:
      out_uncond, out_cond = jnp.split(out, 2, axis=0)
      out = out_uncond + scale * (out_cond - out_uncond)
      v = None if v is None else jnp.split(v, 2, axis=0)[1]
    return out, v, maps

  def noise(step_index, like):
    draw = lambda k: jax.random.normal(jax.random.fold_in(k, step_index), like.shape[1:],
                                       like.dtype)
    return jax.vmap(draw)(noise_keys)                         # [P, C, h, w]

  def step(carry, step_index):
    x, state = carry
    x_in = scheduler.scale_model_input(state, x, step_index)
    out, v, maps = model_output(x_in, timesteps[step_index])
    if noise_keys is None:
      x_next, state, x0 = scheduler.step(state, step_index, out, x)
    else:
      full = out if v is None else jnp.concatenate([out, v], axis=1)  # [P, (2)C, h, w]
      x_next, state, x0 = scheduler.step(state, step_index, full, x, noise(step_index, x))
    extras = {} if maps is None else {"attention": maps}
    if "x0" in trajectory:
      extras["x0"] = x0
    if "latents" in trajectory:
      extras["latents"] = x_next
    if "variance" in trajectory:
      extras["variance"] = v
    return (x_next, state), extras

  if remat:
    step = jax.checkpoint(step)
  return jax.lax.scan(step, carry, steps)


def token_maps(layers: dict, latent_hw: Sequence[int]) -> jax.Array:
  """Cross-attention probabilities {layer: [B, heads, h'·w', L]} (raster order) → [B, gh, gw,
  L]: averaged over heads; each layer repeated (nearest) or mean-pooled to the grid gh×gw (the
  latent grid h×w pooled by the smallest factor that makes it at most `ATTENTION_GRID` a side);
  averaged over layers. Each pixel's map still sums to 1 over the L tokens."""
  h, w = latent_hw
  pool = max(1, -(-max(h, w) // ATTENTION_GRID))
  gh, gw = h // pool, w // pool
  grids = []
  for probs in layers.values():
    factor = int(round((h * w / probs.shape[2]) ** 0.5))    # latent pixels per layer pixel
    lh, lw = h // factor, w // factor
    grid = probs.astype(jnp.float32).mean(1).reshape(probs.shape[0], lh, lw, probs.shape[-1])
    if lh >= gh:
      k = lh // gh
      grid = grid.reshape(grid.shape[0], gh, k, gw, k, grid.shape[-1]).mean((2, 4))
    else:
      k = gh // lh
      grid = jnp.repeat(jnp.repeat(grid, k, axis=1), k, axis=2)
    grids.append(grid)
  return jnp.mean(jnp.stack(grids), axis=0)


def _check_grad_steps(grad_steps, num_steps: int, key: str) -> None:
  if grad_steps is not None and not (isinstance(grad_steps, int) and
                                     0 <= grad_steps <= num_steps):
    raise ConfigError(f"config.{key}={grad_steps!r} is invalid: use None (every step) or an "
                      f"integer in 0..num_steps={num_steps} (the last K steps)")


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
  """What a compiled sampler is specialised on (its static configuration)."""
  scheduler: str = "ddim"
  num_steps: int = 50
  guidance: bool = True
  trajectory: tuple[str, ...] = ()
  return_latents: bool = False
  remat: bool = False
  return_images: bool = True
  grad_steps: int | None = None   # gradient depth: None = every step, K = last K, 0 = none
  capture_attention: bool = False  # per-step cross-attention maps (SampleOutput field)
  # The ancestral "ddpm" rule's variance (schedulers.DDPM_VARIANCE_TYPES); None = the model's
  # scheduler config (its variance_type, else "fixed_small").
  variance_type: str | None = None

  def validate(self) -> None:
    allowed = sorted({**schedulers.SCHEDULERS, **schedulers.ANCESTRAL_SCHEDULERS})
    if self.scheduler not in allowed:
      raise ConfigError(f"config.scheduler={self.scheduler!r} is invalid: use one of {allowed}")
    if self.variance_type is not None and (
        self.scheduler not in schedulers.ANCESTRAL_SCHEDULERS or
        self.variance_type not in schedulers.DDPM_VARIANCE_TYPES):
      raise ConfigError(f"config.variance_type={self.variance_type!r} is invalid for scheduler "
                        f"{self.scheduler!r}: use None, or one of "
                        f"{schedulers.DDPM_VARIANCE_TYPES} with scheduler 'ddpm'")
    if not isinstance(self.num_steps, int) or self.num_steps <= 0:
      raise ConfigError(f"config.num_steps={self.num_steps!r} is invalid: use an integer >= 1")
    for name in self.trajectory:
      if name not in TRAJECTORIES:
        raise ConfigError(f"config.trajectory entry {name!r} is invalid: use {TRAJECTORIES}")
    _check_grad_steps(self.grad_steps, self.num_steps, "grad_steps")


def nonfinite_as_nan(scores: dict, images) -> dict:
  """`scores` with every floating score of a member set to NaN when its image [P, H, W, 3] or any
  of its floating scores holds a NaN or inf (a model that overflowed): no judge reads a broken
  member as a class (an argmax of NaN logits is an arbitrary class, so "top1_hit" alone would
  look valid); jobs count such members as non-finite and never rank them. Integer scores (e.g.
  "pred") pass unchanged."""
  p = images.shape[0]
  floating = [v for v in scores.values() if jnp.issubdtype(v.dtype, jnp.floating)]
  finite = jnp.isfinite(images).reshape(p, -1).all(axis=1)                        # [P]
  for v in floating:
    finite = finite & jnp.isfinite(v).reshape(p, -1).all(axis=1)
  mask = lambda v: jnp.where(finite.reshape((-1,) + (1,) * (v.ndim - 1)), v, jnp.nan)
  return {name: mask(v) if jnp.issubdtype(v.dtype, jnp.floating) else v
          for name, v in scores.items()}


def sample_and_score(sd: StableDiffusion, scheduler, settings: SamplerSettings,
                     score_fn: ScoreFn | None, params, latents, cond, uncond, scale,
                     aux, noise_keys=None) -> SampleOutput:
  """The fused sampler + scorer: one pure function of arrays, for jit, grad and vmap.

  The first four arguments are static (`FusedSampler` binds them); the rest are arrays.

  Args:
    sd, scheduler, settings: the model bundle, its scheduler and the sampler settings.
    score_fn: `score_fn(score_params, images [P, H, W, 3], aux) -> {name: [P, ...]}` or None.
    params: {"sd": {"unet": ..., "vae": ...}, "score": score_params} (`fused_params`).
    latents: [P, C, h, w] standard-normal seed vectors.
    cond: [P, L, D] text hidden states.
    uncond: [P, L, D] or [L, D] unconditional hidden states (unused without guidance).
    scale: guidance scale, scalar or [P].
    aux: per-member pytree of [P, ...] arrays handed to `score_fn` (e.g. labels).
    noise_keys: [P, 2] per-member ancestral-noise keys (ancestral schedulers only).

  Returns:
    SampleOutput with `scores` (when score_fn is given); images are None unless
    `settings.return_images`.
  """
  out = sample(sd, scheduler, params["sd"], latents, cond, uncond, scale,
               guidance=settings.guidance, trajectory=settings.trajectory,
               return_latents=settings.return_latents, remat=settings.remat,
               grad_steps=settings.grad_steps,
               decode=settings.return_images or score_fn is not None,
               capture_attention=settings.capture_attention, noise_keys=noise_keys)
  if score_fn is not None:
    out = out._replace(scores=nonfinite_as_nan(score_fn(params["score"], out.images, aux),
                                               out.images))
  if not settings.return_images:
    out = out._replace(images=None)
  return out


@dataclasses.dataclass(frozen=True, eq=False)
class FusedSampler:
  """`sample_and_score` with its static parts bound: `f(params, latents, cond, uncond, scale,
  aux) -> SampleOutput`, pure; e.g. the gradient of a score w.r.t. the text embeddings:

    f = FusedSampler.build(sd, SamplerSettings(num_steps=25, grad_steps=1), score_fn)
    grad = jax.grad(lambda c: f(fused_params(params, sp), z, c, u, 7.5, aux).scores["s"].sum())
  """
  sd: StableDiffusion
  scheduler: Any                  # schedulers.Scheduler
  settings: SamplerSettings
  score_fn: ScoreFn | None = None

  @classmethod
  def build(cls, sd: StableDiffusion, settings: SamplerSettings = SamplerSettings(),
            score_fn: ScoreFn | None = None) -> "FusedSampler":
    settings.validate()
    overrides = {}
    if settings.variance_type is not None:
      overrides["variance_type"] = settings.variance_type
    scheduler = schedulers.make_scheduler(settings.scheduler, sd.scheduler_config,
                                          settings.num_steps, **overrides)
    if getattr(scheduler, "variance_type", None) == "learned_range" and not sd.learned_variance:
      raise ConfigError(f"config.variance_type='learned_range' is invalid for {sd.source}: its "
                        f"UNet has no variance output (out_channels "
                        f"{sd.unet.config.out_channels}, not 2 x {sd.latent_channels}); use "
                        "'fixed_small' or 'fixed_large'")
    return cls(sd, scheduler, settings, score_fn)

  @property
  def ancestral(self) -> bool:
    """The sampler draws noise: calls need `noise_keys`."""
    return _is_ancestral(self.scheduler)

  def __call__(self, params, latents, cond, uncond, scale, aux=None,
               noise_keys=None) -> SampleOutput:
    return sample_and_score(self.sd, self.scheduler, self.settings, self.score_fn, params,
                            latents, cond, uncond, scale, aux, noise_keys)


def fused_params(params, score_params=None) -> dict:
  """The params argument of the fused function from the model's params (text encoder left out)."""
  return {"sd": {"unet": params["unet"], "vae": params["vae"]}, "score": score_params}


class PopulationSampler:
  """The sharded, chunked runner of the fused function (`sample_and_score`).

  Example:
    sampler = PopulationSampler(sd, params, SamplerSettings(scheduler="ddim", num_steps=50))
    out = sampler(latents, cond, uncond, guidance_scale=7.5)   # NumPy arrays, [P, ...]
  """

  def __init__(self, sd: StableDiffusion, params, settings: SamplerSettings = SamplerSettings(),
               *, mesh=None, microbatch: int | str | None = None,
               score_fn: ScoreFn | None = None, score_params=None,
               memory_budget_gb: float | None = None):
    """Compiles the sampler (and optional fused scorer) for the mesh.

    Args:
      sd, params: the model bundle and its params.
      settings: static sampler configuration.
      mesh: a 1-D device mesh (default: all devices).
      microbatch: members per device per compiled call (default: the whole population), or
        "auto": the largest that fits the device-memory budget by XLA's compiled memory
        analysis (`planner.auto_microbatch`), planned at the first call of each input shape.
      memory_budget_gb: the budget of "auto" per device (GB); default: the device's reported
        limit (`planner.device_budget_bytes`; a CPU reports none: then this is required).
      score_fn: optional `score_fn(score_params, images [P, H, W, 3], aux) -> {name: [P, ...]}`
        fused into the same compiled program; `aux` is the per-member pytree given to
        `__call__` (e.g. target labels). With `settings.return_images=False` only these small
        arrays leave the devices.
      score_params: params of `score_fn`, replicated on the mesh.
    """
    if not settings.return_images and score_fn is None:
      raise ValueError("return_images=False needs a score_fn (nothing would be returned)")
    self.sd = sd
    self.settings = settings
    self.function = FusedSampler.build(sd, settings, score_fn)
    self.scheduler = self.function.scheduler
    self.mesh = sharding.make_mesh() if mesh is None else mesh
    self.microbatch = microbatch
    self.plans = {}   # "auto": input shapes → planner.MicrobatchPlan
    if microbatch == "auto":
      self.memory_budget = planner.device_budget_bytes(memory_budget_gb,
                                                       self.mesh.devices.flat[0])
    elif microbatch is not None and not (isinstance(microbatch, int) and microbatch >= 1):
      raise ConfigError(f"config.microbatch={microbatch!r} is invalid: use None (whole "
                        "population), an integer >= 1 or 'auto'")
    self.params = sharding.put_replicated(fused_params(params, score_params), self.mesh)
    pop = sharding.population_sharding(self.mesh)
    # Ancestral samplers take a 7th argument: the members' noise keys [P, 2].
    arrays = 6 if self.function.ancestral else 5
    self.compiled = jax.jit(
        self.function, in_shardings=(sharding.replicated(self.mesh),) + (pop,) * arrays,
        out_shardings=pop)

  def plan(self, latents, cond_emb, aux=None):
    """microbatch="auto": the `planner.MicrobatchPlan` for inputs of these shapes (latents
    [P, C, h, w], cond_emb [P, L, D], aux {name: [P, ...]}): the largest microbatch, at most
    ⌈P / devices⌉, whose compiled program fits the memory budget (planned once per shape)."""
    per_member = lambda a: jax.ShapeDtypeStruct(np.shape(a)[1:], np.asarray(a).dtype)
    aux_spec = jax.tree_util.tree_map(per_member, aux or {})
    limit = -(-np.shape(latents)[0] // self.mesh.size)
    key = (limit, np.shape(latents)[1:], np.shape(cond_emb)[1:],
           str(jax.tree_util.tree_structure(aux_spec)),
           tuple((a.shape, str(a.dtype)) for a in jax.tree_util.tree_leaves(aux_spec)))
    if key not in self.plans:
      program = planner.sampler_program(self.function, self.params, np.shape(latents)[1:],
                                        np.shape(cond_emb)[1:], aux_spec,
                                        text_dtype=np.asarray(cond_emb).dtype,
                                        uncond_per_member=True)
      plan = planner.auto_microbatch(program, self.memory_budget, limit=limit)
      logging.info("microbatch='auto': %d members per device (%.2f GB of the %.2f GB budget; "
                   "%d + 1 needs %s)", plan.microbatch, plan.bytes / planner.GB,
                   plan.budget / planner.GB, plan.microbatch,
                   "-" if plan.next_bytes is None else f"{plan.next_bytes / planner.GB:.2f} GB")
      self.plans[key] = plan
    return self.plans[key]

  def __call__(self, latents, cond_emb, uncond_emb=None, guidance_scale=7.5,
               aux=None, noise_keys=None) -> SampleOutput:
    """Samples P members; returns host NumPy arrays with population axis 0.

    Args:
      latents: [P, C, h, w] standard-normal seed vectors.
      cond_emb: [P, L, D] text hidden states.
      uncond_emb: [L, D] or [P, L, D]; ignored without guidance.
      guidance_scale: scalar or [P].
      aux: per-member pytree of [P, ...] arrays handed to `score_fn` (e.g. labels).
      noise_keys: [P, 2] uint32 per-member keys of the ancestral noise (`member_noise_keys`
        of the members' global indices); needed by an ancestral scheduler, else ignored.
    """
    latents = np.asarray(latents, np.float32)
    cond_emb = np.asarray(cond_emb)
    population = latents.shape[0]
    if population == 0:
      raise ValueError("empty population: latents has 0 members")
    if cond_emb.shape[0] != population:
      raise ValueError(f"cond_emb has {cond_emb.shape[0]} members, latents {population}")
    if uncond_emb is None:
      if self.settings.guidance:
        raise ValueError("guidance needs uncond_emb (encode the empty prompt '')")
      uncond_emb = np.zeros(cond_emb.shape[1:], cond_emb.dtype)
    uncond_emb = np.broadcast_to(np.asarray(uncond_emb), cond_emb.shape)
    scale = np.broadcast_to(np.asarray(guidance_scale, np.float32), (population,))
    microbatch = self.microbatch
    if microbatch == "auto":
      microbatch = self.plan(latents, cond_emb, aux).microbatch
    chunk = sharding.chunk_size(self.mesh, population, microbatch)
    padded = -(-population // chunk) * chunk
    aux = jax.tree_util.tree_map(lambda a: sharding.pad_population(a, padded), aux or {})
    arrays = [latents, cond_emb, uncond_emb, scale]
    if self.function.ancestral:
      if noise_keys is None:
        raise ValueError(f"scheduler {self.settings.scheduler!r} is ancestral: pass noise_keys "
                         "(sampler.member_noise_keys(key, member_indices))")
      noise_keys = np.asarray(noise_keys, np.uint32)
      if noise_keys.shape != (population, 2):
        raise ValueError(f"noise_keys has shape {noise_keys.shape}; expected ({population}, 2)")
      arrays.append(noise_keys)
    inputs = [sharding.pad_population(a, padded) for a in arrays]
    outputs = []
    for start in range(0, padded, chunk):
      put = lambda a: sharding.put_population(a[start:start + chunk], self.mesh)  # pylint: disable=cell-var-from-loop
      args = [put(a) for a in inputs[:4]] + [jax.tree_util.tree_map(put, aux)]
      args += [put(a) for a in inputs[4:]]  # the noise keys (ancestral schedulers)
      outputs.append(self.compiled(self.params, *args))
    # Fetch after dispatching every chunk so devices never wait on the host.
    gather = lambda *parts: np.concatenate([sharding.to_host(p) for p in parts])[:population]
    return jax.tree_util.tree_map(gather, *outputs)
