"""Confidence intervals for sweep metrics.

Accuracies (a share of hits out of n) use the Wilson score interval (Wilson 1927), which stays
inside [0, 1] and behaves at 0 % and 100 %; means of continuous scores (CLIP score) use the normal
approximation mean ± z·sd/√n.
"""

import math

import numpy as np

Z95 = 1.959963984540054


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
