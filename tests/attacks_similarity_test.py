"""ATM's similarity stand-in (jaxdiffattack.attacks.similarity) as the released code computes it:
BERTScore-idf weights over every position, padding included (re-derived the way BERTScore's
`get_idf_dict` and the released `whitebox_attack.py` do), the recall with the first and last
position cropped on both sides (a NumPy loop), and — the point of the weighting — R varies with the
edited padding tokens in `released` mode and has a gradient there (central differences, float64),
where real-token-only weights give a constant R."""

import collections
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_sd
from jaxdiffattack import text
from jaxdiffattack.attacks import modes
from jaxdiffattack.attacks import prompts
from jaxdiffattack.attacks import similarity

BOS, EOS, PAD = 9, 8, 0


def _bertscore_weights(ids, lengths, pad_as_unseen: bool) -> np.ndarray:
  """The released code's `ref_weights`: BERTScore idf (df over each prompt's tokens WITH BOS and
  EOS, log(M+1) for an unseen id) of the token at every one of the L positions, / their sum.
  `pad_as_unseen`: padding positions hold an id no prompt contains (what a distinct pad token,
  SD 2.1's "!", is)."""
  m = len(ids)
  count = collections.Counter()
  for row, n in zip(ids, lengths):
    count.update(set(row[:n].tolist()))                       # BOS … EOS (sent_encode)
  idf = collections.defaultdict(lambda: math.log(m + 1))
  idf.update({v: math.log((m + 1) / (c + 1)) for v, c in count.items()})
  out = []
  for row, n in zip(ids, lengths):
    w = np.array([idf["unseen"] if (pad_as_unseen and k >= n) else idf[int(v)]
                  for k, v in enumerate(row)])
    out.append(w / w.sum())
  return np.array(out)


def test_weights_are_bertscore_idf_over_every_position_padding_included():
  lengths = np.array([5, 4, 6])
  real = [[1, 2, 3], [1, 4], [1, 2, 2, 5]]
  for pad in (PAD, EOS):          # a distinct pad token (SD 2.1's "!") / padding with EOS (toy)
    ids = np.full((3, 8), pad)
    for i, r in enumerate(real):
      ids[i, :len(r) + 2] = [BOS, *r, EOS]
    got = similarity.reference_weights(ids, lengths, similarity.idf_table(ids, lengths, 10))
    want = _bertscore_weights(ids, lengths, pad_as_unseen=pad == EOS)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-6)
    assert (got[:, 0] == 0).all() and all(got[i, n - 1] == 0 for i, n in enumerate(lengths))
    # Padding (an id in no prompt: idf log 4) outweighs every real token, as on SD 2.1.
    assert got[0, 5] > got[0, 1:4].max() and got[0, 5] > 0
    np.testing.assert_allclose(got[0, 5:], got[0, 5])
  # Every token in every prompt (idf 0) and no padding: uniform over the real tokens.
  ids = np.array([[BOS, 1, 2, EOS], [BOS, 2, 1, EOS]])
  got = similarity.reference_weights(ids, np.array([4, 4]), similarity.idf_table(ids, [4, 4], 10))
  np.testing.assert_allclose(got, [[0, .5, .5, 0], [0, .5, .5, 0]])


def test_recall_against_a_numpy_loop_with_the_released_crop():
  rng = np.random.default_rng(0)
  ref, cand = rng.normal(size=(2, 7, 5)), rng.normal(size=(2, 7, 5))
  w = rng.random((2, 7))
  w /= w.sum(1, keepdims=True)
  unit = lambda x: x / np.linalg.norm(x)
  for b in range(2):
    want = sum(w[b, i] * max(unit(ref[b, i]) @ unit(cand[b, j]) for j in range(1, 6))
               for i in range(1, 6))                       # rows and columns 1..L-2
    got = float(similarity.bertscore_recall(jnp.asarray(ref), jnp.asarray(cand),
                                            jnp.asarray(w))[b])
    np.testing.assert_allclose(got, want, rtol=1e-6)
  # The clean prompt against itself: 1 − (the weight of the cropped last position).
  np.testing.assert_allclose(float(similarity.bertscore_recall(ref[0], ref[0], w[0])),
                             1 - w[0, 0] - w[0, -1], rtol=1e-6)


@pytest.mark.slow   # ~50 s on 2 shared cores: float64 text-encoder compiles
def test_released_mode_recall_varies_with_the_edited_padding_and_has_a_gradient(tiny_sd_model):
  sd, params = tiny_sd_model
  ps = prompts.PromptSet("short", ("a red star", "a blue cross x"), ("red star", "blue cross"),
                         (3, 9))
  enc = prompts.encode(sd, ps)
  free = modes.free_positions("released", enc.ids, enc.lengths, enc.class_mask)[0]
  n, length = int(enc.lengths[0]), enc.ids.shape[1]
  assert free[n - 1:].all() and not free[:n - 1].any()       # EOS and padding only
  released = similarity.reference_weights(enc.ids, enc.lengths,
                                          similarity.idf_table(enc.ids, enc.lengths, 514))[0]
  real_only = np.where(np.arange(length) < n - 1, released, 0.0)
  real_only[0] = 0.0
  real_only /= real_only.sum()
  with jax.enable_x64(True):
    sd64, p64 = tiny_sd.as_float64(sd, params)
    sd64 = dataclasses.replace(sd64, text_encoder=sd.text_encoder.clone(
        dtype=jnp.float64, attention="reference"))
    tp = p64["text_encoder"]
    table = text.token_embedding_table(sd64, tp)
    ids = jnp.asarray(enc.ids[:1])
    reference = text.encode_token_embeddings(sd64, tp, text.embed_tokens(sd64, tp, ids))[0]
    clean_theta = 15.0 * jax.nn.one_hot(enc.ids[0], 514, dtype=jnp.float64)

    @jax.jit
    def recall(theta, weights):
      """R of the soft prompt softmax(θ) at free positions, the clean one-hot elsewhere."""
      mix = jnp.where(free[:, None], jax.nn.softmax(theta, -1),
                      jax.nn.one_hot(enc.ids[0], 514, dtype=jnp.float64))
      cond = text.encode_token_embeddings(sd64, tp, (mix @ table)[None])[0]
      return similarity.bertscore_recall(reference, cond, jnp.asarray(weights, jnp.float64))

    hard = lambda k, v: clean_theta.at[k].set(15.0 * jax.nn.one_hot(v, 514))
    position = n + 1                                            # a padding position
    clean = float(recall(hard(position, int(enc.ids[0, position])), released))
    assert abs(clean - (1 - released[-1])) < 1e-6               # the released code's clean R
    edited = [float(recall(hard(position, v), released)) for v in (40, 41, 300)]
    assert min(abs(e - clean) for e in edited) > 1e-4 and np.ptp(edited) > 1e-5
    # Real-token-only weights (the stand-in before): R ≡ 1 whatever the padding holds.
    for v in (40, 300):
      np.testing.assert_allclose(float(recall(hard(position, v), real_only)), 1.0, atol=1e-9)
    # The gradient reaches the edited positions (those whose states some reference position
    # matches greedily, and the positions before them) and matches central differences.
    theta = clean_theta / 7.5 + jnp.asarray(np.random.default_rng(1).normal(0, 0.5,
                                                                           clean_theta.shape))
    released = jnp.asarray(released, jnp.float64)
    grad = np.asarray(jax.jit(jax.grad(recall))(theta, released))
    assert np.abs(grad[~free]).max() == 0
    reached = np.abs(grad).max(1)
    assert reached[free].max() > 1e-4
    eps = 1e-5
    top = int(np.argmax(reached))
    for k, v in ((top, int(np.argmax(np.abs(grad[top])))), (top, 300), (n - 1, 7)):
      bump = jnp.zeros_like(theta).at[k, v].set(eps)
      numeric = (float(recall(theta + bump, released)) - float(recall(theta - bump, released))) \
          / (2 * eps)
      np.testing.assert_allclose(grad[k, v], numeric, rtol=1e-5, atol=1e-10)
