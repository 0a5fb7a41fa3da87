r"""World 2's held-out evaluator (`regnet.WORLD2_EVALUATOR`, a RegNetY for 64² images and 83
classes): parameters, forward FLOPs per image and training-step FLOPs, beside the toy's ResNet
judge at 32² (configs/train_toy.py) whose measured stage time scales the budget.

  nice -n 5 python benchmarks/world2_regnet_cost.py --out docs/results/world2_regnet_cost.json

FLOPs from XLA's cost analysis of the lowered programs (nothing is run, so the numbers do not
depend on the load of this shared machine): inference (`train=False`, stored BatchNorm
statistics) at batch 1 and `--batch`, and one training step at `--batch` (softmax cross-entropy,
`train=True` with batch statistics, AdamW), as the toy's classifier stage trains. With
``--steps=N`` the training step is also compiled and N steps timed (compile apart; minimum and
median, this machine being shared), and the RegNet once more with XLA's own kernel gradient of its
grouped convolutions (`world2_regnet_xla_grad`, what `regnet.grouped_conv` replaces):

  XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" nice -n 5 \
    python benchmarks/world2_regnet_cost.py --steps=8 --out docs/results/world2_regnet_cost.json
"""
import dataclasses
import json
import platform
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdiffattack.io import write_json
from jaxdiffattack.models import regnet
from jaxdiffattack.models import resnet

_OUT = flags.DEFINE_string("out", "", "results JSON (printed when empty)")
_BATCH = flags.DEFINE_integer("batch", 128, "batch size of the training step")
_STEPS = flags.DEFINE_integer("steps", 0, "training steps timed per model (0: FLOPs only)")

# The toy's ResNet judge (configs/train_toy.py: basic blocks, 32 → (32, 64, 128), depths 1-1-1).
TOY_RESNET = resnet.ResNetConfig(embedding_size=32, hidden_sizes=(32, 64, 128), depths=(1, 1, 1),
                                 layer_type="basic", num_labels=20)
MODELS = {"world2_regnet": (regnet.WORLD2_EVALUATOR, regnet.RegNetForImageClassification, 64),
          "toy_resnet": (TOY_RESNET, resnet.ResNetForImageClassification, 32),
          "world2_regnet_xla_grad": (regnet.WORLD2_EVALUATOR,
                                     regnet.RegNetForImageClassification, 64)}


def _flops(lowered) -> float:
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def measure(name: str, batch: int, steps: int) -> dict:
  if name.endswith("_xla_grad"):   # the plain grouped convolution, differentiated by XLA
    # pylint: disable-next=protected-access
    original, regnet.grouped_conv = regnet.grouped_conv, regnet._conv
    try:
      return measure(name[:-len("_xla_grad")], batch, steps)
    finally:
      regnet.grouped_conv = original
  config, cls, size = MODELS[name]
  module = cls(config)
  variables = jax.jit(module.init)(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
  params = sum(int(x.size) for x in jax.tree_util.tree_leaves(variables["params"]))
  infer = jax.jit(lambda v, x: module.apply(v, x))
  forward = {b: _flops(infer.lower(variables, jnp.zeros((b, size, size, 3)))) / b
             for b in (1, batch)}
  opt = optax.adamw(1e-3)

  def loss_fn(p, stats, x, y):
    logits, new = module.apply({"params": p, "batch_stats": stats}, x, train=True,
                               mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new

  @jax.jit
  def step(state, x, y):
    p, stats, opt_state = state
    (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, stats, x, y)
    updates, opt_state = opt.update(grads, opt_state, p)
    return (optax.apply_updates(p, updates), new["batch_stats"], opt_state), loss

  state = (variables["params"], variables["batch_stats"], opt.init(variables["params"]))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch, size, size, 3)), jnp.float32)
  y = jnp.asarray(rng.integers(0, config.num_labels, batch), jnp.int32)
  out = {"config": {k: list(v) if isinstance(v, tuple) else v
                    for k, v in dataclasses.asdict(config).items()},
         "image_size": size, "params": params,
         "forward_gflop_per_image": {str(b): f / 1e9 for b, f in forward.items()},
         "train_step_gflop": _flops(step.lower(state, x, y)) / 1e9, "batch": batch}
  if steps:
    start = time.perf_counter()
    state, loss = step(state, x, y)
    loss.block_until_ready()
    out["compile_and_first_step_s"] = time.perf_counter() - start
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      state, loss = step(state, x, y)
      loss.block_until_ready()
      times.append(time.perf_counter() - start)
    out["step_s"] = {"min": min(times), "median": float(np.median(times)), "n": steps}
  return out


def main(argv):
  del argv
  names = [n for n in MODELS if _STEPS.value or not n.endswith("_xla_grad")]
  results = {"models": {name: measure(name, _BATCH.value, _STEPS.value) for name in names},
             "machine": {"platform": platform.platform(), "jax": jax.__version__,
                         "devices": str(jax.devices())}}
  regnet_step = results["models"]["world2_regnet"]["train_step_gflop"]
  results["train_step_flop_ratio_regnet_over_toy_resnet"] = (
      regnet_step / results["models"]["toy_resnet"]["train_step_gflop"])
  if _STEPS.value:
    step_s = {n: results["models"][n]["step_s"]["min"] for n in names}
    results["train_step_time_ratio_regnet_over_toy_resnet"] = (
        step_s["world2_regnet"] / step_s["toy_resnet"])
    results["train_step_time_ratio_xla_grad_over_grouped_conv"] = (
        step_s["world2_regnet_xla_grad"] / step_s["world2_regnet"])
  if _OUT.value:
    write_json(_OUT.value, results)
  print(json.dumps(results, indent=1))


if __name__ == "__main__":
  app.run(main)
