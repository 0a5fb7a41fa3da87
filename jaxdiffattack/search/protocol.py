"""The search-vs-random protocol (SAGE, arXiv 2306.00974, §4): comparable success rates, by judge.

Targets are (label, seed) pairs whose clean image passes ALL judges (`config.filter_clean`: the
evaluator, the other models and, on the toy world, the oracle read the prompt's class; world 2's
census targets: whose clean image, the searches' start latent, the scene oracle does not fail,
`config.filter_clean_judges`); every
method (random, evosax strategies, gradient methods) gets the same budget of evaluations per
target; a target counts as failed by a judge when any image the method evaluated for it is a
failure by that judge (`results.jsonl`: judge_first_generation, judge_failures). The report
gives, per method and judge, the search success rate with a 95 % Wilson interval, evaluations to
the first failure, failures per target, and the comparison with random at equal budget. Both
methods search the same targets, so the comparison is paired: the difference of rates with
Newcombe's square-and-add interval for paired proportions (`stats.paired_proportion_interval`,
Newcombe 1998, Stat. Med. 17:2635) and a paired bootstrap over targets, and McNemar's exact test
on the targets only one of them fails.

Budget accounting (`budgets`): per method, the budget per target (population × generations),
forward evaluations (one sampler + scorer pass of one member), backward passes (gradient methods:
one per evaluation) and wall time, in every row (`forward_evaluations`, `backward_passes`) and
in the summary. Methods with different budgets per target, or a target that used more than its
budget, are refused in one line (`UserError`): their rates are not comparable.

Statistics that can decide (`config.yield_stats`, world 2's protocol, issue #26 item 1). On
census targets (`config.targets_file`: prompts that fail cleanly on 1–10 % of seeds) random seeds
find at least one failure on nearly every target at 256 evaluations (1 − 0.99^256 ≈ 92 % even at
1 %), so "targets failed" saturates. `yield_comparison` adds, per method × judge against random
on the same targets: the failure yield (failing images / evaluations per target; the mean paired
difference with a paired bootstrap over targets, beside the paired t-test and Wilcoxon's
signed-rank test, `stats.paired_tests`) and the evaluations to the first failure, censored at
the budget (targets where each method fails first, the sign test of those counts, and the
restricted mean difference with its paired bootstrap interval). With census targets the summary
also has the targets' kinds and each judge's rate per prompt kind.

Transfer (SAGE: a failing latent that breaks several prompts): each of the first
`transfer_per_target` found latents of a target is generated with every other label's prompt of
the run (`transfer_prompts` = K > 0: the K labels after the target's, cyclically, in the run's
label order; census targets: the K targets after its own, with their captions) and judged
against that label (the scene oracle: against that caption); the clean latents of the same
targets (those with a found latent), tried the same way, are the reference ("clean" rows of
transfer.jsonl).

`write(workdir, rows, transfer_rows, config)` writes protocol.json and protocol.md (and copies
them to `config.export`.{json,md} when set), all from the workdir's files.
"""

import json
import math
import pathlib

import numpy as np

from jaxdiffattack import io
from jaxdiffattack import stats
from jaxdiffattack.errors import UserError

CLEAN = "clean"


# ------------------------------------------------------------------------------- transfer --
def found_latents(search, method: str, state) -> list[tuple]:
  """(method, target, failure index, latent [C, h, w]) of the first `transfer_per_target` found
  latents of every searched target."""
  c = search.config
  items = []
  for target in search.targets:
    t = target.index
    if search.included[t]:
      for k in range(min(int(state.failures[t]), c.archive_size, c.transfer_per_target)):
        items.append((method, t, k, search.space.decode_one(state.archive_solution[t, k],
                                                            t).latents[0]))
  return items


def clean_latents(search, targets) -> list[tuple]:
  """The reference: the clean latents of `targets`, as `found_latents` items."""
  return [(CLEAN, int(t), 0, search.space.base_latents[t]) for t in sorted(set(targets))]


def other_labels(labels: list, label, count: int) -> list:
  """The labels a latent of `label` is tried with: all others (count 0) or the `count` after it,
  cyclically (any hashable entries: `transfer` passes (prompt, label) pairs)."""
  i = labels.index(label)
  others = labels[i + 1:] + labels[:i]
  return others[:count] if count else others


def transfer(search, items) -> list[dict]:
  """transfer.jsonl rows: every latent of `items` generated with each other label's prompt of
  the run, judged against that label by every judge."""
  if not items:
    return []
  # The run's prompts in target order, one per (prompt, label): the template's prompt of each
  # label, or (census targets, `targets_file`) each target's own caption.
  census = bool(search.config.get("targets_file"))
  prompt_of = lambda t: t.prompt if census else search.config.template.format(t.label)
  slots = list(dict.fromkeys((prompt_of(t), t.label) for t in search.targets))
  label_index = {t.label: t.label_index for t in search.targets}
  prompts = [prompt for prompt, _ in slots]
  from jaxdiffattack import text  # pylint: disable=g-import-not-at-top
  cond_of = np.asarray(text.encode_prompts(search.sd, search.params["text_encoder"], prompts))
  latents, cond, judged, meta = [], [], [], []
  index = {slot: j for j, slot in enumerate(slots)}
  for method, t, k, z in items:
    target = search.targets[t]
    for slot in other_labels(slots, (prompt_of(target), target.label),
                             search.config.get("transfer_prompts", 0)):
      j = index[slot]
      latents.append(z)
      cond.append(cond_of[j])
      judged.append(label_index[slot[1]])
      meta.append((method, t, k, slot[1], prompts[j]))
  judged = np.asarray(judged, np.int32)
  aux = search.scoring.aux(labels=judged, prompts=[m[4] for m in meta])
  scores = search.sample_scores(np.stack(latents), np.stack(cond), judged, aux,
                                [m[4] for m in meta])
  readings = search.judges.read(scores)
  rows = []
  for i, (method, t, k, label, prompt) in enumerate(meta):
    rows.append({"method": method, "target": int(t), "label": search.targets[t].label,
                 "failure_index": int(k), "other_label": label, "prompt": prompt,
                 "judges": {name: bool(r.failure[i]) for name, r in readings.items()}})
  return rows


# -------------------------------------------------------------------------------- summary --
def mcnemar_exact(only_a: int, only_b: int) -> float:
  """Two-sided exact McNemar p-value (`stats.mcnemar_exact`)."""
  return stats.mcnemar_exact(only_a, only_b)


def budgets(rows: list[dict], timing: dict | None = None) -> dict:
  """{method: {"per_target", "targets", "forward_evaluations", "backward_passes",
  "forward_per_target_mean", "wall_s", "wall_s_per_target"}} over the searched targets; a
  UserError (one line) unless every method has the same budget per target and no target used
  more than it."""
  timing = timing or {}
  out = {}
  for method in dict.fromkeys(r["method"] for r in rows):
    sel = [r for r in rows if r["method"] == method and r["searched"]]
    per_target = {r["budget"] for r in rows if r["method"] == method}
    if len(per_target) > 1:
      raise UserError(f"search protocol: method {method!r} has budgets {sorted(per_target)} per "
                      "target; give every target the same population_size × num_generations")
    budget = per_target.pop() if per_target else None
    over = [r["target"] for r in sel if r["evaluations"] > r["budget"]]
    if over:
      raise UserError(f"search protocol: method {method!r} used more than its budget of {budget} "
                      f"evaluations on targets {over[:5]}; the rates are not comparable")
    forward = sum(r.get("forward_evaluations", r["evaluations"]) for r in sel)
    backward = sum(r.get("backward_passes", r["gradient_evaluations"]) for r in sel)
    wall = timing.get(method, {}).get("time/total")
    out[method] = {"per_target": budget, "targets": len(sel), "forward_evaluations": forward,
                   "backward_passes": backward,
                   "forward_per_target_mean": forward / len(sel) if sel else None,
                   "wall_s": wall, "wall_s_per_target": wall / len(sel) if wall and sel else None}
  distinct = {m: b["per_target"] for m, b in out.items()}
  if len(set(distinct.values())) > 1:
    raise UserError(f"search protocol: methods have unequal budgets per target {distinct}; "
                    "run them with the same population_size × num_generations")
  return out


def _mean(values):
  return float(np.mean(values)) if len(values) else None


def summarise(rows: list[dict], transfer_rows: list[dict], config: dict,
              timing: dict | None = None) -> dict:
  """protocol.json: targets, budgets per method (refused in one line when unequal), per method ×
  judge rates with CIs, the paired comparison with random, transfer."""
  budget = budgets(rows, timing)
  searched = [r for r in rows if r["searched"]]
  methods = list(dict.fromkeys(r["method"] for r in rows))
  first_method = [r for r in rows if r["method"] == methods[0]] if methods else []
  judges = list(first_method[0]["clean"]["judges"]) if first_method else []
  excluded = [r for r in first_method if not r["searched"]]
  # Why the excluded targets were excluded, by judge: with `filter_clean_judges` (census
  # targets) the named judges' failure of the clean image (the scene oracle can fail a caption
  # whose class it reads right), else the judge not reading the target's class.
  if config.get("filter_clean_judges"):
    rejects = lambda r, j: bool(r["clean"]["judges"][j].get("failure"))
  else:
    rejects = lambda r, j: r["clean"]["judges"][j]["pred"] != r["label"]
  out = {
      "config": {k: config.get(k) for k in ("model", "space", "num_steps", "scheduler",
                                              "guidance_scale", "population_size",
                                              "num_generations", "seed", "seeds_per_label")},
      "targets": {"candidates": len(first_method),
                  "searched": len(first_method) - len(excluded),
                  "excluded": len(excluded),
                  "excluded_by_judge": {j: sum(rejects(r, j) for r in excluded)
                                        for j in judges}},
      "judges": judges, "methods": {}, "vs_random": {}, "transfer": {}}
  if config.get("filter_clean_judges"):
    out["config"]["filter_clean_judges"] = list(config["filter_clean_judges"])
  if config.get("targets_file"):   # census targets (issue #26): where they came from, by kind
    out["config"]["targets_file"] = config["targets_file"]
    out["config"]["filter_clean_judges"] = list(config.get("filter_clean_judges") or [])
    kinds = [r.get("prompt_kind", "") for r in first_method]
    out["targets"]["source"] = "census"
    out["targets"]["prompts"] = len({r["prompt"] for r in first_method})
    out["targets"]["labels"] = len({r["label"] for r in first_method})
    out["targets"]["by_kind"] = {k: kinds.count(k) for k in sorted(set(kinds))}
    out["targets"]["searched_by_kind"] = {
        k: sum(r.get("prompt_kind", "") == k for r in first_method if r["searched"])
        for k in sorted(set(kinds))}
    rates = [r["clean_rate"] for r in first_method if r.get("clean_rate") is not None]
    out["targets"]["clean_rate_mean"] = _mean(rates)
  by_target = {}
  for method in methods:
    sel = [r for r in searched if r["method"] == method]
    n = len(sel)
    entry = {"kind": sel[0]["kind"] if sel else None, "targets": n,
             "budget_per_target": sel[0]["budget"] if sel else None,
             "evaluations": sum(r["evaluations"] for r in sel),
             "gradient_evaluations": sum(r["gradient_evaluations"] for r in sel),
             "budget": budget[method],
             "by_rule": _rate([r["success"] for r in sel]), "by_judge": {}}
    entry["by_rule"]["evaluations_to_first"] = _first_stats(
        [r["evaluations_to_first_success"] for r in sel if r["success"]])
    for j in judges:
      failed = [r["judge_first_generation"].get(j) is not None for r in sel]
      by_target[(method, j)] = {r["target"]: f for r, f in zip(sel, failed)}
      e = _rate(failed)
      e["evaluations_to_first"] = _first_stats(
          [(r["judge_first_generation"][j] + 1) * r["population_size"] for r in sel
           if r["judge_first_generation"].get(j) is not None])
      counts = [r["judge_failures"].get(j, 0) for r in sel]
      e["failing_images"] = int(sum(counts))
      e["failing_images_per_target_mean"] = _mean(counts)
      if config.get("targets_file"):
        e["by_kind"] = {k: _rate([f for f, r in zip(failed, sel) if r.get("prompt_kind") == k])
                        for k in sorted({r.get("prompt_kind", "") for r in sel})}
      entry["by_judge"][j] = e
    out["methods"][method] = entry
  if "random" in methods:
    for method in methods:
      if method == "random":
        continue
      out["vs_random"][method] = {}
      for j in judges:
        a, b = by_target[(method, j)], by_target[("random", j)]
        common = sorted(set(a) & set(b))
        va = np.array([a[t] for t in common], np.int64)
        vb = np.array([b[t] for t in common], np.int64)
        hits_a, hits_b = int(va.sum()), int(vb.sum())
        _, only_a, only_b, _ = stats.paired_table(va, vb)
        diff, low, high = stats.paired_proportion_interval(va, vb)
        _, boot_low, boot_high = stats.paired_bootstrap_interval(va, vb, seed=0)
        out["vs_random"][method][j] = {
            "targets": len(common), "method": hits_a, "random": hits_b,
            "ratio": hits_a / hits_b if hits_b else None,
            "difference": diff if common else None,
            "difference_ci95": [low, high], "interval": "newcombe paired (square-and-add)",
            "difference_bootstrap_ci95": [boot_low, boot_high],
            "only_method": only_a, "only_random": only_b,
            "mcnemar_p": stats.mcnemar_exact(only_a, only_b),
            "beats_random": bool(common) and bool(low > 0)}
        if config.get("yield_stats"):
          rows_a = {r["target"]: r for r in searched if r["method"] == method}
          rows_b = {r["target"]: r for r in searched if r["method"] == "random"}
          out["vs_random"][method][j].update(yield_comparison(
              [rows_a[t] for t in common], [rows_b[t] for t in common], j))
  for method in dict.fromkeys(r["method"] for r in transfer_rows):
    sel = [r for r in transfer_rows if r["method"] == method]
    entry = {"latents": len({(r["target"], r["failure_index"]) for r in sel}),
             "images": len(sel), "by_judge": {}}
    for j in judges:
      # Images of one latent (tried with several prompts) are clustered by that latent.
      entry["by_judge"][j] = _clustered_rate([r["judges"][j] for r in sel],
                                             [(r["target"], r["failure_index"]) for r in sel])
    out["transfer"][method] = entry
  return out


def first_failure(row: dict, judge: str) -> float:
  """Evaluations of `row`'s method up to and including the generation of `judge`'s first failure
  on its target ((generation + 1) × population), inf when none within the budget (censored)."""
  g = row["judge_first_generation"].get(judge)
  return math.inf if g is None else float((g + 1) * row["population_size"])


def failure_yield(row: dict, judge: str) -> float:
  """`judge`'s failing images / forward evaluations on `row`'s target."""
  n = row.get("forward_evaluations", row["evaluations"])
  return row["judge_failures"].get(judge, 0) / n if n else math.nan


def yield_comparison(rows_a: list[dict], rows_b: list[dict], judge: str, seed: int = 0) -> dict:
  """Method a vs b (random) on the same targets (rows in the same target order) by `judge`:
  the per-target failure yield (failing images / evaluations) — means, their difference with a
  paired bootstrap over targets (`stats.paired_bootstrap_interval`), the paired t and Wilcoxon
  tests (`stats.paired_tests`) — and evaluations to the first failure, censored at the budget:
  per target, which method failed first (fewer evaluations; both censored or equal: a tie), the
  sign test of method-first against random-first targets (`stats.mcnemar_exact`), and the
  restricted mean (no failure counts the whole budget) with its paired bootstrap interval."""
  if [r["target"] for r in rows_a] != [r["target"] for r in rows_b]:
    raise UserError("search protocol: paired comparison needs both methods' rows on the same "
                    "targets in the same order")
  populations = sorted({r["population_size"] for r in rows_a + rows_b})
  if len(populations) > 1:   # first failures are counted in whole generations of a population
    raise UserError(f"search protocol: first-failure comparison needs one population size, got "
                    f"{populations}; run every method with the same population_size")
  ya = np.array([failure_yield(r, judge) for r in rows_a])
  yb = np.array([failure_yield(r, judge) for r in rows_b])
  diff, low, high = stats.paired_bootstrap_interval(ya, yb, seed=seed)
  tests = stats.paired_tests(ya, yb)
  fa = np.array([first_failure(r, judge) for r in rows_a])
  fb = np.array([first_failure(r, judge) for r in rows_b])
  budgets = {r["budget"] for r in rows_a + rows_b}
  budget = float(max(budgets)) if budgets else math.nan
  wins, losses = int((fa < fb).sum()), int((fb < fa).sum())
  n = len(rows_a)
  ra, rb = np.minimum(fa, budget), np.minimum(fb, budget)
  rdiff, rlow, rhigh = stats.paired_bootstrap_interval(ra, rb, seed=seed)
  none = lambda x: None if x is None or (isinstance(x, float) and math.isnan(x)) else x
  return {
      "targets": n,
      "yield": {"method_mean": none(float(ya.mean())) if n else None,
                "random_mean": none(float(yb.mean())) if n else None,
                "ratio": float(ya.mean() / yb.mean()) if n and yb.mean() > 0 else None,
                "difference": none(diff), "difference_bootstrap_ci95": [none(low), none(high)],
                "t": tests["t"], "t_p": tests["t_p"], "wilcoxon_w": tests["wilcoxon_w"],
                "wilcoxon_p": tests["wilcoxon_p"], "nonzero_differences":
                    tests["wilcoxon_nonzero"],
                "method_higher": int((ya > yb).sum()), "random_higher": int((yb > ya).sum()),
                "decides": bool(n) and low is not None and not math.isnan(low) and (
                    low > 0 or high < 0)},
      "first_failure": {"budget": none(budget), "method_first": wins, "random_first": losses,
                        "ties": n - wins - losses,
                        "both_censored": int((np.isinf(fa) & np.isinf(fb)).sum()),
                        "method_censored": int(np.isinf(fa).sum()),
                        "random_censored": int(np.isinf(fb).sum()),
                        "fraction_method_first": wins / n if n else None,
                        "fraction_method_first_of_decided":
                            wins / (wins + losses) if wins + losses else None,
                        "sign_test_p": stats.mcnemar_exact(wins, losses),
                        "restricted_mean_method": none(float(ra.mean())) if n else None,
                        "restricted_mean_random": none(float(rb.mean())) if n else None,
                        "restricted_mean_difference": none(rdiff),
                        "restricted_mean_difference_bootstrap_ci95": [none(rlow), none(rhigh)]}}


def _rate(flags) -> dict:
  n, hits = len(flags), int(sum(bool(f) for f in flags))
  low, high = stats.wilson_interval(hits, n)
  return {"successes": hits, "n": n, "rate": hits / n if n else None, "ci95": [low, high]}


def _clustered_rate(flags, clusters) -> dict:
  e = stats.clustered_rate([float(bool(f)) for f in flags], clusters)
  return {"successes": e["hits"], "n": e["n"], "rate": e["rate"], "ci95": e["ci95"],
          "clusters": e["clusters"], "interval": e["interval"]}


def _first_stats(values) -> dict:
  return {"mean": _mean(values), "median": float(np.median(values)) if values else None}


# ------------------------------------------------------------------------------- markdown --
def _pct(x):
  return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.0f} %"


def _rate_cell(e: dict) -> str:
  return (f"{e['successes']}/{e['n']} = {_pct(e['rate'])} "
          f"[{_pct(e['ci95'][0])}, {_pct(e['ci95'][1])}]")


def _num(x, spec=".1f"):
  return "–" if x is None else format(x, spec)


def _targets_line(summary: dict) -> str:
  t = summary["targets"]
  if t.get("source") == "census":
    judges = summary["config"].get("filter_clean_judges") or ["every judge"]
    return (f"Targets: {t['candidates']} census prompts ({t['prompts']} captions, "
            f"{t['labels']} classes; by kind " + ", ".join(
                f"{k} {n}" for k, n in t["by_kind"].items()) + "; mean clean failure rate "
            f"{_pct(t['clean_rate_mean'])}) from `{summary['config']['targets_file']}`; "
            f"{t['searched']} searched, {t['excluded']} excluded because their clean image "
            f"(the search's start latent) already fails by {', '.join(judges)}.")
  if summary["config"].get("filter_clean_judges"):
    return (f"Targets: {t['candidates']} (label, seed) pairs; {t['searched']} whose clean image "
            f"{', '.join(summary['config']['filter_clean_judges'])} does not fail are searched; "
            f"{t['excluded']} excluded (clean image failed by: " + ", ".join(
                f"{j} {n}" for j, n in t["excluded_by_judge"].items()) + ").")
  return (f"Targets: {t['candidates']} (label, seed) pairs; {t['searched']} pass every judge "
          f"when clean and are searched; {t['excluded']} excluded (clean image not read as its "
          "class by: " + ", ".join(f"{j} {n}" for j, n in t["excluded_by_judge"].items()) + ").")


def markdown(summary: dict, timing: dict, command: str) -> str:
  c, t = summary["config"], summary["targets"]
  judges = summary["judges"]
  lines = [
      "# Search protocol: every method at equal budget, by judge (SAGE, arXiv 2306.00974)", "",
      f"Command: `{command}`", "",
      f"Generator `{c['model']}`, {c['num_steps']} {c['scheduler']} steps, guidance "
      f"{c['guidance_scale']}; {c['space']} space; population {c['population_size']} × "
      f"{c['num_generations']} generations = {c['population_size'] * c['num_generations']} "
      f"evaluations per target and method; run seed {c['seed']}.", "",
      _targets_line(summary), "",
      "A target is failed by a judge when any image a method evaluated for it is that judge's "
      "failure (" + ("the scene oracle: a fact of the target's caption is violated; the "
                     "classifiers: the caption's first class is not their top-1"
                     if t.get("source") == "census" else "the oracle: sure the class is not "
                     "drawn") + "). Rates are targets failed / targets "
      "searched with 95 % Wilson intervals; evaluations to the first failure are over the targets "
      "failed; an evaluation is one forward pass of sampler + scorers (gradient methods also run "
      "one backward pass per evaluation: 'gradient evaluations').", "",
      "## Budget per method (searched targets)", "",
      "| method | budget per target | targets | forward evaluations (mean per target) | "
      "backward passes | wall s (per target) |", "|---|---|---|---|---|---|"]
  for method, m in summary["methods"].items():
    b = m["budget"]
    lines.append(f"| {method} | {b['per_target']} | {b['targets']} | {b['forward_evaluations']} "
                 f"({_num(b['forward_per_target_mean'])}) | {b['backward_passes']} | "
                 f"{_num(b['wall_s'], '.0f')} ({_num(b['wall_s_per_target'], '.2f')}) |")
  lines += ["",
      "## Search success rate by judge", "",
      "| method | kind | " + " | ".join(f"SSR {j}" for j in judges) +
      " | evaluations to 1st failure (" + " / ".join(judges) + ") | failing images (" +
      " / ".join(judges) + ") | evaluations | gradient evaluations | wall s |",
      "|---|---|" + "---|" * len(judges) + "---|---|---|---|---|"]
  for method, m in summary["methods"].items():
    bj = m["by_judge"]
    lines.append(
        f"| {method} | {m['kind']} | " + " | ".join(_rate_cell(bj[j]) for j in judges) + " | " +
        " / ".join(_num(bj[j]["evaluations_to_first"]["mean"]) for j in judges) + " | " +
        " / ".join(str(bj[j]["failing_images"]) for j in judges) +
        f" | {m['evaluations']} | {m['gradient_evaluations']} | "
        f"{_num(timing.get(method, {}).get('time/total'), '.0f')} |")
  if summary["vs_random"]:
    lines += ["", "## Against random at equal budget (same targets, paired)", "",
              "Difference of rates with Newcombe's interval for paired proportions and a paired "
              "bootstrap over targets (10,000 resamples); McNemar's exact test on the targets only "
              "one method fails.", "",
              "| method | judge | targets failed: method / random | ratio | difference [95 % CI] "
              "| paired bootstrap 95 % CI | only method / only random | McNemar p | "
              "beats random? |",
              "|---|---|---|---|---|---|---|---|---|"]
    for method, per in summary["vs_random"].items():
      for j, v in per.items():
        ci, boot = v["difference_ci95"], v["difference_bootstrap_ci95"]
        lines.append(
            f"| {method} | {j} | {v['method']} / {v['random']} of {v['targets']} | "
            f"{_num(v['ratio'], '.2f')} | {_pct(v['difference'])} [{_pct(ci[0])}, "
            f"{_pct(ci[1])}] | [{_pct(boot[0])}, {_pct(boot[1])}] | "
            f"{v['only_method']} / {v['only_random']} | "
            f"{v['mcnemar_p']:.3g} | {'yes' if v['beats_random'] else 'no'} |")
  kinds = list(summary["targets"].get("by_kind", {}))
  if kinds:
    lines += ["", "## Targets failed by prompt kind", "",
              "| method | judge | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
    for method, m in summary["methods"].items():
      for j in judges:
        per = m["by_judge"][j].get("by_kind", {})
        lines.append(f"| {method} | {j} | " + " | ".join(
            _rate_cell(per[k]) if k in per else "–" for k in kinds) + " |")
  decisive = [(m, j, v) for m, per in summary["vs_random"].items() for j, v in per.items()
              if "yield" in v]
  if decisive:
    lines += ["", "## Failure yield and first failure against random (same targets, paired)", "",
              "With targets that fail cleanly on 1–10 % of seeds, random seeds find at least one "
              "failure on most targets at this budget, so 'targets failed' saturates; these "
              "compare what does not. Yield = failing images / evaluations per target (means "
              "over targets; their difference with a paired bootstrap over targets, 10,000 "
              "resamples, beside the paired t-test and Wilcoxon's signed-rank test). First "
              "failure = evaluations up to the generation of the judge's first failure, "
              "censored at the budget: the targets where each method failed first (equal or "
              "both censored: ties), the sign test of those counts, and the restricted mean "
              "(no failure counts the whole budget) with its paired bootstrap interval.", "",
              "| method | judge | yield: method / random (ratio) | difference [95 % CI] | t-test "
              "p | Wilcoxon p | first failure: method first / random first / ties | sign test "
              "p | restricted mean evaluations: method / random, difference [95 % CI] |",
              "|---|---|---|---|---|---|---|---|---|"]
    for method, j, v in decisive:
      y, f = v["yield"], v["first_failure"]
      ci, rci = y["difference_bootstrap_ci95"], f["restricted_mean_difference_bootstrap_ci95"]
      lines.append(
          f"| {method} | {j} | {_num(y['method_mean'], '.4f')} / {_num(y['random_mean'], '.4f')}"
          f" ({_num(y['ratio'], '.2f')}) | {_num(y['difference'], '+.4f')} "
          f"[{_num(ci[0], '+.4f')}, {_num(ci[1], '+.4f')}] | {_num(y['t_p'], '.3g')} | "
          f"{_num(y['wilcoxon_p'], '.3g')} | {f['method_first']} / {f['random_first']} / "
          f"{f['ties']} | {f['sign_test_p']:.3g} | {_num(f['restricted_mean_method'])} / "
          f"{_num(f['restricted_mean_random'])}, {_num(f['restricted_mean_difference'], '+.1f')}"
          f" [{_num(rci[0], '+.1f')}, {_num(rci[1], '+.1f')}] |")
  if summary["transfer"]:
    lines += ["", "## Transfer of found latents to the other labels' prompts", "",
              "Each found latent (and, as the reference, each searched target's clean latent) is "
              "generated with every other label's prompt and judged against that label; 95 % "
              "intervals clustered by latent (cluster-robust; Wilson over latents at 0 %).", "",
              "| latents from | latents | images | " + " | ".join(
                  f"fail by {j}" for j in judges) + " |",
              "|---|---|---|" + "---|" * len(judges)]
    for method, e in summary["transfer"].items():
      lines.append(f"| {method} | {e['latents']} | {e['images']} | " +
                   " | ".join(_rate_cell(e["by_judge"][j]) for j in judges) + " |")
  return "\n".join(lines) + "\n"


def write(workdir, rows: list[dict], config: dict, timing: dict) -> dict:
  """protocol.json and protocol.md in the workdir (and at config['export'].{json,md})."""
  workdir = pathlib.Path(workdir)
  path = workdir / "transfer.jsonl"
  transfer_rows = io.read_jsonl(path) if path.exists() else []
  summary = summarise(rows, transfer_rows, config, timing)
  summary["timing"] = timing
  command = config.get("command")
  if command and "{" in command:
    command = command.format(workdir=workdir, targets_file=config.get("targets_file"))
  command = command or (
      f"python launch/search.py --config configs/{config.get('space')}_search.py:"
      f"{config.get('variants', 'toy,protocol')} --workdir {workdir}")
  text = markdown(summary, timing, command)
  io.write_json(workdir / "protocol.json", io.json_safe(summary))
  io.atomic_write_bytes(workdir / "protocol.md", text.encode())
  if config.get("export"):
    export = pathlib.Path(config["export"])
    io.write_json(export.with_suffix(".json"), io.json_safe(summary))
    io.atomic_write_bytes(export.with_suffix(".md"), text.encode())
  return summary


def load(workdir) -> dict:
  return json.loads((pathlib.Path(workdir) / "protocol.json").read_text())
