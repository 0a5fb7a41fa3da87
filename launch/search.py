r"""Evolutionary failure search (SAGE's four spaces). Kept short: the logic is in
jaxdiffattack.search.

  python launch/search.py --config configs/latent_search.py:toy --workdir runs/latent_toy
  python launch/search.py --config configs/embedding_search.py:toy --workdir runs/embedding_toy
  python launch/search.py --config configs/token_search.py:toy --workdir runs/token_toy
  python launch/search.py --config configs/prompt_search.py:toy --workdir runs/prompt_toy
"""

import sys

from absl import flags
from ml_collections import config_flags

from jaxdiffattack import cli
from jaxdiffattack import distributed
from jaxdiffattack import search
from jaxdiffattack.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs.", required=True)
distributed.define_flags()


def main(argv):
  del argv
  try:
    distributed.initialize_from_flags()
    out = search.run(_CONFIG.value, _WORKDIR.value)
    if distributed.is_writer():
      # The last lines: per method, the failures oracle v2 confirms with its reasons; then
      # `pointers` (one line each: the run's index.html and rating page, when written).
      print(search.report.console_summary(out["rows"], out["summary"], _WORKDIR.value,
                                          pointers=()))
  except UserError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  cli.run(main)
