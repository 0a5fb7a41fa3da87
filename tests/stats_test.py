"""jaxdiffattack.stats against independent computations: McNemar against statsmodels' exact
test, Newcombe's paired interval against the published value (Fagerland, Lydersen & Laake 2017,
Cavo et al. 2012 table) and its coverage by simulation, the paired bootstrap against SciPy's
paired bootstrap, the cluster-robust interval against statsmodels' cluster-robust OLS, the
cluster bootstrap against the cluster-robust standard error and by coverage; bad input → one
line."""

import math

import numpy as np
import pytest
from scipy import stats as sps
import statsmodels.api as sm
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from jaxdiffattack import stats
from jaxdiffattack.errors import UserError


def _units(both, only_a, only_b, neither):
  a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
  b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
  return np.array(a), np.array(b)


def test_independent_interval_matches_the_published_example():
  """Newcombe (1998, Stat. Med. 17:873), Table II example (b): 56/70 vs 48/80 → method 10:
  0.0524 to 0.3339."""
  low, high = stats.independent_difference_interval(56, 70, 48, 80)
  assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)


@pytest.mark.parametrize("table", [(59, 6, 16, 80), (3, 0, 5, 12), (10, 7, 7, 1), (0, 0, 0, 9),
                                   (2, 20, 1, 0)])
def test_paired_table_and_mcnemar_match_statsmodels(table):
  a, b = _units(*table)
  both, only_a, only_b, neither = stats.paired_table(a, b)
  assert (both, only_a, only_b, neither) == table
  expected = sm_mcnemar(np.array([[both, only_a], [only_b, neither]]), exact=True).pvalue
  assert stats.mcnemar_exact(only_a, only_b) == pytest.approx(min(1.0, expected), abs=1e-12)


def test_newcombe_paired_interval_matches_the_published_value():
  """Fagerland et al. (2017) §8 example (Cavo et al. 2012: 59, 6 / 16, 80): −0.0621
  [−0.1186, −0.0046] by the Newcombe square-and-add interval."""
  a, b = _units(59, 6, 16, 80)
  d, low, high = stats.paired_proportion_interval(a, b)
  assert (round(d, 4), round(low, 4), round(high, 4)) == (-0.0621, -0.1186, -0.0046)
  assert stats.paired_table_interval(59, 6, 16, 80) == (d, low, high)
  with pytest.raises(UserError, match="negative count"):
    stats.paired_table_interval(1, -1, 0, 3)


def test_paired_interval_is_narrower_than_the_independent_one_when_pairs_agree():
  """Same margins, strong agreement: the paired interval is much narrower than Newcombe's
  independent-samples interval (the one the protocol used before)."""
  a, b = _units(30, 8, 1, 41)
  _, low, high = stats.paired_proportion_interval(a, b)
  ind_low, ind_high = stats.independent_difference_interval(a.sum(), len(a), b.sum(), len(b))
  assert high - low < 0.7 * (ind_high - ind_low)
  assert low > 0 > ind_low   # the pairing decides what the independent interval cannot


def test_paired_interval_covers_at_about_95_percent():
  """Coverage by simulation of correlated pairs (true difference 0.1, n = 60)."""
  rng = np.random.default_rng(0)
  cover, reps = 0, 2000
  for _ in range(reps):
    u = rng.random(60)
    a = (u < 0.4).astype(int)
    b = ((u < 0.3) | ((u > 0.9) & (rng.random(60) < 0.0))).astype(int)   # p_b = 0.3
    _, low, high = stats.paired_proportion_interval(a, b)
    cover += low <= 0.1 <= high
  assert 0.93 <= cover / reps <= 0.99


@pytest.mark.parametrize("seed", range(3))
def test_paired_bootstrap_matches_scipy_paired_bootstrap(seed):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=50)
  b = a + rng.normal(0.3, 0.5, size=50)
  d, low, high = stats.paired_bootstrap_interval(a, b, n_boot=20000, seed=seed)
  ref = sps.bootstrap((a, b), lambda x, y: np.mean(x - y), paired=True, vectorized=False,
                      n_resamples=20000, method="percentile", random_state=seed + 100)
  assert d == pytest.approx(np.mean(a - b))
  assert low == pytest.approx(ref.confidence_interval.low, abs=0.015)
  assert high == pytest.approx(ref.confidence_interval.high, abs=0.015)


def test_paired_bootstrap_is_deterministic_in_its_seed():
  a, b = _units(10, 8, 2, 20)
  assert stats.paired_bootstrap_interval(a, b, seed=3) == stats.paired_bootstrap_interval(
      a, b, seed=3)


@pytest.mark.parametrize("seed", range(4))
def test_cluster_wald_matches_statsmodels_cluster_robust_ols(seed):
  rng = np.random.default_rng(seed)
  clusters = np.repeat(np.arange(15), rng.integers(1, 9, size=15))
  shared = rng.random(15)[clusters]            # a per-cluster difficulty
  y = (rng.random(len(clusters)) < shared).astype(float)
  mean, low, high, se = stats.cluster_wald_interval(y, [f"p{c}" for c in clusters])
  fit = sm.OLS(y, np.ones((len(y), 1))).fit(cov_type="cluster", cov_kwds={"groups": clusters})
  assert mean == pytest.approx(fit.params[0])
  assert se == pytest.approx(fit.bse[0], rel=1e-10)
  assert (low, high) == pytest.approx((mean - stats.Z95 * se, mean + stats.Z95 * se))


def test_cluster_bootstrap_standard_error_approaches_the_cluster_robust_one():
  rng = np.random.default_rng(7)
  clusters = np.repeat(np.arange(200), 16)
  y = (rng.random(clusters.size) < rng.beta(1, 4, 200)[clusters]).astype(float)
  mean, low, high = stats.cluster_bootstrap_interval(y, clusters, n_boot=4000, seed=1)
  fit = sm.OLS(y, np.ones((len(y), 1))).fit(cov_type="cluster", cov_kwds={"groups": clusters})
  assert mean == pytest.approx(y.mean())
  assert (high - low) / (2 * stats.Z95) == pytest.approx(fit.bse[0], rel=0.08)
  naive = math.sqrt(y.mean() * (1 - y.mean()) / y.size)
  assert fit.bse[0] > 1.5 * naive   # clustering matters here: the naive interval is too narrow


def test_cluster_intervals_cover_where_the_per_sample_wilson_does_not():
  """16 samples of each of 20 prompts, each prompt with its own failure probability: the
  clustered intervals cover the population rate at ≈ 95 %, the Wilson interval over the 320
  samples (treating them as independent) far less often."""
  rng = np.random.default_rng(11)
  truth = 0.2          # mean of Beta(1, 4)
  clusters = np.repeat(np.arange(20), 16)
  cover = {"wald": 0, "boot": 0, "wilson": 0}
  reps = 300
  for r in range(reps):
    y = (rng.random(320) < rng.beta(1, 4, 20)[clusters]).astype(float)
    _, lw, hw, _ = stats.cluster_wald_interval(y, clusters)
    _, lb, hb = stats.cluster_bootstrap_interval(y, clusters, n_boot=1000, seed=r)
    li, hi = stats.wilson_interval(y.sum(), y.size)
    cover["wald"] += lw <= truth <= hw
    cover["boot"] += lb <= truth <= hb
    cover["wilson"] += li <= truth <= hi
  assert cover["wald"] / reps > 0.88 and cover["boot"] / reps > 0.86
  assert cover["wilson"] / reps < 0.75


def test_clustered_rate_falls_back_to_wilson():
  assert stats.clustered_rate([1, 0, 1], ["a", "b", "c"])["interval"] == "wilson"
  one = stats.clustered_rate([1, 0, 1, 1], ["a"] * 4)    # one prompt: its seeds are the samples
  assert one["interval"] == "wilson" and one["ci95"] == list(stats.wilson_interval(3, 4))
  got = stats.clustered_rate([0, 0, 0, 0], ["a", "a", "b", "b"])
  assert got["interval"] == "wilson over clusters"
  assert got["ci95"] == list(stats.wilson_interval(0, 2))
  # Every prompt 1 of 2: the cluster-robust variance is 0; not a zero-width interval.
  got = stats.clustered_rate([1, 0, 0, 1, 1, 0], ["a", "a", "b", "b", "c", "c"])
  assert got["interval"] == "wilson over clusters" and got["clusters"] == 3
  assert got["ci95"] == list(stats.wilson_interval(1.5, 3)) and got["ci95"][1] > got["ci95"][0]
  got = stats.clustered_rate([1, 1, 0, 1, 1, 0], ["a", "a", "b", "b", "c", "c"])
  assert got["interval"] == "cluster-robust" and got["clusters"] == 3
  assert got["ci95"] == [max(0.0, v) for v in stats.cluster_wald_interval(
      [1, 1, 0, 1, 1, 0], ["a", "a", "b", "b", "c", "c"])[1:3]]


def test_bad_input_is_one_line():
  with pytest.raises(UserError, match="3 and 2 units"):
    stats.paired_proportion_interval([1, 0, 1], [1, 0])
  with pytest.raises(UserError, match="must be 0/1"):
    stats.paired_table([0.5, 1], [1, 0])
  with pytest.raises(UserError, match="one cluster label"):
    stats.cluster_wald_interval([1, 0, 1], ["a", "b"])


def test_clustered_mean_against_statsmodels_and_its_fallbacks():
  from statsmodels.stats import sandwich_covariance  # pylint: disable=g-import-not-at-top
  import statsmodels.api as sm  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(4)
  clusters = np.repeat(np.arange(6), 3)
  values = rng.normal(0, 1, 6)[clusters] + rng.normal(0, 0.2, 18)
  got = stats.clustered_mean(values, clusters)
  fit = sm.OLS(values, np.ones(18)).fit()
  se = np.sqrt(sandwich_covariance.cov_cluster(fit, clusters)[0, 0])
  np.testing.assert_allclose([got["mean"], got["se"]], [values.mean(), se], rtol=1e-9)
  np.testing.assert_allclose([got["low"], got["high"]],
                             [values.mean() - 1.959964 * se, values.mean() + 1.959964 * se],
                             rtol=1e-5)
  assert (got["interval"], got["n"], got["clusters"]) == ("cluster-robust", 18, 6)
  one = stats.clustered_mean(values[:3], clusters[:3])      # one cluster: sd/sqrt(n)
  sd = values[:3].std(ddof=1) / np.sqrt(3)
  np.testing.assert_allclose([one["se"], one["high"] - one["mean"]], [sd, 1.959964 * sd],
                             rtol=1e-5)
  assert one["interval"] == "normal"
  empty = stats.clustered_mean([], [])
  assert np.isnan(empty["mean"]) and empty["n"] == 0
