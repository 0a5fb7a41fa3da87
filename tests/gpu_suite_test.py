"""benchmarks/gpu_suite.sh --smoke: every Python part of the GPU suite runs on CPU and the report
holds what each part measured."""

import json
import pathlib
import subprocess

import pytest

_SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_suite.sh"


@pytest.mark.slow
def test_smoke_suite_writes_json_and_table(tmp_path):
  pytest.importorskip("torch")
  proc = subprocess.run(["bash", str(_SCRIPT), "--smoke", str(tmp_path)], capture_output=True,
                        text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  suite = json.loads((tmp_path / "gpu_suite.json").read_text())
  assert {name: s["exit_code"] for name, s in suite["phases"].items()} == {"sampler": 0,
                                                                          "search": 0}
  rows = suite["sampler_rows"]
  assert set(rows) == {"JAX, attention xla", "JAX, attention reference"}
  for row in rows.values():
    assert row["images_per_s"] > 0 and row["mfu"] == pytest.approx(row["tflops_per_s"] / 1.0)
  # Both implementations compute the same images.
  assert rows["JAX, attention reference"]["max_image_difference"] < 1e-4
  sampler = suite["sampler"]
  assert sampler["population"] == 2 and sampler["torch"]["batched_images_per_s"] > 0
  search = suite["search"]["strategies"]["Sep_CMA_ES"]
  assert 0 < search["ask_tell_share"] < 1 and search["generations_per_s"] > 0
  table = (tmp_path / "gpu_suite.md").read_text()
  assert "| JAX, attention reference |" in table and "| Sep_CMA_ES |" in table
  assert "PyTorch diffusers one by one" in table
