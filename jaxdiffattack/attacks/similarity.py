"""ATM's semantic-similarity term: a BERTScore-idf stand-in on the text encoder (arXiv 2306.02583).

ATM adds λ_sim · (−BERTScore) to its loss so that the attacked prompt keeps the clean prompt's
meaning. The released code computes BERTScore's idf-weighted recall (Zhang et al. 2020, eq. 3–4):

    R = Σ_i w_i · max_j cos(x_i, x̃_j),     w_i = idf(x_i) / Σ_k idf(x_k),

between the contextual embeddings x_i of the clean tokens and x̃_j of the relaxed (Gumbel-softmax
mixed) tokens, taken from a GPT-2 trained on the CLIP tokenizer — a model that cannot be obtained
offline. STAND-IN: the same greedy matching over the contextual token embeddings of the project's
own text encoder (the generator's CLIP text tower, last hidden state — the very states that
condition the UNet, so the term costs nothing extra), with idf from the attacked prompt set:

    idf(v) = log((M + 1) / (df(v) + 1))   over the M prompts (BERTScore's `get_idf_dict`).

Reference tokens are the clean prompt's real tokens (BOS, EOS and padding weigh 0); candidates are
all positions but the first and the last (the released code's `[1:-1]`), so appended tokens can
match. The term is differentiable w.r.t. the soft tokens through the text encoder.
"""

import jax
import jax.numpy as jnp
import numpy as np


def idf_table(ids: np.ndarray, lengths: np.ndarray, vocab_size: int) -> np.ndarray:
  """[V] float32 idf of every token id over the prompts' real tokens (ids [M, L], lengths [M])."""
  count = np.zeros(vocab_size, np.int64)
  for row, n in zip(np.asarray(ids), np.asarray(lengths)):
    count[np.unique(row[1:int(n) - 1])] += 1
  m = len(ids)
  return np.log((m + 1) / (count + 1)).astype(np.float32)


def reference_weights(ids: np.ndarray, lengths: np.ndarray, idf: np.ndarray) -> np.ndarray:
  """[M, L] idf weights of each clean prompt's real tokens, summing to 1 per prompt.

  A prompt whose tokens all have idf 0 (every token in every prompt) gets uniform weights.
  """
  ids = np.asarray(ids)
  real = np.zeros(ids.shape, bool)
  for i, n in enumerate(np.asarray(lengths)):
    real[i, 1:int(n) - 1] = True
  weights = np.where(real, idf[ids], 0.0).astype(np.float64)
  total = weights.sum(axis=1, keepdims=True)
  uniform = real / np.maximum(real.sum(axis=1, keepdims=True), 1)
  return np.where(total > 0, weights / np.where(total > 0, total, 1.0), uniform).astype(np.float32)


def _normalise(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def bertscore_recall(reference: jax.Array, candidate: jax.Array, weights: jax.Array) -> jax.Array:
  """Idf-weighted greedy-matching recall R for one pair (or batched over leading axes).

  Args:
    reference: [..., L, D] contextual embeddings of the clean prompt.
    candidate: [..., L, D] contextual embeddings of the attacked (soft) prompt.
    weights: [..., L] reference weights (0 where a position is not a real token).
  Returns:
    [...] R in [-1, 1].
  """
  cosines = jnp.einsum("...id,...jd->...ij", _normalise(reference), _normalise(candidate))
  best = jnp.max(cosines[..., 1:-1], axis=-1)                 # [..., L] over candidates 1..L-2
  return jnp.sum(weights * best, axis=-1)
