"""Failure search (SAGE, arXiv 2306.00974) with evosax and gradients, sharded and resumable.

  python launch/search.py --config configs/latent_search.py:toy --workdir runs/latent_toy

Modules: `strategies` (evosax strategies by name + "random", batched over targets), `gradient`
(Adam / PGD through the differentiable sampler, same interface), `spaces` (latent, embedding,
token, prompt), `criterion` (which score is the fitness, which verdict rule decides a failure;
CLIP filter), `targets` (one search per label × seed), `driver` (the generation loop,
checkpoint/resume), `experiment` (`run`: the job), `report` (results, NGR, summary, plots),
`protocol` (clean-passing targets, rates by judge vs random, transfer). What scores the images is
the shared `jaxdiffattack.scoring`; who judges them, `jaxdiffattack.judges`.
"""

from jaxdiffattack.search.experiment import run
from jaxdiffattack.search.report import write_report

__all__ = ["run", "write_report"]
