"""The robustness radius of a generator under a seed shift (issue #17; arXiv 2312.11473 §4).

For one setting, shift and side (α > 0 or α < 0), the radius is the |α| at which the top-1
accuracy first falls to half of its clean (α = 0) value:

  r = the first crossing of acc(α) = acc(0) / 2 walking out from α = 0 along the side, located by
      linear interpolation between the two grid points around it; +inf ("> the grid's last |α|")
      when the accuracy stays above half within the grid.

Confidence interval: a percentile bootstrap over the sweep's units — the (prompt, seed) pairs.
Every cell of a setting shares the same pairs (the sweep's paired design), so a resample draws
pairs with replacement and keeps each drawn pair's results at every α together; the radius of
each resample is recomputed from its own clean accuracy. The 95 % interval is the 2.5 / 97.5
percentiles of the resampled radii (+inf where more than 2.5 % of them never cross).
"""

import numpy as np

from jaxdiffattack import perturb

FIELDS = ("setting", "shift", "side", "metric", "radius", "ci_low", "ci_high", "clean",
          "max_alpha", "n_units", "n_boot")
SIDES = ("+", "-")
# The accuracies a sweep report gives radii of (and the paired clean comparison compares).
METRICS = ("top1", "oracle_top1", "world2_oracle_top1")


def crossing(alphas, values) -> float:
  """|α| where `values` first fall to half of values[0] (see the module docstring).

  Args:
    alphas: [A] |α| ascending, alphas[0] = 0 (the clean cell).
    values: [A] the metric at each α.
  """
  alphas = np.asarray(alphas, np.float64)
  values = np.asarray(values, np.float64)
  if alphas.ndim != 1 or alphas.shape != values.shape or alphas[0] != 0:
    raise ValueError(f"crossing needs matching 1-D alphas and values starting at α = 0; got "
                     f"alphas {alphas.tolist()}")
  if np.any(np.diff(alphas) <= 0):
    raise ValueError(f"alphas must ascend: {alphas.tolist()}")
  threshold = values[0] / 2
  below = np.nonzero(values[1:] <= threshold)[0]
  if values[0] <= 0 or not below.size:
    return float("inf") if values[0] > 0 else float("nan")
  i = below[0] + 1
  a0, a1, v0, v1 = alphas[i - 1], alphas[i], values[i - 1], values[i]
  if v0 == v1:
    return float(a1)
  return float(a0 + (v0 - threshold) / (v0 - v1) * (a1 - a0))


def bootstrap(alphas, hits, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
  """(radius, ci_low, ci_high) from per-unit results.

  Args:
    alphas: [A] |α| ascending from 0.
    hits: [A, U] the metric of each unit (prompt, seed pair) at each α.
    n_boot: bootstrap resamples.
    seed: their NumPy seed.
  """
  hits = np.asarray(hits, np.float64)
  radius = crossing(alphas, hits.mean(axis=1))
  rng = np.random.default_rng(seed)
  draws = rng.integers(0, hits.shape[1], size=(n_boot, hits.shape[1]))
  resampled = np.array([crossing(alphas, hits[:, d].mean(axis=1)) for d in draws])
  resampled = resampled[~np.isnan(resampled)]
  if not resampled.size:
    return radius, float("nan"), float("nan")
  low, high = np.percentile(resampled, [2.5, 97.5], method="lower")
  if np.mean(np.isinf(resampled)) > 0.025:
    high = float("inf")
  return radius, float(low), float(high)


def radii(member_rows, metric: str = "top1", n_boot: int = 1000, seed: int = 0) -> list[dict]:
  """radius.csv rows: per setting × one-parameter shift × side, the radius of `metric` with
  its bootstrap CI (see the module docstring). `member_rows`: members.csv rows."""
  settings = sorted({r["setting"] for r in member_rows})
  shifts = sorted({r["shift"] for r in member_rows} - {perturb.UNSHIFTED})
  out = []
  for setting in settings:
    rows = [r for r in member_rows if r["setting"] == setting]
    units = sorted({(int(r["prompt_index"]), int(r["seed_index"])) for r in rows})
    unit_index = {u: i for i, u in enumerate(units)}
    clean = np.full(len(units), np.nan)
    for r in rows:
      if r["shift"] == perturb.UNSHIFTED:
        clean[unit_index[int(r["prompt_index"]), int(r["seed_index"])]] = float(r[metric])
    for shift in shifts:
      if perturb.SHIFTS[shift].arity != 1:
        continue
      by_alpha: dict[float, np.ndarray] = {}
      for r in rows:
        if r["shift"] == shift:
          a = float(r["alpha_c"])
          by_alpha.setdefault(a, np.full(len(units), np.nan))[
              unit_index[int(r["prompt_index"]), int(r["seed_index"])]] = float(r[metric])
      for side in SIDES:
        sign = 1.0 if side == "+" else -1.0
        side_alphas = sorted((a for a in by_alpha if sign * a > 0), key=abs)
        if not side_alphas:
          continue
        alphas = np.array([0.0] + [abs(a) for a in side_alphas])
        hits = np.stack([clean] + [by_alpha[a] for a in side_alphas])     # [A, U]
        radius, low, high = bootstrap(alphas, hits, n_boot, seed)
        out.append({"setting": setting, "shift": shift, "side": side, "metric": metric,
                    "radius": radius, "ci_low": low, "ci_high": high,
                    "clean": float(np.mean(clean)), "max_alpha": float(alphas[-1]),
                    "n_units": len(units), "n_boot": n_boot})
  return out


def markdown(rows) -> str:
  """A table of radius rows ("> a" where the accuracy never halves within the grid)."""
  fmt = lambda x, top: f"> {top:g}" if np.isinf(x) else ("n/a" if np.isnan(x) else f"{x:.2f}")
  lines = ["## Robustness radius (|α| where accuracy falls to half of clean)", "",
           "95 % CI: percentile bootstrap over (prompt, seed) units, paired across α "
           f"({rows[0]['n_boot'] if rows else 0} resamples); it does not include the "
           "uncertainty of interpolating between grid points.", "",
           "| metric | setting | shift | side | clean | radius | 95 % CI |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    top = r["max_alpha"]
    lines.append(f"| {r['metric']} | {r['setting']} | {r['shift']} | {r['side']} | "
                 f"{100 * r['clean']:.1f} | "
                 f"{fmt(r['radius'], top)} | [{fmt(r['ci_low'], top)}, "
                 f"{fmt(r['ci_high'], top)}] |")
  return "\n".join(lines) + "\n"
