"""benchmarks/search_benchmark.py runs end to end and its figures are consistent with each other.

The SD1.5 case needs no weights and no accelerator: --noloop builds the model from shapes alone,
times ask/tell here, and bounds their share with the sampler's FLOPs at the given peak.
"""

import json
import pathlib
import subprocess
import sys

import pytest

from jaxdiffattack import costs

_SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "search_benchmark.py"


def _run(tmp_path, *flags) -> dict:
  out = tmp_path / "bench.json"
  proc = subprocess.run([sys.executable, str(_SCRIPT), f"--out={out}", "--repeats=3", *flags],
                        capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(out.read_text())


def test_ask_tell_alone(tmp_path):
  r = _run(tmp_path, "--strategies=Sep_CMA_ES,random", "--dims=256", "--population=8",
           "--targets=2", "--reference_images_per_s=100")
  assert r["dims"] == 256 and set(r["strategies"]) == {"Sep_CMA_ES", "random"}
  for s in r["strategies"].values():
    assert s["ask_s"] > 0 and s["tell_s"] > 0 and s["ask_compile_s"] > 0
    # The driver's loop does at least the batched ask and tell, and more outside the objective.
    assert 0 < s["loop_ask_tell_s"] <= s["loop_overhead_s"]
    sample_s = 2 * 8 / 100
    assert s["implied_ask_tell_share"] == pytest.approx(
        s["loop_ask_tell_s"] / (s["loop_ask_tell_s"] + sample_s))


def test_sd15_bound_without_weights(tmp_path):
  r = _run(tmp_path, "--model=sd15", "--noloop", "--peak_tflops=989", "--population=64",
           "--steps=50", "--dtype=bfloat16", "--strategies=Sep_CMA_ES")
  assert r["dims"] == 4 * 64 * 64
  assert r["flops_per_image"] == 100 * r["unet_call_flops"] + r["vae_decode_flops"]
  assert 75e12 < r["flops_per_image"] < 90e12       # 81.3 TFLOP (50 steps with CFG, 512²)
  assert r["images_per_s_at_peak"] == pytest.approx(989e12 / r["flops_per_image"])
  s = r["strategies"]["Sep_CMA_ES"]
  assert "images_per_s" not in s                   # --noloop: no sampling
  assert s["ask_tell_share_bound"] == pytest.approx(
      costs.share_bound(s["loop_ask_tell_s"], 64, r["flops_per_image"], 989))
  assert s["ask_tell_share_bound"] < 0.05          # the target (measured: 0.25 %)


def test_peak_needs_a_model(tmp_path):
  proc = subprocess.run([sys.executable, str(_SCRIPT), "--peak_tflops=989"], capture_output=True,
                        text=True, timeout=600, check=False)
  assert proc.returncode != 0 and "--peak_tflops needs --model" in proc.stderr
