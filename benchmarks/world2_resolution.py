r"""World 2's resolution choice, measured: training-step cost of a toy-sized VAE and UNet at
32², 48² and 64² images (VAE downsampling 4, as the toy: latents 8², 12², 16²) on this CPU.

  XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
    nice -n 5 taskset -c 0 python benchmarks/world2_resolution.py --out docs/results/world2_resolution.json

One process, single-threaded XLA (as the toy's budget was measured: one process per core).
Each model: compile (first step) timed apart, then `--steps` steady-state steps, each timed
(the minimum is the uncontended cost on this shared machine, the median is given beside it); AdamW, the
toy's losses (VAE: MSE + 0.1 L1 + KL; UNet: epsilon MSE with 77-token cross-attention), the
toy's architectures (configs/train_toy.py: VAE (16, 32, 64), UNet (64, 64) with 4 heads,
text width 128) and batch sizes (VAE 32, UNet 32). The renderer's throughput (scenes/s,
`jaxdiffattack.world2.scene`) is measured at each size too.
"""
import json
import pathlib
import platform
import subprocess
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdiffattack.io import write_json
from jaxdiffattack.models import unet as unet_lib
from jaxdiffattack.models import vae as vae_lib
from jaxdiffattack.world2 import scene as scene_lib

_OUT = flags.DEFINE_string("out", "", "results JSON (printed when empty)")
_SIZES = flags.DEFINE_list("sizes", ["32", "48", "64"], "image sizes")
_STEPS = flags.DEFINE_integer("steps", 12, "steady-state steps per model")
_BATCH = flags.DEFINE_integer("batch", 32, "batch size")
_UNET_CHANNELS = flags.DEFINE_list("unet_channels", ["64,64", "64,128"],
                                   "UNet block_out_channels to time (';'-free, one per entry)")
_RENDER_SCENES = flags.DEFINE_integer("render_scenes", 200, "scenes rendered per size")


def _time_steps(step, state, batch, steps):
  """(compile seconds, [steps] seconds per steady-state step). The machine is shared, so the
  report gives the minimum (the uncontended cost) beside the median."""
  t0 = time.perf_counter()
  state, loss = step(state, batch)
  jax.block_until_ready(loss)
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, loss = step(state, batch)
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - t0)
  return compile_s, np.asarray(times)


def _row(n, compile_s, times):
  return {"params": n, "compile_s": round(compile_s, 1), "step_s_min": round(times.min(), 3),
          "step_s_median": round(float(np.median(times)), 3),
          "steps_per_s_at_min": round(1 / times.min(), 2)}


def vae_step_time(size, batch, steps):
  vae = vae_lib.AutoencoderKL(vae_lib.VAEConfig(
      down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
      block_out_channels=(16, 32, 64), layers_per_block=1, latent_channels=4,
      norm_num_groups=16, sample_size=size, scaling_factor=1.0))
  params = jax.jit(vae.init_weights)(jax.random.PRNGKey(0))
  opt = optax.adamw(1e-3)

  def loss_fn(p, x, key):
    post = vae.apply({"params": p}, x, method=vae.encode)
    rec = vae.apply({"params": p}, post.sample(key), method=vae.decode)
    err = rec - x
    return jnp.mean(err ** 2) + 0.1 * jnp.mean(jnp.abs(err)) + 1e-3 * jnp.mean(post.kl())

  @jax.jit
  def step(state, x):
    p, o, k = state
    loss, g = jax.value_and_grad(loss_fn)(p, x, jax.random.PRNGKey(k))
    u, o = opt.update(g, o, p)
    return (optax.apply_updates(p, u), o, k + 1), loss

  x = jax.random.normal(jax.random.PRNGKey(1), (batch, 3, size, size))
  n = sum(a.size for a in jax.tree_util.tree_leaves(params))
  return n, _time_steps(step, (params, opt.init(params), 0), x, steps)


def unet_step_time(latent, channels, batch, steps):
  unet = unet_lib.UNet2DConditionModel(unet_lib.UNetConfig(
      sample_size=latent, in_channels=4, out_channels=4,
      down_block_types=("CrossAttnDownBlock2D",) * len(channels),
      up_block_types=("CrossAttnUpBlock2D",) * len(channels),
      block_out_channels=tuple(channels), layers_per_block=1, attention_head_dim=4,
      cross_attention_dim=128, flax_numerics=True))
  params = jax.jit(unet.init_weights)(jax.random.PRNGKey(0))
  opt = optax.adamw(5e-4)

  def loss_fn(p, zt, t, noise, cond):
    return jnp.mean((unet.apply({"params": p}, zt, t, cond) - noise) ** 2)

  @jax.jit
  def step(state, batch_):
    p, o = state
    zt, t, noise, cond = batch_
    loss, g = jax.value_and_grad(loss_fn)(p, zt, t, noise, cond)
    u, o = opt.update(g, o, p)
    return (optax.apply_updates(p, u), o), loss

  k = jax.random.split(jax.random.PRNGKey(1), 3)
  batch_ = (jax.random.normal(k[0], (batch, 4, latent, latent)),
            jax.random.randint(k[1], (batch,), 0, 1000),
            jax.random.normal(k[2], (batch, 4, latent, latent)),
            jax.random.normal(k[0], (batch, 77, 128)))
  n = sum(a.size for a in jax.tree_util.tree_leaves(params))
  return n, _time_steps(step, (params, opt.init(params)), batch_, steps)


def render_rate(size, scenes):
  t0 = time.perf_counter()
  scene_lib.render_batch(scene_lib.sample_scenes("tune", 0, scenes), size)
  return scenes / (time.perf_counter() - t0)


def main(argv):
  del argv
  rows = []
  for size in map(int, _SIZES.value):
    row = {"image_size": size, "latent_size": size // 4,
           "render_scenes_per_s": round(render_rate(size, _RENDER_SCENES.value), 1)}
    n, (c, s) = vae_step_time(size, _BATCH.value, _STEPS.value)
    row["vae"] = _row(n, c, s)
    for ch in _UNET_CHANNELS.value:
      channels = tuple(int(x) for x in ch.split(","))
      n, (c, s) = unet_step_time(size // 4, channels, _BATCH.value, _STEPS.value)
      row[f"unet_{'x'.join(map(str, channels))}"] = _row(n, c, s)
    print(json.dumps(row), flush=True)
    rows.append(row)
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=pathlib.Path(__file__).parent).stdout.strip()
  out = {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                       time.gmtime()),
         "machine": f"{platform.machine()} {platform.processor() or ''} (2-core shared CPU; "
                    "single-threaded XLA, niced)", "jax": jax.__version__,
         "code_version": commit, "batch": _BATCH.value, "steps": _STEPS.value, "rows": rows}
  if _OUT.value:
    write_json(_OUT.value, out)
  else:
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
  app.run(main)
