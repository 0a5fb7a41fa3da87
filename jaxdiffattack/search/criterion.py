"""The search's rule: which score is minimised (fitness) and which decides a failure (success).

SAGE (arXiv 2306.00974) optimises against classifiers and judges success separately, so that it
finds failures of the generator rather than of one classifier. The scores come from the job's
`scoring.Scoring` (one fused scorer inside the sampler's compiled program, names such as
"surrogate/margin", "evaluator/top1_hit", "evaluator/clip_score"); `config.criterion` names which
of them play which part:

  fitness   = fitness_sign · scores[fitness]  + space penalty (+ clip_filter.penalty term) —
              minimised
  success   = scores[success] <below|above> success_threshold  ∧ space constraint holds
              ∧ CLIP filter passes (when enabled)

CLIP filter (`criterion.clip_filter`, reported either way): mode "min" keeps failures whose CLIP
score (`criterion.clip`) against the clean prompt is ≥ threshold (the adversarial token's "CLIP
score barely moves"), "max" keeps those ≤ threshold (CLIP, a third model, also sees the image miss
the prompt), "off". With `relative=True` the threshold is a fraction of the clean generation's
CLIP score. `penalty` > 0 also adds penalty · (how far the filter is missed) to the fitness.
`criterion.diversity_weight` is SAGE's diversity term (see `driver`).
"""

import dataclasses

import numpy as np

from jaxdiffattack.errors import check

CLIP_MODES = ("off", "min", "max")


@dataclasses.dataclass(frozen=True)
class Criterion:
  fitness: str                 # score name minimised (× fitness_sign)
  fitness_sign: float
  success: str                 # score name of the held-out judge
  success_when: str            # "below" or "above"
  success_threshold: float
  clip: str                    # score name of the CLIP score ("" if the scorer has none)
  clip_mode: str = "off"
  clip_threshold: float = 0.0
  clip_relative: bool = True
  clip_penalty: float = 0.0

  @classmethod
  def from_config(cls, c) -> "Criterion":
    o = c.criterion
    check(o.success_when in ("below", "above"), "criterion.success_when", o.success_when,
          "use 'below' or 'above'")
    check(o.fitness_sign in (1.0, -1.0, 1, -1), "criterion.fitness_sign", o.fitness_sign,
          "use 1 (minimise the score) or -1 (maximise it)")
    check(o.clip_filter.mode in CLIP_MODES, "criterion.clip_filter.mode", o.clip_filter.mode,
          f"use one of {CLIP_MODES}")
    check(o.clip_filter.mode == "off" or o.clip, "criterion.clip", o.clip,
          "name the scorer's CLIP score to use a CLIP filter")
    check(o.diversity_weight >= 0, "criterion.diversity_weight", o.diversity_weight,
          "use a number >= 0")
    return cls(fitness=o.fitness, fitness_sign=float(o.fitness_sign), success=o.success,
               success_when=o.success_when, success_threshold=float(o.success_threshold),
               clip=o.clip, clip_mode=o.clip_filter.mode,
               clip_threshold=float(o.clip_filter.threshold),
               clip_relative=bool(o.clip_filter.relative),
               clip_penalty=float(o.clip_filter.penalty))

  @property
  def score_names(self) -> tuple[str, ...]:
    """The scores this criterion reads (for `Scoring.check_names`)."""
    return (self.fitness, self.success) + ((self.clip,) if self.clip else ())

  def clip_bound(self, clean_clip: np.ndarray) -> np.ndarray:
    return self.clip_threshold * clean_clip if self.clip_relative else (
        np.full_like(clean_clip, self.clip_threshold))

  def clip_pass(self, clip: np.ndarray, bound: np.ndarray) -> np.ndarray:
    if self.clip_mode == "min":
      return clip >= bound
    if self.clip_mode == "max":
      return clip <= bound
    return np.ones(clip.shape, bool)

  def verdict(self, scores: dict) -> np.ndarray:
    """The held-out judge: True where the image is a failure (before the CLIP filter)."""
    value = np.asarray(scores[self.success], np.float64)
    if self.success_when == "below":
      return value < self.success_threshold
    return value > self.success_threshold

  def reduce(self, scores: dict, penalty: np.ndarray, feasible: np.ndarray,
             clean_clip: np.ndarray):
    """(fitness [M], success [M], clip_ok [M]) from per-member scores; clean_clip [M]."""
    fitness = self.fitness_sign * np.asarray(scores[self.fitness], np.float64) + penalty
    clip_ok = np.ones(fitness.shape, bool)
    if self.clip and self.clip_mode != "off":
      clip = np.asarray(scores[self.clip], np.float64)
      bound = self.clip_bound(clean_clip)
      clip_ok = self.clip_pass(clip, bound)
      if self.clip_penalty:
        miss = bound - clip if self.clip_mode == "min" else clip - bound
        fitness = fitness + self.clip_penalty * np.maximum(miss, 0.0)
    success = self.verdict(scores) & feasible & clip_ok
    return fitness, success, clip_ok
