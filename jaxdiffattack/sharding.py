"""Population sharding: one 1-D device mesh over all devices of all hosts, no pmap.

The population axis (axis 0 of every per-member array) is sharded over the mesh axis `pop`;
parameters are replicated. A population of any size P is processed in chunks of
`microbatch × n_devices` members (padded with copies of the last member, whose results are
dropped), so memory is bounded by the microbatch and results do not depend on it: every member's
computation is independent and every random draw is keyed by its member index.

Multi-host: call `jaxdiffattack.distributed.initialize` first; `put_population` /
`put_replicated` / `put_global` build global arrays from the (identical) host copies with
`jax.make_array_from_callback` (each process fills its own devices), and `to_host` gathers them
back on every process (`process_allgather`).
"""

from typing import Any

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

POP_AXIS = "pop"


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices).reshape(-1), (POP_AXIS,))


def population_sharding(mesh: Mesh) -> NamedSharding:
  """Shards axis 0 (the population) over the mesh; other axes whole."""
  return NamedSharding(mesh, P(POP_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def chunk_size(mesh: Mesh, population: int, microbatch: int | None) -> int:
  """Members per compiled call: microbatch per device × devices (None: all of P at once)."""
  n = mesh.size
  if microbatch is None:
    microbatch = -(-population // n)
  if microbatch <= 0:
    raise ValueError(f"microbatch={microbatch} must be a positive number of members per device")
  return microbatch * n


def pad_population(x: np.ndarray, size: int) -> np.ndarray:
  """Pads axis 0 to `size` by repeating the last member (keeps padded members finite)."""
  x = np.asarray(x)
  if x.shape[0] == size:
    return x
  pad = np.repeat(x[-1:], size - x.shape[0], axis=0)
  return np.concatenate([x, pad], axis=0)


def put_global(x, sharding: jax.sharding.Sharding) -> jax.Array:
  """A global array with `sharding` from a host array every process holds (each process puts
  only its own devices' shards: a NumPy input to a multi-process jit is refused)."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def put_population(x: np.ndarray, mesh: Mesh) -> jax.Array:
  """A global array sharded over the population axis, from a host array every process holds."""
  return put_global(x, population_sharding(mesh))


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Replicates a pytree (params) on every device of the mesh."""
  sharding = replicated(mesh)

  def put(x):
    x = np.asarray(x) if not isinstance(x, jax.Array) else x
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    return put_global(x, sharding)

  return jax.tree_util.tree_map(put, tree)


def to_host(x: jax.Array) -> np.ndarray:
  """The whole (global) array as NumPy on this host."""
  if jax.process_count() > 1 and not x.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)
