"""Gumbel-softmax (jaxdiffattack.attacks.gumbel) and ATM's hard prompt draws: sampling statistics
against the softmax probabilities (a chi-square test), the temperature limits, straight-through
gradients, and keys that depend only on the prompt index."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxdiffattack.attacks import atm
from jaxdiffattack.attacks import gumbel

LOGITS = np.array([1.5, 0.0, -1.0, 0.5, 2.0, -3.0], np.float32)


def _probs(logits):
  e = np.exp(logits.astype(np.float64) - logits.max())
  return e / e.sum()


def test_argmax_frequencies_match_softmax_probabilities():
  n = 200_000
  ids = np.asarray(gumbel.sample_ids(jax.random.PRNGKey(0), jnp.broadcast_to(LOGITS, (n, 6))))
  counts = np.bincount(ids, minlength=6)
  expected = n * _probs(LOGITS)
  assert stats.chisquare(counts, expected).pvalue > 1e-3
  np.testing.assert_allclose(counts / n, _probs(LOGITS), atol=4e-3)


@pytest.mark.parametrize("tau", [0.1, 1.0, 3.0])
def test_soft_sample_argmax_is_the_hard_draw_for_any_temperature(tau):
  key = jax.random.PRNGKey(1)
  logits = jnp.broadcast_to(LOGITS, (1000, 6))
  soft = gumbel.gumbel_softmax(key, logits, tau)
  np.testing.assert_allclose(np.asarray(soft).sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(np.argmax(np.asarray(soft), -1),
                                np.asarray(gumbel.sample_ids(key, logits)))


def test_temperature_limits():
  key = jax.random.PRNGKey(2)
  logits = jnp.broadcast_to(LOGITS, (2000, 6))
  cold = np.asarray(gumbel.gumbel_softmax(key, logits, 1e-3))
  assert np.quantile(cold.max(-1), 0.01) > 0.999            # τ → 0: one-hot
  hot = np.asarray(gumbel.gumbel_softmax(key, logits, 1e3))
  np.testing.assert_allclose(hot, 1 / 6, atol=0.01)          # τ → ∞: uniform


def test_straight_through_is_one_hot_forward_with_the_soft_gradient():
  key = jax.random.PRNGKey(3)
  logits = jnp.asarray(np.stack([LOGITS, LOGITS[::-1]]))
  weights = jnp.arange(12.0).reshape(2, 6)
  hard = np.asarray(gumbel.gumbel_softmax(key, logits, 0.7, hard=True))
  np.testing.assert_array_equal(hard, np.eye(6)[hard.argmax(-1)])
  f = lambda lg, h: jnp.sum(weights * gumbel.gumbel_softmax(key, lg, 0.7, hard=h))
  np.testing.assert_allclose(np.asarray(jax.grad(f)(logits, True)),
                             np.asarray(jax.grad(f)(logits, False)), rtol=1e-6)


def test_hard_prompts_keep_frozen_tokens_and_depend_only_on_the_prompt_index():
  rng = np.random.default_rng(0)
  p, length, vocab = 4, 7, 11
  ids = rng.integers(0, vocab, (p, length)).astype(np.int32)
  free = rng.random((p, length)) < 0.5
  logits = rng.normal(0, 2, (p, length, vocab)).astype(np.float32)
  prompts = atm.Prompts(np.array([5, 9, 2, 7], np.uint32), ids, free, np.zeros(p, np.int32),
                        np.zeros((p, length, 1)), np.zeros((p, length)))
  key = jax.random.PRNGKey(4)
  drawn = np.asarray(atm.hard_ids(key, logits, prompts, np.arange(50)))           # [P, S, L]
  frozen = np.broadcast_to(~free[:, None], drawn.shape)
  clean = np.broadcast_to(ids[:, None], drawn.shape)
  np.testing.assert_array_equal(drawn[frozen], clean[frozen])
  assert (drawn != clean)[~frozen].mean() > 0.5
  # Prompts 3 and 1 alone, in another order and with other sample indices, draw the same prompts.
  sub = jax.tree_util.tree_map(lambda a: np.asarray(a)[[3, 1]], prompts)
  again = np.asarray(atm.hard_ids(key, logits[[3, 1]], sub, np.arange(10, 20)))
  np.testing.assert_array_equal(again, drawn[[3, 1]][:, 10:20])
