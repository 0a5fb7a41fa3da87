r"""Does world 2's generator read the shape word? (issue #23; `world2.conditioning`)

  python benchmarks/world2_conditioning_check.py --sd DIR --out docs/results/F.json

DIR is an exported SD-layout generator (`world2` export's sd/, or a preview export's:
benchmarks/world2_preview.py --out EXPORT writes EXPORT/sd). Writes the text-state and
noise-prediction separation of same-hue vs same-shape class prompts (`conditioning.separation`)
with the generator's provenance (EXPORT/preview.json when present: the UNet step).
"""
import argparse
import json
import pathlib
import shlex
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import evidence  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--sd", required=True, help="an SD-layout generator directory")
  p.add_argument("--latents", type=int, default=2, help="noisy latents per timestep")
  p.add_argument("--note", default="", help="what this generator is (kept in the JSON)")
  p.add_argument("--out", default="", help="results JSON")
  args = p.parse_args(argv)
  from jaxdiffattack.models import stable_diffusion  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.world2 import conditioning  # pylint: disable=g-import-not-at-top
  sd_dir = pathlib.Path(args.sd)
  sd, params = stable_diffusion.load_stable_diffusion(str(sd_dir))
  t0, c0 = time.time(), time.process_time()
  numbers = conditioning.separation(sd, params, num_latents=args.latents)
  preview = sd_dir.parent / "preview.json"
  record = {
      "command": shlex.join(["python", "benchmarks/world2_conditioning_check.py"]
                            + list(sys.argv[1:] if argv is None else argv)),
      "what": "does the generator's text conditioning carry the shape word? text-state and "
              "noise-prediction distances of same-hue (other shape) vs same-shape (other hue) "
              "class prompts (jaxdiffattack/world2/conditioning.py)",
      "note": args.note,
      "generator": json.loads(preview.read_text()) if preview.exists() else str(sd_dir),
      **numbers,
      "seconds": {"wall": round(time.time() - t0, 1), "cpu": round(time.process_time() - c0, 1)},
  }
  return evidence.emit(record, args.out)


if __name__ == "__main__":
  main()
