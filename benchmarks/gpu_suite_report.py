r"""Merges the JSON parts `gpu_suite.sh` wrote into one JSON file and one markdown table.

  python3 benchmarks/gpu_suite_report.py --parts=WORK/parts --out_dir=OUT

Standard library only (it runs after every phase, also when a phase broke the environment).
Reads from --parts: `env.json` (benchmarks/gpu_suite_env.py), `sampler_jax.json` and
`sampler_torch.json` (benchmarks/sampler_benchmark.py, JAX and PyTorch in their own processes),
`attack_jax.json` and `attack_torch.json` (benchmarks/attack_scale_benchmark.py), `search.json`
(benchmarks/search_benchmark.py with the loop), `memory.json` (the memory phase's slot, see
gpu_suite.sh) and `status.txt` (one "phase seconds exit-code limit-seconds" line per phase run or
skipped). Writes `gpu_suite.json` (everything, with each phase's status) and `gpu_suite.md` (the
tables) atomically. A missing or failed part is reported as such, never silently dropped.
"""

import argparse
import json
import os
import pathlib
import tempfile

PARTS = ("env", "sampler_jax", "sampler_torch", "attack_jax", "attack_torch", "search", "memory")


def _read(path: pathlib.Path):
  if not path.is_file():
    return {"error": "not written"}
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    return {"error": f"{path.name}: {type(e).__name__}"}


def _status(parts: pathlib.Path) -> dict:
  """{phase: {seconds, exit_code, limit_s, timed_out, skipped}} from status.txt."""
  status = {}
  path = parts / "status.txt"
  if path.is_file():
    for line in path.read_text().splitlines():
      fields = line.split()
      if len(fields) != 4:
        continue
      name, seconds, code, limit = fields
      skipped = code == "skipped"
      status[name] = {"seconds": float(seconds), "exit_code": None if skipped else int(code),
                      "limit_s": float(limit), "skipped": skipped,
                      "timed_out": not skipped and int(code) in (124, 137)}
  return status


def _fmt(value, spec: str) -> str:
  return "–" if value is None else format(value, spec)


def build(parts: pathlib.Path) -> dict:
  suite = {name: _read(parts / f"{name}.json") for name in PARTS}
  suite["phases"] = _status(parts)
  env = suite["env"]
  suite["device"] = env.get("device") if "error" not in env else None
  return suite


def _sampler_lines(jax_part: dict, torch_part: dict) -> list[str]:
  if "error" in jax_part and "error" in torch_part:
    return [f"Sampler: not measured ({jax_part['error']}; PyTorch: {torch_part['error']})."]
  lines = []
  head = jax_part if "error" not in jax_part else torch_part
  lines += [f"Sampler: model {head['model']}, population {head['population']}, "
            f"{head['steps']} {head['scheduler']} steps, CFG {head['guidance_scale']}, "
            f"{head['dtype']}" + (f"; {jax_part['jax']['flops_per_image'] / 1e12:.3g} "
                                  "TFLOP/image (XLA cost analysis)." if "jax" in jax_part
                                  else "."), "",
            "| sampler | compile s | images/s | TFLOP/s | MFU | max image diff |",
            "|---|---|---|---|---|---|"]
  if "error" in jax_part:
    lines.append(f"| JAX | not measured ({jax_part['error']}) | | | | |")
  else:
    rows = {f"JAX, attention {jax_part['attention']}": jax_part["jax"]}
    rows.update({f"JAX, attention {name[len('jax_'):]}": row for name, row in jax_part.items()
                 if name.startswith("jax_") and isinstance(row, dict)})
    for name, row in rows.items():
      lines.append(f"| {name} | {_fmt(row.get('compile_s'), '.1f')} | "
                   f"{_fmt(row.get('images_per_s'), '.2f')} | "
                   f"{_fmt(row.get('tflops_per_s'), '.1f')} | {_fmt(row.get('mfu'), '.1%')} | "
                   f"{_fmt(row.get('max_image_difference'), '.2g')} |")
  torch = torch_part.get("torch")
  if torch:
    lines += [f"| PyTorch diffusers batched ({torch['device']}, {torch['dtype']}) | – | "
              f"{torch['batched_images_per_s']:.2f} | – | – | – |",
              f"| PyTorch diffusers one by one | – | {torch['one_by_one_images_per_s']:.2f} | "
              "– | – | – |"]
  else:
    lines.append(f"| PyTorch diffusers | not measured ({torch_part.get('error', '?')}) "
                 "| | | | |")
  sites = jax_part.get("attention_sites")
  if sites:
    lines += ["", f"cuDNN attention (rule of `models/attention.py`, head dim ≤ "
              f"{sites['max_head_dim']} here): cuDNN at {sites['cudnn_sites']} of "
              f"{sites['sites']} call sites; " + "; ".join(
                  f"{k} ×{v}" for k, v in sorted(sites["counts"].items())) + "."]
  return lines


def _attack_lines(jax_part: dict, torch_part: dict) -> list[str]:
  if "error" in jax_part and "error" in torch_part:
    return [f"ATM attack: not measured ({jax_part['error']}; PyTorch: {torch_part['error']})."]
  head = jax_part if "error" not in jax_part else torch_part
  lines = [f"ATM attack: model {head['model']} at {head['image_size']}², {head['steps']} DDIM "
           f"steps, CFG {head['guidance_scale']}, {head['dtype']}, {head['free_tokens']} free "
           "tokens per prompt.", "",
           "| attack | prompts | compile s | s/iteration | prompt-iterations/s | "
           "temp MB/prompt | × PyTorch |", "|---|---|---|---|---|---|---|"]
  torch_rate = torch_part.get("prompt_iterations_per_s")
  for row in jax_part.get("jax", []):
    rate = row["prompt_iterations_per_s"]
    lines.append(f"| JAX, gradient depth {row['depth']} | {row['prompts']} | "
                 f"{row['compile_s']:.1f} | {row['s_per_iteration']:.3f} | {rate:.3f} | "
                 f"{_fmt(row.get('temp_mb_per_prompt'), '.0f')} | "
                 f"{_fmt(rate / torch_rate if torch_rate else None, '.2f')} |")
  if "error" in jax_part:
    lines.append(f"| JAX | not measured ({jax_part['error']}) | | | | | |")
  if torch_rate:
    lines.append(f"| PyTorch one prompt at a time, last step ({torch_part['device']}) | 1 | – | "
                 f"{1 / torch_rate:.3f} | {torch_rate:.3f} | – | 1.00 |")
  else:
    lines.append(f"| PyTorch | not measured ({torch_part.get('error', '?')}) | | | | | |")
  return lines


def _search_lines(search: dict) -> list[str]:
  if "error" in search:
    return [f"Search loop: not measured ({search['error']})."]
  lines = ["| search strategy | generations/s | images/s | ask/tell share | bound at peak |",
           "|---|---|---|---|---|"]
  for name, row in search.get("strategies", {}).items():
    lines.append(f"| {name} | {_fmt(row.get('generations_per_s'), '.3f')} | "
                 f"{_fmt(row.get('images_per_s'), '.2f')} | "
                 f"{_fmt(row.get('ask_tell_share'), '.2%')} | "
                 f"{_fmt(row.get('ask_tell_share_bound'), '.3%')} |")
  return lines


def markdown(suite: dict) -> str:
  env = suite["env"]
  versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
  lines = [f"# GPU suite ({suite.get('device') or '?'})", ""]
  if versions:
    lines += [versions, ""]
  lines += _sampler_lines(suite["sampler_jax"], suite["sampler_torch"]) + [""]
  lines += _attack_lines(suite["attack_jax"], suite["attack_torch"]) + [""]
  lines += _search_lines(suite["search"]) + [""]
  memory = suite["memory"]
  if "error" not in memory and memory.get("analysis"):
    peaks = memory.get("peak_bytes_in_use") or {}
    lines += [f"Memory ({memory.get('model')} {memory.get('resolution')}², "
              f"{memory.get('dtype')}; XLA's compiled analysis, measured peak at population "
              f"{memory.get('population', '-')}):", "",
              "| program | MiB per member | fixed GiB | peak GiB |", "|---|---|---|---|"]
    for name, entry in memory["analysis"].items():
      peak = f"{peaks[name] / 2**30:.2f}" if name in peaks else "-"
      lines.append(f"| {name} | {entry['per_member_bytes'] / 2**20:.1f} | "
                   f"{entry['fixed_bytes'] / 2**30:.2f} | {peak} |")
    lines.append("")
  lines += ["| phase | seconds | limit s | exit code |", "|---|---|---|---|"]
  for name, s in suite["phases"].items():
    code = "skipped (suite budget spent)" if s["skipped"] else (
        f"{s['exit_code']}{' (timed out)' if s['timed_out'] else ''}")
    lines.append(f"| {name} | {s['seconds']:.0f} | {s['limit_s']:.0f} | {code} |")
  return "\n".join(lines) + "\n"


def _atomic_write(path: pathlib.Path, data: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  with os.fdopen(fd, "w") as f:
    f.write(data)
  os.chmod(tmp, 0o644)
  os.replace(tmp, path)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--parts", required=True, help="Directory of the suite's JSON parts.")
  parser.add_argument("--out_dir", required=True, help="Where gpu_suite.json / .md go.")
  parser.add_argument("--quiet", action="store_true", help="Do not print the table.")
  args = parser.parse_args()
  suite = build(pathlib.Path(args.parts))
  out = pathlib.Path(args.out_dir)
  _atomic_write(out / "gpu_suite.json", json.dumps(suite, indent=2, sort_keys=True) + "\n")
  table = markdown(suite)
  _atomic_write(out / "gpu_suite.md", table)
  if not args.quiet:
    print(table)


if __name__ == "__main__":
  main()
