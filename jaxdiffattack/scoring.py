"""The job's scoring bundle: one `Scoring`, what a job scores its images with.

Built from a job's config by `objectives.make_scoring` (this module is below it and imports
neither `objectives` nor `scorers`).

Every job — the shift sweep, the failure search, the coming gradient attacks — judges generated
images through a `Scoring`:

  score_fn(params, images [P, H, W, 3], aux) -> {name: [P]}   pure; fused into the sampler's
                                                             compiled program (`sampler.ScoreFn`)
  params                                                     replicated on the device mesh
  names                                                      the names score_fn returns
  make_aux(labels [P] int32, prompts [P] str) -> aux         per-member inputs, built on the host

`aux(labels=..., prompts=...)` is the one per-target (or per-member) aux builder: labels are the
classes to judge against (label-set indices, or label ids/names), prompts the texts CLIP scores
compare with. A job builds it once per target and indexes it per member.

Score names are "<role>/<objective>" (`jaxdiffattack.objectives`: roles such as "surrogate" and
"evaluator", objectives such as "margin", "top1_hit", "pred", "confidence", "clip_score"), so
every role can already report a judge's reading — its predicted class ("pred") and how sure it is
("confidence") — beside the job's fitness. What a job does with the scores (which one is
minimised, which decides success) is the job's own rule (e.g. `search.criterion.Criterion`).

`objectives.make_scoring(config)` reads the job config's `scoring` block:
  scoring.kind        "models": `objectives.build` of `objectives.default_config(config.label_set)`
                      with the non-empty entries of scoring.{roles, objectives, scorers} in place
                      of the defaults; "synthetic": `synthetic_scoring()` (image statistics, no
                      model: tests and plumbing checks).
  judges              (optional, top level) the job's judges (`jaxdiffattack.judges`): every
                      role named there also returns the judge objectives (pred, confidence,
                      top1_hit, margin), and a scorer named there (e.g. "toy_resnet") becomes a
                      role of its own; image judges ("oracle") read images on the host, not here.
"""

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack.errors import ConfigError
from jaxdiffattack.errors import UserError



@dataclasses.dataclass(frozen=True, eq=False)
class Scoring:
  """What judges the images (see the module docstring)."""
  score_fn: Callable                      # (params, images [P, H, W, 3], aux) → {name: [P]}
  params: Any
  names: tuple[str, ...]                  # the keys of score_fn's output
  make_aux: Callable                      # (labels [P] int32 | None, prompts [P] | None) → aux
  label_set: Any = None                   # labels.LabelSet: label names/ids → indices
  roles: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # objectives.Role by name
  jitted: Callable | None = dataclasses.field(default=None, repr=False)  # jax.jit(score_fn)

  def label_indices(self, labels) -> np.ndarray:
    """[P] int32 label-set indices of labels given as indices or label ids/names."""
    if self.label_set is None:
      values = list(labels)
      if values and all(isinstance(v, (str, np.str_)) for v in values):
        raise UserError(f"label {values[0]!r}: this scoring has no label set; give indices")
      return np.asarray(values, np.int32)
    from jaxdiffattack import labels as labels_lib  # pylint: disable=g-import-not-at-top
    return labels_lib.indices(self.label_set, labels)

  def aux(self, labels=None, prompts: Sequence[str] | None = None):
    """Per-member inputs of `score_fn` (host NumPy) for P members.

    Args:
      labels: [P] classes to judge against, as label-set indices or label ids/names.
      prompts: [P] texts for CLIP scores.
    """
    if labels is not None and prompts is not None and len(labels) != len(prompts):
      raise UserError(f"{len(labels)} labels but {len(prompts)} prompts: give one per member")
    return self.make_aux(None if labels is None else self.label_indices(labels),
                         None if prompts is None else list(prompts))

  def check_names(self, names: Sequence[str], key: str) -> None:
    """ConfigError naming `config.<key>` unless every name is one of the scores returned."""
    missing = [n for n in names if n and n not in self.names]
    if missing:
      raise ConfigError(f"config.{key} names score(s) {missing} the scorer does not return; "
                        f"it returns {sorted(self.names)}")

  def __call__(self, images, aux) -> dict:
    """Scores images [P, H, W, 3] in [0, 1] on the default device (jitted; no sampler)."""
    score = self.jitted or jax.jit(self.score_fn)
    return score(self.params, jnp.asarray(images, jnp.float32), aux)

  def score(self, images, labels=None, prompts: Sequence[str] | None = None) -> dict:
    """{name: [P] NumPy} for images [P, H, W, 3] in [0, 1] and their labels / prompts."""
    scores = self(images, self.aux(labels=labels, prompts=prompts))
    return {key: np.asarray(value) for key, value in scores.items()}


SYNTHETIC_NAMES = ("surrogate/margin", "evaluator/top1_hit", "evaluator/top5_hit",
                   "evaluator/pred", "evaluator/confidence", "evaluator/margin",
                   "evaluator/clip_score")


def synthetic_scoring() -> Scoring:
  """A model-free scoring over image statistics with the real scores' names (tests, plumbing).

  Class i is "drawn" when colour channel c(i) = i % 3 is the image's brightest; with m_k the
  image's mean of channel k and c = c(label):
    surrogate/margin     = m_c − max_{k ≠ c} m_k        (class evidence of the label)
    evaluator/top1_hit   = 1 if channel c is the brightest
    evaluator/top5_hit   = 1 if channel c is not the darkest
    evaluator/pred       = the brightest channel (argmax_k m_k)
    evaluator/confidence = softmax(10 · m)[pred]
    evaluator/margin     = surrogate/margin         (the same evidence, read by the evaluator)
    evaluator/clip_score = 100 · (1 − |mean brightness − 0.5|)
  """
  def score_fn(params, images, aux):
    del params
    means = images.mean(axis=(1, 2))                                    # [P, 3]
    channel = aux["label"] % 3
    own = jnp.take_along_axis(means, channel[:, None], axis=1)[:, 0]
    others = jnp.where(jnp.arange(3)[None] == channel[:, None], -jnp.inf, means)
    pred = jnp.argmax(means, axis=1)
    margin = own - others.max(axis=1)
    return {"surrogate/margin": margin, "evaluator/margin": margin,
            "evaluator/top1_hit": (pred == channel).astype(jnp.float32),
            "evaluator/top5_hit": (jnp.argmin(means, axis=1) != channel).astype(jnp.float32),
            "evaluator/pred": pred.astype(jnp.int32),
            "evaluator/confidence": jax.nn.softmax(10 * means, axis=1).max(axis=1),
            "evaluator/clip_score": 100 * (1 - jnp.abs(images.mean(axis=(1, 2, 3)) - 0.5))}

  def make_aux(labels, prompts):
    del prompts
    if labels is None:
      raise UserError("the synthetic scoring needs labels (one class index per member)")
    return {"label": labels}

  return Scoring(score_fn, {}, SYNTHETIC_NAMES, make_aux, jitted=jax.jit(score_fn))
