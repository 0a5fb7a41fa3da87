"""Runs in its own process with 8 fake CPU devices (see attacks_checkpoint_test.py); not a test
module.

Usage: python attacks_sharded_worker.py SD_DIR VISION_ROOT PROMPT_CSV WORKDIR
The tiny ATM job of attacks_job_test.py with every state sharded over the 8 devices
(sharded_checkpoint_mb tiny): uninterrupted into WORKDIR/full; killed (KeyboardInterrupt) after
the first checkpoint and resumed into WORKDIR/resumed. While a checkpoint is saved no array with
the state's rank is gathered to the host (sharding.to_host raises); prints the shard count.
"""

import os
import pathlib
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdiffattack import runs  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdiffattack import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdiffattack.attacks import checkpoint  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdiffattack.attacks import job  # pylint: disable=g-import-not-at-top,wrong-import-position
import attacks_job_test  # pylint: disable=g-import-not-at-top,wrong-import-position

_saving = []
_to_host, _save = sharding.to_host, checkpoint.save


def _guarded_to_host(x):
  if _saving and getattr(x, "ndim", 0) == 3:
    raise AssertionError(f"gathered a state array {x.shape} while saving a sharded checkpoint")
  return _to_host(x)


def _guarded_save(workdir, digest, set_index, group, state, curves, sharded_mb):
  shards = {len(a.addressable_shards) for a in jax.tree_util.tree_leaves(state) if a.ndim}
  print(f"shards per array: {max(shards)}", flush=True)
  _saving.append(1)
  try:
    return _save(workdir, digest, set_index, group, state, curves, sharded_mb)
  finally:
    _saving.pop()


def main(sd_dir, vision_root, prompt_csv, workdir):
  assert jax.device_count() == 8, jax.devices()
  sharding.to_host = _guarded_to_host
  checkpoint.save = _guarded_save
  root = pathlib.Path(vision_root)
  dirs = {name: root / name for name in ("clip", "vit", "resnet")}
  config = attacks_job_test.tiny_config(sd_dir, dirs, prompt_csv)
  config.population = 8                   # the 3 clean-correct prompts, padded to 8 devices
  config.sharded_checkpoint_mb = 1e-6
  job.run(config, pathlib.Path(workdir) / "full")
  log = runs.Progress.log

  def stop(self, *args):
    raise KeyboardInterrupt("killed after the first checkpoint")

  runs.Progress.log = stop
  try:
    job.run(config, pathlib.Path(workdir) / "resumed")
    raise AssertionError("the run was not interrupted")
  except KeyboardInterrupt:
    pass
  runs.Progress.log = log
  assert (pathlib.Path(workdir) / "resumed" / checkpoint.ARRAYS / "0-0-2").is_dir()
  job.run(config, pathlib.Path(workdir) / "resumed")


if __name__ == "__main__":
  main(*sys.argv[1:5])
