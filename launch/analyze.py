r"""Failure analysis job. Kept short: all logic is in jaxdiffattack.analysis.

  python launch/analyze.py --config configs/analysis.py:toy --workdir runs/analysis_toy
"""

import shlex
import sys

from absl import flags
from ml_collections import config_flags

from jaxdiffattack import distributed
from jaxdiffattack.analysis import run as analysis
from jaxdiffattack import cli
from jaxdiffattack.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs.", required=True)
distributed.define_flags()


def main(argv):
  del argv
  try:
    distributed.initialize_from_flags()
    analysis.run(_CONFIG.value, _WORKDIR.value, command="python " + shlex.join(sys.argv))
  except UserError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  cli.run(main)
