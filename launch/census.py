r"""World 2's clean failure census. Kept short: all logic is in jaxdiffattack.census.

  python launch/census.py --config configs/census.py:world2 --workdir runs/census_world2
"""

from jaxdiffattack import cli  # first: it quiets third-party warnings before they are imported
from jaxdiffattack import census

if __name__ == "__main__":
  cli.main(census.run)
