"""The attack loop of one group of prompts: the attack's compiled step (`registry.ATTACKS`), run
`steps_per_call` iterations per call, checkpointed every `checkpoint_every` iterations
(`checkpoint.py`), so that a killed run resumes where it stopped and ends with the results of an
uninterrupted one (every draw is keyed by prompt index and iteration, see `atm.py`)."""

import jax
import numpy as np

from jaxdiffattack import sharding
from jaxdiffattack.attacks import checkpoint
from jaxdiffattack.attacks import config as config_lib

# Root keys of the run: fold_in(fold_in(key, set), purpose).
ATTACK, SAMPLES, EVAL_NOISE, CLEAN_NOISE, BASELINE = range(5)


def pad_index(index: np.ndarray, devices: int) -> np.ndarray:
  """Pads prompt indices to a multiple of the device count by repeating the last one."""
  size = -(-len(index) // devices) * devices
  return np.concatenate([index, np.repeat(index[-1:], size - len(index))])


def groups(indices: np.ndarray, population: int) -> list[np.ndarray]:
  size = population or max(len(indices), 1)
  return [indices[i:i + size] for i in range(0, len(indices), size)]


def attack_group(job, data, group: int, index: np.ndarray, progress) -> tuple:
  """Runs (or resumes) the attack of prompts `index` of `data` (an `experiment.PromptData`).

  `progress(set name, group, iterations done, prompts in the group (padded), curves)` is called
  after every checkpoint. Returns (final state, sharded, of the padded population; the padded
  indices; curves {metric: [iterations, len(index)]}; iteration resumed at).
  """
  c = job.config
  padded = pad_index(index, job.mesh.size)
  prompts = jax.tree_util.tree_map(lambda a: sharding.put_population(a, job.mesh),
                                   data.prompts(padded))
  state = job.compiled.init(sharding.put_population(data.encoded.ids[padded], job.mesh))
  curves = {name: np.zeros((0, len(padded)), np.float32) for name in job.attack.metrics}
  set_index = list(c.prompt_sets).index(data.name)
  digest = config_lib.config_hash(c)
  sharded_mb = c.get("sharded_checkpoint_mb", 0.0)
  saved = checkpoint.load(job.workdir, digest, set_index, group, state, curves)
  if saved is not None:
    state, curves = saved
  key = sharding.put_replicated(data.purpose_key(ATTACK), job.mesh)
  done = start = int(state.iteration)
  while done < job.attack.iterations:
    calls = min(c.checkpoint_every, job.attack.iterations - done) // c.steps_per_call
    for _ in range(max(calls, 1)):
      state, metrics = job.compiled.step(job.params, state, prompts, key)
      curves = {k: np.concatenate([curves[k], sharding.to_host(getattr(metrics, k))])
                for k in curves}
    done = int(state.iteration)
    checkpoint.save(job.workdir, digest, set_index, group, state, curves, sharded_mb)
    progress(data.name, group, done, len(padded), curves)
  return state, padded, {k: v[:, :len(index)] for k, v in curves.items()}, start
