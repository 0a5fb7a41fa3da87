r"""Seed-vector shift sweep. Kept short: all logic is in jaxdiffattack.sweep.

  python launch/sweep.py --config configs/shift_sweep.py:toy --workdir runs/sweep_toy
"""

from jaxdiffattack import cli  # first: it quiets third-party warnings before they are imported
from jaxdiffattack import sweep

if __name__ == "__main__":
  cli.main(sweep.run)
