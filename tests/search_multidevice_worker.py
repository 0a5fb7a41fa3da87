"""Helpers of the search tests, and (run as a script) the 8-fake-device worker; not a test module.

Usage: python search_multidevice_worker.py SD_DIR WORKDIR
Runs the same tiny latent search (synthetic scorer) on a 1-device mesh and on the 8-device mesh
(P = 6 members per target: not a multiple of 8) into WORKDIR/one and WORKDIR/eight.
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
  if space == "token":
    c.target_labels = ("ball", "cone", "cube")
    c.criterion.clip_filter.threshold = 0.5
  if space == "prompt":
    c.prompt.words = ("x", "yz", "w", "cube", "q")  # "cube" names a class: excluded
    c.prompt.insertions = ("before_noun", "end")
    c.prompt.min_similarity = 0.5
  return c


def main(sd_dir, workdir):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8")
  import jax  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import search  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import sharding  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import scoring  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 8, jax.devices()
  config = tiny_config("latent", sd_dir)
  config.baseline = ""
  config.save_images = False
  for name, mesh in (("one", sharding.make_mesh(jax.devices()[:1])),
                     ("eight", sharding.make_mesh())):
    search.run(config, pathlib.Path(workdir) / name, scoring=scoring.synthetic_scoring(),
               mesh=mesh)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
