"""launch/local_multiprocess.py: stopping the launcher stops every process of the run.

The processes here are plain Python children that ignore SIGTERM (as a job blocked in a JAX
collective may), record their pids and sleep; no JAX, so these tests take seconds.
"""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

LAUNCHER = pathlib.Path(__file__).resolve().parents[1] / "launch" / "local_multiprocess.py"

CHILD = ("import os, pathlib, signal, sys, time\n"
         "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
         "d = pathlib.Path(sys.argv[1])\n"
         "(d / ('pid%s' % os.environ['JAX_PROCESS_ID'])).write_text(str(os.getpid()))\n"
         "time.sleep(600)\n")


def _alive(pid: int) -> bool:
  """Running (a zombie left for an init that does not reap counts as gone)."""
  try:
    state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
  except (FileNotFoundError, ProcessLookupError):
    return False
  return state not in ("Z", "X")


def _start(tmp_path, num=2):
  proc = subprocess.Popen(  # pylint: disable=consider-using-with
      [sys.executable, str(LAUNCHER), f"--num_processes={num}", "--", sys.executable, "-c", CHILD,
       str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.monotonic() + 60
  while len(list(tmp_path.glob("pid*"))) < num or any(
      not p.read_text() for p in tmp_path.glob("pid*")):
    assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
    time.sleep(0.05)
  pids = [int((tmp_path / f"pid{i}").read_text()) for i in range(num)]
  assert all(_alive(pid) for pid in pids)
  return proc, pids


def _wait_gone(pids, timeout):
  deadline = time.monotonic() + timeout
  while any(_alive(pid) for pid in pids):
    if time.monotonic() > deadline:
      for pid in pids:
        if _alive(pid):
          os.kill(pid, signal.SIGKILL)
      raise AssertionError(f"processes still running {timeout}s after the launcher was stopped")
    time.sleep(0.05)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_sigkill_of_the_launcher_kills_every_process(tmp_path):
  proc, pids = _start(tmp_path)
  proc.send_signal(signal.SIGKILL)
  proc.wait(10)
  _wait_gone(pids, timeout=5)


def test_sigterm_of_the_launcher_stops_processes_that_ignore_it(tmp_path):
  """SIGTERM is passed on; children still running 10 s later are killed; the launcher exits
  128 + SIGTERM after they are gone."""
  proc, pids = _start(tmp_path)
  start = time.monotonic()
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(30) == 128 + signal.SIGTERM
  assert 9 < time.monotonic() - start < 25    # waited for the grace period, then killed
  _wait_gone(pids, timeout=1)
