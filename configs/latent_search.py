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

`world2,protocol` (issue #26 item 1; `search_config.world2_protocol`): SAGE's search vs random on
world 2's census targets — the clean census first, then the protocol on the prompts it selects
(clean per-seed failure rate 1–10 % by the scene oracle over 64 seeds, 40 targets spread over
classes and the kinds single / two objects / long caption):

  python launch/census.py --config configs/census.py:world2 --workdir runs/census_world2
  python launch/search.py --config configs/latent_search.py:world2,protocol \
      --config.targets_file=runs/census_world2/targets.json --workdir runs/protocol_world2

(targets_file defaults to that census workdir's targets.json; an absent file or an empty
selection stops the search in one line). Each target's caption is its prompt and the oracle
judges every image against that caption's facts; the classifiers (fitness: the surrogate
ensemble's margin, ViT + ResNet + noise-trained ResNet + CLIP; the held-out RegNetY evaluator) read
the census row's class, the scene's first group (on two-object captions a proxy). Methods random,
Sep_CMA_ES, LM_MA_ES, adam, pgd, 16 × 16 = 256 evaluations each per target, the whole budget
used; targets whose clean start latent the oracle already fails are excluded and counted.
Writes docs/results/search_protocol_world2.{md,json}: success (oracle "violated") beside every
other judge, McNemar and the paired interval vs random, failure yield and first failure vs random
(paired bootstrap, t / Wilcoxon, sign test), rates per prompt kind, transfer to the next 5
targets' captions. Estimated cost (docs/results/search_protocol_world2_cost.json,
benchmarks/search_protocol_cost.py; an extrapolation, not a run): a forward evaluation of world
2's full UNet (20 guided steps) and VAE with random weights plus the oracle costs 0.175 CPU-s, a
gradient evaluation (backward through every step) 0.41 CPU-s (2.4×; the whole gradient pipeline
on the smoke world measured 3.8–5.2× a forward one in wall time), so 40 targets × 256 × 5 methods
≈ 3.8 CPU-hours (≈ 6 at the smoke world's ratio), not counting the five classifiers (~0.1 GFLOP
an image each against ~9 of sampling) and the transfer test (~5 % more), plus the census's ~1.0
CPU-hour; on this shared 2-core machine, where a nice'd job gets ~35 % of a core, 11–17 hours.
`world2,protocol,smoke`: population 2 × 2 generations, 2 steps, transfer to 1 caption (the tests,
on a smoke census).

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
