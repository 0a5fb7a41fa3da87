"""The search-space interface and what all spaces share (clean prompts, base latents, text helpers).

Every target t has a clean prompt (hidden states [L, D] from the generator's own text encoder) and
a base latent z_t ~ N(0, I) drawn from fold_in(fold_in(key, 1), t); spaces that search the text
side keep z_t fixed, so a failure is attributable to the text alone.

Text similarity (prompt and token spaces): cosine between the generator text encoder's hidden state
at the first end-of-text position (CLIP's pooled text feature before its projection, Radford et
al. 2021) of the candidate and of the clean prompt.
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
  latents: np.ndarray    # [M, C, h, w] standard-normal seed vectors
  cond: np.ndarray       # [M, L, D] text hidden states
  penalty: np.ndarray    # [M] added to the fitness (0 where the constraint holds)
  feasible: np.ndarray   # [M] bool: a failure counts only where True
  metrics: dict          # name → [M] float: the constraint's reported figures


_encode_ids = jax.jit(text.encode_ids, static_argnums=0)
_encode_embeds = jax.jit(text.encode_token_embeddings, static_argnums=0)


def encode_ids(sd, text_params, ids: np.ndarray) -> np.ndarray:
  return np.asarray(_encode_ids(sd, text_params, jnp.asarray(ids, jnp.int32)), np.float32)


def encode_embeds(sd, text_params, embeds: np.ndarray) -> np.ndarray:
  return np.asarray(_encode_embeds(sd, text_params, jnp.asarray(embeds, jnp.float32)),
                    np.float32)


def eos_positions(sd, ids: np.ndarray) -> np.ndarray:
  """[M] index of the first end-of-text token of each row of ids [M, L]."""
  ids = np.asarray(ids)
  eos = ids == sd.tokenizer.eos_token_id
  return np.where(eos.any(axis=1), eos.argmax(axis=1), ids.shape[1] - 1)


def pooled(hidden: np.ndarray, positions: np.ndarray) -> np.ndarray:
  """[M, D]: hidden [M, L, D] at one position per row."""
  return hidden[np.arange(hidden.shape[0]), positions]


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Cosine similarity of matching rows of a [M, D] and b [M, D] (or b [D])."""
  a = np.asarray(a, np.float64)
  b = np.broadcast_to(np.asarray(b, np.float64), a.shape)
  num = (a * b).sum(-1)
  return num / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


class Space:
  """Base class: clean prompts, base latents; subclasses define the solution encoding."""
  name = ""
  num_dims: int

  def __init__(self, config, sd, params, targets, key):
    self.config = config
    self.sd = sd
    self.text_params = params["text_encoder"]
    self.targets = targets
    self.prompts = [t.prompt for t in targets]
    self.ids = text.tokenize(sd, self.prompts)                           # [T, L]
    self.clean_cond = encode_ids(sd, self.text_params, self.ids)         # [T, L, D]
    self.clean_eos = eos_positions(sd, self.ids)                         # [T]
    self.clean_pooled = pooled(self.clean_cond, self.clean_eos)          # [T, D]
    self.latent_shape = tuple(sd.latent_shape)
    self.base_latents = np.asarray(sampler_lib.member_latents(
        jax.random.fold_in(key, 1), np.arange(len(targets)), self.latent_shape))  # [T, C, h, w]

  # ---- interface ----
  def init_means(self) -> np.ndarray:
    raise NotImplementedError

  def sample_prior(self, key: jax.Array) -> jax.Array:
    raise NotImplementedError

  def decode(self, x: np.ndarray, t: int) -> Decoded:
    raise NotImplementedError

  def encode(self, value: np.ndarray, t: int) -> np.ndarray:
    """The solutions [M, n] of space-native values (latents, perturbations, tokens, choices)
    that satisfy the constraint: decode(encode(v)) reproduces v."""
    raise NotImplementedError

  def clean(self, t: int) -> tuple[np.ndarray, np.ndarray]:
    """(latent [C, h, w], cond [L, D]) of the unperturbed generation of target t."""
    return self.base_latents[t], self.clean_cond[t]

  def similarity(self, x: np.ndarray, archive: np.ndarray) -> np.ndarray:
    return driver.cosine_similarity(x, archive)

  def artifacts(self, x: np.ndarray, t: int) -> dict:
    """Files describing one found failure: name → array (.npy) or str (.txt)."""
    decoded = self.decode(np.asarray(x)[None], t)
    return {"latent.npy": decoded.latents[0], "prompt.txt": self.prompts[t]}

  def describe(self, x: np.ndarray, t: int) -> dict:
    """JSON figures of one solution (e.g. the edited prompt's text)."""
    del x, t
    return {}

  # ---- helpers ----
  def _fixed_latents(self, t: int, m: int) -> np.ndarray:
    return np.broadcast_to(self.base_latents[t], (m,) + self.latent_shape).copy()

  def _clean_cond(self, t: int, m: int) -> np.ndarray:
    return np.broadcast_to(self.clean_cond[t], (m,) + self.clean_cond.shape[1:]).copy()
