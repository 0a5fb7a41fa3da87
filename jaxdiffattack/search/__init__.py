"""Evolutionary failure search (SAGE, arXiv 2306.00974) with evosax, sharded and resumable.

  python launch/search.py --config configs/latent_search.py:toy --workdir runs/latent_toy

Modules: `strategies` (evosax strategies by name + "random", batched over targets), `spaces`
(latent, embedding, token, prompt), `objectives` (surrogate fitness, held-out judge, CLIP filter;
the scorer hook), `driver` (the generation loop, checkpoint/resume), `experiment` (`run`: the job),
`report` (results, NGR, summary, plots).
"""

from jaxdiffattack.search.experiment import run
from jaxdiffattack.search.report import write_report

__all__ = ["run", "write_report"]
