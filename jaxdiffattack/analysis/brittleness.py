"""The brittleness paper's discussion analyses (Po-Yuan Mao et al., arXiv 2312.11473 §5).

From per-member records of a seed-shift grid (shift, α, class, seed, judged class, object
centroid):
  * class-wise robustness at every α (not only α = 0): hits / n per class, and the overall row
    that is their sum, with 95 % intervals (overall: clustered by class) (`classwise`);
  * confusion: what each class turns into under each shift (`confusion`);
  * object displacement under mean shifts: the object's centroid at α minus its centroid at
    α = 0 for the same class and seed (`displacement`; the paper saw objects move right for
    positive shifts);
  * step distances of the latent trajectory (`sweep.trajectories.trajectory_statistics`).
"""

import collections
from typing import Sequence

import numpy as np

from jaxdiffattack import stats

ALL = "all"


def classwise(records: Sequence[dict]) -> list[dict]:
  """Rows {shift, alpha, class, n, hits, unclear, accuracy, low, high, interval}: per class,
  then class "all" (the sum over classes) for each (shift, α). 95 % intervals: Wilson for a
  class (its seeds); for "all" clustered by class (`stats.clustered_rate`: the seeds of one
  class share its prompt, issue #26 item 5)."""
  groups = collections.defaultdict(lambda: [0, 0, 0])
  flags = collections.defaultdict(list)   # (shift, α) -> [(class, correct)]
  for r in records:
    flags[(r["shift"], r["alpha"])].append((r["class"], bool(r["correct"])))
    for cls in (r["class"], ALL):
      g = groups[(r["shift"], r["alpha"], cls)]
      g[0] += 1
      g[1] += bool(r["correct"])
      g[2] += r["pred"] is None
  rows = []
  for (s, a, c), (n, h, u) in sorted(groups.items(), key=lambda kv: _order(kv[0])):
    if c == ALL:
      pairs = flags[(s, a)]
      rate = stats.clustered_rate([f for _, f in pairs], [k for k, _ in pairs])
      (low, high), interval = rate["ci95"], rate["interval"]
    else:
      (low, high), interval = stats.wilson_interval(h, n), "wilson"
    rows.append({"shift": s, "alpha": a, "class": c, "n": n, "hits": h, "unclear": u,
                 "accuracy": h / n, "low": low, "high": high, "interval": interval})
  return rows


def _order(key):
  shift, alpha, cls = key
  return (shift, alpha, cls == ALL, cls)


def confusion(records: Sequence[dict]) -> list[dict]:
  """Rows {shift, alpha, class, pred, count}: the judged class (or "unclear") per class."""
  counts = collections.Counter((r["shift"], r["alpha"], r["class"],
                                "unclear" if r["pred"] is None else r["pred"]) for r in records)
  return [{"shift": s, "alpha": a, "class": c, "pred": p, "count": n}
          for (s, a, c, p), n in sorted(counts.items())]


def displacement(records: Sequence[dict]) -> list[dict]:
  """Rows {shift, alpha, n, classes, dx, dy, dist, dx_se, dy_se, dist_se, se}: mean centroid
  move from α = 0 and mean distance moved (dist = mean |(dx, dy)|)
  (same shift kind's unshifted record of the same class and seed), in pixels; records without
  an object are left out. The seeds of one class share its scene, so the standard errors are
  cluster-robust by class (`stats.cluster_wald_interval`, CR1; issue #26 item 5) when the moves
  span two classes or more, else the plain sd/√n ("se" says which)."""
  base = {(r["class"], r["seed"]): (r["cx"], r["cy"]) for r in records if r["alpha"] == 0.0}
  moves, classes = collections.defaultdict(list), collections.defaultdict(list)
  for r in records:
    b = base.get((r["class"], r["seed"]))
    if b is None or r["alpha"] == 0.0:
      continue
    d = (r["cx"] - b[0], r["cy"] - b[1])
    if not np.isnan(d).any():
      moves[(r["shift"], r["alpha"])].append(d)
      classes[(r["shift"], r["alpha"])].append(r["class"])
  rows = []
  for (shift, alpha), ds in sorted(moves.items()):
    ds, groups = np.asarray(ds), classes[(shift, alpha)]
    row = {"shift": shift, "alpha": alpha, "n": len(ds), "classes": len(set(groups))}
    for name, values in (("dx", ds[:, 0]), ("dy", ds[:, 1]), ("dist", np.hypot(*ds.T))):
      m = stats.clustered_mean(values, groups)
      row |= {name: m["mean"], f"{name}_se": m["se"]}
    row["se"] = ("cluster-robust by class" if m["interval"] == "cluster-robust"
                 else "sd/sqrt(n)")
    rows.append(row)
  return rows
