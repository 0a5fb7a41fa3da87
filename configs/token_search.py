r"""Adversarial-token search (SAGE, arXiv 2306.00974): one token embedding appended to a prompt so
the images show a chosen target class while the CLIP score against the clean prompt stays high.

  python launch/search.py --config configs/token_search.py:toy --workdir runs/token_toy
  python launch/search.py --config configs/token_search.py --workdir runs/token

Variants: `toy` (the shipped toy world, CPU minutes),
`world2` (world 2's generator and judges: 5 labels each pushed towards a near neighbour,
short grammar captions, judged by the held-out RegNetY, each surrogate member and the scene
oracle "world2_oracle"), `world2,smoke` (2 labels, population 2 × 1 generation, 2 steps: for the
tests). Targeted: label i's prompt should show
target_labels[i]; fitness = −(surrogate margin of the target class: the scorer's aux label is the
target); success = the evaluator's top-1 is the target AND the CLIP score against the clean
prompt is ≥ 90 % of the clean image's (CLIP filter "min", relative). The solution is
D_tok-dimensional (768 for SD1.5), small enough for full CMA-ES.
"""

from jaxdiffattack import variants as variants_lib
from jaxdiffattack.search import config as search_config

VARIANTS = ("toy", "world2", "smoke")


def get_config(arg: str | None = None):
  variants = variants_lib.parse(arg, VARIANTS, __file__)
  c = search_config.base_config()
  c.space = "token"
  c.strategy.name = "CMA_ES"
  c.strategy.std_init = 1.0
  c.label_set = "imagenet1k"
  c.labels = ("goldfish", "tabby cat", "school bus", "pizza", "sports car")
  c.target_labels = ("pizza", "school bus", "tabby cat", "goldfish", "tabby cat")
  # The scorer's label is the TARGET class here (targeted: target_labels): maximise its surrogate
  # margin; a judge "fails" the image when its top-1 IS the target.
  c.criterion.fitness = "surrogate/margin"
  c.criterion.fitness_sign = -1.0
  c.criterion.clip_filter.mode = "min"
  c.criterion.clip_filter.threshold = 0.9
  c.criterion.clip_filter.relative = True
  if "toy" in variants:
    search_config.toy(c)
    c.target_labels = ("blue square", "red triangle", "yellow circle", "green cross",
                       "blue star")
  if "world2" in variants:
    search_config.world2(c)
    c.target_labels = ("crimson circle", "crimson rectangle", "blue square", "green star",
                       "orange circle")
  if "smoke" in variants:
    search_config.smoke(c)
  return c
