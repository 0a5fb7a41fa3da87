"""The seed-perturbation study of arXiv 2312.11473 as one sharded, resumable sweep.

Grid: generator setting × shift kind × α × prompt × seed. Every (prompt p, seed s) has one base
seed vector z = N(0, I) drawn from fold_in(fold_in(PRNGKey(seed), p), s), shared by every shift
and α (paired design: a difference between cells is attributable to the shift alone); the
unshifted cell ("none", α = 0) is computed once per setting and serves as every shift's α = 0.
Members run through the fused sampler + scorer (`PopulationSampler` with a `score_fn`) in
fixed-size units; after each unit the per-member results are checkpointed atomically, so a killed
sweep restarted on the same workdir skips finished units and ends with the same `results.csv`.

Outputs in the workdir: config.json, members.csv (one row per generated image), results.csv (one
row per cell × class × metric, with 95 % CIs), report.md (paper-style tables), plots/*.png
(metric vs α per shift; one line per setting in comparison mode), grids/*.png (prompts × α),
trajectory.csv + plots/trajectory_*.png (paper Fig. 8). `write_report(workdir)` rebuilds
results.csv, report.md and the plots from members.csv without recomputing.
"""

import csv
import dataclasses
import hashlib
import io as _io
import json
import pathlib
import time

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdiffattack import io
from jaxdiffattack import labels as labels_lib
from jaxdiffattack import perturb
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import scoring as scoring_lib
from jaxdiffattack import stats
from jaxdiffattack import text
from jaxdiffattack.errors import check

# results.csv metric → the score (of `scoring.Scoring`) it is read from.
METRIC_SCORES = {"top1": "evaluator/top1_hit", "top5": "evaluator/top5_hit",
                 "clip_score": "evaluator/clip_score"}
METRICS = tuple(METRIC_SCORES)
MEMBER_FIELDS = ("setting", "shift", "alpha_c", "alpha_s", "prompt_index", "label", "seed_index",
                 "top1", "top5", "clip_score")


@dataclasses.dataclass(frozen=True)
class Cell:
  shift: str
  alpha: tuple[float, float]

  @property
  def label(self) -> str:
    if perturb.SHIFT_ARITY[self.shift] == 2:
      return f"{self.alpha[0]:g},{self.alpha[1]:g}"
    return f"{self.alpha[0]:g}"


def grid_cells(grids: ml_collections.ConfigDict, shifts) -> list[Cell]:
  """The unshifted cell first, then each shift's α values except the identity (α = 0)."""
  cells = [Cell("none", (0.0, 0.0))]
  for shift in shifts:
    if shift == "ms":
      for a_c in grids.ms_alpha_c:
        for a_s in grids.ms_alpha_s:
          if (a_c, a_s) != (0, 0):
            cells.append(Cell("ms", (float(a_c), float(a_s))))
    else:
      cells.extend(Cell(shift, (float(a), 0.0)) for a in grids[_grid_key(shift)] if a != 0)
  return cells


def _grid_key(shift: str) -> str:
  return shift.split("_")[0]  # sds_flipped uses the sds grid, pas_* the pas grid


def resolve_labels(config: ml_collections.ConfigDict) -> tuple[list[str], np.ndarray]:
  """(labels, their class indices [N]): config.labels, or every label of config.label_set when
  empty; indices into the label set (or into config.labels when no label set is named)."""
  names = labels_lib.class_names(config.label_set, config.labels)
  labels = list(config.labels) or list(names)
  index = {name: i for i, name in enumerate(names)}
  for label in labels:
    check(label in index, "labels", label, f"not in label_set {config.label_set!r}")
  return labels, np.asarray([index[label] for label in labels], np.int32)


def validate(config: ml_collections.ConfigDict) -> None:
  check(bool(config.labels) or bool(config.label_set), "labels", config.labels,
        "give labels or a label_set")
  check("{}" in config.template, "template", config.template, "must contain '{}'")
  check(config.images_per_prompt >= 1, "images_per_prompt", config.images_per_prompt,
        "use an integer >= 1")
  for shift in config.shifts:
    check(shift in perturb.SHIFTS and shift != "none", "shifts", shift,
          f"use names from {sorted(set(perturb.SHIFTS) - {'none'})}")
    if shift != "ms":
      check(_grid_key(shift) in config.grids, f"grids.{_grid_key(shift)}", None,
            "give the α values of this shift")
  check(len(config.settings) > 0, "settings", config.settings, "give at least one setting")
  names = [s.name for s in config.settings]
  check(len(set(names)) == len(names), "settings", names, "setting names must be unique")
  for s in config.settings:
    check(np.isfinite(s.guidance_scale), f"settings[{s.name}].guidance_scale", s.guidance_scale,
          "use a finite number (<= 1: no guidance)")
  check(config.unit >= 1, "unit", config.unit, "use an integer >= 1 (members per checkpoint)")


def _config_hash(config) -> str:
  keep = {k: v for k, v in io.config_to_dict(config).items() if k not in ("report_only",)}
  return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclasses.dataclass
class Plan:
  """The flattened members of one setting: cell-major, then prompt, then seed."""
  cells: list[Cell]
  n_prompts: int
  n_seeds: int

  @property
  def size(self) -> int:
    return len(self.cells) * self.n_prompts * self.n_seeds

  def decompose(self, members: np.ndarray):
    per_cell = self.n_prompts * self.n_seeds
    return members // per_cell, (members % per_cell) // self.n_seeds, members % self.n_seeds


def base_latents(key, prompt_idx, seed_idx, latent_shape):
  """z [P, C, h, w] and the shift keys [P] of (prompt, seed) members — α never enters."""
  def one(p, s):
    k = jax.random.fold_in(jax.random.fold_in(key, p), s)
    return (jax.random.normal(jax.random.fold_in(k, 0), latent_shape, jnp.float32),
            jax.random.fold_in(k, 1))
  return jax.vmap(one)(jnp.asarray(prompt_idx, jnp.uint32), jnp.asarray(seed_idx, jnp.uint32))


def shifted_latents(plan: Plan, members: np.ndarray, key, latent_shape) -> np.ndarray:
  cell_idx, prompt_idx, seed_idx = plan.decompose(members)
  z, keys = base_latents(key, prompt_idx, seed_idx, latent_shape)
  kinds = tuple(sorted({c.shift for c in plan.cells}))
  kind_ids = np.array([kinds.index(plan.cells[i].shift) for i in cell_idx], np.int32)
  alphas = np.array([plan.cells[i].alpha for i in cell_idx], np.float32)
  return np.asarray(_apply_shifts(kind_ids, z, alphas, keys, kinds))


_apply_shifts = jax.jit(perturb.apply_shifts, static_argnums=4)


def _progress(done, total, start, done_at_start):
  elapsed = time.perf_counter() - start
  rate = (done - done_at_start) / max(elapsed, 1e-9)
  eta = (total - done) / rate if rate > 0 else float("nan")
  logging.info("sweep %d/%d members (%.1f%%)  %.2f images/s  elapsed %.0fs  ETA %.0fs", done,
               total, 100.0 * done / total, rate, elapsed, eta)


def run(config: ml_collections.ConfigDict, workdir: str, *,
        scoring: scoring_lib.Scoring | None = None, model_loader=None, mesh=None) -> dict:
  """Runs (or resumes) the sweep and writes every output. Returns {"members": rows}.

  `mesh` (default: all devices) shards the scored populations."""
  validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if config.get("report_only", False):
    return write_report(workdir)
  io.write_json(workdir / "config.json", io.config_to_dict(config))
  if model_loader is None:
    from jaxdiffattack.models import load_stable_diffusion  # pylint: disable=g-import-not-at-top
    model_loader = load_stable_diffusion
  if scoring is None:
    scoring = scoring_lib.make_scoring(config)
  scoring.check_names(list(METRIC_SCORES.values()), "scoring")
  labels, label_ids = resolve_labels(config)
  prompts = [config.template.format(label) for label in labels]
  cells = grid_cells(config.grids, config.shifts)
  plan = Plan(cells, len(prompts), config.images_per_prompt)
  key = jax.random.PRNGKey(config.seed)
  ckpt_path = workdir / "checkpoint.npz"
  state = _load_checkpoint(ckpt_path, _config_hash(config), [s.name for s in config.settings],
                           plan.size)
  total = plan.size * len(config.settings)
  done_at_start = sum(int(state[s.name + "/done"]) for s in config.settings)
  start = time.perf_counter()
  for setting in config.settings:
    name = setting.name
    if int(state[name + "/done"]) >= plan.size:
      continue
    sd, params = model_loader(setting.model, dtype=config.dtype)
    guidance = setting.guidance_scale > 1.0
    pop_sampler = sampler_lib.PopulationSampler(
        sd, params, sampler_lib.SamplerSettings(
            scheduler=config.scheduler, num_steps=config.num_steps, guidance=guidance,
            return_images=False),
        microbatch=config.microbatch, score_fn=scoring.score_fn, score_params=scoring.params,
        mesh=mesh)
    prompt_emb = np.asarray(text.encode_prompts(sd, params["text_encoder"], prompts))
    uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0])
    while int(state[name + "/done"]) < plan.size:
      lo = int(state[name + "/done"])
      members = np.arange(lo, min(lo + config.unit, plan.size))
      _, prompt_idx, _ = plan.decompose(members)
      latents = shifted_latents(plan, members, key, sd.latent_shape)
      out = pop_sampler(latents, prompt_emb[prompt_idx], uncond, setting.guidance_scale,
                        aux=scoring.aux(label_ids[prompt_idx], [prompts[i] for i in prompt_idx]))
      for metric, score in METRIC_SCORES.items():
        state[f"{name}/{metric}"][members] = np.asarray(out.scores[score], np.float32)
      state[name + "/done"] = np.array(members[-1] + 1)
      _save_checkpoint(ckpt_path, state)
      _progress(sum(int(state[s.name + "/done"]) for s in config.settings), total, start,
                done_at_start)
  rows = _member_rows(config, plan, labels, state)
  _write_csv(workdir / "members.csv", MEMBER_FIELDS, rows)
  if config.grid_images:
    write_grids(config, workdir, plan, prompts, model_loader)
  if config.trajectory.prompts:
    write_trajectories(config, workdir, prompts, model_loader)
  write_report(workdir)
  return {"members": rows}


def _load_checkpoint(path, config_hash, settings, size) -> dict:
  state = {"config_hash": np.array(config_hash)}
  for name in settings:
    state[name + "/done"] = np.array(0)
    for metric in METRICS:
      state[f"{name}/{metric}"] = np.full(size, np.nan, np.float32)
  if path.exists():
    with np.load(path) as saved:
      check(str(saved["config_hash"]) == config_hash, "workdir", str(path.parent),
            "holds a sweep with a different config; use a new --workdir")
      state.update({k: saved[k] for k in saved.files})
    logging.info("resuming sweep from %s", path)
  return state


def _save_checkpoint(path, state) -> None:
  buffer = _io.BytesIO()
  np.savez(buffer, **state)
  io.atomic_write_bytes(path, buffer.getvalue())


def _member_rows(config, plan, labels, state) -> list[dict]:
  members = np.arange(plan.size)
  cell_idx, prompt_idx, seed_idx = plan.decompose(members)
  rows = []
  for setting in config.settings:
    for m in members:
      cell = plan.cells[cell_idx[m]]
      row = {"setting": setting.name, "shift": cell.shift, "alpha_c": cell.alpha[0],
             "alpha_s": cell.alpha[1], "prompt_index": int(prompt_idx[m]),
             "label": labels[prompt_idx[m]], "seed_index": int(seed_idx[m])}
      for metric in METRICS:
        row[metric] = float(state[f"{setting.name}/{metric}"][m])
      rows.append(row)
  return rows


def _write_csv(path, fields, rows) -> None:
  buffer = _io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
  io.atomic_write_bytes(path, buffer.getvalue().encode())


def _read_csv(path) -> list[dict]:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


# ----------------------------------------------------------------------------------- report --
RESULT_FIELDS = ("setting", "shift", "alpha", "alpha_c", "alpha_s", "class", "metric", "value",
                 "ci_low", "ci_high", "n")


def summarise(member_rows: list[dict]) -> list[dict]:
  """results.csv rows: per setting × shift × α × (all + each class) × metric, with 95 % CIs.

  Each shift's α = 0 row is the shared unshifted cell.
  """
  groups: dict[tuple, list[dict]] = {}
  shifts = sorted({r["shift"] for r in member_rows} - {"none"})
  for r in member_rows:
    alpha = (float(r["alpha_c"]), float(r["alpha_s"]))
    for shift in (shifts if r["shift"] == "none" else [r["shift"]]):
      for cls in ("all", r["label"]):
        groups.setdefault((r["setting"], shift, alpha, cls), []).append(r)
  out = []
  for (setting, shift, alpha, cls), rows in sorted(groups.items(), key=lambda kv: (
      kv[0][0], kv[0][1], kv[0][2], kv[0][3] != "all", kv[0][3])):
    label = Cell(shift, alpha).label
    for metric in METRICS:
      values = np.array([float(r[metric]) for r in rows])
      if metric == "clip_score":
        value, low, high = stats.mean_interval(values)
      else:
        value = float(values.mean())
        low, high = stats.wilson_interval(float(values.sum()), len(values))
      out.append({"setting": setting, "shift": shift, "alpha": label, "alpha_c": alpha[0],
                  "alpha_s": alpha[1], "class": cls, "metric": metric, "value": value,
                  "ci_low": low, "ci_high": high, "n": len(values)})
  return out


def write_report(workdir) -> dict:
  """Rebuilds results.csv, report.md and plots/ from members.csv (no recomputation)."""
  workdir = pathlib.Path(workdir)
  member_rows = _read_csv(workdir / "members.csv")
  results = summarise(member_rows)
  _write_csv(workdir / "results.csv", RESULT_FIELDS, results)
  io.atomic_write_bytes(workdir / "report.md", _markdown(results).encode())
  _plots(results, workdir / "plots")
  return {"members": member_rows, "results": results}


def _markdown(results) -> str:
  lines = ["# Seed-vector shift sweep (arXiv 2312.11473)", "",
           "Accuracy = evaluator top-1 / top-5 on the prompt's class; CLIP = CLIP score "
           "(100·cos, ≥ 0). Brackets: 95 % CI (Wilson for accuracies, normal for CLIP). "
           "α = 0 is the shared unshifted cell.", ""]
  overall = [r for r in results if r["class"] == "all"]
  for setting in sorted({r["setting"] for r in overall}):
    for shift in sorted({r["shift"] for r in overall}):
      rows = [r for r in overall if r["setting"] == setting and r["shift"] == shift]
      alphas = sorted({(r["alpha_c"], r["alpha_s"]) for r in rows})
      labels = [Cell(shift, a).label for a in alphas]
      lines += [f"## {setting}: {shift}", "", "| metric | " + " | ".join(
          f"α={a}" for a in labels) + " |", "|---|" + "---|" * len(labels)]
      for metric in METRICS:
        cells = []
        for a in alphas:
          r = next(x for x in rows if (x["alpha_c"], x["alpha_s"]) == a and x["metric"] == metric)
          scale = 1 if metric == "clip_score" else 100
          cells.append(f"{r['value'] * scale:.1f} [{r['ci_low'] * scale:.1f}, "
                       f"{r['ci_high'] * scale:.1f}]")
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


def _plots(results, plot_dir: pathlib.Path) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  overall = [r for r in results if r["class"] == "all"]
  settings = sorted({r["setting"] for r in overall})
  shifts = sorted({r["shift"] for r in overall})
  for metric in METRICS:
    # One figure per metric: one panel per shift; one line per setting (and per α_s for MS).
    fig, axes = plt.subplots(1, len(shifts), figsize=(4 * len(shifts), 3.2), squeeze=False)
    for ax, shift in zip(axes[0], shifts):
      for setting in settings:
        rows = [r for r in overall if r["setting"] == setting and r["shift"] == shift
                and r["metric"] == metric]
        series = sorted({r["alpha_s"] for r in rows}) if shift == "ms" else [None]
        for a_s in series:
          sel = sorted((r for r in rows if a_s is None or r["alpha_s"] == a_s),
                       key=lambda r: r["alpha_c"])
          x = [r["alpha_c"] for r in sel]
          y = [r["value"] for r in sel]
          label = setting if a_s is None else f"{setting} α_s={a_s:g}"
          ax.plot(x, y, marker="o", label=label)
          ax.fill_between(x, [r["ci_low"] for r in sel], [r["ci_high"] for r in sel], alpha=0.15)
      ax.set_title(shift)
      ax.set_xlabel("α_a (pixels)" if shift.startswith("pas") else "α")
      ax.set_ylabel(metric)
      ax.legend(fontsize=7)
    fig.tight_layout()
    plot_dir.mkdir(parents=True, exist_ok=True)
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    io.atomic_write_bytes(plot_dir / f"{metric}.png", buffer.getvalue())


# ------------------------------------------------------------------------ grids and trajectories --
def write_grids(config, workdir, plan: Plan, prompts, model_loader) -> None:
  """grids/<setting>_<shift>.png: prompts (rows) × α (columns), seed 0 (paper Fig. 5)."""
  key = jax.random.PRNGKey(config.seed)
  n_grid = min(len(prompts), config.grid_prompts)
  for setting in config.settings:
    sd, params = model_loader(setting.model, dtype=config.dtype)
    pop_sampler = sampler_lib.PopulationSampler(
        sd, params, sampler_lib.SamplerSettings(
            scheduler=config.scheduler, num_steps=config.num_steps,
            guidance=setting.guidance_scale > 1.0), microbatch=config.microbatch)
    prompt_emb = np.asarray(text.encode_prompts(sd, params["text_encoder"], prompts[:n_grid]))
    uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0])
    for shift in config.shifts:
      cols = [0] + [i for i, c in enumerate(plan.cells) if c.shift == shift]
      cols.sort(key=lambda i: plan.cells[i].alpha)
      per_cell = plan.n_prompts * plan.n_seeds
      members = np.array([c * per_cell + p * plan.n_seeds for p in range(n_grid) for c in cols])
      latents = shifted_latents(plan, members, key, sd.latent_shape)
      _, prompt_idx, _ = plan.decompose(members)
      images = pop_sampler(latents, prompt_emb[prompt_idx], uncond, setting.guidance_scale).images
      upscale = max(1, 64 // images.shape[1])
      io.write_png(pathlib.Path(workdir) / "grids" / f"{setting.name}_{shift}.png",
                   io.image_grid(images, cols=len(cols), upscale=upscale))


def trajectory_statistics(latent_trajectory: np.ndarray, initial: np.ndarray) -> dict:
  """Per step: RMS distance to the previous step's latent, and the latent's mean and std.

  Args:
    latent_trajectory: [P, S, C, h, w] latents after each step.
    initial: [P, C, h, w] the (shifted, σ-scaled) starting latents.
  """
  full = np.concatenate([initial[:, None], latent_trajectory], axis=1)
  steps = full.reshape(full.shape[0], full.shape[1], -1)
  return {"step_distance": np.sqrt(np.mean(np.diff(steps, axis=1) ** 2, axis=2)),  # [P, S]
          "mean": steps[:, 1:].mean(axis=2), "std": steps[:, 1:].std(axis=2)}


def write_trajectories(config, workdir, prompts, model_loader) -> None:
  """trajectory.csv and plots/trajectory_<setting>.png for chosen prompts × shift cells."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir)
  cells = [Cell("none", (0.0, 0.0))] + [
      Cell(str(s), (float(a), 0.0)) for s, a in zip(config.trajectory.shifts,
                                                      config.trajectory.alphas)]
  plan = Plan(cells, len(prompts), 1)
  prompt_ids = list(config.trajectory.prompts)
  members = np.array([c * len(prompts) + p for c in range(len(cells)) for p in prompt_ids])
  key = jax.random.PRNGKey(config.seed)
  rows = []
  for setting in config.settings:
    sd, params = model_loader(setting.model, dtype=config.dtype)
    pop_sampler = sampler_lib.PopulationSampler(
        sd, params, sampler_lib.SamplerSettings(
            scheduler=config.scheduler, num_steps=config.num_steps,
            guidance=setting.guidance_scale > 1.0, trajectory=("latents",)),
        microbatch=config.microbatch)
    latents = shifted_latents(plan, members, key, sd.latent_shape)
    prompt_emb = np.asarray(text.encode_prompts(sd, params["text_encoder"], prompts))
    uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0])
    _, prompt_idx, _ = plan.decompose(members)
    out = pop_sampler(latents, prompt_emb[prompt_idx], uncond, setting.guidance_scale)
    traj = trajectory_statistics(out.latent_trajectory,
                                 latents * pop_sampler.scheduler.init_noise_sigma)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for i, m in enumerate(members):
      cell = cells[m // len(prompts)]
      for step in range(traj["mean"].shape[1]):
        rows.append({"setting": setting.name, "shift": cell.shift, "alpha": cell.label,
                     "prompt": prompts[m % len(prompts)], "step": step,
                     "step_distance": float(traj["step_distance"][i, step]),
                     "mean": float(traj["mean"][i, step]), "std": float(traj["std"][i, step])})
      for ax, name in zip(axes, ("step_distance", "mean", "std")):
        ax.plot(traj[name][i], label=f"{cell.shift} {cell.label} / {prompts[m % len(prompts)]}")
        ax.set_title(name)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    io.atomic_write_bytes(workdir / "plots" / f"trajectory_{setting.name}.png", buffer.getvalue())
  _write_csv(workdir / "trajectory.csv", ("setting", "shift", "alpha", "prompt", "step",
                                          "step_distance", "mean", "std"), rows)
