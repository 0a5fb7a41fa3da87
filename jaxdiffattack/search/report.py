"""Search outputs: per-target rows, Non-Gaussian Rate, summary.json, report.md and fitness curves.

Everything here is rebuilt from files: `results.jsonl` (one row per method × target, written by the
run) and `timing.json` (wall times; kept apart so results.jsonl is bit-identical across resumes).
`write_report(workdir)` regenerates summary.json, report.md and plots/*.png without recomputing.

Non-Gaussian Rate (SAGE, arXiv 2306.00974, reports the NGR of found latents): the fraction of
found latents for which a normality test rejects at α (default 0.05) on the latent's d flattened
elements. Headline test: the one-sample Kolmogorov–Smirnov test against N(0, 1) (`scipy.stats.
kstest(z, "norm")`): it tests the exact distribution the sampler assumes, mean 0 and variance 1
included. Also reported: D'Agostino–Pearson K² (`scipy.stats.normaltest`), which tests normality
with any mean and variance (shape only). For reference, true N(0, I) draws reject at rate ≈ α.
"""

import io as _io
import json
import pathlib
import warnings

import numpy as np

from jaxdiffattack import io
from jaxdiffattack import stats

NGR_TESTS = ("ks", "dagostino")


def normality_pvalues(latents: np.ndarray) -> dict[str, np.ndarray]:
  """{"ks": [N], "dagostino": [N]} p-values for latents [N, ...] (each flattened)."""
  from scipy import stats as sps  # pylint: disable=g-import-not-at-top
  flat = np.asarray(latents, np.float64).reshape(len(latents), -1)
  return {"ks": np.array([sps.kstest(z, "norm").pvalue for z in flat]),
          "dagostino": np.array([sps.normaltest(z).pvalue for z in flat])}


def non_gaussian_rate(latents: np.ndarray, alpha: float = 0.05) -> dict[str, float | None]:
  """{"ks": rate, "dagostino": rate}: fraction of latents whose test rejects at α."""
  if len(latents) == 0:
    return {name: None for name in NGR_TESTS}
  p = normality_pvalues(latents)
  return {name: float(np.mean(p[name] < alpha)) for name in NGR_TESTS}


def _float(x):
  x = float(x)
  return x if np.isfinite(x) else None


def summarise(rows: list[dict], timing: dict) -> dict:
  """summary.json: per method, success rate (95 % Wilson CI), evaluations to first success, NGR,
  CLIP figures, non-finite count, wall time, images/s and the ask/tell share of wall time."""
  out = {"methods": {}}
  for method in dict.fromkeys(r["method"] for r in rows):
    sel = [r for r in rows if r["method"] == method]
    n = len(sel)
    hits = sum(bool(r["success"]) for r in sel)
    low, high = stats.wilson_interval(hits, n)
    to_first = [r["evaluations_to_first_success"] for r in sel if r["success"]]
    ngr = {}
    for test in NGR_TESTS:
      counts = [(f["ngr_reject"][test]) for r in sel for f in r["failures"] if f.get("ngr_reject")]
      ngr[test] = float(np.mean(counts)) if counts else None
    similarity = [r["failure_similarity"] for r in sel if r.get("failure_similarity") is not None]
    clip_failures = [f["scores"].get("clip") for r in sel for f in r["failures"]
                     if f["scores"].get("clip") is not None]
    clean_clip = [r["clean"]["clip"] for r in sel if r["clean"].get("clip") is not None]
    t = timing.get(method, {})
    total = t.get("time/total", 0.0)
    entry = {
        "strategy": sel[0]["strategy"], "targets": n, "successes": hits,
        "success_rate": hits / n if n else None, "success_rate_ci95": [low, high],
        "evaluations_to_first_success_mean": float(np.mean(to_first)) if to_first else None,
        "evaluations_to_first_success_median": float(np.median(to_first)) if to_first else None,
        "evaluations": int(sum(r["evaluations"] for r in sel)),
        "budget_per_target": sel[0]["budget"],
        "failures_found": int(sum(r["failures_found"] for r in sel)),
        "clean_failures": int(sum(bool(r["clean"]["verdict"]) for r in sel)),
        "nonfinite_fitness": int(sum(r["nonfinite"] for r in sel)),
        "evaluator_confirmed": int(sum(r["counts"].get("verdict", 0) for r in sel)),
        "clip_filter_rejected": int(sum(r["counts"].get("clip_rejected", 0) for r in sel)),
        "constraint_rejected": int(sum(r["counts"].get("infeasible", 0) for r in sel)),
        "ngr": ngr,
        "failure_similarity_mean": float(np.mean(similarity)) if similarity else None,
        "clip_clean_mean": float(np.mean(clean_clip)) if clean_clip else None,
        "clip_failures_mean": float(np.mean(clip_failures)) if clip_failures else None,
        "wall_time_s": total,
        "images_per_s": (t.get("images", 0.0) / t["time/evaluate"]
                         if t.get("time/evaluate") else None),
        "ask_tell_share": t.get("time/ask_tell", 0.0) / total if total else None,
    }
    out["methods"][method] = entry
  return out


def _fmt(x, spec=".3g"):
  return "–" if x is None else format(x, spec)


def markdown(rows: list[dict], summary: dict, config: dict) -> str:
  lines = [f"# Failure search: {config.get('space')} space (SAGE, arXiv 2306.00974)", "",
           f"Generator `{config.get('model')}`, {config.get('num_steps')} "
           f"{config.get('scheduler')} "
           f"steps, guidance {config.get('guidance_scale')}; population "
           f"{config.get('population_size')} × {config.get('num_generations')} generations per "
           "target. "
           "Success = the held-out evaluator confirms a failure (and the space's constraint and "
           "the CLIP filter, when on, hold). NGR = Non-Gaussian Rate of found latents "
           "(KS test vs N(0, 1) and D'Agostino–Pearson, α = "
           f"{config.get('ngr_alpha', 0.05)}). Diversity weight "
           f"{config.get('criterion', {}).get('diversity_weight')}, CLIP filter "
           f"{config.get('criterion', {}).get('clip_filter', {}).get('mode')}; "
           "similarity = mean pairwise similarity of a target's found failures.", "",
           "| method | success rate [95 % CI] | evals to 1st success (mean / median) | failures "
           "| NGR KS / K² | CLIP clean → failures | similarity | CLIP-filtered | non-finite "
           "| wall s | images/s | ask/tell |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for method, s in summary["methods"].items():
    ci = s["success_rate_ci95"]
    lines.append(
        f"| {method} | {s['successes']}/{s['targets']} = {_fmt(s['success_rate'], '.0%')} "
        f"[{_fmt(ci[0], '.0%')}, {_fmt(ci[1], '.0%')}] | "
        f"{_fmt(s['evaluations_to_first_success_mean'], '.1f')} / "
        f"{_fmt(s['evaluations_to_first_success_median'], '.0f')} | {s['failures_found']} | "
        f"{_fmt(s['ngr']['ks'], '.0%')} / {_fmt(s['ngr']['dagostino'], '.0%')} | "
        f"{_fmt(s['clip_clean_mean'], '.1f')} → {_fmt(s['clip_failures_mean'], '.1f')} | "
        f"{_fmt(s['failure_similarity_mean'], '.2f')} | {s['clip_filter_rejected']} | "
        f"{s['nonfinite_fitness']} | {_fmt(s['wall_time_s'], '.1f')} | "
        f"{_fmt(s['images_per_s'], '.1f')} | {_fmt(s['ask_tell_share'], '.1%')} |")
  lines += ["", "## Targets", "",
            "| method | target | prompt | success | 1st gen | evals | best fitness | found |"
            " files |", "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    files = r["failures"][0]["files"][0] if r["failures"] else (
        r["best"]["files"][0] if r["best"]["files"] else "")
    prompt = r["prompt"] + (f" → {r['target_label']}" if r["target_label"] else "")
    lines.append(f"| {r['method']} | {r['target']} | {prompt} | {'yes' if r['success'] else 'no'} "
                 f"| {_fmt(r['first_success_generation'], 'd')} | {r['evaluations']} | "
                 f"{_fmt(r['best_fitness'], '.4g')} | {r['failures_found']} | {files} |")
  return "\n".join(lines) + "\n"


def console_summary(rows: list[dict], summary: dict, workdir) -> str:
  """A few lines for the terminal: per method the success rate, then every found failure."""
  lines = []
  for method, s in summary["methods"].items():
    evals = _fmt(s["evaluations_to_first_success_mean"], ".1f")
    lines.append(f"{method}: {s['successes']}/{s['targets']} targets with a confirmed failure, "
                 f"evaluations to first success {evals} (mean), "
                 f"{_fmt(s['images_per_s'], '.1f')} images/s")
  for r in rows:
    for f in r["failures"][:1]:
      what = f" {f['prompt']!r}" if "prompt" in f else ""
      lines.append(f"  [{r['method']}] {r['prompt']!r}: generation {f['generation']}{what} → "
                   + ", ".join(f["files"][:2]))
  lines.append(f"report: {pathlib.Path(workdir) / 'report.md'}")
  return "\n".join(lines)


def plots(rows: list[dict], plot_dir: pathlib.Path) -> None:
  """plots/fitness_curves.png (best-so-far fitness per generation) and plots/success.png
  (fraction of targets with a confirmed failure vs evaluations per target), all methods."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  methods = list(dict.fromkeys(r["method"] for r in rows))
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for i, method in enumerate(methods):
    sel = [r for r in rows if r["method"] == method]
    color = f"C{i}"
    curves = np.array([[np.nan if v is None else v for v in r["curve_best"]] for r in sel])
    gens = np.arange(1, curves.shape[1] + 1)
    for c in curves:
      axes[0].plot(gens, c, color=color, alpha=0.25, lw=0.8)
    with warnings.catch_warnings():  # all-NaN generations (every target already stopped)
      warnings.simplefilter("ignore", RuntimeWarning)
      mean = np.nanmean(curves, axis=0)
    axes[0].plot(gens, mean, color=color, lw=2, label=method)
    pop = sel[0]["population_size"]
    first = np.array([r["first_success_generation"] if r["success"] else np.inf for r in sel])
    rate = [(first <= g).mean() for g in range(curves.shape[1])]
    axes[1].step(gens * pop, rate, where="post", color=color, label=method)
  axes[0].set(xlabel="generation", ylabel="best fitness so far (minimised)",
              title="fitness curves (thin: targets, bold: mean)")
  axes[1].set(xlabel="evaluations per target", ylabel="targets with a confirmed failure",
              ylim=(-0.02, 1.02), title="search success vs budget")
  for ax in axes:
    ax.legend(fontsize=8)
  fig.tight_layout()
  buffer = _io.BytesIO()
  fig.savefig(buffer, format="png", dpi=110)
  plt.close(fig)
  io.atomic_write_bytes(plot_dir / "fitness_curves.png", buffer.getvalue())


def write_report(workdir) -> dict:
  """Rebuilds summary.json, report.md and plots/ from results.jsonl and timing.json."""
  workdir = pathlib.Path(workdir)
  rows = io.read_jsonl(workdir / "results.jsonl")
  timing_path = workdir / "timing.json"
  timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
  config_path = workdir / "config.json"
  config = json.loads(config_path.read_text()) if config_path.exists() else {}
  summary = summarise(rows, timing)
  io.write_json(workdir / "summary.json", summary)
  io.atomic_write_bytes(workdir / "report.md", markdown(rows, summary, config).encode())
  plots(rows, workdir / "plots")
  return {"rows": rows, "summary": summary}
