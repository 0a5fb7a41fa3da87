"""Multi-host runs (jaxdiffattack.distributed, launch/local_multiprocess.py) on CPU.

The tiny sweep, latent search (Sep-CMA-ES) and ATM attack (Adam) run as 2 processes × 4 fake CPU
devices (a localhost coordinator, gloo collectives) and as 1 process × 8 fake devices: the same
8-device mesh, so every device computes the same shapes and every file of every job is compared
(tests/same_files.py: the same names, the same bytes but for the wall-clock fields of
`runs.WALL_CLOCK_FIELDS`, the one table the kill battery uses too). Process 1 fills its 4 devices from its own host copy of
the search population (evosax ask/tell), the prompts and the keys, so equal results also mean
equal host-side state on both processes. Only process 0 may write: a Python audit hook in each
worker records every file it opens for writing, renames or removes under the workdir
(distributed_worker.py).
"""

import os
import pathlib
import subprocess
import sys

import pytest

from attacks_job_test import prompt_file  # noqa: F401  pylint: disable=unused-import
from attacks_job_test import vision_dirs  # noqa: F401  pylint: disable=unused-import
from jaxdiffattack import distributed
from jaxdiffattack import io
from jaxdiffattack.errors import UserError
from jax_only import JAX_ONLY
from same_files import assert_same_files

pytestmark = pytest.mark.slow

_ROOT = pathlib.Path(__file__).resolve().parent.parent
LAUNCHER = _ROOT / "launch" / "local_multiprocess.py"
WORKER = pathlib.Path(__file__).with_name("distributed_worker.py")
RUNS = {"two": (2, 4), "one": (1, 8)}   # name: (processes, fake devices per process)


def _env():
  env = dict(os.environ, PYTHONPATH=str(_ROOT), **JAX_ONLY)
  env.pop("XLA_FLAGS", None)
  return env


@pytest.fixture(scope="module")
def workdirs(tiny_sd_dirs, vision_dirs, prompt_file, tmp_path_factory):  # noqa: F811
  """{"two": workdir, "one": workdir}: both runs, started together."""
  root = tmp_path_factory.mktemp("distributed")
  args = [str(tiny_sd_dirs[1]), str(vision_dirs["clip"].parent), str(prompt_file)]
  logs = {name: root / f"{name}.log" for name in RUNS}   # files: a full pipe would stall a run
  procs = {name: subprocess.Popen(
      [sys.executable, str(LAUNCHER), f"--num_processes={n}", f"--devices_per_process={k}",
       "--", str(WORKER), *args, str(root / name)], env=_env(), stdout=logs[name].open("w"),
      stderr=subprocess.STDOUT) for name, (n, k) in RUNS.items()}
  for name, proc in procs.items():
    proc.wait(timeout=1200)
    out = logs[name].read_text()
    assert proc.returncode == 0, f"{name}: {out[-4000:]}"
    assert (f"process {RUNS[name][0] - 1} of {RUNS[name][0]}: {RUNS[name][1]} local devices, "
            "8 in all") in out
  return {name: root / name for name in RUNS}


def _files(root: pathlib.Path) -> set[str]:
  return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_two_processes_write_the_files_of_one(workdirs):
  """Every file of every job, compared as the kill battery compares them: the same names and
  bytes, wall-clock fields (`runs.WALL_CLOCK_FIELDS`) aside."""
  two, one = workdirs["two"], workdirs["one"]
  assert sorted(p.name for p in two.iterdir()) == ["attack", "search", "sweep"]
  rows = io.read_jsonl(two / "attack" / "results.jsonl")
  assert [r["attacked"] for r in rows] == [True, True, False, True]   # the prompt_file labels
  assert len(io.read_jsonl(two / "search" / "results.jsonl")) == 3    # 3 targets
  assert len(io.read_csv(two / "sweep" / "members.csv")) == 24
  compared = sum(assert_same_files(one / job, two / job) for job in ("sweep", "search", "attack"))
  assert compared == len(_files(one))
  # Not vacuous: each job wrote its outputs (the tiny runs write 24, 48 and 19 files).
  assert [len(_files(one / job)) >= 15 for job in ("sweep", "search", "attack")] == [True] * 3


def test_only_process_zero_writes(workdirs):
  """Process 1 writes nothing under its workdir; process 0 writes (renames into place) the same
  files as the single process."""
  two, one = workdirs["two"], workdirs["one"]
  written = {name: pathlib.Path(f"{root}.writes.p0").read_text().splitlines()
             for name, root in workdirs.items()}
  assert pathlib.Path(f"{two}.writes.p1").read_text() == ""
  published = lambda paths: {p for p in paths if not pathlib.Path(p).name.startswith(".")}
  assert published(written["two"]) == published(written["one"]) == _files(one)
  assert "search/checkpoint_Sep_CMA_ES.msgpack" in published(written["two"])


def test_workdir_not_shared_is_refused(tmp_path):
  """Two processes whose relative --workdir "w" lands in different directories (as a local disk
  on each host would): every process stops with one line when the job writes its config.json
  (`runs.write_config`, which every job calls before any other output)."""
  script = ("import os, sys\n"
            "import ml_collections\n"
            "from jaxdiffattack import distributed, runs\n"
            "from jaxdiffattack.errors import UserError\n"
            "distributed.initialize()\n"
            "import jax\n"
            "os.makedirs(f'p{jax.process_index()}'); os.chdir(f'p{jax.process_index()}')\n"
            "try:\n"
            "  runs.write_config(ml_collections.ConfigDict({'seed': 0}), 'w')\n"
            "except UserError as e:\n"
            "  sys.exit(f'error: {e}')\n")
  proc = subprocess.run([sys.executable, str(LAUNCHER), "--num_processes=2", "--", sys.executable,
                         "-c", script], env=_env(), cwd=tmp_path, capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode == 1, proc.stdout[-3000:]
  errors = [line for line in proc.stdout.splitlines() if "error: " in line]
  assert sorted(line[:5] for line in errors) == ["[p0] ", "[p1] "], proc.stdout[-3000:]
  assert errors[0].endswith("workdir w is not shared by all processes (process [1] cannot see "
                            "w/config.json as written by process 0): put --workdir on a "
                            "filesystem every host mounts")
  assert (tmp_path / "p0" / "w" / "config.json").exists()
  assert not (tmp_path / "p1" / "w" / "config.json").exists()


def test_multiprocess_environment_detection():
  assert distributed.multiprocess_env({}) is None
  assert distributed.multiprocess_env({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}) == (
      "JAX_COORDINATOR_ADDRESS")
  assert distributed.multiprocess_env({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None
  assert distributed.multiprocess_env({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}) == "SLURM"
  assert distributed.multiprocess_env({"TPU_WORKER_HOSTNAMES": "t-0"}) is None
  assert distributed.multiprocess_env({"TPU_WORKER_HOSTNAMES": "t-0,t-1"}) == "Cloud TPU"
  assert not distributed.initialize("off", "127.0.0.1:1", 2, 0)
  with pytest.raises(UserError, match="--distributed='always' is invalid: use one of auto"):
    distributed.initialize("always")


def test_launcher_without_coordinator_is_a_one_line_error(tmp_path):
  proc = subprocess.run(
      [sys.executable, str(_ROOT / "launch" / "sweep.py"), "--config",
       str(_ROOT / "configs" / "shift_sweep.py") + ":toy", "--workdir", str(tmp_path / "w"),
       "--distributed=on", "--num_processes=2"],
      env={k: v for k, v in _env().items() if not k.startswith(("JAX_", "SLURM_"))},
      capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "error: --distributed=on: coordinator_address should be defined"), proc.stderr[-2000:]
  assert not (tmp_path / "w").exists()


def test_local_multiprocess_stops_all_at_the_first_failure():
  """Process 1 exits with 3 while process 0 would sleep for 10 minutes: the helper returns 3 at
  once, process 0 is stopped, and every line is prefixed with its process."""
  script = ("import os, sys, time\n"
            "i = int(os.environ['JAX_PROCESS_ID'])\n"
            "print('rank', i, 'of', os.environ['JAX_NUM_PROCESSES'], flush=True)\n"
            "sys.exit(3) if i == 1 else time.sleep(600)\n")
  proc = subprocess.run([sys.executable, str(LAUNCHER), "--num_processes=2", "--", sys.executable,
                         "-c", script], env=_env(), capture_output=True, text=True, timeout=60,
                        check=False)
  assert proc.returncode == 3
  assert sorted(proc.stdout.splitlines()) == ["[p0] rank 0 of 2", "[p1] rank 1 of 2"]


def test_toy_training_refuses_a_multiprocess_start(tmp_path):
  """The toy world trains in one process: started as 2 processes, each says so in one line and
  nothing is written."""
  proc = subprocess.run(
      [sys.executable, str(LAUNCHER), "--num_processes=2", "--", str(_ROOT / "launch" /
       "train_toy.py"), "--config", str(_ROOT / "configs" / "train_toy.py") + ":smoke",
       "--workdir", str(tmp_path / "w")],
      env=_env(), capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert "error: launch/train_toy.py runs in one process" in proc.stdout + proc.stderr
  assert not (tmp_path / "w").exists()


def test_a_failing_write_on_process_zero_stops_every_process_at_once(tmp_path):
  """Process 0's write fails (the output's parent is a regular file): process 1, waiting for that
  write, raises the same one-line error within seconds instead of hanging at a barrier until
  JAX's coordination timeout. Each process records its error and the seconds it took in a file
  of its own; process 0 then waits for process 1's (up to 60 s) before exiting, since the local
  launcher stops every process at the first failure."""
  script = ("import os, sys, time\n"
            "from jaxdiffattack import distributed, io\n"
            "from jaxdiffattack.errors import UserError\n"
            "distributed.initialize()\n"
            "import jax\n"
            "i = jax.process_index()\n"
            "open('blocker', 'w').close() if i == 0 else None\n"
            "distributed.writer_outcome('', 'ready')\n"
            "start = time.monotonic()\n"
            "try:\n"
            "  io.write_json('blocker/out.json', {'a': 1})\n"
            "except UserError as e:\n"
            "  open(f'err{i}.tmp', 'w').write(f'{time.monotonic() - start:.3f} {e}')\n"
            "  os.replace(f'err{i}.tmp', f'err{i}')\n"
            "  deadline = time.monotonic() + 60\n"
            "  while i == 0 and not os.path.exists('err1') and time.monotonic() < deadline:\n"
            "    time.sleep(0.1)\n"
            "  sys.exit(f'error: {e}')\n")
  proc = subprocess.run([sys.executable, str(LAUNCHER), "--num_processes=2", "--", sys.executable,
                         "-c", script], env=_env(), cwd=tmp_path, capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode == 1, proc.stdout[-3000:]
  seconds, errors = {}, {}
  for i in (0, 1):
    took, _, errors[i] = (tmp_path / f"err{i}").read_text().partition(" ")
    seconds[i] = float(took)
  assert errors[0] == errors[1]
  assert errors[0].startswith(f"could not write blocker/out.json: ") and errors[0].endswith(
      "; nothing was written"), errors[0]
  assert seconds[1] < 10, seconds
  assert "\n" not in errors[1]
