"""benchmarks/sampler_benchmark.py runs end to end on the toy world, JAX and PyTorch side by side,
and its derived figures follow from its measured ones."""

import json
import pathlib
import statistics
import subprocess
import sys

import pytest

from jaxdiffattack import costs
from jaxdiffattack import models

_SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "sampler_benchmark.py"


@pytest.mark.slow
def test_toy_sampler_benchmark(tmp_path):
  out = tmp_path / "bench.json"
  proc = subprocess.run(
      [sys.executable, str(_SCRIPT), "--model=toy", "--population=4", "--steps=4", "--repeats=2",
       "--torch_one_by_one=1", "--peak_tflops=0.1", f"--out={out}"],
      capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = json.loads(out.read_text())
  j, t = r["jax"], r["torch"]
  sd, params = models.load_stable_diffusion("toy")
  flops = costs.sampler_flops(sd, params, 4, True, (sd.max_length, sd.text_dim))
  assert j["flops_per_image"] == pytest.approx(flops.per_image)
  assert j["images_per_s"] == pytest.approx(4 / j["steady_s"])
  # Interleaved repetitions: every variant timed --repeats times, each row its median.
  assert len(j["times_s"]) == len(t["batched_times_s"]) == 2
  assert j["steady_s"] == pytest.approx(statistics.median(j["times_s"]))
  assert t["batched_images_per_s"] == pytest.approx(4 / statistics.median(t["batched_times_s"]))
  assert j["tflops_per_s"] == pytest.approx(j["flops_per_image"] * j["images_per_s"] / 1e12)
  assert j["mfu"] == pytest.approx(j["tflops_per_s"] / 0.1)
  assert j["compile_s"] > 0 and t["one_by_one_images_per_s"] > 0 and t["batched_images_per_s"] > 0
  assert r["ratios"]["jax_vs_torch_batched"] == pytest.approx(
      j["images_per_s"] / t["batched_images_per_s"])
  # The previous modules (diffusers' Flax UNet/VAE, while diffusers 0.39 is installed) on the
  # same params draw the same images.
  if not hasattr(pytest.importorskip("diffusers"), "FlaxUNet2DConditionModel"):
    return
  old = r["jax_diffusers_flax"]
  assert old["max_image_difference"] < 1e-4 and old["images_per_s"] > 0
  assert r["ratios"]["jax_vs_jax_diffusers_flax"] == pytest.approx(
      j["images_per_s"] / old["images_per_s"])
