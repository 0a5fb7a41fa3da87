"""Trains the toy world (tiny SD, CLIP, ViT, ResNet) and exports it.

  python launch/train_toy.py --config configs/train_toy.py --workdir DIR

`config.job` picks what runs: "all" (every model) or "learned_variance" (the learned-variance
UNet only, configs/train_toy.py:learned_variance). Training runs in one process: a multi-process
start (`--distributed`, see README "Multi-host") is refused with one line.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from jaxdiffattack import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdiffattack import distributed  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdiffattack import io  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdiffattack.errors import UserError  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdiffattack.toy import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdiffattack.toy import train_lv  # pylint: disable=g-import-not-at-top,wrong-import-position

JOBS = {"all": train.run, "learned_variance": train_lv.run}


def run(config, workdir):
  job = config.get("job", "all")
  if job not in JOBS:
    raise UserError(f"config.job={job!r} is invalid: use one of {sorted(JOBS)}")
  if distributed.is_multiprocess():
    raise UserError("launch/train_toy.py runs in one process (the toy world trains on one CPU "
                    "core): start it once, with --distributed=off or without JAX_*/SLURM "
                    "multi-process variables")
  io.remove_temp_files(workdir)   # writes cut by an earlier kill (the jobs resume by stage)
  return JOBS[job](config, workdir)


if __name__ == "__main__":
  cli.main(run)
