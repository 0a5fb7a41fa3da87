"""A search sharded over 8 fake CPU devices == the same search on one device, for an evosax
strategy and for a gradient method (in a subprocess: the device count is fixed when JAX
starts)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from jax_only import JAX_ONLY


@pytest.mark.slow
def test_eight_devices_match_one(tiny_sd_dirs, tmp_path):
  worker = pathlib.Path(__file__).with_name("search_multidevice_worker.py")
  env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parent.parent),
             **JAX_ONLY)
  proc = subprocess.run([sys.executable, str(worker), str(tiny_sd_dirs[1]), str(tmp_path)],
                        env=env, capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  one, eight = ([json.loads(line) for line in (tmp_path / name / "results.jsonl").read_text()
                 .splitlines()] for name in ("one", "eight"))
  assert len(one) == len(eight) == 6
  assert [r["method"] for r in one] == ["Sep_CMA_ES"] * 3 + ["adam"] * 3
  for a, b in zip(one, eight):
    # The same decisions: ranks of fitness values equal up to float summation order
    # (XLA's per-batch-size GEMM blockings; see tests/sharding_test.py) give the same searches.
    for key in ("success", "first_success_generation", "evaluations", "failures_found",
                "best_generation", "nonfinite"):
      assert a[key] == b[key], key
    np.testing.assert_allclose(a["best_fitness"], b["best_fitness"], atol=1e-5)
    np.testing.assert_allclose(np.array(a["curve_best"], float), np.array(b["curve_best"], float),
                               atol=1e-5)
    assert [f["member"] for f in a["failures"]] == [f["member"] for f in b["failures"]]
  for path in sorted((tmp_path / "one" / "failures").rglob("*.npy")):
    other = tmp_path / "eight" / path.relative_to(tmp_path / "one")
    np.testing.assert_allclose(np.load(other), np.load(path), atol=1e-5)
