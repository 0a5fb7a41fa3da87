"""Every job end to end at full Stable Diffusion shapes on CPU (issue #25, item 2).

SD 1.5- and SD 2.1-shaped pipelines with random weights (tests/fullshape_models.py: 860 M-parameter
UNets, the 12-layer 768-wide and the 23-layer 1024-wide text towers, v-prediction for 2.1, the
real 49,408-token CLIP vocabulary) and the ImageNet scorers at their real shapes (CLIP ViT-B/16
zero-shot with the 80 templates, ViT-B/16 and ResNet-50 classifiers), run through the real job
launchers (launch/*.py, each in a subprocess of its own: tests/fullshape_run.py) at 64² images /
8² latents and 2 sampler steps (tests/fullshape_config.py). Each test asserts the files and
figures its job promises, and prints its wall time and peak host memory.

Opt-in (JAXDIFFATTACK_FULLSHAPE=1; CI skips them: they do not fit its budget). Each job pays a model load (1.7-2.5 GB of fp16 safetensors
cast to fp32, the Flax modules traced) and its own XLA compilation of the full UNet (with the
scorers fused in; for the attack also its gradient) whatever its run size — minutes per job on
2 cores. JAXDIFFATTACK_FULLSHAPE=1 runs CI_CASES: the ATM attack on SD 2.1 (the paper's model: v-prediction, the
23-layer tower, θ [P, 77, 49408] checkpointed), the sweep (sampler + ViT-B/16 + CLIP ViT-B/16
with the 80 templates) and the latent search (ResNet-50 surrogate, evolution loop) on SD 1.5.
Measured on the shared 2-core machine (docs/results/fullshape_cpu.md, load average 12-80):
generate on SD 1.5 293 s and 10.4 GB peak host memory, the latent search on SD 1.5 408 s and
15.3 GB, the attack on SD 2.1 44 min and ≥ 10.8 GB;
sweep, token and embedding searches were OOM-killed at 9-11.5 GB beside other jobs. Each job needs
11-16 GB of free host memory (fp32 weights of the generator and three scorers, host and device
copies). `FULLSHAPE_ALL=1` runs every job × both models; benchmarks/fullshape_cpu.py runs them and
records docs/results/fullshape_cpu.{json,md}.
"""

import json
import math
import os

import numpy as np
from PIL import Image
import pytest

import fullshape_config
import fullshape_models
import fullshape_run

# Not in the default run (CI included): each job needs 11-16 GB of free host memory and the
# three CI cases alone took over an hour on the shared 2-core machine, past CI's budget. Run them
# on a machine with the memory: JAXDIFFATTACK_FULLSHAPE=1 python -m pytest tests/fullshape_test.py
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (os.environ.get("JAXDIFFATTACK_FULLSHAPE") or os.environ.get("FULLSHAPE_ALL")),
    reason="full-shape jobs need 11-16 GB of free host memory and about an hour on 2 cores: "
           "set JAXDIFFATTACK_FULLSHAPE=1 (FULLSHAPE_ALL=1: every job x model)")]

CI_CASES = (("sweep", "sd15"), ("latent", "sd15"), ("attack", "sd21"))
ALL_CASES = tuple((job, model) for model in fullshape_config.MODELS
                  for job in fullshape_config.JOBS)
CASES = ALL_CASES if os.environ.get("FULLSHAPE_ALL") else CI_CASES
IMAGE = 64


@pytest.fixture(scope="session")
def fullshape_root(tmp_path_factory):
  """Both SD pipelines and the three scorers, built once per session."""
  models = sorted({model for _, model in CASES})
  return fullshape_models.build_all(tmp_path_factory.mktemp("fullshape"), models)


def _jsonl(path):
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _finite(x) -> bool:
  return x is not None and math.isfinite(float(x))


def _check_generate(workdir, metrics):
  del metrics
  rows = _jsonl(workdir / "results.jsonl")
  assert len(rows) == 2
  pngs = sorted((workdir / "images").glob("*.png"))
  assert len(pngs) == 2
  for png in pngs:
    assert np.asarray(Image.open(png)).shape == (IMAGE, IMAGE, 3)
  assert (workdir / "grid.png").is_file() and (workdir / "config.json").is_file()


def _check_sweep(workdir, metrics):
  del metrics
  import csv  # pylint: disable=g-import-not-at-top
  with open(workdir / "members.csv", newline="") as f:
    members = list(csv.DictReader(f))
  # 2 labels × 1 image × (clean, ums +0.1, pas 16).
  assert len(members) == 6
  with open(workdir / "results.csv", newline="") as f:
    results = list(csv.DictReader(f))
  assert results and all(_finite(r["value"]) for r in results)
  assert {r["metric"] for r in results} >= {"top1", "top5", "clip_score"}
  for name in ("report.md", "config.json", "trajectory.csv", "plots/top1.png"):
    assert (workdir / name).is_file(), name


def _check_search(workdir, metrics):
  del metrics
  rows = _jsonl(workdir / "results.jsonl")
  summary = json.loads((workdir / "summary.json").read_text())
  methods = set(summary["methods"])
  assert len(methods) == 2 and "random" in methods
  assert {r["method"] for r in rows} == methods
  for r in rows:
    assert r["evaluations"] == 2 * 2                     # population 2 × 2 generations
    assert len(r["curve_best"]) == 2 and all(_finite(v) for v in r["curve_best"])
  for s in summary["methods"].values():
    assert s["targets"] == 1 and s["images_per_s"] > 0
  assert (workdir / "report.md").is_file()


def _check_attack(workdir, metrics):
  rows = _jsonl(workdir / "results.jsonl")
  assert len(rows) == fullshape_config.NUM_CLASSES           # one short prompt per class
  attacked = [r for r in rows if r["clean_correct"]]
  assert attacked, "no clean prompt was read as its class: nothing was attacked"
  for r in attacked:
    assert len(r["loss_curve"]) == 2 and all(_finite(v) for v in r["loss_curve"])
    assert r["samples"] == 2
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["asr_short"]["attacked"] == len(attacked)
  # θ at the real vocabulary, checkpointed every iteration: [P, 77, 49408] with P ≤ population.
  shapes = [c["theta_shape"] for c in metrics["checkpoints"] if "theta_shape" in c]
  assert shapes and all(s[1:] == [77, fullshape_models.VOCAB_SIZE] for s in shapes)
  assert (workdir / "report.md").is_file()


CHECKS = {"generate": _check_generate, "sweep": _check_sweep, "latent": _check_search,
          "embedding": _check_search, "token": _check_search, "prompt": _check_search,
          "attack": _check_attack}


@pytest.mark.parametrize("job,model", CASES)
def test_job_end_to_end_at_full_shape(fullshape_root, tmp_path, job, model):
  metrics = fullshape_run.run(fullshape_root, job, model, tmp_path / "workdir")
  print(json.dumps({k: v for k, v in metrics.items() if k != "log_tail"}))
  assert metrics["rc"] == 0, metrics["log_tail"]
  CHECKS[job](tmp_path / "workdir", metrics)
