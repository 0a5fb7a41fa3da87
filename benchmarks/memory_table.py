r"""The README's memory table: bytes per member and the auto microbatch on 80 GB and 141 GB cards.

  nice -n 5 python benchmarks/memory_table.py --out=docs/results/memory_table

Rows: SD 1.5 at 512², SD 2.1 (768-v shape: v-prediction, OpenCLIP ViT-H text tower of 23 layers
× 1024, heads of dimension 64 with linear projections) at 256² and 512²; bfloat16, 50 DDIM steps
with guidance, CLIP ViT-B/16 zero-shot judge fused (`memory_programs.py`). Columns: device bytes
per member (image, or prompt for ATM) of the forward sampler, the gradient through the last step,
through every step with remat, and one ATM iteration (θ [77, 49408] + Adam state per prompt), each
from XLA's compiled memory analysis at populations 1 and 2 (`costs.memory_cost`), and the
microbatch `microbatch="auto"` would start from on each card: the most members whose line
fixed + m · per-member fits `costs.DEVICE_HEADROOM` (90 %) of the card's nominal memory (the job's
auto mode then confirms it by compiling m and m + 1). Compiled here on CPU: CPU and GPU compilers
assign buffers differently, so these numbers approximate a GPU's (the GPU suite's memory phase
measures both there). Writes <out>.json (after every program — programs in the outer loop, so
every row gets its forward pass first — so a stopped run keeps what it had; a rerun skips the
programs already in the file) and <out>.md.
"""

import json
import math
import pathlib
import sys

from absl import app
from absl import flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import memory_programs  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdiffattack import costs  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdiffattack import io  # pylint: disable=g-import-not-at-top,wrong-import-position

ROWS = (("sd15", 512), ("sd21", 256), ("sd21", 512))
CARDS_GB = (80, 141)
LABELS = {"forward": "forward", "grad_last": "grad, last step",
          "grad_all_remat": "grad, all steps + remat", "atm_step": "ATM step (per prompt)"}

_OUT = flags.DEFINE_string("out", "docs/results/memory_table", "Output path without suffix.")
_STEPS = flags.DEFINE_integer("steps", 50, "Denoising steps.")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"], "Model dtype.")
_ROWS = flags.DEFINE_list("rows", [f"{m}@{r}" for m, r in ROWS], "model@resolution rows.")


def auto_microbatch(entry: dict, card_gb: float) -> int:
  budget = costs.DEVICE_HEADROOM * card_gb * costs.GB
  return max(0, math.floor((budget - entry["fixed_bytes"]) / entry["per_member_bytes"]))


def markdown(table: dict) -> str:
  gib = lambda b: f"{b / 2**30:.2f}"
  lines = [f"Device memory per member (GiB) and the auto microbatch (members per device) on "
           f"{' / '.join(f'{c} GB' for c in CARDS_GB)} cards; {table['dtype']}, "
           f"{table['steps']} DDIM steps, CFG, CLIP ViT-B/16 judge fused. XLA's compiled memory "
           "analysis of CPU compiles (approximates a GPU's); fixed GiB: bytes that do not grow "
           "with the population (params, constants).",
           "", "| model | program | GiB per member | fixed GiB | auto microbatch "
           f"{' / '.join(f'{c} GB' for c in CARDS_GB)} | compile s |", "|---|---|---|---|---|---|"]
  for row, programs in table["rows"].items():
    for name, label in LABELS.items():
      if name not in programs:
        continue
      e = programs[name]
      mbs = " / ".join(str(auto_microbatch(e, c)) for c in CARDS_GB)
      lines.append(f"| {row} | {label} | {gib(e['per_member_bytes'])} | {gib(e['fixed_bytes'])}"
                   f" | {mbs} | {e['compile_s']} |")
  missing = [f"{row} {LABELS[n]}" for row, programs in table["rows"].items()
             for n in LABELS if n not in programs]
  if missing:
    lines += ["", f"Not computed yet: {', '.join(missing)} (rerun the command: it resumes)."]
  if table.get("note"):
    lines += ["", table["note"]]
  lines += ["", f"Command: `{table['command']}`; {table['date']}; {table['machine']}; jax "
            f"{table['jax']}; git {table['git_revision'][:12]}."]
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  out = pathlib.Path(_OUT.value)
  path = out.with_suffix(".json")
  table = json.loads(path.read_text()) if path.is_file() else {"rows": {}}
  table.update(steps=_STEPS.value, dtype=_DTYPE.value, cards_gb=list(CARDS_GB),
               headroom=costs.DEVICE_HEADROOM, **memory_programs.provenance())
  setups = {}
  for name in memory_programs.PROGRAMS:       # program-major: every row gets its forward first
    for row in _ROWS.value:
      model, resolution = row.split("@")
      done = table["rows"].setdefault(f"{model} {resolution}²", {})
      if name in done:
        continue
      if row not in setups:
        setups[row] = memory_programs.setup(model, int(resolution), _DTYPE.value, _STEPS.value)
      done.update(memory_programs.analyse(setups[row], (name,)))
      for card in CARDS_GB:
        done[name][f"auto_microbatch_{card}gb"] = auto_microbatch(done[name], card)
      table["elapsed_s"] = round(table.get("elapsed_s", 0) + done[name]["compile_s"], 1)
      io.write_json(path, table)
      io.atomic_write_bytes(out.with_suffix(".md"), markdown(table).encode())
  print(markdown(table))


if __name__ == "__main__":
  app.run(main)
