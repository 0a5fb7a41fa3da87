r"""Runs any job as N processes of one multi-host JAX run on this machine (for trying it out).

  python launch/local_multiprocess.py --num_processes=2 --devices_per_process=4 -- \
      launch/search.py --config configs/latent_search.py:toy --workdir runs/latent_toy_2proc

Starts N copies of the command with a coordinator on a free localhost port
(JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, which the launchers' default
`--distributed=auto` reads); `--devices_per_process=K` gives each K fake CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=K). Every output line is prefixed [pI]. Exits
with the first non-zero exit code (the others are then stopped), else 0.
"""

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


def _exit_code(returncode: int) -> int:
  return 128 - returncode if returncode < 0 else returncode   # killed by signal S: 128 + S


def run(command: list[str], num: int, devices: int | None = None) -> int:
  """Runs `command` as `num` processes; returns the first non-zero exit code (else 0)."""
  if command and command[0].endswith(".py"):
    command = [sys.executable] + command
  port, lock = free_port(), threading.Lock()
  procs = [subprocess.Popen(command, env=process_env(i, num, port, devices),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, errors="replace") for i in range(num)]
  threads = [threading.Thread(target=_forward, args=(p, f"[p{i}]", lock), daemon=True)
             for i, p in enumerate(procs)]
  for t in threads:
    t.start()
  code = 0
  try:
    while code == 0 and any(p.poll() is None for p in procs):
      code = next((_exit_code(p.returncode) for p in procs if p.poll() not in (None, 0)), 0)
      time.sleep(0.1)
    code = code or next((_exit_code(p.returncode) for p in procs if p.returncode), 0)
  except KeyboardInterrupt:
    code = 128 + signal.SIGINT
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
