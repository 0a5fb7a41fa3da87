r"""Does fine detail survive world 2's VAE? The oracle on test scenes vs their VAE round trips.

  nice -n 0 python benchmarks/world2_vae_check.py --workdir /work/w2run/run --n=100 \
      --out docs/results/world2_vae_check.json

Loads the VAE checkpoint of a (possibly unfinished) world-2 run (`--stage` vae or vae_tune,
the config variant of that run), renders test scenes 0..n-1, decodes each posterior mean and
reads originals and reconstructions with `world2.oracle`: per true object (matched to the
nearest read object, centroid within 0.06 of the side) whether its class, shape and texture
are read right, split by the close shape pairs (5- / 6-pointed star, square / rounded square),
textures (striped / dotted / ring) and the scene's background; and the whole-scene verdict on the scene's full facts.
"""
import collections
import re
import time

from absl import app
from absl import flags
import jax
import numpy as np

from jaxdiffattack import variants
from jaxdiffattack.world2 import captions
from jaxdiffattack.world2 import oracle
from jaxdiffattack.world2 import render
from jaxdiffattack.world2 import scene
from jaxdiffattack.world2 import train

import evidence  # benchmarks/evidence.py (run as a script: benchmarks/ is on sys.path)

_WORKDIR = flags.DEFINE_string("workdir", "/work/w2run/run", "the run's workdir")
_STAGE = flags.DEFINE_string("stage", "vae", "checkpoint: vae or vae_tune")
_VARIANT = flags.DEFINE_string("variant", "", "config variants of the run")
_N = flags.DEFINE_integer("n", 100, "test scenes")
_OUT = flags.DEFINE_string("out", "", "results JSON")

_GROUPS = {"star": "star vs six-pointed", "six-pointed star": "star vs six-pointed",
           "square": "square vs rounded", "rounded square": "square vs rounded"}


def _match(spec, reading):
  """Each true object -> the read object nearest its centre (or None)."""
  out = []
  for o in spec.objects:
    best, dist = None, 0.06
    for r in reading.objects:
      d = np.hypot(r.centroid[0] - o.cx, r.centroid[1] - o.cy)
      if d < dist:
        best, dist = r, d
    out.append(best)
  return out


def _why(o, r) -> str:
  """Why object o was (not) read right from its matched reading r: "right", "no object near",
  "unread: <the oracle's reason, numbers dropped>", "shape A->B" or "hue A->B"."""
  true = scene.CLASSES[o.cls]
  if r is None:
    return "no object near"
  if r.label == true:
    return "right"
  if r.shape is None or r.hue is None:
    return "unread: " + re.sub(r"[\d.]+", "N", r.reason.split(" (")[0].split(",")[0])
  if r.shape != scene.class_shape(o.cls):
    return f"shape {scene.class_shape(o.cls)}->{r.shape}"
  return f"hue {scene.class_hue(o.cls)}->{r.hue}"


def main(argv):
  del argv
  config = variants.load_config("train_world2", _VARIANT.value)
  size = config.data.image_size
  raw = train.load_checkpoint(_WORKDIR.value, _STAGE.value)
  step, params = int(raw["step"]), raw["params"]
  vae = train.vae_module(config)
  specs = scene.sample_scenes("test", 0, _N.value)
  images = render.render_batch(specs, size)
  fn = jax.jit(lambda p, x: vae.apply({"params": p}, vae.apply(
      {"params": p}, x, method=vae.encode).mean, method=vae.decode))
  recs = []
  for i in range(0, len(images), 50):
    x = fn(params, train.to_pixels(images[i:i + 50]))
    recs.append(np.asarray(np.clip((np.transpose(x, (0, 2, 3, 1)) + 1) * 127.5, 0, 255)
                           .round(), np.uint8))
  recs = np.concatenate(recs)
  mse = float(np.mean((recs.astype(np.float64) - images) ** 2))
  t0 = time.time()
  counts = collections.defaultdict(lambda: collections.Counter())
  misread = collections.defaultdict(collections.Counter)
  verdicts = {}
  for name, imgs in (("original", images), ("reconstruction", recs)):
    readings = oracle.read(imgs)
    v = oracle.judge(imgs, [captions.spec_facts(s) for s in specs])
    verdicts[name] = dict(collections.Counter(x.verdict for x in v))
    for spec, reading in zip(specs, readings):
      for o, r in zip(spec.objects, _match(spec, reading)):
        shape = scene.class_shape(o.cls)
        keys = ["all", f"shape:{shape}", f"background:{spec.background.kind}"] + (
            [_GROUPS[shape]] if shape in _GROUPS else [])
        if o.texture != "flat" and o.radius * size >= oracle.MIN_TEXTURE_RADIUS:
          keys.append(f"texture:{o.texture}")
        for k in keys:
          c = counts[k]
          c[f"{name}_n"] += 1
          c[f"{name}_class_right"] += int(r is not None and r.label == scene.CLASSES[o.cls])
          c[f"{name}_shape_right"] += int(r is not None and r.shape == shape)
          c[f"{name}_texture_right"] += int(r is not None and r.texture == o.texture)
        misread[name][_why(o, r)] += 1
  table = {}
  for k, c in sorted(counts.items()):
    row = {"objects": c["original_n"]}
    for name in ("original", "reconstruction"):
      n = max(c[f"{name}_n"], 1)
      row[name] = {m: round(c[f"{name}_{m}_right"] / n, 3)
                   for m in ("class", "shape", "texture")}
    table[k] = row
  out = {"command": f"python benchmarks/world2_vae_check.py --workdir {_WORKDIR.value} "
                    f"--stage={_STAGE.value} --variant={_VARIANT.value} --n={_N.value}",
         "checkpoint_step": step, "scenes": _N.value, "image_size": size,
         "vae": {"block_out_channels": list(config.vae.block_out_channels),
                 "latent_channels": config.vae.latent_channels,
                 "latent": [config.vae.latent_channels, train.latent_size(config),
                            train.latent_size(config)]},
         "recon_mse_uint8": round(mse, 2), "scene_verdicts_full_facts": verdicts,
         "per_object": table,
         "why_objects_are_misread": {k: dict(v.most_common()) for k, v in misread.items()},
         "oracle_s": round(time.time() - t0, 1)}
  evidence.emit(out, _OUT.value)


if __name__ == "__main__":
  app.run(main)
