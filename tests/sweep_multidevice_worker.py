"""Runs in its own process with 8 fake CPU devices (see sweep_test.py); not a test module.

Usage: python sweep_multidevice_worker.py SD_DIR WORKDIR
Runs the tiny sweep of sweep_test.py on a 1-device mesh and on the 8-device mesh.
"""

import os
import pathlib
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdiffattack import scoring  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdiffattack import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdiffattack import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position
import sweep_test  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(sd_dir, workdir):
  assert jax.device_count() == 8, jax.devices()
  for name, mesh in (("single", sharding.make_mesh(jax.devices()[:1])),
                     ("eight", sharding.make_mesh())):
    config = sweep_test.tiny_config(sd_dir)
    config.grid_images = False
    config.trajectory.prompts = ()
    sweep.run(config, pathlib.Path(workdir) / name, scoring=scoring.synthetic_scoring(),
              mesh=mesh)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
