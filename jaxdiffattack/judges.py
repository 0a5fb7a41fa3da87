"""Judges — every reader of a generated image — and the verdict rules that call it a failure.

SAGE (arXiv 2306.00974, §4) optimises against one set of classifiers and counts a failure only
when others confirm it: automatically (SSR(A), a held-out classifier) and by people (SSR(H)).

The judge interface (`Judge`): given M images and what they were made for (the class each should
show; `targeted`: the class each should NOT become; optionally the prompt each was made from, for
judges that read a whole caption), a judge returns one `Verdict` — per image its predicted class
(a name or None), confidence, failure, unclear and reason. A judge is one of

  * a model judge: a role of the job's `scoring.Scoring` whose scores include "<role>/pred",
    "<role>/confidence", "<role>/top1_hit" and "<role>/margin" (`JUDGE_OBJECTIVES`; a scorer
    named as a judge becomes a role of its own, see `objectives.with_judge_roles`). It runs
    fused with the sampler (`model_judge`: the same role on the host); its failure: its top-1
    class is not the judged class (targeted searches: its top-1 IS that class);
  * an image judge (`IMAGE_JUDGES`: one function + one line to add one) that reads the images
    on the host: the toy world's oracle v2 (`toy.oracle.assess`, judge name "oracle") and world
    2's scene oracle (`world2.oracle.judge`, judge name "world2_oracle": every fact of the
    prompt — each object's class, count, texture, relation, nothing else drawn; without a prompt,
    "a <label>"). Its
    verdict is stored as the scores "<name>/pred" (label-set index, −1: none),
    "<name>/confidence" (NaN: none), "<name>/failure", "<name>/unclear", "<name>/reason" (the
    index of its reason in `ImageJudge.reasons`) and "<name>/label" (the label judged
    against), all made by the one function `judge_scores`; reading them back gives the reason
    as text (the oracle's `toy.oracle.short_reason`, e.g. "another shape (star, not a
    triangle)");
  * people: `ratings.human_verdict` turns a run's blind ratings into the "human" judge's
    `Verdict` (failure: the raters' consensus is "no").

Everything a judge says is thus a score, so a job keeps its judges' verdicts in the same
per-member records as its other scores and rebuilds them later (`Judges.read`; search, sweep,
attack and analysis alike); `Verdict.record` is the one JSON form of a verdict (results files,
captions, the rating kit).

Verdict rules (`VERDICTS`; one function + one line to add one), each → [M] bool:
  "top1_miss"       the judge `rule.judge` (default the evaluator) fails;
  "confident_miss"  ... and its margin of the judged class is below −m (targeted: above +m);
                    margins are in the role's logit units (log-probabilities for ensembles);
  "agree"           every judge in `rule.judges` fails (e.g. the evaluator AND another model,
                    or the evaluator AND the oracle);
  "oracle"          the toy oracle fails the image.
"""

import dataclasses
import math
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np

from jaxdiffattack.errors import ConfigError
from jaxdiffattack.errors import UserError

ORACLE = "oracle"
WORLD2_ORACLE = "world2_oracle"
JUDGE_OBJECTIVES = ("pred", "confidence", "top1_hit", "margin")
IMAGE_SCORES = ("pred", "confidence", "failure", "unclear", "reason", "label")
ORACLE_SCORES = tuple(f"{ORACLE}/{k}" for k in IMAGE_SCORES)


class Verdict(NamedTuple):
  """One judge's verdict on M images (the one verdict record type of every job)."""
  pred: tuple              # [M] class name, or None (no single class read)
  confidence: np.ndarray   # [M] float64 (NaN: none)
  failure: np.ndarray      # [M] bool: the image fails what it was made for
  margin: np.ndarray       # [M] float64 margin of the judged class (NaN: judges without one)
  unclear: np.ndarray      # [M] bool: cannot tell (never a failure)
  reason: tuple = ()       # [M] str: why (judges that give reasons); () for model judges

  def record(self, i: int) -> dict:
    """Image i as JSON: {"pred", "confidence", "failure"} (+ "unclear" and "reason" for a
    judge that gives reasons)."""
    entry = {"pred": self.pred[i], "confidence": _scalar(self.confidence[i]),
             "failure": bool(self.failure[i])}
    if self.reason:
      entry["unclear"] = bool(self.unclear[i])
      entry["reason"] = self.reason[i]
    return entry


def make_verdict(pred: Sequence, confidence=None, failure=None, unclear=None,
                 reason: Sequence = (), margin=None) -> Verdict:
  """A `Verdict` of M = len(pred) images; omitted fields: NaN confidence and margin, no
  failure, not unclear."""
  m = len(pred)
  column = lambda x, fill, dtype: (np.full(m, fill, dtype) if x is None else
                                   np.asarray([fill if v is None else v for v in x], dtype))
  return Verdict(tuple(pred), column(confidence, np.nan, np.float64),
                 column(failure, False, bool), column(margin, np.nan, np.float64),
                 column(unclear, False, bool), tuple(reason))


# The judge interface: (images [M, H, W, 3] in [0, 1], labels [M] class names they were made
# for, targeted) → Verdict. A judge that reads a whole caption (world 2's oracle; an image judge
# with `ImageJudge.reads_prompts`) also takes prompts [M] they were made from (or None), which
# `ImageJudge.verdict` passes to such judges only. Image judges'
# `ImageJudge.fn` are judges; `model_judge` makes one of a scoring role; people judge offline
# (`ratings.human_verdict`).
Judge = Callable[..., Verdict]


# ----------------------------------------------------------------------------- image judges --
class ImageJudge(NamedTuple):
  """A judge that reads images on the host (`IMAGE_JUDGES`)."""
  # (images [M, H, W, 3] in [0, 1], labels [M] class names, targeted) → Verdict whose preds are
  # class names (or None) and reasons entries of `reasons` (or texts that `reason_kind` maps onto
  # them); a judge of captions (`reads_prompts`) also gets prompts [M] (or None: none known).
  fn: Callable[..., Verdict]
  reasons: tuple[str, ...]                     # every reason kind (stored as its index)
  describe: Callable[[str, str | None, str], str] | None = None  # (reason, pred, label) →
                                               # the text a record shows; None: the reason
  label_sets: tuple[str, ...] = ()             # label sets it can read (() any)
  reason_kind: Callable[[str], str] | None = None  # a verdict's reason text → its entry of
                                               # `reasons` (None: the text is the entry)
  reads_prompts: bool = False                  # fn takes a 4th argument, the prompts

  def verdict(self, images, labels: Sequence[str], targeted: bool = False,
              prompts: Sequence[str] | None = None) -> Verdict:
    """`fn` on images made for `labels` (class names) from `prompts` (read by caption judges
    only)."""
    if self.reads_prompts:
      return self.fn(images, list(labels), targeted, None if prompts is None else list(prompts))
    return self.fn(images, list(labels), targeted)


def _toy_oracle(images, labels, targeted):
  from jaxdiffattack.toy import oracle  # pylint: disable=g-import-not-at-top
  verdicts = oracle.assess(images, labels)   # floats in [0, 1], or uint8
  outcome = oracle.HOLDS if targeted else oracle.VIOLATED
  return make_verdict([v.pred for v in verdicts], [v.confidence for v in verdicts],
                      [v.outcome == outcome for v in verdicts],
                      [v.outcome == oracle.UNCLEAR for v in verdicts],
                      [v.kind for v in verdicts])


def _toy_oracle_entry() -> ImageJudge:
  from jaxdiffattack.toy import oracle  # pylint: disable=g-import-not-at-top
  return ImageJudge(_toy_oracle, oracle.REASON_KINDS, oracle.short_reason, ("toy",))


def _world2_oracle(images, labels, targeted, prompts=None):
  """World 2's scene oracle against each prompt (a grammar caption; None: "a <label>"). failure
  = a fact violated (targeted: the caption holds), unclear = a fact unclear and none violated,
  reason = the first violated (else unclear) fact's reason, pred = the class read for the
  caption's first object (what is drawn instead when it is missing: the largest read object's
  class; None when nothing is read)."""
  from jaxdiffattack.world2 import oracle  # pylint: disable=g-import-not-at-top
  captions = list(prompts) if prompts is not None else [f"a {label}" for label in labels]
  return world2_oracle_verdict(oracle.judge(images, captions), targeted)


def world2_oracle_verdict(verdicts, targeted: bool = False) -> Verdict:
  """The "world2_oracle" `Verdict` of M `world2.oracle.CaptionAssessment`s (a job that keeps
  the assessments, e.g. the census's failure kinds, judges each image once)."""
  from jaxdiffattack.world2 import oracle  # pylint: disable=g-import-not-at-top
  outcome = "holds" if targeted else "violated"
  return make_verdict([oracle.first_object(v) for v in verdicts], None,
                      [v.verdict == outcome for v in verdicts],
                      [v.verdict == "unclear" for v in verdicts],
                      [v.reason or "holds" for v in verdicts])


def _world2_oracle_entry() -> ImageJudge:
  from jaxdiffattack.world2 import oracle  # pylint: disable=g-import-not-at-top
  return ImageJudge(_world2_oracle, oracle.REASON_KINDS, oracle.describe_reason, ("world2",),
                    oracle.reason_kind, reads_prompts=True)


# Image judges by name → a function returning its ImageJudge (built when first used).
IMAGE_JUDGES: dict[str, Callable[[], ImageJudge]] = {ORACLE: _toy_oracle_entry,
                                                     WORLD2_ORACLE: _world2_oracle_entry}


def image_judge(name: str) -> ImageJudge:
  if name not in IMAGE_JUDGES:
    raise UserError(f"judge {name!r} is not an image judge: use one of {sorted(IMAGE_JUDGES)}")
  return IMAGE_JUDGES[name]()


def judge_scores(name: str, images: np.ndarray, labels: np.ndarray,
                 label_names: Sequence[str], targeted: bool = False,
                 prompts: Sequence[str] | None = None) -> dict:
  """Image judge `name`'s verdicts on images [M, H, W, 3] in [0, 1] for labels [M] (indices
  into `label_names`) made from `prompts` [M] (or None) as scores "<name>/<k>" for k in
  `IMAGE_SCORES`, each [M] float64: pred
  (label-set index, −1: none or not in the label set), confidence (NaN: none), failure,
  unclear, reason (index into the judge's `reasons`) and label. Untargeted, a failure is what
  the judge calls a violation of the label; targeted (the image should not show label i), the
  label holding."""
  judge = image_judge(name)
  labels = np.asarray(labels)
  names = [label_names[int(i)] for i in labels]
  keys = [f"{name}/{k}" for k in IMAGE_SCORES]
  if not len(names):
    return {k: np.zeros(0) for k in keys}
  if prompts is not None and len(prompts) != len(names):
    raise UserError(f"judge {name!r}: {len(names)} labels but {len(prompts)} prompts; pass one "
                    "prompt per image")
  v = judge.verdict(np.asarray(images), names, targeted, prompts)
  index = {n: i for i, n in enumerate(label_names)}
  pred = np.array([index.get(p, -1) if p else -1 for p in v.pred], np.float64)
  kind = judge.reason_kind or (lambda r: r)
  reason = np.array([judge.reasons.index(kind(r)) for r in v.reason], np.float64)
  return dict(zip(keys, (pred, np.asarray(v.confidence, np.float64),
                         np.asarray(v.failure, np.float64), np.asarray(v.unclear, np.float64),
                         reason, np.asarray(labels, np.float64))))


def _read_image_judge(name, scores, label_names) -> Verdict:
  pred = np.asarray(scores[f"{name}/pred"], np.float64)
  return Verdict(
      pred=tuple(None if not p >= 0 else label_names[int(p)] for p in pred),
      confidence=np.asarray(scores[f"{name}/confidence"], np.float64),
      failure=np.asarray(scores[f"{name}/failure"], np.float64) > 0.5,
      margin=np.full(pred.shape, np.nan),
      unclear=np.asarray(scores[f"{name}/unclear"], np.float64) > 0.5,
      reason=_reasons(name, scores, pred, label_names))


def _reasons(name, scores, pred, label_names) -> tuple:
  """An image judge's reasons as text from the stored "<name>/reason" codes and "<name>/label"
  (records written before oracle v2 have none: "")."""
  codes, judged = scores.get(f"{name}/reason"), scores.get(f"{name}/label")
  if codes is None or judged is None:
    return ("",) * len(pred)
  judge = image_judge(name)
  describe = judge.describe or (lambda reason, shown, label: reason)
  out = []
  for code, p, lab in zip(np.asarray(codes, np.float64), pred, np.asarray(judged, np.float64)):
    if not (np.isfinite(code) and 0 <= code < len(judge.reasons) and np.isfinite(lab)
            and 0 <= lab < len(label_names)):
      out.append("")
      continue
    shown = label_names[int(p)] if p >= 0 else None
    out.append(describe(judge.reasons[int(code)], shown, label_names[int(lab)]))
  return tuple(out)


# ---------------------------------------------------------------------------- a job's judges --
@dataclasses.dataclass(frozen=True)
class Judges:
  """Who reads the images of a job, and how their scores become verdicts."""
  names: tuple[str, ...]                          # judge names, in report order
  class_names: Mapping[str, tuple[str, ...]]      # model judge → its output index → class name
  label_names: tuple[str, ...]                    # label-set index → class name
  targeted: bool = False                          # failure = the judged class IS drawn

  @property
  def image_judges(self) -> tuple[str, ...]:
    """The judges that read images on the host."""
    return tuple(n for n in self.names if n in IMAGE_JUDGES)

  @property
  def needs_images(self) -> bool:
    """Whether a judge reads images on the host (the oracle)."""
    return bool(self.image_judges)

  @property
  def models(self) -> tuple[str, ...]:
    return tuple(n for n in self.names if n not in IMAGE_JUDGES)

  def score_names(self) -> tuple[str, ...]:
    """The scores the model judges need from the scoring."""
    return tuple(f"{n}/{o}" for n in self.models for o in JUDGE_OBJECTIVES)

  def image_scores(self, images: np.ndarray, labels: np.ndarray,
                   prompts: Sequence[str] | None = None) -> dict:
    """Every image judge's verdict on images [M, H, W, 3] judged against labels [M] (label-set
    indices) and the prompts [M] they were made from (None: judges read the labels only) as
    scores (`judge_scores`; empty without image judges). Targeted, the judged class is not the
    prompt's: the judges read the labels only."""
    prompts = None if self.targeted else prompts
    out = {}
    for name in self.image_judges:
      out.update(judge_scores(name, images, labels, self.label_names, self.targeted, prompts))
    return out

  def read(self, scores: Mapping[str, np.ndarray]) -> dict[str, Verdict]:
    """{judge: Verdict} from per-member scores ([M] arrays; image judges' from `image_scores`)."""
    out = {}
    for name in self.names:
      if name in IMAGE_JUDGES:
        out[name] = _read_image_judge(name, scores, self.label_names)
        continue
      top1_hit = np.asarray(scores[f"{name}/top1_hit"], np.float64)
      # A member whose image or scores are not finite (`sampler.nonfinite_as_nan`) has no
      # verdict: unclear, never a failure (it is reported, not ranked).
      readable = np.isfinite(top1_hit)
      hit = top1_hit > 0.5
      pred = np.asarray(scores[f"{name}/pred"], np.float64)
      names = self.class_names.get(name, ())
      out[name] = Verdict(
          pred=tuple(names[int(p)] if r and 0 <= p < len(names) else None
                     for p, r in zip(pred, readable)),
          confidence=np.asarray(scores[f"{name}/confidence"], np.float64),
          failure=(hit if self.targeted else ~hit) & readable,
          margin=np.asarray(scores[f"{name}/margin"], np.float64),
          unclear=~readable)
    return out


def model_judge(scoring, name: str, label_names: Sequence[str] = ()) -> Judge:
  """Scoring role (or scorer role) `name` as a `Judge`: it scores the images on the host with
  `scoring.score` (jobs fuse the same scores into the sampler instead and read them with
  `Judges.read`). `label_names` as in `make_judges`."""
  reader = make_judges((name,), scoring, label_names)
  index = {n: i for i, n in enumerate(reader.label_names)}

  def judge(images, labels, targeted=False, prompts=None):
    del prompts  # a classifier reads the class only
    missing = [l for l in labels if l not in index]
    if missing:
      raise UserError(f"judge {name!r}: labels {missing[:3]} are not classes of its label set "
                      f"(e.g. {reader.label_names[:2]})")
    scores = scoring.score(np.asarray(images), labels=np.array([index[l] for l in labels],
                                                               np.int32))
    return dataclasses.replace(reader, targeted=targeted).read(scores)[name]
  return judge


def check_retired_keys(config, retired: Mapping[str, str] | None = None) -> None:
  """One-line ConfigError when a job config still has a key that judges are no longer named by
  (`RETIRED_KEYS`, or `retired`: old key → the key that replaces it)."""
  for old, new in (RETIRED_KEYS if retired is None else retired).items():
    if old in config:
      raise ConfigError(f"config.{old} is retired: {new}")


# Keys that named judges before config.judges did: old key → what to write instead.
RETIRED_KEYS = {"oracle": "name the oracle in config.judges instead, e.g. "
                          "--config.judges='(\"evaluator\", \"oracle\")'"}


def check_label_set(name: str, label_set: str | None, key: str = "judges") -> None:
  """ConfigError naming `config.<key>` when image judge `name` cannot read label set
  `label_set` (the oracle outside the toy world); jobs call it at the edge, before loading."""
  reads = image_judge(name).label_sets
  if reads and label_set not in reads:
    what = {ORACLE: "the toy world's oracle",
            WORLD2_ORACLE: "world 2's scene oracle"}.get(name, "an image judge")
    raise ConfigError(f"config.{key} names {name!r}, {what}, but the label set is "
                      f"{label_set!r}: use it with label_set={reads[0]!r}")


def make_judges(names: Sequence[str], scoring, label_names: Sequence[str] = (), *,
                targeted: bool = False, key: str = "judges") -> Judges:
  """Judges `names` of a job whose images `scoring` scores.

  Args:
    names: judge names: scoring roles (with `JUDGE_OBJECTIVES`), scorers, and/or image judges
      (`IMAGE_JUDGES`, e.g. "oracle").
    scoring: the job's `scoring.Scoring`.
    label_names: label-set index → class name, where the scoring has no label set (the synthetic
      one); its roles' outputs are then read as these classes.
    targeted: a failure is the judged class being drawn (targeted searches).
    key: the config key named by errors.

  Raises a ConfigError naming `config.<key>` when a model judge's scores are missing or an
  image judge is asked for outside the label sets it reads (the oracle outside the toy world).
  """
  names = tuple(dict.fromkeys(names))
  if not names:
    raise ConfigError(f"config.{key}=() is invalid: name at least one judge (e.g. 'evaluator')")
  label_set = getattr(scoring, "label_set", None)
  label_names = tuple(label_set.names) if label_set is not None else tuple(label_names)
  class_names = {}
  for name in names:
    if name in IMAGE_JUDGES:
      check_label_set(name, getattr(label_set, "name", None), key)
      continue
    missing = [f"{name}/{o}" for o in JUDGE_OBJECTIVES if f"{name}/{o}" not in scoring.names]
    if missing:
      raise ConfigError(f"config.{key} names judge {name!r} but the scoring does not return "
                        f"{missing}: a judge is a scoring role (or scorer) with objectives "
                        f"{JUDGE_OBJECTIVES}, or one of the image judges {sorted(IMAGE_JUDGES)}")
    role = (getattr(scoring, "roles", None) or {}).get(name)
    if role is None:  # no model behind the role (the synthetic scoring): label-set classes
      class_names[name] = label_names
    else:             # output ids → names where they are label-set ids (ImageNet wnids)
      by_id = dict(zip(label_set.ids, label_set.names)) if label_set is not None else {}
      class_names[name] = tuple(by_id.get(i, i) for i in role.output_ids)
  return Judges(names, class_names, label_names, targeted)


# ---------------------------------------------------------------------------- verdict rules --
@dataclasses.dataclass(frozen=True)
class Rule:
  """A verdict rule and its parameters (`config.criterion.verdict` and friends)."""
  name: str = "top1_miss"          # key of VERDICTS
  judge: str = "evaluator"         # top1_miss, confident_miss: whose reading
  margin: float = 0.0              # confident_miss: m ≥ 0
  judges: tuple[str, ...] = ()     # agree: every one of these must fail

  def needs(self) -> tuple[str, ...]:
    """The judges this rule reads."""
    return VERDICTS[self.name].needs(self)

  def __call__(self, readings: Mapping[str, Verdict]) -> np.ndarray:
    """[M] bool: which images the rule calls failures."""
    return VERDICTS[self.name].fn(self, readings)


class RuleSpec(NamedTuple):
  """A verdict rule: its function, the judges it reads, what it says."""
  fn: Callable[[Rule, Mapping[str, Verdict]], np.ndarray]
  needs: Callable[[Rule], tuple[str, ...]]
  doc: str


def _top1_miss(rule, readings):
  return readings[rule.judge].failure


def _confident_miss(rule, readings):
  r = readings[rule.judge]
  return r.failure & (np.abs(np.nan_to_num(r.margin, nan=0.0)) > rule.margin)


def _agree(rule, readings):
  return np.logical_and.reduce([readings[j].failure for j in rule.judges])


def _oracle(rule, readings):
  del rule
  return readings[ORACLE].failure


VERDICTS = {
    "top1_miss": RuleSpec(_top1_miss, lambda r: (r.judge,), "the judge's top-1 misses"),
    "confident_miss": RuleSpec(_confident_miss, lambda r: (r.judge,),
                              "the judge misses with margin beyond m"),
    "agree": RuleSpec(_agree, lambda r: tuple(r.judges), "every named judge fails"),
    "oracle": RuleSpec(_oracle, lambda r: (ORACLE,), "the toy oracle fails the image"),
}


def make_rule(name: str, *, judge: str = "evaluator", margin: float = 0.0,
              judges: Sequence[str] = (), key: str = "criterion") -> Rule:
  """A checked Rule; ConfigErrors name `config.<key>.*`."""
  if name not in VERDICTS:
    raise ConfigError(f"config.{key}.verdict={name!r} is invalid: use one of {sorted(VERDICTS)}")
  if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
    raise ConfigError(f"config.{key}.margin={margin!r} is invalid: use a number >= 0")
  judges = tuple(judges)
  if name == "agree" and len(judges) < 2:
    raise ConfigError(f"config.{key}.agree={judges!r} is invalid: name at least two judges "
                      "that must all fail (e.g. ('evaluator', 'oracle'))")
  return Rule(name, judge, float(margin), judges)


def check_rule(rule: Rule, judges: Judges, key: str = "criterion") -> None:
  """ConfigError unless every judge the rule reads is one of the job's judges."""
  missing = [j for j in rule.needs() if j not in judges.names]
  if missing:
    raise ConfigError(f"config.{key}.verdict={rule.name!r} reads judge(s) {missing} that are not "
                      f"in config.judges={judges.names}: add them there")


# ------------------------------------------------------------------------ records, captions --
def _scalar(x):
  if x is None:
    return None
  x = float(x)
  return x if math.isfinite(x) else None


def record(verdicts: Mapping[str, Verdict], i: int) -> dict:
  """The `judges` entry of member i: {judge: `Verdict.record(i)`}."""
  return {name: v.record(i) for name, v in verdicts.items()}


def records_of(judges: Judges, scores: Mapping[str, np.ndarray]) -> list[dict]:
  """`record` of every member of per-member scores [M] (e.g. a job's stored records)."""
  readings = judges.read(scores)
  size = len(next(iter(readings.values())).failure) if readings else 0
  return [record(readings, i) for i in range(size)]


def caption(entry: Mapping[str, Mapping]) -> list[str]:
  """Caption lines of one `record` entry: "<judge>: <pred> <confidence>" (FAIL where it fails,
  '?' where the oracle cannot tell, '-' where it reads no single object)."""
  lines = []
  for name, j in entry.items():
    # No class: the oracle cannot tell ("?"), or reads no single object ("-": nothing drawn, or
    # several objects).
    pred = j.get("pred") or ("?" if j.get("unclear") else "-")
    conf = "" if j.get("confidence") is None else f" {j['confidence']:.2f}"
    reason = j.get("reason") or ""
    reason = f" ({reason})" if reason and reason != "holds" else ""
    lines.append(f"{name}: {pred}{conf}{' FAIL' if j.get('failure') else ''}{reason}")
  return lines
