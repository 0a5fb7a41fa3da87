r"""Evolutionary failure search (SAGE's four spaces). Kept short: the logic is in
jaxdiffattack.search.

  python launch/search.py --config configs/latent_search.py:toy --workdir runs/latent_toy
  python launch/search.py --config configs/embedding_search.py:toy --workdir runs/embedding_toy
  python launch/search.py --config configs/token_search.py:toy --workdir runs/token_toy
  python launch/search.py --config configs/prompt_search.py:toy --workdir runs/prompt_toy
"""

from jaxdiffattack import cli  # first: it quiets third-party warnings before they are imported
from jaxdiffattack import search  # lazy: evosax is imported after the distributed start

if __name__ == "__main__":
  cli.main(lambda config, workdir: search.run(config, workdir),
           console=lambda out, workdir: search.report.console_summary(
               out["rows"], out["summary"], workdir))
