"""Multi-host runs under JAX's multi-controller runtime: start-up, the one writer, its outcome.

Every host runs the same program on its own devices (`jax.distributed.initialize`, see
https://docs.jax.dev/en/latest/multi_process.html); `sharding.make_mesh` spans the devices of all
processes. What this module adds:

* `define_flags()` / `initialize_from_flags()`: the launchers' `--distributed=auto|on|off` (with
  `--coordinator_address`, `--num_processes`, `--process_id`, defaulting to the environment
  variables JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID). `auto` starts the
  distributed runtime when the environment names more than one process (`multiprocess_env`);
  `on` always (arguments left unset are auto-detected by JAX: Cloud TPU metadata, SLURM, Open
  MPI); `off` never. Called before any other JAX use (the runtime must start before the backend).
* One writer: `is_writer()` is True on process 0 only; `io.atomic_write_bytes` (every file a job
  writes goes through it) skips the write elsewhere, and processes > 0 log warnings only.
* Host-side state is identical on every process without communication: it is computed by the
  same deterministic code from the same keys (evosax ask/tell, Adam, RNG draws by `fold_in`),
  and results reach every host through `sharding.to_host` (an all-gather). Each process fills
  its own devices' shards from its own host copy (`sharding.put_global`), so a host whose state
  diverged would change the results (tests/distributed_test.py: 2 processes == 1, byte for byte).
* The workdir must be on a filesystem every process sees (NFS, Lustre, a shared disk, gcsfuse):
  process 0 writes, all processes read (a resume reads the checkpoint everywhere; a report is
  made from the results files). Every process waits for process 0's outcome after each write
  (`writer_outcome` in `io.atomic_write_bytes`), so none reads ahead of it and a failed write
  stops all of them with the same error; it also checks that all processes write the same files
  in the same order. `check_shared_workdir` refuses a workdir
  that is not shared. (Why shared rather than process 0 reading and broadcasting: the jobs read
  their own files back in many places — resume, clean checks, stage caches, reports — and
  clusters and pods mount shared storage for their checkpoints anyway.)
"""

import hashlib
import os
import struct

from absl import flags
from absl import logging
import jax
import numpy as np

from jaxdiffattack.errors import UserError

MODES = ("auto", "on", "off")


def define_flags() -> None:
  """Defines --distributed, --coordinator_address, --num_processes, --process_id (absl)."""
  flags.DEFINE_enum("distributed", "auto", MODES,
                    "Start jax.distributed: auto (when the environment names more than one "
                    "process: JAX_COORDINATOR_ADDRESS, SLURM with >1 task, Open MPI, Cloud TPU "
                    "worker list), on (always; unset values are auto-detected by JAX), off.")
  flags.DEFINE_string("coordinator_address", None,
                      "host:port of process 0's coordinator (default $JAX_COORDINATOR_ADDRESS).")
  flags.DEFINE_integer("num_processes", None, "Number of processes (default $JAX_NUM_PROCESSES).")
  flags.DEFINE_integer("process_id", None,
                       "This process's index in [0, num_processes) (default $JAX_PROCESS_ID).")


def initialize_from_flags() -> bool:
  """`initialize` with the values of the flags of `define_flags`."""
  f = flags.FLAGS
  return initialize(f.distributed, f.coordinator_address, f.num_processes, f.process_id)


def _env_int(name: str, environ=None) -> int | None:
  value = (os.environ if environ is None else environ).get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise UserError(f"${name}={value!r} is invalid: use an integer") from None


def multiprocess_env(environ=None) -> str | None:
  """The name of the environment that asks for more than one process (None: a single one)."""
  env = os.environ if environ is None else environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return "JAX_COORDINATOR_ADDRESS"
  if "SLURM_JOB_ID" in env and (_env_int("SLURM_NTASKS", env) or 1) > 1:
    return "SLURM"
  if "OMPI_MCA_orte_hnp_uri" in env:
    return "Open MPI"
  workers = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
  if "," in workers:
    return "Cloud TPU"
  return None


def initialize(mode: str = "auto", coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None) -> bool:
  """Starts `jax.distributed` as `mode` asks; True if it did (False: a single process).

  Unset values come from $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID, else
  JAX's cluster auto-detection. Must run before any other JAX computation. On CPU,
  cross-process collectives use gloo (JAX's default `jax_cpu_collectives_implementation` in
  0.10; set here in case it was unset)."""
  if mode not in MODES:
    raise UserError(f"--distributed={mode!r} is invalid: use one of {', '.join(MODES)}")
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  num_processes = _env_int("JAX_NUM_PROCESSES") if num_processes is None else num_processes
  process_id = _env_int("JAX_PROCESS_ID") if process_id is None else process_id
  explicit = coordinator_address or num_processes is not None or process_id is not None
  if mode == "off" or (mode == "auto" and not explicit and multiprocess_env() is None):
    return False
  if jax.distributed.is_initialized():
    return True
  if jax.config.jax_cpu_collectives_implementation is None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  except (ValueError, TypeError) as e:
    raise UserError(f"--distributed={mode}: {str(e).rstrip('.')}; set --coordinator_address, "
                    "--num_processes and --process_id (or JAX_COORDINATOR_ADDRESS, "
                    "JAX_NUM_PROCESSES, JAX_PROCESS_ID)") from None
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)   # results and progress are logged by process 0
  logging.info("jax.distributed: %d processes, %d devices (%d local)", jax.process_count(),
               jax.device_count(), jax.local_device_count())
  return True


def is_multiprocess() -> bool:
  return jax.distributed.is_initialized() and jax.process_count() > 1


def is_writer() -> bool:
  """True on the process that writes files and logs results: process 0 (or the only one)."""
  return not jax.distributed.is_initialized() or jax.process_index() == 0


_OUTCOME_BYTES = 1024   # the longest outcome message process 0 shares (longer ones are cut)


def writer_outcome(message: str, name: str) -> str:
  """Process 0's `message` ("" when its write succeeded), on every process: a collective, so also
  a barrier. `name` (the write, e.g. "wrote <path>") must be the same on every process, as at a
  named barrier: a process at another write means the processes diverged (RuntimeError). With
  one process, `message` itself."""
  if not is_multiprocess():
    return message
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  digest = hashlib.sha256(name.encode()).digest()[:8]
  raw = digest + message.encode()[:_OUTCOME_BYTES].ljust(_OUTCOME_BYTES, b"\0")
  shared = np.asarray(multihost_utils.broadcast_one_to_all(np.frombuffer(raw, np.uint8)))
  shared = shared.astype(np.uint8).tobytes()
  if shared[:8] != digest:
    raise RuntimeError(f"process {jax.process_index()} is at {name!r} while process 0 is at "
                       "another write: the processes diverged")
  return shared[8:].rstrip(b"\0").decode(errors="replace")


def check_shared_workdir(path) -> None:
  """Raises a one-line `UserError` unless every process sees the file `path` that process 0 has
  just written with `io.atomic_write_bytes` (the same modification time to the nanosecond)."""
  if not is_multiprocess():
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  mine = os.stat(path).st_mtime_ns if os.path.exists(path) else -1
  as_bytes = np.frombuffer(struct.pack("<q", mine), np.uint8)
  written = struct.unpack("<q", np.asarray(multihost_utils.broadcast_one_to_all(as_bytes))
                          .astype(np.uint8).tobytes())[0]
  ok = multihost_utils.process_allgather(np.asarray(mine == written, np.int32))
  if not np.all(ok):
    raise UserError(f"workdir {os.path.dirname(path)} is not shared by all processes (process "
                    f"{np.flatnonzero(np.asarray(ok) == 0).tolist()} cannot see {path} as "
                    "written by process 0): put --workdir on a filesystem every host mounts")
