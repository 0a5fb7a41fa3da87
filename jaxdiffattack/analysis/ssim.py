"""Structural similarity (SSIM; Wang, Bovik, Sheikh & Simoncelli 2004, eq. 13), in NumPy.

    SSIM(x, y) = (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)),
    C1 = (K1 L)², C2 = (K2 L)², K1 = 0.01, K2 = 0.03, L = data range,

with μ, σ², σxy the local means, (sample) variances and covariance over a `window` × `window`
box around each pixel (the image is mirror-padded at its border, edge pixel repeated). Colour
images: the map is computed per channel and averaged over channels. `ssim` is the mean of the map
over the pixels whose window lies inside the image (what scikit-image's `structural_similarity`
returns with its defaults: 7×7 uniform window, sample covariance); `masked_ssim` averages the full
map over a region (ATM arXiv 2306.02583 §4.1 compares each object's formation this way).
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

K1, K2 = 0.01, 0.03
WINDOW = 7


def _local_mean(x: np.ndarray, window: int) -> np.ndarray:
  """Box mean over window × window of [..., H, W, C], mirror-padded (same size out)."""
  pad = window // 2
  padded = np.pad(x, [(0, 0)] * (x.ndim - 3) + [(pad, pad), (pad, pad), (0, 0)],
                  mode="symmetric")
  return sliding_window_view(padded, (window, window), axis=(-3, -2)).mean((-2, -1))


def ssim_map(x, y, data_range: float = 1.0, window: int = WINDOW) -> np.ndarray:
  """Per-pixel SSIM [..., H, W] of images [..., H, W, C] (averaged over channels; leading
  axes broadcast)."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  if x.shape[-3:] != y.shape[-3:] or x.ndim < 3 or y.ndim < 3:
    raise ValueError(f"ssim needs two [..., H, W, C] images of one shape, got {x.shape} and "
                     f"{y.shape}")
  x, y = np.broadcast_arrays(x, y)
  n = window * window
  cov_norm = n / (n - 1)                       # sample (not population) covariance
  mx, my = _local_mean(x, window), _local_mean(y, window)
  vx = cov_norm * (_local_mean(x * x, window) - mx * mx)
  vy = cov_norm * (_local_mean(y * y, window) - my * my)
  vxy = cov_norm * (_local_mean(x * y, window) - mx * my)
  c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
  s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
  return s.mean(-1)


def ssim(x, y, data_range: float = 1.0, window: int = WINDOW) -> np.ndarray:
  """Mean SSIM [...] of images [..., H, W, C] over the pixels whose window is inside."""
  pad = (window - 1) // 2
  return ssim_map(x, y, data_range, window)[..., pad:-pad, pad:-pad].mean((-2, -1))


def masked_ssim(x, y, mask, data_range: float = 1.0, window: int = WINDOW) -> np.ndarray:
  """Mean of the SSIM map [..., H, W] over `mask` [..., H, W] (bool); NaN where it is empty."""
  mask = np.asarray(mask, bool)
  s = ssim_map(x, y, data_range, window)
  count = mask.sum((-2, -1))
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(count > 0, (s * mask).sum((-2, -1)) / count, np.nan)
