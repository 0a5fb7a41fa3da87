"""ATM outputs: attack success rates with CIs, report.md, loss curves and captioned images.

Everything but the images is rebuilt from files (`results.jsonl`, `config.json`, `timing.json`) by
`write_report(workdir)`, so a report can be regenerated without recomputing.

Attack success rate (ASR, arXiv 2306.02583 §4.2): the share of attacked prompts (those the attack's
classifier reads correctly when clean; the others are skipped and counted) for which at least one
of the `num_samples` hard prompts succeeds; 95 % Wilson interval. The same figure is given for the
random-substitution baseline at the same number of sampled prompts, and for every further judge.
The published figures (SD 2.1, CLIP ViT-B/16 judge, 1000 prompts per set) are shown beside ours
for orientation only: they are a different model and judge.

Intervals that fit the design (`intervals`, summary.json "intervals", report.md "Intervals"):
the S samples of one prompt share its difficulty, so they are not independent.
  * per-prompt ASR: 95 % percentile bootstrap over prompts (Wilson beside it);
  * per-sample success rate: clustered by prompt — the cluster-robust (CR1) Wald interval of
    `stats.clustered_rate` and a bootstrap resampling whole prompts;
  * short − long (different prompts: independent groups): Newcombe's hybrid score interval of
    the per-prompt ASR difference (`stats.independent_difference_interval`) and a bootstrap over
    each set's prompts of the per-sample rate difference (`stats.cluster_bootstrap_difference`);
  * ATM − random substitution (the same prompts: paired): Newcombe's paired interval and exact
    McNemar test of per-prompt success, a paired bootstrap over prompts of the per-prompt sample
    success rates (equal samples per prompt: their mean is the per-sample rate).
Every bootstrap: `stats.N_BOOT` draws from `numpy.random.default_rng(BOOT_SEED)` (stated in the
report). Each block is given per evaluation noise — "fresh" (a new noise per sample) and "fixed"
(the clean check's noise) — present in the run (`eval_noise=both` gives both), and per judge.
Random substitution is the run's own baseline (`config.baseline`, the attack's numbers of changed
tokens, the same noises); a separate run of the attack "random" (`config.attack.name="random"`,
same seed, prompts and `num_samples`) is compared the same way, paired by prompt, by
`write_report(workdir, random_workdir=...)` (`launch/attack_compare.py`).
"""

import io as _io
import json
import pathlib
import textwrap

import numpy as np
from PIL import Image
from PIL import ImageDraw

from jaxdiffattack import io
from jaxdiffattack import stats
from jaxdiffattack.errors import UserError

SETS = ("short", "long")
PUBLISHED = {"asr_short": 0.911, "asr_long": 0.812,
             "model": "Stable Diffusion 2.1 (fp16, 256², 50 steps, CFG 7.5), CLIP ViT-B/16 "
                      "zero-shot over ImageNet-1k, 1000 prompts per set (arXiv 2306.02583, "
                      "Table 1)"}


def _block(row: dict, method: str) -> dict | None:
  if not row.get("attacked"):
    return None
  return row if method == "attack" else row.get(method)


def asr(rows: list[dict], set_name: str, method: str = "attack", judge: str = "attack") -> dict:
  """{rate, successes, attacked, skipped_clean_failures, ci95} of one set, method and judge."""
  in_set = [r for r in rows if r["set"] == set_name]
  blocks = [_block(r, method) for r in in_set if r.get("attacked")]
  blocks = [b for b in blocks if b is not None]
  hits = sum(bool(b["judges"][judge]["success"]) for b in blocks)
  n = len(blocks)
  low, high = stats.wilson_interval(hits, n)
  return {"rate": hits / n if n else None, "successes": hits, "attacked": n,
          "skipped_clean_failures": sum(not r["clean_correct"] for r in in_set),
          "ci95": [low, high] if n else None}


def sample_rate(rows: list[dict], set_name: str, method: str = "attack",
                judge: str = "attack") -> dict:
  """Share of all drawn samples that succeed, with the interval clustered by prompt
  (`stats.clustered_rate`: cluster-robust Wald; "interval" names the kind used)."""
  _, hits, samples = per_prompt(rows, set_name, method, judge)
  values, clusters = _expand(hits, samples)
  got = stats.clustered_rate(values, clusters)
  n = got["n"]
  return {"rate": got["rate"], "successes": got["hits"], "samples": n,
          "prompts": got["clusters"], "ci95": got["ci95"] if n else None,
          "interval": got["interval"]}


# ------------------------------------------------------------------------------ intervals --
BOOT_SEED = 0            # every bootstrap of the report: numpy default_rng(BOOT_SEED)
NOISE_LABELS = {"fresh": "a fresh noise per sample", "fixed": "the clean check's noise"}


def per_prompt(rows: list[dict], set_name: str, method: str = "attack",
               judge: str = "attack") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(success [P] bool, successful samples [P], samples [P]) of the attacked prompts of a set
  that have `method`'s block, in row order, by `judge`."""
  got = [(b["judges"][judge], r["samples"]) for r in rows
         if r["set"] == set_name and (b := _block(r, method)) is not None]
  return (np.array([bool(j["success"]) for j, _ in got], bool),
          np.array([int(j["successful_samples"]) for j, _ in got], np.int64),
          np.array([int(n) for _, n in got], np.int64))


def _expand(hits: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-sample 0/1 values [N] and their prompt (cluster) ids [N] from per-prompt counts."""
  values = np.concatenate([np.r_[np.ones(h), np.zeros(n - h)] for h, n in zip(hits, samples)]
                          or [np.zeros(0)])
  return values, np.repeat(np.arange(len(samples)), samples)


def _interval(triple) -> dict:
  value, low, high = triple[:3]
  finite = all(np.isfinite([value, low, high]))
  return {"value": float(value) if finite else None,
          "ci95": [float(low), float(high)] if finite else None}


def set_intervals(rows: list[dict], set_name: str, method: str, judge: str,
                  seed: int = BOOT_SEED, n_boot: int = stats.N_BOOT) -> dict:
  """{"asr": per-prompt ASR, Wilson and bootstrap over prompts; "per_sample": the per-sample rate,
  cluster-robust Wald and cluster bootstrap} of one set, method (row block) and judge."""
  success, hits, samples = per_prompt(rows, set_name, method, judge)
  n = len(success)
  asr_ = {"rate": float(success.mean()) if n else None, "successes": int(success.sum()),
          "prompts": n, "wilson95": list(stats.wilson_interval(int(success.sum()), n)) if n
          else None, "bootstrap95": None}
  values, clusters = _expand(hits, samples)
  per_sample = stats.clustered_rate(values, clusters) | {"bootstrap95": None}
  if n:
    asr_["bootstrap95"] = list(stats.cluster_bootstrap_interval(
        success, np.arange(n), n_boot=n_boot, seed=seed)[1:])
    per_sample["bootstrap95"] = list(stats.cluster_bootstrap_interval(
        values, clusters, n_boot=n_boot, seed=seed)[1:])
  return {"asr": asr_, "per_sample": per_sample}


def set_difference(rows: list[dict], method: str, judge: str, seed: int = BOOT_SEED,
                   n_boot: int = stats.N_BOOT, sets=SETS) -> dict | None:
  """short − long (independent prompts): per-prompt ASR by Newcombe's hybrid score interval and
  by a bootstrap over each set's prompts; the per-sample rate by the cluster bootstrap."""
  a, b = (per_prompt(rows, s, method, judge) for s in sets)
  if not len(a[0]) or not len(b[0]):
    return None
  low, high = stats.independent_difference_interval(int(a[0].sum()), len(a[0]),
                                                    int(b[0].sum()), len(b[0]))
  d = float(a[0].mean() - b[0].mean())
  boot = stats.cluster_bootstrap_difference(a[0], np.arange(len(a[0])), b[0],
                                            np.arange(len(b[0])), n_boot=n_boot, seed=seed)
  va, ca = _expand(*a[1:])
  vb, cb = _expand(*b[1:])
  return {"asr": {"value": d, "newcombe95": [low, high], "bootstrap95": list(boot[1:])},
          "per_sample": _interval(stats.cluster_bootstrap_difference(
              va, ca, vb, cb, n_boot=n_boot, seed=seed))}


def paired_difference(a: tuple, b: tuple, seed: int = BOOT_SEED,
                      n_boot: int = stats.N_BOOT) -> dict | None:
  """a − b on the same prompts (`per_prompt` triples in the same prompt order): per-prompt ASR by
  Newcombe's paired interval and exact McNemar; per-sample rate by a paired bootstrap over prompts
  of the per-prompt sample success rates."""
  if not len(a[0]):
    return None
  both, only_a, only_b, neither = stats.paired_table(a[0], b[0])
  d, low, high = stats.paired_table_interval(both, only_a, only_b, neither)
  rate_a, rate_b = a[1] / a[2], b[1] / b[2]
  return {"prompts": len(a[0]),
          "asr": {"value": d, "newcombe95": [low, high],
                  "table": {"both": both, "only_a": only_a, "only_b": only_b, "neither": neither},
                  "mcnemar_p": stats.mcnemar_exact(only_a, only_b)},
          "per_sample": _interval(stats.paired_bootstrap_interval(rate_a, rate_b, n_boot=n_boot,
                                                                  seed=seed))}


def noises(rows: list[dict], config: dict) -> list[tuple[str, str]]:
  """[(noise label, row block)]: the attack block's noise (fresh, or fixed with
  eval_noise="fixed") and, with eval_noise="both", the fixed-noise block."""
  first = "fixed" if config.get("eval_noise") == "fixed" else "fresh"
  out = [(first, "attack")]
  if any("fixed_noise" in r for r in rows):
    out.append(("fixed", "fixed_noise"))
  return out


def _judges(rows: list[dict]) -> list[str]:
  found = sorted({j for r in rows if r.get("attacked") for j in r["judges"]})
  return ["attack"] + [j for j in found if j != "attack"] if found else []


def intervals(rows: list[dict], config: dict, random_rows: list[dict] | None = None,
              random_config: dict | None = None, seed: int = BOOT_SEED,
              n_boot: int = stats.N_BOOT) -> dict:
  """Every interval of the module docstring, by noise → judge (summary.json "intervals")."""
  has_baseline = any("baseline" in r for r in rows)
  out = {"bootstrap": {"seed": seed, "draws": n_boot, "resampled": "prompts"}, "by_noise": {}}
  for noise, block in noises(rows, config):
    per_judge = {}
    for judge in _judges(rows):
      methods = {"atm": block}
      if has_baseline and block == "attack":       # the baseline shares the attack's noises
        methods["random_substitution"] = "baseline"
      entry = {m: {s: set_intervals(rows, s, b, judge, seed, n_boot) for s in SETS}
               for m, b in methods.items()}
      entry["short_minus_long"] = {m: set_difference(rows, b, judge, seed, n_boot)
                                   for m, b in methods.items()}
      if "random_substitution" in methods:
        entry["atm_minus_random_substitution"] = {
            s: paired_difference(per_prompt(rows, s, "attack", judge),
                                 per_prompt(rows, s, "baseline", judge), seed, n_boot)
            for s in SETS}
      per_judge[judge] = entry
    out["by_noise"][noise] = per_judge
  if random_rows is not None:
    out["random_run"] = random_run(rows, config, random_rows, random_config or {}, seed, n_boot)
  return out


def random_run(rows: list[dict], config: dict, random_rows: list[dict], random_config: dict,
               seed: int = BOOT_SEED, n_boot: int = stats.N_BOOT) -> dict:
  """ATM vs a separate run of the attack "random", paired by prompt: the prompts both attacked
  (same set, index and text), per noise present in both runs, per judge both have."""
  key = lambda r: (r["set"], r["index"], r["prompt"])
  theirs = {key(r): r for r in random_rows if r.get("attacked")}
  ours = [r for r in rows if r.get("attacked") and key(r) in theirs]
  paired = [theirs[key(r)] for r in ours]
  if any(r["samples"] != t["samples"] for r, t in zip(ours, paired)):
    raise UserError(f"random_workdir: num_samples={paired[0]['samples']} there, "
                    f"{ours[0]['samples']} in the ATM run; rerun it with the same num_samples")
  their_noises = dict(noises(paired, random_config))
  judges = [j for j in _judges(ours) if j in _judges(paired)]
  out = {"prompts_paired": len(ours), "attack": random_config.get("attack", {}).get("name"),
         "seed": random_config.get("seed"), "atm_seed": config.get("seed"), "by_noise": {}}
  for noise, block in noises(ours, config):
    if noise not in their_noises:
      continue
    out["by_noise"][noise] = {
        j: {"random": {s: set_intervals(paired, s, their_noises[noise], j, seed, n_boot)
                       for s in SETS},
            "atm_minus_random": {s: paired_difference(
                per_prompt(ours, s, block, j), per_prompt(paired, s, their_noises[noise], j),
                seed, n_boot) for s in SETS}}
        for j in judges}
  return out


def _unclear(rows: list[dict], set_name: str, judge: str) -> str | None:
  """"ATM / baseline" counts of samples a judge could not read (the toy oracle), or None."""
  counts = []
  for method in ("attack", "baseline"):
    blocks = [_block(r, method) for r in rows if r["set"] == set_name and r.get("attacked")]
    got = [b["judges"][judge]["unclear"] for b in blocks if b and "unclear" in b["judges"][judge]]
    counts.append(str(sum(got)) if got else "–")
  return None if counts == ["–", "–"] else " / ".join(counts)


def summarise(rows: list[dict], config: dict, timing: dict, random_rows: list[dict] | None = None,
              random_config: dict | None = None) -> dict:
  judges = sorted({j for r in rows if r.get("attacked") for j in r["judges"]})
  methods = ["attack"] + (["baseline"] if any("baseline" in r for r in rows) else [])
  summary = {f"asr_{s}": asr(rows, s) for s in SETS}
  summary["baseline"] = ({f"asr_{s}": asr(rows, s, "baseline") for s in SETS}
                         if "baseline" in methods else None)
  if any("fixed_noise" in r for r in rows):   # eval_noise="both": the clean check's noise too
    summary["fixed_noise"] = {**{f"asr_{s}": asr(rows, s, "fixed_noise") for s in SETS},
                              "sample_success_rate": {s: sample_rate(rows, s, "fixed_noise")
                                                      for s in SETS}}
  summary["by_judge"] = {j: {m: {f"asr_{s}": asr(rows, s, m, j) for s in SETS} for m in methods}
                         for j in judges}
  summary["sample_success_rate"] = {m: {s: sample_rate(rows, s, m) for s in SETS}
                                    for m in methods}
  summary["unclear"] = {j: {s: _unclear(rows, s, j) for s in SETS} for j in judges}
  summary["intervals"] = intervals(rows, config, random_rows, random_config)
  summary["published"] = PUBLISHED
  speed = {}
  for s, t in timing.items():
    speed[s] = {"prompt_iterations_per_s": t["prompt_iterations"] / max(t["attack_s"], 1e-9),
                "attack_s": t["attack_s"], "eval_s": t["eval_s"],
                "eval_images_per_s": t["images"] / max(t["eval_s"], 1e-9)}
  summary["timing"] = speed
  attack = config.get("attack", {})
  summary["settings"] = {k: config.get(k) for k in (
      "model", "judge", "judges", "mode", "num_samples", "num_steps", "guidance_scale",
      "eval_noise", "baseline", "seed")}
  summary["settings"]["attack"] = attack
  summary["budget"] = budget(config)
  return summary


def budget(config: dict) -> dict | None:
  """Per attacked prompt: the attack's sampler + classifier passes while attacking
  (`registry.ATTACKS[name].evaluations`) and the samples generated and judged afterwards."""
  from jaxdiffattack.attacks import registry  # pylint: disable=g-import-not-at-top
  name = config.get("attack", {}).get("name", "atm")
  if name not in registry.ATTACKS or "num_samples" not in config:
    return None
  samples = int(config["num_samples"])
  return {"attack": name, "attack_evaluations_per_prompt":
          registry.ATTACKS[name].evaluations(config), "samples_per_prompt": samples,
          "baseline_samples_per_prompt": samples if config.get("baseline") else 0}


def _pct(block: dict | None) -> str:
  if not block or block["rate"] is None:
    return "–"
  low, high = block["ci95"]
  return (f"{100 * block['rate']:.1f} % [{100 * low:.0f}, {100 * high:.0f}] "
          f"({block['successes']}/{block['attacked']})")


def _depth(attack: dict) -> str:
  depth = str(attack.get("grad_depth"))
  if depth == "all":
    return "every step" + (" (remat)" if attack.get("remat") else "")
  return "the last step (as published)" if depth in ("last", "1") else f"the last {depth} steps"


def markdown(rows: list[dict], summary: dict, config: dict) -> str:
  st = summary["settings"]
  attack = st["attack"]
  lines = [
      "# ATM attack report", "",
      f"Model `{st['model']}`, {st['num_steps']} steps, CFG {st['guidance_scale']}; attack "
      f"judge `{st['judge']}`; mode `{st['mode']}`; {attack.get('num_iters')} Adam iterations "
      f"(lr {attack.get('lr')}, κ {attack.get('kappa')}, λ_sim {attack.get('lam_sim')}, "
      f"τ {attack.get('tau')}), gradient through {_depth(attack)}; {st['num_samples']} hard "
      f"samples per prompt (noise: {st['eval_noise']}); seed {st['seed']}.",
      "",
      "Success of a sample: the attack judge's top-1 is not the prompt's class AND the class word "
      "is still in the decoded prompt. ASR = attacked prompts with at least one successful "
      "sample; prompts misclassified when clean are skipped. 95 % Wilson intervals.", "",
      "| set | skipped (clean failures) | ATM, ours | random substitution, ours (same samples) | "
      "ATM, published — a different model |",
      "|---|---|---|---|---|"]
  published = summary["published"]
  for s in SETS:
    ours = summary[f"asr_{s}"]
    if not ours["attacked"] and not ours["skipped_clean_failures"]:
      continue
    base = (summary["baseline"] or {}).get(f"asr_{s}")
    lines.append(f"| {s} | {ours['skipped_clean_failures']} | {_pct(ours)} | {_pct(base)} | "
                 f"{100 * published[f'asr_{s}']:.1f} % |")
  lines += ["", f"Published: {published['model']}.", ""]
  lines += ["Share of all sampled prompts that succeed (per sample, not per prompt; 95 % interval "
            "clustered by prompt, cluster-robust):", "",
            "| set | ATM | random substitution |", "|---|---|---|"]
  for s in SETS:
    ours = summary["sample_success_rate"]["attack"][s]
    if not ours["samples"]:
      continue
    base = summary["sample_success_rate"].get("baseline", {}).get(s)
    fmt = lambda b: ("–" if not b or b["rate"] is None else
                     f"{100 * b['rate']:.1f} % {_ci(b['ci95'])} ({b['successes']}/{b['samples']})")
    lines.append(f"| {s} | {fmt(ours)} | {fmt(base)} |")
  lines += interval_lines(summary["intervals"])
  if summary.get("fixed_noise"):
    lines += ["", "The same hard prompts generated on the clean check's noise (eval_noise=both; "
              "above: a fresh noise per sample): ASR " + ", ".join(
                  f"{s} {_pct(summary['fixed_noise'][f'asr_{s}'])}" for s in SETS
                  if summary["fixed_noise"][f"asr_{s}"]["attacked"]) + "."]
  others = [j for j in summary["by_judge"] if j != "attack"]
  if others:
    lines += ["", "The same images read by further judges (a sample succeeds when the judge sees "
              "another class and the class word is kept; the toy oracle fails an image only when "
              "it is sure the class is not drawn, and counts images it cannot read as unclear):",
              "", "| judge | set | ATM | random substitution | unclear samples (ATM / random) |",
              "|---|---|---|---|---|"]
    for j in others:
      for s in SETS:
        got = summary["by_judge"][j]
        if not got["attack"][f"asr_{s}"]["attacked"]:
          continue
        unclear = summary["unclear"].get(j, {}).get(s)
        lines.append(f"| {j} | {s} | {_pct(got['attack'][f'asr_{s}'])} | "
                     f"{_pct(got.get('baseline', {}).get(f'asr_{s}'))} | "
                     f"{'–' if unclear is None else unclear} |")
  if summary["timing"]:
    lines += ["", "| set | attack prompt-iterations/s | attack s | evaluation s | "
              "evaluation images/s |", "|---|---|---|---|---|"]
    for s, t in summary["timing"].items():
      lines.append(f"| {s} | {t['prompt_iterations_per_s']:.3f} | {t['attack_s']:.0f} | "
                   f"{t['eval_s']:.0f} | {t['eval_images_per_s']:.2f} |")
  lines += ["", "![loss curves](plots/loss_curves.png)", "",
            "Loss (margin hinge − λ_sim · similarity), hinge, margin and similarity per iteration, "
            "one thin line per attacked prompt and their mean (thick).", "",
            "## Successful prompts (first per prompt)", ""]
  for r in rows:
    if r.get("attacked") and r["successful_prompts"]:
      images = r.get("images", [])
      lines.append(f"- [{r['set']} {r['index']}] `{r['prompt']}` → `{r['successful_prompts'][0]}`"
                   f" ({r['successful_samples']}/{r['samples']} samples)"
                   + (f" [image]({images[0]})" if images else ""))
  return "\n".join(lines) + "\n"


def _ci(pair, scale: float = 100.0) -> str:
  if not pair or pair[0] is None or not np.all(np.isfinite(pair)):
    return "–"
  return f"[{scale * pair[0]:.1f}, {scale * pair[1]:.1f}]"


def _rate(x) -> str:
  return "–" if x is None else f"{100 * x:.1f} %"


def _delta(x) -> str:
  return "–" if x is None else f"{100 * x:+.1f} pp"


def interval_lines(got: dict) -> list[str]:
  """The report's "Intervals" section from `intervals(...)`."""
  boot = got["bootstrap"]
  lines = ["", "## Intervals (clustered by prompt)", "",
           "The samples of one prompt share its difficulty, so per-sample rates get intervals "
           "clustered by prompt: cluster-robust (CR1) Wald and a bootstrap resampling whole "
           "prompts; per-prompt ASR a bootstrap over prompts and Wilson (at 0 % or 100 % the "
           "bootstrap collapses to the point: read Wilson there). short − "
           "long compares different prompts (independent groups: Newcombe's hybrid score "
           "interval, and a bootstrap over each set's prompts); ATM − random substitution "
           "compares the same prompts (paired: Newcombe's paired interval, exact McNemar p, a "
           "paired bootstrap over prompts). All 95 %; every bootstrap "
           f"{boot['draws']} draws of numpy `default_rng({boot['seed']})`, resampling "
           f"{boot['resampled']}."]
  for noise, per_judge in got["by_noise"].items():
    lines += ["", f"### Noise: {noise} ({NOISE_LABELS[noise]})", "",
              "| judge | set | method | prompts | ASR [bootstrap] [Wilson] | per-sample rate "
              "[cluster-robust] [cluster bootstrap] |", "|---|---|---|---|---|---|"]
    diffs = []
    for judge, entry in per_judge.items():
      for method in ("atm", "random_substitution"):
        for s in SETS:
          if method not in entry or not entry[method][s]["asr"]["prompts"]:
            continue
          a, p = entry[method][s]["asr"], entry[method][s]["per_sample"]
          lines.append(f"| {judge} | {s} | {method} | {a['prompts']} | {_rate(a['rate'])} "
                       f"{_ci(a['bootstrap95'])} {_ci(a['wilson95'])} | {_rate(p['rate'])} "
                       f"{_ci(p['ci95'])} "
                       f"{_ci(p['bootstrap95'])} |")
        d = entry["short_minus_long"].get(method) if method in entry else None
        if d:
          diffs.append(f"| {judge} | short − long, {method} (independent) | "
                       f"{_delta(d['asr']['value'])} {_ci(d['asr']['newcombe95'])} "
                       f"{_ci(d['asr']['bootstrap95'])} | – | {_delta(d['per_sample']['value'])} "
                       f"{_ci(d['per_sample']['ci95'])} |")
      for s, d in entry.get("atm_minus_random_substitution", {}).items():
        if d:
          diffs.append(f"| {judge} | ATM − random substitution, {s} (paired, {d['prompts']} "
                       f"prompts) | {_delta(d['asr']['value'])} {_ci(d['asr']['newcombe95'])} | "
                       f"{d['asr']['mcnemar_p']:.3g} | {_delta(d['per_sample']['value'])} "
                       f"{_ci(d['per_sample']['ci95'])} |")
    if diffs:
      lines += ["", "| judge | difference | ASR Δ [Newcombe] [bootstrap] | McNemar p | "
                "per-sample Δ [bootstrap] |", "|---|---|---|---|---|"] + diffs
  run = got.get("random_run")
  if run:
    lines += ["", f"### A separate run of the attack `{run['attack']}` (seed {run['seed']}; ATM "
              f"seed {run['atm_seed']}), paired by prompt ({run['prompts_paired']} prompts both "
              "attacked)", "", "| noise | judge | set | random ASR [bootstrap] | random per-sample "
              "[cluster-robust] | ATM − random ASR Δ [Newcombe paired] | McNemar p | per-sample Δ "
              "[bootstrap] |", "|---|---|---|---|---|---|---|---|"]
    for noise, per_judge in run["by_noise"].items():
      for judge, entry in per_judge.items():
        for s in SETS:
          d = entry["atm_minus_random"][s]
          if not d:
            continue
          a, p = entry["random"][s]["asr"], entry["random"][s]["per_sample"]
          lines.append(f"| {noise} | {judge} | {s} | {_rate(a['rate'])} {_ci(a['bootstrap95'])} | "
                       f"{_rate(p['rate'])} {_ci(p['ci95'])} | {_delta(d['asr']['value'])} "
                       f"{_ci(d['asr']['newcombe95'])} | {d['asr']['mcnemar_p']:.3g} | "
                       f"{_delta(d['per_sample']['value'])} {_ci(d['per_sample']['ci95'])} |")
  return lines


def plot_curves(rows: list[dict], path: pathlib.Path) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  panels = (("loss", "loss"), ("adv_loss", "margin hinge max(m + κ, 0)"), ("margin", "margin m"),
            ("similarity", "similarity R"))
  fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
  for ax, (key, title) in zip(axes, panels):
    for s, colour in zip(SETS, ("tab:blue", "tab:orange")):
      curves = [r["loss_curve"] if key == "loss" else r["curves"].get(key, [])
                for r in rows if r["set"] == s and r.get("attacked")]
      curves = [c for c in curves if c]     # attacks without iterations (random) have none
      if not curves:
        continue
      arr = np.asarray(curves, np.float64)
      for c in arr:
        ax.plot(c, color=colour, alpha=0.15, lw=0.7)
      ax.plot(arr.mean(0), color=colour, lw=2, label=f"{s} (mean of {len(arr)})")
    ax.set_title(title)
    ax.set_xlabel("iteration")
  if axes[0].get_legend_handles_labels()[0]:    # attacks without iterations have no curves
    axes[0].legend(fontsize=8)
  fig.tight_layout()
  buffer = _io.BytesIO()
  fig.savefig(buffer, format="png", dpi=100)
  plt.close(fig)
  io.atomic_write_bytes(path, buffer.getvalue())


def captioned(image: np.ndarray, lines: list[str], width_chars: int = 48) -> np.ndarray:
  """The image (upscaled to ≥ 256 px wide) above its caption lines, as [H', W', 3] in [0, 1]."""
  image = np.asarray(image, np.float32)
  scale = max(1, -(-256 // image.shape[1]))
  big = image.repeat(scale, 0).repeat(scale, 1)
  wrapped = [w for line in lines for w in (textwrap.wrap(line, width_chars) or [""])]
  line_height = 12
  canvas = Image.new("RGB", (big.shape[1], big.shape[0] + line_height * len(wrapped) + 6),
                     "white")
  canvas.paste(Image.fromarray(io.to_uint8(big)), (0, 0))
  draw = ImageDraw.Draw(canvas)
  for k, line in enumerate(wrapped):
    draw.text((3, big.shape[0] + 3 + k * line_height), line, fill="black")
  return np.asarray(canvas, np.float32) / 255.0


def save_images(workdir: pathlib.Path, set_name: str, index, rows: list[dict], result: dict,
                judges, per_prompt: int) -> None:
  """Captioned PNGs of up to `per_prompt` successful samples per prompt; paths go into rows."""
  got = result["attack"]
  samples = len(got["texts"]) // len(index)
  for position, row in enumerate(rows):
    sl = range(position * samples, (position + 1) * samples)
    hits = [k for k in sl if got["read"]["attack"]["success"][k]][:per_prompt]
    paths, shown = [], []
    for k in hits:
      lines = [f"prompt: {got['texts'][k]}", f"clean: {row['prompt']}"]
      lines += [f"{j}: {got['read'][j]['pred'][k]} ({got['read'][j]['confidence'][k]:.2f})"
                + (f" {got['read'][j]['reason'][k]}" if got["read"][j].get("reason") else "")
                for j in judges]
      name = f"p{row['index']:04d}_s{k - position * samples:03d}.png"
      rel = f"images/{set_name}/{name}"
      io.write_png(workdir / rel, captioned(got["images"][k], lines))
      paths.append(rel)
      # The bare image too (no caption): the rating page and index.html show it.
      io.write_png(workdir / "images" / set_name / "raw" / name, got["images"][k])
      shown.append({"image": f"images/{set_name}/raw/{name}", "prompt": str(got["texts"][k]),
                    "judges": {j: _sample_judge(got["read"][j], k) for j in judges}})
    row["images"] = paths
    row["shown"] = shown


def _sample_judge(read: dict, k: int) -> dict:
  """One judge's record of hard sample k (the `judges.record` fields)."""
  confidence = read["confidence"][k]
  confidence = None if confidence is None or not np.isfinite(confidence) else float(confidence)
  entry = {"pred": None if read["pred"][k] is None else str(read["pred"][k]),
           "confidence": confidence, "failure": bool(read["failure"][k])}
  if "unclear" in read:
    entry["unclear"] = bool(read["unclear"][k])
  if "reason" in read:
    entry["reason"] = read["reason"][k]
  return entry


def write_report(workdir, random_workdir=None) -> dict:
  """Rebuilds summary.json, report.md and plots/ from the workdir's files; with
  `random_workdir` (a finished run of the attack "random" on the same prompts and num_samples)
  the two are compared, paired by prompt (summary "intervals"/"random_run")."""
  workdir = pathlib.Path(workdir)
  rows = io.read_jsonl(workdir / "results.jsonl")
  config = json.loads((workdir / "config.json").read_text())
  timing_path = workdir / "timing.json"
  timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
  random_rows = random_config = None
  if random_workdir is not None:
    random_workdir = pathlib.Path(random_workdir)
    for name in ("results.jsonl", "config.json"):
      if not (random_workdir / name).is_file():
        raise UserError(f"random_workdir={str(random_workdir)!r} has no {name}: give the workdir "
                        "of a finished run with --config.attack.name=random")
    random_rows = io.read_jsonl(random_workdir / "results.jsonl")
    random_config = json.loads((random_workdir / "config.json").read_text())
  summary = summarise(rows, config, timing, random_rows, random_config)
  io.write_json(workdir / "summary.json", io.json_safe(summary))
  if any(r.get("attacked") for r in rows):
    plot_curves(rows, workdir / "plots" / "loss_curves.png")
  io.atomic_write_bytes(workdir / "report.md", markdown(rows, summary, config).encode())
  return {"rows": rows, "summary": summary}


def console_summary(summary: dict, workdir) -> str:
  lines = [f"ATM results in {workdir}:"]
  for s in SETS:
    ours = summary[f"asr_{s}"]
    if ours["attacked"] or ours["skipped_clean_failures"]:
      base = (summary["baseline"] or {}).get(f"asr_{s}")
      lines.append(f"  ASR {s}: {_pct(ours)}; random substitution {_pct(base)}; "
                   f"{ours['skipped_clean_failures']} clean failures skipped")
  return "\n".join(lines)
