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
      self.base = self.clean_cond                                           # [T, L, D]
    else:
      self.base = np.asarray(text.embed_tokens(sd, self.text_params, self.ids), np.float32)
    self.width = self.base.shape[-1]
    self.num_dims = len(self.positions) * self.width
    norms = np.linalg.norm(self.base[:, self.positions], axis=-1)          # [T, K]
    self.radius = self.cfg.epsilon * norms                                  # [T, K]
    self.scale = float(self.cfg.epsilon * norms.mean() / np.sqrt(self.width))

  def init_means(self) -> np.ndarray:
    return np.zeros((len(self.targets), self.num_dims), np.float32)

  def sample_prior(self, key):
    return jax.random.normal(key, (self.num_dims,))

  def delta(self, x: np.ndarray, t: int) -> np.ndarray:
    """Solutions [M, n] → projected perturbations δ [M, K, D]."""
    delta = np.asarray(x, np.float64).reshape(-1, len(self.positions), self.width) * self.scale
    norm = np.linalg.norm(delta, axis=-1, keepdims=True)
    factor = np.minimum(1.0, self.radius[t][None, :, None] / np.maximum(norm, 1e-12))
    return (delta * factor).astype(np.float32)

  def encode(self, delta, t) -> np.ndarray:
    del t
    return (np.asarray(delta, np.float64) / self.scale).reshape(len(delta), -1).astype(np.float32)

  def decode(self, x, t) -> Decoded:
    delta = self.delta(x, t)
    m = delta.shape[0]
    emb = np.broadcast_to(self.base[t], (m,) + self.base.shape[1:]).copy()
    emb[:, self.positions] += delta
    cond = emb if self.cfg.level == "hidden" else base.encode_embeds(self.sd, self.text_params,
                                                                      emb)
    relative = (np.linalg.norm(delta, axis=-1) /
                np.maximum(np.linalg.norm(self.base[t, self.positions], axis=-1), 1e-12))
    eos = np.full(m, self.clean_eos[t])
    metrics = {"max_relative_perturbation": relative.max(axis=1),
               "text_similarity": base.row_cosine(base.pooled(cond, eos), self.clean_pooled[t])}
    return Decoded(self._fixed_latents(t, m), cond, np.zeros(m), np.ones(m, bool), metrics)

  def artifacts(self, x, t) -> dict:
    decoded = self.decode(np.asarray(x)[None], t)
    return {"delta.npy": self.delta(np.asarray(x)[None], t)[0],
            "embedding.npy": decoded.cond[0], "latent.npy": decoded.latents[0],
            "prompt.txt": self.prompts[t]}
