r"""How is world 2's generator doing while its UNet still trains? (issue #23)

  nice -n 15 python benchmarks/world2_preview.py --workdir /work/w2run/run2

(a) writes a preview export of the running training workdir (`world2.preview.preview_export`:
the UNet's latest EMA weights, vae_tune else vae, clip_tune else clip, vit/resnet when present;
never into the workdir) to --out (default: a temporary directory); (b) runs a small clean
failure census on it (`jaxdiffattack.census`, configs/census.py:world2 with the scene oracle
only: the evaluator is not trained yet): --classes (default all 83) × --kinds (default the
single-object short caption) × --seeds (8), DDIM --steps 20, guidance --guidance 7.5; (c) writes
the results JSON through benchmarks/evidence.py's `emit` (default
docs/results/world2_preview_unet_step<N>.json): the UNet step and every part's step, per kind
the oracle's holds / violated / unclear rates, the failure kinds, per-shape read rates, the
--top worst and best classes (`world2.preview.summarize`), and a captioned grid PNG next to it
(--grid_classes rows, spread from the worst class to the best; what the oracle read under each
image). An early UNet fails a lot: these numbers are a progress check, not the census.
"""
import argparse
import pathlib
import shlex
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import evidence  # pylint: disable=g-import-not-at-top,wrong-import-position


def census_config(args, sd_dir: pathlib.Path):
  """configs/census.py:world2 on the preview's sd/ directory, oracle only, with the flags."""
  from jaxdiffattack import variants  # pylint: disable=g-import-not-at-top
  c = variants.load_config("census", "world2")
  c.model = str(sd_dir)
  c.judges = ("world2_oracle",)
  c.classes = tuple(x.strip() for x in args.classes.split(",") if x.strip())
  c.kinds = tuple(x.strip() for x in args.kinds.split(",") if x.strip())
  c.seeds_per_prompt = args.seeds
  c.min_seeds = args.seeds
  c.num_steps = args.steps
  c.guidance_scale = args.guidance
  c.save_images = "all"
  c.microbatch = args.microbatch
  c.chunk_prompts = args.chunk_prompts
  return c


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", default="/work/w2run/run2", help="the world-2 training workdir")
  p.add_argument("--train_config", default="", help="configs/train_world2.py variant it runs")
  p.add_argument("--out", default="", help="preview export directory (default: temporary)")
  p.add_argument("--census_dir", default="", help="census workdir (default: temporary)")
  p.add_argument("--classes", default="", help="comma-separated class names (default: all)")
  p.add_argument("--kinds", default="single", help="census prompt kinds, comma-separated")
  p.add_argument("--seeds", type=int, default=8)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--guidance", type=float, default=7.5)
  p.add_argument("--microbatch", type=int, default=64)
  p.add_argument("--chunk_prompts", type=int, default=8)
  p.add_argument("--top", type=int, default=10, help="worst / best classes listed")
  p.add_argument("--grid_classes", type=int, default=12, help="rows of the grid PNG")
  p.add_argument("--results", default=str(ROOT / "docs" / "results" /
                                          "world2_preview_unet_step{step}.json"),
                 help="results JSON ({step}: the UNet step); the grid is <same stem>.png")
  args = p.parse_args(argv)
  from jaxdiffattack import census  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import io  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import variants  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.world2 import preview  # pylint: disable=g-import-not-at-top
  train_config = variants.load_config("train_world2", args.train_config or None)
  with tempfile.TemporaryDirectory(prefix="w2preview_run_") as tmp:
    out = pathlib.Path(args.out) if args.out else pathlib.Path(tmp) / "export"
    census_dir = pathlib.Path(args.census_dir) if args.census_dir else pathlib.Path(tmp) / "census"
    t0, c0 = time.time(), time.process_time()
    info = preview.preview_export(train_config, args.workdir, out)
    export_s, export_cpu = time.time() - t0, time.process_time() - c0
    config = census_config(args, out / "sd")
    t0, c0 = time.time(), time.process_time()
    ran = census.run(config, str(census_dir))
    census_s, census_cpu = time.time() - t0, time.process_time() - c0
    numbers = preview.summarize(ran["rows"], args.top)
    results = pathlib.Path(args.results.format(step=info.unet_step))
    grid_kind = config.kinds[0]
    png = results.with_suffix(".png")
    io.write_png(png, preview.grid(ran["rows"], census_dir,
                                   preview.grid_classes(numbers, args.grid_classes), grid_kind))
  record = {
      "command": shlex.join(["python", "benchmarks/world2_preview.py"]
                            + list(sys.argv[1:] if argv is None else argv)),
      "what": "a preview of world 2's generator while its UNet trains: a small clean census "
              "(oracle only) on the UNet's latest EMA checkpoint; not the census",
      "preview": info.record(),
      "unet_step": info.unet_step,
      "census": {"classes": len(config.classes) or 83, "kinds": list(config.kinds),
                 "seeds_per_prompt": config.seeds_per_prompt, "scheduler": config.scheduler,
                 "num_steps": config.num_steps, "guidance_scale": config.guidance_scale,
                 "judges": list(config.judges), "prompts": ran["summary"]["prompts"]},
      **numbers,
      "grid_png": png.name, "grid_kind": grid_kind,
      "seconds": {"export_wall": round(export_s, 1), "export_cpu": round(export_cpu, 1),
                  "census_wall": round(census_s, 1), "census_cpu": round(census_cpu, 1)},
  }
  return evidence.emit(record, str(results))


if __name__ == "__main__":
  main()
