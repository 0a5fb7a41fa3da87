r"""Oracle v2 against blind ratings (issue #22 item 2): consensus, a split fixed before
tuning, thresholds tuned on the tuning part only, and the report on the held-out part.

  # 1. once, before any tuning: the consensus and the split (commit split.json right after)
  python benchmarks/oracle_v2_calibrate.py split --ratings docs/ratings/toy_v1
  # 2. tune on the tuning part (prints the chosen `oracle.Thresholds`; paste them as defaults)
  python benchmarks/oracle_v2_calibrate.py tune --ratings docs/ratings/toy_v1
  # 3. report with the module's defaults on the held-out part and on real held-out scenes
  python benchmarks/oracle_v2_calibrate.py report --ratings docs/ratings/toy_v1 \
      --out docs/results/oracle_v2

Consensus (`consensus`): with two raters, an item is a *failure* when both say "no", *correct*
when both say "yes"; with three, when at least two of them say the same of yes / no (the third
vote may be anything). Every other item (any yes/no disagreement between two raters, or
"unsure" from one of two) has no consensus and is kept apart: counted, never tuned or scored on.

Metrics (oracle outcome vs consensus): recall of the raters' failures (oracle `violated` on a
consensus failure), false failures (`violated` on a consensus-correct image), unclear on
consensus-correct images, and Cohen's κ between the oracle (holds→yes, violated→no,
unclear→unsure) and the consensus (yes / no), over every consensus item of the part.
"""

import argparse
import datetime
import itertools
import json
import math
import pathlib
import platform
import random
import subprocess
import sys
import time

import numpy as np

SPLIT_SEED = 22
RATING_FORMAT = "jaxdiffattack.ratings/1"
CONSENSUS_RULE = ("two raters: both yes (correct) or both no (failure); three raters: at least "
                  "two say the same of yes / no; any other item has no consensus and is kept "
                  "apart (never tuned or scored on)")
TARGETS = {"recall": 0.80, "false_failure": 0.05, "unclear_correct": 0.10, "real": 0.99}


# ------------------------------------------------------------------------------- ratings ---
def load(ratings_dir: pathlib.Path):
  items = json.loads((ratings_dir / "items.json").read_text())
  by_id = {it["id"]: it for it in items["items"]}
  votes = {}
  raters = []
  for path in sorted(ratings_dir.glob("ratings_*.json")):
    r = json.loads(path.read_text())
    if r.get("format") != RATING_FORMAT or r.get("run_id") != items["run_id"]:
      raise SystemExit(f"error: {path}: format {r.get('format')!r} / run_id {r.get('run_id')!r}; "
                       f"expected {RATING_FORMAT!r} / {items['run_id']!r}")
    rater = r["rater"]
    raters.append({"rater": rater, "method": r.get("method"), "file": path.name,
                   "count": len(r["ratings"])})
    seen = set()
    for row in r["ratings"]:
      if row["item"] not in by_id:
        raise SystemExit(f"error: {path}: unknown item {row['item']!r}")
      if row["item"] in seen:
        raise SystemExit(f"error: {path}: item {row['item']!r} rated twice by {rater}")
      seen.add(row["item"])
      if row["verdict"] not in ("yes", "no", "unsure"):
        raise SystemExit(f"error: {path}: verdict {row['verdict']!r}; use yes / no / unsure")
      votes.setdefault(row["item"], {})[rater] = row["verdict"]
  return items, by_id, votes, raters


def consensus(item_votes: dict) -> str | None:
  """"yes" / "no" / None from one item's votes {rater: yes|no|unsure} (module docstring)."""
  v = list(item_votes.values())
  yes, no = v.count("yes"), v.count("no")
  if len(v) <= 2:
    if len(v) == 2 and yes == 2:
      return "yes"
    if len(v) == 2 and no == 2:
      return "no"
    return None
  if yes >= 2 and yes > no:   # three raters: at least two of the same yes / no
    return "yes"
  if no >= 2 and no > yes:
    return "no"
  return None


def cohen_kappa(a: list, b: list) -> float:
  cats = sorted(set(a) | set(b))
  n = len(a)
  if not n:
    return float("nan")
  po = sum(x == y for x, y in zip(a, b)) / n
  pe = sum((a.count(c) / n) * (b.count(c) / n) for c in cats)
  return (po - pe) / (1 - pe) if pe < 1 else float("nan")


def wilson(k: int, n: int, z: float = 1.96):
  if n == 0:
    return [None, None]
  p = k / n
  d = 1 + z * z / n
  c = (p + z * z / (2 * n)) / d
  h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
  return [max(0.0, c - h), min(1.0, c + h)]


# --------------------------------------------------------------------------------- split ---
def make_split(ratings_dir: pathlib.Path) -> dict:
  items, by_id, votes, raters = load(ratings_dir)
  cons = {i: consensus(v) for i, v in votes.items()}
  agreed = sorted(i for i, c in cons.items() if c is not None)
  by_kind = {}
  for i in agreed:
    by_kind.setdefault(by_id[i]["source"]["kind"], []).append(i)
  rng = random.Random(SPLIT_SEED)
  tune, held = [], []
  for kind in sorted(by_kind):
    ids = sorted(by_kind[kind])
    rng.shuffle(ids)
    # Stratified by source kind and by consensus within it: half of each to each part.
    for verdict in ("yes", "no"):
      part = [i for i in ids if cons[i] == verdict]
      cut = (len(part) + 1) // 2
      tune += part[:cut]
      held += part[cut:]
  split = {"format": "jaxdiffattack.rating_split/1", "run_id": items["run_id"],
           "seed": SPLIT_SEED,
           "rule": "stratified by source kind and consensus verdict; half (rounded up) of each "
                   "stratum to tune, the rest held out; items without a consensus kept apart",
           "consensus_rule": CONSENSUS_RULE,
           "raters": [r["rater"] for r in raters],
           "tune": sorted(tune), "heldout": sorted(held),
           "no_consensus": sorted(i for i in votes if cons[i] is None),
           "unrated": sorted(set(by_id) - set(votes))}
  (ratings_dir / "split.json").write_text(json.dumps(split, indent=1) + "\n")
  print(f"split: tune {len(tune)}, held out {len(held)}, no consensus "
        f"{len(split['no_consensus'])}, unrated {len(split['unrated'])} -> "
        f"{ratings_dir / 'split.json'}")
  return split


# ----------------------------------------------------------------------------- features ---
def item_features(ratings_dir: pathlib.Path, ids):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.toy import oracle  # pylint: disable=g-import-not-at-top
  _, by_id, _, _ = load(ratings_dir)
  images = np.stack([np.asarray(Image.open(ratings_dir / by_id[i]["image"]).convert("RGB"))
                     for i in ids])
  labels = [by_id[i]["prompt"][len("a "):] for i in ids]
  return oracle.features(images), labels


def real_features(split: str, n: int):
  from jaxdiffattack.toy import oracle, world  # pylint: disable=g-import-not-at-top
  data = world.make_dataset(split, n)
  return oracle.features(data.images), [world.LABELS[l] for l in data.labels[:, 0]]


def metrics(outcomes, truth) -> dict:
  """outcomes: holds|violated|unclear; truth: yes|no."""
  fail = [o for o, t in zip(outcomes, truth) if t == "no"]
  good = [o for o, t in zip(outcomes, truth) if t == "yes"]
  oracle_votes = [{"holds": "yes", "violated": "no", "unclear": "unsure"}[o] for o in outcomes]
  out = {
      "items": len(truth), "consensus_failures": len(fail), "consensus_correct": len(good),
      "recall": fail.count("violated") / max(len(fail), 1),
      "recall_ci95": wilson(fail.count("violated"), len(fail)),
      "unclear_on_failures": fail.count("unclear") / max(len(fail), 1),
      "holds_on_failures": fail.count("holds") / max(len(fail), 1),
      "false_failure": good.count("violated") / max(len(good), 1),
      "false_failure_ci95": wilson(good.count("violated"), len(good)),
      "unclear_correct": good.count("unclear") / max(len(good), 1),
      "unclear_correct_ci95": wilson(good.count("unclear"), len(good)),
      "holds_on_correct": good.count("holds") / max(len(good), 1),
      "kappa": cohen_kappa(oracle_votes, list(truth)),
      "confusion": {t: {o: sum(1 for x, y in zip(outcomes, truth) if x == o and y == t)
                        for o in ("holds", "violated", "unclear")} for t in ("yes", "no")},
  }
  return out


def _objective(m: dict, real: float) -> float:
  pen = 0.0
  pen += 4 * max(0.0, TARGETS["recall"] - m["recall"])
  pen += 8 * max(0.0, m["false_failure"] - TARGETS["false_failure"] + 0.01)
  pen += 4 * max(0.0, m["unclear_correct"] - TARGETS["unclear_correct"] + 0.02)
  pen += 20 * max(0.0, TARGETS["real"] + 0.005 - real)
  return m["kappa"] - pen


GRID = {
    "object_area": (8, 12, 16, 20),
    "second_ratio": (0.1, 0.15, 0.25, 0.35, 0.5),
    "second_area": (6, 10, 14, 20),
    "colour_far": (30.0, 40.0, 60.0),
    "hold_fit": (0.6, 0.64, 0.68, 0.72, 0.76),
    "hold_lead": (-0.06, -0.03, 0.0, 0.02),
    "other_lead": (0.0, 0.02, 0.04, 0.08),
    "other_fit": (0.6, 0.65, 0.7, 0.75),
    "deformed_fit": (0.5, 0.55, 0.6, 0.64, 0.68),
    "convex_solidity": (0.7, 0.74, 0.77, 0.8, 0.83, 0.86),
    "square_circle_lead": (-0.04, -0.02, 0.0, 0.02, 0.04),
    "circle_round_tol": (0.0, 0.02, 0.04, 0.08),
    "unexplained_area": (20, 40, 60, 100),
    "clutter_area": (30, 60, 120, 1024),
}


def tune(ratings_dir: pathlib.Path, rounds: int = 3) -> dict:
  from jaxdiffattack.toy import oracle  # pylint: disable=g-import-not-at-top
  split = json.loads((ratings_dir / "split.json").read_text())
  _, by_id, votes, _ = load(ratings_dir)
  ids = split["tune"]
  truth = [consensus(votes[i]) for i in ids]
  feats, labels = item_features(ratings_dir, ids)
  # Real scenes of the *train* split keep the thresholds honest on clean renders (the held-out
  # split is only in the report).
  rfeats, rlabels = real_features("train", 400)

  def evaluate(t):
    out = [oracle.decide(f, l, t).outcome for f, l in zip(feats, labels)]
    real = np.mean([oracle.decide(f, l, t).outcome == "holds" for f, l in zip(rfeats, rlabels)])
    m = metrics(out, truth)
    return _objective(m, real), m, real

  best = oracle.DEFAULT_THRESHOLDS
  score, m, real = evaluate(best)
  print(f"start: objective {score:.3f} κ {m['kappa']:.3f} recall {m['recall']:.3f} "
        f"ff {m['false_failure']:.3f} unclear {m['unclear_correct']:.3f} real {real:.3f}")
  for _ in range(rounds):
    changed = False
    for key, values in GRID.items():
      for v in values:
        cand = best._replace(**{key: type(getattr(best, key))(v)})
        s, cm, cr = evaluate(cand)
        if s > score + 1e-9:
          best, score, m, real, changed = cand, s, cm, cr, True
    print(f"round: objective {score:.3f} κ {m['kappa']:.3f} recall {m['recall']:.3f} "
          f"ff {m['false_failure']:.3f} unclear {m['unclear_correct']:.3f} real {real:.3f}")
    if not changed:
      break
  print("tuned:", best)
  return {"thresholds": best._asdict(), "tune_metrics": m, "train_real_holds": float(real)}


def _v1_outcomes(ratings_dir: pathlib.Path, ids, labels) -> list:
  """Oracle v1's verdict rule (`read()`: failure when the image is read completely and the
  label's object is not among its objects; unclear when not read completely and not shown)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.toy import oracle  # pylint: disable=g-import-not-at-top
  _, by_id, _, _ = load(ratings_dir)
  images = np.stack([np.asarray(Image.open(ratings_dir / by_id[i]["image"]).convert("RGB"))
                     for i in ids])
  out = []
  for label, r in zip(labels, oracle.read(images)):
    shown = any(o.label == label for o in r.objects)
    out.append("violated" if r.complete and not shown else
               "unclear" if not r.complete and not shown else "holds")
  return out


def _machine() -> str:
  cpu = ""
  try:
    cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
               if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  import os  # pylint: disable=g-import-not-at-top
  return (f"{cpu or platform.machine()}, {os.cpu_count()} CPUs (shared), {platform.system()}, "
          f"python {platform.python_version()}")


def _git(*args) -> str:
  return subprocess.run(["git", *args], capture_output=True, text=True,
                        cwd=pathlib.Path(__file__).parent).stdout.strip()


def report(ratings_dir: pathlib.Path, out: pathlib.Path, real_n: int = 2000) -> dict:
  from jaxdiffattack.toy import oracle  # pylint: disable=g-import-not-at-top
  start = time.time()
  split = json.loads((ratings_dir / "split.json").read_text())
  items, by_id, votes, raters = load(ratings_dir)
  result = {"command": "python " + " ".join(sys.argv),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": _machine(),
            "git_revision": _git("rev-parse", "HEAD"),
            "thresholds": oracle.DEFAULT_THRESHOLDS._asdict(), "targets": TARGETS,
            "raters": raters, "consensus_rule": CONSENSUS_RULE,
            "split": {k: len(split[k]) for k in
                                        ("tune", "heldout", "no_consensus", "unrated")}}
  per_part = {}
  for part in ("tune", "heldout"):
    ids = split[part]
    truth = [consensus(votes[i]) for i in ids]
    feats, labels = item_features(ratings_dir, ids)
    verdicts = [oracle.decide(f, l) for f, l in zip(feats, labels)]
    m = metrics([v.outcome for v in verdicts], truth)
    kinds = {}
    for i, v, t in zip(ids, verdicts, truth):
      k = by_id[i]["source"]["kind"]
      kinds.setdefault(k, {"items": 0, "failures": 0, "recalled": 0, "correct": 0,
                           "false_failures": 0, "unclear_correct": 0})
      d = kinds[k]
      d["items"] += 1
      d["failures"] += t == "no"
      d["recalled"] += t == "no" and v.outcome == "violated"
      d["correct"] += t == "yes"
      d["false_failures"] += t == "yes" and v.outcome == "violated"
      d["unclear_correct"] += t == "yes" and v.outcome == "unclear"
    m["by_kind"] = kinds
    if part == "heldout":
      m["disagreements"] = [
          {"item": i, "prompt": by_id[i]["prompt"], "consensus": t, "oracle": v.outcome,
           "reason": v.reason, "kind": by_id[i]["source"]["kind"],
           "notes": [r for r in votes[i].values()]}
          for i, v, t in zip(ids, verdicts, truth)
          if (t == "no") != (v.outcome == "violated") or (t == "yes" and v.outcome != "holds")]
    if part == "heldout":   # v1's rule on the same items, for comparison
      m["v1"] = metrics(_v1_outcomes(ratings_dir, ids, labels), truth)
    per_part[part] = m
  # Inter-rater agreement on every item rated by the first two raters.
  names = [r["rater"] for r in raters]
  if len(names) >= 2:
    both = [i for i in votes if names[0] in votes[i] and names[1] in votes[i]]
    result["inter_rater_kappa"] = cohen_kappa([votes[i][names[0]] for i in both],
                                              [votes[i][names[1]] for i in both])
    result["inter_rater_items"] = len(both)
  rfeats, rlabels = real_features("heldout", real_n)
  real = [oracle.decide(f, l) for f, l in zip(rfeats, rlabels)]
  result["real_heldout"] = {
      "scenes": real_n, "split": "world 'heldout' (never used for tuning)",
      "holds": float(np.mean([v.outcome == "holds" for v in real])),
      "violated": float(np.mean([v.outcome == "violated" for v in real])),
      "unclear": float(np.mean([v.outcome == "unclear" for v in real]))}
  result["tune"] = per_part["tune"]
  result["heldout"] = per_part["heldout"]
  h = per_part["heldout"]
  result["targets_met"] = {
      "recall": h["recall"] >= TARGETS["recall"],
      "false_failure": h["false_failure"] <= TARGETS["false_failure"],
      "unclear_correct": h["unclear_correct"] <= TARGETS["unclear_correct"],
      "real": result["real_heldout"]["holds"] >= TARGETS["real"]}
  result["seconds"] = round(time.time() - start, 1)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
  out.with_suffix(".md").write_text(markdown(result))
  print(markdown(result))
  return result


def _pct(x):
  return "n/a" if x is None else f"{100 * x:.1f} %"


def markdown(r: dict) -> str:
  h, t = r["heldout"], r["tune"]
  ci = lambda c: "" if c[0] is None else f" [{_pct(c[0])}, {_pct(c[1])}]"
  lines = [
      "# Oracle v2 against blind ratings (toy world)", "",
      f"Command: `{r['command']}`  ", f"Date: {r['date']}, machine: {r['machine']}, "
      f"git {r['git_revision'][:12]}.", "",
      "Ratings: `docs/ratings/toy_v1/`: " + ", ".join(
          f"rater {x['rater']} ({x['count']} items)" for x in r["raters"]) + "; how: " +
      "; ".join(sorted({x["method"] for x in r["raters"]})) + ".",
      f"Consensus: {r['consensus_rule']}",
      f"Split (`docs/ratings/toy_v1/split.json`, fixed before tuning): {r['split']['tune']} "
      f"tuning, {r['split']['heldout']} held-out, {r['split']['no_consensus']} without a "
      f"consensus (kept apart).", "",
      "| metric (target) | held-out | tuning |", "| --- | --- | --- |",
      f"| recall of the raters' failures (≥ 80 %) | **{_pct(h['recall'])}**{ci(h['recall_ci95'])}"
      f" ({h['confusion']['no']['violated']}/{h['consensus_failures']}) | {_pct(t['recall'])} |",
      f"| failures called on images the raters call correct (≤ 5 %) | "
      f"**{_pct(h['false_failure'])}**{ci(h['false_failure_ci95'])} "
      f"({h['confusion']['yes']['violated']}/{h['consensus_correct']}) | "
      f"{_pct(t['false_failure'])} |",
      f"| unclear on images the raters call correct (≤ 10 %) | **{_pct(h['unclear_correct'])}**"
      f"{ci(h['unclear_correct_ci95'])} ({h['confusion']['yes']['unclear']}/"
      f"{h['consensus_correct']}) | {_pct(t['unclear_correct'])} |",
      f"| unclear on the raters' failures | {_pct(h['unclear_on_failures'])} | "
      f"{_pct(t['unclear_on_failures'])} |",
      f"| Cohen's κ, oracle (holds/violated/unclear) vs consensus (yes/no) | **{h['kappa']:.3f}** "
      f"| {t['kappa']:.3f} |",
      f"| real held-out scenes read as holds (≥ 99 %), {r['real_heldout']['scenes']} | "
      f"**{_pct(r['real_heldout']['holds'])}** | – |", "",
      f"Oracle v1 (its rule, same held-out items): recall {_pct(h['v1']['recall'])}, false "
      f"failures {_pct(h['v1']['false_failure'])}, unclear on correct "
      f"{_pct(h['v1']['unclear_correct'])}, unclear on failures "
      f"{_pct(h['v1']['unclear_on_failures'])}, κ {h['v1']['kappa']:.3f}.", "",
      f"Inter-rater κ (yes/no/unsure): {r.get('inter_rater_kappa', float('nan')):.3f} over "
      f"{r.get('inter_rater_items', 0)} items.", "",
      "Targets met: " + ", ".join(f"{k} {'yes' if v else 'NO'}"
                                   for k, v in r["targets_met"].items()) + ".", "",
      "Held-out confusion (rows: consensus; columns: oracle):", "",
      "| consensus | holds | violated | unclear |", "| --- | --- | --- | --- |"]
  for v in ("yes", "no"):
    c = h["confusion"][v]
    lines.append(f"| {v} | {c['holds']} | {c['violated']} | {c['unclear']} |")
  lines += ["", "Held-out, by source kind:", "",
            "| kind | items | failures | recalled | correct | false failures | unclear on correct |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
  for k, d in sorted(h["by_kind"].items()):
    lines.append(f"| {k} | {d['items']} | {d['failures']} | {d['recalled']} | {d['correct']} | "
                 f"{d['false_failures']} | {d['unclear_correct']} |")
  lines += ["", "Thresholds (`oracle.Thresholds` defaults, tuned on the tuning part only): " +
            ", ".join(f"{k}={v}" for k, v in r["thresholds"].items()) + ".", "",
            "Held-out disagreements (consensus vs oracle, with the oracle's reason):", ""]
  for d in h.get("disagreements", []):
    lines.append(f"- {d['item']} \"{d['prompt']}\" ({d['kind']}): raters {d['consensus']}, "
                 f"oracle {d['oracle']}: {d['reason']}")
  return "\n".join(lines) + "\n"


def main(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("cmd", choices=("split", "tune", "report"))
  p.add_argument("--ratings", type=pathlib.Path, required=True)
  p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/results/oracle_v2"))
  p.add_argument("--real", type=int, default=2000)
  a = p.parse_args(argv)
  if a.cmd == "split":
    make_split(a.ratings)
  elif a.cmd == "tune":
    print(json.dumps(tune(a.ratings), indent=1))
  else:
    report(a.ratings, a.out, a.real)


if __name__ == "__main__":
  main(sys.argv[1:])
