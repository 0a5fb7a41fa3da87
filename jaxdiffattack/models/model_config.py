"""A model's `config.json` read into a typed, frozen dataclass, refusing what is not implemented.

A checkpoint's config decides what the network computes; a key the modules silently ignored would
load fine and compute something else. So every key of a config.json is one of:
  * a field of the dataclass (implemented; copied, lists become tuples),
  * `fixed`: a key the modules implement only at one value (or a few equivalent spellings):
    accepted there, refused with a one-line error at any other value,
  * `ignored`: metadata (`_class_name`, `_diffusers_version`, ...) or switches that do not change
    the numbers (e.g. diffusers Flax's `use_memory_efficient_attention`),
and anything else is an unknown option, refused with one line naming the file and the key.
The dataclasses are frozen and hold only hashable values, so a module holding one can be a static
argument of jitted functions.
"""

import dataclasses
import json
import pathlib
from typing import Any, Mapping

from jaxdiffattack.errors import ConfigError

# Metadata keys diffusers writes into every config.json.
METADATA_KEYS = frozenset({"_class_name", "_diffusers_version", "_name_or_path",
                           "_use_default_values"})


def _hashable(value):
  if isinstance(value, list):
    return tuple(_hashable(v) for v in value)
  return value


def from_dict(cls, raw: Mapping[str, Any], source, *, fixed: Mapping[str, Any] = None,
              ignored=frozenset(), **derived):
  """Builds dataclass `cls` from config dict `raw`; one-line ConfigError naming `source` and key.

  Args:
    cls: a frozen dataclass whose fields are the implemented keys.
    raw: the parsed config.json.
    source: where `raw` came from (a path), for messages.
    fixed: {key: tuple of the implemented values}; `None` stands for "absent / null".
    ignored: keys that are read and dropped (on top of METADATA_KEYS).
    **derived: field values not read from `raw` (computed by the caller, e.g. from
      `_class_name`).
  """
  fixed = fixed or {}
  names = {f.name for f in dataclasses.fields(cls)}
  values = {}
  for key, value in raw.items():
    if key in METADATA_KEYS or key in ignored:
      continue
    if key in fixed:
      if _hashable(value) not in fixed[key]:
        raise ConfigError(f"{source}: config {key}={value!r} is not supported; jaxdiffattack's "
                          f"{cls.__name__} implements only {key}={fixed[key][0]!r}")
      continue
    if key not in names or key in derived:
      raise ConfigError(f"{source}: unknown config option {key}={value!r}; jaxdiffattack's "
                        f"{cls.__name__} does not implement it (implemented: "
                        f"{', '.join(sorted(names - set(derived)))})")
    values[key] = _hashable(value)
  config = cls(**values, **derived)
  if hasattr(config, "validate"):
    config.validate(source)
  return config


def to_dict(config) -> dict[str, Any]:
  """The dataclass as config.json data (tuples as lists)."""
  def plain(value):
    return [plain(v) for v in value] if isinstance(value, tuple) else value
  return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def read_json(path) -> dict:
  """A config.json as a dict; one-line ConfigError if it is not JSON."""
  path = pathlib.Path(path)
  try:
    data = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConfigError(f"{path}: not a readable JSON config ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''})") from None
  if not isinstance(data, dict):
    raise ConfigError(f"{path}: holds a JSON {type(data).__name__}, not an object of options")
  return data


def require(condition: bool, source, key: str, value, allowed: str) -> None:
  """One-line ConfigError '<source>: config <key>=<value> is invalid: <allowed>'."""
  if not condition:
    raise ConfigError(f"{source}: config {key}={value!r} is invalid: {allowed}")


def checker(config, source):
  """req(ok, key, allowed): `require` on `config`'s value of `key`."""
  return lambda ok, key, allowed: require(ok, source, key, getattr(config, key), allowed)


def check_channels(config, source) -> None:
  """`block_out_channels`: positive ints; `norm_num_groups` divides each (UNet and VAE)."""
  req = checker(config, source)
  channels = config.block_out_channels
  req(len(channels) >= 1 and all(isinstance(c, int) and c > 0 for c in channels),
      "block_out_channels", "give a non-empty list of positive ints")
  req(all(c % config.norm_num_groups == 0 for c in channels), "norm_num_groups",
      f"must divide every entry of block_out_channels {channels}")


def per_block(value, num_blocks: int, source, key: str) -> tuple:
  """An int/bool or a per-block list as a tuple of length `num_blocks`."""
  if isinstance(value, tuple):
    require(len(value) == num_blocks, source, key, list(value),
            f"give one value or one per block ({num_blocks})")
    return value
  return (value,) * num_blocks


__all__ = ["METADATA_KEYS", "check_channels", "checker", "from_dict", "per_block", "read_json",
           "require", "to_dict"]
