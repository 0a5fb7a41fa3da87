"""The one attention function every model in jaxdiffattack uses.

Scaled dot-product attention (Vaswani et al. 2017, eq. 1):

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_head + mask) V,

with the logits accumulated and the softmax taken in float32 whatever the input dtype (bf16 compute,
fp32 softmax). Layout follows `jax.nn.dot_product_attention`: query [B, T, N, H], key/value
[B, S, N, H] (batch, sequence, heads, head dim).

Implementations (`IMPLEMENTATIONS`, chosen by name in a model's config):
  * "xla": `jax.nn.dot_product_attention(implementation="xla")` — any backend; XLA fuses it.
  * "cudnn": the same call with cuDNN's fused flash-attention kernel (NVIDIA GPUs, fp16/bf16
    inputs); `check_implementation` refuses it on other backends with a one-line error.
  * "reference": explicit einsum + softmax; the only path that can also return the attention
    probabilities. Models switch to it only where probabilities are captured, so capture costs
    nothing when it is off.
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
    return_probs: also return the probabilities [B, N, T, S] (float32).

  Returns:
    out [B, T, N, H] in the query's dtype, or (out, probs) when return_probs.
  """
  out_dtype = query.dtype
  if upcast:
    query, key, value = (x.astype(jnp.float32) for x in (query, key, value))
  if return_probs or implementation == "reference":
    out, probs = _reference(query, key, value, mask, is_causal)
    out = out.astype(out_dtype)
    return (out, probs) if return_probs else out
  if implementation not in ("xla", "cudnn"):
    raise ConfigError(f"attention implementation {implementation!r} is invalid: use one of "
                      f"{IMPLEMENTATIONS}")
  out = jax.nn.dot_product_attention(query, key, value, mask=mask, is_causal=is_causal,
                                     implementation=implementation)
  return out.astype(out_dtype)


def _reference(query, key, value, mask, is_causal):
  acc = jnp.promote_types(query.dtype, jnp.float32)   # float32, or float64 for float64 checks
  scale = 1.0 / jnp.sqrt(acc.type(query.shape[-1]))
  logits = jnp.einsum("btnh,bsnh->bnts", query, key,
                      preferred_element_type=acc) * scale              # [B, N, T, S]
  allowed = None
  if mask is not None:
    allowed = jnp.broadcast_to(mask, logits.shape)
  if is_causal:
    t, s = logits.shape[-2:]
    causal = jnp.tril(jnp.ones((t, s), bool))
    allowed = causal if allowed is None else allowed & causal
  if allowed is not None:
    logits = jnp.where(allowed, logits, jnp.finfo(acc).min)
  probs = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum("bnts,bsnh->btnh", probs.astype(value.dtype), value,
                   preferred_element_type=acc)
  return out, probs
