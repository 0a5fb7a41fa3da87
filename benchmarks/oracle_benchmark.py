r"""Speed of the toy world's oracle (`jaxdiffattack.toy.oracle.read`) on one CPU core.

  taskset -c 0 python benchmarks/oracle_benchmark.py --num_images=1000 --repeats=3

Reads held-out single-object and two-object scenes (rendered once, not timed) and reports, for
each kind, the median over --repeats of the wall and CPU seconds per call and the images read
per second (the first call, which also builds the shape templates, is timed apart). Pin the
process to one core (`taskset`) to measure one core; NumPy's BLAS may otherwise use more.
"""

import json
import statistics
import time

from absl import app
from absl import flags

from jaxdiffattack import io
from jaxdiffattack.toy import oracle
from jaxdiffattack.toy import world

_NUM = flags.DEFINE_integer("num_images", 1000, "Images of each kind.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls after the first.")
_OUT = flags.DEFINE_string("out", None, "Optional JSON file for the figures.")


def _time(fn) -> tuple[float, float]:
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - wall, time.process_time() - cpu


def main(argv):
  del argv
  result = {"num_images": _NUM.value}
  for kind, data in (("single", world.make_dataset("heldout", _NUM.value)),
                     ("pair", world.make_dataset("heldout", 0, _NUM.value))):
    first_s, _ = _time(lambda: oracle.read(data.images))
    runs = [_time(lambda: oracle.read(data.images)) for _ in range(_REPEATS.value)]
    wall = statistics.median(r[0] for r in runs)
    result[kind] = {"first_call_s": round(first_s, 3), "wall_s": round(wall, 3),
                    "cpu_s": round(statistics.median(r[1] for r in runs), 3),
                    "images_per_s": round(_NUM.value / wall, 1)}
  print(json.dumps(result, indent=2))
  if _OUT.value:
    io.write_json(_OUT.value, result)


if __name__ == "__main__":
  app.run(main)
