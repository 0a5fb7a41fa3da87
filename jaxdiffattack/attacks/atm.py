"""ATM, the Auto-attack on Text-to-image Models (Du et al. 2023, "Stable Diffusion is Unstable",
arXiv 2306.02583, §3), population-parallel.

For a clean prompt with tokens x [L] naming class y, ATM learns a distribution over prompts: logits
θ [L, V] initialised to `init_logit` (15) at the clean tokens and 0 elsewhere. Each iteration

    w  = Gumbel-softmax(θ, τ)             (`gumbel.py`; frozen positions: the clean one-hot)
    e  = w · E                            soft token embeddings [L, D_tok] (E: the embedding table)
    c  = TextEncoder(e)                   [L, D], the condition the UNet reads
    x  = Sampler(z, c)                    gradient through the last K steps (released code: K = 1)
    s  = CLIP zero-shot logits of x       over the label set
    loss = max(s_y − max_{j≠y} s_j + κ, 0) − λ_sim · R(c_clean, c)      (§3.2, eq. 2–4)

with R the BERTScore-idf recall (`similarity.py`: a stand-in over the text encoder's states) and
the fluency term of the paper at its released weight 0. θ takes an Adam step (lr 0.3) with the
gradient zeroed at frozen positions (`modes.py`); 100 iterations. Afterwards hard prompts are drawn
from Categorical(softmax(θ)) (`hard_ids`).

Population-parallel: P prompts are attacked at once — θ [P, L, V], one optax Adam state per prompt
(vmapped over P), the whole step one jitted program with the prompt axis sharded over the device
mesh. Every random draw is keyed `fold_in(fold_in(key, prompt index), iteration)` (then the draw's
purpose and batch index), so a prompt's attack does not depend on P, on which prompts share its
batch, on the device count, or on a resume point.

As an entry of the job's `registry.ATTACKS` ("atm"): `validate(config)`, `build(...)` (an `Attack`:
`compile` → init/step, `readout` → hard prompts) and `evaluations(config)`.
"""

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np
import optax

from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import sharding
from jaxdiffattack import text
from jaxdiffattack.attacks import gumbel
from jaxdiffattack.attacks import similarity
from jaxdiffattack.errors import check as _check

# Purposes folded into an iteration's key.
_GUMBEL, _LATENT = 0, 1


@dataclasses.dataclass(frozen=True)
class Settings:
  """ATM's hyper-parameters; defaults are the released code's (`data/config.py`)."""
  init_logit: float = 15.0    # θ at the clean tokens ('initial_coeff')
  kappa: float = 30.0         # margin κ in the judge's logit units (CLIP: 100 · cosine)
  lam_sim: float = 4.0        # λ_sim, weight of the similarity term
  lam_fluency: float = 0.0    # fluency (perplexity) weight; 0 as released (no LM here)
  lr: float = 0.3             # Adam learning rate
  num_iters: int = 100
  batch_size: int = 1         # Gumbel draws per prompt per iteration (released: 1)
  tau: float = 1.0            # Gumbel-softmax temperature (released: PyTorch's default 1)
  hard: bool = False          # straight-through hard samples while attacking
  grad_steps: int | None = 1  # gradient depth: last K steps (released: 1); None = all steps
  remat: bool = False         # rematerialise differentiated steps (for grad_steps=None)
  guidance_scale: float = 7.5

  def validate(self, num_steps: int, prefix: str = "") -> None:
    """One-line ConfigErrors naming `config.<prefix><field>`."""
    finite = lambda v: isinstance(v, (int, float)) and math.isfinite(v)
    check = lambda ok, key, value, allowed: _check(ok, prefix + key, value, allowed)
    check(finite(self.init_logit), "init_logit", self.init_logit, "use a finite number")
    check(finite(self.kappa) and self.kappa >= 0, "kappa", self.kappa, "use a finite number >= 0")
    check(finite(self.lam_sim) and self.lam_sim >= 0, "lam_sim", self.lam_sim,
          "use a finite number >= 0")
    check(self.lam_fluency == 0, "lam_fluency", self.lam_fluency,
          "only 0 is supported (the released weight; the fluency LM, a GPT-2 on the CLIP "
          "tokenizer, is not available)")
    check(finite(self.lr) and self.lr > 0, "lr", self.lr, "use a finite number > 0")
    check(isinstance(self.num_iters, int) and self.num_iters >= 1, "num_iters", self.num_iters,
          "use an integer >= 1")
    check(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size",
          self.batch_size, "use an integer >= 1")
    check(finite(self.tau) and self.tau > 0, "tau", self.tau, "use a finite number > 0")
    check(self.grad_steps is None or (isinstance(self.grad_steps, int)
                                      and 1 <= self.grad_steps <= num_steps),
          "grad_steps", self.grad_steps,
          f"use None (every step) or an integer in 1..num_steps={num_steps}")


class Prompts(NamedTuple):
  """Per-prompt inputs of an attack, each with the prompt axis first (sharded over the mesh)."""
  index: jax.Array      # [P] uint32 the prompt's index in its set (keys fold it in)
  ids: jax.Array        # [P, L] int32 clean token ids
  free: jax.Array       # [P, L] bool positions the attack may change
  label: jax.Array      # [P] int32 label-set index of the prompt's class
  reference: jax.Array  # [P, L, D] clean prompt's text-encoder states (similarity)
  weights: jax.Array    # [P, L] idf weights of every position, padding too (similarity)


class State(NamedTuple):
  logits: jax.Array     # [P, L, V] θ
  opt_state: Any        # optax Adam state, every leaf with leading axis P
  iteration: jax.Array  # [] int32 iterations done


class Metrics(NamedTuple):
  """One iteration's figures per prompt, each [P] (means over the batch of Gumbel draws)."""
  loss: jax.Array
  adv_loss: jax.Array     # max(margin + κ, 0)
  similarity: jax.Array   # R
  margin: jax.Array       # s_y − max_{j≠y} s_j
  entropy: jax.Array      # mean entropy of softmax(θ) over free positions (nats), before the step


def prompt_keys(key: jax.Array, index: jax.Array) -> jax.Array:
  """[P] keys fold_in(key, prompt index)."""
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(index.astype(jnp.uint32))


def init_logits(ids: jax.Array, vocab_size: int, init_logit: float) -> jax.Array:
  """θ [P, L, V]: `init_logit` at the clean tokens, 0 elsewhere."""
  return init_logit * jax.nn.one_hot(ids, vocab_size, dtype=jnp.float32)


def relaxed_tokens(gumbels: jax.Array, logits: jax.Array, ids: jax.Array, free: jax.Array,
                   tau: float, hard: bool) -> jax.Array:
  """Gumbel-softmax weights [..., L, V] at free positions, the clean one-hot elsewhere."""
  weights = gumbel.relax(logits, gumbels, tau, hard)
  return jnp.where(free[..., None], weights, jax.nn.one_hot(ids, logits.shape[-1],
                                                            dtype=weights.dtype))


def iteration_noise(key: jax.Array, index: jax.Array, iteration, batch: int, vocab_shape,
                    latent_shape) -> tuple[jax.Array, jax.Array]:
  """The random draws of one attack iteration for prompts with indices [P].

  Returns Gumbel noise [P, B, L, V] (float32) and seed vectors [P, B, C, h, w]; draw b of prompt
  p at iteration i uses fold_in(fold_in(fold_in(fold_in(key, p's index), i), purpose), b).
  """
  def per_prompt(k):
    k = jax.random.fold_in(k, iteration)
    gk, lk = jax.random.fold_in(k, _GUMBEL), jax.random.fold_in(k, _LATENT)
    b = jnp.arange(batch, dtype=jnp.uint32)
    g = jax.vmap(lambda j: jax.random.gumbel(jax.random.fold_in(gk, j), tuple(vocab_shape),
                                             jnp.float32))(b)
    z = jax.vmap(lambda j: jax.random.normal(jax.random.fold_in(lk, j), tuple(latent_shape),
                                             jnp.float32))(b)
    return g, z

  return jax.vmap(per_prompt)(prompt_keys(key, jnp.asarray(index)))


def hard_ids(key: jax.Array, logits: jax.Array, prompts: Prompts, sample_index) -> jax.Array:
  """Hard prompts [P, S, L] int32 drawn from softmax(θ) (clean tokens at frozen positions).

  Sample j of prompt p uses fold_in(fold_in(key, p's index), j).
  """
  sample_index = jnp.asarray(sample_index, jnp.uint32)

  def one_prompt(k, theta, ids, free):
    draw = lambda j: gumbel.sample_ids(jax.random.fold_in(k, j), theta)
    return jnp.where(free, jax.vmap(draw)(sample_index), ids)

  return jax.vmap(one_prompt)(prompt_keys(key, prompts.index), logits, prompts.ids, prompts.free)


def entropy(logits: jax.Array, free: jax.Array) -> jax.Array:
  """[P] mean entropy (nats) of softmax(θ) over each prompt's free positions."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  h = -jnp.sum(jnp.exp(logp) * logp, axis=-1)                        # [P, L]
  return jnp.sum(jnp.where(free, h, 0.0), -1) / jnp.maximum(free.sum(-1), 1)


@dataclasses.dataclass(frozen=True, eq=False)
class Attack:
  """The static parts of an attack: the model, the fused sampler + scorer, the settings.

  `fused` is the project's differentiable sampler with its scorer (`sampler.FusedSampler`, its
  settings' `grad_steps` the gradient depth); its score function must return `margin_key` → [N]
  margins s_y − max_{j≠y} s_j of the attack's classifier for aux={"label": [N]}.
  Params of `losses`/`step`: {"text_encoder", "uncond" ([L, D] hidden states of ""), "fused"
  (`sampler.fused_params`)}.
  """
  sd: Any
  fused: sampler_lib.FusedSampler
  settings: Settings
  margin_key: str
  latent_shape: tuple[int, ...] | None = None   # [C, h, w]; None: the model's default

  @classmethod
  def build(cls, sd, settings: Settings, score_fn: Callable, margin_key: str, *,
            scheduler: str = "ddim", num_steps: int = 50,
            latent_shape: tuple[int, ...] | None = None) -> "Attack":
    settings.validate(num_steps)
    fused = sampler_lib.FusedSampler.build(sd, sampler_lib.SamplerSettings(
        scheduler=scheduler, num_steps=num_steps, guidance=settings.guidance_scale > 1.0,
        remat=settings.remat, grad_steps=settings.grad_steps, return_images=False), score_fn)
    return cls(sd, fused, settings, margin_key, latent_shape)

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.latent_shape or self.sd.latent_shape)

  @property
  def optimizer(self) -> optax.GradientTransformation:
    return optax.adam(self.settings.lr)

  def init(self, ids: jax.Array) -> State:
    """The state before the first iteration for prompts with clean ids [P, L]."""
    logits = init_logits(ids, self.vocab_size, self.settings.init_logit)
    return State(logits, jax.vmap(self.optimizer.init)(logits), jnp.zeros((), jnp.int32))

  @property
  def iterations(self) -> int:
    return self.settings.num_iters

  @property
  def metrics(self) -> tuple[str, ...]:
    return Metrics._fields

  def readout(self, key: jax.Array, state: State, prompts: Prompts, sample_index) -> jax.Array:
    """Hard prompts [P, S, L] from the final (sharded) state: `hard_ids` of θ on the host."""
    return hard_ids(key, jnp.asarray(sharding.to_host(state.logits)), prompts, sample_index)

  @property
  def vocab_size(self) -> int:
    return int(self.sd.text_encoder.config.vocab_size)

  def losses(self, logits, params, prompts: Prompts, key, iteration):
    """(Σ_p loss_p, Metrics without entropy) for θ [P, L, V] at `iteration`."""
    s = self.settings
    population, length, vocab = logits.shape
    batch = s.batch_size
    gumbels, latents = iteration_noise(key, prompts.index, iteration, batch, (length, vocab),
                                       self.shape)
    weights = relaxed_tokens(gumbels.astype(logits.dtype), logits[:, None],
                             prompts.ids[:, None], prompts.free[:, None], s.tau, s.hard)
    weights = weights.reshape(population * batch, length, vocab)              # [PB, L, V]
    table = text.token_embedding_table(self.sd, params["text_encoder"])     # [V, D_tok]
    embeds = jnp.einsum("nlv,vd->nld", weights, table.astype(weights.dtype))
    cond = text.encode_token_embeddings(self.sd, params["text_encoder"], embeds)  # [PB, L, D]
    latents = latents.reshape(population * batch, *self.shape)
    latents = latents.astype(cond.dtype)      # float64 under x64 checks, else float32
    label = jnp.repeat(prompts.label, batch)
    scores = self.fused(params["fused"], latents, cond, params["uncond"], s.guidance_scale,
                        {"label": label}).scores
    margin = scores[self.margin_key].reshape(population, batch)
    adv = jnp.maximum(margin + s.kappa, 0.0)
    sim = similarity.bertscore_recall(
        jnp.repeat(prompts.reference, batch, axis=0), cond,
        jnp.repeat(prompts.weights, batch, axis=0)).reshape(population, batch)
    loss = adv.mean(1) - s.lam_sim * sim.mean(1)                             # [P]
    metrics = Metrics(loss, adv.mean(1), sim.mean(1), margin.mean(1), jnp.zeros_like(loss))
    return loss.sum(), metrics

  def step(self, params, state: State, prompts: Prompts, key) -> tuple[State, Metrics]:
    """One ATM iteration for all P prompts (pure; `compile` jits it with the mesh shardings)."""
    grad_fn = jax.value_and_grad(self.losses, has_aux=True)
    (_, metrics), grads = grad_fn(state.logits, params, prompts, key, state.iteration)
    grads = jnp.where(prompts.free[..., None], grads, 0.0)   # the released code's zeroing
    updates, opt_state = jax.vmap(self.optimizer.update)(grads, state.opt_state, state.logits)
    metrics = metrics._replace(entropy=entropy(state.logits, prompts.free))
    return State(optax.apply_updates(state.logits, updates), opt_state,
                 state.iteration + 1), metrics

  def compile(self, mesh, steps_per_call: int = 1) -> "Compiled":
    """`init` and `step` jitted with the prompt axis sharded over `mesh`, the rest replicated.

    The compiled step runs `steps_per_call` iterations in a `lax.scan` (metrics [n, P]) and
    donates the state it is given.
    """
    def run(params, state, prompts, key):
      def body(st, _):
        return self.step(params, st, prompts, key)
      return jax.lax.scan(body, state, None, length=steps_per_call)

    pop = sharding.population_sharding(mesh)
    rep = sharding.replicated(mesh)
    per_iteration = NamedSharding(mesh, PartitionSpec(None, sharding.POP_AXIS))  # [n, P]
    state_sharding = State(pop, pop, rep)
    return Compiled(
        init=jax.jit(self.init, in_shardings=(pop,), out_shardings=state_sharding),
        step=jax.jit(run, in_shardings=(rep, state_sharding, pop, rep),
                     out_shardings=(state_sharding, per_iteration), donate_argnums=(1,)))


class Compiled(NamedTuple):
  init: Callable    # ids [P, L] → State (sharded)
  step: Callable    # (params, State, Prompts, key) → (State, Metrics [n, P])


def prompts_from(ids: np.ndarray, free: np.ndarray, labels: np.ndarray, index: np.ndarray,
                 reference: np.ndarray, weights: np.ndarray) -> Prompts:
  """Host arrays → `Prompts` (dtypes fixed)."""
  return Prompts(np.asarray(index, np.uint32), np.asarray(ids, np.int32), np.asarray(free, bool),
                 np.asarray(labels, np.int32), np.asarray(reference, np.float32),
                 np.asarray(weights, np.float32))



# ------------------------------------------------------------------ the job's registry entry --
def grad_steps_of(grad_depth, num_steps: int) -> int | None:
  """config.attack.grad_depth → `Settings.grad_steps`: "last" → 1, "all" → None, "K" → K."""
  depth = str(grad_depth).strip()
  if depth == "last":
    return 1
  if depth == "all":
    return None
  _check(depth.isdigit() and 1 <= int(depth) <= num_steps, "attack.grad_depth", grad_depth,
         f"use 'last' (as published), 'all', or an integer K in 1..num_steps={num_steps} (the "
         "last K steps)")
  return int(depth)


def settings_of(config) -> Settings:
  a = config.attack
  return Settings(
      init_logit=a.init_logit, kappa=a.kappa, lam_sim=a.lam_sim, lam_fluency=a.lam_fluency,
      lr=a.lr, num_iters=a.num_iters, batch_size=a.batch_size, tau=a.tau, hard=a.hard,
      grad_steps=grad_steps_of(a.grad_depth, config.num_steps), remat=a.remat,
      guidance_scale=config.guidance_scale)


def validate(config) -> None:
  settings_of(config).validate(config.num_steps, prefix="attack.")


def build(sd, config, score_fn: Callable, latent_shape, tokens) -> Attack:
  del tokens
  return Attack.build(sd, settings_of(config), score_fn, "attack/margin",
                      scheduler=config.scheduler, num_steps=config.num_steps,
                      latent_shape=latent_shape)


def evaluations(config) -> int:
  """Sampler + classifier passes (forward and backward) per prompt while attacking."""
  return int(config["attack"]["num_iters"]) * int(config["attack"]["batch_size"])
