r"""The world-2 oracle's agreement with the truth on rendered scenes: tuning and test splits.

  nice -n 5 python benchmarks/world2_oracle.py --out docs/results/world2_oracle.json

The thresholds in jaxdiffattack/world2/oracle.py were set by looking at the "tune" split only;
the "test" split (a disjoint seed stream) is measured once here. Each scene is judged against
its true facts and against a caption with one fact made false (`world2.oracle_eval`). The
same is measured at smaller image sizes on fewer scenes (`--low_res_sizes`): how readable the
world stays at 32² and 48² (the resolution choice, docs/world2_model_card.md).
"""
import json
import platform
import subprocess
import sys
import time
import pathlib

from absl import app
from absl import flags

from jaxdiffattack.io import write_json
from jaxdiffattack.world2 import oracle_eval

_OUT = flags.DEFINE_string("out", "", "results JSON (printed when empty)")
_SIZE = flags.DEFINE_integer("size", 64, "image size of the main measurement")
_TUNE = flags.DEFINE_integer("tune", 300, "scenes of the tune split")
_TEST = flags.DEFINE_integer("test", 1000, "scenes of the test split")
_LOW = flags.DEFINE_list("low_res_sizes", ["32", "48"], "smaller sizes (test split)")
_LOW_N = flags.DEFINE_integer("low_res_scenes", 200, "scenes per smaller size")


def main(argv):
  del argv
  t0 = time.time()
  out = {"command": "python " + " ".join(sys.argv),
         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
         "machine": f"{platform.machine()} (2-core shared CPU)",
         "code_version": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True,
                                        cwd=pathlib.Path(__file__).parent).stdout.strip()}
  out["tune"] = oracle_eval.evaluate("tune", _TUNE.value, _SIZE.value)
  print(json.dumps(out["tune"]["overall"]), flush=True)
  out["test"] = oracle_eval.evaluate("test", _TEST.value, _SIZE.value)
  print(json.dumps(out["test"]["overall"]), flush=True)
  out["low_res"] = {}
  for size in map(int, _LOW.value):
    out["low_res"][size] = oracle_eval.evaluate("test", _LOW_N.value, size)
    print(size, json.dumps(out["low_res"][size]["objects"]), flush=True)
  out["seconds"] = round(time.time() - t0)
  if _OUT.value:
    write_json(_OUT.value, out)
  else:
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
  app.run(main)
