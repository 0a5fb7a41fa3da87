"""The population sampler: P initial latents × P text conditions → P images, in one XLA program.

Latent diffusion sampling (Rombach et al. 2022): z_T = z · σ_init with z ~ N(0, I) the *seed
vector* [P, C, h, w]; for each scheduler step s the UNet predicts ε (or v) from (z_t, t, c), with
classifier-free guidance (Ho & Salimans 2022, eq. 6)

    ε̂ = ε(z_t, ∅) + w · (ε(z_t, c) − ε(z_t, ∅)),

and the scheduler maps (z_t, ε̂) → z_{t−1}; finally the VAE decodes z_0 / scaling_factor to pixels.
All steps run in one `lax.scan`, so the whole sampler is one compiled, differentiable function
(`jax.grad` w.r.t. latents and text embeddings flows through every step; `remat=True` wraps each
step in `jax.checkpoint`, keeping memory near one step's activations). `guidance=False` is a true
no-guidance mode: one UNet call per step on the condition alone (the brittleness paper's
"without guidance", arXiv 2312.11473 §4.2), which equals w = 1.

`sample` is the pure function; `PopulationSampler` compiles it once per chunk shape with the
population sharded over the device mesh, and runs any population size in fixed-size chunks.
"""

import dataclasses
import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack import schedulers
from jaxdiffattack import sharding
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.models import StableDiffusion

TRAJECTORIES = ("x0", "latents")


class SampleOutput(NamedTuple):
  images: jax.Array                   # [P, H, W, 3] float32 in [0, 1]
  latents: jax.Array | None = None    # [P, C, h, w] final latents z_0 (before the VAE)
  x0_trajectory: jax.Array | None = None      # [P, S, C, h, w] predicted z_0 at each step
  latent_trajectory: jax.Array | None = None  # [P, S, C, h, w] z_t after each step
  scores: dict | None = None          # score_fn's per-member outputs, each [P, ...]


def member_latents(key: jax.Array, member_indices, latent_shape: Sequence[int]) -> jax.Array:
  """Standard-normal seed vectors [P, C, h, w], member i drawn from `fold_in(key, i)`.

  Results therefore do not depend on how a population is split across devices or chunks.
  """
  member_indices = jnp.asarray(member_indices, dtype=jnp.uint32)
  draw = lambda i: jax.random.normal(jax.random.fold_in(key, i), tuple(latent_shape), jnp.float32)
  return jax.vmap(draw)(member_indices)


def decode_latents(sd: StableDiffusion, vae_params, latents: jax.Array) -> jax.Array:
  """VAE decode: latents [P, C, h, w] → images [P, H, W, 3] float32 in [0, 1]."""
  scaled = (latents / sd.scaling_factor).astype(sd.dtype)
  pixels = sd.vae.apply({"params": vae_params}, scaled, method=sd.vae.decode)
  pixels = pixels.astype(jnp.float32)
  return jnp.clip(pixels / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)


def sample(sd: StableDiffusion, scheduler, params, latents, cond_emb, uncond_emb=None,
           guidance_scale=7.5, *, guidance: bool = True, trajectory: Sequence[str] = (),
           return_latents: bool = False, remat: bool = False, decode: bool = True) -> SampleOutput:
  """Runs the whole denoising loop for a population; pure and differentiable.

  Args:
    sd: the model bundle (static).
    scheduler: a `schedulers.Scheduler` (static): step rule and timesteps.
    params: {"unet": ..., "vae": ...} (a "text_encoder" entry is ignored).
    latents: seed vectors z [P, C, h, w], standard normal; scaled by `init_noise_sigma` here.
    cond_emb: text hidden states [P, L, D].
    uncond_emb: unconditional ("") hidden states [P, L, D] or [L, D]; needed when guidance.
    guidance_scale: w, a scalar or per-member [P].
    guidance: False runs one UNet call per step on `cond_emb` alone.
    trajectory: any of "x0", "latents": also return per-step predicted z_0 and/or z_t.
    return_latents: also return the final latents.
    remat: rematerialise each step in the backward pass (`jax.checkpoint`).
    decode: False skips the VAE (images field is then None).

  Returns:
    SampleOutput with images [P, H, W, 3] and the requested extras.
  """
  for name in trajectory:
    if name not in TRAJECTORIES:
      raise ValueError(f"trajectory entry {name!r} is not one of {TRAJECTORIES}")
  population = latents.shape[0]
  latents = latents.astype(jnp.float32)
  if guidance:
    if uncond_emb is None:
      raise ValueError("guidance=True needs uncond_emb (the empty prompt's hidden states)")
    uncond_emb = jnp.broadcast_to(uncond_emb, cond_emb.shape)
    context = jnp.concatenate([uncond_emb, cond_emb], axis=0).astype(sd.dtype)  # [2P, L, D]
    scale = jnp.broadcast_to(jnp.asarray(guidance_scale, jnp.float32), (population,))
    scale = scale[:, None, None, None]
  else:
    context = cond_emb.astype(sd.dtype)                                           # [P, L, D]
  timesteps = jnp.asarray(scheduler.timesteps, jnp.float32)  # [S]
  unet_params = params["unet"]

  def model_output(x_in, t):
    if guidance:
      x_in = jnp.concatenate([x_in, x_in], axis=0)
    t_batch = jnp.broadcast_to(t, (x_in.shape[0],))
    out = sd.unet.apply({"params": unet_params}, x_in.astype(sd.dtype), t_batch, context)
    out = out.astype(jnp.float32)
    if guidance:
      out_uncond, out_cond = jnp.split(out, 2, axis=0)
      out = out_uncond + scale * (out_cond - out_uncond)
    return out

  def step(carry, step_index):
    x, state = carry
    x_in = scheduler.scale_model_input(state, x, step_index)
    out = model_output(x_in, timesteps[step_index])
    x_next, state, x0 = scheduler.step(state, step_index, out, x)
    extras = {}
    if "x0" in trajectory:
      extras["x0"] = x0
    if "latents" in trajectory:
      extras["latents"] = x_next
    return (x_next, state), extras

  if remat:
    step = jax.checkpoint(step)
  x = latents * scheduler.init_noise_sigma
  init = (x, scheduler.init_state(x))
  steps = jnp.arange(len(scheduler.timesteps), dtype=jnp.int32)
  (x, _), extras = jax.lax.scan(step, init, steps)
  to_member_major = lambda a: jnp.swapaxes(a, 0, 1)  # [S, P, ...] → [P, S, ...]
  return SampleOutput(
      images=decode_latents(sd, params["vae"], x) if decode else None,
      latents=x if return_latents else None,
      x0_trajectory=to_member_major(extras["x0"]) if "x0" in extras else None,
      latent_trajectory=to_member_major(extras["latents"]) if "latents" in extras else None)


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

  def validate(self) -> None:
    if self.scheduler not in schedulers.SCHEDULERS:
      raise ConfigError(f"config.scheduler={self.scheduler!r} is invalid: use one of "
                        f"{sorted(schedulers.SCHEDULERS)}")
    if not isinstance(self.num_steps, int) or self.num_steps <= 0:
      raise ConfigError(f"config.num_steps={self.num_steps!r} is invalid: use an integer >= 1")
    for name in self.trajectory:
      if name not in TRAJECTORIES:
        raise ConfigError(f"config.trajectory entry {name!r} is invalid: use {TRAJECTORIES}")


class PopulationSampler:
  """Samples populations of any size with the population axis sharded over a device mesh.

  Example:
    sampler = PopulationSampler(sd, params, SamplerSettings(scheduler="ddim", num_steps=50))
    out = sampler(latents, cond, uncond, guidance_scale=7.5)   # NumPy arrays, [P, ...]
  """

  def __init__(self, sd: StableDiffusion, params, settings: SamplerSettings = SamplerSettings(),
               *, mesh=None, microbatch: int | None = None, score_fn=None, score_params=None):
    """Compiles the sampler (and optional fused scorer) for the mesh.

    Args:
      sd, params: the model bundle and its params.
      settings: static sampler configuration.
      mesh: a 1-D device mesh (default: all devices).
      microbatch: members per device per compiled call (default: the whole population).
      score_fn: optional `score_fn(score_params, images [P, H, W, 3], aux) -> {name: [P, ...]}`
        fused into the same compiled program; `aux` is the per-member pytree given to
        `__call__` (e.g. target labels). With `settings.return_images=False` only these small
        arrays leave the devices.
      score_params: params of `score_fn`, replicated on the mesh.
    """
    settings.validate()
    if not settings.return_images and score_fn is None:
      raise ValueError("return_images=False needs a score_fn (nothing would be returned)")
    self.sd = sd
    self.settings = settings
    self.scheduler = schedulers.make_scheduler(settings.scheduler, sd.scheduler_config,
                                               settings.num_steps)
    self.mesh = sharding.make_mesh() if mesh is None else mesh
    self.microbatch = microbatch
    self.params = sharding.put_replicated(
        {"sd": {"unet": params["unet"], "vae": params["vae"]}, "score": score_params}, self.mesh)
    pop = sharding.population_sharding(self.mesh)

    def fused(all_params, latents, cond, uncond, scale, aux):
      out = sample(sd, self.scheduler, all_params["sd"], latents, cond, uncond, scale,
                   guidance=settings.guidance, trajectory=settings.trajectory,
                   return_latents=settings.return_latents, remat=settings.remat)
      if score_fn is not None:
        out = out._replace(scores=score_fn(all_params["score"], out.images, aux))
      if not settings.return_images:
        out = out._replace(images=None)
      return out

    self.compiled = jax.jit(
        fused, in_shardings=(sharding.replicated(self.mesh), pop, pop, pop, pop, pop),
        out_shardings=pop)

  def __call__(self, latents, cond_emb, uncond_emb=None, guidance_scale=7.5,
               aux=None) -> SampleOutput:
    """Samples P members; returns host NumPy arrays with population axis 0.

    Args:
      latents: [P, C, h, w] standard-normal seed vectors.
      cond_emb: [P, L, D] text hidden states.
      uncond_emb: [L, D] or [P, L, D]; ignored without guidance.
      guidance_scale: scalar or [P].
      aux: per-member pytree of [P, ...] arrays handed to `score_fn` (e.g. labels).
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
    chunk = sharding.chunk_size(self.mesh, population, self.microbatch)
    padded = -(-population // chunk) * chunk
    aux = jax.tree_util.tree_map(lambda a: sharding.pad_population(a, padded), aux or {})
    inputs = [sharding.pad_population(a, padded) for a in (latents, cond_emb, uncond_emb, scale)]
    outputs = []
    for start in range(0, padded, chunk):
      put = lambda a: sharding.put_population(a[start:start + chunk], self.mesh)  # pylint: disable=cell-var-from-loop
      args = [put(a) for a in inputs] + [jax.tree_util.tree_map(put, aux)]
      outputs.append(self.compiled(self.params, *args))
    # Fetch after dispatching every chunk so devices never wait on the host.
    gather = lambda *parts: np.concatenate([sharding.to_host(p) for p in parts])[:population]
    return jax.tree_util.tree_map(gather, *outputs)
