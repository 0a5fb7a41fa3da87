r"""ATM attack job (arXiv 2306.02583). Kept short: the logic is in jaxdiffattack.attacks.job.

  python launch/attack.py --config configs/atm.py:toy,smoke --workdir runs/atm_smoke
  python launch/attack.py --config configs/atm.py:toy --workdir runs/atm_toy
"""

from jaxdiffattack import cli  # first: it quiets third-party warnings before they are imported
from jaxdiffattack.attacks import job
from jaxdiffattack.attacks import report

if __name__ == "__main__":
  cli.main(job.run, console=lambda out, workdir: report.console_summary(out["summary"], workdir))
