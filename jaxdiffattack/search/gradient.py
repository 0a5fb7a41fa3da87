"""Gradient searches (Adam, PGD) batched over targets × restarts, with the evosax strategies' API.

SAGE (arXiv 2306.00974, §3) searches with gradients of a classifier ensemble through the
differentiable generator; here the fused sampler + scorer (`sampler.sample_and_score`, gradient
depth `grad_steps`) supplies ∇_x fitness for every member, and the search space's pure-JAX
`project` hook keeps each iterate inside the space's constraint (the latent on the sphere of
radius √d, ‖δ_k‖ ≤ ε‖e_k‖ for prompt embeddings, the token's norm bound):

    x_0^(p)   = project(μ_t + σ · ξ_p),   ξ_0 = 0 (restart 0 starts at the target's start μ_t),
                                          ξ_p ~ N(0, I) from fold_in(key_t, p) for p ≥ 1
    x_{k+1}   = project(x_k + u_k),       u_k = optimiser(∇f(x_k))

per target t and restart p; the P restarts of a target are its population, so a generation
costs P evaluations of the fused function — the same budget as an evosax generation of P
members. Optimisers (`METHODS`, optax; one function + one line to add one):

  * "adam":  Adam (Kingma & Ba 2015) with learning rate `lr` (each coordinate moves ≈ lr per step;
             solutions are in units where the space's prior is N(0, I), so lr is a relative step)
             on the projected-gradient mapping G = (x − project(x − η g)) / η, η = lr·√n/‖g‖
             (Nesterov 2004, §2.2.3), not on g: Adam rescales coordinates, so fed the raw g its
             fixed points are not the constrained optimum (on the sphere the normal part of g,
             rescaled, leaks into the tangent step); G vanishes exactly at constrained
             stationary points (and G = g inside the constraint);
  * "pgd":   projected (normalised) gradient descent (Madry et al. 2018): u = −lr · √n · g / ‖g‖
             ("l2", the step is lr of a prior draw's norm) or u = −lr · sign(g) ("linf").

Budget accounting: an evaluation is one forward pass of the sampler + scorer on one member (as
for evosax); a gradient method also runs one backward pass per evaluation, counted apart
("gradient evaluations") and visible in the wall time, which is reported beside the
evaluations. A member whose fitness or gradient is not finite does not move (its gradient is
taken as 0).

State (`GradientState`, stacked over targets by vmap): the iterates, the optax state of every
restart and the step count — a flax dataclass, checkpointed by field name like the evosax states.
"""

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdiffattack.errors import ConfigError

PGD_NORMS = ("l2", "linf")


def adam(lr: float, num_dims: int, pgd_norm: str = "l2") -> optax.GradientTransformation:
  del num_dims, pgd_norm
  return optax.adam(lr)


def pgd(lr: float, num_dims: int, pgd_norm: str = "l2") -> optax.GradientTransformation:
  if pgd_norm == "linf":
    return optax.chain(optax.scale_by_sign(), optax.scale(-lr))
  return optax.chain(optax.normalize_by_update_norm(scale_factor=float(np.sqrt(num_dims)),
                                                    eps=1e-12),
                     optax.scale(-lr))


# Name → optimiser(lr, num_dims, pgd_norm); optax updates are ADDED to the iterate.
METHODS = {"adam": adam, "pgd": pgd}
# Methods whose optimiser sees the projected-gradient mapping instead of the raw gradient.
GRADIENT_MAPPING = frozenset({"adam"})


@flax.struct.dataclass
class GradientState:
  """One target's restarts (P of them, n solution dimensions)."""
  x: jax.Array          # [P, n] float32: the current iterates (inside the constraint)
  opt_state: Any        # the optimiser state of every restart (leaves [P, ...])
  step: jax.Array       # [] int32: steps taken


class GradientStrategy:
  """Adam / PGD on P restarts per target, T targets at once (the `BatchedStrategy` interface,
  with gradients given to `tell`).

  Example:
    strategy = GradientStrategy("adam", 8, n, num_targets=T, lr=0.05, project=project)
    states = strategy.init(keys, means)                         # keys [T], means [T, n]
    x, states = strategy.ask(keys, states)                      # [T, P, n]
    states = strategy.tell(keys, x, fitness, states, grads)     # fitness [T, P], grads [T, P, n]
  """
  needs_grad = True
  is_random = False

  def __init__(self, name: str, population_size: int, num_dims: int, *, num_targets: int,
               lr: float, std_init: float = 1.0, pgd_norm: str = "l2",
               project: Callable | None = None):
    """Builds the strategy.

    Args:
      name: a key of METHODS.
      population_size: P, restarts per target.
      num_dims: n.
      num_targets: T (targets are 0 … T − 1 for `project`).
      lr: the optimiser's step size (relative to a prior draw, see the module docstring).
      std_init: σ, the spread of restarts 1 … P − 1 around each target's start.
      pgd_norm: "l2" or "linf" (pgd only).
      project: `project(x [P, n], t) -> [P, n]`, pure JAX: the space's constraint (None: none).
    """
    if name not in METHODS:
      raise ConfigError(f"config.strategy.name={name!r} is not a gradient method: use one of "
                        f"{sorted(METHODS)}")
    if not (np.isfinite(lr) and lr > 0):
      raise ConfigError(f"config.strategy.lr={lr!r} is invalid: use a number > 0")
    if pgd_norm not in PGD_NORMS:
      raise ConfigError(f"config.strategy.pgd_norm={pgd_norm!r} is invalid: use one of "
                        f"{PGD_NORMS}")
    if population_size < 1:
      raise ConfigError(f"config.population_size={population_size!r} is invalid: use >= 1")
    self.name = name
    self.population_size = population_size
    self.num_dims = num_dims
    self.num_targets = num_targets
    self.std_init = float(std_init)
    self.optimizer = METHODS[name](float(lr), num_dims, pgd_norm)
    self.lr = float(lr)
    self.mapped = name in GRADIENT_MAPPING
    self.project = project if project is not None else (lambda x, t: x)
    targets = jnp.arange(num_targets, dtype=jnp.int32)
    self._init = jax.jit(lambda keys, means: jax.vmap(self._init_one)(keys, means, targets))
    self._tell = jax.jit(lambda x, f, g, states: jax.vmap(self._tell_one)(x, f, g, states,
                                                                          targets))

  def _init_one(self, key, mean, t):
    members = jnp.arange(self.population_size, dtype=jnp.uint32)
    noise = jax.vmap(lambda p: jax.random.normal(jax.random.fold_in(key, p),
                                                 (self.num_dims,)))(members)
    noise = noise.at[0].set(0.0)                            # restart 0: the target's start
    x = self.project(mean[None] + self.std_init * noise, t).astype(jnp.float32)
    return GradientState(x=x, opt_state=jax.vmap(self.optimizer.init)(x),
                         step=jnp.zeros((), jnp.int32))

  def _tell_one(self, x, fitness, grads, state, t):
    ok = jnp.isfinite(fitness)[:, None] & jnp.all(jnp.isfinite(grads), axis=1, keepdims=True)
    grads = jnp.where(ok, grads, 0.0).astype(jnp.float32)
    if self.mapped:
      grads = self._mapping(x, grads, t)
    updates, opt_state = jax.vmap(self.optimizer.update)(grads, state.opt_state, x)
    moved = self.project(optax.apply_updates(x, updates), t).astype(jnp.float32)
    return GradientState(x=jnp.where(ok, moved, x), opt_state=opt_state, step=state.step + 1)

  def _mapping(self, x, grads, t):
    """G = (x − project(x − η g)) / η per restart, η = lr·√n / ‖g‖ (0 where g = 0)."""
    norm = jnp.linalg.norm(grads, axis=1, keepdims=True)                       # [P, 1]
    eta = self.lr * np.sqrt(self.num_dims) / jnp.maximum(norm, 1e-30)
    mapped = (x - self.project(x - eta * grads, t)) / eta
    return jnp.where(norm > 0, mapped, 0.0)

  def init(self, keys: jax.Array, means) -> GradientState:
    """Stacked states for T targets; keys [T], means [T, n]."""
    return self._init(keys, jnp.asarray(means, jnp.float32))

  def ask(self, keys: jax.Array, states: GradientState):
    """The current iterates [T, P, n] (deterministic; keys unused) and the states."""
    del keys
    return states.x, states

  def tell(self, keys: jax.Array, population, fitness, states: GradientState,
           grads=None) -> GradientState:
    """One optimiser step per restart from grads [T, P, n] of the fitness at `population`."""
    del keys
    if grads is None:
      raise ValueError(f"the gradient method {self.name!r} needs the fitness gradients")
    return self._tell(jnp.asarray(population, jnp.float32), jnp.asarray(fitness, jnp.float32),
                      jnp.asarray(grads, jnp.float32), states)


class FitnessGradient:
  """∇_x of every member's fitness through the space's decode and the fused sampler + scorer.

  fitness_i = fitness_fn(scores(sample(decode(x_i, t_i))), penalty_i, clean_clip_i); the value
  and gradient of Σ_i fitness_i give every member's own gradient (members are independent). One
  compiled function, population sharded over the mesh (params replicated), run in chunks of
  `microbatch × devices` members like `sampler.PopulationSampler`; padded members are dropped.
  """

  def __init__(self, space, sd, settings, score_fn, fused_params, fitness_fn, uncond,
               guidance_scale: float, mesh, microbatch: int | None = None):
    """Compiles nothing yet (the first call does).

    Args:
      space: the search space (`decode`, `params`).
      sd: the model bundle.
      settings: `sampler.SamplerSettings` (gradient depth `grad_steps`, `remat`; return_images
        to hand the images back for judges that read them on the host).
      score_fn: the scoring's fused score function.
      fused_params: `sampler.fused_params(...)`, replicated on the mesh.
      fitness_fn: `(scores, penalty [M], clean_clip [M]) -> [M]`, pure JAX.
      uncond: [L, D] unconditional hidden states.
      guidance_scale: w.
      mesh, microbatch: as for `PopulationSampler`.
    """
    from jaxdiffattack import sampler as sampler_lib  # pylint: disable=g-import-not-at-top
    from jaxdiffattack import sharding  # pylint: disable=g-import-not-at-top
    self.space = space
    self.mesh = mesh
    self.microbatch = microbatch
    self.sharding = sharding
    fused = sampler_lib.FusedSampler.build(sd, settings, score_fn)
    self.return_images = settings.return_images
    uncond = jnp.asarray(uncond)

    def objective(x, fparams, sparams, targets, aux, clean_clip):
      decode_one = lambda xi, t: space.decode(sparams, xi[None], t)
      decoded = jax.tree_util.tree_map(lambda a: a[:, 0],
                                       jax.vmap(decode_one)(x, targets))     # [M, ...]
      out = fused(fparams, decoded.latents, decoded.cond, uncond, guidance_scale, aux)
      fitness = fitness_fn(out.scores, decoded.penalty, clean_clip)
      return fitness.sum(), (fitness, out.scores, out.images, decoded)

    pop, rep = sharding.population_sharding(mesh), sharding.replicated(mesh)
    self.fused_params = fused_params
    self.space_params = sharding.put_replicated(space.params, mesh)
    self.compiled = jax.jit(jax.value_and_grad(objective, has_aux=True),
                            in_shardings=(pop, rep, rep, pop, pop, pop),
                            out_shardings=((rep, pop), pop))

  def __call__(self, x: np.ndarray, targets: np.ndarray, aux, clean_clip: np.ndarray) -> dict:
    """x [M, n] of targets [M] → {"grad" [M, n], "fitness" [M], "scores" {name: [M]},
    "images" [M, H, W, 3] or None, "decoded" (the space's `Decoded`, host arrays)}."""
    sh = self.sharding
    size = x.shape[0]
    chunk = sh.chunk_size(self.mesh, size, self.microbatch)
    padded = -(-size // chunk) * chunk
    inputs = [sh.pad_population(np.asarray(a), padded) for a in (
        np.asarray(x, np.float32), np.asarray(targets, np.int32))]
    aux = jax.tree_util.tree_map(lambda a: sh.pad_population(a, padded), aux)
    clean_clip = sh.pad_population(np.asarray(clean_clip, np.float32), padded)
    outputs = []
    for start in range(0, padded, chunk):
      put = lambda a: sh.put_population(a[start:start + chunk], self.mesh)  # pylint: disable=cell-var-from-loop
      (_, (fitness, scores, images, decoded)), grad = self.compiled(
          put(inputs[0]), self.fused_params, self.space_params, put(inputs[1]),
          jax.tree_util.tree_map(put, aux), put(clean_clip))
      outputs.append({"grad": grad, "fitness": fitness, "scores": scores, "images": images,
                      "decoded": decoded})
    gather = lambda *parts: np.concatenate([sh.to_host(p) for p in parts])[:size]
    out = jax.tree_util.tree_map(gather, *outputs)
    out["scores"] = {k: np.asarray(v, np.float64) for k, v in out["scores"].items()
                     if np.ndim(v) == 1}
    return out
