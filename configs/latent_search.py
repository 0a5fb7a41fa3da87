r"""Latent-space failure search (SAGE, arXiv 2306.00974): initial noises that make an ordinary
prompt's image fail, kept in distribution (on the sphere of radius √d), vs random seeds.

  python launch/search.py --config configs/latent_search.py:toy --workdir runs/latent_toy
  python launch/search.py --config configs/latent_search.py:toy,wide --workdir runs/latent_toy_wide
  python launch/search.py --config configs/latent_search.py --workdir runs/latent

Variants after the colon (comma-separated): `toy` (the shipped toy world: 5 labels, population 16,
8 generations, 20 DDIM steps; a few minutes on 2 CPU cores); `wide` (every label of the label set
× 2 seeds; toy: 40 targets, about 10 minutes on one core with the baseline); `protocol` (with
`toy`: every label × 4 seeds, clean-passing targets only, random vs Sep-CMA-ES vs Adam at equal
budget, writes docs/results/search_protocol.{md,json}; see jaxdiffattack.search.protocol);
`world2` (world 2's generator and judges: 5 near-neighbour labels, short grammar captions; a
failure is what its held-out RegNetY AND its scene oracle "world2_oracle" both call one; read
also by each surrogate member); `world2,smoke` (2 labels, population 2 × 1 generation, 2 steps:
for the tests):

  python launch/search.py --config configs/latent_search.py:toy,protocol --workdir runs/protocol

Full run: SD1.5
(latent 4×64×64, n = 16384) with Sep-CMA-ES, population 64 × 50 generations per target, 10
ImageNet-100 labels;
surrogate = classifier ensemble margin of the prompt's class (minimised), success = the held-out
evaluator no longer puts the class top-1 (toy, not protocol: the evaluator AND oracle v2 call the
image a failure -- the oracle says the prompt is violated, with its reason); baseline = random
seeds at the same budget. Reports the Non-Gaussian Rate of found latents (KS vs N(0, 1),
D'Agostino–Pearson, per-channel moments and spatial autocorrelation, α = 0.05) and every judge's
reading of each failure (toy: the oracle's, with its reason).
"""

from jaxdiffattack import variants as variants_lib
from jaxdiffattack.errors import check
from jaxdiffattack.search import config as search_config

VARIANTS = ("toy", "world2", "smoke", "wide", "protocol")


def get_config(arg: str | None = None):
  variants = variants_lib.parse(arg, VARIANTS, __file__)
  c = search_config.base_config()
  c.space = "latent"
  c.strategy.name = "Sep_CMA_ES"
  c.strategy.std_init = 1.0  # toy world, 80 targets: 69 % fail (0.5: 55 %; README)
  if "toy" in variants:
    search_config.toy(c)
    if "protocol" not in variants:
      # The README's main command: a failure is what the held-out evaluator AND oracle v2 (a
      # verdict calibrated on blind ratings, docs/results/oracle_v2.md) both call one;
      # the run ends by listing, per method, the oracle-confirmed failures with its reasons.
      c.criterion.verdict = "agree"
      c.criterion.agree = ("evaluator", "oracle")
  if "world2" in variants:
    search_config.world2(c)
    if "protocol" not in variants:  # as the toy's main command: evaluator AND the world's oracle
      c.criterion.verdict = "agree"
      c.criterion.agree = ("evaluator", "world2_oracle")
  if "world2" in variants and "protocol" in variants:
    check("wide" not in variants, "variants", arg, "world2,protocol takes its targets from "
          "the census (targets_file): drop 'wide'")
    return search_config.world2_protocol(c, smoke="smoke" in variants)
  if "smoke" in variants:
    search_config.smoke(c)
  if "wide" in variants:
    search_config.wide(c)
  if "protocol" in variants:
    search_config.protocol(c)
  return c
