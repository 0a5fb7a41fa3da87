"""The one parser of config variants: `configs/<job>.py:<variant>,<variant>` (big_vision style).

Every `configs/*.py` calls `parse(arg, VARIANTS, __file__)` first; an unknown variant is an error
naming the config file and the allowed ones. `train_stage` is the one builder of a training
stage's config block (configs/train_toy.py, configs/train_world2.py); `load_config` resolves a
config file outside the launchers (benchmarks, tests).
"""

import importlib.util
import pathlib

import ml_collections


def parse(arg: str | None, allowed: tuple[str, ...], config_file: str) -> list[str]:
  """The comma-separated variants of `arg` (in order); ValueError for one not in `allowed`."""
  variants = [v for v in (arg or "").split(",") if v]
  for v in variants:
    if v not in allowed:
      name = pathlib.Path(config_file)
      name = f"{name.parent.name}/{name.name}" if name.parent.name else name.name
      raise ValueError(f"unknown variant {v!r} in {name}:{arg}; use {allowed}")
  return variants


CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"   # the checkout's configs/


def load_config(name: str | pathlib.Path, arg: str | None = None):
  """`get_config(arg)` of config file `name` ("train_world2": configs/train_world2.py, or a
  path to a .py file), as `--config=<file>:<arg>` resolves it."""
  path = pathlib.Path(name)
  if path.suffix != ".py":
    path = CONFIGS_DIR / f"{name}.py"
  if not path.is_file():
    raise FileNotFoundError(f"config file {path} does not exist; name one of "
                            f"{sorted(p.stem for p in CONFIGS_DIR.glob('*.py'))} or a .py path")
  spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


def train_stage(num_steps: int, batch_size: int, lr: float, *, final_lr_fraction: float,
                **kw) -> ml_collections.ConfigDict:
  """One training stage's config (the keys `toy.train._fit` and `toy.train.lr_schedule` read:
  warm-up 100 steps, cosine decay to `final_lr_fraction` of `lr` (1.0: constant), no cool-down,
  AdamW weight decay 1e-4, a log line every 50 steps, a checkpoint every 250), updated by `kw`."""
  c = ml_collections.ConfigDict(dict(
      num_steps=num_steps, batch_size=batch_size, lr=lr, warmup_steps=100,
      weight_decay=1e-4, final_lr_fraction=final_lr_fraction, cooldown_steps=0,
      log_every=50, ckpt_every=250))
  c.update(kw)
  return c
