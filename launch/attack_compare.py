r"""ATM vs a separate run of the attack "random" on the same prompts, paired by prompt. Kept short:
the logic is in jaxdiffattack.attacks.report (`write_report(workdir, random_workdir)`).

  python launch/attack.py --config configs/atm.py:toy --workdir runs/atm_toy
  python launch/attack.py --config configs/atm.py:toy --workdir runs/random_toy \
      --config.attack.name=random --config.baseline=
  python launch/attack_compare.py --workdir runs/atm_toy --random_workdir runs/random_toy

Rewrites the ATM run's summary.json and report.md with the comparison ("A separate run of the
attack `random`"); the random run's files are only read.
"""

import argparse
import sys

from jaxdiffattack.attacks import report
from jaxdiffattack.errors import UserError


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="the ATM run's workdir (rewritten)")
  parser.add_argument("--random_workdir", required=True,
                      help="a finished run with --config.attack.name=random (read only)")
  args = parser.parse_args(argv)
  try:
    out = report.write_report(args.workdir, random_workdir=args.random_workdir)
  except UserError as e:
    sys.exit(f"error: {e}")
  run = out["summary"]["intervals"]["random_run"]
  print(f"{run['prompts_paired']} prompts paired; report: {args.workdir}/report.md")


if __name__ == "__main__":
  main()
