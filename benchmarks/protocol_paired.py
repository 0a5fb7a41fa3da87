"""Re-reads a committed protocol.json and recomputes its comparison with random as a paired one.

The search protocol compared each method with random on the same targets using Newcombe's
interval for independent samples; the targets are shared, so the paired interval applies
(`stats.paired_table_interval`, Newcombe 1998 paired square-and-add; McNemar's exact test is
unchanged). protocol.json holds, per method and judge, the targets failed by the method and by
random and the discordant counts, which determine the paired 2×2 table: nothing is re-run.

  python benchmarks/protocol_paired.py docs/results/search_protocol.json \
      --out docs/results/search_protocol_paired
"""

import argparse
import datetime
import json
import pathlib
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from jaxdiffattack import stats  # pylint: disable=g-import-not-at-top,wrong-import-position


def paired_rows(protocol: dict) -> list[dict]:
  rows = []
  for method, per in protocol["vs_random"].items():
    for judge, v in per.items():
      n, only_a, only_b = v["targets"], v["only_method"], v["only_random"]
      both = v["method"] - only_a
      neither = n - both - only_a - only_b
      d, low, high = stats.paired_table_interval(both, only_a, only_b, neither)
      rows.append({"method": method, "judge": judge, "targets": n, "method_failed": v["method"],
                   "random_failed": v["random"], "both": both, "only_method": only_a,
                   "only_random": only_b, "neither": neither, "difference": d,
                   "paired_ci95": [low, high],
                   "independent_ci95_as_committed": v["difference_ci95"],
                   "mcnemar_p": stats.mcnemar_exact(only_a, only_b),
                   "beats_random": bool(low > 0)})
  return rows


def _pct(x):
  return f"{100 * x:+.1f}"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("protocol_json")
  parser.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
  args = parser.parse_args(argv)
  protocol = json.loads(pathlib.Path(args.protocol_json).read_text())
  rows = paired_rows(protocol)
  revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
  record = {"command": " ".join(["python", "benchmarks/protocol_paired.py", *sys.argv[1:]]),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": "any (arithmetic on the committed JSON, no model run)",
            "code_version": revision, "source": args.protocol_json, "rows": rows}
  out = pathlib.Path(args.out)
  out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
  lines = [f"# {args.protocol_json}: the comparison with random, paired", "",
           f"Command: `{record['command']}`; {record['date']}; code {revision}. Same targets for "
           "both methods, so the difference of rates gets Newcombe's paired interval (square-and-"
           "add with the pairs' correlation); the committed interval treated the two rates as "
           "independent samples. Points (×100).", "",
           "| method | judge | failed: method / random of n | both / only method / only random "
           "/ neither | difference | paired 95 % CI | independent CI (committed) | McNemar p |",
           "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    ind = r["independent_ci95_as_committed"]
    lines.append(
        f"| {r['method']} | {r['judge']} | {r['method_failed']} / {r['random_failed']} of "
        f"{r['targets']} | {r['both']} / {r['only_method']} / {r['only_random']} / "
        f"{r['neither']} | {_pct(r['difference'])} | [{_pct(r['paired_ci95'][0])}, "
        f"{_pct(r['paired_ci95'][1])}] | [{_pct(ind[0])}, {_pct(ind[1])}] | "
        f"{r['mcnemar_p']:.3g} |")
  out.with_suffix(".md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
