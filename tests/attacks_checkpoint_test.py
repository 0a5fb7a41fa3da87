"""The attack's checkpoints (jaxdiffattack.attacks.checkpoint): large states written sharded with
orbax-checkpoint beside runs' msgpack job state; resume from a sharded checkpoint == uninterrupted
(1 device, and the population sharded over 8 fake CPU devices in a subprocess, no state gathered
on the host while saving); a missing, unfinished or damaged array directory is one line."""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attacks_job_test import prompt_file  # noqa: F401  pylint: disable=unused-import  # fixture
from attacks_job_test import tiny_config
from attacks_job_test import uninterrupted  # noqa: F401  pylint: disable=unused-import  # fixture
from attacks_job_test import vision_dirs  # noqa: F401  pylint: disable=unused-import  # fixture
from jaxdiffattack import io
from jaxdiffattack import runs
from jaxdiffattack import sharding
from jaxdiffattack.attacks import atm
from jaxdiffattack.attacks import checkpoint
from jaxdiffattack.attacks import job
from jaxdiffattack.errors import UserError
from jax_only import JAX_ONLY

_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _state(population=4, length=5, vocab=7):
  """An ATM state (θ and Adam moments) on the default mesh, population axis sharded."""
  mesh = sharding.make_mesh()
  logits = jax.random.normal(jax.random.PRNGKey(0), (population, length, vocab))
  opt = jax.vmap(optax.adam(0.1).init)(logits)
  opt = jax.tree_util.tree_map(lambda a: a + 0.5 if a.ndim == 3 else a, opt)
  state = atm.State(logits, opt, jnp.asarray(3, jnp.int32))
  pop, rep = sharding.population_sharding(mesh), sharding.replicated(mesh)
  return jax.tree_util.tree_map(lambda a: jax.device_put(a, pop if a.ndim else rep), state)


@pytest.mark.parametrize("sharded_mb", [0.0, 1e-6])
def test_save_and_load_round_trip(tmp_path, sharded_mb):
  state = _state()
  curves = {"loss": np.arange(6, dtype=np.float32).reshape(3, 2)}
  checkpoint.save(tmp_path, "abc", 1, 2, state, curves, sharded_mb)
  arrays = sorted(p.name for p in (tmp_path / checkpoint.ARRAYS).iterdir()) if sharded_mb else []
  assert arrays == (["1-2-3"] if sharded_mb else [])
  template = jax.tree_util.tree_map(jnp.zeros_like, state)
  got, got_curves = checkpoint.load(tmp_path, "abc", 1, 2, template, curves)
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert a.sharding == b.sharding
  np.testing.assert_array_equal(got_curves["loss"], curves["loss"])
  assert checkpoint.load(tmp_path, "abc", 1, 3, template, curves) is None    # another group
  with pytest.raises(UserError, match="different config"):
    checkpoint.load(tmp_path, "xyz", 1, 2, template, curves)


def test_older_array_directories_are_removed_after_the_msgpack(tmp_path):
  state = _state()
  curves = {"loss": np.zeros((3, 4), np.float32)}
  checkpoint.save(tmp_path, "abc", 0, 0, state, curves, 1e-6)
  later = state._replace(iteration=state.iteration + 2)
  checkpoint.save(tmp_path, "abc", 0, 0, later, curves, 1e-6)
  assert [p.name for p in (tmp_path / checkpoint.ARRAYS).iterdir()] == ["0-0-5"]
  got, _ = checkpoint.load(tmp_path, "abc", 0, 0, state, curves)
  assert int(got.iteration) == 5
  # A small state goes inline again: no array directory is left.
  checkpoint.save(tmp_path, "abc", 0, 1, state, curves, 64.0)
  assert not any((tmp_path / checkpoint.ARRAYS).iterdir())


@pytest.mark.parametrize("damage", ["deleted", "unfinished", "truncated_data", "emptied"])
def test_damaged_sharded_checkpoint_is_one_line(tmp_path, damage):
  state = _state()
  curves = {"loss": np.zeros((3, 4), np.float32)}
  checkpoint.save(tmp_path, "abc", 0, 0, state, curves, 1e-6)
  directory = tmp_path / checkpoint.ARRAYS / "0-0-3"
  if damage == "deleted":
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(directory)
  elif damage == "unfinished":
    (directory / checkpoint.FINISHED).unlink()
  else:
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.parent.name == "d")
    assert files
    for f in files:
      f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2] if damage == "truncated_data"
                    else b"")
  expected = "are damaged" if damage in ("truncated_data", "emptied") else (
      "are missing or unfinished")
  with pytest.raises(UserError, match=expected) as e:
    checkpoint.load(tmp_path, "abc", 0, 0, state, curves)
  message = str(e.value)
  assert "\n" not in message and str(directory) in message
  assert "delete checkpoint.msgpack" in message


@pytest.mark.slow
def test_resume_from_a_sharded_checkpoint_equals_uninterrupted(tiny_sd_dirs, vision_dirs,
                                                               prompt_file, uninterrupted,
                                                               tmp_path, monkeypatch):
  config = tiny_config(tiny_sd_dirs[1], vision_dirs, prompt_file)
  config.sharded_checkpoint_mb = 1e-6       # every state sharded (a run-shape key)

  def stop(self, *args):
    raise KeyboardInterrupt("killed after the first checkpoint")

  monkeypatch.setattr(runs.Progress, "log", stop)
  with pytest.raises(KeyboardInterrupt):
    job.run(config, tmp_path)
  assert [p.name for p in (tmp_path / checkpoint.ARRAYS).iterdir()] == ["0-0-2"]
  monkeypatch.undo()
  job.run(config, tmp_path)
  assert (tmp_path / "results.jsonl").read_text() == (
      uninterrupted[0] / "results.jsonl").read_text()


@pytest.mark.slow
def test_eight_devices_resume_from_a_sharded_checkpoint(tiny_sd_dirs, vision_dirs, prompt_file,
                                                        tmp_path):
  """In a subprocess with 8 fake CPU devices: the population of 8 prompts' θ and moments sharded
  over the 8 devices, written without gathering, killed after the first checkpoint and resumed ==
  uninterrupted (see attacks_sharded_worker.py)."""
  worker = pathlib.Path(__file__).with_name("attacks_sharded_worker.py")
  env = dict(os.environ, PYTHONPATH=str(_ROOT), **JAX_ONLY)
  proc = subprocess.run([sys.executable, str(worker), str(tiny_sd_dirs[1]),
                         str(vision_dirs["clip"].parent), str(prompt_file), str(tmp_path)],
                        env=env, capture_output=True, text=True, timeout=1200, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "shards per array: 8" in proc.stdout, proc.stdout[-2000:]
  full, resumed = (io.read_jsonl(tmp_path / name / "results.jsonl")
                   for name in ("full", "resumed"))
  assert full == resumed and sum(r["attacked"] for r in full) == 3


def test_killed_between_the_arrays_and_the_msgpack_resumes_from_the_last_complete(tmp_path):
  """A kill after the orbax directory of iteration 5 is committed (or half-written: orbax's
  temporary directory) but before the msgpack names it: the msgpack still names iteration 3,
  whose directory is intact; the next save removes the orphans."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  state = _state()
  curves = {"loss": np.zeros((3, 4), np.float32)}
  checkpoint.save(tmp_path, "abc", 0, 0, state, curves, 1e-6)
  later = state._replace(iteration=state.iteration + 2)
  with ocp.StandardCheckpointer() as checkpointer:       # the arrays of iteration 5 only
    checkpointer.save((tmp_path / checkpoint.ARRAYS / "0-0-5").absolute(), later)
  (tmp_path / checkpoint.ARRAYS / "0-0-7.orbax-checkpoint-tmp-1").mkdir()
  got, _ = checkpoint.load(tmp_path, "abc", 0, 0, state, curves)
  assert int(got.iteration) == 3
  checkpoint.save(tmp_path, "abc", 0, 0, later, curves, 1e-6)
  assert [p.name for p in (tmp_path / checkpoint.ARRAYS).iterdir()] == ["0-0-5"]
