r"""World 2's blind rating set and the scene oracle's agreement with it (issue #23 item 3).

All logic is in jaxdiffattack/world2/rating_set.py (its docstring says what each file holds).
Once world 2 is trained (docs/ratings/world2_v1/README.md):

  # 1. a census that saves passes too (every failure + seeds 0..3 of every prompt):
  python launch/census.py --config configs/census.py:world2 --config.save_images=sample \
      --workdir runs/census_world2
  # 2. the blind set: 40 holds, 40 violated, 20 unclear per prompt kind (300 images), split,
  #    sheets for raters A and B, the rating page, the guide:
  python benchmarks/world2_rating_set.py build --census runs/census_world2 \
      --out docs/ratings/world2_v1 --holds 40 --violated 40 --unclear 20 --raters A,B
  # 3. raters rate (docs/ratings/world2_v1/index.html, or the sheets) and export
  #    ratings_<rater>.json into docs/ratings/world2_v1/; then the agreement on the TEST part:
  python benchmarks/world2_rating_set.py measure --kit docs/ratings/world2_v1 \
      --out docs/results/world2_oracle_ratings.json

`measure --part tune` reports the tuning part (for threshold changes; never quote it as the
result). Dry run on the smoke world (seconds; $JAXDIFFATTACK_WORLD2_ASSETS = a smoke export):
  python launch/census.py --config configs/census.py:world2,smoke \
      --config.save_images=sample --config.sample_per_prompt=2 --workdir /tmp/w2census
  python benchmarks/world2_rating_set.py build --census /tmp/w2census --out /tmp/w2kit \
      --holds 3 --violated 3 --unclear 3
  python benchmarks/world2_rating_set.py measure --kit /tmp/w2kit --ratings R_A.json R_B.json
"""

import argparse
import pathlib
import shlex
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import evidence  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdiffattack.errors import UserError  # pylint: disable=wrong-import-position
from jaxdiffattack.world2 import rating_set  # pylint: disable=wrong-import-position


def main(argv) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest="cmd", required=True)
  b = sub.add_parser("build", help="census workdir(s) -> blind rating set")
  b.add_argument("--census", required=True, nargs="+", type=pathlib.Path)
  b.add_argument("--out", required=True, type=pathlib.Path)
  for verdict, default in (("holds", 40), ("violated", 40), ("unclear", 20)):
    b.add_argument(f"--{verdict}", type=int, default=default,
                   help=f"images per prompt kind whose census verdict is {verdict}")
  b.add_argument("--kinds", default=",".join(rating_set.KINDS))
  b.add_argument("--max-per-prompt", type=int, default=2)
  b.add_argument("--raters", default="A,B")
  b.add_argument("--run-id", default="world2_v1")
  b.add_argument("--seed", type=int, default=23)
  m = sub.add_parser("measure", help="ratings -> the oracle's agreement (test part)")
  m.add_argument("--kit", required=True, type=pathlib.Path)
  m.add_argument("--ratings", nargs="*", type=pathlib.Path,
                 help="ratings files (default: KIT/ratings_*.json)")
  m.add_argument("--part", default="test", choices=rating_set.PARTS)
  m.add_argument("--min-raters", type=int, default=2)
  m.add_argument("--out", default="", help="results JSON (benchmarks/evidence.py emit)")
  a = p.parse_args(argv)
  try:
    if a.cmd == "build":
      out = rating_set.build(a.census, a.out,
                             {"holds": a.holds, "violated": a.violated, "unclear": a.unclear},
                             a.seed, tuple(filter(None, a.kinds.split(","))), a.max_per_prompt,
                             tuple(filter(None, a.raters.split(","))), a.run_id)
      print(f"{len(out['items'])} items -> {a.out} (tune {len(out['split']['tune'])}, test "
            f"{len(out['split']['test'])}); strata: {out['strata']}")
    else:
      files = a.ratings if a.ratings else sorted(a.kit.glob("ratings_*.json"))
      result = rating_set.measure(a.kit, files, a.part, a.min_raters)
      evidence.emit({"command": shlex.join(["python", "benchmarks/world2_rating_set.py", *argv]),
                     **result}, a.out)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
