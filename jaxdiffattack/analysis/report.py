"""The analyze job's outputs, made from its stage files (so a report can be redone alone).

Per analysis: `<name>.json` (everything), CSV tables, PNG figures under `plots/`, and one
`report.md` whose every figure caption says what it shows and the command that made it.
"""

import io as _io
import json
import pathlib

import numpy as np

from jaxdiffattack import io
from jaxdiffattack import runs
from jaxdiffattack.errors import UserError


# ----------------------------------------------------------------- stages ---
def _stage_path(workdir, name) -> pathlib.Path:
  return pathlib.Path(workdir) / "stages" / f"{name}.json"


def save_stage(workdir, name: str, digest: str, data: dict) -> None:
  io.write_json(_stage_path(workdir, name), {"config_hash": digest, "data": _plain(data)})


def load_stage(workdir, name: str, digest: str | None = None) -> dict | None:
  """A finished analysis's data (None when absent or written by another config)."""
  path = _stage_path(workdir, name)
  if not path.exists():
    return None
  saved = json.loads(path.read_text())
  if digest is not None and saved["config_hash"] != digest:
    return None
  return saved["data"]


def _plain(x):
  """JSON-able copy: NumPy scalars to Python, NaN to None."""
  if isinstance(x, dict):
    return {str(k): _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  if isinstance(x, (np.bool_, bool)):
    return bool(x)
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (float, np.floating)):
    return None if np.isnan(x) else float(x)
  return x


def save_arrays(path, **arrays) -> None:
  buffer = _io.BytesIO()
  np.savez(buffer, **arrays)
  io.atomic_write_bytes(path, buffer.getvalue())


# ----------------------------------------------------------------- report ---
def write_report(workdir) -> dict:
  """Writes every analysis's JSON/CSV, figures and report.md; returns {name: data}."""
  workdir = pathlib.Path(workdir)
  config_path = workdir / "config.json"
  if not config_path.exists():
    raise UserError(f"{workdir} has no config.json: not an analyze workdir")
  config = json.loads(config_path.read_text())
  command_path = workdir / "command.txt"
  command = (command_path.read_text() if command_path.exists() else
             f"python launch/analyze.py --config configs/analysis.py:{config.get('variant', '')}"
             f" --workdir {workdir}")
  stages = {n: load_stage(workdir, n) for n in config["analyses"]}
  stages = {n: d for n, d in stages.items() if d is not None}
  (workdir / "plots").mkdir(exist_ok=True)
  lines = ["# Failure analysis", "",
           f"Model `{config['model']}`, {config['scheduler']} {config['num_steps']} steps, "
           f"CFG {config['guidance_scale']}, {config['seeds']} seeds per prompt; objects found by: "
           f"{config.get('finder', config.get('judge'))}. Command: `{command}`.", ""]
  for name, data in stages.items():
    io.write_json(workdir / f"{name}.json", data)
    lines += SECTIONS[name](workdir, data, command)
  io.atomic_write_bytes(workdir / "report.md", "\n".join(lines).encode())
  return stages


def _figure(workdir, name, fig, caption, command) -> list[str]:
  runs.save_figure(fig, workdir / "plots" / f"{name}.png")
  return [f"![{name}](plots/{name}.png)", "",
          f"*Figure `{name}`: {caption} Made by `{command}`.*", ""]


def _csv(path, rows) -> None:
  """rows' scalar fields (lists and dicts left to the JSON) as a CSV."""
  if rows:
    fields = [k for k, v in rows[0].items() if not isinstance(v, (list, dict))]
    io.write_csv(path, fields, [{k: r[k] for k in fields} for r in rows])


def _table(header, rows) -> list[str]:
  out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  out += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
  return out + [""]


def _fmt(v) -> str:
  if v is None:
    return "–"
  if isinstance(v, float):
    return f"{v:.3g}"
  return str(v)


def _colour(label: str) -> str:
  """A plot colour for a toy label ("red circle" → red); grey otherwise."""
  word = label.split()[0]
  return {"yellow": "goldenrod"}.get(word, word) if word in (
      "red", "green", "blue", "yellow") else "grey"


def _speed(workdir, data, command) -> list[str]:
  plt = runs.pyplot()
  _csv(workdir / "speed_classes.csv", data["classes"])
  _csv(workdir / "speed_pairs.csv", data["pairs"])
  fig = speed_figure(data["singles"], data["threshold"])
  out = ["## Generation speed (ATM §4.1)", ""]
  out += _figure(workdir, "speed_curves", fig,
                 "mean SSIM between each step's decoded predicted x0 and the final image, one "
                 "panel per class (single-object prompts, fixed seeds; the mean over classes "
                 "dashed grey for reference); the black line is the threshold.", command)
  out += _table(["class", "first step > thr (mean)", "pair images", "lost in pairs",
                 "loss rate", "formed first", "ATM success"],
                [[r["class"], r["formation_step"], r["pair_images"], r["pair_losses"],
                  r["loss_rate"], r["formed_first_rate"], r["attack_success_rate"]]
                 for r in data["classes"]])
  pairs = data["pairs"]
  lost = [r for r in pairs if r["outcome"] in ("lost_a", "lost_b")
          and r["formed_first"] in ("a", "b")]
  later = {"a": "b", "b": "a"}
  later_lost = sum(r["outcome"] == f"lost_{later[r['formed_first']]}" for r in lost)
  out += [f"Two-object prompts: {len(pairs)} images; outcomes "
          + ", ".join(f"{k} {sum(r['outcome'] == k for r in pairs)}"
                      for k in ("both", "lost_a", "lost_b", "neither"))
          + f". Of the {len(lost)} images with exactly one object lost and a formation order "
          f"(both objects drawn), the later-forming object is the lost one in {later_lost}.", ""]
  for name, c in data["correlations"].items():
    out.append(f"Correlation {name.replace('_', ' ')}: n = {c['n']}, Pearson "
               f"{_fmt(c['pearson'])} (p {_fmt(c['pearson_p'])}), Spearman "
               f"{_fmt(c['spearman'])} (p {_fmt(c['spearman_p'])}).")
  if "formation_step_vs_attack_success" not in data["correlations"]:
    out.append("No ATM attack workdir was given (`config.attack_workdir`): the correlation "
               "with ATM's success is skipped.")
  fig, ax = plt.subplots(figsize=(4.5, 3.5))
  for r in data["classes"]:
    if r["formation_step"] is not None and r["loss_rate"] is not None:
      ax.scatter(r["formation_step"], r["loss_rate"], color=_colour(r["class"]))
      ax.annotate(r["class"], (r["formation_step"], r["loss_rate"]), fontsize=5)
  ax.set(xlabel="first step with SSIM > threshold (single prompts)",
         ylabel="loss rate in two-object prompts")
  return out + [""] + _figure(workdir, "speed_vs_loss", fig,
                              "per class: formation step against how often it is lost in "
                              "two-object prompts.", command)


def _attention(workdir, data, command) -> list[str]:
  plt = runs.pyplot()
  _csv(workdir / "attention_pairs.csv", data["pairs"])
  _csv(workdir / "attention_singles.csv", data["singles"])
  out = ["## Coarse-feature similarity (ATM §4.2)", ""]
  ratios = [r["ratio"] for r in data["singles"]]
  if not ratios:
    out += ["Single-object prompts: no concentration measure (it needs object regions that do "
            "not come from the attention maps: the toy oracle's masks).", ""]
  else:
    out += [f"Single-object prompts: the noun token's map (steps {data['steps'][0]}–"
            f"{data['steps'][1] - 1}, heads and layers averaged) puts {np.mean(ratios):.2f}× "
            f"its area share of mass on the object on average (median {np.median(ratios):.2f}×, "
            f"{len(ratios)} images; 1× = unrelated to the object).", ""]
  rows = []
  for level, key in (("read as its class", "outcome"), ("drawn", "drawn_outcome")):
    for group, outcomes in (("both", ("both",)), ("one lost", ("lost_a", "lost_b")),
                            ("neither", ("neither",))):
      mine = [r for r in data["pairs"] if r[key] in outcomes]
      rows.append([level, group, len(mine),
                   np.mean([r["cosine"] for r in mine]) if mine else None,
                   np.mean([r["iou"] for r in mine]) if mine else None])
  out += ["Two-object prompts: overlap of the two nouns' maps by outcome, an object counted as "
          "surviving when judged as its class, or when merely drawn (oracle: an object of its "
          "colour is there; classifier judge: its class is in the top 5):", ""]
  out += _table(["survival", "outcome", "images", "mean cosine of noun maps",
                 f"mean IoU (≥ {data['iou_fraction']}·max)"], rows)
  objects_rows = []
  for k in "ab":
    for r in data["pairs"]:
      if r[f"ratio_{k}"] is not None:
        objects_rows.append((r["outcome"] in ("both", f"lost_{'b' if k == 'a' else 'a'}"),
                             r[f"ratio_{k}"]))
  for survived in (True, False):
    ratio = [m for s_, m in objects_rows if s_ == survived]
    out.append(f"Drawn objects {'read as their class' if survived else 'not read as their class'}"
               f": {len(ratio)}; their noun's map puts "
               f"{_fmt(float(np.mean(ratio)) if ratio else None)}× their area share on them.")
  out.append("")
  fig, ax = plt.subplots(figsize=(4.5, 3.5))
  groups = {f"{name}\n{k}": [r["cosine"] for r in data["pairs"] if r[key] in outcomes]
            for name, key in (("class", "outcome"), ("drawn", "drawn_outcome"))
            for k, outcomes in (("both", ("both",)), ("one lost", ("lost_a", "lost_b")),
                                ("neither", ("neither",)))}
  groups = {k: v for k, v in groups.items() if v}
  ax.boxplot(list(groups.values()))
  ax.set_xticks(np.arange(1, len(groups) + 1), list(groups), fontsize=6)
  ax.set(ylabel="cosine of the two nouns' maps")
  out += _figure(workdir, "attention_overlap", fig, "cosine of the two nouns' cross-attention "
                 "maps in two-object prompts, by outcome: survival as the named class, or as a "
                 "drawn object.", command)
  arrays = np.load(workdir / "stages" / "attention_overlays.npz")
  images, maps = arrays["images"], arrays["maps"]
  if len(images):
    fig, axes = plt.subplots(len(images), 3, figsize=(5, 1.8 * len(images)), squeeze=False)
    size = images.shape[1]
    for i, prompt in enumerate(data["overlay_prompts"]):
      axes[i, 0].imshow(images[i])
      axes[i, 0].set_title(prompt.replace("a photo of ", ""), fontsize=6)
      for k in range(2):
        axes[i, 1 + k].imshow(images[i])
        up = np.kron(maps[i, k], np.ones((size // maps.shape[-1],) * 2))
        axes[i, 1 + k].imshow(up, alpha=0.6, cmap="magma")
        axes[i, 1 + k].set_title(f"'{data['overlay_nouns'][i][k]}'", fontsize=6)
      for a in axes[i]:
        a.axis("off")
    out += _figure(workdir, "attention_maps", fig, "two-object images with each noun's "
                   "cross-attention map (steps and layers averaged) overlaid.", command)
  return out


def _orders(workdir, data, command) -> list[str]:
  plt = runs.pyplot()
  _csv(workdir / "orders.csv", data["rows"])
  _csv(workdir / "orders_summary.csv", data["summary"])
  out = ["## Word position (ATM §4.4)", "",
         "Same words, every order (A = the pair's first class, B = the second; `before`/`after`"
         ": each named phrase's modifier before or after its noun), same seeds. Counts of "
         "images in which each object survives (judged as its class):", ""]
  s = data["summary"]
  out += _table(["order", "images", "A survives", "B survives", "first-named survives",
                 "second-named survives", "both"],
                [[r["order"], r["n"], r["correct_a"], r["correct_b"], r["first_named_correct"],
                  r["second_named_correct"], r["both"]] for r in s])
  n = sum(r["n"] for r in s)
  first = sum(r["first_named_correct"] for r in s)
  second = sum(r["second_named_correct"] for r in s)
  out += [f"Over all orders: the first-named object survives in {first}/{n}, the second-named "
          f"in {second}/{n}.", ""]
  fig, ax = plt.subplots(figsize=(6, 3.5))
  x = np.arange(len(s))
  ax.bar(x - 0.2, [r["first_named_correct"] / r["n"] for r in s], 0.4, label="first-named")
  ax.bar(x + 0.2, [r["second_named_correct"] / r["n"] for r in s], 0.4, label="second-named")
  ax.set_xticks(x, [r["order"] for r in s], rotation=60, fontsize=6)
  ax.set(ylabel="survival rate")
  ax.legend(fontsize=7)
  fig.tight_layout()
  return out + _figure(workdir, "orders", fig, "survival of the first- and second-named object "
                       "per word order.", command)


def _inject(workdir, data, command) -> list[str]:
  plt = runs.pyplot()
  rows = [{k: v for k, v in r.items() if k != "distribution"} for r in data["summary"]]
  _csv(workdir / "inject.csv", rows)
  _csv(workdir / "inject_records.csv", data["records"])
  out = ["## Injected words / polysemy (ATM §4.3)", "",
         f"Injected words: {', '.join(data['words'])}. Per class and word, on the same seeds: "
         "share judged as the class (clean → injected), total-variation distance of the judged "
         "class distribution from the clean prompt's, and the share whose judged class contains "
         "the injected word.", ""]
  out += _table(["class", "word", "n", "clean hit", "hit", "TV distance", "took the word"],
                [[r["class"], r["word"], r["n"], r["clean_hit"], r["hit"],
                  r["total_variation"], r["took_word"]] for r in rows])
  words = data["words"]
  fig, ax = plt.subplots(figsize=(5, 3.5))
  tv = [np.mean([r["total_variation"] for r in rows if r["word"] == w]) for w in words]
  took = [np.mean([r["took_word"] for r in rows if r["word"] == w]) for w in words]
  x = np.arange(len(words))
  ax.bar(x - 0.2, tv, 0.4, label="TV distance from clean")
  ax.bar(x + 0.2, took, 0.4, label="judged class has the word")
  ax.set_xticks(x, words)
  ax.legend(fontsize=7)
  return out + _figure(workdir, "inject", fig, "per injected word, averaged over classes: how "
                       "far the judged class distribution moves and how often the word wins.",
                       command)


def _brittleness(workdir, data, command) -> list[str]:
  plt = runs.pyplot()
  for name in ("classwise", "confusion", "displacement", "trajectory"):
    _csv(workdir / f"brittleness_{name}.csv", data[name])
  _csv(workdir / "brittleness_records.csv", data["records"])
  out = ["## Brittleness discussion (arXiv 2312.11473 §5)", ""]
  cw = data["classwise"]
  cells = sorted({(r["shift"], r["alpha"]) for r in cw}, key=lambda c: (c[1], c[0]))
  classes = sorted({r["class"] for r in cw if r["class"] != "all"})
  acc = {(r["shift"], r["alpha"], r["class"]): r["accuracy"] for r in cw}
  out += ["Class-wise accuracy (the judge reads the named class) at every shift cell; the `all` "
          "row is the sum over classes:", ""]
  out += _table(["class"] + [f"{s} {a:+g}" if s != "none" else "clean" for s, a in cells],
                [[c] + [acc.get((s, a, c)) for s, a in cells] for c in classes + ["all"]])
  judge = json.loads((pathlib.Path(workdir) / "config.json").read_text())
  judge = judge.get("finder", judge.get("judge", "judge"))
  out += _figure(workdir, "brittleness_classwise", classwise_figure(cw, judge),
                 "accuracy per class against the shift's α, one panel per class (the overall "
                 "accuracy dashed grey in every panel for reference).", command)
  conf = [r for r in data["confusion"] if r["pred"] not in (r["class"], "unclear")]
  top = sorted(conf, key=lambda r: -r["count"])[:12]
  unclear = sum(r["count"] for r in data["confusion"] if r["pred"] == "unclear")
  out += [f"What classes turn into under the shifts: {unclear} of {len(data['records'])} images "
          "are unreadable (`unclear`: no single clear object); the most frequent confusions "
          "with another class:", ""]
  out += _table(["shift", "α", "class", "judged as", "images"],
                [[r["shift"], r["alpha"], r["class"], r["pred"], r["count"]] for r in top])
  disp = data["displacement"]
  out += ["Object displacement: centroid of the object's region (oracle: the object of the "
          "prompt's colour; classifier judge: its noun's attention region) at α minus at α = 0, "
          "same class and seed, in pixels (x to the right, y down; se cluster-robust by class "
          "when the moves span several classes: the seeds of a class share its scene):", ""]
  out += _table(["shift", "α", "n", "dx", "± se", "dy", "± se"],
                [[r["shift"], r["alpha"], r["n"], r["dx"], r["dx_se"], r["dy"], r["dy_se"]]
                 for r in disp])
  fig, ax = plt.subplots(figsize=(4.5, 3.5))
  for shift in sorted({r["shift"] for r in disp}):
    mine = sorted([r for r in disp if r["shift"] == shift], key=lambda r: r["alpha"])
    a = [r["alpha"] for r in mine]
    ax.errorbar(a, [r["dx"] for r in mine], [r["dx_se"] or 0 for r in mine], label=f"{shift} dx")
    ax.errorbar(a, [r["dy"] for r in mine], [r["dy_se"] or 0 for r in mine], label=f"{shift} dy",
                linestyle="--")
  ax.axhline(0, color="k", lw=0.5)
  ax.set(xlabel="α", ylabel="mean centroid move (pixels)")
  ax.legend(fontsize=7)
  out += _figure(workdir, "brittleness_displacement", fig, "mean move of the object's centroid "
                 "from α = 0 (±1 standard error) against α.", command)
  fig, ax = plt.subplots(figsize=(5, 3.5))
  traj = data["trajectory"]
  for shift, alpha in sorted({(r["shift"], r["alpha"]) for r in traj}, key=lambda c: c[1]):
    mine = [r for r in traj if (r["shift"], r["alpha"]) == (shift, alpha)]
    ax.plot([r["step"] + 1 for r in mine], [r["step_distance"] for r in mine],
            label="clean" if shift == "none" else f"{shift} {alpha:+g}")
  ax.set(xlabel="step", ylabel="RMS distance to previous latent", yscale="log")
  ax.legend(fontsize=7)
  return out + _figure(workdir, "brittleness_trajectory", fig, "mean per-step distance of the "
                       "latent trajectory per shift cell.", command)


def speed_figure(singles, threshold: float):
  """Small multiples of the generation-speed curves: one panel per class (shared axes), the mean
  over its seeds of SSIM(predicted x0 at step s, final image) against s, the mean over every
  class dashed grey for reference, the formation threshold as a black line."""
  plt = runs.pyplot()
  classes = sorted({r["class"] for r in singles})
  if not classes:
    raise ValueError("speed_figure: no single-object curves (data['singles'] is empty)")
  mean = {c: np.asarray([r["curve"] for r in singles if r["class"] == c]).mean(0)
          for c in classes}
  overall = np.asarray([r["curve"] for r in singles]).mean(0)
  cols = min(5, len(classes))
  rows = -(-len(classes) // cols)
  fig, axes = plt.subplots(rows, cols, sharex=True, sharey=True, squeeze=False,
                           figsize=(2.2 * cols + 0.6, 1.8 * rows + 0.8))
  steps = np.arange(1, overall.shape[0] + 1)
  for k, c in enumerate(classes):
    ax = axes[k // cols][k % cols]
    ax.plot(steps, overall, color="0.6", ls="--", lw=1)
    ax.plot(steps, mean[c], color=_colour(c), lw=1.5)
    ax.axhline(threshold, color="k", lw=0.6)
    ax.set_title(c, fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if k % cols == 0:
      ax.set_ylabel("SSIM(predicted x0, final)", fontsize=7)
    if k // cols == rows - 1 or k + cols >= len(classes):
      ax.set_xlabel("sampler step", fontsize=7)
  for k in range(len(classes), rows * cols):
    axes[k // cols][k % cols].set_visible(False)
  fig.tight_layout()
  return fig


def classwise_figure(classwise_rows, judge: str):
  """Small multiples of `brittleness.classwise` rows: one panel per class (shared axes), its
  accuracy against each shift's α (clean cell at α = 0) in the class's colour, the overall
  accuracy dashed grey for reference; the x axes name the shift, the y axes the judge."""
  plt = runs.pyplot()
  acc = {(r["shift"], r["alpha"], r["class"]): r["accuracy"] for r in classwise_rows}
  shifts = sorted({r["shift"] for r in classwise_rows} - {"none"})
  classes = sorted({r["class"] for r in classwise_rows if r["class"] != "all"})
  if not shifts or not classes:
    raise ValueError("classwise_figure: the rows need a shifted cell and at least one class; "
                     f"got shifts {shifts} and classes {classes}")
  cols = min(5, len(classes))
  rows = -(-len(classes) // cols)
  fig, axes = plt.subplots(rows, cols, sharex=True, sharey=True, squeeze=False,
                           figsize=(2.2 * cols + 0.6, 1.8 * rows + 0.8))
  styles = ("-", ":", "-.", (0, (5, 1)))
  for k, c in enumerate(classes):
    ax = axes[k // cols][k % cols]
    for i, shift in enumerate(shifts):
      alphas = sorted({a for s, a, _ in acc if s == shift} | {0.0})
      def curve(cls, shift=shift, alphas=alphas):
        return [acc.get((shift, a, cls), acc.get(("none", 0.0, cls))) for a in alphas]
      ax.plot(alphas, curve("all"), color="0.6", ls="--", lw=1)
      ax.plot(alphas, curve(c), color=_colour(c), ls=styles[i % len(styles)], marker="o", ms=2.5,
              label=shift.upper())
    ax.set_title(c, fontsize=8)
    ax.set_ylim(-0.05, 1.05)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if k % cols == 0:
      ax.set_ylabel(f"class drawn ({judge})", fontsize=7)
    if k // cols == rows - 1 or k + cols >= len(classes):
      ax.set_xlabel((shifts[0].upper() if len(shifts) == 1 else "shift") + " α", fontsize=7)
  for k in range(len(classes), rows * cols):
    axes[k // cols][k % cols].set_visible(False)
  if len(shifts) > 1:
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(shifts), fontsize=7, frameon=False)
  fig.tight_layout(rect=(0, 0.04 if len(shifts) > 1 else 0, 1, 1))
  return fig


def _polysemy(workdir, data, command) -> list[str]:
  del command
  _csv(workdir / "polysemy.csv", data["summary"])
  _csv(workdir / "polysemy_records.csv", data["records"])
  out = ["## Polysemous words in trained captions (ATM §4.3, world 2)", "",
         "Each word in its other sense (star: the background \"on a star field\"; ring: the "
         "texture \"with a ring pattern\"; orange: the hue) against a control caption that "
         "differs only there, on the same classes and seeds. Leak: the judged class has the "
         "word's shape sense (a star, a ring, an orange fruit) though the caption names none. "
         "Difference = word − control, paired by class and seed; every 95 % interval is "
         "clustered by class (the seeds of a class share its difficulty): the difference's "
         "cluster-robust interval and Wald p (Newcombe's paired interval where one class or no "
         "discordant pair leaves it undefined), the leak rates' `stats.clustered_rate`. "
         "McNemar's exact p treats the pairs as independent.", ""]
  pct = lambda x: "–" if x is None else f"{100 * x:.1f} %"
  span = lambda p: "–" if p is None or not np.all(np.isfinite(p)) else (
      f"[{100 * p[0]:.1f}, {100 * p[1]:.1f}]")
  out += _table(["word", "sense", "classes", "n", "leak (word)", "leak (control)",
                 "difference [95 %]", "p (clustered)", "McNemar p",
                 "named class (word / control)"],
                [[r["word"], r["sense"], r["classes"], r["n"],
                  f"{pct(r['leak'])} {span(r['leak_ci95'])}",
                  f"{pct(r['control_leak'])} {span(r['control_leak_ci95'])}",
                  f"{100 * r['difference']:+.1f} pp {span(r['difference_ci95'])}",
                  "–" if r.get("difference_p") is None else f"{r['difference_p']:.3g}",
                  r["mcnemar_p"],
                  f"{pct(r['named_class'])} / {pct(r['control_named_class'])}"]
                 for r in data["summary"]])
  return out


SECTIONS = {"speed": _speed, "attention": _attention, "orders": _orders, "inject": _inject,
            "brittleness": _brittleness, "polysemy": _polysemy}
