"""Search outputs: per-target rows, Non-Gaussian Rate, summary.json, report.md and fitness curves.

Everything here is rebuilt from files: `results.jsonl` (one row per method × target, written by the
run), `timing.json` (wall times; kept apart so results.jsonl is bit-identical across resumes) and,
for the protocol, `transfer.jsonl`. `write_report(workdir)` regenerates summary.json, report.md,
plots/*.png and (with `filter_clean`) protocol.{md,json} without recomputing.

Success rates by judge: beside the verdict rule's success, every judge's failures are tracked per
target (`judge_first_generation`), so summary.json has, per method, the share of searched targets
each judge fails (95 % Wilson CI) — the evaluator's SSR and, on the toy world, the oracle's.

Non-Gaussian Rate (SAGE, arXiv 2306.00974, reports the NGR of found latents): the fraction of found
latents for which a normality test rejects at α (default 0.05). The tests are applied to the
DECODED latent z the sampler starts from (what SAGE calls the latent; for the "sphere" mode z =
√d · x/‖x‖, for "penalty" z = x). On the sphere every z has exactly the typical norm, and a z drawn
along any direction whose elements look normal passes the marginal tests by construction, so two
tests that can fail there are reported beside them:
  * "ks": one-sample Kolmogorov–Smirnov against N(0, 1) (`scipy.stats.kstest`) on z's d elements
    (marginal distribution, mean 0 and variance 1 included);
  * "dagostino": D'Agostino–Pearson K² (`scipy.stats.normaltest`): marginal shape only;
  * "channel_moments": per channel c of z [C, h, w] (n = h·w elements), the mean (√n · m_c ~
    N(0, 1)) and the second moment (Σ z² ~ χ²_n) under N(0, I); 2C two-sided tests, Bonferroni;
  * "autocorrelation": per channel, the lag-1 correlation of neighbouring elements along the
    width and along the height (r = Σ z_i z_{i+1} / Σ z_i², √m · r ~ N(0, 1) for m pairs of
    independent elements); 2C two-sided tests, Bonferroni. A smooth (spatially correlated)
    latent with Gaussian marginals passes KS and fails this one.
For reference, true N(0, I) draws reject at rate ≈ α in each test.
"""

import collections
import json
import pathlib
import warnings

import numpy as np

from jaxdiffattack import io
from jaxdiffattack import runs
from jaxdiffattack import stats

NGR_TESTS = ("ks", "dagostino", "channel_moments", "autocorrelation")


def _two_sided_normal(z: np.ndarray) -> np.ndarray:
  from scipy import stats as sps  # pylint: disable=g-import-not-at-top
  return 2 * sps.norm.sf(np.abs(z))


def channel_moments_pvalue(z: np.ndarray) -> float:
  """Bonferroni p of the per-channel mean and second-moment tests for one latent [C, h, w]."""
  from scipy import stats as sps  # pylint: disable=g-import-not-at-top
  flat = np.asarray(z, np.float64).reshape(z.shape[0], -1)                     # [C, n]
  n = flat.shape[1]
  p_mean = _two_sided_normal(np.sqrt(n) * flat.mean(axis=1))
  chi2 = (flat ** 2).sum(axis=1)
  p_var = 2 * np.minimum(sps.chi2.cdf(chi2, n), sps.chi2.sf(chi2, n))
  p = np.concatenate([p_mean, p_var])
  return float(min(1.0, len(p) * p.min()))


def autocorrelation_pvalue(z: np.ndarray) -> float:
  """Bonferroni p of the per-channel lag-1 correlation tests (width and height) for one latent
  [C, h, w]."""
  z = np.asarray(z, np.float64)
  p = []
  for a, b in ((z[:, :, 1:], z[:, :, :-1]), (z[:, 1:, :], z[:, :-1, :])):
    num = (a * b).reshape(z.shape[0], -1).sum(axis=1)
    den = np.sqrt((a ** 2).reshape(z.shape[0], -1).sum(axis=1) *
                  (b ** 2).reshape(z.shape[0], -1).sum(axis=1))
    r = num / np.maximum(den, 1e-300)
    p.append(_two_sided_normal(np.sqrt(a[0].size) * r))
  p = np.concatenate(p)
  return float(min(1.0, len(p) * p.min()))


def normality_pvalues(latents: np.ndarray) -> dict[str, np.ndarray]:
  """{test: [N] p-values} of `NGR_TESTS` for latents [N, C, h, w] (the per-channel tests need
  the [C, h, w] layout; for other shapes they are NaN)."""
  from scipy import stats as sps  # pylint: disable=g-import-not-at-top
  latents = np.asarray(latents, np.float64)
  flat = latents.reshape(len(latents), -1)
  spatial = latents.ndim == 4
  return {"ks": np.array([sps.kstest(z, "norm").pvalue for z in flat]),
          "dagostino": np.array([sps.normaltest(z).pvalue for z in flat]),
          "channel_moments": np.array([channel_moments_pvalue(z) if spatial else np.nan
                                       for z in latents]),
          "autocorrelation": np.array([autocorrelation_pvalue(z) if spatial else np.nan
                                       for z in latents])}


def non_gaussian_rate(latents: np.ndarray, alpha: float = 0.05) -> dict[str, float | None]:
  """{test: rate}: fraction of latents whose test rejects at α."""
  if len(latents) == 0:
    return {name: None for name in NGR_TESTS}
  p = normality_pvalues(latents)
  return {name: float(np.mean(p[name] < alpha)) for name in NGR_TESTS}


def _float(x):
  x = float(x)
  return x if np.isfinite(x) else None


def summarise(rows: list[dict], timing: dict) -> dict:
  """summary.json: per method (over the searched targets) the success rate by the verdict rule and
  by each judge (95 % Wilson CIs), evaluations to first success, failures the oracle confirms, NGR,
  CLIP figures, non-finite count, wall time, images/s and the ask/tell share of wall time."""
  out = {"methods": {}}
  for method in dict.fromkeys(r["method"] for r in rows):
    everything = [r for r in rows if r["method"] == method]
    sel = [r for r in everything if r.get("searched", True)]
    n = len(sel)
    hits = sum(bool(r["success"]) for r in sel)
    low, high = stats.wilson_interval(hits, n)
    to_first = [r["evaluations_to_first_success"] for r in sel if r["success"]]
    ngr = {}
    for test in NGR_TESTS:
      counts = [f["ngr_reject"][test] for r in sel for f in r["failures"]
                if f.get("ngr_reject") and test in f["ngr_reject"]]
      ngr[test] = float(np.mean(counts)) if counts else None
    by_judge = {}
    for judge in (sel[0].get("judge_first_generation") or {}) if sel else ():
      failed = sum(r["judge_first_generation"][judge] is not None for r in sel)
      j_low, j_high = stats.wilson_interval(failed, n)
      firsts = [(r["judge_first_generation"][judge] + 1) * r["population_size"] for r in sel
                if r["judge_first_generation"][judge] is not None]
      by_judge[judge] = {"successes": failed, "success_rate": failed / n if n else None,
                         "success_rate_ci95": [j_low, j_high],
                         "evaluations_to_first_mean": float(np.mean(firsts)) if firsts else None,
                         "failing_images": int(sum(r["judge_failures"][judge] for r in sel))}
    found = [f for r in sel for f in r["failures"]]
    oracle = _oracle_name(by_judge)   # the world's oracle among the judges ("oracle" on toy)
    confirmed = lambda f: bool(_oracle_entry(f, oracle).get("failure"))
    similarity = [r["failure_similarity"] for r in sel if r.get("failure_similarity") is not None]
    clip_failures = [f["scores"].get("clip") for f in found if f["scores"].get("clip") is not None]
    clean_clip = [r["clean"]["clip"] for r in sel if r["clean"].get("clip") is not None]
    t = timing.get(method, {})
    total = t.get("time/total", 0.0)
    entry = {
        "strategy": sel[0]["strategy"] if sel else method,
        "kind": sel[0].get("kind") if sel else None,
        "targets": n, "excluded_targets": len(everything) - n, "successes": hits,
        "success_rate": hits / n if n else None, "success_rate_ci95": [low, high],
        "by_judge": by_judge,
        "evaluations_to_first_success_mean": float(np.mean(to_first)) if to_first else None,
        "evaluations_to_first_success_median": float(np.median(to_first)) if to_first else None,
        "evaluations": int(sum(r["evaluations"] for r in sel)),
        "gradient_evaluations": int(sum(r.get("gradient_evaluations", 0) for r in sel)),
        "budget_per_target": sel[0]["budget"] if sel else None,
        "failures_found": int(sum(r["failures_found"] for r in sel)),
        "failures_kept": len(found),
        "oracle_confirmed_kept": (sum(confirmed(f) for f in found) if oracle
                                  else None),
        "oracle_confirmed_targets": (sum(any(confirmed(f) for f in r["failures"]) for r in sel)
                                     if oracle else None),
        # The oracle's reasons for the failures it confirms (v2: "another shape (...)", ...).
        "oracle_confirmed_reasons": (dict(collections.Counter(
            f["judges"][oracle].get("reason") or "violated" for f in found if confirmed(f)))
                                     if oracle else None),
        "clean_failures": int(sum(bool(r["clean"]["verdict"]) for r in sel)),
        "nonfinite_fitness": int(sum(r["nonfinite"] for r in sel)),
        "rule_confirmed": int(sum(r["counts"].get("verdict", 0) for r in sel)),
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


def _rule_text(criterion: dict) -> str:
  name = criterion.get("verdict", "top1_miss")
  if name == "agree":
    return "every one of " + ", ".join(criterion.get("agree", ())) + " fails the image"
  if name == "oracle":
    return "the toy oracle fails the image"
  judge = criterion.get("judge", "evaluator")
  if name == "confident_miss":
    return f"the {judge} misses the class with margin below −{criterion.get('margin')}"
  return f"the {judge}'s top-1 misses the class"


def markdown(rows: list[dict], summary: dict, config: dict) -> str:
  criterion = config.get("criterion", {})
  judges = list(next(iter(summary["methods"].values()), {}).get("by_judge", {}))
  lines = [f"# Failure search: {config.get('space')} space (SAGE, arXiv 2306.00974)", "",
           f"Generator `{config.get('model')}`, {config.get('num_steps')} "
           f"{config.get('scheduler')} "
           f"steps, guidance {config.get('guidance_scale')}; population "
           f"{config.get('population_size')} × {config.get('num_generations')} generations per "
           f"target. Success = {_rule_text(criterion)} (verdict rule "
           f"'{criterion.get('verdict')}'), and the space's constraint and the CLIP filter, when "
           "on, hold. Judges: " + ", ".join(judges) + "; 'SSR <judge>' = targets with an "
           "evaluated image that judge fails. NGR = Non-Gaussian Rate of found latents (KS vs "
           "N(0, 1) / D'Agostino–Pearson / per-channel moments / spatial autocorrelation, α = "
           f"{config.get('ngr_alpha', 0.05)}; see jaxdiffattack.search.report). Diversity weight "
           f"{criterion.get('diversity_weight')}, CLIP filter "
           f"{criterion.get('clip_filter', {}).get('mode')}; "
           "similarity = mean pairwise similarity of a target's found failures.", "",
           "| method | success rate [95 % CI] | " + "".join(f"SSR {j} | " for j in judges) +
           "evals to 1st success (mean / median) | failures | oracle-confirmed kept "
           "| NGR KS / K² / moments / autocorr | CLIP clean → failures | similarity "
           "| CLIP-filtered | non-finite | wall s | images/s | ask/tell |",
           "|---|---|" + "---|" * len(judges) + "---|---|---|---|---|---|---|---|---|---|---|"]
  pct = lambda x: _fmt(x, ".0%")
  for method, s in summary["methods"].items():
    ci = s["success_rate_ci95"]
    lines.append(
        f"| {method} | {s['successes']}/{s['targets']} = {pct(s['success_rate'])} "
        f"[{pct(ci[0])}, {pct(ci[1])}] | " +
        "".join(f"{s['by_judge'][j]['successes']}/{s['targets']} "
                f"[{pct(s['by_judge'][j]['success_rate_ci95'][0])}, "
                f"{pct(s['by_judge'][j]['success_rate_ci95'][1])}] | " for j in judges) +
        f"{_fmt(s['evaluations_to_first_success_mean'], '.1f')} / "
        f"{_fmt(s['evaluations_to_first_success_median'], '.0f')} | {s['failures_found']} | "
        f"{_fmt(s['oracle_confirmed_kept'], 'd')} / {s['failures_kept']} | "
        + " / ".join(pct(s["ngr"][t]) for t in NGR_TESTS) + " | "
        f"{_fmt(s['clip_clean_mean'], '.1f')} → {_fmt(s['clip_failures_mean'], '.1f')} | "
        f"{_fmt(s['failure_similarity_mean'], '.2f')} | {s['clip_filter_rejected']} | "
        f"{s['nonfinite_fitness']} | {_fmt(s['wall_time_s'], '.1f')} | "
        f"{_fmt(s['images_per_s'], '.1f')} | {_fmt(s['ask_tell_share'], '.1%')} |")
  lines += ["", "## Targets", "",
            "| method | target | prompt | searched | success | 1st gen | evals | best fitness "
            "| found | first failure: judges | files |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    files = r["failures"][0]["files"][0] if r["failures"] and r["failures"][0]["files"] else (
        r["best"]["files"][0] if r["best"]["files"] else "")
    prompt = r["prompt"] + (f" → {r['target_label']}" if r["target_label"] else "")
    reading = "; ".join(judges_line(r["failures"][0].get("judges"))) if r["failures"] else ""
    lines.append(f"| {r['method']} | {r['target']} | {prompt} | "
                 f"{'yes' if r.get('searched', True) else 'no'} | "
                 f"{'yes' if r['success'] else 'no'} "
                 f"| {_fmt(r['first_success_generation'], 'd')} | {r['evaluations']} | "
                 f"{_fmt(r['best_fitness'], '.4g')} | {r['failures_found']} | {reading} | "
                 f"{files} |")
  return "\n".join(lines) + "\n"


def judges_line(entry) -> list[str]:
  from jaxdiffattack import judges as judges_lib  # pylint: disable=g-import-not-at-top
  return judges_lib.caption(entry or {})


def _oracle_name(judge_names) -> str | None:
  """The first image judge (`judges.IMAGE_JUDGES`: a world's oracle) among judge_names."""
  from jaxdiffattack import judges as judges_lib  # pylint: disable=g-import-not-at-top
  return next((j for j in judge_names if j in judges_lib.IMAGE_JUDGES), None)


def _oracle_entry(f: dict, oracle: str | None = "oracle") -> dict:
  return (f.get("judges") or {}).get(oracle) or {}


def confirmed_lines(rows: list[dict], summary: dict) -> list[str]:
  """The headline on the toy world: per method, the found failures the oracle (v2) confirms
  (it says the prompt is violated), each with its reason; [] when the oracle is not a judge."""
  lines = []
  for method, s in summary["methods"].items():
    if s["oracle_confirmed_kept"] is None:
      continue
    sel = [r for r in rows if r["method"] == method]
    found = [(r, f) for r in sel for f in r["failures"]]
    oracle = _oracle_name(list(s.get("by_judge") or {}) + [
        j for _, f in found for j in (f.get("judges") or {})]) or "oracle"
    confirmed = [(r, f) for r, f in found if _oracle_entry(f, oracle).get("failure")]
    lines.append(f"{method}: the {oracle} confirms {len(confirmed)} of the {len(found)} failures "
                 f"kept, on {s['oracle_confirmed_targets']} of {s['targets']} targets")
    for r, f in confirmed:
      o = _oracle_entry(f, oracle)
      where = f["files"][0] if f.get("files") else ""
      lines.append(f"  {r['prompt']!r} (target {r['target']}): {o.get('reason') or 'violated'}"
                   f"{' → ' + where if where else ''}")
  return lines


def console_summary(rows: list[dict], summary: dict, workdir, pointers=()) -> str:
  """The terminal's summary: per method the success rate by the rule and by each judge, every
  found failure with each judge's reading, then -- the last lines -- per method the failures
  the oracle confirms with its reasons, the report and `pointers` (further pages of the run,
  one line each, e.g. its index.html and rating page)."""
  lines = []
  for method, s in summary["methods"].items():
    evals = _fmt(s["evaluations_to_first_success_mean"], ".1f")
    judged = ", ".join(f"{j} {v['successes']}" for j, v in s["by_judge"].items())
    lines.append(f"{method}: {s['successes']}/{s['targets']} targets with a failure by the rule, "
                 f"evaluations to first success {evals} (mean); targets failed by each judge: "
                 f"{judged}; {_fmt(s['images_per_s'], '.1f')} images/s")
  for r in rows:
    for f in r["failures"][:1]:
      what = f" {f['prompt']!r}" if "prompt" in f else ""
      lines.append(f"  [{r['method']}] {r['prompt']!r}: generation {f['generation']}{what}: "
                   + " | ".join(judges_line(f.get("judges"))) + " → " +
                   ", ".join(f["files"][:1]))
  lines += confirmed_lines(rows, summary)
  lines.append(f"report: {pathlib.Path(workdir) / 'report.md'}")
  lines += list(pointers)
  return "\n".join(lines)


def plots(rows: list[dict], plot_dir: pathlib.Path) -> None:
  """plots/fitness_curves.png (best-so-far fitness per generation) and plots/success.png
  (fraction of targets with a confirmed failure vs evaluations per target), all methods."""
  plt = runs.pyplot()
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
  runs.save_figure(fig, plot_dir / "fitness_curves.png")


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
  plots([r for r in rows if r.get("searched", True)], workdir / "plots")
  out = {"rows": rows, "summary": summary}
  if config.get("filter_clean"):
    from jaxdiffattack.search import protocol  # pylint: disable=g-import-not-at-top
    out["protocol"] = protocol.write(workdir, rows, config, timing)
  return out
