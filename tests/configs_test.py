"""Every key of every config (each variant) can be overridden on the command line.

The overrides go through the launchers' own flag path (`config_flags.DEFINE_config_file`, parsed
by `cli.parse_flags`): for each config file and variant, one command line overrides every leaf
key at once with a value of the key's type that differs from its default, and the parsed config
must hold exactly those values. A list-valued key fails here (ml_collections cannot parse a list
from the command line): configs use tuples.
"""

import glob
import importlib.util
import os
import pathlib

from absl import flags
import ml_collections
from ml_collections import config_flags
import pytest

from jaxdiffattack import cli

_ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = sorted(glob.glob(str(_ROOT / "configs" / "*.py")))


def _module(path):
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _cases():
  """(config file, arg) for the default and every single variant that builds on its own."""
  for path in CONFIGS:
    module = _module(path)
    for arg in (None, *module.VARIANTS):
      try:
        module.get_config(arg)
      except ValueError:   # a variant that needs another beside it (shift_sweep's 'variance')
        continue
      yield path, arg


def _leaves(config, prefix=""):
  """(path, value) of every leaf; a list of ConfigDicts (the sweep's `settings`) is indexed
  as `settings[0].name`, which ml_collections parses."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f"{prefix}{key}.")
    elif isinstance(value, list) and value and all(
        isinstance(v, ml_collections.ConfigDict) for v in value):
      for i, item in enumerate(value):
        yield from _leaves(item, f"{prefix}{key}[{i}].")
    else:
      yield f"{prefix}{key}", value


def _get(config, path):
  for part in path.split("."):
    name, _, index = part.partition("[")
    config = config[name] if not index else config[name][int(index.rstrip("]"))]
  return config


def _other(config, key, value):
  """A value of `key`'s type unlike `value`, and how it is written on the command line."""
  if isinstance(value, bool):
    return (not value), str(not value)
  if isinstance(value, int):
    return value + 3, str(value + 3)
  if isinstance(value, float):
    return value + 0.5, repr(value + 0.5)
  if isinstance(value, str):
    return value + "_x", value + "_x"
  if isinstance(value, tuple):
    item = value[0] if value else "x"
    new = (_other(config, key, item)[0],) * 2
    return new, repr(new)
  if value is None:   # a placeholder: its field type says what it takes
    parent, _, name = key.rpartition(".")
    field_type = (_get(config, parent) if parent else config).get_ref(name).get_type()
    return {int: (7, "7"), float: (0.25, "0.25"), str: ("s", "s")}[field_type]
  raise AssertionError(f"{key}: a {type(value).__name__} cannot be written on the command line; "
                       "use a tuple, a number, a string or a bool")


@pytest.mark.parametrize("path,arg", list(_cases()),
                         ids=lambda x: os.path.basename(x) if isinstance(x, str) and x.endswith(
                             ".py") else str(x))
def test_every_key_can_be_overridden_on_the_command_line(path, arg, monkeypatch):
  spec = path + (f":{arg}" if arg else "")
  default = _module(path).get_config(arg)
  expected, argv = {}, ["launcher", f"--config={spec}"]
  for key, value in _leaves(default):
    expected[key], text = _other(default, key, value)
    argv.append(f"--config.{key}={text}")
  monkeypatch.setattr("sys.argv", argv)   # config_flags finds the overrides in sys.argv
  flag_values = flags.FlagValues()
  config = config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values,
                                           lock_config=True)
  flag_values(argv)
  for key, value in expected.items():
    assert _get(config.value, key) == value, (key, _get(config.value, key), value)


def test_a_list_valued_key_is_reported_by_name():
  config = ml_collections.ConfigDict({"prompts": ["a", "b"]})
  with pytest.raises(AssertionError, match="prompts: a list cannot be written"):
    _other(config, "prompts", config.prompts)


def test_quiet_third_party_silences_transformers_but_not_the_project(capfd):
  """After `cli` is imported, transformers' logger warnings and its deprecation warnings are
  gone; absl logging (the project's progress and warnings) still passes warnings, and a
  warning from the project's own modules still shows."""
  import warnings  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  cli.quiet_third_party()
  transformers.utils.logging.get_logger("transformers.models.clip").warning("NOT-FOR-THE-USER")
  with warnings.catch_warnings(record=True) as caught:
    cli.quiet_third_party()   # the filters are set inside catch_warnings' fresh state
    warnings.warn_explicit("use_fast is deprecated", FutureWarning, "x.py", 1,
                           module="transformers.image_processing_utils")
    warnings.warn_explicit("ours", UserWarning, "x.py", 1, module="jaxdiffattack.sweep")
  assert "NOT-FOR-THE-USER" not in capfd.readouterr().err
  assert not transformers.utils.logging.get_logger("transformers").isEnabledFor(30)  # WARNING
  assert logging.get_absl_logger().isEnabledFor(logging.converter.STANDARD_WARNING)
  assert [str(w.message) for w in caught] == ["ours"]
