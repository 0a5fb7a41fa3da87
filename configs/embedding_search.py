r"""Prompt-embedding failure search (SAGE, arXiv 2306.00974): a bounded perturbation
(‖δ_k‖ ≤ ε‖e_k‖ per token) of the clean prompt's text-encoder output that makes its image fail.

  python launch/search.py --config configs/embedding_search.py:toy --workdir runs/embedding_toy
  python launch/search.py --config configs/embedding_search.py --workdir runs/embedding

Variants: `toy` (the shipped toy world, CPU minutes), `input` (perturb the input token embeddings
instead of the encoder's output), `wide` (every label of the label set × 2 seeds),
`world2` (world 2's generator and judges: 5 near-neighbour labels, short grammar captions,
judged by the held-out RegNetY, each surrogate member and the scene oracle "world2_oracle"),
`world2,smoke` (2 labels, population 2 × 1 generation, 2 steps: for the tests).. Images use
each target's fixed base latent, so failures are due to the text conditioning alone.
"""

from jaxdiffattack import variants as variants_lib
from jaxdiffattack.search import config as search_config

VARIANTS = ("toy", "world2", "smoke", "input", "wide")


def get_config(arg: str | None = None):
  variants = variants_lib.parse(arg, VARIANTS, __file__)
  c = search_config.base_config()
  c.space = "embedding"
  c.strategy.name = "Sep_CMA_ES"
  c.strategy.std_init = 0.5
  c.embedding.epsilon = 0.2
  if "input" in variants:
    c.embedding.level = "input"
  if "toy" in variants:
    search_config.toy(c)
  if "world2" in variants:
    search_config.world2(c)
  if "smoke" in variants:
    search_config.smoke(c)
  if "wide" in variants:
    search_config.wide(c)
  return c
