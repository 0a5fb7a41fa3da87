r"""Seed-vector shift sweep. Kept short: all logic is in jaxdiffattack.sweep.

  python launch/sweep.py --config configs/shift_sweep.py:toy --workdir runs/sweep_toy
"""

import sys

from absl import flags
from ml_collections import config_flags

from jaxdiffattack import cli
from jaxdiffattack import distributed
from jaxdiffattack import sweep
from jaxdiffattack.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs.", required=True)
distributed.define_flags()


def main(argv):
  del argv
  try:
    distributed.initialize_from_flags()
    sweep.run(_CONFIG.value, _WORKDIR.value)
  except UserError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  cli.run(main)
