"""The sweep's outputs made from its files: results.csv (95 % CIs), report.md, plots, image grids.

`write_report(workdir)` rebuilds results.csv, report.md and plots/*.png from members.csv alone.
The images of one prompt (its seeds) are not independent samples — they share the prompt's
difficulty — so every per-sample rate and mean is clustered by prompt (`jaxdiffattack.stats`):
accuracies (top-1 / top-5 hits) get `stats.clustered_rate` (cluster-robust Wald; Wilson when
each prompt has one image, or over prompts at 0 % / 100 %), CLIP scores the cluster-robust
interval of the mean; results.csv's `interval` names which. Paired differences of two settings
on the same (prompt, seed) units are the mean per-unit difference with the cluster-robust
interval (clustered by prompt; with one seed per prompt it is mean ± z·sd/√n), and McNemar's
exact test on the discordant units for 0/1 metrics.
"""

import json
import pathlib

import jax
import numpy as np

from jaxdiffattack import io
from jaxdiffattack import judges as judges_lib
from jaxdiffattack import perturb
from jaxdiffattack import runs
from jaxdiffattack import stats
from jaxdiffattack.errors import UserError
from jaxdiffattack.sweep import plan as plan_lib
from jaxdiffattack.sweep import radius
from jaxdiffattack.sweep.plan import ALL_METRICS
from jaxdiffattack.sweep.plan import Cell
from jaxdiffattack.sweep.plan import Plan
from jaxdiffattack.sweep.plan import setting_sampler

RESULT_FIELDS = ("setting", "shift", "alpha", "alpha_c", "alpha_s", "class", "metric", "value",
                 "ci_low", "ci_high", "n", "nonfinite", "prompts", "interval")
# What a grid caption reads (the sweep's `judges` make the evaluator role return them).
GRID_SCORES = ("evaluator/pred", "evaluator/confidence")
PAIRED_FIELDS = ("a", "b", "metric", "a_value", "b_value", "difference", "ci_low", "ci_high", "n",
                 "nonfinite", "prompts", "only_a", "only_b", "mcnemar_p")


def summarise(member_rows: list[dict]) -> list[dict]:
  """results.csv rows: per setting × shift × α × (all + each class) × metric, with 95 % CIs
  clustered by prompt.

  Each shift's α = 0 row is the shared unshifted cell. Members whose metric is not finite (a
  model produced NaN/inf: `sampler.nonfinite_as_nan`) are left out of its value and n, and
  counted in `nonfinite`.
  """
  groups: dict[tuple, list[dict]] = {}
  # A sweep without shifts (clean quality only) reports its unshifted cell as shift "none".
  shifts = sorted({r["shift"] for r in member_rows} - {perturb.UNSHIFTED}) or [perturb.UNSHIFTED]
  for r in member_rows:
    alpha = (float(r["alpha_c"]), float(r["alpha_s"]))
    for shift in (shifts if r["shift"] == perturb.UNSHIFTED else [r["shift"]]):
      for cls in ("all", r["label"]):
        groups.setdefault((r["setting"], shift, alpha, cls), []).append(r)
  out = []
  metrics = [m for m in ALL_METRICS if member_rows and m in member_rows[0]]
  for (setting, shift, alpha, cls), rows in sorted(groups.items(), key=lambda kv: (
      kv[0][0], kv[0][1], kv[0][2], kv[0][3] != "all", kv[0][3])):
    label = Cell(shift, alpha).label
    for metric in metrics:
      values = np.array([float(r[metric]) for r in rows])
      finite = np.isfinite(values)
      values = values[finite]
      prompts = [r.get("prompt_index", i) for i, (r, ok) in enumerate(zip(rows, finite)) if ok]
      value, low, high, interval = _interval(metric, values, prompts)
      out.append({"setting": setting, "shift": shift, "alpha": label, "alpha_c": alpha[0],
                  "alpha_s": alpha[1], "class": cls, "metric": metric, "value": value,
                  "ci_low": low, "ci_high": high, "n": len(values),
                  "nonfinite": int((~finite).sum()), "prompts": len(set(prompts)),
                  "interval": interval})
  return out


def _interval(metric, values, prompts) -> tuple[float, float, float, str]:
  """(value, low, high, interval name) of one cell's members, clustered by prompt."""
  if values.size == 0:
    return (float("nan"), float("nan"), float("nan"), "")
  if metric == "clip_score":
    if len(set(prompts)) < 2:
      value, low, high = stats.mean_interval(values)
      return (value, low, high, "normal")
    value, low, high, _ = stats.cluster_wald_interval(values, prompts)
    return (value, low, high, "cluster-robust")
  e = stats.clustered_rate(values, prompts)
  return (e["rate"], e["ci95"][0], e["ci95"][1], e["interval"])


def _metrics(results) -> list[str]:
  """The metrics present in results rows, in ALL_METRICS order."""
  present = {r["metric"] for r in results}
  return [m for m in ALL_METRICS if m in present]


def paired_differences(member_rows: list[dict], pairs) -> list[dict]:
  """paired.csv rows: for each pair of settings (a, b) and accuracy metric, the mean of a − b
  over the unshifted cell's (prompt, seed) units — the same seed vectors and noise for both —
  with the 95 % cluster-robust interval of that mean, clustered by prompt
  (`stats.cluster_wald_interval` of the per-unit differences; in points, i.e. ×100), and
  McNemar's exact test on the units only a / only b gets right. Units where either member is
  not finite are left out and counted in `nonfinite`."""
  clean = {}
  for r in member_rows:
    if r["shift"] == perturb.UNSHIFTED:
      clean.setdefault(r["setting"], {})[(int(r["prompt_index"]), int(r["seed_index"]))] = r
  out = []
  for a, b in pairs:
    units = sorted(set(clean.get(a, {})) & set(clean.get(b, {})))
    if not units:
      continue
    for metric in (m for m in radius.METRICS if m in member_rows[0]):
      va = np.array([float(clean[a][u][metric]) for u in units])
      vb = np.array([float(clean[b][u][metric]) for u in units])
      finite = np.isfinite(va) & np.isfinite(vb)    # a unit with a NaN member drops out
      va, vb = va[finite], vb[finite]
      prompts = [u[0] for u, ok in zip(units, finite) if ok]
      if len(set(prompts)) >= 2:
        diff, low, high, _ = stats.cluster_wald_interval(100 * (va - vb), prompts)
      else:
        diff, low, high = stats.mean_interval(100 * (va - vb))
      _, only_a, only_b, _ = stats.paired_table(va, vb)
      out.append({"a": a, "b": b, "metric": metric,
                  "a_value": 100 * va.mean() if va.size else float("nan"),
                  "b_value": 100 * vb.mean() if vb.size else float("nan"), "difference": diff,
                  "ci_low": low, "ci_high": high, "n": int(finite.sum()),
                  "nonfinite": int((~finite).sum()), "prompts": len(set(prompts)),
                  "only_a": only_a, "only_b": only_b,
                  "mcnemar_p": stats.mcnemar_exact(only_a, only_b)})
  return out


def paired_markdown(rows) -> str:
  if not rows:
    return ""
  lines = ["## Paired differences on unshifted seeds (a − b, points)", "",
           "Same (prompt, seed) units, seed vectors and ancestral noise for a and b; 95 % interval "
           "of the mean per-unit difference, cluster-robust by prompt (mean ± z·sd/√n with one "
           "seed per prompt); McNemar's exact test on the units only one setting gets right.", "",
           "| a | b | metric | a | b | a − b [95 % CI] | units (prompts) | only a / only b | "
           "McNemar p |", "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['a']} | {r['b']} | {r['metric']} | {r['a_value']:.1f} | "
                 f"{r['b_value']:.1f} | {r['difference']:+.1f} [{r['ci_low']:+.1f}, "
                 f"{r['ci_high']:+.1f}] | {r['n']} ({r['prompts']}) | {r['only_a']} / "
                 f"{r['only_b']} | {r['mcnemar_p']:.3g} |")
  return "\n".join(lines) + "\n"


def write_report(workdir) -> dict:
  """Rebuilds results.csv, radius.csv, paired.csv, displacement.csv (members with object
  positions), report.md and plots/ from members.csv (and
  the pairs named by config.json's `paired`; no recomputation)."""
  workdir = pathlib.Path(workdir)
  member_rows = io.read_csv(workdir / "members.csv")
  results = summarise(member_rows)
  io.write_csv(workdir / "results.csv", RESULT_FIELDS, results)
  radii = [row for metric in radius.METRICS if member_rows and metric in member_rows[0]
           for row in radius.radii(member_rows, metric)]
  io.write_csv(workdir / "radius.csv", radius.FIELDS, radii)
  config_path = workdir / "config.json"
  pairs = json.loads(config_path.read_text()).get("paired", ()) if config_path.is_file() else ()
  paired = paired_differences(member_rows, pairs)
  if pairs:
    io.write_csv(workdir / "paired.csv", PAIRED_FIELDS, paired)
  moves = []
  if member_rows and plan_lib.OBJECT_METRICS[0] in member_rows[0]:
    moves = displacement(member_rows)
    io.write_csv(workdir / "displacement.csv", DISPLACEMENT_FIELDS, moves)
  io.atomic_write_bytes(workdir / "report.md", (
      markdown(results) + "\n" + paired_markdown(paired) + "\n" +
      radius.markdown(radii) + displacement_markdown(moves)).encode())
  plots(results, workdir / "plots")
  return {"members": member_rows, "results": results, "radius": radii, "paired": paired,
          "displacement": moves}


DISPLACEMENT_FIELDS = ("setting", "shift", "alpha", "alpha_c", "alpha_s", "members", "n",
                       "dx", "dx_low", "dx_high", "dy", "dy_low", "dy_high", "dist", "dist_low",
                       "dist_high", "interval")


def displacement(member_rows: list[dict]) -> list[dict]:
  """displacement.csv rows (arXiv 2312.11473 §5, objects moving under mean shifts): per setting,
  shift and α, the mean move (dx, dy) of the named object's centroid from the unshifted member
  of the same setting, prompt and seed (fractions of the image side; x right, y down) and the
  mean distance moved (`dist` = mean |(dx, dy)|: a shift that scatters objects in every direction
  moves them while its mean move stays near 0), with 95 % intervals clustered by prompt
  (`stats.clustered_mean`; normal with one prompt), over the n of `members` pairs where the
  object was found both times."""
  key = lambda r: (r["setting"], r["prompt_index"], r["seed_index"])
  pos = lambda r: (float(r["object_cx"]), float(r["object_cy"]))
  base = {key(r): pos(r) for r in member_rows if r["shift"] == perturb.UNSHIFTED}
  groups: dict[tuple, list] = {}
  for r in member_rows:
    if r["shift"] == perturb.UNSHIFTED:
      continue
    if key(r) not in base:
      raise UserError(f"displacement: setting {r['setting']!r}, prompt {r['prompt_index']}, "
                      f"seed {r['seed_index']} has no unshifted member in members.csv; rerun the "
                      "sweep with its unshifted cell (every shift is measured from it)")
    alpha = (float(r["alpha_c"]), float(r["alpha_s"]))
    groups.setdefault((r["setting"], r["shift"], alpha), []).append(
        (r["prompt_index"], np.subtract(pos(r), base[key(r)])))
  out = []
  for (setting, shift, alpha), moves in sorted(groups.items()):
    found = [(p, d) for p, d in moves if np.all(np.isfinite(d))]
    row = {"setting": setting, "shift": shift, "alpha": Cell(shift, alpha).label,
           "alpha_c": alpha[0], "alpha_s": alpha[1], "members": len(moves), "n": len(found),
           "interval": ""}
    prompts = [p for p, _ in found]
    d = np.array([d for _, d in found]).reshape(-1, 2)
    for name, values in (("dx", d[:, 0]), ("dy", d[:, 1]), ("dist", np.hypot(d[:, 0], d[:, 1]))):
      m = stats.clustered_mean(values, prompts)
      row |= {name: m["mean"], f"{name}_low": m["low"], f"{name}_high": m["high"]}
      row["interval"] = m["interval"] if len(values) else ""
    out.append(row)
  return out


def displacement_markdown(rows: list[dict]) -> str:
  if not rows:
    return ""
  f = lambda v: "–" if not np.isfinite(v) else f"{100 * v:+.1f}"
  lines = ["", "## Object displacement (arXiv 2312.11473 §5)", "",
           "Mean move of the named object's centroid (found by world 2's scene oracle) from the "
           "unshifted image of the same prompt and seed, in % of the image side (x right, y "
           "down) and the mean distance moved (|move|), 95 % CI clustered by prompt; n = pairs "
           "with the object found both times.", "",
           "| setting | shift | α | n / members | dx [95 %] | dy [95 %] | |move| [95 %] |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['setting']} | {r['shift']} | {r['alpha']} | {r['n']} / {r['members']} "
                 f"| {f(r['dx'])} [{f(r['dx_low'])}, {f(r['dx_high'])}] | {f(r['dy'])} "
                 f"[{f(r['dy_low'])}, {f(r['dy_high'])}] | {f(r['dist'])} "
                 f"[{f(r['dist_low'])}, {f(r['dist_high'])}] |")
  return "\n".join(lines) + "\n"


def markdown(results) -> str:
  lines = ["# Seed-vector shift sweep (arXiv 2312.11473)", "",
           "Accuracy = evaluator top-1 / top-5 on the prompt's class; CLIP = CLIP score "
           "(100·cos, ≥ 0). Brackets: 95 % CI clustered by prompt (cluster-robust; Wilson when "
           "each prompt has one image, or over prompts at 0 % / 100 %). α = 0 is the shared "
           "unshifted cell.", ""]
  overall = [r for r in results if r["class"] == "all"]
  for setting in sorted({r["setting"] for r in overall}):
    for shift in sorted({r["shift"] for r in overall}):
      rows = [r for r in overall if r["setting"] == setting and r["shift"] == shift]
      alphas = sorted({(r["alpha_c"], r["alpha_s"]) for r in rows})
      labels = [Cell(shift, a).label for a in alphas]
      lines += [f"## {setting}: {shift}", "", "| metric | " + " | ".join(
          f"α={a}" for a in labels) + " |", "|---|" + "---|" * len(labels)]
      for metric in _metrics(results):
        cells = []
        for a in alphas:
          r = next(x for x in rows if (x["alpha_c"], x["alpha_s"]) == a and x["metric"] == metric)
          scale = 1 if metric == "clip_score" else 100
          cells.append(f"{r['value'] * scale:.1f} [{r['ci_low'] * scale:.1f}, "
                       f"{r['ci_high'] * scale:.1f}]" + (
                           f" ({r['nonfinite']} non-finite, left out)" if r["nonfinite"] else ""))
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
      lines.append("")
  per_class = [r for r in results if r["class"] != "all" and r["metric"] == "top1"
               and r["alpha_c"] == 0 and r["alpha_s"] == 0]
  if per_class:
    lines += ["## Class-wise top-1 on unshifted seeds", "", "| setting | class | top-1 | n |",
              "|---|---|---|---|"]
    seen = set()
    for r in per_class:
      if (r["setting"], r["class"]) not in seen:
        seen.add((r["setting"], r["class"]))
        lines.append(f"| {r['setting']} | {r['class']} | {100 * r['value']:.1f} | {r['n']} |")
  return "\n".join(lines) + "\n"


# What each metric measures and which judge reads it (plot axes name both).
METRIC_AXES = {"top1": "top-1 accuracy (evaluator)", "top5": "top-5 accuracy (evaluator)",
               "clip_score": "CLIP score (evaluator's CLIP)",
               "oracle_top1": "class drawn (oracle)", "oracle_unclear": "unclear (oracle)",
               "world2_oracle_top1": "caption holds (world-2 oracle)",
               "world2_oracle_unclear": "unclear (world-2 oracle)"}
SHIFT_NAMES = {"ums": "UMS", "rms": "RMS", "sds": "SDS", "sds_flipped": "SDS (flipped sign)",
               "ms": "MS", "pas": "PAS", "pas_descending": "PAS (descending)",
               "pas_pixels": "PAS (whole pixels)", "pas_fraction": "PAS"}


def plot_layout(results) -> tuple[list[str], list[str]]:
  """(rows: settings, columns: shifts with parameters) of a metric's small multiples."""
  overall = [r for r in results if r["class"] == "all"]
  settings = sorted({r["setting"] for r in overall})
  shifts = sorted({r["shift"] for r in overall if perturb.SHIFTS[r["shift"]].arity})
  return settings, shifts


def plots(results, plot_dir: pathlib.Path) -> None:
  """plots/<metric>.png: small multiples, one panel per setting (rows) × shift (columns), the
  metric against the shift's first parameter with its 95 % CI band, the unshifted value as a
  dashed line; shared axes; every panel's axes name the shift's parameter and the metric's
  judge. A two-parameter shift (MS) draws one line per value of its second parameter, labelled
  in a legend beside the panel (never over the data)."""
  plt = runs.pyplot()
  overall = [r for r in results if r["class"] == "all"]
  settings, shifts = plot_layout(results)
  if not shifts:
    return
  for metric in _metrics(results):
    fig, axes = plt.subplots(len(settings), len(shifts), sharey=True, squeeze=False,
                             figsize=(2.7 * len(shifts) + 1.0, 1.9 * len(settings) + 0.5))
    for i, setting in enumerate(settings):
      rows_of = [r for r in overall if r["setting"] == setting and r["metric"] == metric]
      clean = next((r["value"] for r in rows_of if r["alpha_c"] == 0 and r["alpha_s"] == 0),
                   None)
      for j, shift in enumerate(shifts):
        ax, spec = axes[i][j], perturb.SHIFTS[shift]
        rows = [r for r in rows_of if r["shift"] == shift]
        series = sorted({r["alpha_s"] for r in rows}) if spec.arity == 2 else [None]
        for second in series:
          sel = sorted((r for r in rows if second is None or r["alpha_s"] == second),
                       key=lambda r: r["alpha_c"])
          x = [r["alpha_c"] for r in sel]
          label = None if second is None else f"{spec.axis[1]} = {second:g}"
          ax.plot(x, [r["value"] for r in sel], marker="o", ms=3, label=label)
          ax.fill_between(x, [r["ci_low"] for r in sel], [r["ci_high"] for r in sel],
                          alpha=0.2)
        if clean is not None:
          ax.axhline(clean, color="0.5", ls="--", lw=0.8)
        if spec.arity == 2 and len(series) > 1:
          ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        ax.set_title(f"{setting}: {SHIFT_NAMES.get(shift, shift)}", fontsize=8)
        ax.set_xlabel(f"{SHIFT_NAMES.get(shift, shift)} {spec.axis[0]}", fontsize=8)
        if j == 0:
          ax.set_ylabel(METRIC_AXES.get(metric, metric), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(plt.MaxNLocator(5))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    runs.save_figure(fig, plot_dir / f"{metric}.png")


def replot(results_csv, plot_dir) -> list[str]:
  """Redraws plots/<metric>.png from a results.csv alone (e.g. a committed one); returns the
  metrics drawn."""
  rows = io.read_csv(results_csv)
  for r in rows:
    for key in ("alpha_c", "alpha_s", "value", "ci_low", "ci_high"):
      r[key] = float(r[key])
  plots(rows, pathlib.Path(plot_dir))
  return _metrics(rows)


def results_from_markdown(text: str) -> list[dict]:
  """The overall ("all") rows of results.csv read back from a report.md's per-shift tables
  (`markdown`'s "## <setting>: <shift>" sections; values and CIs to the table's 0.1 rounding),
  for redrawing the figures of a run whose results.csv was not kept."""
  rows, setting, shift, alphas = [], None, None, []
  for line in text.splitlines():
    if line.startswith("## "):
      head = line[3:].rsplit(": ", 1)
      setting, shift = (head if len(head) == 2 and head[1] in perturb.SHIFTS else (None, None))
      alphas = []
    elif setting is None or not line.startswith("| "):
      continue
    elif line.startswith("| metric |"):
      alphas = [tuple(float(a) for a in cell.strip()[2:].split(",")) + (0.0,)
                for cell in line.strip(" |").split("|")[1:]]
    elif alphas and not line.startswith("|---"):
      cells = [c.strip() for c in line.strip(" |").split("|")]
      metric, scale = cells[0], 1.0 if cells[0] == "clip_score" else 100.0
      if len(cells) != len(alphas) + 1:
        raise ValueError(f"report table {setting}: {shift}, metric {metric}: {len(cells) - 1} "
                         f"cells for {len(alphas)} α columns; is this a sweep report.md?")
      for alpha, cell in zip(alphas, cells[1:]):
        value, interval = cell.split(" (")[0].split(" [")
        low, high = interval.rstrip("]").split(", ")
        rows.append({"setting": setting, "shift": shift, "alpha_c": alpha[0],
                     "alpha_s": alpha[1], "class": "all", "metric": metric,
                     "value": float(value) / scale, "ci_low": float(low) / scale,
                     "ci_high": float(high) / scale})
  return rows


def replot_markdown(report_md, plot_dir) -> list[str]:
  """Redraws plots/<metric>.png from a report.md alone (`results_from_markdown`); returns the
  metrics drawn."""
  rows = results_from_markdown(pathlib.Path(report_md).read_text())
  if not rows:
    raise ValueError(f"{report_md}: no '## <setting>: <shift>' tables; give a sweep report.md")
  plots(rows, pathlib.Path(plot_dir))
  return _metrics(rows)


def grid_members(plan: Plan, shift: str, n_grid: int) -> tuple[np.ndarray, list[int]]:
  """(members [n_grid × cols], cell indices [cols]) of a grid: prompts (rows) × the shift's α in
  increasing order with the unshifted cell (columns), seed 0."""
  cols = [0] + [i for i, c in enumerate(plan.cells) if c.shift == shift]
  cols.sort(key=lambda i: plan.cells[i].alpha)
  per_cell = plan.n_prompts * plan.n_seeds
  members = np.array([c * per_cell + p * plan.n_seeds for p in range(n_grid) for c in cols])
  return members, cols


def grid_captions(plan: Plan, members: np.ndarray, labels, class_names, scores: dict,
                  oracle_reads=None, oracle_name: str = "oracle") -> list[list[str]]:
  """Each tile's caption: the prompt's label, its shift and α, what the evaluator read (class,
  confidence; FAIL when it is not the label) and, with the toy oracle, its verdict for the
  label (`judges.Verdict.record`s: what it read, FAIL when violated, and its reason)."""
  cell_idx, prompt_idx, _ = plan.decompose(members)
  captions = []
  for i, m in enumerate(members):
    cell, label = plan.cells[cell_idx[i]], labels[prompt_idx[i]]
    alpha = ", ".join(f"{a:+g}" for a in cell.alpha if a) or "0"
    pred = class_names[int(scores["evaluator/pred"][i])]
    # ASCII only: PIL's default font has no Greek letters.
    lines = [label, f"{cell.shift} alpha={alpha}" if cell.shift != perturb.UNSHIFTED else "clean",
             f"ViT: {pred} {float(scores['evaluator/confidence'][i]):.2f}"
             f"{'' if pred == label else ' FAIL'}"]
    if oracle_reads is not None:
      read = oracle_reads[i]
      lines.append(f"{oracle_name}: {read['pred'] or '-'}{' FAIL' if read['failure'] else ''}")
      if read["reason"] != "holds":
        lines.append(f"  {read['reason']}")
    captions.append(lines)
  return captions


def write_grids(config, workdir, plan: Plan, labels, label_ids, model_loader, scoring) -> None:
  """grids/<setting>_<shift>.png: prompts (rows) × α (columns), seed 0 (paper Fig. 5); every tile
  captioned with its α and each judge's reading (`grid_captions`), the captions and member
  indices also in grids/<setting>_<shift>.json."""
  from jaxdiffattack import labels as labels_lib  # pylint: disable=g-import-not-at-top
  key = jax.random.PRNGKey(config.seed)
  n_grid = min(len(labels), config.grid_prompts)
  prompts = [config.template.format(label) for label in labels]
  class_names = labels_lib.class_names(config.label_set, config.labels)
  for setting in config.settings:
    loaded = setting_sampler(config, setting, prompts[:n_grid], model_loader,
                             score_fn=scoring.score_fn, score_params=scoring.params,
                             return_images=True)
    for shift in config.shifts:
      members, cols = grid_members(plan, shift, n_grid)
      _, prompt_idx, _ = plan.decompose(members)
      out, _ = loaded.generate(plan, members, key, aux=scoring.aux(
          label_ids[prompt_idx], [prompts[i] for i in prompt_idx]))
      images = np.asarray(out.images)
      reads, image_judges = None, plan_lib.image_judges(config)
      if image_judges:  # the first image judge of config.judges (the world's oracle)
        oracle = judges_lib.Judges(image_judges[:1], {}, class_names)
        reads = [r[image_judges[0]] for r in judges_lib.records_of(
            oracle, oracle.image_scores(images, label_ids[prompt_idx],
                                        [prompts[i] for i in prompt_idx]))]
      captions = grid_captions(plan, members, labels, class_names,
                               {k: np.asarray(v) for k, v in out.scores.items()}, reads,
                               image_judges[0] if image_judges else "oracle")
      upscale = max(1, 64 // images.shape[1])
      stem = pathlib.Path(workdir) / "grids" / f"{setting.name}_{shift}"
      io.write_png(f"{stem}.png",
                   runs.captioned_grid(images, captions, cols=len(cols), upscale=upscale))
      # Each tile alone too (no caption), for index.html and the rating page.
      tiles = []
      for m, image, p in zip(members, images, prompt_idx):
        name = f"{stem.name}/m{int(m):06d}.png"
        io.write_png(stem.parent / name, image)
        tiles.append({"member": int(m), "image": f"grids/{name}", "prompt": prompts[int(p)]})
      io.write_json(f"{stem}.json", {
          "rows": "prompts", "cols": "alpha", "members": [int(m) for m in members],
          "captions": captions, "tiles": tiles})
