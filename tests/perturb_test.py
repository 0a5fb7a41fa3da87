"""Each shift against an independent NumPy statement of arXiv 2312.11473 §3.2."""

import jax
import numpy as np
import pytest

from jaxdiffattack import perturb

Z = np.random.default_rng(0).standard_normal((4, 8, 8)).astype(np.float32)
KEY = jax.random.PRNGKey(3)


def _run(name, alpha):
  return np.asarray(perturb.SHIFTS[name](Z, np.asarray(alpha, np.float32), KEY))


@pytest.mark.parametrize("alpha", [-0.2, 0.05, 0.15])
def test_mean_and_std_shifts(alpha):
  np.testing.assert_allclose(_run("ums", [alpha, 0]), Z + alpha, atol=1e-6)
  np.testing.assert_allclose(_run("sds", [alpha, 0]), (1 - alpha) * Z, atol=1e-6)
  np.testing.assert_allclose(_run("sds_flipped", [alpha, 0]), (1 + alpha) * Z, atol=1e-6)
  np.testing.assert_allclose(_run("ms", [alpha, 0.3]), Z + alpha - 0.3 * Z, atol=1e-6)
  np.testing.assert_array_equal(_run("none", [alpha, 0.3]), Z)


def test_random_mean_shift_is_alpha_times_one_uniform_draw():
  u = np.asarray(jax.random.uniform(KEY, Z.shape))
  for alpha in (-0.2, 0.1):
    np.testing.assert_allclose(_run("rms", [alpha, 0]), Z + alpha * u, atol=1e-6)
  eta = _run("rms", [0.2, 0]) - Z
  assert eta.min() >= 0 and eta.max() <= 0.2 and abs(eta.mean() - 0.1) < 0.02


@pytest.mark.parametrize("count", [0, 8, 16, 32, 64])
def test_arrangement_shift_sorts_the_first_pixels_per_channel(count):
  got = _run("pas", [count, 0])
  expected = Z.reshape(4, 64).copy()
  expected[:, :count] = np.sort(expected[:, :count], axis=1)
  np.testing.assert_array_equal(got, expected.reshape(Z.shape))
  # A permutation of the original values; only the named pixels move.
  np.testing.assert_array_equal(np.sort(got.ravel()), np.sort(Z.ravel()))
  np.testing.assert_array_equal(got.reshape(4, 64)[:, count:], Z.reshape(4, 64)[:, count:])
  desc = _run("pas_descending", [count, 0]).reshape(4, 64)
  np.testing.assert_array_equal(desc[:, :count], -np.sort(-Z.reshape(4, 64)[:, :count], axis=1))


def test_arrangement_shift_pixels_moves_whole_pixels():
  got = _run("pas_pixels", [16, 0]).reshape(4, 64)
  flat = Z.reshape(4, 64)
  order = np.argsort(flat[:, :16].mean(axis=0), kind="stable")
  np.testing.assert_array_equal(got[:, :16], flat[:, order])
  np.testing.assert_array_equal(got[:, 16:], flat[:, 16:])


def test_apply_shifts_vmaps_a_mixed_population():
  kinds = ("none", "ums", "pas", "ms")
  latents = np.stack([Z] * 4)
  alphas = np.array([[0, 0], [0.1, 0], [8, 0], [0.05, -0.2]], np.float32)
  keys = jax.random.split(KEY, 4)
  out = np.asarray(jax.jit(perturb.apply_shifts, static_argnums=4)(
      np.arange(4), latents, alphas, keys, kinds))
  np.testing.assert_array_equal(out[0], Z)
  np.testing.assert_allclose(out[1], Z + 0.1, atol=1e-6)
  np.testing.assert_array_equal(out[2], _run("pas", [8, 0]))
  np.testing.assert_allclose(out[3], Z + 0.05 + 0.2 * Z, atol=1e-6)
