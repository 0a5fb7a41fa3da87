r"""What the full world-2 census (`configs/census.py:world2`) costs on this machine's CPUs.

  nice -n 5 python benchmarks/census_cost.py --out docs/results/census_cost.json
  nice -n 5 python benchmarks/census_cost.py --train_variant=f4 \
      --out docs/results/census_cost_f4.json

The census draws P × S images (332 prompts × 64 seeds); each costs `num_steps` UNet calls on a
guided pair (cond + uncond: a batch of 2), one VAE decode, one evaluator forward pass and one
scene-oracle reading (the evaluator is not timed: see not_counted). With random weights of world 2's full architectures (configs/train_world2.py:
the UNet and VAE; weights do not change the cost), this times one jitted UNet
call on 2·B latents, and one VAE decode of B latents (compile apart; minimum of
`--repeats`), and the oracle on B rendered scenes (half single, half two objects), in wall and CPU
seconds (process time of all threads). FLOPs from XLA's cost analysis, which do not depend on the
load of this shared machine. Per image: num_steps · unet(2B)/B + decode(B)/B + oracle/B; the census total multiplies by its images.
"""
import datetime
import json
import platform
import subprocess
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack.io import write_json

_OUT = flags.DEFINE_string("out", "", "results JSON (printed when empty)")
_BATCH = flags.DEFINE_integer("batch", 64, "images per timed call (the census microbatch)")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed calls per program (the minimum is kept)")
_TRAIN_VARIANT = flags.DEFINE_string("train_variant", "", "variant of configs/train_world2.py "
                                     "whose architectures are timed ('' the default, 'f4')")


def _time(fn, *args, repeats):
  jax.block_until_ready(fn(*args))          # compile + first run
  wall, cpu = [], []
  for _ in range(repeats):
    w, c = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(*args))
    wall.append(time.perf_counter() - w)
    cpu.append(time.process_time() - c)
  flops = fn.lower(*args).compile().cost_analysis()
  flops = flops[0] if isinstance(flops, (list, tuple)) else flops
  return {"wall_s": min(wall), "cpu_s": min(cpu), "gflops": float(flops.get("flops", 0)) / 1e9}


def main(_):
  from jaxdiffattack import census  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import variants  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.world2 import oracle  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.world2 import render  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.world2 import train  # pylint: disable=g-import-not-at-top
  train_config = variants.load_config("train_world2", _TRAIN_VARIANT.value or None)
  census_config = variants.load_config("census", "world2")
  b, repeats = _BATCH.value, _REPEATS.value
  key = jax.random.PRNGKey(0)
  size = train_config.data.image_size
  ch, hw = train_config.vae.latent_channels, train.latent_size(train_config)
  unet = train.unet_module(train_config)
  z = jnp.zeros((2 * b, ch, hw, hw))
  t = jnp.full((2 * b,), 500, jnp.int32)
  text = jnp.zeros((2 * b, 77, train_config.clip.text_width))
  unet_params = jax.jit(unet.init)(key, z[:1], t[:1], text[:1])
  unet_call = jax.jit(lambda p, z, t, c: unet.apply(p, z, t, c))
  vae = train.vae_module(train_config)
  images = jnp.zeros((b, 3, size, size))
  vae_params = jax.jit(vae.init)(key, images[:1])
  decode = jax.jit(lambda p, z: vae.apply(p, z, method=vae.decode))
  out = {"command": "nice -n 5 python benchmarks/census_cost.py"
                    + (f" --train_variant={_TRAIN_VARIANT.value}" if _TRAIN_VARIANT.value else "")
                    + f" --out {_OUT.value or '-'}",
         "train_variant": _TRAIN_VARIANT.value or "default",
         "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "machine": f"{platform.node()} {platform.machine()} ({jax.device_count()} "
                    f"{jax.devices()[0].platform} device(s), shared with other jobs)",
         "code_version": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                        text=True).stdout.strip(),
         "batch": b}
  out["unet_2b"] = _time(unet_call, unet_params, z, t, text, repeats=repeats)
  out["vae_decode_b"] = _time(decode, vae_params, z[:b], repeats=repeats)
  # The oracle on B rendered scenes of the census (single and two-object scenes).
  prompts = census.make_prompts(census_config)[:b]
  specs = [census.scene_spec(census.scene_lib.CLASS2ID[p.label], p.scene_kind, 0)[0]
           for p in prompts]
  rendered = np.stack([render.render(s, size) for s in specs])
  w, c = time.perf_counter(), time.process_time()
  oracle.judge(rendered, [p.facts for p in prompts])
  out["oracle_b"] = {"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c}
  steps = census_config.num_steps
  images_total = len(census.make_prompts(census_config)) * census_config.seeds_per_prompt
  per_image = {k: (steps * out["unet_2b"][k] + out["vae_decode_b"][k] + out["oracle_b"][k]) / b
               for k in ("wall_s", "cpu_s")}
  out["census"] = {"images": images_total, "num_steps": steps,
                   "per_image_s": per_image,
                   "total_hours": {k: v * images_total / 3600 for k, v in per_image.items()},
                   "gflops_per_image": (steps * out["unet_2b"]["gflops"]
                                        + out["vae_decode_b"]["gflops"]) / b,
                   "not_counted": "the RegNetY evaluator (about 0.1 GFLOP per image, "
                                  "docs/results/world2_regnet_cost.json) and the text encoder "
                                  "(once per prompt)"}
  text_out = json.dumps(out, indent=2)
  if _OUT.value:
    write_json(_OUT.value, out)
  print(text_out)


if __name__ == "__main__":
  app.run(main)
