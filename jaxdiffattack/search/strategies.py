"""Evolution strategies by name, batched over independent targets: all evosax algorithms + "random".

`BatchedStrategy` wraps one evosax algorithm (evosax 0.3: `ask(key, state, params) -> (population,
state)`, `tell(key, population, fitness, state, params) -> (state, metrics)`; it MINIMISES) and
`vmap`s it over T targets with stacked states, so T searches advance in one compiled ask and one
compiled tell per generation: population [T, P, n], fitness [T, P].

Non-finite fitness. evosax's rank-based shaping already ranks NaN last (`_rank_fitness` maps NaN to
+inf), but -inf would rank *first*, ties between failed members give fractional ranks, and
value-based shapings (identity, standardize) see the raw numbers. So before `tell` every non-finite
value (NaN, ±inf) is replaced by distinct finite values strictly worse than the generation's worst
finite fitness; a generation in which every member of a target failed leaves that target's state
unchanged (nothing was learnt; the next ask draws anew from a new key). The driver counts them.

Gradient methods ("adam", "pgd": `jaxdiffattack.search.gradient`) are chosen by the same
`config.strategy.name` and share this interface (`tell` also takes the fitness gradients);
`names()` lists both kinds, `is_gradient(name)` tells them apart.

"random" is SAGE's baseline (arXiv 2306.00974, §4: random sampling at the same budget): evosax's
`RandomSearch` with the search space's prior as `sampling_fn`, so every member is an independent
draw (e.g. a fresh N(0, I) latent) and nothing is learnt between generations.

Memory. Full-covariance strategies keep n × n matrices per target; `CMA_ES` at the SD1.5 latent
size (n = 16384) needs ~3 GiB per target for C, B and eigh's workspace. Above `max_full_cov_dims`
they are refused with the memory they would need and the diagonal / limited-memory strategies to use
instead (Sep_CMA_ES, LM_MA_ES, SNES, Open_ES); above `WARN_FULL_COV_DIMS` they are warned about.
"""

import inspect
from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax
from evosax.algorithms import algorithms as _EVOSAX
from evosax.algorithms.population_based.base import PopulationBasedAlgorithm

from jaxdiffattack.errors import ConfigError
from jaxdiffattack.search import gradient

RANDOM = "random"
# Every evosax algorithm by its registry name, plus SAGE's random-sampling baseline.
STRATEGIES = dict(_EVOSAX) | {RANDOM: _EVOSAX["RandomSearch"]}
# Full n × n float32 matrices each strategy's state (and its ask/tell) holds.
FULL_COV_MATRICES = {"CMA_ES": 3, "xNES": 2, "MA_ES": 2, "iAMaLGaM_Full": 2, "SV_CMA_ES": 3}
LOW_MEMORY = ("Sep_CMA_ES", "LM_MA_ES", "SNES", "Open_ES")
WARN_FULL_COV_DIMS = 1000


def names() -> list[str]:
  """Every method name: evosax strategies, "random" and the gradient methods."""
  return sorted(set(STRATEGIES) | set(gradient.METHODS), key=str.lower)


def is_gradient(name: str) -> bool:
  return name in gradient.METHODS


def full_cov_bytes(name: str, num_dims: int, num_targets: int = 1) -> int:
  """Bytes of the n × n matrices a full-covariance strategy holds for `num_targets` searches."""
  return FULL_COV_MATRICES.get(name, 0) * num_dims * num_dims * 4 * num_targets


def check_memory(name: str, num_dims: int, num_targets: int, max_full_cov_dims: int) -> None:
  """Refuses (ConfigError) or warns about a full-covariance strategy on many dimensions."""
  if name not in FULL_COV_MATRICES or num_dims <= WARN_FULL_COV_DIMS:
    return
  gib = full_cov_bytes(name, num_dims, num_targets) / 2**30
  message = (f"{name} keeps {FULL_COV_MATRICES[name]} full {num_dims}×{num_dims} float32 matrices "
             f"per target: {gib / num_targets:.2f} GiB per target, {gib:.2f} GiB for "
             f"{num_targets} targets, and O(n³) eigendecompositions per generation; use one of "
             f"{', '.join(LOW_MEMORY)}")
  if num_dims > max_full_cov_dims:
    raise ConfigError(f"config.strategy.name={name!r} is invalid on {num_dims} dimensions: "
                      f"{message} (or raise config.strategy.max_full_cov_dims)")
  logging.warning("%s", message)


def parse_overrides(text: str) -> dict:
  """"c_std=0.1,d_std=2" → {"c_std": 0.1, "d_std": 2.0} (numbers; true/false for booleans)."""
  out = {}
  for item in filter(None, (s.strip() for s in (text or "").split(","))):
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise ConfigError(f"config.strategy.param_overrides={text!r} is invalid: use "
                        "'name=value,name=value'")
    value = value.strip()
    if value.lower() in ("true", "false"):
      out[key.strip()] = value.lower() == "true"
      continue
    try:
      out[key.strip()] = float(value)
    except ValueError as e:
      raise ConfigError(f"config.strategy.param_overrides: {key.strip()}={value!r} is not a "
                        "number") from e
  return out


def _params_with(params, overrides: dict, name: str):
  fields = set(params.__dataclass_fields__)
  for key in overrides:
    if key not in fields:
      raise ConfigError(f"config.strategy.params.{key} is invalid for {name}: its params are "
                        f"{sorted(fields)}")
  new = {}
  for key, value in overrides.items():
    old = getattr(params, key)
    new[key] = jnp.asarray(value, old.dtype) if isinstance(old, jax.Array) else value
  return params.replace(**new)


class BatchedStrategy:
  """One evosax strategy advancing T independent searches together (states stacked on axis 0).

  Example:
    strategy = BatchedStrategy("Sep_CMA_ES", population_size=16, num_dims=256, num_targets=4)
    states = strategy.init(keys, means)                 # keys [T], means [T, n]
    population, states = strategy.ask(keys, states)     # [T, P, n]
    states = strategy.tell(keys, population, fitness, states)  # fitness [T, P], minimised
  """
  needs_grad = False

  def __init__(self, name: str, population_size: int, num_dims: int, *, num_targets: int = 1,
               std_init: float | None = None, params: dict | None = None,
               kwargs: dict | None = None, sampling_fn: Callable | None = None,
               max_full_cov_dims: int = 4096):
    """Builds the strategy.

    Args:
      name: a key of STRATEGIES (evosax's names, e.g. "Sep_CMA_ES", "SimpleGA"), or "random".
      population_size: P, members per target and generation.
      num_dims: n, the length of a solution vector.
      num_targets: T (only for the memory check).
      std_init: initial step size: `params.std_init` where the strategy has one, else a constant
        `std_schedule` (SimpleGA's mutation std, Open_ES's noise std); population-based strategies
        also spread their initial population with it.
      params: overrides of fields of the strategy's `default_params`.
      kwargs: extra constructor arguments (scalars).
      sampling_fn: `key -> [n]`, one member of the random baseline (needed by "random").
      max_full_cov_dims: refuse full-covariance strategies above this many dimensions.
    """
    if name not in STRATEGIES:
      raise ConfigError(f"config.strategy.name={name!r} is invalid: use one of {names()}")
    if population_size < 2:
      raise ConfigError(f"config.population_size={population_size!r} is invalid: use >= 2")
    check_memory(name, num_dims, num_targets, max_full_cov_dims)
    self.name = name
    self.population_size = population_size
    self.num_dims = num_dims
    self.std_init = std_init
    cls = STRATEGIES[name]
    kwargs = dict(kwargs or {})
    signature = inspect.signature(cls.__init__).parameters
    for key in kwargs:
      if key not in signature:
        raise ConfigError(f"config.strategy.kwargs.{key} is invalid for {name}: its constructor "
                          f"takes {sorted(set(signature) - {'self'})}")
    if cls is STRATEGIES[RANDOM]:
      if sampling_fn is None:
        raise ValueError("the random strategy needs sampling_fn (the search space's prior)")
      kwargs["sampling_fn"] = sampling_fn
    if std_init is not None and "std_schedule" in signature and "std_schedule" not in kwargs:
      kwargs["std_schedule"] = optax.constant_schedule(float(std_init))
    try:
      self.evo = cls(population_size, jnp.zeros((num_dims,), jnp.float32), **kwargs)
    except (AssertionError, TypeError) as e:
      raise ConfigError(f"config.strategy={name!r} with population_size={population_size} and "
                        f"kwargs {sorted(kwargs)} is invalid: {e}") from e
    self.population_based = isinstance(self.evo, PopulationBasedAlgorithm)
    default = self.evo.default_params  # also sets derived attributes (LM_MA_ES's m)
    overrides = dict(params or {})
    if std_init is not None and "std_init" in default.__dataclass_fields__:
      overrides.setdefault("std_init", std_init)
    self.params = _params_with(default, overrides, name)
    self._ask = jax.jit(jax.vmap(self.evo.ask, in_axes=(0, 0, None)))
    self._tell = jax.jit(jax.vmap(self._tell_one, in_axes=(0, 0, 0, 0, None)))
    if self.population_based:
      self._init = jax.jit(jax.vmap(self._init_population, in_axes=(0, 0, None)))
    else:
      self._init = jax.jit(jax.vmap(self.evo.init, in_axes=(0, 0, None)))

  @property
  def is_random(self) -> bool:
    return self.name in (RANDOM, "RandomSearch")

  def _init_population(self, key, mean, params):
    """Population-based strategies start from mean + std_init · N(0, I) with unknown (+inf)
    fitness, so the first ask mutates those members without a separate evaluation."""
    std = 1.0 if self.std_init is None else self.std_init
    noise = jax.random.normal(key, (self.population_size, self.num_dims), jnp.float32)
    population = mean[None] + std * noise
    fitness = jnp.full((self.population_size,), jnp.inf, jnp.float32)
    return self.evo.init(key, population, fitness, params)

  def _tell_one(self, key, population, fitness, state, params):
    fitness = jnp.asarray(fitness, jnp.float32)
    bad = ~jnp.isfinite(fitness)
    worst = jnp.max(jnp.where(bad, -jnp.inf, fitness))
    worst = jnp.where(jnp.all(bad), 0.0, worst)
    # Distinct values, all strictly worse than every finite member.
    step = (jnp.abs(worst) + 1.0) * 1e-3
    replacement = worst + step * jnp.cumsum(bad).astype(jnp.float32)
    clean = jnp.where(bad, replacement, fitness)
    new_state, _ = self.evo.tell(key, population, clean, state, params)
    keep = jnp.all(bad)
    return jax.tree_util.tree_map(lambda new, old: jnp.where(keep, old, new), new_state, state)

  def init(self, keys: jax.Array, means: jax.Array):
    """Stacked states for T targets; keys [T], means [T, n] (start of each search)."""
    return strong(self._init(keys, jnp.asarray(means, jnp.float32), self.params))

  def ask(self, keys: jax.Array, states):
    """Population [T, P, n] and the states after ask."""
    population, states = self._ask(keys, states, self.params)
    return population, strong(states)

  def tell(self, keys: jax.Array, population: jax.Array, fitness, states):
    """States after tell; fitness [T, P] is minimised, non-finite entries rank worst."""
    return strong(self._tell(keys, population, jnp.asarray(fitness, jnp.float32), states,
                             self.params))


def strong(tree):
  """The same arrays without weak types, so states restored from a checkpoint (never weak) and
  states fresh from init/ask/tell hit the same compiled ask/tell (no retracing)."""
  return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=jnp.asarray(a).dtype), tree)


@jax.jit
def _select(mask, new_states, old_states):
  def pick(new, old):
    m = mask.reshape((-1,) + (1,) * (new.ndim - 1))
    return jnp.where(m, new, old)

  return jax.tree_util.tree_map(pick, new_states, old_states)


def select(mask, new_states, old_states):
  """Per target: `new` where mask[t] else `old` (mask [T] bool)."""
  return strong(_select(jnp.asarray(mask), new_states, old_states))


def as_states(template, saved) -> object:
  """Stacked states restored from a checkpoint as device arrays of the template's dtypes
  (`template`: e.g. a fresh `init`; `saved`: the same structure of host arrays)."""
  def restore(leaf, value):
    value = np.asarray(value)
    if value.shape != np.shape(leaf):
      raise ValueError(f"checkpoint strategy state has shape {value.shape}, expected "
                       f"{np.shape(leaf)}")
    return jnp.asarray(value, dtype=leaf.dtype)
  return jax.tree_util.tree_map(restore, template, saved)
