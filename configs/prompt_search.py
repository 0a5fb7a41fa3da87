r"""Natural-prompt failure search (SAGE, arXiv 2306.00974): word substitutions and insertions around
the class noun (which always stays) whose images miss the noun's object, with the text similarity
to the clean prompt kept ≥ 0.8.

  python launch/search.py --config configs/prompt_search.py:toy --workdir runs/prompt_toy
  python launch/search.py --config configs/prompt_search.py --workdir runs/prompt

Variants: `toy` (the shipped toy world, CPU minutes), `logits` (CMA-ES-style relaxation: one logit
per slot × word, argmax decoding, with Sep-CMA-ES) — default is the integer encoding with evosax's
SimpleGA; `wide` (every label of the label set × 2 seeds);
`world2` (world 2's generator and judges: 5 near-neighbour labels, short grammar captions,
judged by the held-out RegNetY, each surrogate member and the scene oracle "world2_oracle"),
`world2,smoke` (2 labels, population 2 × 1 generation, 2 steps: for the tests); world 2's
tokenizer holds the toy's class-free words too. Vocabulary: the toy tokenizer's
class-free words, minus every word of every class name.
"""

from jaxdiffattack import variants as variants_lib
from jaxdiffattack.search import config as search_config

VARIANTS = ("toy", "world2", "smoke", "logits", "wide")


def get_config(arg: str | None = None):
  variants = variants_lib.parse(arg, VARIANTS, __file__)
  c = search_config.base_config()
  c.space = "prompt"
  c.strategy.name = "SimpleGA"
  c.strategy.std_init = 1.0   # mutation std in index units: ~40 % of slots keep their choice
  c.prompt.encoding = "integer"
  if "logits" in variants:
    c.prompt.encoding = "logits"
    c.strategy.name = "Sep_CMA_ES"
    c.strategy.std_init = 1.0
  if "toy" in variants:
    search_config.toy(c)
  if "world2" in variants:
    search_config.world2(c)
  if "smoke" in variants:
    search_config.smoke(c)
  if "wide" in variants:
    search_config.wide(c)
  return c
