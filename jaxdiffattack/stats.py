"""Confidence intervals and tests for the numbers the jobs report.

Independent samples:
  * `wilson_interval`: a share of hits out of n (Wilson 1927), inside [0, 1], sound at 0 % / 100 %.
  * `mean_interval`: a mean of continuous scores (CLIP score), mean ± z·sd/√n.

  * `independent_difference_interval`: p_a − p_b of two independent samples (Newcombe 1998,
    Stat. Med. 17:873, method 10: the hybrid Wilson score interval) — for two runs on different
    units only.

Paired samples (two methods or settings on the same units: targets, (prompt, seed) pairs) — an
interval for independent samples ignores the pairing and is too wide when the two agree (and
wrong in general):
  * `paired_table`: the 2×2 table (both, only a, only b, neither) of two 0/1 vectors.
  * `mcnemar_exact`: McNemar's exact test, the two-sided binomial test of the discordant pairs
    (only a vs only b, p = ½).
  * `paired_proportion_interval`: the interval of p_a − p_b for paired 0/1 data by Newcombe's
    square-and-add of Wilson intervals with the pairs' correlation (Newcombe 1998, Stat. Med.
    17:2635, method 10; Fagerland, Lydersen & Laake 2017, §8.5):
        L = D − √((p_a − l_a)² − 2φ(p_a − l_a)(u_b − p_b) + (u_b − p_b)²)
        U = D + √((p_b − l_b)² − 2φ(p_b − l_b)(u_a − p_a) + (u_a − p_a)²)
    with φ = (AD − BC − n/2)/√(row and column totals) when AD − BC > n/2, 0 when
    0 ≤ AD − BC ≤ n/2, (AD − BC)/√(…) when negative, and 0 when a margin is empty.
  * `paired_bootstrap_interval`: percentile bootstrap of the mean paired difference, the units
    resampled with replacement (any 0/1 or continuous values).
  * `paired_tests`: the paired t-test and Wilcoxon's signed-rank test (SciPy) of continuous
    paired values; the sign test of wins against losses is `mcnemar_exact(wins, losses)`.

Per-sample rates over clustered samples (several images of one prompt or target are not
independent: they share the prompt's difficulty):
  * `cluster_wald_interval`: mean ± z·se with the cluster-robust (sandwich) standard error of the
    mean, se² = G/(G−1) · Σ_g (Σ_{i∈g} (y_i − ȳ))² / N² — the intercept of an OLS with
    cluster-robust errors (statsmodels `cov_type="cluster"`).
  * `cluster_bootstrap_interval`: percentile bootstrap resampling whole clusters (the rate of a
    resample is its hits over its items).
  * `cluster_bootstrap_difference`: rate_a − rate_b of two independent clustered samples (two
    prompt sets): percentile bootstrap resampling the clusters of each sample independently.
  * `clustered_rate`: the per-sample rate's report entry: cluster-robust Wald interval clipped to
    [0, 1]; Wilson over the items when every cluster holds one item or there is one cluster
    (then the rate is that cluster's); where the robust variance is 0 (at 0 % / 100 %, or
    every cluster's rate equal to the overall one) Wilson over the number of clusters (the
    cautious interval).

Bootstraps draw from `numpy.random.default_rng(seed)`: explicit and reproducible.
"""

import math

import numpy as np

from jaxdiffattack.errors import UserError

Z95 = 1.959963984540054
N_BOOT = 10_000


def wilson_interval(hits: float, n: int, z: float = Z95) -> tuple[float, float]:
  """(low, high) of the Wilson score interval for `hits` successes out of `n`."""
  if n <= 0:
    return (math.nan, math.nan)
  p = hits / n
  denom = 1 + z * z / n
  centre = (p + z * z / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
  return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values, z: float = Z95) -> tuple[float, float, float]:
  """(mean, low, high): normal-approximation interval of the mean."""
  values = np.asarray(values, np.float64)
  if values.size == 0:
    return (math.nan, math.nan, math.nan)
  mean = float(values.mean())
  if values.size == 1:
    return (mean, mean, mean)
  half = z * float(values.std(ddof=1)) / math.sqrt(values.size)
  return (mean, mean - half, mean + half)


def independent_difference_interval(hits_a: int, n_a: int, hits_b: int, n_b: int,
                                    z: float = Z95) -> tuple[float, float]:
  """95 % interval of p_a − p_b of independent samples from the two Wilson intervals."""
  if n_a <= 0 or n_b <= 0:
    return (math.nan, math.nan)
  pa, pb = hits_a / n_a, hits_b / n_b
  la, ua = wilson_interval(hits_a, n_a, z)
  lb, ub = wilson_interval(hits_b, n_b, z)
  d = pa - pb
  return (d - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2),
          d + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2))


# --------------------------------------------------------------------------------- paired --
def _paired(a, b) -> tuple[np.ndarray, np.ndarray]:
  a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
  if a.shape != b.shape:
    raise UserError(f"paired samples have {a.size} and {b.size} units: give one value per unit "
                    "for both, in the same unit order")
  return a, b


def paired_table(a, b) -> tuple[int, int, int, int]:
  """(both, only_a, only_b, neither) of two 0/1 vectors [N] over the same units."""
  a, b = _paired(a, b)
  if not np.all(np.isin(a, (0, 1)) & np.isin(b, (0, 1))):
    raise UserError("paired_table: values must be 0/1 (or booleans); use "
                    "paired_bootstrap_interval for continuous values")
  a, b = a.astype(bool), b.astype(bool)
  return (int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum()), int((~a & ~b).sum()))


def mcnemar_exact(only_a: int, only_b: int) -> float:
  """Two-sided exact McNemar p-value: binomial test (p = ½) of only_a vs only_b discordant
  units."""
  n = only_a + only_b
  if n == 0:
    return 1.0
  k = min(only_a, only_b)
  tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
  return min(1.0, 2 * tail)


def paired_proportion_interval(a, b, z: float = Z95) -> tuple[float, float, float]:
  """(p_a − p_b, low, high): Newcombe's square-and-add interval for paired 0/1 data."""
  return paired_table_interval(*paired_table(a, b), z=z)


def paired_table_interval(both: int, only_a: int, only_b: int, neither: int,
                          z: float = Z95) -> tuple[float, float, float]:
  """`paired_proportion_interval` from the paired 2×2 table's counts."""
  if min(both, only_a, only_b, neither) < 0:
    raise UserError(f"paired table ({both}, {only_a}, {only_b}, {neither}) has a negative count; "
                    "give (both, only a, only b, neither) counts of units")
  n = both + only_a + only_b + neither
  if n == 0:
    return (math.nan, math.nan, math.nan)
  hits_a, hits_b = both + only_a, both + only_b
  pa, pb = hits_a / n, hits_b / n
  la, ua = wilson_interval(hits_a, n, z)
  lb, ub = wilson_interval(hits_b, n, z)
  margins = hits_a * (n - hits_a) * hits_b * (n - hits_b)
  phi = 0.0
  if margins > 0:
    det = both * neither - only_a * only_b
    if det > n / 2:
      phi = (det - n / 2) / math.sqrt(margins)
    elif det < 0:
      phi = det / math.sqrt(margins)
  d = pa - pb
  low = d - math.sqrt(max(0.0, (pa - la) ** 2 - 2 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2))
  high = d + math.sqrt(max(0.0, (pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2))
  return (d, max(-1.0, low), min(1.0, high))


def paired_bootstrap_interval(a, b, n_boot: int = N_BOOT, seed: int = 0,
                              level: float = 0.95) -> tuple[float, float, float]:
  """(mean(a − b), low, high): percentile bootstrap over units (pairs resampled together)."""
  a, b = _paired(a, b)
  diff = a - b
  if diff.size == 0:
    return (math.nan, math.nan, math.nan)
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, diff.size, size=(n_boot, diff.size))
  means = diff[idx].mean(axis=1)
  tail = (1 - level) / 2
  return (float(diff.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail)))


def paired_tests(a, b) -> dict:
  """Two-sided tests of a − b over paired units (continuous values, e.g. per-target failure
  yields of two methods on the same targets): {"n", "mean_difference", "t", "df", "t_p"} of the
  paired t-test (`scipy.stats.ttest_rel`) and {"wilcoxon_w", "wilcoxon_p", "wilcoxon_nonzero"}
  of Wilcoxon's signed-rank test (`scipy.stats.wilcoxon`: zero differences dropped, "wilcox";
  W = the smaller of the positive and negative rank sums; exact null distribution when at most
  50 differences remain and none tie, else the normal approximation with tie correction).
  Degenerate cases: t and t_p None when fewer than 2 units or every difference is equal
  (zero variance, to 1e-12 relative); W None and p 1.0 when every difference is 0."""
  from scipy import stats as sps  # pylint: disable=g-import-not-at-top
  a, b = _paired(a, b)
  d = a - b
  out = {"n": int(d.size), "mean_difference": float(d.mean()) if d.size else None,
         "t": None, "df": int(d.size) - 1 if d.size else None, "t_p": None,
         "wilcoxon_w": None, "wilcoxon_p": 1.0, "wilcoxon_nonzero": int(np.count_nonzero(d))}
  if d.size >= 2 and np.ptp(d) > 1e-12 * max(1.0, float(np.abs(d).max())):
    t = sps.ttest_rel(a, b)
    out["t"], out["t_p"] = float(t.statistic), float(t.pvalue)
  if out["wilcoxon_nonzero"]:
    w = sps.wilcoxon(d, zero_method="wilcox")
    out["wilcoxon_w"], out["wilcoxon_p"] = float(w.statistic), float(w.pvalue)
  return out


# ------------------------------------------------------------------------------ clustered --
def _clusters(values, clusters) -> tuple[np.ndarray, np.ndarray]:
  """(values [N] float64, cluster ids [N] int in 0..G−1)."""
  y = np.asarray(values, np.float64).ravel()
  labels = list(clusters)
  if len(labels) != y.size:
    raise UserError(f"clustered values: {y.size} values but {len(labels)} cluster labels; give "
                    "one cluster label (e.g. the prompt or target) per value")
  index = {}
  ids = np.array([index.setdefault(c, len(index)) for c in labels], np.int64)
  return y, ids


def cluster_wald_interval(values, clusters, z: float = Z95) -> tuple[float, float, float, float]:
  """(mean, low, high, se): the mean with its cluster-robust standard error (CR1: G/(G−1))."""
  y, ids = _clusters(values, clusters)
  n = y.size
  if n == 0:
    return (math.nan, math.nan, math.nan, math.nan)
  mean = float(y.mean())
  g = int(ids.max()) + 1
  if g < 2:
    return (mean, math.nan, math.nan, math.nan)
  sums = np.bincount(ids, weights=y - mean, minlength=g)
  se = math.sqrt(g / (g - 1) * float((sums ** 2).sum())) / n
  return (mean, mean - z * se, mean + z * se, se)


def clustered_mean(values, clusters, z: float = Z95) -> dict:
  """{"mean", "low", "high", "se", "interval", "n", "clusters"} of continuous `values` [N] whose
  items fall into `clusters` [N]: cluster-robust (`cluster_wald_interval`, CR1) with two clusters
  or more, else the normal interval with sd/√n ("normal"); NaNs when empty (and se NaN for one
  item)."""
  values = np.asarray(values, np.float64)
  groups = len(set(np.asarray(clusters).tolist())) if values.size else 0
  if groups >= 2:
    mean, low, high, se = cluster_wald_interval(values, clusters, z)
    interval = "cluster-robust"
  else:
    mean, low, high = mean_interval(values, z)
    se = (float(values.std(ddof=1)) / math.sqrt(values.size) if values.size > 1 else math.nan)
    interval = "normal"
  return {"mean": mean, "low": low, "high": high, "se": se, "interval": interval,
          "n": int(values.size), "clusters": groups}


def cluster_bootstrap_interval(values, clusters, n_boot: int = N_BOOT, seed: int = 0,
                               level: float = 0.95) -> tuple[float, float, float]:
  """(mean, low, high): percentile bootstrap resampling clusters with replacement; a resample's
  statistic is the sum of its values over its number of items (the per-sample rate)."""
  y, ids = _clusters(values, clusters)
  if y.size == 0:
    return (math.nan, math.nan, math.nan)
  g = int(ids.max()) + 1
  sums = np.bincount(ids, weights=y, minlength=g)
  sizes = np.bincount(ids, minlength=g).astype(np.float64)
  rng = np.random.default_rng(seed)
  pick = rng.integers(0, g, size=(n_boot, g))
  stat = sums[pick].sum(axis=1) / sizes[pick].sum(axis=1)
  tail = (1 - level) / 2
  return (float(y.mean()), float(np.quantile(stat, tail)), float(np.quantile(stat, 1 - tail)))


def cluster_bootstrap_difference(values_a, clusters_a, values_b, clusters_b,
                                 n_boot: int = N_BOOT, seed: int = 0,
                                 level: float = 0.95) -> tuple[float, float, float]:
  """(rate_a − rate_b, low, high) of two independent clustered samples: each bootstrap draw
  resamples a's clusters and b's clusters with replacement, independently (one generator,
  `default_rng(seed)`: a's draws first); a resample's rate is its hits over its items."""
  ya, ia = _clusters(values_a, clusters_a)
  yb, ib = _clusters(values_b, clusters_b)
  if ya.size == 0 or yb.size == 0:
    return (math.nan, math.nan, math.nan)
  rng = np.random.default_rng(seed)
  rates = []
  for y, ids in ((ya, ia), (yb, ib)):
    g = int(ids.max()) + 1
    sums = np.bincount(ids, weights=y, minlength=g)
    sizes = np.bincount(ids, minlength=g).astype(np.float64)
    pick = rng.integers(0, g, size=(n_boot, g))
    rates.append(sums[pick].sum(axis=1) / sizes[pick].sum(axis=1))
  diff = rates[0] - rates[1]
  tail = (1 - level) / 2
  return (float(ya.mean() - yb.mean()), float(np.quantile(diff, tail)),
          float(np.quantile(diff, 1 - tail)))


def clustered_rate(hits, clusters, z: float = Z95) -> dict:
  """{"rate", "hits", "n", "clusters", "ci95": [low, high], "interval"} of 0/1 `hits` [N] whose
  items fall into `clusters` [N] (e.g. the prompt of each sample)."""
  y, ids = _clusters(hits, clusters)
  n = y.size
  g = int(ids.max()) + 1 if n else 0
  out = {"hits": int(y.sum()), "n": n, "clusters": g, "rate": float(y.mean()) if n else None}
  if n == 0:
    return out | {"ci95": [None, None], "interval": None}
  p = float(y.mean())
  if g == n or g == 1:
    # Independent items, or one cluster (the rate is that cluster's: its items are the samples).
    low, high = wilson_interval(p * n, n, z)
    return out | {"ci95": [low, high], "interval": "wilson"}
  _, low, high, se = cluster_wald_interval(y, ids, z)
  if p in (0.0, 1.0) or not se > 1e-12:
    # Robust variance 0: at 0 % / 100 %, or every cluster's rate equal to the overall one (say
    # 1 of 2 seeds in each prompt) — a zero-width interval would claim certainty.
    low, high = wilson_interval(p * g, g, z)
    return out | {"ci95": [low, high], "interval": "wilson over clusters"}
  return out | {"ci95": [max(0.0, low), min(1.0, high)], "interval": "cluster-robust"}

