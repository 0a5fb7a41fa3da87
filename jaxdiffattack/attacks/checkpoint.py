"""The attack's checkpoint: the job state in `runs`' msgpack, the attack's state inline or sharded.

`checkpoint.msgpack` (`runs.save_checkpoint`: by field name, config hash, atomic) holds a
`JobState`: the prompt set and group in progress, the loss curves so far, and the attack's state
(θ and Adam moments for ATM) either inline — when it is at most `config.sharded_checkpoint_mb` MB —
or a reference to `checkpoint_arrays/<set>-<group>-<iteration>/`, an orbax-checkpoint
(`StandardCheckpointer`) that every process writes its own shards of, without gathering the state
on one host. At the real CLIP vocabulary θ and its moments are 49,408 × 77 × 4 B × 3 ≈ 46 MB per
prompt, so the default 64 MB shards every population of 2 prompts or more.

Order and atomicity: the orbax directory is written first (orbax's commit protocol: a temporary
directory renamed into place, `commit_success.txt` inside), then the msgpack that names it is
replaced atomically, then older array directories are removed. A kill at any point leaves the
msgpack naming a complete directory. An array directory that is missing, unfinished or damaged is
one line (`UserError`) naming it and the fix.
"""

import pathlib
import shutil
from typing import Any

from absl import logging
import flax.serialization
import flax.struct
import jax
import numpy as np

from jaxdiffattack import distributed
from jaxdiffattack import runs
from jaxdiffattack import sharding
from jaxdiffattack.errors import UserError

ARRAYS = "checkpoint_arrays"
FINISHED = "commit_success.txt"    # orbax's marker of a committed checkpoint


@flax.struct.dataclass
class JobState:
  set_index: Any    # [] int32 position of the prompt set in config.prompt_sets
  group: Any        # [] int32 group of prompts in progress
  curves: dict      # {metric: [iterations, P] float32}
  arrays: dict      # the attack's state dict (inline), or {"orbax_iteration": []} (sharded)


def state_mb(state) -> float:
  return sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves(state)) / 1e6


def _directory(workdir: pathlib.Path, set_index: int, group: int, iteration: int) -> pathlib.Path:
  return (workdir / ARRAYS / f"{set_index}-{group}-{iteration}").absolute()


def save(workdir: pathlib.Path, digest: str, set_index: int, group: int, state, curves: dict,
         sharded_mb: float) -> None:
  """Writes the checkpoint of `state` (a sharded pytree with `iteration`) after `curves`."""
  iteration = int(state.iteration)
  if sharded_mb and state_mb(state) > sharded_mb:
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    directory = _directory(workdir, set_index, group, iteration)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory, state, force=True)
    checkpointer.wait_until_finished()
    checkpointer.close()
    arrays = {"orbax_iteration": np.int32(iteration)}
  else:
    arrays = flax.serialization.to_state_dict(jax.tree_util.tree_map(sharding.to_host, state))
  runs.save_checkpoint(workdir / "checkpoint.msgpack",
                       JobState(np.int32(set_index), np.int32(group), curves, arrays), digest)
  if distributed.is_writer() and (workdir / ARRAYS).exists():
    keep = _directory(workdir, set_index, group, iteration) if "orbax_iteration" in arrays else None
    for old in (workdir / ARRAYS).iterdir():
      if old.absolute() != keep:
        shutil.rmtree(old, ignore_errors=True)


def load(workdir: pathlib.Path, digest: str, set_index: int, group: int, template, curves: dict):
  """(state, curves) saved for this set and group, restored into `template`'s type and shardings;
  None if there is none (or it is another group's)."""
  path = workdir / "checkpoint.msgpack"
  raw = runs.read_checkpoint(path)
  if raw is None:
    return None
  job_state = raw.get("state") if raw.get("config_hash") == digest else None
  if isinstance(job_state, dict) and (int(job_state.get("set_index", -1)) != set_index
                                      or int(job_state.get("group", -1)) != group):
    return None                      # another group's (no "resuming" line)
  saved = runs.load_checkpoint(path, digest,
                               JobState(None, None, {k: None for k in curves}, {}),
                               "run of the attack job")
  if saved is None or int(saved.set_index) != set_index or int(saved.group) != group:
    return None
  if "orbax_iteration" in saved.arrays:
    state = _restore_sharded(_directory(workdir, set_index, group,
                                        int(saved.arrays["orbax_iteration"])), template)
  else:
    host = jax.tree_util.tree_map(sharding.to_host, template)
    state = flax.serialization.from_state_dict(host, saved.arrays)
    state = jax.tree_util.tree_map(lambda a, t: sharding.put_global(a, t.sharding), state, template)
  return state, {k: np.asarray(saved.curves[k]) for k in curves}


def _restore_sharded(directory: pathlib.Path, template):
  fix = ("delete checkpoint.msgpack and checkpoint_arrays/ to restart this run from the "
         "beginning, or use a new --workdir")
  if not (directory / FINISHED).exists():
    raise UserError(f"checkpoint arrays {directory} are missing or unfinished (no {FINISHED}); "
                    f"{fix}")
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  abstract = jax.tree_util.tree_map(
      lambda t: jax.ShapeDtypeStruct(t.shape, t.dtype, sharding=t.sharding), template)
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      state = checkpointer.restore(directory, abstract)
  except Exception as e:  # pylint: disable=broad-except  # tensorstore, ValueError, KeyError, ...
    raise UserError(f"checkpoint arrays {directory} are damaged ({type(e).__name__}); "
                    f"{fix}") from e
  logging.info("restored the attack state from %s (sharded)", directory)
  return state
