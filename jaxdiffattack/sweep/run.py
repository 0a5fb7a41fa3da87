"""The sweep job: every member of every setting through the fused sampler + scorer, in checkpointed
units, then members.csv and the report (see the package docstring).
"""

import pathlib

import flax.struct
import jax
import ml_collections
import numpy as np

from jaxdiffattack import io
from jaxdiffattack import labels as labels_lib
from jaxdiffattack import pages
from jaxdiffattack import publish
from jaxdiffattack import runs
from jaxdiffattack import scoring as scoring_lib
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.sweep import plan as plan_lib
from jaxdiffattack.sweep import report
from jaxdiffattack.sweep import trajectories

MEMBER_FIELDS = ("setting", "shift", "alpha_c", "alpha_s", "prompt_index", "label", "seed_index")


@flax.struct.dataclass
class SweepState:
  """What a sweep has computed (the checkpoint). Members of a setting run in order."""
  done: dict     # setting name → [] int64: members finished
  scores: dict   # setting name → {metric: [N] float32 (NaN: not yet)}, N = members per setting


def new_state(setting_names, size: int, metrics=plan_lib.METRICS) -> SweepState:
  return SweepState(
      done={name: np.array(0) for name in setting_names},
      scores={name: {metric: np.full(size, np.nan, np.float32) for metric in metrics}
              for name in setting_names})


def run(config: ml_collections.ConfigDict, workdir: str, *,
        scoring: scoring_lib.Scoring | None = None, model_loader=None, mesh=None) -> dict:
  """Runs (or resumes) the sweep and writes every output. Returns {"members": rows}.

  `mesh` (default: all devices) shards the scored populations."""
  plan_lib.validate(config)
  if config.get("report_only", False):
    out = report.write_report(workdir)
    pages.write_index(workdir)
    _publish(config, workdir)
    return out
  workdir, scoring, model_loader = runs.begin(config, workdir, scoring, model_loader, "sweep")
  scoring.check_names(list(plan_lib.METRIC_SCORES.values()), "scoring")
  missing = [n for n in report.GRID_SCORES if n not in scoring.names]
  if config.grid_images and missing:
    raise ConfigError(f"config.grid_images=True captions every tile with the evaluator's class "
                      f"and confidence, but the scoring does not return {missing}: keep "
                      f"config.judges=('evaluator',) or set config.grid_images=False")
  labels, label_ids = plan_lib.resolve_labels(config)
  prompts = [config.template.format(label) for label in labels]
  plan = plan_lib.Plan(plan_lib.grid_cells(config.grids, config.shifts), len(prompts),
                       config.images_per_prompt)
  key = jax.random.PRNGKey(config.seed)
  ckpt_path = workdir / "checkpoint.msgpack"
  names = [s.name for s in config.settings]
  metrics = plan_lib.metrics(config)
  image_judges = plan_lib.image_judges(config)
  label_names = labels_lib.class_names(config.label_set, config.labels)
  fresh = new_state(names, plan.size, metrics)
  digest = runs.config_hash(config)
  state = runs.load_checkpoint(ckpt_path, digest, fresh, "sweep") or fresh
  done = lambda: sum(int(n) for n in state.done.values())
  progress = runs.Progress("sweep", plan.size * len(names), done(), "members")
  config_written = False
  for setting in config.settings:
    name = setting.name
    if int(state.done[name]) >= plan.size:
      continue
    loaded = plan_lib.setting_sampler(config, setting, prompts, model_loader, mesh=mesh,
                                      score_fn=scoring.score_fn, score_params=scoring.params,
                                      return_images=bool(image_judges))
    if not config_written:   # the first model to run is loaded: the inputs are good
      runs.write_config(config, workdir)
      config_written = True
    while int(state.done[name]) < plan.size:
      lo = int(state.done[name])
      members = np.arange(lo, min(lo + config.unit, plan.size))
      _, prompt_idx, _ = plan.decompose(members)
      out, _ = loaded.generate(plan, members, key, aux=scoring.aux(
          label_ids[prompt_idx], [prompts[i] for i in prompt_idx]))
      for metric, score in plan_lib.METRIC_SCORES.items():
        state.scores[name][metric][members] = np.asarray(out.scores[score], np.float32)
      for judge in image_judges:
        for metric, value in plan_lib.image_judge_metrics(
            judge, out.images, label_ids[prompt_idx], label_names,
            [prompts[i] for i in prompt_idx]).items():
          state.scores[name][metric][members] = value
      if config.get("object_positions", False):
        for metric, value in plan_lib.object_positions(out.images, label_ids[prompt_idx],
                                                       label_names).items():
          state.scores[name][metric][members] = value
      state = state.replace(done=state.done | {name: np.array(members[-1] + 1)})
      runs.save_checkpoint(ckpt_path, state, digest)
      progress.log(done())
  rows = member_rows(config, plan, labels, state)
  if not config_written:     # resumed with every setting already done
    runs.write_config(config, workdir)
  io.write_csv(workdir / "members.csv", MEMBER_FIELDS + metrics, rows)
  if config.grid_images:
    report.write_grids(config, workdir, plan, labels, label_ids, model_loader, scoring)
  if config.trajectory.prompts:
    trajectories.write_trajectories(config, workdir, prompts, model_loader)
  report.write_report(workdir)
  pages.write_index(workdir)
  _publish(config, workdir)
  return {"members": rows}


# What a study's results folder keeps (config.results_file; members.csv stays in the workdir:
# results.csv holds every number of the report, per class and α, with its interval).
PUBLISHED = ("results.csv", "radius.csv", "paired.csv", "displacement.csv", "report.md",
             "config.json")


def _publish(config, workdir) -> None:
  """config.results_file (the `world2,study` variant): the folder gets PUBLISHED's files that
  the run wrote and provenance.json (`jaxdiffattack.publish.write_dir`)."""
  dest = config.get("results_file", "")
  if dest:
    names = [n for n in PUBLISHED if (pathlib.Path(workdir) / n).is_file()]
    publish.write_dir(dest, workdir, names)


def member_rows(config, plan: plan_lib.Plan, labels, state: SweepState) -> list[dict]:
  """members.csv rows: one per setting × member, with its cell, prompt, seed and metrics."""
  members = np.arange(plan.size)
  cell_idx, prompt_idx, seed_idx = plan.decompose(members)
  rows = []
  for setting in config.settings:
    for m in members:
      cell = plan.cells[cell_idx[m]]
      row = {"setting": setting.name, "shift": cell.shift, "alpha_c": cell.alpha[0],
             "alpha_s": cell.alpha[1], "prompt_index": int(prompt_idx[m]),
             "label": labels[prompt_idx[m]], "seed_index": int(seed_idx[m])}
      for metric in plan_lib.metrics(config):
        row[metric] = float(state.scores[setting.name][metric][m])
      rows.append(row)
  return rows
