"""analysis.ssim against scikit-image's structural_similarity on the same images."""

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from jaxdiffattack.analysis import ssim as ssim_lib


def _pair(seed, shape=(32, 32, 3)):
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=shape)
  y = np.clip(0.7 * x + 0.3 * rng.uniform(size=shape), 0, 1)   # correlated, SSIM well inside (0, 1)
  return x, y


@pytest.mark.parametrize("seed,shape", [(0, (32, 32, 3)), (1, (20, 27, 3)), (2, (16, 16, 1))])
def test_mean_and_map_match_scikit_image(seed, shape):
  x, y = _pair(seed, shape)
  ref, ref_map = structural_similarity(x, y, data_range=1.0, channel_axis=-1, full=True)
  np.testing.assert_allclose(ssim_lib.ssim(x, y), ref, rtol=1e-10, atol=1e-12)
  # skimage's full map is per channel; ours is averaged over channels.
  np.testing.assert_allclose(ssim_lib.ssim_map(x, y), ref_map.mean(-1), rtol=1e-10, atol=1e-12)
  assert 0.2 < ref < 0.95


def test_batched_and_data_range():
  pairs = [_pair(s) for s in range(3)]
  xs = np.stack([p[0] for p in pairs])
  ys = np.stack([p[1] for p in pairs])
  expected = [structural_similarity(x * 255, y * 255, data_range=255, channel_axis=-1)
              for x, y in pairs]
  np.testing.assert_allclose(ssim_lib.ssim(xs * 255, ys * 255, data_range=255), expected,
                             rtol=1e-10)
  np.testing.assert_allclose(ssim_lib.ssim(xs[0], xs[0]), 1.0)


def test_masked_ssim_is_the_map_mean_inside():
  x, y = _pair(3)
  y[:16] = x[:16]                                   # top half identical
  mask = np.zeros((32, 32), bool)
  mask[2:13, 4:28] = True                           # 7x7 windows entirely in the identical half
  np.testing.assert_allclose(ssim_lib.masked_ssim(x, y, mask), 1.0, rtol=1e-12)
  _, ref_map = structural_similarity(x, y, data_range=1.0, channel_axis=-1, full=True)
  bottom = np.zeros((32, 32), bool)
  bottom[20:, :] = True
  np.testing.assert_allclose(ssim_lib.masked_ssim(x, y, bottom), ref_map.mean(-1)[bottom].mean(),
                             rtol=1e-10)
  assert np.isnan(ssim_lib.masked_ssim(x, y, np.zeros((32, 32), bool)))


def test_shape_mismatch_is_an_error():
  with pytest.raises(ValueError, match="one shape"):
    ssim_lib.ssim(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))
