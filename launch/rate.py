r"""Blind human ratings of a run. Kept short: all logic is in jaxdiffattack.rate.

  python launch/rate.py --workdir RUN [--sample N] [--seed S]     # writes RUN/rating/index.html
  python launch/rate.py --workdir OUT --images DIR --prompts FILE # a plain folder of images
  python launch/rate.py --workdir RUN --ingest ratings_a.json ratings_b.json

The page opens from disk (file://RUN/rating/index.html); each rater exports a ratings JSON.
--prompts: a CSV with columns image,prompt (optional method,target) or a JSON {image: prompt}.
"""

import argparse
import sys

from jaxdiffattack import rate
from jaxdiffattack.errors import UserError


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="the run's workdir (or the kit's folder)")
  parser.add_argument("--sample", type=int, default=0, help="rate N random images (0: all)")
  parser.add_argument("--seed", type=int, default=0, help="seed of --sample")
  parser.add_argument("--images", help="a plain folder of images (with --prompts)")
  parser.add_argument("--prompts", help="CSV image,prompt or JSON {image: prompt}")
  parser.add_argument("--ingest", nargs="+", default=(), metavar="FILE",
                      help="exported ratings files to add as the run's human judge")
  args = parser.parse_args(argv)
  try:
    out = rate.run(args.workdir, ingest_files=args.ingest, sample=args.sample, seed=args.seed,
                   images=args.images, prompts=args.prompts)
  except UserError as e:
    sys.exit(f"error: {e}")
  if args.ingest:
    print(f"ingested {len(out['raters'])} raters' ratings of {out['rated_items']} items: "
          f"{args.workdir}/rating/report.md, {args.workdir}/judges/human.jsonl")
  else:
    print(f"{len(out['items'])} images to rate: open {args.workdir}/rating/index.html "
          f"(run id {out['run_id']})")


if __name__ == "__main__":
  main()
