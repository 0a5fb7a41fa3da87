"""Runs one job of the full-shape tests through its real launcher, in a subprocess of its own,
and measures it: wall time, peak host memory (the child's ru_maxrss from wait4) and every
checkpoint the job writes (time, bytes, and the shape of the ATM state's θ).

  python tests/fullshape_run.py ROOT JOB MODEL WORKDIR      # prints the metrics as JSON

In the child (`_child`), `jaxdiffattack.runs.write_checkpoint` is wrapped to time each write, then
`launch/<job>.py` runs as __main__ with `--config tests/fullshape_config.py:JOB,MODEL --workdir`.
"""

import json
import os
import pathlib
import runpy
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
LAUNCHERS = {"generate": "generate", "sweep": "sweep", "latent": "search",
             "embedding": "search", "token": "search", "prompt": "search", "attack": "attack"}


def run(root, job: str, model: str, workdir, timeout: float = 3600.0) -> dict:
  """Runs the job in a child process; returns {rc, wall_s, peak_rss_mb, checkpoints, log_tail}."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  stats = workdir.parent / f".{workdir.name}_checkpoints.json"
  env = dict(os.environ, FULLSHAPE_ROOT=str(root), FULLSHAPE_STATS=str(stats),
             PYTHONPATH=os.pathsep.join([str(REPO)] + (
                 [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
  cache = os.environ.get("JAXDIFFATTACK_TEST_CACHE")
  if cache:  # the tests' persistent compilation cache, for the child's jax too
    env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="1")
  log = workdir.parent / f".{workdir.name}.log"
  start = time.time()
  with open(log, "w") as f:
    proc = subprocess.Popen([sys.executable, __file__, "--child", job, model, str(workdir)],
                            env=env, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = start + timeout
    while True:
      pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
      if pid:
        break
      if time.time() > deadline:
        proc.kill()
        pid, status, usage = os.wait4(proc.pid, 0)
        break
      time.sleep(0.5)
  proc.returncode = os.waitstatus_to_exitcode(status)
  wall = time.time() - start
  checkpoints = json.loads(stats.read_text()) if stats.exists() else []
  return {"job": job, "model": model, "rc": proc.returncode, "wall_s": round(wall, 1),
          "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),   # Linux: KiB
          "checkpoints": checkpoints,
          "log_tail": log.read_text(errors="replace")[-3000:]}


def _child(job: str, model: str, workdir: str) -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import runs  # pylint: disable=g-import-not-at-top
  records = []
  write = runs.write_checkpoint

  def timed_write(path, payload):
    t = time.perf_counter()
    write(path, payload)
    record = {"seconds": round(time.perf_counter() - t, 3),
              "bytes": pathlib.Path(path).stat().st_size, "file": pathlib.Path(path).name}
    state = payload.get("state") if isinstance(payload.get("state"), dict) else {}
    # The attack's state inline in its job state (attacks/checkpoint.py), or (older) the state.
    logits = (state.get("arrays") or {}).get("logits") if isinstance(state.get("arrays"),
                                                                    dict) else state.get("logits")
    if logits is not None:
      record["theta_shape"] = list(np.shape(logits))
    records.append(record)
    pathlib.Path(os.environ["FULLSHAPE_STATS"]).write_text(json.dumps(records))

  runs.write_checkpoint = timed_write
  launcher = REPO / "launch" / f"{LAUNCHERS[job]}.py"
  sys.argv = [str(launcher), f"--config={REPO / 'tests' / 'fullshape_config.py'}:{job},{model}",
              f"--workdir={workdir}"]
  runpy.run_path(str(launcher), run_name="__main__")


if __name__ == "__main__":
  if sys.argv[1] == "--child":
    _child(*sys.argv[2:5])
  else:
    out = run(*sys.argv[1:5])
    print(json.dumps({k: v for k, v in out.items() if k != "log_tail"}))
    print(out["log_tail"][-1500:], file=sys.stderr)
