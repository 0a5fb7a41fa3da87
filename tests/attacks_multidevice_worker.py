"""Runs in its own process with 8 fake CPU devices (see attacks_job_test.py); not a test module.

Usage: python attacks_multidevice_worker.py SD_DIR VISION_ROOT PROMPT_CSV WORKDIR
Runs the tiny ATM job of attacks_job_test.py on a 1-device mesh and on the 8-device mesh.
"""

import os
import pathlib
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdiffattack import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdiffattack.attacks import job  # pylint: disable=g-import-not-at-top,wrong-import-position
import attacks_job_test  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(sd_dir, vision_root, prompt_csv, workdir):
  assert jax.device_count() == 8, jax.devices()
  root = pathlib.Path(vision_root)
  dirs = {name: root / name for name in ("clip", "vit", "resnet")}
  for name, mesh in (("single", sharding.make_mesh(jax.devices()[:1])),
                     ("eight", sharding.make_mesh())):
    config = attacks_job_test.tiny_config(sd_dir, dirs, prompt_csv)
    config.attack.num_iters = 2
    job.run(config, pathlib.Path(workdir) / name, mesh=mesh)


if __name__ == "__main__":
  main(*sys.argv[1:5])
