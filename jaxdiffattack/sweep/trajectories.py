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
  plt = runs.pyplot()
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
    runs.save_figure(fig, workdir / "plots" / f"trajectory_{setting.name}.png")
  io.write_csv(workdir / "trajectory.csv", FIELDS, rows)
