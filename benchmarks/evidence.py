"""Runs one job command and commits its outputs as a results file with provenance (issue #26).

Every number the README states must come from a file under docs/results/ that names the command,
the date, the machine and the code version. This wraps any job:

  python benchmarks/evidence.py --name analysis_toy --workdir runs/analysis_toy \
      --copy report.md,analysis.json -- python launch/analyze.py \
      --config configs/analysis.py:toy --workdir runs/analysis_toy

runs the command (unless --norun: only collect), then writes docs/results/<name>/ with the listed
workdir files and provenance.json: {"command", "date" (UTC), "machine" (host, CPU count, load
average at start and end), "code_version" (git HEAD, "+dirty" when the tree has changes),
"wall_s", "returncode"}. A command that fails writes provenance.json with its return code and
copies nothing.
"""

import argparse
import datetime
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


# Provenance fields shared with the jobs that publish their own results (jaxdiffattack.publish).
sys.path.insert(0, str(ROOT))
from jaxdiffattack.publish import code_version  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdiffattack.publish import machine  # pylint: disable=g-import-not-at-top,wrong-import-position


def emit(out: dict, path: str = "") -> dict:
  """A benchmark's results dict with its provenance added ("date_utc", "machine",
  "code_version"; the benchmark gives "command"), printed, and written atomically to `path`
  when given."""
  from jaxdiffattack.io import write_json  # pylint: disable=g-import-not-at-top
  out = {**out, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         "machine": machine(), "code_version": code_version()}
  print(json.dumps(out, indent=2))
  if path:
    write_json(path, out)
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--name", required=True, help="docs/results/<name>/")
  parser.add_argument("--workdir", required=True, help="the job's workdir")
  parser.add_argument("--copy", default="", help="comma-separated files of the workdir to keep")
  parser.add_argument("--norun", action="store_true", help="collect an existing workdir")
  parser.add_argument("--out", default=str(ROOT / "docs" / "results"))
  parser.add_argument("command", nargs=argparse.REMAINDER)
  args = parser.parse_args(argv)
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command:
    parser.error("give the job command after --")
  out = pathlib.Path(args.out) / args.name
  record = {"command": shlex.join(command), "date": datetime.datetime.now(
      datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "code_version": code_version()}
  start = time.time()
  rc = 0 if args.norun else subprocess.run(command, cwd=ROOT, check=False).returncode
  record |= {"wall_s": None if args.norun else round(time.time() - start, 1), "returncode": rc,
             "machine_at_end": machine()}
  out.mkdir(parents=True, exist_ok=True)
  copied = []
  if rc == 0:
    for name in filter(None, args.copy.split(",")):
      src = pathlib.Path(args.workdir) / name
      if not src.is_file():
        print(f"error: {src} was not written by the command", file=sys.stderr)
        rc = 1
        continue
      dst = out / name
      dst.parent.mkdir(parents=True, exist_ok=True)
      shutil.copyfile(src, dst)
      copied.append(name)
  record["files"] = copied
  (out / "provenance.json").write_text(json.dumps(record, indent=1) + "\n")
  print(json.dumps(record))
  return rc


if __name__ == "__main__":
  sys.exit(main())
