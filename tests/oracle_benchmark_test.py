"""benchmarks/oracle_benchmark.py runs end to end and its figures are consistent."""

import json
import pathlib
import subprocess
import sys

import pytest

_SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "oracle_benchmark.py"


@pytest.mark.slow
def test_reports_both_kinds(tmp_path):
  out = tmp_path / "bench.json"
  proc = subprocess.run([sys.executable, str(_SCRIPT), "--num_images=20", "--repeats=1",
                         f"--out={out}"], capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = json.loads(out.read_text())
  assert r["num_images"] == 20
  for kind in ("single", "pair"):
    assert r[kind]["wall_s"] > 0 and r[kind]["cpu_s"] > 0 and r[kind]["first_call_s"] > 0
    assert r[kind]["images_per_s"] == pytest.approx(20 / r[kind]["wall_s"], rel=0.05)
