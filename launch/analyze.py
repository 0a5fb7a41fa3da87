r"""Failure analysis job. Kept short: all logic is in jaxdiffattack.analysis.

  python launch/analyze.py --config configs/analysis.py:toy --workdir runs/analysis_toy
"""

import shlex
import sys

from jaxdiffattack import cli  # first: it quiets third-party warnings before they are imported
from jaxdiffattack.analysis import run as analysis

if __name__ == "__main__":
  cli.main(lambda config, workdir: analysis.run(
      config, workdir, command="python " + shlex.join(sys.argv)))
