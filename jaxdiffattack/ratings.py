"""Human ratings: the ratings file format, its checks, and the statistics of SSR by humans.

SAGE (arXiv 2306.00974, §4) counts a failure only when people confirm that the *generator*
failed: SSR(H), the share of a method's found failures that raters judge as not showing the
prompt, beside SSR(A) by an automatic evaluator. Raters answer each (image, prompt) with
"yes" (it shows the prompt), "no" (it does not: a failure) or "unsure" (the rating guide,
`jaxdiffattack/data/rating_guide.md`).

Files (fixed formats, written by the browser kit or by hand):

  ratings  {"format": "jaxdiffattack.ratings/1", "run_id", "rater", "method", "created",
            "ratings": [{"item", "verdict": "yes"|"no"|"unsure", "note", "time"}]}
  items    {"format": "jaxdiffattack.rating_items/1", "run_id",
            "items": [{"id", "image", "prompt", "source": {...}}]}

Statistics (pure functions, NumPy only):
  * `consensus`: the verdict most raters gave; a tie between the top verdicts is "unsure".
  * `cohen_kappa` (two raters, Cohen 1960) and `fleiss_kappa` (any number of raters per item,
    Fleiss 1971) over the categories yes / no / unsure.
  * `clustered_rate`: a share with a 95 % interval that treats items of the same target as one
    cluster (cluster-robust variance of the mean, with the G/(G−1) correction; = the intercept
    of an OLS with cluster-robust errors; `stats.clustered_rate`). When every cluster holds one
    item, or all items are one cluster's, this is the Wilson interval (`stats.wilson_interval`)
    instead; at 0 % or 100 % (where the robust variance is 0) the Wilson interval with the
    number of clusters as the sample size.
  * `human_verdict`: the raters as the judge "human" (`judges.Verdict`): failure where the
    consensus is "no", unclear where it is "unsure".
  * `judge_agreement`: an automatic judge (failure / correct / unclear) against the human
    consensus (no / yes / unsure): the 3×3 confusion table, recall of human failures, the
    false-failure rate (failures called on images people call correct) and the unclear rate
    (on images people call correct, and overall).
"""

import collections
import json
import math
import pathlib
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from jaxdiffattack import judges
from jaxdiffattack import stats
from jaxdiffattack.errors import UserError

RATINGS_FORMAT = "jaxdiffattack.ratings/1"
ITEMS_FORMAT = "jaxdiffattack.rating_items/1"
VERDICTS = ("yes", "no", "unsure")          # category order of every table
JUDGE_OUTCOMES = ("failure", "correct", "unclear")


class RatingsError(UserError):
  """A ratings or items file cannot be used (wrong run, malformed, a rater twice)."""


# ------------------------------------------------------------------------------ statistics --
def consensus(votes: Sequence[str]) -> str | None:
  """The verdict with the most votes; a tie between the top verdicts is "unsure"; no votes None."""
  if not votes:
    return None
  counts = collections.Counter(votes)
  top = max(counts.values())
  winners = [v for v in VERDICTS if counts.get(v, 0) == top]
  return winners[0] if len(winners) == 1 else "unsure"


def cohen_kappa(a: Sequence[str], b: Sequence[str], categories=VERDICTS) -> float:
  """Cohen's κ of two raters' verdicts on the same items (equal length): (p_o − p_e)/(1 − p_e).
  NaN when there are no items; 1.0 when both always give one and the same verdict."""
  if len(a) != len(b):
    raise ValueError(f"cohen_kappa: {len(a)} and {len(b)} verdicts; rate the same items")
  if not len(a):
    return math.nan
  index = {c: i for i, c in enumerate(categories)}
  table = np.zeros((len(categories), len(categories)))
  for x, y in zip(a, b):
    table[index[x], index[y]] += 1
  n = table.sum()
  observed = np.trace(table) / n
  expected = float((table.sum(1) / n) @ (table.sum(0) / n))
  if expected == 1.0:
    return 1.0 if observed == 1.0 else math.nan
  return float((observed - expected) / (1.0 - expected))


def fleiss_kappa(counts: np.ndarray) -> float:
  """Fleiss' κ of counts [N items, K categories], every item rated by the same number of raters
  n ≥ 2: (P̄ − P̄_e)/(1 − P̄_e)."""
  counts = np.asarray(counts, np.float64)
  if counts.ndim != 2 or not len(counts):
    return math.nan
  n = counts.sum(1)
  if not np.all(n == n[0]) or n[0] < 2:
    raise ValueError("fleiss_kappa: every item needs the same number (>= 2) of ratings")
  n = n[0]
  p_item = ((counts * counts).sum(1) - n) / (n * (n - 1))
  p_cat = counts.sum(0) / counts.sum()
  p_bar, p_e = p_item.mean(), float((p_cat * p_cat).sum())
  if p_e == 1.0:
    return 1.0 if p_bar == 1.0 else math.nan
  return float((p_bar - p_e) / (1.0 - p_e))


def clustered_rate(hits: Sequence[float], clusters: Sequence) -> dict:
  """{"rate", "hits", "n", "clusters", "ci95": [low, high], "interval"} of 0/1 `hits` [N] whose
  items fall into `clusters` [N] (e.g. the search target of each image): `stats.clustered_rate`."""
  return stats.clustered_rate(hits, clusters)


def human_verdict(votes: Sequence[Sequence[str]], notes: Sequence[Sequence[str]]) -> judges.Verdict:
  """People as a judge of M rated items, from each item's votes [M][raters] ("yes" / "no" /
  "unsure") and notes [M][...]: failure where the consensus is "no", unclear where it is
  "unsure"; confidence = the share of votes for the consensus; reason = the notes joined by
  "; " (None without notes); pred None (raters name no class)."""
  cons = [consensus(list(v)) for v in votes]
  return judges.make_verdict(
      [None] * len(cons), [list(v).count(c) / len(v) for v, c in zip(votes, cons)],
      [c == "no" for c in cons], [c == "unsure" for c in cons],
      ["; ".join(n) or None for n in notes])


def judge_outcome(entry: Mapping | None) -> str | None:
  """A judge record {"failure", "unclear", ...} as "failure" / "correct" / "unclear"; None when
  there is no record or it has no verdict (failure None)."""
  if not entry:
    return None
  if entry.get("unclear"):
    return "unclear"
  if entry.get("failure") is None:
    return None
  return "failure" if entry.get("failure") else "correct"


def judge_agreement(human: Sequence[str], judge: Sequence[str]) -> dict:
  """An automatic judge's outcomes [N] ("failure"/"correct"/"unclear") against the human
  consensus [N] ("no"/"yes"/"unsure"): confusion table rows = human verdict, columns = judge
  outcome, and the rates (None where their denominator is 0)."""
  table = {h: {j: 0 for j in JUDGE_OUTCOMES} for h in VERDICTS}
  for h, j in zip(human, judge):
    table[h][j] += 1
  ratio = lambda a, b: a / b if b else None
  no, yes = sum(table["no"].values()), sum(table["yes"].values())
  total = sum(sum(r.values()) for r in table.values())
  return {"confusion": table, "items": total,
          "recall_of_human_failures": ratio(table["no"]["failure"], no),
          "human_failures": no,
          "false_failure_rate": ratio(table["yes"]["failure"], yes),
          "human_correct": yes,
          "unclear_rate_on_human_correct": ratio(table["yes"]["unclear"], yes),
          "unclear_rate": ratio(sum(table[h]["unclear"] for h in VERDICTS), total),
          "cohen_kappa_failure": cohen_kappa(
              ["no" if h == "no" else "yes" for h in human if h != "unsure"],
              ["no" if j == "failure" else "yes" for h, j in zip(human, judge) if h != "unsure"],
              ("yes", "no"))}


# ---------------------------------------------------------------------------------- files --
def _where(path) -> str:
  return str(path)


def read_json(path, what: str) -> dict:
  """A JSON object from `path`; RatingsError (one line) when it is missing, truncated or not an
  object."""
  path = pathlib.Path(path)
  try:
    text = path.read_text(encoding="utf-8")
  except (OSError, UnicodeDecodeError) as e:
    raise RatingsError(f"cannot read {what} file {path}: {e}; pass the exported JSON") from None
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise RatingsError(f"{what} file {path} is not valid JSON ({e.msg} at line {e.lineno}, column "
                       f"{e.colno}; truncated?): export it again from the rating page") from None
  if not isinstance(data, dict):
    raise RatingsError(f"{what} file {path} holds a {type(data).__name__}, not a JSON object: "
                       f"expected the {RATINGS_FORMAT if what == 'ratings' else ITEMS_FORMAT} "
                       "format")
  return data


class RatingsFile(NamedTuple):
  path: str
  rater: str
  method: str
  created: str
  ratings: list          # [{"item", "verdict", "note", "time"}], first rating of each item
  excluded: dict         # reason → count


def check_ratings(data: dict, path, run_id: str, item_ids: Iterable[str]) -> RatingsFile:
  """Checks one ratings file against the run's items. Raises RatingsError (one line) for the wrong
  format or run, a missing rater, or a malformed rating; counts as exclusions (not errors) ratings
  of unknown items and repeated ratings of one item by the rater (the first one counts)."""
  where = _where(path)
  if data.get("format") != RATINGS_FORMAT:
    raise RatingsError(f"{where}: format={data.get('format')!r} is not {RATINGS_FORMAT!r}: "
                       "export the file from the rating page or write that format")
  if data.get("run_id") != run_id:
    raise RatingsError(f"{where}: run_id={data.get('run_id')!r} belongs to another run (this run "
                       f"is {run_id!r}): ingest it into the workdir whose rating page made it")
  rater = data.get("rater")
  if not isinstance(rater, str) or not rater.strip():
    raise RatingsError(f"{where}: rater={rater!r} is invalid: name the rater (a non-empty string)")
  ratings = data.get("ratings")
  if not isinstance(ratings, list):
    raise RatingsError(f"{where}: ratings={type(ratings).__name__} is invalid: expected a list "
                       "of {item, verdict, note, time}")
  known = set(item_ids)
  seen, kept = set(), []
  excluded = collections.Counter()
  for k, r in enumerate(ratings):
    if not isinstance(r, dict) or not isinstance(r.get("item"), str):
      raise RatingsError(f"{where}: ratings[{k}]={r!r} is invalid: expected {{'item': id, "
                         "'verdict': 'yes'|'no'|'unsure', ...}")
    if r.get("verdict") not in VERDICTS:
      raise RatingsError(f"{where}: ratings[{k}].verdict={r.get('verdict')!r} is invalid: use one "
                         f"of {list(VERDICTS)}")
    if r["item"] not in known:
      excluded["unknown item"] += 1
      continue
    if r["item"] in seen:
      excluded["item rated again by the same rater"] += 1
      continue
    seen.add(r["item"])
    kept.append({"item": r["item"], "verdict": r["verdict"], "note": str(r.get("note") or ""),
                 "time": r.get("time")})
  return RatingsFile(where, rater.strip(), str(data.get("method") or ""),
                     str(data.get("created") or ""), kept, dict(excluded))


def load_ratings(paths: Sequence, run_id: str, item_ids: Iterable[str]) -> list[RatingsFile]:
  """Every ratings file checked (`check_ratings`); a rater appearing in two files is an error."""
  item_ids = list(item_ids)
  files = [check_ratings(read_json(p, "ratings"), p, run_id, item_ids) for p in paths]
  by_rater = {}
  for f in files:
    if f.rater in by_rater:
      raise RatingsError(f"rater {f.rater!r} appears in {by_rater[f.rater]} and in {f.path}: "
                         "merge their ratings into one file per rater, or rename one rater")
    by_rater[f.rater] = f.path
  return files


def votes_by_item(files: Sequence[RatingsFile]) -> dict[str, dict[str, dict]]:
  """{item: {rater: {"verdict", "note"}}} over every file."""
  out = collections.defaultdict(dict)
  for f in files:
    for r in f.ratings:
      out[r["item"]][f.rater] = {"verdict": r["verdict"], "note": r["note"]}
  return dict(out)


def agreement(votes: Mapping[str, Mapping[str, Mapping]], raters: Sequence[str]) -> dict:
  """Inter-rater agreement: Cohen's κ of two raters (items both rated), Fleiss' κ of three or more
  (items every rater rated); also the share of items with a both-decided (yes/no) disagreement."""
  raters = list(raters)
  common = [i for i, v in votes.items() if all(r in v for r in raters)]
  out = {"raters": raters, "items_rated_by_all": len(common)}
  if len(raters) < 2:
    return out | {"statistic": None, "kappa": None}
  if len(raters) == 2:
    a = [votes[i][raters[0]]["verdict"] for i in common]
    b = [votes[i][raters[1]]["verdict"] for i in common]
    decided = [(x, y) for x, y in zip(a, b) if "unsure" not in (x, y)]
    out["decided_both"] = len(decided)
    out["decided_disagree"] = sum(x != y for x, y in decided)
    return out | {"statistic": "cohen", "kappa": cohen_kappa(a, b)}
  counts = np.array([[sum(votes[i][r]["verdict"] == c for r in raters) for c in VERDICTS]
                     for i in common])
  return out | {"statistic": "fleiss", "kappa": fleiss_kappa(counts) if len(common) else None}
