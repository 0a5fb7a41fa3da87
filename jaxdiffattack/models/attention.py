"""The one attention function every model in jaxdiffattack uses.

Scaled dot-product attention (Vaswani et al. 2017, eq. 1):

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_head + mask) V,

with the logits accumulated and the softmax taken in float32 whatever the input dtype (bf16 compute,
fp32 softmax). Layout follows `jax.nn.dot_product_attention`: query [B, T, N, H], key/value
[B, S, N, H] (batch, sequence, heads, head dim).

Implementations (`IMPLEMENTATIONS`, chosen by name in a model's config):
  * "xla": `jax.nn.dot_product_attention(implementation="xla")` — any backend; XLA fuses it.
    On the CPU backend the same math runs as the explicit head-major einsums of "reference"
    (without returning probabilities): XLA:CPU runs that layout faster (toy UNet attention,
    batch 32, one thread: 1.46 ms vs 2.15 ms per call, 2026-11-29).
  * "cudnn": the same call with cuDNN's fused flash-attention kernel (NVIDIA GPUs, fp16/bf16
    inputs); `check_implementation` refuses it on other backends with a one-line error.
  * "reference": explicit head-major einsums + softmax ([B, N, T, H] operands, so each head is
    one contiguous batched matmul); the only path that can also return the attention
    probabilities. Models switch to it only where probabilities are captured, so capture costs
    nothing when it is off. float64 inputs (finite-difference checks) always take it, since
    jax's fused implementations take the softmax in float32 whatever the input.
`upcast=True` computes the whole attention in float32 (diffusers' `upcast_attention`, set by
SD 2.1's UNet config).
"""

import jax
import jax.numpy as jnp

from jaxdiffattack.errors import ConfigError

IMPLEMENTATIONS = ("xla", "cudnn", "reference")


def check_implementation(implementation: str, key: str = "attention") -> str:
  """Returns `implementation` if it can run here; one-line ConfigError otherwise."""
  if implementation not in IMPLEMENTATIONS:
    raise ConfigError(f"config.{key}={implementation!r} is invalid: use one of "
                      f"{IMPLEMENTATIONS}")
  if implementation == "cudnn" and jax.default_backend() != "gpu":
    raise ConfigError(f"config.{key}='cudnn' needs an NVIDIA GPU (this backend is "
                      f"{jax.default_backend()!r}): use 'xla'")
  return implementation


def attention(query: jax.Array, key: jax.Array, value: jax.Array, *,
              mask: jax.Array | None = None, is_causal: bool = False,
              implementation: str = "xla", upcast: bool = False, return_probs: bool = False):
  """softmax(q kᵀ/√H [+ mask]) v.

  Args:
    query: [B, T, N, H].
    key, value: [B, S, N, H].
    mask: optional boolean, broadcastable to [B, N, T, S]; True = may attend.
    is_causal: query position t attends to key positions ≤ t only (CLIP's text tower).
    implementation: one of IMPLEMENTATIONS ("reference" is used whenever return_probs).
    upcast: compute in float32 and cast the output back to the query dtype.
    return_probs: also return the probabilities [B, N, T, S] (float32; float64 for float64
      inputs).

  Returns:
    out [B, T, N, H] in the query's dtype, or (out, probs) when return_probs.
  """
  check_implementation(implementation)
  out_dtype = query.dtype
  if upcast:  # to float32 (float64 stays float64)
    wide = jnp.promote_types(query.dtype, jnp.float32)
    query, key, value = (x.astype(wide) for x in (query, key, value))
  explicit = (return_probs or implementation == "reference" or query.dtype == jnp.float64
              or (implementation == "xla" and jax.default_backend() == "cpu"))
  if explicit:
    out, probs = _reference(query, key, value, mask, is_causal)
    out = out.astype(out_dtype)
    return (out, probs) if return_probs else out
  out = jax.nn.dot_product_attention(query, key, value, mask=mask, is_causal=is_causal,
                                     implementation=implementation)
  return out.astype(out_dtype)


def _reference(query, key, value, mask, is_causal):
  accumulate = jnp.promote_types(query.dtype, jnp.float32)
  scale = 1.0 / jnp.sqrt(jnp.asarray(query.shape[-1], accumulate))
  query, key, value = (jnp.swapaxes(x, 1, 2) for x in (query, key, value))   # [B, N, ·, H]
  logits = jnp.einsum("bnth,bnsh->bnts", query, key,
                      preferred_element_type=accumulate) * scale       # [B, N, T, S]
  allowed = None
  if mask is not None:
    allowed = jnp.broadcast_to(mask, logits.shape)
  if is_causal:
    t, s = logits.shape[-2:]
    causal = jnp.tril(jnp.ones((t, s), bool))
    allowed = causal if allowed is None else allowed & causal
  if allowed is not None:
    logits = jnp.where(allowed, logits, jnp.finfo(accumulate).min)
  probs = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum("bnts,bnsh->bnth", probs.astype(value.dtype), value,
                   preferred_element_type=accumulate)
  return jnp.swapaxes(out, 1, 2), probs                                 # [B, T, N, H]
