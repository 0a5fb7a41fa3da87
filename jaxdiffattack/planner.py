"""The device-memory planner: what a compiled program needs, and the largest microbatch that fits.

XLA's compiled memory analysis of a program gives the bytes of its arguments,
outputs and temporaries; their sum less the aliased (donated) bytes is the device memory the
program needs while it runs (`program_bytes`). Lowered from shapes alone (abstract params), the
analysis of SD at full size costs a compile but no weights. Compiled at two population sizes
p1 < p2, a program's bytes split into fixed bytes (params, constants: independent of the
population) and bytes per member, (B(p2) − B(p1)) / (p2 − p1) (`MemoryCost`). `member_costs`
measures this for the sampler's forward pass, each gradient depth (`GRAD_DEPTHS`: the last step,
the last K, every step with each step rematerialised) and the ATM attack step (per prompt).

`auto_microbatch` picks the largest microbatch (members per device) whose program fits a
device-memory budget: the linear estimate from the two sizes, then checked by compiling the
chosen size and the next one up and walking until the chosen one fits and the next does not (the
analysis, not the line, decides). The budget is `memory_budget_gb` (1 GB = 10⁹ bytes) or, where
the device reports it (`device.memory_stats()["bytes_limit"]`, GPUs), `DEVICE_HEADROOM` of the
device's limit; on a device that reports nothing (CPU) a budget must be given. The analysis on
CPU approximates a GPU's: XLA's CPU and GPU compilers fuse and schedule differently, so buffer
sizes differ somewhat (the GPU suite's memory phase measures both on the GPU).

`sampler_program` gives the fused sampler's forward program (a `sampler.FusedSampler`, used
duck-typed: this module is below `sampler`, which plans its "auto" microbatch with it);
`costs` builds the gradient and attack programs on top of it.
"""

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxdiffattack.errors import ConfigError
from jaxdiffattack.errors import UserError

DEVICE_HEADROOM = 0.9   # share of a device's reported memory limit the planner fills


GB = 1e9                # memory_budget_gb's unit


def abstract(tree):
  """The same pytree with every array replaced by its `jax.ShapeDtypeStruct`."""
  return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), a.dtype), tree)


# A program of a population: members → (function, abstract args); jit(function).lower(*args).
Program = Callable[[int], tuple[Callable, tuple]]


def program_bytes(fn: Callable, *args) -> int:
  """Device bytes `jax.jit(fn)` needs for `args` (arrays or ShapeDtypeStructs): XLA's compiled
  memory analysis, arguments + outputs + temporaries − aliased (donated) bytes. A `fn` that is
  already jitted is lowered as it is (with its donations)."""
  jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
  m = jitted.lower(*args).compile().memory_analysis()
  if m is None:
    raise RuntimeError("XLA's compiled memory analysis is not available on this backend")
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)


def members_bytes(program: Program, members: int) -> int:
  """`program_bytes` of `program` at `members` members."""
  fn, args = program(members)
  return program_bytes(fn, *args)


class MemoryCost(NamedTuple):
  """A program's bytes as fixed + per_member · members (from compiles at two sizes)."""
  fixed: float                # bytes independent of the population (params, constants)
  per_member: float           # bytes each member adds
  sizes: tuple[int, int]      # the two population sizes compiled
  totals: tuple[int, int]     # their `program_bytes`

  def bytes_for(self, members: int) -> float:
    return self.fixed + self.per_member * members

  def max_members(self, budget_bytes: float) -> int:
    """The most members the line fits into `budget_bytes` (0: not even one)."""
    if self.per_member <= 0:
      raise RuntimeError(f"bytes per member {self.per_member} <= 0: the two sizes {self.sizes} "
                         f"compiled to {self.totals} bytes")
    return max(0, math.floor((budget_bytes - self.fixed) / self.per_member))


def memory_cost(program: Program, sizes: tuple[int, int] = (1, 2)) -> MemoryCost:
  """`MemoryCost` of `program` from its compiled memory analysis at two population sizes."""
  p1, p2 = sizes
  if not 1 <= p1 < p2:
    raise ValueError(f"sizes={sizes} must be two population sizes 1 <= p1 < p2")
  b1, b2 = (members_bytes(program, p) for p in sizes)
  per_member = (b2 - b1) / (p2 - p1)
  return MemoryCost(b1 - per_member * p1, per_member, (p1, p2), (b1, b2))


def stacked(shape, dtype, members: int) -> jax.ShapeDtypeStruct:
  """A [members, *shape] ShapeDtypeStruct (one population's abstract argument)."""
  return jax.ShapeDtypeStruct((members,) + tuple(shape), dtype)


def sampler_program(fused, params, latent_shape: Sequence[int],
                    text_shape: Sequence[int], aux: Any = None, text_dtype=jnp.float32,
                    uncond_per_member: bool = False) -> Program:
  """The fused sampler's forward program (what `PopulationSampler` compiles per chunk, whose
  unconditional states are per member: `uncond_per_member=True`).

  `params`: `sampler.fused_params(...)` (arrays or ShapeDtypeStructs); `aux`: per-member
  ShapeDtypeStructs without the population axis (e.g. {"label": int32 []}) or None.
  """
  params = abstract(params)

  def program(members: int):
    member_aux = jax.tree_util.tree_map(lambda a: stacked(a.shape, a.dtype, members), aux or {})
    uncond = (stacked(text_shape, text_dtype, members) if uncond_per_member
              else jax.ShapeDtypeStruct(tuple(text_shape), text_dtype))
    args = (params, stacked(latent_shape, jnp.float32, members),
            stacked(text_shape, text_dtype, members), uncond,
            stacked((), jnp.float32, members), member_aux)
    if fused.ancestral:
      args += (stacked((2,), jnp.uint32, members),)
    return fused, args

  return program


def device_budget_bytes(memory_budget_gb: float | None, device=None) -> int:
  """The memory budget of one device: `memory_budget_gb` GB when given, else DEVICE_HEADROOM of
  the device's reported limit; ConfigError where neither exists (CPU without a budget)."""
  if memory_budget_gb is not None:
    if not (isinstance(memory_budget_gb, (int, float)) and math.isfinite(memory_budget_gb)
            and memory_budget_gb > 0):
      raise ConfigError(f"config.memory_budget_gb={memory_budget_gb!r} is invalid: use a number "
                        "of GB > 0")
    return int(memory_budget_gb * GB)
  device = device or jax.local_devices()[0]
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except
    stats = None
  limit = (stats or {}).get("bytes_limit")
  if not limit:
    raise ConfigError(f"config.microbatch='auto' needs a memory budget: the {device.platform} "
                      "device reports no memory limit; set --config.memory_budget_gb=<GB per "
                      "device>")
  return int(DEVICE_HEADROOM * limit)


def validate_microbatch(microbatch, memory_budget_gb, key: str = "microbatch") -> None:
  """One-line ConfigErrors for a job's `microbatch` / `memory_budget_gb` (at the edge: "auto"
  without a budget on a device that reports no memory limit is refused here)."""
  ok = microbatch is None or microbatch == "auto" or (
      isinstance(microbatch, int) and not isinstance(microbatch, bool) and microbatch >= 1)
  if not ok:
    raise ConfigError(f"config.{key}={microbatch!r} is invalid: use None (the whole population "
                      "at once), an integer >= 1 (members per device per call) or 'auto' (the "
                      "largest that fits the device's memory or config.memory_budget_gb)")
  if memory_budget_gb is not None:
    device_budget_bytes(memory_budget_gb)
  if microbatch == "auto":
    device_budget_bytes(memory_budget_gb)


class MicrobatchPlan(NamedTuple):
  microbatch: int         # members per device per call
  bytes: int              # `program_bytes` at that microbatch
  next_bytes: int | None  # at microbatch + 1 (None when the microbatch is capped by `limit`)
  budget: int
  cost: MemoryCost        # the linear estimate it started from


def auto_microbatch(program: Program, budget_bytes: int, limit: int | None = None,
                    sizes: tuple[int, int] = (1, 2)) -> MicrobatchPlan:
  """The largest microbatch m ≤ `limit` whose program fits `budget_bytes` by the compiled
  analysis: starts from `memory_cost`'s line, then compiles m and m + 1 and walks until m fits
  and m + 1 does not. UserError when one member does not fit."""
  cost = memory_cost(program, sizes)
  measured = dict(zip(cost.sizes, cost.totals))

  def size(m):
    if m not in measured:
      measured[m] = members_bytes(program, m)
    return measured[m]

  cap = limit if limit is not None else math.inf
  m = max(1, min(cost.max_members(budget_bytes), cap))
  while m > 1 and size(m) > budget_bytes:
    m -= 1
  if size(m) > budget_bytes:
    raise UserError(f"one member needs {size(1) / GB:.2f} GB, over the memory budget of "
                    f"{budget_bytes / GB:.2f} GB: raise memory_budget_gb, use a smaller "
                    "resolution, or bfloat16")
  while m < cap and size(m + 1) <= budget_bytes:
    m += 1
  return MicrobatchPlan(m, size(m), None if m >= cap else size(m + 1), int(budget_bytes), cost)


__all__ = ["DEVICE_HEADROOM", "GB", "MemoryCost", "MicrobatchPlan", "Program", "abstract",
           "auto_microbatch", "device_budget_bytes", "members_bytes", "memory_cost",
           "stacked", "program_bytes", "sampler_program", "validate_microbatch"]
