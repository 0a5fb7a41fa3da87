"""Helpers of the search tests, and (run as a script) the 8-fake-device worker; not a test module.

Usage: python search_multidevice_worker.py SD_DIR WORKDIR
Runs the same tiny latent search (synthetic scorer; Sep-CMA-ES and Adam through the sampler) on a
1-device mesh and on the 8-device mesh (P = 6 members per target: not a multiple of 8) into
WORKDIR/one and WORKDIR/eight.
"""

import os
import pathlib
import sys

_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT / "configs"))  # the configs/<space>_search.py modules
LABELS = ("cube", "ball", "cone")


def tiny_config(space: str, model_dir) -> "ml_collections.ConfigDict":  # noqa: F821
  """A search config for the tiny random SD (16-token char tokenizer) and the synthetic scorer."""
  import embedding_search  # pylint: disable=g-import-not-at-top
  import latent_search  # pylint: disable=g-import-not-at-top
  import prompt_search  # pylint: disable=g-import-not-at-top
  import token_search  # pylint: disable=g-import-not-at-top
  module = {"latent": latent_search, "embedding": embedding_search, "token": token_search,
            "prompt": prompt_search}[space]
  c = module.get_config("toy")
  c.model = str(model_dir)
  c.label_set = ""
  c.labels = LABELS
  c.template = "a {}"
  c.num_steps = 3
  c.population_size = 6
  c.num_generations = 4
  c.scoring.kind = "synthetic"   # the real scores' names, so the config's criterion applies
  c.judges = ("evaluator",)      # the synthetic scoring's one judge
  # The toy latent search's rule (evaluator AND oracle) needs the toy oracle, which has nothing to
  # read on these synthetic images: the evaluator's rule, as in every other space.
  c.criterion.verdict, c.criterion.agree = "top1_miss", ()
  if space == "token":
    c.target_labels = ("ball", "cone", "cube")
    c.criterion.clip_filter.threshold = 0.5
  if space == "prompt":
    c.prompt.words = ("x", "yz", "w", "cube", "q")  # "cube" names a class: excluded
    c.prompt.insertions = ("before_noun", "end")
    c.prompt.min_similarity = 0.5
  return c


def killed_after_saves(count: int):
  """A `runs.save_checkpoint` replacement that saves, then raises KeyboardInterrupt on its
  `count`-th call: a job killed right after a checkpoint (monkeypatch it into `runs`)."""
  from jaxdiffattack import runs  # pylint: disable=g-import-not-at-top
  real_save, saves = runs.save_checkpoint, {"n": 0}

  def dying_save(*args):
    real_save(*args)
    saves["n"] += 1
    if saves["n"] == count:
      raise KeyboardInterrupt("killed")
  return dying_save


def loop_killed_and_resumed(monkeypatch, make, args, path):
  """Runs `driver.run_loop(make(), *args)` uninterrupted, then killed right after its 2nd
  checkpoint and resumed from `path`. Returns (uninterrupted, the saved state as stored,
  resumed) and checks that resumed == uninterrupted in every field except the timing."""
  # pylint: disable=g-import-not-at-top
  import flax
  import jax
  import numpy as np
  import pytest
  from jaxdiffattack import runs
  from jaxdiffattack.search import driver
  # pylint: enable=g-import-not-at-top
  full = driver.run_loop(make(), *args)
  real_save = runs.save_checkpoint
  monkeypatch.setattr(runs, "save_checkpoint", killed_after_saves(2))
  with pytest.raises(KeyboardInterrupt):
    driver.run_loop(make(), *args, checkpoint_path=path, config_hash="h")
  monkeypatch.setattr(runs, "save_checkpoint", real_save)
  saved = flax.serialization.msgpack_restore(path.read_bytes())["state"]
  resumed = driver.run_loop(make(), *args, checkpoint_path=path, config_hash="h")
  untimed = lambda s: jax.tree_util.tree_leaves_with_path(s.replace(timing=None))
  for (where, got), (_, expected) in zip(untimed(resumed), untimed(full), strict=True):
    np.testing.assert_array_equal(got, expected, err_msg=jax.tree_util.keystr(where))
  return full, saved, resumed


def main(sd_dir, workdir):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8")
  import jax  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import search  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import sharding  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import scoring  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 8, jax.devices()
  config = tiny_config("latent", sd_dir)
  config.methods = ("Sep_CMA_ES", "adam")   # an evosax strategy and a gradient method
  config.save_images = False
  for name, mesh in (("one", sharding.make_mesh(jax.devices()[:1])),
                     ("eight", sharding.make_mesh())):
    search.run(config, pathlib.Path(workdir) / name, scoring=scoring.synthetic_scoring(),
               mesh=mesh)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
