r"""ATM attack job (arXiv 2306.02583). Kept short: the logic is in jaxdiffattack.attacks.job.

  python launch/attack.py --config configs/atm.py:toy,smoke --workdir runs/atm_smoke
  python launch/attack.py --config configs/atm.py:toy --workdir runs/atm_toy
"""

import sys

from absl import flags
from ml_collections import config_flags

from jaxdiffattack import distributed
from jaxdiffattack.attacks import job
from jaxdiffattack.attacks import report
from jaxdiffattack import cli
from jaxdiffattack.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs.", required=True)
distributed.define_flags()


def main(argv):
  del argv
  try:
    distributed.initialize_from_flags()
    out = job.run(_CONFIG.value, _WORKDIR.value)
    if distributed.is_writer():
      print(report.console_summary(out["summary"], _WORKDIR.value))
  except UserError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  cli.run(main)
