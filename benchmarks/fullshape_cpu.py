r"""Wall time and peak host memory of every job at full SD shapes on CPU (issue #25 item 2).

  python benchmarks/fullshape_cpu.py --root /tmp/fullshape --out docs/results/fullshape_cpu
  python benchmarks/fullshape_cpu.py --cases attack,sd21 --cases generate,sd15 ...

Builds the full-shape random checkpoints under --root unless they are there
(tests/fullshape_models.py), runs each job × model through its real launcher in a subprocess of
its own (tests/fullshape_run.py: wall time, the child's ru_maxrss, each checkpoint write's time
and size) with the run sizes of tests/fullshape_config.py (64² images, 2 steps), and writes
<out>.json after every job (a crash keeps the jobs before it) and <out>.md at the end. The
machine's load average is recorded beside each job: on a shared machine wall times are the
machine's, not the job's alone.
"""

import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys

from absl import app
from absl import flags

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

# pylint: disable=g-import-not-at-top,wrong-import-position
import fullshape_config
import fullshape_models
import fullshape_run
from jaxdiffattack import io
# pylint: enable=g-import-not-at-top,wrong-import-position

_ROOT = flags.DEFINE_string("root", "/tmp/fullshape", "Checkpoints (built if missing).")
_WORK = flags.DEFINE_string("work", "/tmp/fullshape_runs", "Workdirs of the jobs.")
_OUT = flags.DEFINE_string("out", "docs/results/fullshape_cpu", "Output path without suffix.")
_CASES = flags.DEFINE_multi_string("cases", None, "job,model pairs (default: all).")
_UPDATE = flags.DEFINE_bool("update", False, "Keep <out>.json's other jobs: replace only the "
                             "(job, model) pairs run now (each job keeps its own date and git).")
_CHECKPOINT_PROMPTS = flags.DEFINE_multi_integer(
    "checkpoint_prompts", [1, 4], "ATM populations whose checkpoint write is timed alone.")


def checkpoint_benchmark(prompts: int, repeats: int = 3) -> dict:
  """The ATM checkpoint at the real vocabulary, alone: θ [P, 77, 49408] float32 and its Adam
  state, written by runs.write_checkpoint exactly as attacks/job.py lays the payload out."""
  # pylint: disable=g-import-not-at-top
  import time
  import flax
  import jax
  import numpy as np
  import optax
  from jaxdiffattack import runs
  # pylint: enable=g-import-not-at-top
  theta = np.random.default_rng(0).standard_normal(
      (prompts, fullshape_models.MAX_LENGTH, fullshape_models.VOCAB_SIZE)).astype(np.float32)
  opt_state = jax.tree_util.tree_map(np.asarray, optax.adam(0.3).init(theta))
  payload = {"config_hash": "0" * 16, "set": "short", "group": 0, "curves": {},
             "state": flax.serialization.to_state_dict(
                 {"logits": theta, "opt_state": opt_state, "iteration": np.int32(1)})}
  path = pathlib.Path(_WORK.value) / f"checkpoint_{prompts}.msgpack"
  path.parent.mkdir(parents=True, exist_ok=True)
  writes = []
  for _ in range(repeats):
    start = time.perf_counter()
    runs.write_checkpoint(path, payload)
    writes.append(time.perf_counter() - start)
  start = time.perf_counter()
  runs.read_checkpoint(path)
  read = time.perf_counter() - start
  size = path.stat().st_size
  path.unlink()
  return {"prompts": prompts, "bytes": size, "write_s": [round(w, 2) for w in writes],
          "read_s": round(read, 2), "load_avg": os.getloadavg()[0]}


def _machine() -> dict:
  cpu = next((line.split(":", 1)[1].strip() for line in
              pathlib.Path("/proc/cpuinfo").read_text().splitlines()
              if line.startswith("model name")), platform.processor())
  mem = next(int(line.split()[1]) for line in pathlib.Path("/proc/meminfo").read_text(
  ).splitlines() if line.startswith("MemTotal"))
  return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem / 2**20, 1),
          "python": platform.python_version()}


def _versions() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import flax  # pylint: disable=g-import-not-at-top
  return {"jax": jax.__version__, "flax": flax.__version__}


def write_markdown(path: pathlib.Path, result: dict) -> None:
  lines = [
      "# Every job at full SD shapes on CPU (random weights)", "",
      f"Command: `{result['command']}`  ", f"Date: {result['date']}, git {result['git']}  ",
      f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
      f"{result['machine']['memory_gb']} GB; jax {result['versions']['jax']}  ",
      f"Run sizes: {result['run_sizes']}", "",
      "Wall time includes the child process's start, model loading and XLA compilation (most of "
      "it at these sizes). The load average is the machine's (1-minute, at the job's start and "
      "end): the machine was shared with other jobs.", "",
      "| job | model | exit | wall (s) | peak host memory (GB) | checkpoints: count, mean write (s), "
      "size (MB) | θ | load avg |",
      "|---|---|---|---|---|---|---|---|"]
  for r in result["jobs"]:
    cps = r["checkpoints"]
    timed = [c["seconds"] for c in cps if c.get("seconds") is not None]
    cp = (f"{len(cps)}, {sum(timed) / len(timed):.2f}" if timed else f"{len(cps)}, –") + (
        f", {max(c['bytes'] for c in cps) / 1e6:.1f}") if cps else "–"
    theta = next((c["theta_shape"] for c in cps if "theta_shape" in c), None)
    lines.append(f"| {r['job']} | {r['model']} | {r['rc']} | {r['wall_s']:.0f} | "
                 f"{r['peak_rss_mb'] / 1024:.1f} | {cp} | {theta or '–'} | "
                 f"{r['load_start']:.0f} → {r['load_end']:.0f} |")
  notes = [f"- {r['job']} {r['model']}: {r['note']}" for r in result["jobs"] if r.get("note")]
  notes += [f"- {r['job']} {r['model']} failed: `{r['error'].splitlines()[-1][:200]}`"
            for r in result["jobs"] if r.get("rc") and r.get("error")]
  if notes:
    lines += ["", "Notes:", ""] + notes
  lines += ["", "ATM checkpoint alone (θ [P, 77, 49408] float32 + Adam state, "
            "runs.write_checkpoint):", "", "| prompts P | size (MB) | write (s) | read (s) |",
            "|---|---|---|---|"]
  for c in result.get("atm_checkpoint", []):
    lines.append(f"| {c['prompts']} | {c['bytes'] / 1e6:.1f} | "
                 f"{', '.join(map(str, c['write_s']))} | {c['read_s']} |")
  io.atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def main(argv):
  del argv
  root = pathlib.Path(_ROOT.value)
  cases = [tuple(c.split(",")) for c in (_CASES.value or [])] or [
      (j, m) for m in fullshape_config.MODELS for j in fullshape_config.JOBS]
  models = sorted({m for _, m in cases})
  missing = [m for m in models if not (root / m / "unet").is_dir()]
  if missing or not (root / "scorers" / "resnet50").is_dir():
    fullshape_models.build_all(root, missing)
  result = {
      "command": "python " + " ".join(sys.argv),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip(),
      "machine": _machine(), "versions": _versions(),
      "run_sizes": (f"{fullshape_config.NUM_STEPS} DDIM steps, 64² images (8² latents), "
                    f"{fullshape_config.NUM_CLASSES} ImageNet classes × 80 CLIP templates; "
                    "tests/fullshape_config.py"),
      "jobs": []}
  out = pathlib.Path(_OUT.value)
  if _UPDATE.value and out.with_suffix(".json").exists():
    old = json.loads(out.with_suffix(".json").read_text())
    result["jobs"] = [j for j in old["jobs"] if (j["job"], j["model"]) not in set(cases)]
    result["atm_checkpoint"] = old.get("atm_checkpoint", [])
    result["command"] = old["command"] + " ; " + result["command"]
  if _CHECKPOINT_PROMPTS.value:
    result["atm_checkpoint"] = [checkpoint_benchmark(p) for p in _CHECKPOINT_PROMPTS.value]
  for job, model in cases:
    load_start = os.getloadavg()[0]
    metrics = fullshape_run.run(root, job, model, pathlib.Path(_WORK.value) / f"{job}_{model}")
    metrics.update(load_start=load_start, load_end=os.getloadavg()[0], git=result["git"],
                   date=datetime.datetime.now(datetime.timezone.utc).isoformat(
                       timespec="seconds"))
    tail = metrics.pop("log_tail")
    if metrics["rc"]:
      metrics["error"] = tail[-600:]
    result["jobs"].append(metrics)
    print(json.dumps(metrics), flush=True)
    io.write_json(out.with_suffix(".json"), result)
  write_markdown(out.with_suffix(".md"), result)


if __name__ == "__main__":
  app.run(main)
