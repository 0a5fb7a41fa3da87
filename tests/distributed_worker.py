"""One process of a multi-host run (see distributed_test.py); not a test module.

Usage (under launch/local_multiprocess.py, which sets JAX_COORDINATOR_ADDRESS etc.):
  python distributed_worker.py SD_DIR VISION_ROOT PROMPT_CSV WORKDIR

Starts jax.distributed as the launchers do (`distributed.initialize("auto")`), then runs the tiny
sweep, latent search (Sep-CMA-ES) and ATM attack (2 Adam iterations) of sweep_test.py,
search_multidevice_worker.py and attacks_job_test.py into WORKDIR/{sweep,search,attack}. Every
file this process opens for writing, renames or removes under WORKDIR is recorded by a Python
audit hook (independently of `io`'s writer gate) and listed, one per line, in
WORKDIR.writes.p<process index> (next to WORKDIR, which stays the jobs' own).
"""

import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from jaxdiffattack import distributed  # pylint: disable=g-import-not-at-top,wrong-import-position

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def record_writes(root: pathlib.Path, written: list) -> None:
  """Appends to `written` every path under `root` opened for writing, renamed or removed."""
  root = str(root.resolve())

  def hook(event, args):
    if event == "open":
      path, mode, flags = args
      writes = (any(c in mode for c in "wax+") if isinstance(mode, str)
                else isinstance(flags, int) and flags & WRITE_FLAGS)
      paths = [path] if writes else []
    elif event in ("os.rename", "os.remove", "os.truncate"):
      paths = [args[0]] + ([args[1]] if event == "os.rename" else [])
    else:
      return
    for p in paths:
      if isinstance(p, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(p)).startswith(
          root + os.sep):
        written.append(os.path.relpath(os.path.abspath(os.fsdecode(p)), root))

  sys.addaudithook(hook)


def main(sd_dir, vision_root, prompt_csv, workdir):
  assert distributed.initialize("auto")   # the environment of local_multiprocess.py
  import jax  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import scoring  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import search  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import sweep  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.attacks import job  # pylint: disable=g-import-not-at-top
  import attacks_job_test  # pylint: disable=g-import-not-at-top
  import search_multidevice_worker  # pylint: disable=g-import-not-at-top
  import sweep_test  # pylint: disable=g-import-not-at-top

  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  written = []
  record_writes(workdir, written)
  print(f"process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} "
        f"local devices, {jax.device_count()} in all", flush=True)

  start = time.perf_counter()
  timed = lambda name: print(f"{name} done at {time.perf_counter() - start:.1f} s", flush=True)
  config = sweep_test.tiny_config(sd_dir)
  config.trajectory.prompts = ()
  sweep.run(config, workdir / "sweep", scoring=scoring.synthetic_scoring())
  timed("sweep")

  config = search_multidevice_worker.tiny_config("latent", sd_dir)
  config.methods = ("Sep_CMA_ES",)   # evosax ask/tell on every host (Adam: the attack's)
  config.checkpoint_every = 2
  search.run(config, workdir / "search", scoring=scoring.synthetic_scoring())
  timed("search")

  root = pathlib.Path(vision_root)
  config = attacks_job_test.tiny_config(sd_dir, {n: root / n for n in ("clip", "vit", "resnet")},
                                        prompt_csv)
  config.attack.num_iters = 2           # one checkpoint (checkpoint_every = 2)
  job.run(config, workdir / "attack")
  timed("attack")

  log = pathlib.Path(f"{workdir}.writes.p{jax.process_index()}")
  log.write_text("".join(f"{p}\n" for p in written))


if __name__ == "__main__":
  main(*sys.argv[1:5])
