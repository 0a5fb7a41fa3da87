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


# ------------------------------------------------ which call sites get cuDNN (the pure rule) --

@pytest.mark.parametrize("query, dtype, masked, max_head_dim, expected", [
    ((2, 4096, 8, 40), jnp.bfloat16, False, 128, None),           # SD1.5 64² level
    ((2, 64, 8, 160), jnp.bfloat16, False, 128, "head dim 160"),  # SD1.5 1280 level, A100
    ((2, 64, 8, 160), jnp.bfloat16, False, 256, None),            # the same on Hopper
    ((2, 4096, 8, 40), jnp.float16, False, 128, None),
    ((2, 4096, 1, 512), jnp.bfloat16, False, 256, "head dim 512"),  # VAE mid-block
    ((2, 64, 8, 36), jnp.bfloat16, False, 128, "head dim 36"),      # not a multiple of 8
    ((2, 64, 5, 64), jnp.float32, False, 256, "dtype float32"),     # SD2.1 upcast
    ((2, 77, 16, 64), jnp.bfloat16, True, 128, "explicit mask"),
])
def test_cudnn_rule(query, dtype, masked, max_head_dim, expected):
  reason = attention_lib.cudnn_unsupported(query, query, dtype, masked=masked,
                                           max_head_dim=max_head_dim)
  assert (reason is None) if expected is None else reason.startswith(expected)
  chosen, why = attention_lib.choose_implementation("cudnn", query, query, dtype, masked=masked,
                                                    max_head_dim=max_head_dim)
  assert (chosen, why) == (("cudnn", None) if expected is None else ("xla", reason))
  # Other requests are untouched; probabilities and float64 always take the reference path.
  assert attention_lib.choose_implementation("xla", query, query, dtype) == ("xla", None)
  assert attention_lib.choose_implementation("cudnn", query, query, dtype,
                                             return_probs=True)[0] == "reference"
  assert attention_lib.choose_implementation("cudnn", query, query, np.float64)[0] == "reference"


def test_cudnn_max_head_dim_by_compute_capability():
  fake = lambda capability: type("Device", (), {"compute_capability": capability})()
  assert attention_lib.cudnn_max_head_dim(fake("9.0")) == 256      # H100 / H200
  assert attention_lib.cudnn_max_head_dim(fake("10.0")) == 256
  assert attention_lib.cudnn_max_head_dim(fake("8.0")) == 128      # A100
  assert attention_lib.cudnn_max_head_dim(jax.devices("cpu")[0]) == 128


def test_plan_records_choices_and_computes_reference_on_cpu():
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((1, 6, 2, 8)), jnp.bfloat16) for _ in range(3))
  with attention_lib.plan(max_head_dim=128) as sites:
    out = attention(q, k, v, implementation="cudnn", site="a/b")   # no GPU needed to plan
  assert sites == [attention_lib.CallSite("a/b", (1, 6, 2, 8), (1, 6, 2, 8), "bfloat16",
                                          "cudnn", "cudnn", None)]
  expected, _ = _numpy_attention(q, k, v)
  np.testing.assert_allclose(np.asarray(out, np.float32), expected, atol=3e-2)
  with pytest.raises(ConfigError, match="'cudnn' needs an NVIDIA GPU"):
    attention(q, k, v, implementation="cudnn")    # outside a plan: refused on CPU as before


def _sites(shape, max_head_dim):
  from jaxdiffattack.models import random_init  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.models import stable_diffusion  # pylint: disable=g-import-not-at-top
  sd, params = random_init.random_stable_diffusion(shape, "bfloat16", abstract=True)
  return stable_diffusion.attention_sites(sd, params, 77, max_head_dim=max_head_dim,
                                          latent_size=8)


@pytest.mark.parametrize("max_head_dim", [128, 256])
def test_sd15_call_sites(max_head_dim):
  """SD1.5: 16 transformer blocks × (self, cross) in the UNet with 8 heads of 320/8, 640/8 and
  1280/8 channels; one single-head 512-channel attention in the VAE decoder's mid-block."""
  sites = _sites("sd15", max_head_dim)
  unet = [s for s in sites if s.site.startswith("unet/")]
  vae = [s for s in sites if s.site.startswith("vae/")]
  assert len(sites) == len(unet) + len(vae) and len(unet) == 32 and len(vae) == 1
  # Transformer blocks per level: down 2 + up 3 at 320 and 640, down 2 + mid 1 + up 3 at 1280.
  by_dim = {d: [s for s in unet if s.query[-1] == d] for d in (40, 80, 160)}
  assert {d: len(v) for d, v in by_dim.items()} == {40: 10, 80: 10, 160: 12}
  assert all(s.chosen == "cudnn" for s in by_dim[40] + by_dim[80])
  assert all(s.chosen == ("cudnn" if max_head_dim == 256 else "xla") for s in by_dim[160])
  assert vae[0].site == "vae/decoder/mid_block/attentions_0" and vae[0].query[-2:] == (1, 512)
  assert vae[0].chosen == "xla" and vae[0].reason.startswith("head dim 512")
  assert {s.site.rsplit("/", 1)[-1] for s in unet} == {"attn1", "attn2"}
  assert all(s.key[1] == 77 for s in unet if s.site.endswith("attn2"))


def test_sd21_call_sites():
  """SD2.1 (768-v): head dim 64 everywhere but upcast_attention computes the UNet's attention in
  float32, which cuDNN's kernel does not take → XLA; the bf16 text tower (23 causal layers, 16
  heads of 64) gets cuDNN; the VAE's 512-wide head XLA."""
  sites = _sites("sd21", 256)
  chosen = {}
  for s in sites:
    chosen.setdefault((s.site.split("/")[0], s.query[-1], s.dtype, s.chosen), []).append(s)
  assert {k: len(v) for k, v in chosen.items()} == {
      ("unet", 64, "float32", "xla"): 32, ("vae", 512, "bfloat16", "xla"): 1,
      ("text_encoder", 64, "bfloat16", "cudnn"): 23}
  assert all(s.reason.startswith("dtype float32") for s in chosen[("unet", 64, "float32", "xla")])
