"""ATM outputs: attack success rates with CIs, report.md, loss curves and captioned images.

Everything but the images is rebuilt from files (`results.jsonl`, `config.json`, `timing.json`) by
`write_report(workdir)`, so a report can be regenerated without recomputing.

Rates and intervals (ASR per prompt, per sample clustered by prompt, short − long, ATM −
random substitution) are computed in `attacks/rates.py`; this module writes them.
"""

import io as _io
import json
import pathlib
import textwrap

import numpy as np
from PIL import Image
from PIL import ImageDraw

from jaxdiffattack import io
from jaxdiffattack import judges as judges_lib
from jaxdiffattack.attacks import rates
from jaxdiffattack.attacks.rates import SETS
from jaxdiffattack.errors import UserError

PUBLISHED = {"asr_short": 0.911, "asr_long": 0.812,
             "model": "Stable Diffusion 2.1 (fp16, 256², 50 steps, CFG 7.5), CLIP ViT-B/16 "
                      "zero-shot over ImageNet-1k, 1000 prompts per set (arXiv 2306.02583, "
                      "Table 1)"}


def _unclear(rows: list[dict], set_name: str, judge: str) -> str | None:
  """"ATM / baseline" counts of samples a judge could not read (the toy oracle), or None."""
  counts = []
  for method in ("attack", "baseline"):
    blocks = [rates.block(r, method) for r in rows if r["set"] == set_name and r.get("attacked")]
    got = [b["judges"][judge]["unclear"] for b in blocks if b and "unclear" in b["judges"][judge]]
    counts.append(str(sum(got)) if got else "–")
  return None if counts == ["–", "–"] else " / ".join(counts)


def summarise(rows: list[dict], config: dict, timing: dict, random_rows: list[dict] | None = None,
              random_config: dict | None = None) -> dict:
  judges = sorted({j for r in rows if r.get("attacked") for j in r["judges"]})
  methods = ["attack"] + (["baseline"] if any("baseline" in r for r in rows) else [])
  summary = {f"asr_{s}": rates.asr(rows, s) for s in SETS}
  summary["baseline"] = ({f"asr_{s}": rates.asr(rows, s, "baseline") for s in SETS}
                         if "baseline" in methods else None)
  if any("fixed_noise" in r for r in rows):   # eval_noise="both": the clean check's noise too
    summary["fixed_noise"] = {**{f"asr_{s}": rates.asr(rows, s, "fixed_noise") for s in SETS},
                              "sample_success_rate": {s: rates.sample_rate(rows, s, "fixed_noise")
                                                      for s in SETS}}
  summary["by_judge"] = {j: {m: {f"asr_{s}": rates.asr(rows, s, m, j) for s in SETS}
                             for m in methods}
                         for j in judges}
  summary["sample_success_rate"] = {m: {s: rates.sample_rate(rows, s, m) for s in SETS}
                                    for m in methods}
  summary["unclear"] = {j: {s: _unclear(rows, s, j) for s in SETS} for j in judges}
  summary["intervals"] = rates.intervals(rows, config, random_rows, random_config)
  summary["published"] = PUBLISHED
  speed = {}
  for s, t in timing.items():
    speed[s] = {"prompt_iterations_per_s": t["prompt_iterations"] / max(t["attack_s"], 1e-9),
                "attack_s": t["attack_s"], "eval_s": t["eval_s"],
                "eval_images_per_s": t["images"] / max(t["eval_s"], 1e-9)}
  summary["timing"] = speed
  attack = config.get("attack", {})
  summary["settings"] = {k: config.get(k) for k in (
      "model", "classifier", "judges", "mode", "num_samples", "num_steps", "guidance_scale",
      "eval_noise", "baseline", "seed")}
  if "judge" in config:   # a config.json written before config.classifier (report_only)
    summary["settings"]["classifier"] = config["judge"]
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
      f"classifier `{st['classifier']}`; mode `{st['mode']}`; {attack.get('num_iters')} Adam "
      f"iterations (lr {attack.get('lr')}, κ {attack.get('kappa')}, λ_sim {attack.get('lam_sim')}, "
      f"τ {attack.get('tau')}), gradient through {_depth(attack)}; {st['num_samples']} hard "
      f"samples per prompt (noise: {st['eval_noise']}); seed {st['seed']}.",
      "",
      "Success of a sample: the attack classifier's top-1 is not the prompt's class AND the class "
      "word is still in the decoded prompt. ASR = attacked prompts with at least one successful "
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
                     f"{100 * b['rate']:.1f} % {rates.ci(b['ci95'])} "
                     f"({b['successes']}/{b['samples']})")
    lines.append(f"| {s} | {fmt(ours)} | {fmt(base)} |")
  lines += rates.interval_lines(summary["intervals"])
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
  """Captioned PNGs of up to `per_prompt` successful samples per prompt; paths go into rows.
  `result["attack"]` is an `experiment.Judged`; each shown sample keeps every judge's
  `judges.Verdict.record` and is captioned with `judges.caption`."""
  got = result["attack"]
  samples = len(got.texts) // len(index)
  success = got.success("attack")
  for position, row in enumerate(rows):
    sl = range(position * samples, (position + 1) * samples)
    hits = [k for k in sl if success[k]][:per_prompt]
    paths, shown = [], []
    for k in hits:
      records = judges_lib.record({j: got.verdicts[j] for j in judges}, k)
      lines = [f"prompt: {got.texts[k]}", f"clean: {row['prompt']}"]
      lines += judges_lib.caption(records)
      name = f"p{row['index']:04d}_s{k - position * samples:03d}.png"
      rel = f"images/{set_name}/{name}"
      io.write_png(workdir / rel, captioned(got.images[k], lines))
      paths.append(rel)
      # The bare image too (no caption): the rating page and index.html show it.
      io.write_png(workdir / "images" / set_name / "raw" / name, got.images[k])
      shown.append({"image": f"images/{set_name}/raw/{name}", "prompt": str(got.texts[k]),
                    "judges": records})
    row["images"] = paths
    row["shown"] = shown


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
