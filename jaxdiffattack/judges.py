"""Judges — every reader of a generated image — and the verdict rules that call it a failure.

SAGE (arXiv 2306.00974, §4) optimises against one set of classifiers and counts a failure only
when others confirm it: automatically (SSR(A), a held-out classifier) and by people (SSR(H)).
A judge reads each image as

    (pred: class name or None, confidence: float or None, failure: bool)

  * model judges are roles of the job's `scoring.Scoring` whose scores include "<role>/pred",
    "<role>/confidence", "<role>/top1_hit" and "<role>/margin" (`JUDGE_OBJECTIVES`; a scorer
    named as a judge becomes a role of its own, see `scoring.make_scoring`). A model's
    failure: its top-1 class is not the judged class (targeted searches, where the image should
    show a chosen class: its top-1 IS that class);
  * the toy world's oracle (`jaxdiffattack.toy.oracle`, judge name "oracle") reads the images on
    the host; `oracle_scores` stores its reading as scores "oracle/pred" (label-set index, −1 for
    "unclear"), "oracle/confidence" (NaN when unclear), "oracle/failure" (oracle v2 says the
    prompt is violated; targeted: it says the chosen class holds), "oracle/unclear",
    "oracle/reason" (the index of its reason in `toy.oracle.REASON_KINDS`) and "oracle/label"
    (the label judged against); `Reading.reason`, every record and every caption give the
    reason as text, e.g. "another shape (star, not a triangle)".

Everything a judge says is thus a score, so a job keeps readings in the same per-member records
as its other scores and rebuilds them later (`Judges.read`, `record`).

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

ORACLE = "oracle"
JUDGE_OBJECTIVES = ("pred", "confidence", "top1_hit", "margin")
ORACLE_SCORES = tuple(f"{ORACLE}/{k}" for k in ("pred", "confidence", "failure", "unclear",
                                                 "reason", "label"))


class Reading(NamedTuple):
  """One judge's reading of M images."""
  pred: tuple              # [M] class name, or None (the oracle: unclear)
  confidence: np.ndarray   # [M] float64 (NaN: none)
  failure: np.ndarray      # [M] bool
  margin: np.ndarray       # [M] float64 margin of the judged class (NaN: the oracle)
  unclear: np.ndarray      # [M] bool: cannot tell (the oracle; a model judge: non-finite)
  reason: tuple = ()       # [M] str: the oracle's reason; () for model judges


@dataclasses.dataclass(frozen=True)
class Judges:
  """Who reads the images of a job, and how their scores become readings."""
  names: tuple[str, ...]                          # judge names, in report order
  class_names: Mapping[str, tuple[str, ...]]      # model judge → its output index → class name
  label_names: tuple[str, ...]                    # label-set index → class name
  targeted: bool = False                          # failure = the judged class IS drawn

  @property
  def needs_images(self) -> bool:
    """Whether a judge reads images on the host (the oracle)."""
    return ORACLE in self.names

  @property
  def models(self) -> tuple[str, ...]:
    return tuple(n for n in self.names if n != ORACLE)

  def score_names(self) -> tuple[str, ...]:
    """The scores the model judges need from the scoring."""
    return tuple(f"{n}/{o}" for n in self.models for o in JUDGE_OBJECTIVES)

  def oracle_scores(self, images: np.ndarray, labels: np.ndarray) -> dict:
    """The oracle's reading of images [M, H, W, 3] judged against labels [M] (label-set
    indices) as scores (empty if the oracle is not a judge)."""
    if not self.needs_images:
      return {}
    return oracle_scores(images, labels, self.label_names, self.targeted)

  def read(self, scores: Mapping[str, np.ndarray]) -> dict[str, Reading]:
    """{judge: Reading} from per-member scores ([M] arrays; the oracle's from `oracle_scores`)."""
    out = {}
    for name in self.names:
      if name == ORACLE:
        pred = np.asarray(scores[f"{ORACLE}/pred"], np.float64)
        out[name] = Reading(
            pred=tuple(None if not p >= 0 else self.label_names[int(p)] for p in pred),
            confidence=np.asarray(scores[f"{ORACLE}/confidence"], np.float64),
            failure=np.asarray(scores[f"{ORACLE}/failure"], np.float64) > 0.5,
            margin=np.full(pred.shape, np.nan),
            unclear=np.asarray(scores[f"{ORACLE}/unclear"], np.float64) > 0.5,
            reason=_oracle_reasons(scores, pred, self.label_names))
        continue
      top1_hit = np.asarray(scores[f"{name}/top1_hit"], np.float64)
      # A member whose image or scores are not finite (`sampler.nonfinite_as_nan`) has no
      # reading: unclear, never a failure (it is reported, not ranked).
      readable = np.isfinite(top1_hit)
      hit = top1_hit > 0.5
      pred = np.asarray(scores[f"{name}/pred"], np.float64)
      names = self.class_names.get(name, ())
      out[name] = Reading(
          pred=tuple(names[int(p)] if r and 0 <= p < len(names) else None
                     for p, r in zip(pred, readable)),
          confidence=np.asarray(scores[f"{name}/confidence"], np.float64),
          failure=(hit if self.targeted else ~hit) & readable,
          margin=np.asarray(scores[f"{name}/margin"], np.float64),
          unclear=~readable)
    return out


def oracle_scores(images: np.ndarray, labels: np.ndarray, label_names: Sequence[str],
                  targeted: bool = False) -> dict:
  """The toy oracle's (v2, `toy.oracle.assess`) verdicts on images [M, H, W, 3] in [0, 1] for
  labels [M] (indices into `label_names`) as scores `ORACLE_SCORES`, each [M] float64.
  Targeted (the image should show label i): a failure is the label holding."""
  from jaxdiffattack.toy import oracle  # pylint: disable=g-import-not-at-top
  names = [label_names[int(i)] for i in labels]
  if not len(names):
    return {k: np.zeros(0) for k in ORACLE_SCORES}
  verdicts = oracle.assess(np.asarray(images, np.float32), names)
  index = {n: i for i, n in enumerate(label_names)}
  pred = np.array([index.get(v.pred, -1) if v.pred else -1 for v in verdicts], np.float64)
  outcome = oracle.HOLDS if targeted else oracle.VIOLATED
  return {f"{ORACLE}/pred": pred,
          f"{ORACLE}/confidence": np.array([np.nan if v.confidence is None else
                                            v.confidence for v in verdicts], np.float64),
          f"{ORACLE}/failure": np.array([v.outcome == outcome for v in verdicts], np.float64),
          f"{ORACLE}/unclear": np.array([v.outcome == oracle.UNCLEAR for v in verdicts],
                                        np.float64),
          f"{ORACLE}/reason": np.array([oracle.REASON_KINDS.index(v.kind) for v in verdicts],
                                       np.float64),
          f"{ORACLE}/label": np.asarray(labels, np.float64)}


def _oracle_reasons(scores, pred, label_names) -> tuple:
  """The oracle's reasons as text from the stored "oracle/reason" codes and "oracle/label"
  (records written before oracle v2 have none: "")."""
  from jaxdiffattack.toy import oracle  # pylint: disable=g-import-not-at-top
  codes, judged = scores.get(f"{ORACLE}/reason"), scores.get(f"{ORACLE}/label")
  if codes is None or judged is None:
    return ("",) * len(pred)
  out = []
  for code, p, lab in zip(np.asarray(codes, np.float64), pred, np.asarray(judged, np.float64)):
    if not (np.isfinite(code) and 0 <= code < len(oracle.REASON_KINDS) and np.isfinite(lab)
            and 0 <= lab < len(label_names)):
      out.append("")
      continue
    shown = label_names[int(p)] if p >= 0 else None
    out.append(oracle.short_reason(oracle.REASON_KINDS[int(code)], shown,
                                   label_names[int(lab)]))
  return tuple(out)


def make_judges(names: Sequence[str], scoring, label_names: Sequence[str] = (), *,
                targeted: bool = False, key: str = "judges") -> Judges:
  """Judges `names` of a job whose images `scoring` scores.

  Args:
    names: judge names: scoring roles (with `JUDGE_OBJECTIVES`) and/or "oracle".
    scoring: the job's `scoring.Scoring`.
    label_names: label-set index → class name, where the scoring has no label set (the synthetic
      one); its roles' outputs are then read as these classes.
    targeted: a failure is the judged class being drawn (targeted searches).
    key: the config key named by errors.

  Raises a ConfigError naming `config.<key>` when a model judge's scores are missing or the
  oracle is asked for outside the toy world.
  """
  names = tuple(dict.fromkeys(names))
  if not names:
    raise ConfigError(f"config.{key}=() is invalid: name at least one judge (e.g. 'evaluator')")
  label_set = getattr(scoring, "label_set", None)
  label_names = tuple(label_set.names) if label_set is not None else tuple(label_names)
  if ORACLE in names and (label_set is None or label_set.name != "toy"):
    raise ConfigError(f"config.{key} names {ORACLE!r}, the toy world's oracle, but the label set "
                      f"is {getattr(label_set, 'name', None)!r}: use it with label_set='toy'")
  class_names = {}
  for name in names:
    if name == ORACLE:
      continue
    missing = [f"{name}/{o}" for o in JUDGE_OBJECTIVES if f"{name}/{o}" not in scoring.names]
    if missing:
      raise ConfigError(f"config.{key} names judge {name!r} but the scoring does not return "
                        f"{missing}: a judge is a scoring role (or scorer) with objectives "
                        f"{JUDGE_OBJECTIVES}")
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

  def __call__(self, readings: Mapping[str, Reading]) -> np.ndarray:
    """[M] bool: which images the rule calls failures."""
    return VERDICTS[self.name].fn(self, readings)


class Verdict(NamedTuple):
  fn: Callable[[Rule, Mapping[str, Reading]], np.ndarray]
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
    "top1_miss": Verdict(_top1_miss, lambda r: (r.judge,), "the judge's top-1 misses"),
    "confident_miss": Verdict(_confident_miss, lambda r: (r.judge,),
                              "the judge misses with margin beyond m"),
    "agree": Verdict(_agree, lambda r: tuple(r.judges), "every named judge fails"),
    "oracle": Verdict(_oracle, lambda r: (ORACLE,), "the toy oracle fails the image"),
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


def record(readings: Mapping[str, Reading], i: int) -> dict:
  """The `judges` entry of member i: {judge: {"pred", "confidence", "failure"}} (+ "unclear"
  and "reason" for the oracle)."""
  out = {}
  for name, r in readings.items():
    entry = {"pred": r.pred[i], "confidence": _scalar(r.confidence[i]),
             "failure": bool(r.failure[i])}
    if name == ORACLE:
      entry["unclear"] = bool(r.unclear[i])
      entry["reason"] = r.reason[i] if r.reason else ""
    out[name] = entry
  return out


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
