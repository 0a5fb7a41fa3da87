"""What every launcher (launch/*.py) shares: flag errors as one line, like the jobs' own errors.

absl prints a wrong-typed override (`--config.num_steps=abc`) as two lines and an unknown config
key (`--config.nonexistent=1`) as a traceback from ml_collections; `run(main)` parses the flags so
that both (and every other flag error) end the launcher with one line `error: ...` and exit code 1,
without touching the workdir.
"""

import sys

from absl import app
from absl import flags


def _one_line(text) -> str:
  """`text` on one line; a traceback inside it (a config file that raised) is cut to its last
  line, the exception itself."""
  lines = str(text).splitlines()
  start = next((i for i, line in enumerate(lines) if "Traceback (most recent call last)" in line),
               None)
  if start is not None:
    lines = lines[:start] + lines[-1:]
  return " ".join(" ".join(lines).split())


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with every error ended as one line (exits non-zero)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {_one_line(e)} (see --helpfull)")
  except (AttributeError, KeyError) as e:   # ml_collections: an override of an unknown key
    key = _one_line(e).strip("\"'")
    given = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    flag = next((a for a in given if key in a.split(".")), "--config." + key)
    sys.exit(f"error: {flag}: the config has no key {key!r}; fix the name (a config's keys are "
             "the fields its config file sets)")


def run(main) -> None:
  """`absl.app.run(main)` with one-line flag errors (`parse_flags`)."""
  app.run(main, flags_parser=parse_flags)
