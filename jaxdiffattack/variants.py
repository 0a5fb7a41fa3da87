"""The one parser of config variants: `configs/<job>.py:<variant>,<variant>` (big_vision style).

Every `configs/*.py` calls `parse(arg, VARIANTS, __file__)` first; an unknown variant is an error
naming the config file and the allowed ones.
"""

import pathlib


def parse(arg: str | None, allowed: tuple[str, ...], config_file: str) -> list[str]:
  """The comma-separated variants of `arg` (in order); ValueError for one not in `allowed`."""
  variants = [v for v in (arg or "").split(",") if v]
  for v in variants:
    if v not in allowed:
      name = pathlib.Path(config_file)
      name = f"{name.parent.name}/{name.name}" if name.parent.name else name.name
      raise ValueError(f"unknown variant {v!r} in {name}:{arg}; use {allowed}")
  return variants
