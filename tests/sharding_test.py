"""Sharded (8 fake CPU devices) == single device, in a separate process (device count is fixed
when JAX starts, and this test session has already started it with one device)."""

import os
import pathlib
import subprocess
import sys

import numpy as np

from jaxdiffattack import sharding
from jax_only import JAX_ONLY


def test_eight_devices_match_one(tiny_sd_dirs, tmp_path):
  out = tmp_path / "out.npz"
  worker = pathlib.Path(__file__).with_name("multidevice_worker.py")
  env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parent.parent),
             **JAX_ONLY)
  proc = subprocess.run([sys.executable, str(worker), str(tiny_sd_dirs[1]), str(out)],
                        env=env, capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = np.load(out)
  assert int(r["single_devices"]) == 1 and int(r["eight_devices"]) == 8
  assert r["eight_images"].shape == (5, 16, 16, 3)  # padding to 8 dropped
  # Equal up to float32 summation order (XLA picks other GEMM blockings per batch size):
  # images in [0, 1] to 2e-5, final latents (|z| up to ~8) to 1e-4.
  for name in ("eight", "eight_mb1"):
    np.testing.assert_allclose(r[f"{name}_images"], r["single_images"], atol=2e-5, rtol=0)
    np.testing.assert_allclose(r[f"{name}_latents"], r["single_latents"], atol=1e-4, rtol=0)


def test_chunking_and_padding():
  mesh = sharding.make_mesh()
  n = mesh.size
  assert sharding.chunk_size(mesh, 5, None) == n * -(-5 // n)
  assert sharding.chunk_size(mesh, 5, 2) == 2 * n
  x = np.arange(6).reshape(3, 2)
  padded = sharding.pad_population(x, 5)
  np.testing.assert_array_equal(padded, [[0, 1], [2, 3], [4, 5], [4, 5], [4, 5]])
  try:
    sharding.chunk_size(mesh, 5, 0)
  except ValueError as e:
    assert "microbatch=0" in str(e)
  else:
    raise AssertionError("microbatch 0 accepted")
