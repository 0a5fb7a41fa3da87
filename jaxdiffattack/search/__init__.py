"""Evolutionary failure search (SAGE, arXiv 2306.00974) with evosax, sharded and resumable.

  python launch/search.py --config configs/latent_search.py:toy --workdir runs/latent_toy

Modules: `strategies` (evosax strategies by name + "random", batched over targets), `spaces`
(latent, embedding, token, prompt), `criterion` (which score is the fitness, which the held-out
judge's verdict; CLIP filter), `targets` (one search per label × seed), `driver` (the generation
loop, checkpoint/resume), `experiment` (`run`: the job), `report` (results, NGR, summary, plots).
What scores the images is the shared `jaxdiffattack.scoring`.
"""

from jaxdiffattack.search.experiment import run
from jaxdiffattack.search.report import write_report

__all__ = ["run", "write_report"]
