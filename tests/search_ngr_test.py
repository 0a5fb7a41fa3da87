"""Non-Gaussian Rate tests (search.report): what they are applied to and that they can fail.

On the sphere every decoded latent has norm √d exactly, and its marginal distribution looks
Gaussian whenever its elements do; these latents are built to pass the marginal KS test while
being far from N(0, I): smooth (spatially correlated) ones, and ones whose channels carry
different variances. References: draws of N(0, I) (reject at ≈ α), SciPy's tests for KS."""

import numpy as np
from scipy import ndimage
from scipy import stats as sps

from jaxdiffattack.search import report

SHAPE = (4, 16, 16)   # [C, h, w]
N = 200


def _on_sphere(z):
  flat = z.reshape(len(z), -1)
  return (flat * np.sqrt(flat.shape[1]) / np.linalg.norm(flat, axis=1, keepdims=True)).reshape(
      z.shape)


def test_gaussian_latents_reject_at_about_alpha():
  z = _on_sphere(np.random.default_rng(0).normal(size=(N,) + SHAPE))
  rates = report.non_gaussian_rate(z, 0.05)
  for test in report.NGR_TESTS:
    assert rates[test] <= 0.1, (test, rates)   # ≈ α = 0.05 (Bonferroni: at most α)


def test_smooth_latent_passes_marginal_tests_and_fails_autocorrelation():
  """Gaussian noise blurred in space, re-standardised per channel and put on the sphere: its
  elements are N(0, 1) marginally (KS passes) but neighbours are strongly correlated."""
  rng = np.random.default_rng(1)
  raw = ndimage.gaussian_filter(rng.normal(size=(N,) + SHAPE), sigma=(0, 0, 1.5, 1.5))
  raw = (raw - raw.mean(axis=(2, 3), keepdims=True)) / raw.std(axis=(2, 3), keepdims=True)
  z = _on_sphere(raw)
  p = report.normality_pvalues(z)
  np.testing.assert_allclose(p["ks"], [sps.kstest(x.ravel(), "norm").pvalue for x in z])
  rates = report.non_gaussian_rate(z, 0.05)
  assert rates["ks"] < 0.5, rates            # the marginal test mostly cannot see it
  assert rates["autocorrelation"] == 1.0, rates


def test_channel_variances_fail_channel_moments():
  """Channels with variances 0.5, 0.5, 1.5, 1.5 (norm still √d on the sphere, marginal a
  variance mixture close to normal): the per-channel second moments reject."""
  rng = np.random.default_rng(2)
  scale = np.sqrt(np.array([0.5, 0.5, 1.5, 1.5]))[None, :, None, None]
  z = _on_sphere(rng.normal(size=(N,) + SHAPE) * scale)
  rates = report.non_gaussian_rate(z, 0.05)
  assert rates["channel_moments"] == 1.0, rates
  assert rates["autocorrelation"] <= 0.1, rates


def test_channel_moment_and_autocorrelation_pvalues_match_their_formulas():
  """One latent by hand: √n·mean ~ N(0, 1), Σz² ~ χ²_n, √m·r ~ N(0, 1); Bonferroni over 2C."""
  z = np.random.default_rng(3).normal(size=SHAPE) * 1.1 + 0.05
  flat = z.reshape(4, -1)
  n = flat.shape[1]
  p = [2 * sps.norm.sf(abs(np.sqrt(n) * m)) for m in flat.mean(1)]
  p += [2 * min(sps.chi2.cdf(s, n), sps.chi2.sf(s, n)) for s in (flat ** 2).sum(1)]
  assert np.isclose(report.channel_moments_pvalue(z), min(1.0, 8 * min(p)))
  q = []
  for a, b in ((z[:, :, 1:], z[:, :, :-1]), (z[:, 1:, :], z[:, :-1, :])):
    for c in range(4):
      r = (a[c] * b[c]).sum() / np.sqrt((a[c] ** 2).sum() * (b[c] ** 2).sum())
      q.append(2 * sps.norm.sf(abs(np.sqrt(a[c].size) * r)))
  assert np.isclose(report.autocorrelation_pvalue(z), min(1.0, 8 * min(q)))
