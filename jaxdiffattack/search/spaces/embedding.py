"""Prompt-embedding space: a bounded perturbation of the clean prompt's text conditioning.

`config.embedding.level`:
  * "hidden" (default): perturb the text encoder's output hidden states [L, D] (what the UNet's
    cross-attention reads), e' = e + δ;
  * "input": perturb the input token embeddings [L, D_tok] and run the text encoder on them.
`config.embedding.positions`: "prompt" perturbs positions 1 … K−1 with K the longest clean prompt's
length in tokens including its end-of-text token (the start token is left alone: it is the same for
every prompt); "all" perturbs positions 1 … L−1 (the padding's states are attended to as well).

Bound (`epsilon`, relative): every perturbed position k keeps ‖δ_k‖ ≤ ε ‖e_k‖, by projection in
`decode` (δ_k ← δ_k · min(1, ε‖e_k‖ / ‖δ_k‖)), so every member satisfies it. The solution is δ in
units of s = ε · mean_k ‖e_k‖ / √D, so x ~ N(0, I) lands near the bound; the search starts at δ = 0
(the clean prompt) and the random baseline draws x ~ N(0, I). Images are generated from the
target's fixed base latent. Reported: the largest relative perturbation, and the text similarity of
the (perturbed) pooled state to the clean one.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack import text
from jaxdiffattack.errors import check
from jaxdiffattack.search.spaces import base
from jaxdiffattack.search.spaces.base import Decoded
from jaxdiffattack.search.spaces.base import Space

LEVELS = ("hidden", "input")
POSITIONS = ("prompt", "all")


class EmbeddingSpace(Space):
  name = "embedding"

  def __init__(self, config, sd, params, targets, key):
    super().__init__(config, sd, params, targets, key)
    self.cfg = config.embedding
    check(self.cfg.level in LEVELS, "embedding.level", self.cfg.level, f"use one of {LEVELS}")
    check(self.cfg.positions in POSITIONS, "embedding.positions", self.cfg.positions,
          f"use one of {POSITIONS}")
    check(self.cfg.epsilon > 0, "embedding.epsilon", self.cfg.epsilon, "use a number > 0")
    length = self.ids.shape[1]
    if self.cfg.positions == "prompt":
      stop = min(int(self.clean_eos.max()) + 1, length)
    else:
      stop = length
    self.positions = np.arange(1, stop)                                     # [K]
    if self.cfg.level == "hidden":
      embeddings = self.clean_cond                                          # [T, L, D]
    else:
      embeddings = np.asarray(text.embed_tokens(sd, params["text_encoder"], self.ids),
                              np.float32)                                   # [T, L, D_tok]
    self.width = embeddings.shape[-1]
    self.num_dims = len(self.positions) * self.width
    norms = np.linalg.norm(embeddings[:, self.positions], axis=-1)         # [T, K]
    self.radius = self.cfg.epsilon * norms                                  # [T, K]
    self.scale = float(self.cfg.epsilon * norms.mean() / np.sqrt(self.width))
    self.params |= {"embeddings": embeddings, "radius": self.radius, "norms": norms}

  def init_means(self) -> np.ndarray:
    return np.zeros((len(self.targets), self.num_dims), np.float32)

  def sample_prior(self, key):
    return jax.random.normal(key, (self.num_dims,))

  def delta(self, params, x, t) -> jax.Array:
    """Solutions [M, n] → projected perturbations δ [M, K, D]."""
    delta = x.reshape(-1, len(self.positions), self.width) * self.scale
    norm = jnp.linalg.norm(delta, axis=-1, keepdims=True)
    return delta * jnp.minimum(1.0, params["radius"][t][None, :, None] / jnp.maximum(norm, 1e-12))

  def project(self, params, x, t):
    """x with every position's perturbation inside its ε-ball (the projected δ, in x units)."""
    return self.delta(params, x, t).reshape(x.shape) / self.scale

  def encode(self, delta, t) -> np.ndarray:
    del t
    return (np.asarray(delta, np.float64) / self.scale).reshape(len(delta), -1).astype(np.float32)

  def decode(self, params, x, t) -> Decoded:
    delta = self.delta(params, x, t)
    m = delta.shape[0]
    emb = jnp.broadcast_to(params["embeddings"][t], (m,) + self.params["embeddings"].shape[1:])
    emb = emb.at[:, self.positions].add(delta)
    if self.cfg.level == "hidden":
      cond = emb
    else:
      cond = text.encode_token_embeddings(self.sd, params["text"], emb)
    relative = jnp.linalg.norm(delta, axis=-1) / jnp.maximum(params["norms"][t], 1e-12)
    eos = jnp.full(m, params["clean_eos"][t])
    metrics = {"max_relative_perturbation": relative.max(axis=1),
               "text_similarity": base.row_cosine(base.pooled(cond, eos),
                                                  params["clean_pooled"][t])}
    return Decoded(self._fixed_latents(params, t, m), cond, jnp.zeros(m), jnp.ones(m, bool),
                   metrics)

  def artifacts(self, x, t) -> dict:
    decoded = self.decode_one(x, t)
    delta = self.delta(self.params, jnp.asarray(x, jnp.float32)[None], t)
    return {"delta.npy": np.asarray(delta[0]), "embedding.npy": decoded.cond[0],
            "latent.npy": decoded.latents[0], "prompt.txt": self.prompts[t]}
