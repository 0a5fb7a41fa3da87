r"""Merges the JSON parts `gpu_suite.sh` wrote into one JSON file and one markdown table.

  python benchmarks/gpu_suite_report.py --parts=DIR/parts --out_dir=DIR

Reads `sampler.json` (benchmarks/sampler_benchmark.py: one row per attention implementation, the
PyTorch baselines) and `search.json` (benchmarks/search_benchmark.py with the loop), plus
`status.txt` (one "phase seconds exit-code" line per phase of the shell script), and writes
`gpu_suite.json` (everything, with the phases' status) and `gpu_suite.md` (the headline table). A
missing or failed part is reported as such, never silently dropped.
"""

import json
import pathlib

from absl import app
from absl import flags

from jaxdiffattack import io

_PARTS = flags.DEFINE_string("parts", None, "Directory of the suite's JSON parts.", required=True)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where gpu_suite.json / .md go.", required=True)


def _read(path: pathlib.Path):
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    return {"error": f"{path.name}: {type(e).__name__}"}


def _status(parts: pathlib.Path) -> dict:
  status = {}
  path = parts / "status.txt"
  if path.is_file():
    for line in path.read_text().splitlines():
      name, seconds, code = line.split()
      status[name] = {"seconds": float(seconds), "exit_code": int(code),
                      "timed_out": int(code) in (124, 137)}
  return status


def _fmt(value, spec: str) -> str:
  return "–" if value is None else format(value, spec)


def markdown(suite: dict) -> str:
  sampler, search = suite["sampler"], suite["search"]
  lines = [f"# GPU suite ({suite.get('device', '?')})", ""]
  if "error" in sampler:
    lines.append(f"Sampler: not measured ({sampler['error']}).")
  else:
    lines += [
        f"Sampler: model {sampler['model']}, population {sampler['population']}, "
        f"{sampler['steps']} {sampler['scheduler']} steps, CFG {sampler['guidance_scale']}, "
        f"{sampler['dtype']}; {sampler['jax']['flops_per_image'] / 1e12:.3g} TFLOP/image.", "",
        "| implementation | compile s | images/s | TFLOP/s | MFU |", "|---|---|---|---|---|"]
    for name, row in suite["sampler_rows"].items():
      lines.append(f"| {name} | {_fmt(row.get('compile_s'), '.1f')} | "
                   f"{_fmt(row.get('images_per_s'), '.2f')} | "
                   f"{_fmt(row.get('tflops_per_s'), '.1f')} | {_fmt(row.get('mfu'), '.1%')} |")
    torch = sampler.get("torch")
    if torch:
      lines += [f"| PyTorch diffusers batched ({torch['dtype']}) | – | "
                f"{torch['batched_images_per_s']:.2f} | – | – |",
                f"| PyTorch diffusers one by one | – | {torch['one_by_one_images_per_s']:.2f} | "
                "– | – |"]
  lines.append("")
  if "error" in search:
    lines.append(f"Search loop: not measured ({search['error']}).")
  else:
    lines += ["| search strategy | generations/s | images/s | ask/tell share | bound at peak |",
              "|---|---|---|---|---|"]
    for name, row in search.get("strategies", {}).items():
      lines.append(f"| {name} | {_fmt(row.get('generations_per_s'), '.3f')} | "
                   f"{_fmt(row.get('images_per_s'), '.2f')} | "
                   f"{_fmt(row.get('ask_tell_share'), '.2%')} | "
                   f"{_fmt(row.get('ask_tell_share_bound'), '.3%')} |")
  lines += ["", "| phase | seconds | exit code |", "|---|---|---|"]
  lines += [f"| {name} | {s['seconds']:.0f} | {s['exit_code']}"
            f"{' (timed out)' if s['timed_out'] else ''} |"
            for name, s in suite["phases"].items()]
  return "\n".join(lines) + "\n"


def build(parts: pathlib.Path) -> dict:
  sampler = _read(parts / "sampler.json")
  rows = {}
  if "error" not in sampler:
    rows[f"JAX, attention {sampler['attention']}"] = sampler["jax"]
    rows.update({f"JAX, attention {name[len('jax_'):]}": row for name, row in sampler.items()
                 if name.startswith("jax_") and isinstance(row, dict)})
  device = (parts / "device.txt").read_text().strip() if (parts / "device.txt").is_file() else None
  return {"device": device, "sampler": sampler, "sampler_rows": rows,
          "search": _read(parts / "search.json"), "phases": _status(parts)}


def main(argv):
  del argv
  suite = build(pathlib.Path(_PARTS.value))
  out = pathlib.Path(_OUT_DIR.value)
  io.write_json(out / "gpu_suite.json", suite)
  io.atomic_write_bytes(out / "gpu_suite.md", markdown(suite).encode())
  print(markdown(suite))


if __name__ == "__main__":
  app.run(main)
