"""Failure search (SAGE, arXiv 2306.00974) with evosax and gradients, sharded and resumable.

  python launch/search.py --config configs/latent_search.py:toy --workdir runs/latent_toy

Modules: `strategies` (evosax strategies by name + "random", batched over targets), `gradient` (Adam
/ PGD through the differentiable sampler, same interface), `spaces` (latent, embedding, token,
prompt), `criterion` (which score is the fitness, which verdict rule decides a failure; CLIP
filter), `targets` (one search per label × seed; targets by clean failure rate), `driver` (the
generation loop, checkpoint/resume), `experiment` (`run`: the job), `report` (results, NGR, summary,
plots), `protocol` (clean-passing targets, budgets per method, rates by judge vs random paired,
transfer). What scores the images is the shared `jaxdiffattack.scoring`; who judges them,
`jaxdiffattack.judges`.
"""

import importlib

__all__ = ["run", "write_report"]
_EXPORTS = {"run": "experiment", "write_report": "report"}


def __getattr__(name):
  """`run`, `write_report` and the submodules, imported on first use: the configs import
  `jaxdiffattack.search.config`, which must not import evosax (it computes with JAX when
  imported, and a multi-host launcher starts jax.distributed after parsing the config)."""
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
  try:
    return importlib.import_module(f"{__name__}.{name}")
  except ModuleNotFoundError as e:
    if e.name != f"{__name__}.{name}":
      raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
