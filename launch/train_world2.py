"""Trains world 2 (tiny SD, CLIP, ViT, ResNet, noise-trained ResNet, evaluator) in resumable
stages and exports it.

  python launch/train_world2.py --config configs/train_world2.py --workdir DIR

`--config.stages=...` picks the stages of this process (two processes may share DIR); see
configs/train_world2.py for the exact commands. Runs in one process per command: a
multi-process start (`--distributed`) is refused with one line.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from jaxdiffattack import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdiffattack import distributed  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdiffattack.errors import UserError  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdiffattack.world2 import train  # pylint: disable=g-import-not-at-top,wrong-import-position


def run(config, workdir):
  if distributed.is_multiprocess():
    raise UserError("launch/train_world2.py runs in one process per command (two commands may "
                    "share a workdir: see configs/train_world2.py)")
  return train.run(config, workdir)


if __name__ == "__main__":
  cli.main(run)
