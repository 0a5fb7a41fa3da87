"""Gumbel-softmax over token logits: ATM's relaxed distribution over prompts (arXiv 2306.02583 §3.2).

ATM keeps a logit matrix θ [L, V] (token positions × vocabulary) and, at every attack step, draws a
relaxed one-hot sample per position with the Gumbel-softmax trick (Jang et al. 2017, eq. 1;
Maddison et al. 2017):

    w_l = softmax((θ_l + g_l) / τ),      g_l ~ Gumbel(0, 1) i.i.d. per vocabulary entry,

so that argmax_v (θ_l + g_l) ~ Categorical(softmax(θ_l)) exactly, and w_l → that one-hot as τ → 0.
`hard=True` is the straight-through estimator: the forward value is the one-hot of the argmax, the
gradient that of the soft sample. The released code uses τ = 1 and soft samples while attacking,
and hard samples (`sample_ids`) to draw discrete prompts afterwards.
"""

import jax
import jax.numpy as jnp


def gumbel_softmax(key: jax.Array, logits: jax.Array, tau: float = 1.0,
                   hard: bool = False) -> jax.Array:
  """Relaxed one-hot samples, same shape as `logits` [..., V] (softmax over the last axis).

  Args:
    key: PRNG key; one Gumbel draw per entry of `logits`.
    logits: unnormalised log-probabilities [..., V].
    tau: temperature > 0.
    hard: straight-through: one-hot forward value, soft gradient.
  """
  gumbels = jax.random.gumbel(key, logits.shape, jnp.float32).astype(logits.dtype)
  return relax(logits, gumbels, tau, hard)


def relax(logits: jax.Array, gumbels: jax.Array, tau: float = 1.0, hard: bool = False):
  """`gumbel_softmax` for given Gumbel(0, 1) noise `gumbels` (same shape as `logits`)."""
  soft = jax.nn.softmax((logits + gumbels) / tau, axis=-1)
  if not hard:
    return soft
  one_hot = jax.nn.one_hot(jnp.argmax(soft, axis=-1), logits.shape[-1], dtype=soft.dtype)
  return one_hot - jax.lax.stop_gradient(soft) + soft


def sample_ids(key: jax.Array, logits: jax.Array) -> jax.Array:
  """Discrete samples [...] int32 of Categorical(softmax(logits)) [..., V] (the hard Gumbel draw).

  Equals `argmax(gumbel_softmax(key, logits, tau, hard=True))` for any τ (same key).
  """
  gumbels = jax.random.gumbel(key, logits.shape, jnp.float32).astype(logits.dtype)
  return jnp.argmax(logits + gumbels, axis=-1).astype(jnp.int32)
