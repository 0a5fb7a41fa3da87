"""SIGKILL battery (issues #15, #24): every job launcher that writes a workdir (launch/sweep.py,
search.py in the latent space and with a gradient method, attack.py, analyze.py, generate.py,
train_toy.py) runs as a real subprocess on the tests' tiny models, is killed with `kill -9` at
seeded points, and is rerun on the same workdir until it finishes; then EVERY file of the workdir
must equal an uninterrupted run's: the same set of file names (hidden ones included: no debris,
nothing missing) and the same bytes, except the wall-clock fields of
`jaxdiffattack.runs.WALL_CLOCK_FIELDS`, the one table of documented exceptions (a file that differs
is compared again with those fields dropped).

Kill points per job (drawn from `numpy.random.default_rng(seed)`, printed with -s), in order, each
on the workdir the previous one left:
  1. `after_write`: deterministic, between a results write and the next checkpoint write — the
     launcher runs with `JAXDIFFATTACK_TEST_KILL_AFTER=<k>:<glob>` (jaxdiffattack/io.py), which
     sends it SIGKILL right after its k-th completed write of a results file; k is drawn among the
     results writes of the uninterrupted run (its write trace, `JAXDIFFATTACK_TEST_WRITE_TRACE`)
     that are followed by a checkpoint write;
  2. `in_write`: during the k-th checkpoint (or, without checkpoints, output) write — the launcher
     runs with `JAXDIFFATTACK_TEST_WRITE_DELAY` (each such write waits between its temp file and
     the rename) and is killed once the k-th temp file appears; the file under its final name
     must still be the previous one, whole;
  3. `wall_clock`: at a seeded time in (0.05, 0.95) × the uninterrupted run's duration after the
     start (start-up, compilation, any unit of work, a write).
By default (CI) each job takes 2 of these kills, the pair rotating with the job's place in `JOBS`
(`DEFAULT_PLANS`): sweep and attack (after_write, in_write), search_latent and analyze (in_write,
wall_clock), search_gradient and generate (after_write, wall_clock); train_toy takes the first
only (each of its starts re-evaluates its finished stages, minutes on busy cores). So every kind
hits 4 or 5 jobs, the search (latent + gradient) takes all three, and each job takes at least one
deterministic kill, first (on the fresh run, where it is sure to land). With `--kill-points=N` (or
`JAXDIFFATTACK_KILL_POINTS=N`) each job takes N kills, cycling through the three kinds from
after_write (N=3: all three on every job; a kill that would land after the run ended is counted as
such, and the test moves on). After every kill each file under a final name parses in full.

What each job guarantees (the same check for all): resumed == uninterrupted. Jobs with
checkpoints (sweep, search, attack, train_toy: checkpoint files; analyze: one `stages/*.json` per
finished analysis) continue from the last one; generate has none and redoes its work on a rerun,
which writes the same files.
"""

import csv
import dataclasses
import fnmatch
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import flax.serialization
import numpy as np
import pytest
from PIL import Image

from attacks_job_test import prompt_file  # noqa: F401  pylint: disable=unused-import  # fixture
from attacks_job_test import vision_dirs  # noqa: F401  pylint: disable=unused-import  # fixture
from jax_only import JAX_ONLY
from same_files import assert_same_files

pytestmark = pytest.mark.slow

_ROOT = pathlib.Path(__file__).resolve().parent.parent
_TESTS = _ROOT / "tests"
_DELAY = 0.4     # seconds each delayed write waits between its temp file and the rename
KINDS = ("after_write", "in_write", "wall_clock")
# The default 2 kills of a job: the pair rotates with the job's index in JOBS, so each kind is
# taken by a third of the jobs and every job still starts with a deterministic kill.
DEFAULT_PLANS = (("after_write", "in_write"), ("in_write", "wall_clock"),
                 ("after_write", "wall_clock"))


def kill_points(request, job) -> int:
  """Kills per job: --kill-points=N (conftest.py), else $JAXDIFFATTACK_KILL_POINTS, else the
  job's default (2; train_toy 1)."""
  value = request.config.getoption("--kill-points", None) or os.environ.get(
      "JAXDIFFATTACK_KILL_POINTS") or job.points
  return int(value)


@dataclasses.dataclass(frozen=True)
class Job:
  """A launcher, its tiny config (the body of `get_config`, ending in `c = ...`; `{sd}`, `{vision}`
  and `{prompts}` are filled in) and the globs (file names) of its checkpoint and results writes."""
  script: str
  config: str
  checkpoints: str      # what a resume continues from
  results: str          # results written between checkpoints ("*": any write, for a job that
                        # writes its results only after its last checkpoint)
  points: int = 2       # default kills (CI budget); --kill-points=N sets every job's


JOBS = {
    "sweep": Job("sweep.py", """
from sweep_test import tiny_config
c = tiny_config({sd!r})
c.unit = 3                    # 8 checkpoints over the 24 members
c.trajectory.prompts = ()
""", checkpoints="checkpoint*.msgpack", results="*"),
    "search_latent": Job("search.py", """
from search_multidevice_worker import tiny_config
c = tiny_config("latent", {sd!r})
c.stop_after_failures = 0     # every generation runs: 3 targets x 4 generations x 2 methods
""", checkpoints="checkpoint*.msgpack", results="failure_*"),   # a method's, before the next
    "search_gradient": Job("search.py", """
from search_multidevice_worker import tiny_config
c = tiny_config("embedding", {sd!r})
c.methods = ("adam", "random")   # gradients through the sampler; then a second method
c.num_generations = 3
c.stop_after_failures = 0
""", checkpoints="checkpoint*.msgpack", results="failure_*"),
    "attack": Job("attack.py", """
from attacks_job_test import tiny_config
c = tiny_config({sd!r}, {{k: pathlib.Path(v) for k, v in {vision!r}.items()}},
                pathlib.Path({prompts!r}))
c.checkpoint_every = 1        # 4 checkpoints per attacked group of 2 prompts
""", checkpoints="checkpoint*", results="results.jsonl"),
    "analyze": Job("analyze.py", """
c = _config("analysis", "toy,smoke")
c.num_steps = 4
c.brittleness.alphas = (0.6,)
""", checkpoints="*.json", results="*.json"),     # stages/<analysis>.json, one per analysis
    "generate": Job("generate.py", """
c = _config("generate", "")
c.model = {sd!r}
c.prompts = ("a red cube", "a blue ball")
c.images_per_prompt = 3
c.num_steps = 3
""", checkpoints="*.png", results="*.png"),       # no checkpoint: the images are its steps
    "train_toy": Job("train_toy.py", """
c = _config("train_toy", "smoke")
""", checkpoints="*.msgpack", results="*",        # checkpoints/<stage>.msgpack; any write
        points=1),    # every start re-evaluates the finished stages: minutes a launch under load
}


def _write_config(path: pathlib.Path, body: str) -> pathlib.Path:
  """A config file for `--config` that builds a tiny config (`body` ends in `c = ...`)."""
  path.write_text(
      f"import importlib.util, pathlib, sys\nsys.path[:0] = [{str(_TESTS)!r}, "
      f"{str(_ROOT / 'configs')!r}]\n\n\n"
      "def _config(name, arg):\n"
      f"  spec = importlib.util.spec_from_file_location(name, {str(_ROOT / 'configs')!r} + "
      "f'/{name}.py')\n"
      "  module = importlib.util.module_from_spec(spec)\n"
      "  spec.loader.exec_module(module)\n"
      "  return module.get_config(arg or None)\n\n\n"
      "def get_config():\n" + "".join(f"  {line}\n" for line in body.strip().splitlines()) +
      "  return c\n")
  return path


class Launch:
  """One launcher subprocess, watched for the temp files of its delayed writes."""

  def __init__(self, job: Job, config_path, workdir, log, processes: int = 1, **env):
    """`processes` > 1: the job runs as that many processes of one multi-host run (4 fake CPU
    devices each) under launch/local_multiprocess.py."""
    self.workdir = pathlib.Path(workdir)
    # The session's compilation cache reaches the launcher through $JAX_COMPILATION_CACHE_DIR
    # (conftest.py); USE_TORCH=0: tests/jax_only.py.
    env = dict(os.environ, PYTHONPATH=str(_ROOT), JAX_PLATFORMS="cpu", **JAX_ONLY, **env)
    for name in ("XLA_FLAGS", "JAX_COORDINATOR_ADDRESS"):
      env.pop(name, None)
    self.log = open(log, "ab")  # pylint: disable=consider-using-with
    self.start = time.monotonic()
    prefix = [str(_ROOT / "launch" / "local_multiprocess.py"), f"--num_processes={processes}",
              "--devices_per_process=4", "--"] if processes > 1 else []
    self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, *prefix, str(_ROOT / "launch" / job.script), f"--config={config_path}",
         f"--workdir={workdir}"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
    self.seen = []      # temp files of delayed writes seen, in order
    self.tmp_glob = f".{job.checkpoints}.*.tmp"

  def poll(self):
    """Records new temp files of delayed writes; returns the ones present now."""
    present = sorted(str(p) for p in self.workdir.rglob(self.tmp_glob)) if (
        self.workdir.exists()) else []
    self.seen.extend(name for name in present if name not in self.seen)
    return present

  def wait_until(self, condition, timeout=600):
    """Polls every 5 ms until `condition()` holds (True) or the process ends (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      self.poll()
      if condition():
        return True
      if self.proc.poll() is not None:
        return False
      time.sleep(0.005)
    raise AssertionError(f"launcher still running after {timeout}s")

  def kill(self, processes=None):
    """SIGKILL to the launcher, or (multi-process) to the job processes of index `processes`
    (launch/local_multiprocess.py then stops the others and exits)."""
    if processes is None:
      self.proc.send_signal(signal.SIGKILL)
    else:
      children = pathlib.Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
      pids = [int(pid) for pid in children.read_text().split()]
      for i in processes:
        os.kill(pids[i], signal.SIGKILL)
    self.proc.wait(60)
    self.log.close()

  def finish(self) -> int:
    """Waits for the end; returns the exit code (-9: killed by its own test hook)."""
    code = self.proc.wait(1800)
    self.log.close()
    return code


def _tail(log) -> str:
  return pathlib.Path(log).read_text(errors="replace")[-3000:]


def _check_whole(workdir) -> None:
  """Every file under a final name parses in full (hidden `.<name>.*.tmp` files and hidden
  directories, e.g. train_toy's `.export_*`, are debris of a cut write: nothing reads them, and
  the next start removes them)."""
  root = pathlib.Path(workdir)
  for path in sorted(root.rglob("*")):
    if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
      continue
    suffix = path.suffix
    if suffix == ".json":
      json.loads(path.read_text())
    elif suffix == ".jsonl":
      text = path.read_text()
      assert text == "" or text.endswith("\n"), path
      for line in text.splitlines():
        json.loads(line)
    elif suffix == ".csv":
      with open(path, newline="") as f:
        rows = list(csv.reader(f))
      assert rows and all(len(r) == len(rows[0]) for r in rows), path
    elif suffix == ".msgpack":
      flax.serialization.msgpack_restore(path.read_bytes())
    elif suffix == ".png":
      with Image.open(path) as image:
        image.load()
    elif suffix == ".npy":
      np.load(path)
    elif suffix in (".md", ".txt"):
      path.read_text()
    elif suffix == ".html":      # index.html: whole pages only
      assert path.read_text().rstrip().endswith("</html>"), path
    elif suffix == ".safetensors":
      import safetensors.numpy  # pylint: disable=g-import-not-at-top
      safetensors.numpy.load_file(path)


def _trace(trace_path, workdir) -> list[str]:
  """The workdir-relative paths of a write trace, in order."""
  root = str(pathlib.Path(workdir).resolve())
  return [os.path.relpath(os.path.abspath(line), root)
          for line in pathlib.Path(trace_path).read_text().splitlines()]


def _after_write_k(trace, job, rng) -> tuple[int, int]:
  """(k, n): the k-th results write (counted like the hook, by file name) is followed by n >= 1
  checkpoint writes in the uninterrupted run's `trace`."""
  name = lambda rel: pathlib.PurePath(rel).name
  count, candidates = 0, []
  for i, rel in enumerate(trace):
    if fnmatch.fnmatch(name(rel), job.results):
      count += 1
      after = sum(fnmatch.fnmatch(name(r), job.checkpoints) for r in trace[i + 1:])
      if after:
        candidates.append((count, after))
  assert candidates, f"no write of {job.results} before a checkpoint in the uninterrupted run"
  return candidates[int(rng.integers(len(candidates)))]


def kill_kinds(name: str, points: int) -> tuple[str, ...]:
  """The kinds of a job's `points` kills, in order: the job's pair of `DEFAULT_PLANS` for 2,
  else KINDS cycled from after_write."""
  if points == 2:
    return DEFAULT_PLANS[list(JOBS).index(name) % len(DEFAULT_PLANS)]
  return tuple(KINDS[i % len(KINDS)] for i in range(points))


def run_battery(name: str, tmp_path, fixtures: dict, points: int, seed: int):
  """The uninterrupted run, then `points` seeded kills (kinds: `kill_kinds`) and a final resume,
  all in the same workdir path (a job may write its own path into reports); every file
  compared."""
  job = JOBS[name]
  rng = np.random.default_rng(seed)
  config = _write_config(tmp_path / f"{name}_config.py", job.config.format(**fixtures))
  workdir, log, trace = tmp_path / "run", tmp_path / f"{name}.log", tmp_path / "trace"
  start = time.monotonic()
  full = Launch(job, config, workdir, log, JAXDIFFATTACK_TEST_WRITE_TRACE=str(trace))
  assert full.finish() == 0, _tail(log)
  full_s = time.monotonic() - start
  writes = _trace(trace, workdir)
  delayed = sum(fnmatch.fnmatch(pathlib.PurePath(w).name, job.checkpoints) for w in writes)
  workdir.rename(tmp_path / "full")
  print(f"{name}: uninterrupted {full_s:.1f} s, {len(writes)} writes ({delayed} of "
        f"{job.checkpoints})")
  assert delayed >= 2, f"only {delayed} writes of {job.checkpoints}: too few to place the kills"

  landed, left = [], 2     # left: checkpoint writes known to be left for the next in_write
  for i, kind in enumerate(kill_kinds(name, points)):
    if kind == "after_write":
      k, left = _after_write_k(writes, job, rng) if i == 0 else (int(rng.integers(1, 3)), 1)
      run = Launch(job, config, workdir, log, JAXDIFFATTACK_TEST_KILL_AFTER=f"{k}:{job.results}")
      code = run.finish()
      assert code in (0, -signal.SIGKILL), _tail(log)
      landed.append((kind, k, code == -signal.SIGKILL))
    elif kind == "in_write":
      k = int(rng.integers(1, min(left, 2) + 1))
      run = Launch(job, config, workdir, log,
                   JAXDIFFATTACK_TEST_WRITE_DELAY=f"{_DELAY}:{job.checkpoints}")
      hit = run.wait_until(lambda: len(run.seen) >= k)
      finals = {p: p.read_bytes() for p in workdir.rglob(job.checkpoints)
                if p.is_file() and not p.name.startswith(".")}
      if hit:
        run.kill()
        cut = pathlib.Path(run.seen[k - 1])
        assert cut.exists(), f"the kill missed the write of {cut.name}"
        # The final names hold what they held before the cut write: whole previous files.
        assert {p: p.read_bytes() for p in finals if p.exists()} == finals
      else:
        assert run.finish() == 0, _tail(log)
      landed.append((kind, k, hit))
    else:
      at = float(rng.uniform(0.05, 0.95) * full_s)
      run = Launch(job, config, workdir, log)
      hit = run.wait_until(lambda: time.monotonic() - run.start >= at)
      if hit:
        run.kill()
      else:
        assert run.finish() == 0, _tail(log)
      landed.append((kind, round(at, 2), hit))
    _check_whole(workdir)
  print(f"{name}: kills (kind, k or seconds, landed): {landed}")
  # The default plan's deterministic kills must land (else the test tests nothing).
  assert all(hit for kind, _, hit in landed[:2] if kind != "wall_clock"), landed

  final = Launch(job, config, workdir, log)
  assert final.finish() == 0, _tail(log)
  compared = assert_same_files(tmp_path / "full", workdir)
  print(f"{name}: {compared} files equal; battery {time.monotonic() - start:.1f} s")
  return tmp_path / "full", workdir


def _fixtures(name, request) -> dict:
  """The fixture paths a job's config names (the attack's tiny vision models and prompts only
  where needed: building them costs compilations)."""
  values = {"sd": str(request.getfixturevalue("tiny_sd_dirs")[1]), "vision": {}, "prompts": ""}
  if "{vision" in JOBS[name].config:
    values["vision"] = {k: str(v) for k, v in request.getfixturevalue("vision_dirs").items()}
    values["prompts"] = str(request.getfixturevalue("prompt_file"))
  return values


@pytest.mark.parametrize("name", list(JOBS))
def test_killed_and_resumed_equals_uninterrupted(name, tmp_path, request):
  run_battery(name, tmp_path, _fixtures(name, request), kill_points(request, JOBS[name]),
              seed=list(JOBS).index(name) + 1)


def test_two_processes_killed_and_resumed_equal_uninterrupted(tmp_path, request):
  """The latent search as 2 processes × 4 fake devices (launch/local_multiprocess.py): killed
  three times — process 0 by its own test hook right after a seeded results write (process 1 is
  then stopped by the launcher), both processes with -9 at a seeded time, process 1 alone with -9
  at a seeded time — and resumed as 2 processes; every file equals the uninterrupted 2-process
  run's (which tests/distributed_test.py compares with 1 process)."""
  job, rng = JOBS["search_latent"], np.random.default_rng(10)
  config = _write_config(tmp_path / "config.py", job.config.format(**_fixtures(
      "search_latent", request)))
  workdir, log, trace = tmp_path / "run", tmp_path / "two.log", tmp_path / "trace"
  start = time.monotonic()
  full = Launch(job, config, workdir, log, processes=2,
                JAXDIFFATTACK_TEST_WRITE_TRACE=str(trace))
  assert full.finish() == 0, _tail(log)
  full_s = time.monotonic() - start
  k, _ = _after_write_k(_trace(trace, workdir), job, rng)
  workdir.rename(tmp_path / "full")

  run = Launch(job, config, workdir, log, processes=2,
               JAXDIFFATTACK_TEST_KILL_AFTER=f"{k}:{job.results}")
  assert run.finish() == 128 + signal.SIGKILL, _tail(log)     # process 0's exit, passed on
  _check_whole(workdir)
  landed = [("after_write, process 0", k, True)]
  for processes in ((0, 1), (1,)):
    at = float(rng.uniform(0.05, 0.95) * full_s)
    run = Launch(job, config, workdir, log, processes=2)
    hit = run.wait_until(lambda: time.monotonic() - run.start >= at)
    if hit:
      run.kill(processes)
    else:
      assert run.finish() == 0, _tail(log)
    landed.append((f"wall_clock, processes {processes}", round(at, 2), hit))
    _check_whole(workdir)
  print(f"two processes: uninterrupted {full_s:.1f} s; kills {landed}")
  assert Launch(job, config, workdir, log, processes=2).finish() == 0, _tail(log)
  compared = assert_same_files(tmp_path / "full", workdir)
  print(f"two processes: {compared} files equal; {time.monotonic() - start:.1f} s")


def test_default_plan_covers_every_kind():
  """The default (CI) plan: every job starts with a deterministic kill, every kind is taken by
  at least 4 jobs, the search (latent + gradient) takes all three, and N=3 is every kind."""
  plans = {name: kill_kinds(name, job.points) for name, job in JOBS.items()}
  assert all(plan[0] != "wall_clock" and len(set(plan)) == len(plan) for plan in plans.values())
  taken = lambda kind: sum(kind in plan for plan in plans.values())
  assert {kind: taken(kind) >= 4 for kind in KINDS} == dict.fromkeys(KINDS, True), plans
  assert set(plans["search_latent"] + plans["search_gradient"]) == set(KINDS)
  assert plans["train_toy"] == ("after_write",)
  assert all(kill_kinds(name, 3) == KINDS for name in JOBS)
