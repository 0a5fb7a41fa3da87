"""The search-space interface and what all spaces share (clean prompts, base latents, text helpers).

A space is a pure JAX function `decode(params, x [M, n], t) -> Decoded` of a flat solution vector
(what evosax searches, or what a gradient method steps) and a target index t (a Python int or a
traced int32), with everything it reads in `params` (a pytree: the per-target arrays and, where
the space encodes text, the text encoder's params). It is jit-able and vmap-able
(`decode_population` runs it jitted and vmapped over targets), and differentiable w.r.t. x where
the space is continuous (latent, embedding, token), so evosax strategies and gradient methods
share it.

Every target t has a clean prompt (hidden states [L, D] from the generator's own text encoder) and
a base latent z_t ~ N(0, I) drawn from fold_in(fold_in(key, 1), t); spaces that search the text
side keep z_t fixed, so a failure is attributable to the text alone.

Text similarity (prompt and token spaces): cosine between the generator text encoder's hidden state
at the first end-of-text position (CLIP's pooled text feature before its projection, Radford et
al. 2021) of the candidate and of the clean prompt.

Constraint hook: `project(params, x, t)` maps solutions onto the space's constraint (pure JAX),
so that gradient methods (`search.gradient`) keep every iterate inside it: decode(project(x)) ==
decode(x), and project is the identity on solutions that satisfy the constraint. Spaces that are
not continuous (`continuous = False`: the prompt space) have no gradient.

Reporting hooks: `describe` (JSON figures of a solution), `artifacts` (files of a found failure),
`annotate_rows` (space-specific figures over a method's found failures, e.g. the latent space's
Non-Gaussian Rate), `similarity` (the diversity term's measure).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import text
from jaxdiffattack.search import driver


class Decoded(NamedTuple):
  """Sampler inputs and constraint of M members of one target."""
  latents: jax.Array     # [M, C, h, w] standard-normal seed vectors
  cond: jax.Array        # [M, L, D] text hidden states
  penalty: jax.Array     # [M] added to the fitness (0 where the constraint holds)
  feasible: jax.Array    # [M] bool: a failure counts only where True
  metrics: dict          # name → [M]: the constraint's reported figures


def pooled(hidden: jax.Array, positions: jax.Array) -> jax.Array:
  """[M, D]: hidden [M, L, D] at one position per row."""
  return jnp.take_along_axis(hidden, positions[:, None, None], axis=1)[:, 0]


def row_cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  """Cosine similarity of matching rows of a [M, D] and b [M, D] (or b [D])."""
  b = jnp.broadcast_to(b, a.shape)
  norms = jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1)
  return (a * b).sum(-1) / jnp.maximum(norms, 1e-12)


def eos_positions(sd, ids: jax.Array) -> jax.Array:
  """[M] index of the first end-of-text token of each row of ids [M, L] (the last if none)."""
  eos = ids == sd.tokenizer.eos_token_id
  return jnp.where(eos.any(axis=1), jnp.argmax(eos, axis=1), ids.shape[1] - 1)


class Space:
  """Base class: clean prompts, base latents; subclasses define the solution encoding."""
  name = ""
  num_dims: int
  continuous = True    # decode is differentiable in x (gradient methods may search it)
  initial_noise = False  # x is the initial latent: it enters the sampler only at its first step
                         # (gradients flow through every step; found latents can be tried with
                         # other prompts)

  def __init__(self, config, sd, params, targets, key):
    self.config = config
    self.sd = sd
    self.targets = targets
    self.prompts = [t.prompt for t in targets]
    self.ids = text.tokenize(sd, self.prompts)                            # [T, L]
    text_params = params["text_encoder"]
    clean_cond = np.asarray(_encode_ids(sd, text_params, jnp.asarray(self.ids)), np.float32)
    self.clean_cond = clean_cond                                          # [T, L, D]
    self.clean_eos = np.asarray(eos_positions(sd, jnp.asarray(self.ids)))  # [T]
    self.latent_shape = tuple(sd.latent_shape)
    self.base_latents = np.asarray(sampler_lib.member_latents(
        jax.random.fold_in(key, 1), np.arange(len(targets)), self.latent_shape))  # [T, C, h, w]
    # What `decode` reads; subclasses add theirs.
    self.params = {
        "base_latents": self.base_latents,
        "clean_cond": clean_cond,
        "clean_pooled": np.asarray(pooled(clean_cond, self.clean_eos)),   # [T, D]
        "clean_eos": self.clean_eos,
        "text": text_params,
    }
    self._decode_batch = jax.jit(jax.vmap(lambda p, x, t: self.decode(p, x, t),
                                          in_axes=(None, 0, 0)))

  # ---- interface ----
  def init_means(self) -> np.ndarray:
    """[T, n]: where each target's search starts."""
    raise NotImplementedError

  def sample_prior(self, key: jax.Array) -> jax.Array:
    """[n]: the random baseline's draw (jit-able)."""
    raise NotImplementedError

  def decode(self, params, x: jax.Array, t) -> Decoded:
    """Solutions x [M, n] of target t → sampler inputs and constraint (pure JAX)."""
    raise NotImplementedError

  def project(self, params, x: jax.Array, t) -> jax.Array:
    """Solutions x [M, n] of target t moved onto the constraint (pure JAX; default: none)."""
    del params, t
    return x

  def encode(self, value: np.ndarray, t: int) -> np.ndarray:
    """The solutions [M, n] of space-native values (latents, perturbations, tokens, choices)
    that satisfy the constraint: decode(encode(v)) reproduces v."""
    raise NotImplementedError

  def decode_population(self, x: np.ndarray, targets: np.ndarray) -> Decoded:
    """Solutions x [A, P, n] of targets [A] → one population [A·P, ...] (host NumPy), decoded
    in one jitted, vmapped call."""
    out = self._decode_batch(self.params, jnp.asarray(x, jnp.float32),
                             jnp.asarray(targets, jnp.int32))
    flat = lambda a: np.asarray(a).reshape((-1,) + a.shape[2:])
    return jax.tree_util.tree_map(flat, out)

  def decode_one(self, x: np.ndarray, t: int) -> Decoded:
    """One solution x [n] of target t, decoded (host NumPy, leading axis of size 1)."""
    return self.decode_population(np.asarray(x)[None, None], np.array([t]))

  def clean(self, t: int) -> tuple[np.ndarray, np.ndarray]:
    """(latent [C, h, w], cond [L, D]) of the unperturbed generation of target t."""
    return self.base_latents[t], self.clean_cond[t]

  def similarity(self, x: np.ndarray, archive: np.ndarray) -> np.ndarray:
    """[M, K] similarity of solutions x [M, n] to found failures [K, n] (cosine)."""
    return driver.cosine_similarity(x, archive)

  def artifacts(self, x: np.ndarray, t: int) -> dict:
    """Files describing one found failure: name → array (.npy) or str (.txt)."""
    return {"latent.npy": self.decode_one(x, t).latents[0], "prompt.txt": self.prompts[t]}

  def describe(self, x: np.ndarray, t: int) -> dict:
    """JSON figures of one solution (e.g. the edited prompt's text)."""
    del x, t
    return {}

  def annotate_rows(self, rows: list[dict], archive: np.ndarray) -> None:
    """Adds space-specific figures to a method's results rows (in place); archive [T, K, n]
    holds each target's found failures (row["failures"] says how many)."""
    del rows, archive

  # ---- helpers for subclasses (pure) ----
  def _fixed_latents(self, params, t, m: int) -> jax.Array:
    return jnp.broadcast_to(params["base_latents"][t], (m,) + self.latent_shape)

  def _clean_cond(self, params, t, m: int) -> jax.Array:
    return jnp.broadcast_to(params["clean_cond"][t], (m,) + self.clean_cond.shape[1:])


_encode_ids = jax.jit(text.encode_ids, static_argnums=0)
