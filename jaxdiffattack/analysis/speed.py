"""Generation speed (ATM, Du et al. 2023, arXiv 2306.02583 §4.1).

With fixed noise, the SSIM between each step's decoded predicted x0 and the final image shows how
fast an image forms; an object that forms later than another in the same prompt tends to be
overwritten by it. Per class: the curve and the first step at which SSIM exceeds a threshold;
per object of a two-object prompt: the same inside the object's region (`ssim.masked_ssim`);
across classes: the correlation of formation speed with how often a class is lost.
"""

import numpy as np
from scipy import stats

from jaxdiffattack.analysis import ssim as ssim_lib


def ssim_curves(x0_images: np.ndarray, final: np.ndarray) -> np.ndarray:
  """SSIM [P, S] of each step's predicted image [P, S, H, W, 3] with the final [P, H, W, 3]."""
  return ssim_lib.ssim(x0_images, final[:, None])


def region_ssim_curves(x0_images: np.ndarray, final: np.ndarray,
                       masks: np.ndarray) -> np.ndarray:
  """SSIM [P, K, S] inside each of K regions, masks [P, K, H, W] (NaN where a mask is empty)."""
  full = ssim_lib.ssim_map(x0_images, final[:, None])                   # [P, S, H, W]
  masks = np.asarray(masks, bool)
  inside = np.einsum("pshw,pkhw->pks", full, masks.astype(full.dtype))
  count = masks.sum((-2, -1))[..., None]                                 # [P, K, 1]
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(count > 0, inside / count, np.nan)


def first_step_above(curves: np.ndarray, threshold: float) -> np.ndarray:
  """The first step index (0-based) [...] at which curves [..., S] exceed `threshold` and stay
  above it; S when they never do; NaN where the curve is NaN."""
  above = curves > threshold
  # The last step below the threshold + 1: "stays above" ignores early one-step spikes.
  below = ~above
  s = curves.shape[-1]
  last_below = np.where(below.any(-1), s - 1 - np.argmax(below[..., ::-1], axis=-1), -1)
  out = (last_below + 1).astype(float)
  return np.where(np.isnan(curves).any(-1), np.nan, out)


def correlation(x, y) -> dict:
  """Pearson and Spearman correlation of paired values (pairs with a NaN dropped)."""
  x, y = np.asarray(x, float), np.asarray(y, float)
  ok = ~(np.isnan(x) | np.isnan(y))
  n = int(ok.sum())
  if n < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
    return {"n": n, "pearson": None, "pearson_p": None, "spearman": None, "spearman_p": None}
  pr = stats.pearsonr(x[ok], y[ok])
  sr = stats.spearmanr(x[ok], y[ok])
  return {"n": n, "pearson": float(pr[0]), "pearson_p": float(pr[1]),
          "spearman": float(sr[0]), "spearman_p": float(sr[1])}
