"""The one attention function: every implementation against a NumPy statement of the formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffattack.errors import ConfigError
from jaxdiffattack.models import attention as attention_lib
from jaxdiffattack.models.attention import attention

B, T, S, N, H = 2, 5, 7, 3, 8


def _qkv(t=T, s=S, seed=0):
  rng = np.random.default_rng(seed)
  return tuple(rng.standard_normal(shape).astype(np.float32)
               for shape in ((B, t, N, H), (B, s, N, H), (B, s, N, H)))


def _numpy_attention(q, k, v, allowed=None):
  """softmax(q kᵀ / √H over allowed keys) v, in float64, straight from the formula."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
  if allowed is not None:
    logits = np.where(allowed, logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  probs = weights / weights.sum(-1, keepdims=True)
  return np.einsum("bnts,bsnh->btnh", probs, v), probs


@pytest.mark.parametrize("implementation", ["xla", "reference"])
def test_matches_numpy_formula(implementation):
  q, k, v = _qkv()
  expected, _ = _numpy_attention(q, k, v)
  got = attention(q, k, v, implementation=implementation)
  assert got.shape == (B, T, N, H) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("implementation", ["xla", "reference"])
def test_causal(implementation):
  q, k, v = _qkv(t=6, s=6, seed=1)
  allowed = np.tril(np.ones((6, 6), bool))
  expected, _ = _numpy_attention(q, k, v, allowed)
  got = attention(q, k, v, is_causal=True, implementation=implementation)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  # The first query sees only the first key: its output is that key's value.
  np.testing.assert_allclose(got[:, 0], v[:, 0], rtol=1e-6)


@pytest.mark.parametrize("implementation", ["xla", "reference"])
def test_boolean_mask(implementation):
  q, k, v = _qkv(seed=2)
  rng = np.random.default_rng(3)
  mask = rng.random((B, 1, T, S)) < 0.5          # broadcast over heads
  mask[..., 0] = True                             # every query keeps at least one key
  expected, expected_probs = _numpy_attention(q, k, v, mask)
  got = attention(q, k, v, mask=jnp.asarray(mask), implementation=implementation)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  _, probs = attention(q, k, v, mask=jnp.asarray(mask), return_probs=True)
  np.testing.assert_allclose(probs, expected_probs, rtol=1e-5, atol=1e-7)
  assert np.all(np.asarray(probs)[np.broadcast_to(~mask, probs.shape)] == 0)


def test_probabilities_are_distributions_and_match_output():
  q, k, v = _qkv(seed=4)
  out, probs = attention(q, k, v, return_probs=True)
  assert probs.shape == (B, N, T, S) and probs.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, rtol=1e-6)
  assert np.asarray(probs).min() >= 0
  np.testing.assert_allclose(out, np.einsum("bnts,bsnh->btnh", probs, v), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(out, attention(q, k, v, implementation="xla"), rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("implementation", ["xla", "reference"])
@pytest.mark.parametrize("upcast", [False, True])
def test_bfloat16_output_dtype_and_accuracy(implementation, upcast):
  q, k, v = _qkv(seed=5)
  q16, k16, v16 = (jnp.asarray(a, jnp.bfloat16) for a in (q, k, v))
  got = attention(q16, k16, v16, implementation=implementation, upcast=upcast)
  assert got.dtype == jnp.bfloat16
  # Reference on the same bf16-rounded inputs; bf16 has an 8-bit mantissa (eps 2^-8).
  expected, _ = _numpy_attention(*(np.asarray(a, np.float32) for a in (q16, k16, v16)))
  np.testing.assert_allclose(np.asarray(got, np.float32), expected, atol=0.05, rtol=0.02)
  if upcast:  # all in float32, then one rounding of the output
    np.testing.assert_allclose(np.asarray(got, np.float32),
                               np.asarray(jnp.asarray(expected, jnp.bfloat16), np.float32),
                               atol=1e-2, rtol=0)


def test_jit_and_grad_agree_between_implementations():
  q, k, v = _qkv(seed=6)
  loss = lambda impl: lambda q: jnp.sum(jnp.sin(attention(q, k, v, implementation=impl)))
  grads = [jax.jit(jax.grad(loss(impl)))(q) for impl in ("xla", "reference")]
  np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_unknown_and_unavailable_implementations_are_one_line_errors():
  q, k, v = _qkv()
  with pytest.raises(ConfigError, match="'flash' is invalid: use one of") as e:
    attention(q, k, v, implementation="flash")
  assert "\n" not in str(e.value)
  if jax.default_backend() != "gpu":
    for call in (lambda: attention_lib.check_implementation("cudnn"),
                 lambda: attention(q, k, v, implementation="cudnn")):
      with pytest.raises(ConfigError, match="'cudnn' needs an NVIDIA GPU") as e:
        call()
      assert "\n" not in str(e.value)
  assert attention_lib.check_implementation("xla") == "xla"


@pytest.mark.parametrize("variant", ["plain", "causal", "mask"])
def test_cpu_path_equals_jax_dot_product_attention(variant):
  """On CPU "xla" runs the explicit head-major einsums; elsewhere it is
  jax.nn.dot_product_attention: both compute the same thing, masks and causality included."""
  q, k, v = _qkv(t=6, s=6, seed=7)
  kwargs = {"is_causal": variant == "causal"}
  if variant == "mask":
    kwargs["mask"] = jnp.asarray(np.random.default_rng(8).random((B, 1, 6, 6)) < 0.6) | jnp.eye(6, dtype=bool)
  expected = jax.nn.dot_product_attention(q, k, v, implementation="xla", **kwargs)
  np.testing.assert_allclose(attention(q, k, v, implementation="xla", **kwargs), expected,
                             rtol=1e-5, atol=1e-6)
