r"""Generates images for prompts × seeds. Kept short: all logic is in jaxdiffattack.generate.

  python launch/generate.py --config configs/generate.py --workdir runs/generate
"""

from jaxdiffattack import cli  # first: it quiets third-party warnings before they are imported
from jaxdiffattack import generate

if __name__ == "__main__":
  cli.main(generate.run)
