r"""Evolutionary failure search (SAGE's four spaces). Kept short: the logic is in
jaxdiffattack.search.

  python launch/search.py --config configs/latent_search.py:toy --workdir runs/latent_toy
  python launch/search.py --config configs/embedding_search.py:toy --workdir runs/embedding_toy
  python launch/search.py --config configs/token_search.py:toy --workdir runs/token_toy
  python launch/search.py --config configs/prompt_search.py:toy --workdir runs/prompt_toy
"""

import pathlib

from jaxdiffattack import cli  # first: it quiets third-party warnings before they are imported
from jaxdiffattack import search  # lazy: evosax is imported after the distributed start


def pointers(workdir: str) -> tuple[str, ...]:
  """The console's last lines: the run's page and how to rate its images blind."""
  return (f"browse: {pathlib.Path(workdir) / 'index.html'} (open from disk)",
          f"rate blind: python launch/rate.py --workdir {workdir} "
          f"(writes {pathlib.Path(workdir) / 'rating' / 'index.html'})")


if __name__ == "__main__":
  cli.main(lambda config, workdir: search.run(config, workdir),
           # The last lines: per method, the failures oracle v2 confirms with its reasons,
           # the report, the run's index.html and its blind-rating page.
           console=lambda out, workdir: search.report.console_summary(
               out["rows"], out["summary"], workdir, pointers=pointers(workdir)))
