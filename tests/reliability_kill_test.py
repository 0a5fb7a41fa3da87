"""SIGKILL battery (issue #15): the sweep, the search and the attack launchers (launch/*.py, real
subprocesses on the tiny test models) are killed with SIGKILL at three seeded points each, then
resumed until they finish; the final results must equal an uninterrupted run's, byte for byte.

Kill points (drawn from `numpy.random.default_rng(seed)`, printed with -s):
  1. wall clock: a seeded fraction (0.2–0.9) of the uninterrupted run's time to its first
     checkpoint (start-up, compilation or the first unit of work; the time itself depends on
     the machine's load, the step-based points below do not);
  2. DURING the k-th checkpoint write: the launcher runs with `JAXDIFFATTACK_TEST_WRITE_DELAY`
     (io.atomic_write_bytes sleeps between writing the temp file and the rename) and is killed
     once the k-th checkpoint temp file appears; the test checks the temp file is still there
     (the write was cut) and that the checkpoint under its final name is the previous one, whole;
  3. by step: a random delay after the k-th checkpoint of the next run has been renamed in place.
After every kill every file under a final name (JSON, JSONL, CSV, msgpack, PNG, NPY, Markdown)
must parse in full; hidden `.<name>.*.tmp` files are the only debris allowed.
"""

import csv
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

from attacks_job_test import prompt_file  # pylint: disable=unused-import  # fixture
from attacks_job_test import vision_dirs  # pylint: disable=unused-import  # fixture

pytestmark = pytest.mark.slow

_ROOT = pathlib.Path(__file__).resolve().parent.parent
_TESTS = _ROOT / "tests"
_DELAY = 0.4     # seconds each checkpoint write waits between its temp file and the rename
_TMP_GLOB = ".checkpoint*.tmp"


def _write_config(tmp_path, body: str) -> pathlib.Path:
  """A config file for `--config` that builds the tests' tiny config (`body` ends in `c = ...`)."""
  path = tmp_path / "battery_config.py"
  path.write_text(f"import pathlib, sys\nsys.path[:0] = [{str(_TESTS)!r}, "
                  f"{str(_ROOT / 'configs')!r}]\n\n\ndef get_config():\n" +
                  "".join(f"  {line}\n" for line in body.strip().splitlines()) + "  return c\n")
  return path


class Launch:
  """One launcher subprocess, watched for checkpoint writes (their temp files) in its workdir."""

  def __init__(self, script, config_path, workdir, log):
    self.workdir = pathlib.Path(workdir)
    env = dict(os.environ, PYTHONPATH=str(_ROOT), JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=os.environ.get("JAXDIFFATTACK_TEST_CACHE",
                                                        str(_ROOT / ".jax_cache")),
               JAXDIFFATTACK_TEST_WRITE_DELAY=f"{_DELAY}:checkpoint*")
    self.log = open(log, "ab")  # pylint: disable=consider-using-with
    self.start = time.monotonic()
    self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, str(_ROOT / "launch" / script), f"--config={config_path}",
         f"--workdir={workdir}"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
    self.seen = []      # checkpoint temp files seen, in order
    self.first_checkpoint_s = None

  def poll(self):
    """Records new checkpoint temp files; returns the ones present now."""
    present = sorted(p.name for p in self.workdir.glob(_TMP_GLOB)) if self.workdir.exists() else []
    for name in present:
      if name not in self.seen:
        self.seen.append(name)
        if self.first_checkpoint_s is None:
          self.first_checkpoint_s = time.monotonic() - self.start
    return present

  def wait_until(self, condition, timeout=300):
    """Polls every 5 ms until `condition(present temp files)` holds (True) or the process ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if condition(self.poll()):
        return True
      if self.proc.poll() is not None:
        return False
      time.sleep(0.005)
    raise AssertionError(f"launcher still running after {timeout}s")

  def kill(self):
    self.proc.send_signal(signal.SIGKILL)
    assert self.proc.wait(60) == -signal.SIGKILL
    self.log.close()

  def finish(self):
    self.wait_until(lambda present: False, timeout=600)
    code = self.proc.wait()
    self.log.close()
    assert code == 0, pathlib.Path(self.log.name).read_text()[-3000:]
    self.poll()


def _check_whole(workdir) -> list[str]:
  """Every file under a final name parses in full; returns the temp files (the only debris)."""
  debris = []
  for path in sorted(pathlib.Path(workdir).rglob("*")):
    if not path.is_file():
      continue
    if path.name.startswith(".") and path.name.endswith(".tmp"):
      debris.append(path.name)
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
    else:
      raise AssertionError(f"unexpected file {path}")
  return debris


def _checkpoints(workdir) -> dict[str, bytes]:
  return {p.name: p.read_bytes() for p in pathlib.Path(workdir).glob("checkpoint*.msgpack")}


def _battery(tmp_path, script, config_path, seed, compared):
  """Uninterrupted run, then 3 seeded kills and a final resume; `compared` files must be equal."""
  rng = np.random.default_rng(seed)
  full = Launch(script, config_path, tmp_path / "full", tmp_path / "full.log")
  full.finish()
  writes = len(full.seen)
  assert writes >= 6, f"only {writes} checkpoint writes: too few to place the kills"
  workdir, log = tmp_path / "killed", tmp_path / "killed.log"
  plan = {"wall_clock_s": float(rng.uniform(0.2, 0.9) * full.first_checkpoint_s),
          "during_write": int(rng.integers(2, writes // 2 + 1)),
          "after_write": int(rng.integers(1, 3)), "after_write_delay_s": float(rng.uniform(0, 0.3))}
  print(f"{script}: {writes} checkpoint writes uninterrupted; kill plan {plan}")

  # 1. Wall clock, before the first checkpoint.
  run = Launch(script, config_path, workdir, log)
  run.wait_until(lambda _: time.monotonic() - run.start >= plan["wall_clock_s"])
  assert run.proc.poll() is None, "finished before the wall-clock kill"
  run.kill()
  _check_whole(workdir)

  # 2. During the k-th checkpoint write (its temp file written, not yet renamed).
  run = Launch(script, config_path, workdir, log)
  assert run.wait_until(lambda _: len(run.seen) >= plan["during_write"]), "finished too early"
  before = _checkpoints(workdir)
  run.kill()
  cut = run.seen[plan["during_write"] - 1]
  debris = _check_whole(workdir)
  assert cut in debris, f"the kill missed the write of {cut}"
  assert _checkpoints(workdir) == before      # the final name still holds the previous one

  # 3. By step: a random delay after the k-th checkpoint of the next run is in place.
  run = Launch(script, config_path, workdir, log)
  k = plan["after_write"]
  assert run.wait_until(lambda present: len(run.seen) > k or (
      len(run.seen) == k and not present)), "finished too early"
  time.sleep(plan["after_write_delay_s"])
  assert run.proc.poll() is None, "finished before the step kill"
  run.kill()
  _check_whole(workdir)

  Launch(script, config_path, workdir, log).finish()
  _check_whole(workdir)
  for name in compared:
    assert (workdir / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name
  return workdir


def _same_tree(expected, got):
  """The same files (e.g. saved failures: PNG and NPY) with the same bytes."""
  files = sorted(p.relative_to(expected) for p in expected.rglob("*") if p.is_file())
  assert files == sorted(p.relative_to(got) for p in got.rglob("*") if p.is_file())
  for rel in files:
    assert (got / rel).read_bytes() == (expected / rel).read_bytes(), rel


def test_sweep_killed_three_times_equals_uninterrupted(tiny_sd_dirs, tmp_path):
  config = _write_config(tmp_path, f"""
from sweep_test import tiny_config
c = tiny_config({str(tiny_sd_dirs[1])!r})
c.unit = 3                    # 8 checkpoints over the 24 members
c.grid_images = False
c.trajectory.prompts = ()
""")
  _battery(tmp_path, "sweep.py", config, seed=1,
           compared=("members.csv", "results.csv", "config.json", "report.md"))


def test_search_killed_three_times_equals_uninterrupted(tiny_sd_dirs, tmp_path):
  config = _write_config(tmp_path, f"""
from search_multidevice_worker import tiny_config
c = tiny_config("latent", {str(tiny_sd_dirs[1])!r})
c.stop_after_failures = 0     # every generation runs: 3 targets x 4 generations x 2 methods
""")
  workdir = _battery(tmp_path, "search.py", config, seed=2,
                     compared=("results.jsonl", "config.json"))
  assert list((tmp_path / "full" / "failures").rglob("*.png"))
  _same_tree(tmp_path / "full" / "failures", workdir / "failures")


# pylint: disable-next=redefined-outer-name
def test_attack_killed_three_times_equals_uninterrupted(tiny_sd_dirs, vision_dirs, prompt_file,
                                                        tmp_path):
  dirs = {k: str(v) for k, v in vision_dirs.items()}
  config = _write_config(tmp_path, f"""
from attacks_job_test import tiny_config
dirs = {{k: pathlib.Path(v) for k, v in {dirs!r}.items()}}
c = tiny_config({str(tiny_sd_dirs[1])!r}, dirs, pathlib.Path({str(prompt_file)!r}))
c.checkpoint_every = 1        # 4 checkpoints per attacked group of 2 prompts
""")
  workdir = _battery(tmp_path, "attack.py", config, seed=3,
                     compared=("results.jsonl", "clean_short.json", "config.json"))
  full = tmp_path / "full"
  summary = lambda d: {k: v for k, v in json.loads((d / "summary.json").read_text()).items()
                       if k != "timing"}                     # timing: wall-clock seconds
  assert summary(workdir) == summary(full)
  if (full / "images").exists():
    _same_tree(full / "images", workdir / "images")
