"""What a search optimises (surrogate) and what judges it (held-out evaluator, CLIP filter).

SAGE (arXiv 2306.00974) optimises against classifiers and judges success separately, so that it
finds failures of the generator rather than of one classifier. Here both come from ONE fused scorer
run inside the sampler's compiled program (`sampler.PopulationSampler(score_fn=...)`, exactly as the
sweep's `Scoring`): `score_fn(score_params, images [P, H, W, 3], aux) -> {name: [P]}` with aux
{"label": the prompt's class, "target": the class a targeted search wants, "prompt": the target's
index into the clean prompts} (label-set indices, see `targets`). The config names which outputs
play which role (`config.objective`):

  fitness   = fitness_sign · scores[fitness]  + space penalty (+ clip_penalty term) — minimised
  success   = scores[success] <below|above> success_threshold  ∧ space constraint holds
              ∧ CLIP filter passes (when enabled)

CLIP filter (`objective.clip_filter`, reported either way): mode "min" keeps failures whose CLIP
score against the clean prompt is ≥ threshold (the adversarial token's "CLIP score barely moves"),
"max" keeps those ≤ threshold (CLIP, a third model, also sees the image miss the prompt), "off".
With `relative=True` the threshold is a fraction of the clean generation's CLIP score.
`clip_penalty` > 0 also adds clip_penalty · (how far the filter is missed) to the fitness.

Per-member aux. A `SearchScoring` may carry `target_aux(targets) -> {name: [T, ...]}`: the aux
of each target (e.g. fitness's {"label", "clip_text"}), indexed per member by the driver; without
it the aux is `targets.aux_arrays` ({"label", "target", "prompt"} as above).

`make_scoring(config)` builds the real scorer — THE integration hook: `config.scoring ==
"synthetic"` gives `synthetic_scoring()` (image statistics, no model: tests and plumbing);
"models" builds `jaxdiffattack.fitness` roles (imported lazily): `fitness.default_config(
config.label_set)` updated with the non-empty entries of `config.fitness` (roles, objectives,
scorers), so score names are "<role>/<objective>" ("surrogate/margin", "evaluator/top1_hit",
"evaluator/clip_score"). Its per-target aux: label = the target class (the prompt's class, or
`target_labels` for targeted searches — fitness roles score every objective against aux["label"])
and clip_text = the CLEAN prompt's CLIP text embedding (CLIP score against the clean prompt).
"""

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxdiffattack.errors import ConfigError
from jaxdiffattack.errors import check
from jaxdiffattack.sweep import Scoring

CLIP_MODES = ("off", "min", "max")


class SearchScoring(Scoring):
  """A sweep `Scoring` plus, optionally, the per-target aux it needs (see the module docstring)."""

  def __init__(self, score_fn, score_params, target_aux=None):
    super().__init__(score_fn, score_params)
    self.target_aux = target_aux


def synthetic_scoring() -> Scoring:
  """A model-free scorer over image statistics, for tests and plumbing checks.

  With c(i) = i % 3 a colour channel per class and m_k the image's mean of channel k:
    surrogate_margin = m_c(label) − max_{k ≠ c(label)} m_k   (class evidence of the prompt's class)
    top1_hit         = 1 if channel c(label) is the brightest  (the "evaluator": a different rule)
    target_margin    = m_c(target) − max_{k ≠ c(target)} m_k
    target_hit       = 1 if channel c(target) is the brightest
    clip_score       = 100 · (1 − |mean brightness − 0.5|)
  """
  def channel_scores(means, cls):
    c = cls % 3
    own = jnp.take_along_axis(means, c[:, None], axis=1)[:, 0]
    others = jnp.where(jnp.arange(3)[None] == c[:, None], -jnp.inf, means).max(axis=1)
    return own - others, (jnp.argmax(means, axis=1) == c).astype(jnp.float32)

  def score_fn(params, images, aux):
    del params
    means = images.mean(axis=(1, 2))                                    # [P, 3]
    margin, hit = channel_scores(means, aux["label"])
    t_margin, t_hit = channel_scores(means, aux["target"])
    return {"surrogate_margin": margin, "top1_hit": hit, "target_margin": t_margin,
            "target_hit": t_hit,
            "clip_score": 100 * (1 - jnp.abs(images.mean(axis=(1, 2, 3)) - 0.5))}

  return SearchScoring(score_fn, {})


def make_scoring(config) -> Scoring:
  """The scorer of a search run, from the config (the integration hook; see module docstring)."""
  if config.scoring == "synthetic":
    return synthetic_scoring()
  from jaxdiffattack import fitness  # pylint: disable=g-import-not-at-top
  fit_config = fitness.default_config(config.label_set or "toy")
  for key, value in config.fitness.items():
    value = value.to_dict() if hasattr(value, "to_dict") else value
    if value:
      fit_config[key] = value
  fit = fitness.build(fit_config)

  def target_aux(targets):
    return fit.aux(labels=[t.target_index for t in targets], prompts=[t.prompt for t in targets])

  return SearchScoring(fit.score_fn, fit.params, target_aux=target_aux)


@dataclasses.dataclass(frozen=True)
class Objective:
  fitness: str
  fitness_sign: float
  success: str
  success_when: str            # "below" or "above"
  success_threshold: float
  clip: str                    # score name of the CLIP score ("" if the scorer has none)
  clip_mode: str = "off"
  clip_threshold: float = 0.0
  clip_relative: bool = True
  clip_penalty: float = 0.0

  @classmethod
  def from_config(cls, c) -> "Objective":
    o = c.objective
    check(o.success_when in ("below", "above"), "objective.success_when", o.success_when,
          "use 'below' or 'above'")
    check(o.fitness_sign in (1.0, -1.0, 1, -1), "objective.fitness_sign", o.fitness_sign,
          "use 1 (minimise the score) or -1 (maximise it)")
    check(o.clip_filter.mode in CLIP_MODES, "objective.clip_filter.mode", o.clip_filter.mode,
          f"use one of {CLIP_MODES}")
    check(o.clip_filter.mode == "off" or o.clip, "objective.clip", o.clip,
          "name the scorer's CLIP score to use a CLIP filter")
    return cls(fitness=o.fitness, fitness_sign=float(o.fitness_sign), success=o.success,
               success_when=o.success_when, success_threshold=float(o.success_threshold),
               clip=o.clip, clip_mode=o.clip_filter.mode,
               clip_threshold=float(o.clip_filter.threshold),
               clip_relative=bool(o.clip_filter.relative),
               clip_penalty=float(o.clip_filter.penalty))

  def check_scores(self, scores: dict) -> None:
    needed = [self.fitness, self.success] + ([self.clip] if self.clip else [])
    missing = [k for k in needed if k not in scores]
    if missing:
      raise ConfigError(f"config.objective names score(s) {missing} the scorer does not return; "
                        f"it returns {sorted(scores)}")

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
