r"""World 2's resolution choice, measured: training-step cost of a toy-sized VAE and UNet at
32², 48² and 64² images (VAE downsampling 4, as the toy: latents 8², 12², 16²) on this CPU.

  nice -n 5 python benchmarks/world2_resolution.py --out docs/results/world2_resolution.json

FLOPs per training step from XLA's cost analysis of the lowered step (nothing is compiled or
run, so the numbers do not depend on the load of this shared machine); the training budget
scales the toy's measured free-core step rates (docs/toy_model_card.md) by them. With
``--steps=N`` the VAE and the first UNet are also compiled and N steps timed:

  XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
    nice -n 5 python benchmarks/world2_resolution.py --steps=6

One process, single-threaded XLA (as the toy's budget was measured: one process per core).
Each model: compile (first step) timed apart, then `--steps` steady-state steps, each timed
(the minimum is the least contended cost on this shared machine, the median beside it), for the
VAE and the first UNet; every model's FLOPs per step from XLA's cost analysis of the lowered
step (load-independent: the budget scales the toy's measured free-core rates by them); AdamW, the
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
from jaxdiffattack.world2 import render as render_lib
from jaxdiffattack.world2 import scene as scene_lib

_OUT = flags.DEFINE_string("out", "", "results JSON (printed when empty)")
_SIZES = flags.DEFINE_list("sizes", ["32", "48", "64"], "image sizes")
_STEPS = flags.DEFINE_integer("steps", 0, "steady-state steps timed per model (0: FLOPs only)")
_BATCH = flags.DEFINE_integer("batch", 32, "batch size")
_UNET_CHANNELS = flags.DEFINE_list("unet_channels", ["64,64", "64,128"],
                                   "UNet block_out_channels to time (';'-free, one per entry)")
_VAE_LEVELS = flags.DEFINE_integer("vae_levels", 3, "VAE blocks (downsampling 2**(levels-1))")
_LATENT_CHANNELS = flags.DEFINE_integer("latent_channels", 4, "VAE latent channels")
_RENDER_SCENES = flags.DEFINE_integer("render_scenes", 200, "scenes rendered per size")


def _flops(step, state, batch) -> float:
  """XLA's FLOP count of one step (from the lowered HLO: no compile, independent of load)."""
  cost = step.lower(state, batch).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def _time_steps(step, state, batch, steps):
  """(flops, compile seconds, [steps] seconds per steady-state step) -- timing only when
  steps > 0. The machine is shared, so the report gives the minimum (the least contended
  cost) beside the median."""
  flops = _flops(step, state, batch)
  if steps <= 0:
    return flops, None, None
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
  return flops, compile_s, np.asarray(times)


def _row(n, flops, compile_s, times):
  row = {"params": n, "gflops_per_step": round(flops / 1e9, 2)}
  if times is not None:
    row.update(compile_s=round(compile_s, 1), step_s_min=round(times.min(), 3),
               step_s_median=round(float(np.median(times)), 3))
  return row


def _init(init_weights, steps):
  """Parameters (timing) or only their shapes (FLOPs: nothing is compiled)."""
  if steps:
    return jax.jit(init_weights)(jax.random.PRNGKey(0))
  return jax.eval_shape(init_weights, jax.random.PRNGKey(0))


def _opt_init(opt, params, steps):
  return opt.init(params) if steps else jax.eval_shape(opt.init, params)


def vae_step_time(size, batch, steps):  # -> (params, (flops, compile_s, times))
  vae = vae_lib.AutoencoderKL(vae_lib.VAEConfig(
      down_block_types=("DownEncoderBlock2D",) * _VAE_LEVELS.value,
      up_block_types=("UpDecoderBlock2D",) * _VAE_LEVELS.value,
      block_out_channels=(16, 32, 64, 64)[:_VAE_LEVELS.value], layers_per_block=1,
      latent_channels=_LATENT_CHANNELS.value,
      norm_num_groups=16, sample_size=size, scaling_factor=1.0))
  params = _init(vae.init_weights, steps)
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

  x = jax.ShapeDtypeStruct((batch, 3, size, size), jnp.float32)
  if steps:
    x = jax.random.normal(jax.random.PRNGKey(1), x.shape)
  n = sum(a.size for a in jax.tree_util.tree_leaves(params))
  return n, _time_steps(step, (params, _opt_init(opt, params, steps), 0), x, steps)


def unet_step_time(latent, channels, batch, steps):
  unet = unet_lib.UNet2DConditionModel(unet_lib.UNetConfig(
      sample_size=latent, in_channels=_LATENT_CHANNELS.value,
      out_channels=_LATENT_CHANNELS.value,
      down_block_types=("CrossAttnDownBlock2D",) * len(channels),
      up_block_types=("CrossAttnUpBlock2D",) * len(channels),
      block_out_channels=tuple(channels), layers_per_block=1, attention_head_dim=4,
      cross_attention_dim=128, flax_numerics=True))
  params = _init(unet.init_weights, steps)
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
  c = _LATENT_CHANNELS.value
  shapes = ((batch, c, latent, latent), (batch,), (batch, c, latent, latent), (batch, 77, 128))
  if steps:
    batch_ = (jax.random.normal(k[0], shapes[0]), jax.random.randint(k[1], shapes[1], 0, 1000),
              jax.random.normal(k[2], shapes[2]), jax.random.normal(k[0], shapes[3]))
  else:
    batch_ = tuple(jax.ShapeDtypeStruct(s, jnp.int32 if len(s) == 1 else jnp.float32)
                   for s in shapes)
  n = sum(a.size for a in jax.tree_util.tree_leaves(params))
  return n, _time_steps(step, (params, _opt_init(opt, params, steps)), batch_, steps)


def render_rate(size, scenes):
  t0 = time.perf_counter()
  render_lib.render_batch(scene_lib.sample_scenes("tune", 0, scenes), size)
  return scenes / (time.perf_counter() - t0)


def _flat(result):
  n, rest = result
  return (n,) + tuple(rest)


def main(argv):
  del argv
  rows = []
  for size in map(int, _SIZES.value):
    latent = size // 2 ** (_VAE_LEVELS.value - 1)
    row = {"image_size": size, "latent_size": latent, "latent_channels": _LATENT_CHANNELS.value,
           "render_scenes_per_s": round(render_rate(size, _RENDER_SCENES.value), 1)}
    row["vae"] = _row(*_flat(vae_step_time(size, _BATCH.value, _STEPS.value)))
    for k, ch in enumerate(_UNET_CHANNELS.value):
      channels = tuple(int(x) for x in ch.split(","))
      steps = _STEPS.value if k == 0 else 0  # Timed: the toy's UNet; the others by FLOPs.
      row[f"unet_{'x'.join(map(str, channels))}"] = _row(
          *_flat(unet_step_time(latent, channels, _BATCH.value, steps)))
    print(json.dumps(row), flush=True)
    rows.append(row)
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=pathlib.Path(__file__).parent).stdout.strip()
  out = {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                       time.gmtime()),
         "machine": f"{platform.machine()} {platform.processor() or ''} (2-core shared CPU; "
                    "single-threaded XLA, niced)", "jax": jax.__version__,
         "code_version": commit, "vae_levels": _VAE_LEVELS.value, "batch": _BATCH.value, "steps": _STEPS.value, "rows": rows}
  if _OUT.value:
    write_json(_OUT.value, out)
  else:
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
  app.run(main)
