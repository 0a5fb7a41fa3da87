"""The seed-perturbation study of arXiv 2312.11473 ("Investigating the Brittle Nature of Latent
Space in Diffusion Models") as one sharded, resumable sweep.

  python launch/sweep.py --config configs/shift_sweep.py:toy --workdir runs/sweep_toy

Grid: generator setting × shift kind × α × prompt × seed. Every (prompt p, seed s) has one base
seed vector z = N(0, I) drawn from fold_in(fold_in(PRNGKey(seed), p), s), shared by every shift
and α (paired design: a difference between cells is attributable to the shift alone); the
unshifted cell ("none", α = 0) is computed once per setting and serves as every shift's α = 0.
Members run through the fused sampler + scorer (`PopulationSampler` with the job's
`scoring.Scoring`) in fixed-size units; after each unit the per-member results are checkpointed
atomically, so a killed sweep restarted on the same workdir skips finished units and ends with the
same `results.csv`.

Modules: `plan` (cells, members, their seed vectors, the sampler of a setting — each setting may
choose its own scheduler and DDPM variance), `run` (`run`: the job, its checkpointed state; the
toy oracle's metrics when config.judges names "oracle"), `report` (results.csv with CIs, report.md,
plots, image grids), `radius` (the robustness radius: |α| where top-1 halves, paired bootstrap CIs),
`trajectories` (per-step latent statistics, paper Fig. 8). Shared with the search through
`jaxdiffattack.runs` (config hash, checkpoints, progress, figures).

Outputs in the workdir: config.json, members.csv (one row per generated image), results.csv (one
row per cell × class × metric, with 95 % CIs), radius.csv (per setting × shift × side), report.md
(paper-style tables), plots/*.png (metric vs α per shift; one line per setting in comparison
mode), grids/*.png (prompts × α),
trajectory.csv + plots/trajectory_*.png, checkpoint.msgpack. `write_report(workdir)` rebuilds
results.csv, radius.csv, report.md and the plots from members.csv without recomputing.
"""

from jaxdiffattack.sweep.report import write_report
from jaxdiffattack.sweep.run import run

__all__ = ["run", "write_report"]
