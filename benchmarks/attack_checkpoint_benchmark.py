r"""The ATM checkpoint at the real CLIP vocabulary (issue #24 item 2): write time and extra host
memory of the orbax-sharded checkpoint (`attacks/checkpoint.py`, the state sharded over fake CPU
devices, no gather) against the gathered msgpack (`runs.save_checkpoint`, the format used for
small states), each in a subprocess of its own.

  python benchmarks/attack_checkpoint_benchmark.py --prompts 8 --devices 8 \
      --out docs/results/attack_checkpoint_sharded.json

State: θ [P, 77, 49408] float32 and its Adam moments (mu, nu, same shape; count [P]) — 46 MB per
prompt — filled with dense random values (incompressible, as after Adam steps). Extra host
memory: the process's peak resident set during the write (VmHWM, reset through
/proc/self/clear_refs just before) minus its resident set just before; on CPU the state itself
lives in host memory and is not counted. Each write goes to a new path; the first write of each
mode is reported apart (orbax's first save initialises its thread pools).
"""

import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

REPO = pathlib.Path(__file__).resolve().parent.parent
_PROMPTS = flags.DEFINE_integer("prompts", 8, "Population P.")
_DEVICES = flags.DEFINE_integer("devices", 8, "Fake CPU devices the population is sharded over.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed writes per mode (after the first).")
_OUT = flags.DEFINE_string("out", "docs/results/attack_checkpoint_sharded.json", "Results JSON.")
_MODE = flags.DEFINE_string("mode", "", "Internal: run one mode in this process.")
_DIR = flags.DEFINE_string("dir", "", "Internal: where the checkpoints go.")

VOCAB, LENGTH = 49408, 77


def _status(key: str) -> int:
  line = next(l for l in pathlib.Path("/proc/self/status").read_text().splitlines()
              if l.startswith(key))
  return int(line.split()[1]) * 1024


def _one_mode(mode: str, prompts: int, repeats: int, directory: pathlib.Path) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import runs  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import sharding  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.attacks import atm  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.attacks import checkpoint  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh()
  pop = sharding.population_sharding(mesh)
  ids = jax.device_put(np.zeros((prompts, LENGTH), np.int32), pop)

  def init(i):   # dense values, as after some Adam steps (the clean one-hots compress to nothing)
    noise = lambda k: jax.random.normal(jax.random.PRNGKey(k), (prompts, LENGTH, VOCAB))
    logits = atm.init_logits(i, VOCAB, 15.0) + noise(0)
    opt = jax.vmap(optax.adam(0.3).init)(logits)
    opt = (opt[0]._replace(mu=noise(1), nu=noise(2) ** 2),) + tuple(opt[1:])
    return atm.State(logits, opt, jnp.zeros((), jnp.int32))

  init = jax.jit(init, out_shardings=atm.State(pop, pop, sharding.replicated(mesh)))
  state = jax.block_until_ready(init(ids))
  curves = {"loss": np.zeros((10, prompts), np.float32)}
  writes = []
  for k in range(repeats + 1):
    state = state._replace(iteration=state.iteration + 1)
    pathlib.Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    t0 = time.perf_counter()
    if mode == "orbax_sharded":
      checkpoint.save(directory, f"h{k}", 0, 0, state, curves, 1e-6)
    else:
      runs.save_checkpoint(directory / f"checkpoint_{k}.msgpack",
                           jax.tree_util.tree_map(sharding.to_host, state), f"h{k}")
    seconds = time.perf_counter() - t0
    writes.append({"write_s": round(seconds, 3),
                   "extra_host_mb": round((_status("VmHWM") - before) / 1e6, 1)})
  size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) / (repeats + 1)
  if mode == "orbax_sharded":   # only the last write's arrays are kept
    size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
  t0 = time.perf_counter()
  if mode == "orbax_sharded":
    got, _ = checkpoint.load(directory, f"h{repeats}", 0, 0, state, curves)
  else:
    got = runs.load_checkpoint(directory / f"checkpoint_{repeats}.msgpack", f"h{repeats}",
                               jax.tree_util.tree_map(sharding.to_host, state))
  read = time.perf_counter() - t0
  assert np.array_equal(np.asarray(got.logits), np.asarray(state.logits))
  state_mb = checkpoint.state_mb(state)
  return {"mode": mode, "devices": jax.device_count(), "state_mb": round(state_mb, 1),
          "shards_per_array": len(state.logits.addressable_shards),
          "first_write": writes[0], "writes": writes[1:],
          "write_s_median": float(np.median([w["write_s"] for w in writes[1:]])),
          "extra_host_mb_max": max(w["extra_host_mb"] for w in writes[1:]),
          "bytes_on_disk_mb": round(size / 1e6, 1), "read_s": round(read, 3),
          "load_avg": os.getloadavg()[0]}


def main(argv):
  del argv
  if _MODE.value:
    print(json.dumps(_one_mode(_MODE.value, _PROMPTS.value, _REPEATS.value,
                               pathlib.Path(_DIR.value))))
    return
  env = dict(os.environ, PYTHONPATH=str(REPO), XLA_FLAGS=(
      os.environ.get("XLA_FLAGS", "") +
      f" --xla_force_host_platform_device_count={_DEVICES.value}"))
  modes = []
  for mode in ("orbax_sharded", "msgpack_gathered"):
    with tempfile.TemporaryDirectory() as directory:
      out = subprocess.run([sys.executable, __file__, f"--mode={mode}", f"--dir={directory}",
                            f"--prompts={_PROMPTS.value}", f"--repeats={_REPEATS.value}"],
                           env=env, capture_output=True, text=True, check=True)
      modes.append(json.loads(out.stdout.strip().splitlines()[-1]))
  git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                       text=True, check=False).stdout.strip()
  cpu = next((line.split(":", 1)[1].strip() for line in
              pathlib.Path("/proc/cpuinfo").read_text().splitlines()
              if line.startswith("model name")), platform.processor())
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  result = {
      "command": "python benchmarks/attack_checkpoint_benchmark.py " + " ".join(sys.argv[1:]),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "git": git, "machine": {"cpu": cpu, "cores": os.cpu_count()},
      "orbax_checkpoint": ocp.__version__, "prompts": _PROMPTS.value,
      "state": f"θ [{_PROMPTS.value}, {LENGTH}, {VOCAB}] float32 + Adam mu, nu (+ count)",
      "note": "CPU, fake devices on one host: shards are written by one process; extra host "
              "memory excludes the state itself (it lives in host memory on CPU)",
      "modes": modes}
  path = pathlib.Path(_OUT.value)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(result, indent=1) + "\n")
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  app.run(main)
