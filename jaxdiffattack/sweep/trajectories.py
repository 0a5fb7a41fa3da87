"""How shifted seed vectors travel through the denoising loop (arXiv 2312.11473, Fig. 8).

For chosen prompts × shift cells: per step, the RMS distance of the latent to the previous step's,
and the latent's mean and standard deviation (trajectory.csv, plots/trajectory_<setting>.png).
"""

import pathlib

import jax
import numpy as np

from jaxdiffattack import io
from jaxdiffattack import runs
from jaxdiffattack.sweep.plan import Cell
from jaxdiffattack.sweep.plan import Plan
from jaxdiffattack.sweep.plan import setting_sampler
from jaxdiffattack.sweep.plan import unshifted

FIELDS = ("setting", "shift", "alpha", "prompt", "step", "step_distance", "mean", "std")


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
  workdir = pathlib.Path(workdir)
  cells = [unshifted()] + [Cell(str(s), (float(a), 0.0))
                           for s, a in zip(config.trajectory.shifts, config.trajectory.alphas)]
  plan = Plan(cells, len(prompts), 1)
  prompt_ids = list(config.trajectory.prompts)
  members = np.array([c * len(prompts) + p for c in range(len(cells)) for p in prompt_ids])
  key = jax.random.PRNGKey(config.seed)
  rows = []
  only = tuple(config.trajectory.get("settings", ()))   # setting names; empty = every setting
  for setting in config.settings:
    if only and setting.name not in only:
      continue
    loaded = setting_sampler(config, setting, prompts, model_loader, trajectory=("latents",))
    out, latents = loaded.generate(plan, members, key)
    traj = trajectory_statistics(out.latent_trajectory,
                                 latents * loaded.sampler.scheduler.init_noise_sigma)
    for i, m in enumerate(members):
      cell = cells[m // len(prompts)]
      for step in range(traj["mean"].shape[1]):
        rows.append({"setting": setting.name, "shift": cell.shift, "alpha": cell.label,
                     "prompt": prompts[m % len(prompts)], "step": step,
                     "step_distance": float(traj["step_distance"][i, step]),
                     "mean": float(traj["mean"][i, step]), "std": float(traj["std"][i, step])})
  plot_trajectories(rows, workdir / "plots")
  io.write_csv(workdir / "trajectory.csv", FIELDS, rows)


# What each statistic measures (the y axes name it; the x axis is the sampler's step).
STAT_AXES = {"step_distance": "RMS step distance of the latent",
             "mean": "latent mean", "std": "latent std"}


def plot_trajectories(rows, plot_dir) -> list[str]:
  """plots/trajectory_<setting>.png from trajectory.csv rows: one panel per statistic (step
  distance, mean, std; shared step axis), one line per shift cell × prompt, labelled in a legend
  below the panels (never over the data). Returns the settings drawn, in order."""
  plt = runs.pyplot()
  settings = list(dict.fromkeys(r["setting"] for r in rows))
  for setting in settings:
    mine = [r for r in rows if r["setting"] == setting]
    series = list(dict.fromkeys((r["shift"], str(r["alpha"]), r["prompt"]) for r in mine))
    fig, axes = plt.subplots(1, len(STAT_AXES), sharex=True, figsize=(12, 3.4))
    for shift, alpha, prompt in series:
      sel = sorted((r for r in mine if (r["shift"], str(r["alpha"]), r["prompt"]) ==
                    (shift, alpha, prompt)), key=lambda r: int(r["step"]))
      label = ("unshifted" if shift == "none" else f"{shift.upper()} α = {alpha}") + \
          f" / {prompt}"
      for ax, name in zip(axes, STAT_AXES):
        ax.plot([int(r["step"]) for r in sel], [float(r[name]) for r in sel], marker="o",
                ms=2.5, label=label)
    for ax, (name, axis) in zip(axes, STAT_AXES.items()):
      ax.set_ylabel(axis, fontsize=8)
      ax.set_xlabel("sampler step", fontsize=8)
      ax.tick_params(labelsize=7)
      ax.grid(alpha=0.3)
    fig.suptitle(f"{setting}: latent trajectory under seed shifts", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=7,
               frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.05 * ((len(labels) - 1) // 4), 1, 1))
    runs.save_figure(fig, pathlib.Path(plot_dir) / f"trajectory_{setting}.png")
  return settings


def replot_trajectories(trajectory_csv, plot_dir) -> list[str]:
  """Redraws plots/trajectory_<setting>.png from a trajectory.csv alone (e.g. a committed one)."""
  return plot_trajectories(io.read_csv(trajectory_csv), plot_dir)
