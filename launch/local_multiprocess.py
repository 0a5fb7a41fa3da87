r"""Runs any job as N processes of one multi-host JAX run on this machine (for trying it out).

  python launch/local_multiprocess.py --num_processes=2 --devices_per_process=4 -- \
      launch/search.py --config configs/latent_search.py:toy --workdir runs/latent_toy_2proc

Starts N copies of the command with a coordinator on a free localhost port
(JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, which the launchers' default
`--distributed=auto` reads); `--devices_per_process=K` gives each K fake CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=K). Every output line is prefixed [pI]. Exits
with the first non-zero exit code (the others are then stopped), else 0.

Stopping it stops the job: SIGTERM/SIGHUP/SIGINT to this launcher terminate every process (then
kill those still running after 10 s), and on Linux each process is also killed when this
launcher dies by SIGKILL (PR_SET_PDEATHSIG), so no orphaned process of a run is left behind.
"""

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import app
from absl import flags

_NUM = flags.DEFINE_integer("num_processes", 2, "Number of processes.", lower_bound=1)
_DEVICES = flags.DEFINE_integer("devices_per_process", None,
                                "Fake CPU devices per process (default: the real devices).",
                                lower_bound=1)


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(index: int, num: int, port: int, devices: int | None, base=None) -> dict:
  """The environment of process `index` of `num` with a coordinator on localhost:`port`."""
  env = dict(os.environ if base is None else base, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
             JAX_NUM_PROCESSES=str(num), JAX_PROCESS_ID=str(index))
  if devices is not None:
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={devices}").strip()
  return env


def _forward(proc: subprocess.Popen, prefix: str, lock: threading.Lock) -> None:
  for line in proc.stdout:
    with lock:
      sys.stdout.write(f"{prefix} {line}")
      sys.stdout.flush()


def _die_with_parent(parent: int) -> None:
  """In the child before exec (Linux): SIGKILL it when the launcher dies, even by SIGKILL."""
  try:
    libc = ctypes.CDLL(None, use_errno=True)
  except OSError:     # not Linux / no libc: SIGTERM still stops the job (run's handler)
    return
  pr_set_pdeathsig = 1
  libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
  if os.getppid() != parent:    # the launcher died before prctl took effect
    os.kill(os.getpid(), signal.SIGKILL)


class _Stopped(Exception):
  """A termination signal reached the launcher."""

  def __init__(self, signum: int):
    super().__init__(signum)
    self.signum = signum


def _raise_stopped(signum, frame):  # pylint: disable=unused-argument
  for s in (signal.SIGTERM, signal.SIGHUP):   # a second signal must not interrupt the cleanup
    signal.signal(s, signal.SIG_IGN)
  raise _Stopped(signum)


def _exit_code(returncode: int) -> int:
  return 128 - returncode if returncode < 0 else returncode   # killed by signal S: 128 + S


def run(command: list[str], num: int, devices: int | None = None) -> int:
  """Runs `command` as `num` processes; returns the first non-zero exit code (else 0)."""
  if command and command[0].endswith(".py"):
    command = [sys.executable] + command
  port, lock, parent = free_port(), threading.Lock(), os.getpid()
  previous = {}
  if threading.current_thread() is threading.main_thread():
    previous = {s: signal.signal(s, _raise_stopped) for s in (signal.SIGTERM, signal.SIGHUP)}
  procs = []
  try:
    return _run(command, num, devices, port, lock, parent, procs)
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)


def _run(command, num, devices, port, lock, parent, procs) -> int:
  threads, code = [], 0
  try:
    for i in range(num):
      procs.append(subprocess.Popen(command, env=process_env(i, num, port, devices),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    bufsize=1, errors="replace",
                                    preexec_fn=lambda: _die_with_parent(parent)))
    threads = [threading.Thread(target=_forward, args=(p, f"[p{i}]", lock), daemon=True)
               for i, p in enumerate(procs)]
    for t in threads:
      t.start()
    while code == 0 and any(p.poll() is None for p in procs):
      code = next((_exit_code(p.returncode) for p in procs if p.poll() not in (None, 0)), 0)
      time.sleep(0.1)
    code = code or next((_exit_code(p.returncode) for p in procs if p.returncode), 0)
  except KeyboardInterrupt:
    code = 128 + signal.SIGINT
  except _Stopped as stopped:
    code = 128 + stopped.signum
  finally:
    for p in procs:
      if p.poll() is None:
        p.terminate()
    deadline = time.monotonic() + 10
    for p in procs:
      try:
        p.wait(timeout=max(0.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    for t in threads:
      t.join(timeout=5)
  return code


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("give the command after --, e.g. -- launch/sweep.py --config ... "
                         "--workdir ...")
  sys.exit(run(argv[1:], _NUM.value, _DEVICES.value))


if __name__ == "__main__":
  app.run(main)
