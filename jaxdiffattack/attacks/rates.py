"""ATM's success rates and their intervals, from the attack's result rows.

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
  * short − long paired by scene, where the two sets caption the same scenes index by index
    (`SCENE_PAIRED_SETS`: world 2's census sets, the ATM study; issue #26 item 5, paired
    differences get paired intervals): `paired_difference` over the scenes attacked in both
    sets, beside the independent block (which also counts scenes attacked in one set only);
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

import numpy as np

from jaxdiffattack import stats
from jaxdiffattack.errors import UserError

SETS = ("short", "long")


def block(row: dict, method: str) -> dict | None:
  if not row.get("attacked"):
    return None
  return row if method == "attack" else row.get(method)


def asr(rows: list[dict], set_name: str, method: str = "attack", judge: str = "attack") -> dict:
  """{rate, successes, attacked, skipped_clean_failures, ci95} of one set, method and judge."""
  in_set = [r for r in rows if r["set"] == set_name]
  blocks = [block(r, method) for r in in_set if r.get("attacked")]
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
         if r["set"] == set_name and (b := block(r, method)) is not None]
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


# Prompt-set pairs (short, long) whose prompt i is the same scene in both (attacks/prompts.py:
# the census's single-object scenes, short caption and its lengthened version).
SCENE_PAIRED_SETS = {("world2_census_short", "world2_census_long")}


def scene_paired(config: dict) -> bool:
  """The run's short and long prompt sets caption the same scenes, index by index."""
  sets = config.get("prompt_sets") or {}
  return (sets.get(SETS[0]), sets.get(SETS[1])) in SCENE_PAIRED_SETS


def paired_set_difference(rows: list[dict], method: str, judge: str, seed: int = BOOT_SEED,
                          n_boot: int = stats.N_BOOT) -> dict | None:
  """short − long on the scenes attacked in both sets (rows paired by "index"): the
  `paired_difference` of their per-prompt triples, and how many scenes were paired."""
  short = {r["index"]: r for r in rows if r["set"] == SETS[0] and block(r, method) is not None}
  long = {r["index"]: r for r in rows if r["set"] == SETS[1] and block(r, method) is not None}
  both = sorted(set(short) & set(long))
  if not both:
    return None
  a = per_prompt([short[i] for i in both], SETS[0], method, judge)
  b = per_prompt([long[i] for i in both], SETS[1], method, judge)
  return paired_difference(a, b, seed, n_boot)


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
      if scene_paired(config):
        entry["short_minus_long_paired"] = {
            m: paired_set_difference(rows, b, judge, seed, n_boot) for m, b in methods.items()}
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


def ci(pair, scale: float = 100.0) -> str:
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
           "interval, and a bootstrap over each set's prompts; where the sets caption the "
           "same scenes, world 2's census sets, also paired by scene over the scenes attacked "
           "in both: Newcombe's paired interval, McNemar, a paired bootstrap); ATM − random "
           "substitution "
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
                       f"{ci(a['bootstrap95'])} {ci(a['wilson95'])} | {_rate(p['rate'])} "
                       f"{ci(p['ci95'])} "
                       f"{ci(p['bootstrap95'])} |")
        d = entry["short_minus_long"].get(method) if method in entry else None
        if d:
          diffs.append(f"| {judge} | short − long, {method} (independent) | "
                       f"{_delta(d['asr']['value'])} {ci(d['asr']['newcombe95'])} "
                       f"{ci(d['asr']['bootstrap95'])} | – | {_delta(d['per_sample']['value'])} "
                       f"{ci(d['per_sample']['ci95'])} |")
        d = entry.get("short_minus_long_paired", {}).get(method)
        if d:
          diffs.append(f"| {judge} | short − long, {method} (paired by scene, {d['prompts']} "
                       f"scenes attacked in both) | {_delta(d['asr']['value'])} "
                       f"{ci(d['asr']['newcombe95'])} | {d['asr']['mcnemar_p']:.3g} | "
                       f"{_delta(d['per_sample']['value'])} {ci(d['per_sample']['ci95'])} |")
      for s, d in entry.get("atm_minus_random_substitution", {}).items():
        if d:
          diffs.append(f"| {judge} | ATM − random substitution, {s} (paired, {d['prompts']} "
                       f"prompts) | {_delta(d['asr']['value'])} {ci(d['asr']['newcombe95'])} | "
                       f"{d['asr']['mcnemar_p']:.3g} | {_delta(d['per_sample']['value'])} "
                       f"{ci(d['per_sample']['ci95'])} |")
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
          lines.append(f"| {noise} | {judge} | {s} | {_rate(a['rate'])} {ci(a['bootstrap95'])} | "
                       f"{_rate(p['rate'])} {ci(p['ci95'])} | {_delta(d['asr']['value'])} "
                       f"{ci(d['asr']['newcombe95'])} | {d['asr']['mcnemar_p']:.3g} | "
                       f"{_delta(d['per_sample']['value'])} {ci(d['per_sample']['ci95'])} |")
  return lines
