"""What every launcher (launch/*.py) shares: the flags, one-line errors, quiet third-party libraries.

A job launcher is one call, `cli.main(run)`: it defines `--config` (a locked config file) and
`--workdir`, the multi-host flags (`distributed.define_flags`), starts the distributed runtime,
calls `run(config, workdir)` and, on process 0, prints `console(out, workdir)` when given. A
`UserError` from the job ends it with one line `error: ...` and exit code 1.

Third-party messages that are not the user's concern are silenced when this module is imported
(launchers import it first, before any job module imports transformers): transformers' logger
below errors ("None of PyTorch, TensorFlow >= 2.0, or Flax have been found", advisory notes) and
its FutureWarning/UserWarning deprecations (`use_fast`, ...). The project's own messages (absl
logging, progress lines, errors) are unchanged.

absl prints a wrong-typed override (`--config.num_steps=abc`) as two lines and an unknown config
key (`--config.nonexistent=1`) as a traceback from ml_collections; `run_main` parses the flags so
that both (and every other flag error) end the launcher with one line `error: ...` and exit code 1,
without touching the workdir.
"""

import os
import sys
from typing import Any, Callable
import warnings

from absl import app
from absl import flags
from ml_collections import config_flags

from jaxdiffattack import distributed
from jaxdiffattack.errors import UserError

THIRD_PARTY = ("transformers", "huggingface_hub", "tokenizers")


def quiet_third_party() -> None:
  """Silences the warnings of `THIRD_PARTY` libraries (their loggers: errors only)."""
  os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
  os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
  for name in THIRD_PARTY:
    warnings.filterwarnings("ignore", module=rf"{name}(\.|$)")
  if "transformers" in sys.modules:   # imported before us: its logger reads the variable once
    sys.modules["transformers"].utils.logging.set_verbosity_error()


quiet_third_party()


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


def run_main(main) -> None:
  """`absl.app.run(main)` with one-line flag errors (`parse_flags`)."""
  app.run(main, flags_parser=parse_flags)


def main(run: Callable[[Any, str], Any],
         console: Callable[[Any, str], str] | None = None) -> None:
  """The whole launcher of a job: flags, distributed start, `run(config, workdir)`, the console
  summary. `run` and `console` are called only after the distributed runtime has started (pass
  lambdas over lazily imported modules such as `jaxdiffattack.search`)."""
  config = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "Directory for outputs.")
  flags.mark_flags_as_required(["config", "workdir"])
  distributed.define_flags()

  def job(argv):
    if len(argv) > 1:
      sys.exit(f"error: unexpected arguments {argv[1:]}; give every setting as --config.KEY=VALUE")
    try:
      distributed.initialize_from_flags()
      out = run(config.value, workdir.value)
      if console is not None and distributed.is_writer():
        print(console(out, workdir.value))
    except UserError as e:
      sys.exit(f"error: {e}")

  run_main(job)
