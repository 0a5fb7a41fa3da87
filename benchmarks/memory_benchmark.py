r"""Device memory per member by gradient depth: XLA's compiled analysis, and the measured peak.

  python benchmarks/memory_benchmark.py --model=toy --out=/tmp/memory_toy.json
  python benchmarks/memory_benchmark.py --model=sd21 --resolution=256 --population=8 \
      --steps=50 --dtype=bfloat16 --out=memory_sd21_256.json          # on a GPU

For each program — the sampler's forward pass (with its judge fused, as the jobs run it), the
gradient w.r.t. the text embeddings through the last step and through every step with each step
rematerialised (`costs.GRAD_DEPTHS`), and one ATM attack iteration (θ [P, 77, 49408] with its
Adam state; per prompt) — `jaxdiffattack.costs.memory_cost` compiles it from shapes alone
(abstract params: no weights in memory) at two population sizes and splits its bytes into fixed
bytes (params, constants) and bytes per member. The judge is CLIP zero-shot margin over 1000
classes (ViT-B/16 image tower at 224², as ATM's; the toy CLIP for --model=toy), images resized
bilinearly to its input — the jobs' own preprocessing differs only in the resize filter.

--population > 0 also runs every program with random weights at that population and records
`device.memory_stats()["peak_bytes_in_use"]` after each (GPUs; programs run from the smallest
analysis up, so each peak is the high-water mark up to and including that program). CPU devices
report no memory statistics: there the file holds the analysis only and says so. The analysis of
a CPU compile approximates the GPU's (XLA's CPU and GPU compilers assign buffers differently).
"""

import json
import pathlib
import sys

from absl import app
from absl import flags
import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from memory_programs import PROGRAMS  # pylint: disable=g-import-not-at-top,wrong-import-position
from memory_programs import analyse  # pylint: disable=g-import-not-at-top,wrong-import-position
from memory_programs import measured_peaks  # pylint: disable=g-import-not-at-top,wrong-import-position
from memory_programs import provenance  # pylint: disable=g-import-not-at-top,wrong-import-position
from memory_programs import setup  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdiffattack import io  # pylint: disable=g-import-not-at-top,wrong-import-position

_MODEL = flags.DEFINE_enum("model", "toy", ["toy", "sd15", "sd21"], "Model shape.")
_RESOLUTION = flags.DEFINE_integer("resolution", None, "Image side (default: the model's).")
_POPULATION = flags.DEFINE_integer("population", 0, "Also run at this population and record "
                                   "the measured peak (GPUs; 0: analysis only).")
_STEPS = flags.DEFINE_integer("steps", 50, "Denoising steps.")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"], "Model dtype.")
_PROGRAMS = flags.DEFINE_list("programs", list(PROGRAMS), f"Subset of {PROGRAMS}.")
_OUT = flags.DEFINE_string("out", None, "JSON file to write.")


def main(argv):
  del argv
  unknown = sorted(set(_PROGRAMS.value) - set(PROGRAMS))
  if unknown:
    raise app.UsageError(f"--programs: unknown {unknown}; use {PROGRAMS}")
  s = setup(_MODEL.value, _RESOLUTION.value, _DTYPE.value, _STEPS.value)
  result = {"model": _MODEL.value, "resolution": _RESOLUTION.value or s.sd.image_size,
            "steps": _STEPS.value, "dtype": _DTYPE.value, **provenance(),
            "analysis": analyse(s, _PROGRAMS.value)}
  device = jax.local_devices()[0]
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if _POPULATION.value and stats and "peak_bytes_in_use" in stats:
    order = sorted(_PROGRAMS.value, key=lambda n: result["analysis"][n]["totals"][0])
    concrete = setup(_MODEL.value, _RESOLUTION.value, _DTYPE.value, _STEPS.value, abstract=False)
    result["population"] = _POPULATION.value
    result["peak_bytes_in_use"] = measured_peaks(concrete, _POPULATION.value, order)
    result["analysis_at_population"] = {
        n: result["analysis"][n]["fixed_bytes"] + _POPULATION.value *
        result["analysis"][n]["per_member_bytes"] for n in _PROGRAMS.value}
  else:
    result["peak_bytes_in_use"] = None
    result["note"] = (f"{device.platform} device reports no memory statistics: analysis only "
                      "(XLA's compiled memory analysis of a CPU compile approximates a GPU's)"
                      if not stats else "--population=0: analysis only")
  print(json.dumps(result, indent=1))
  if _OUT.value:
    io.write_json(_OUT.value, result)


if __name__ == "__main__":
  app.run(main)
