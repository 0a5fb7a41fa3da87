"""ATM's semantic-similarity term: a BERTScore-idf stand-in on the text encoder (arXiv 2306.02583).

ATM adds λ_sim · (−R) to its loss so that the attacked prompt keeps the clean prompt's meaning, R
BERTScore's idf-weighted recall (Zhang et al. 2020, eq. 3–4). What the released code
(github.com/duchengbin8/Stable_Diffusion_is_Unstable, `whitebox_attack.py`, `bert_score` and the
lines around `ref_weights`) computes, on SD 2.1 (L = 77, padding="max_length"):

  * reference states x_i: hidden states of a GPT-2 trained on the CLIP tokenizer for the clean
    token ids of all L positions — BOS, prompt, EOS and the padding after it; candidate states
    x̃_j: the same model on the relaxed (Gumbel-softmax mixed) tokens of all L positions;
  * weights w_i = idf(id_i) / Σ_{k<L} idf(id_k) over ALL L positions, idf from BERTScore's
    `get_idf_dict` over the prompt set: idf(v) = log((M + 1) / (df(v) + 1)), df counted over each
    prompt's tokens with BOS and EOS (so idf(BOS) = idf(EOS) = 0), and log(M + 1) for a token in
    no prompt. SD 2.1's tokenizer pads with "!" (id 0), which no prompt contains: every padding
    position weighs log(M + 1), the largest idf there is — the padding, i.e. exactly the positions
    the `released` mode edits (`modes.py`), carries most of the weight;
  * R = Σ_{i=1}^{L−2} w_i · max_{j=1..L−2} cos(x_i, x̃_j): the first and the last position are
    cropped from both sides (`cosines[:, 1:-1, 1:-1]`) after the weights were normalised over all
    L, so R ≤ 1 − w_{L−1} (the clean prompt's R when the last position is padding).

STAND-IN (this module): the same weights, crop and greedy matching, over the contextual token
states of the project's own text encoder (the generator's CLIP text tower, last hidden state —
the states that condition the UNet, so the term costs nothing extra) instead of the unavailable
GPT-2. `idf_table` counts each prompt's real tokens (between BOS and EOS) and `reference_weights`
gives BOS and EOS weight 0 and every other position (real tokens and padding) the idf of its token
id. Where the released code on SD 2.1 and this differ:
  * the contextual model (CLIP text tower vs GPT-2; both causal, so R changes only through edited
    positions and the positions after them);
  * tokenizers that pad with EOS (SD 1.x, the toy world): under BERTScore's counting the padding
    would be EOS, idf 0, and R constant (≡ 1 − w_{L−1} = 1 in `released` mode, no gradient). The
    stand-in counts df over real tokens only, so an EOS used as padding is a token in no prompt,
    idf log(M + 1): it weighs the padding as the released code weighs SD 2.1's "!" padding. With a
    tokenizer that pads with a distinct token ("!") the weights are BERTScore's exactly;
  * frozen positions are exact clean one-hots here (the released code Gumbel-samples them too,
    `modes.py`), so the clean prefix's states match the reference exactly.
The term is differentiable w.r.t. the soft tokens through the text encoder; in `released` mode
its gradient reaches the edited padding positions.
"""

import jax
import jax.numpy as jnp
import numpy as np


def idf_table(ids: np.ndarray, lengths: np.ndarray, vocab_size: int) -> np.ndarray:
  """[V] float32 idf of every token id over the prompts' real tokens (ids [M, L], lengths [M]):
  log((M + 1) / (df + 1)), df the number of prompts whose tokens between BOS and EOS hold it."""
  count = np.zeros(vocab_size, np.int64)
  for row, n in zip(np.asarray(ids), np.asarray(lengths)):
    count[np.unique(row[1:int(n) - 1])] += 1
  m = len(ids)
  return np.log((m + 1) / (count + 1)).astype(np.float32)


def reference_weights(ids: np.ndarray, lengths: np.ndarray, idf: np.ndarray) -> np.ndarray:
  """[M, L] position weights of each clean prompt, summing to 1 over all L positions.

  BOS (position 0) and EOS (position length − 1) weigh 0 (BERTScore: in every prompt); every other
  position — the prompt's real tokens and the padding after EOS — weighs `idf` of its token id.
  A prompt whose weights are all 0 (it fills every position and every token is in every prompt)
  gets uniform weights over its real tokens.
  """
  ids = np.asarray(ids)
  weighted = np.ones(ids.shape, bool)
  real = np.zeros(ids.shape, bool)
  for i, n in enumerate(np.asarray(lengths)):
    weighted[i, 0] = weighted[i, int(n) - 1] = False
    real[i, 1:int(n) - 1] = True
  weights = np.where(weighted, idf[ids], 0.0).astype(np.float64)
  total = weights.sum(axis=1, keepdims=True)
  uniform = real / np.maximum(real.sum(axis=1, keepdims=True), 1)
  return np.where(total > 0, weights / np.where(total > 0, total, 1.0), uniform).astype(np.float32)


def _normalise(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def bertscore_recall(reference: jax.Array, candidate: jax.Array, weights: jax.Array) -> jax.Array:
  """Idf-weighted greedy-matching recall R for one pair (or batched over leading axes).

  R = Σ_{i=1}^{L−2} w_i · max_{j=1..L−2} cos(reference_i, candidate_j) (the released code's crop
  of the first and last position on both sides).

  Args:
    reference: [..., L, D] contextual embeddings of the clean prompt.
    candidate: [..., L, D] contextual embeddings of the attacked (soft) prompt.
    weights: [..., L] reference weights (`reference_weights`; sum 1 over L).
  Returns:
    [...] R in [-1, 1].
  """
  cosines = jnp.einsum("...id,...jd->...ij", _normalise(reference), _normalise(candidate))
  best = jnp.max(cosines[..., 1:-1, 1:-1], axis=-1)            # [..., L−2] rows 1..L−2
  return jnp.sum(weights[..., 1:-1] * best, axis=-1)
