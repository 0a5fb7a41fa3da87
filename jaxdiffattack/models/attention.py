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
  * "cudnn": the same call with cuDNN's fused flash-attention kernel (NVIDIA GPUs), at every call
    site whose shape and dtype the kernel supports, XLA at the others: `cudnn_unsupported` is the
    pure rule (fp16/bf16 inputs after any upcast, one head dim ≤ 128 — 256 on Hopper and later —
    and a multiple of 8, no mask, as `jax._src.cudnn.fused_attention_stablehlo`
    `check_layout` / `check_is_flash_attention` require), decided per call from its shapes. So
    SD1.5's UNet (head dims 40/80/160) is all cuDNN on an H100, its 1280-wide levels XLA on an
    A100, and the VAE's single-head mid-block attention (head dim 512) XLA everywhere.
    `check_implementation` refuses "cudnn" on other backends with a one-line error;
    `plan()` records which implementation each call site gets, on any backend (shape tracing).
  * "reference": explicit head-major einsums + softmax ([B, N, T, H] operands, so each head is
    one contiguous batched matmul); the only path that can also return the attention
    probabilities. Models switch to it only where probabilities are captured, so capture costs
    nothing when it is off. float64 inputs (finite-difference checks) always take it, since
    jax's fused implementations take the softmax in float32 whatever the input.
`upcast=True` computes the whole attention in float32 (diffusers' `upcast_attention`, set by
SD 2.1's UNet config).
"""

import contextlib
import contextvars
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack.errors import ConfigError

IMPLEMENTATIONS = ("xla", "cudnn", "reference")
CUDNN_DTYPES = (np.dtype(jnp.float16), np.dtype(jnp.bfloat16))
CUDNN_MAX_HEAD_DIM = 128           # before Hopper (compute capability < 9.0)
CUDNN_MAX_HEAD_DIM_HOPPER = 256    # Hopper and later


def cudnn_unsupported(query_shape, key_shape, dtype, *, masked: bool = False,
                      max_head_dim: int = CUDNN_MAX_HEAD_DIM) -> str | None:
  """Why cuDNN's fused attention kernel cannot run this call; None when it can (pure rule).

  Args:
    query_shape: [B, T, N, H]; key_shape: [B, S, N, H] (value as key).
    dtype: the dtype the attention is computed in (after any upcast).
    masked: an explicit mask is given (the kernel's bias path; kept on XLA).
    max_head_dim: the largest head dim of the device's kernel (`cudnn_max_head_dim`).
  """
  if len(query_shape) != 4 or len(key_shape) != 4:
    return f"rank {len(query_shape)} query (needs [B, T, N, H])"
  head_dim = int(query_shape[-1])
  if np.dtype(dtype) not in CUDNN_DTYPES:
    return f"dtype {np.dtype(dtype).name} (needs float16 or bfloat16)"
  if head_dim > max_head_dim or head_dim % 8:
    return f"head dim {head_dim} (needs <= {max_head_dim} and a multiple of 8)"
  if int(key_shape[-1]) != head_dim or int(query_shape[2]) != int(key_shape[2]):
    return "query and key differ in heads or head dim"
  if masked:
    return "explicit mask"
  return None


def cudnn_max_head_dim(device=None) -> int:
  """The largest head dim cuDNN's fused kernel takes on `device` (default: the first device):
  256 from compute capability 9.0 (Hopper), else 128."""
  device = device or jax.devices()[0]
  capability = getattr(device, "compute_capability", None)
  try:
    major = int(str(capability).split(".", maxsplit=1)[0])
  except ValueError:
    return CUDNN_MAX_HEAD_DIM
  return CUDNN_MAX_HEAD_DIM_HOPPER if major >= 9 else CUDNN_MAX_HEAD_DIM


@dataclasses.dataclass(frozen=True)
class CallSite:
  """One traced attention call and the implementation it got."""
  site: str            # module path, e.g. "up_blocks_1/attentions_0/transformer_blocks_0/attn1"
  query: tuple         # [B, T, N, H]
  key: tuple           # [B, S, N, H]
  dtype: str           # the computing dtype
  requested: str
  chosen: str          # "xla", "cudnn" or "reference"
  reason: str | None   # why "cudnn" was not chosen where it was requested


_PLAN = contextvars.ContextVar("attention_plan", default=None)


@contextlib.contextmanager
def plan(max_head_dim: int | None = None):
  """Records every attention call traced inside as a `CallSite` (yields the list).

  While planning, calls compute on the "reference" path and "cudnn" is not checked against
  the backend, so a model can be traced (`jax.eval_shape`) on any machine to see which call
  sites get cuDNN; `max_head_dim` stands for the device's (default `cudnn_max_head_dim()`).
  """
  sites = []
  token = _PLAN.set((sites, max_head_dim))
  try:
    yield sites
  finally:
    _PLAN.reset(token)


def choose_implementation(implementation: str, query_shape, key_shape, dtype, *,
                          masked: bool = False, return_probs: bool = False,
                          max_head_dim: int = CUDNN_MAX_HEAD_DIM) -> tuple[str, str | None]:
  """(implementation a call runs, why not cuDNN where it was requested): "reference" when
  probabilities are returned or in float64, "xla" for "cudnn" calls the kernel cannot run."""
  if return_probs or implementation == "reference" or np.dtype(dtype) == np.float64:
    return "reference", None
  if implementation == "cudnn":
    reason = cudnn_unsupported(query_shape, key_shape, dtype, masked=masked,
                               max_head_dim=max_head_dim)
    return ("xla", reason) if reason else ("cudnn", None)
  return implementation, None


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
              implementation: str = "xla", upcast: bool = False, return_probs: bool = False,
              site: str = ""):
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
    site: the calling module's path (recorded by `plan`).

  Returns:
    out [B, T, N, H] in the query's dtype, or (out, probs) when return_probs.
  """
  planning = _PLAN.get()
  if planning is None or implementation != "cudnn":
    check_implementation(implementation)
  out_dtype = query.dtype
  if upcast:  # to float32 (float64 stays float64)
    wide = jnp.promote_types(query.dtype, jnp.float32)
    query, key, value = (x.astype(wide) for x in (query, key, value))
  if implementation == "cudnn":
    max_head_dim = ((planning[1] if planning else None) or cudnn_max_head_dim())
  else:
    max_head_dim = CUDNN_MAX_HEAD_DIM
  chosen, reason = choose_implementation(implementation, query.shape, key.shape, query.dtype,
                                         masked=mask is not None, return_probs=return_probs,
                                         max_head_dim=max_head_dim)
  if planning is not None:
    planning[0].append(CallSite(site, tuple(query.shape), tuple(key.shape),
                                np.dtype(query.dtype).name, implementation, chosen, reason))
    chosen = "reference"    # shape tracing on any backend
  explicit = chosen == "reference" or (chosen == "xla" and jax.default_backend() == "cpu")
  if explicit:
    out, probs = _reference(query, key, value, mask, is_causal)
    out = out.astype(out_dtype)
    return (out, probs) if return_probs else out
  out = jax.nn.dot_product_attention(query, key, value, mask=mask, is_causal=is_causal,
                                     implementation=chosen)
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
