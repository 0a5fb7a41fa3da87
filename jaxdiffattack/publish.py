"""A study's results file under docs/results/, with its provenance (issue #26 item 5).

Every number the README states comes from a committed file that names the command, the date, the
machine and the code version. A job whose config names `results_file` (the world-2 `study`
variants) writes it itself at its end, from the files it just wrote into its workdir, so the
study is one command:

  * `write_pair(stem, summary, markdown)`: `<stem>.json` = provenance + the job's summary, and
    `<stem>.md` = a provenance header + the job's report (ATM: docs/results/atm_world2.{json,md});
  * `write_dir(dest, workdir, names)`: the listed workdir files copied into the folder `dest`,
    beside provenance.json (the sweep: docs/results/sweep_world2/, the analyses:
    docs/results/analysis_world2/).

Paths: "{workdir}" in `results_file` is replaced by the job's workdir (the smoke variants write
there, never into docs/); other relative paths are relative to the repository root. Files are
written atomically (`io`). Provenance has the same fields as benchmarks/evidence.py's `emit`:
"command" (this process's command line), "date_utc", "machine", "code_version" (git HEAD,
"+dirty" when tracked files changed), and "workdir".
"""

import os
import pathlib
import platform
import shlex
import subprocess
import sys
import time

from jaxdiffattack import io

ROOT = pathlib.Path(__file__).resolve().parent.parent


def code_version() -> str:
  """git HEAD of the checkout this package runs from ("+dirty": tracked files changed)."""
  def git(*args):
    try:
      return subprocess.run(["git", *args], capture_output=True, text=True, check=False,
                            cwd=ROOT).stdout.strip()
    except OSError:
      return ""
  head = git("rev-parse", "--short", "HEAD")
  if not head:
    return "unknown (not a git checkout)"
  return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> str:
  return (f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPU cores, "
          f"load average {os.getloadavg()[0]:.1f}")


def provenance(workdir) -> dict:
  return {"command": shlex.join([pathlib.Path(sys.executable).name, *sys.argv]),
          "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
          "machine": machine(), "code_version": code_version(),
          "workdir": str(pathlib.Path(workdir).resolve())}


def resolve(dest: str, workdir) -> pathlib.Path:
  """`dest` with "{workdir}" replaced; relative paths under the repository root."""
  path = pathlib.Path(str(dest).replace("{workdir}", str(workdir)))
  return path if path.is_absolute() else ROOT / path


def write_pair(stem: str, workdir, summary: dict, markdown: str) -> dict:
  """<stem>.json (provenance + "summary") and <stem>.md (provenance header + `markdown`)."""
  record = provenance(workdir)
  path = resolve(stem, workdir)
  io.write_json(path.with_name(path.name + ".json"), io.json_safe({**record, "summary": summary}))
  header = "\n".join([f"<!-- {k}: {v} -->" for k, v in record.items()]) + "\n\n"
  io.atomic_write_bytes(path.with_name(path.name + ".md"), (header + markdown).encode())
  return record


def write_dir(dest: str, workdir, names) -> dict:
  """The workdir files `names` copied into the folder `dest`, with provenance.json."""
  workdir = pathlib.Path(workdir)
  folder = resolve(dest, workdir)
  record = provenance(workdir) | {"files": list(names)}
  for name in names:
    io.atomic_write_bytes(folder / name, (workdir / name).read_bytes())
  io.write_json(folder / "provenance.json", record)
  return record
