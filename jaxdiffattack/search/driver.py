"""The generation loop of a batch of evolutionary searches, apart from what is searched.

Per generation g, for T targets at once (SAGE, arXiv 2306.00974, with evosax populations in the
role of its search policy):

    ask (vmapped over targets) → population [T, P, n] → evaluate(active targets' members) →
    fitness (+ diversity term) → tell (vmapped; finished targets keep their state)

`evaluate` is any function from solutions to per-member fitness, success flags and records, so
the loop is tested on cheap closed-form objectives (`tests/search_driver_test.py`) and runs the
diffusion sampler + scorer in `jaxdiffattack.search.experiment`. Gradient methods
(`search.gradient`, `strategy.needs_grad`) take the fitness gradients `evaluate` returns beside
the fitness in their `tell`. Further per-member flags (e.g. each judge's failure) are tracked per
target: the generation each first occurs and how many members raised it.

Targets outside `initial_active` (e.g. targets whose clean image already fails a judge) are never
searched: they keep zero evaluations.

Randomness: target t's ask and tell keys at generation g are fold_in(fold_in(fold_in(key, t), g),
0 / 1), so results do not depend on device count, batch split, which targets are still active, or
the resume point. A target stops after `stop_after_failures` confirmed failures (0: never) or when
its budget of `num_generations × P` evaluations is spent.

Diversity (SAGE's diversity term, optional): fitness += weight × max_j sim(x, a_j) over this
target's failures a_j found so far (`similarity` from the search space; cosine by default), so
later failures are pushed away from earlier ones. "Best fitness" is tracked without it.

State and checkpoint/resume: the whole loop state is one `LoopState` (strategy states, records,
archive, curves; a `flax.struct` dataclass of host arrays), saved atomically by field name
(`runs.save_checkpoint`, msgpack) every `checkpoint_every` generations and at the end; a run
restarted on the same file continues from the last saved generation and ends with exactly the
same results as an uninterrupted run (CPU; timing fields aside).
"""

import dataclasses
import functools
import time
from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack import runs
from jaxdiffattack.errors import check
from jaxdiffattack.search import strategies as strategies_lib


class Evaluation(NamedTuple):
  """What `evaluate` returns for A active targets × P members."""
  fitness: np.ndarray          # [A, P] float, minimised; NaN/inf = failed evaluation
  success: np.ndarray          # [A, P] bool: the held-out judge confirms a failure
  records: dict                # name → [A, P] float: scores and constraint figures to keep
  counts: dict | None = None   # name → [A] int: per-target tallies summed over generations
  flags: dict | None = None    # name → [A, P] bool: tracked per target (first generation, count)
  grad: np.ndarray | None = None  # [A, P, n] ∇ fitness (gradient methods only)


@dataclasses.dataclass(frozen=True)
class LoopSettings:
  num_generations: int
  stop_after_failures: int = 1     # 0: search the whole budget
  archive_size: int = 4            # failures kept per target (solutions + records)
  diversity_weight: float = 0.0
  checkpoint_every: int = 1        # generations between checkpoints
  label: str = "search"            # for log lines


def cosine_similarity(x: np.ndarray, archive: np.ndarray) -> np.ndarray:
  """[M, n] × [K, n] → [M, K] cosine similarities."""
  xn = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  an = archive / np.maximum(np.linalg.norm(archive, axis=-1, keepdims=True), 1e-12)
  return xn @ an.T


def target_keys(key: jax.Array, num_targets: int, generation: int, purpose: int) -> jax.Array:
  """[T] keys fold_in(fold_in(fold_in(key, t), generation), purpose)."""
  return _target_keys(key, num_targets, jnp.uint32(generation), jnp.uint32(purpose))


@functools.partial(jax.jit, static_argnums=1)
def _target_keys(key, num_targets, generation, purpose):
  fold = lambda t: jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, t), generation),
                                      purpose)
  return jax.vmap(fold)(jnp.arange(num_targets, dtype=jnp.uint32))


@flax.struct.dataclass
class Timing:
  """Wall-clock seconds spent so far (kept apart from the results: they differ run to run)."""
  total: np.ndarray        # [] float64
  ask_tell: np.ndarray     # [] float64: ask, population to the host, tell
  evaluate: np.ndarray     # [] float64: the evaluate callback (sampler + scorer)
  images: np.ndarray       # [] float64: members evaluated

  def as_dict(self) -> dict:
    """timing.json's entry of one method."""
    return {"time/total": float(self.total), "time/ask_tell": float(self.ask_tell),
            "time/evaluate": float(self.evaluate), "images": float(self.images)}


@flax.struct.dataclass
class LoopState:
  """Everything T searches carry between generations (host NumPy arrays; the checkpoint).

  T targets, n solution dimensions, K = archive_size, G = num_generations.
  """
  generation: np.ndarray          # [] int64: generations done
  active: np.ndarray              # [T] bool: still searching
  evaluations: np.ndarray         # [T] int64: members evaluated
  nonfinite: np.ndarray           # [T] int64: members with a non-finite fitness
  first_success: np.ndarray       # [T] int64: generation of the first failure (−1: none yet)
  failures: np.ndarray            # [T] int64: failures found
  best_fitness: np.ndarray        # [T] float64 (inf: none finite yet)
  best_solution: np.ndarray       # [T, n] float32
  best_generation: np.ndarray     # [T] int64 (−1: none yet)
  archive_solution: np.ndarray    # [T, K, n] float32: the first K failures
  archive_fitness: np.ndarray     # [T, K] float64 (NaN: empty slot)
  archive_generation: np.ndarray  # [T, K] int64 (−1: empty slot)
  archive_member: np.ndarray      # [T, K] int64: member index within its generation
  curve_best: np.ndarray          # [G, T] float64: best so far (NaN: none finite yet)
  curve_mean: np.ndarray          # [G, T] float64: mean finite fitness of the generation
  curve_successes: np.ndarray     # [G, T] int64
  curve_nonfinite: np.ndarray     # [G, T] int64
  best_record: dict               # name → [T] float64: evaluate's records at the best member
  archive_record: dict            # name → [T, K] float64: ... at each archived failure
  counts: dict                    # name → [T] int64: evaluate's per-target tallies, summed
  flag_first: dict                # name → [T] int64: generation a flag was first raised (−1)
  flag_count: dict                # name → [T] int64: members that raised it
  timing: Timing
  strategy: Any                   # the strategy's states, stacked: [T, ...] per leaf


def new_state(states, init_means: np.ndarray, settings: LoopSettings,
              initial_active: np.ndarray | None = None) -> LoopState:
  """The loop state before generation 0; `states` are the strategy's initial stacked states."""
  t, n = init_means.shape
  g, k = settings.num_generations, settings.archive_size
  zero = np.array(0.0)
  active = np.ones(t, bool) if initial_active is None else np.array(initial_active, bool)
  return LoopState(
      generation=np.array(0), active=active, evaluations=np.zeros(t, np.int64),
      nonfinite=np.zeros(t, np.int64), first_success=np.full(t, -1, np.int64),
      failures=np.zeros(t, np.int64), best_fitness=np.full(t, np.inf, np.float64),
      best_solution=np.asarray(init_means, np.float32).copy(),
      best_generation=np.full(t, -1, np.int64),
      archive_solution=np.zeros((t, k, n), np.float32),
      archive_fitness=np.full((t, k), np.nan, np.float64),
      archive_generation=np.full((t, k), -1, np.int64),
      archive_member=np.full((t, k), -1, np.int64),
      curve_best=np.full((g, t), np.nan, np.float64),
      curve_mean=np.full((g, t), np.nan, np.float64),
      curve_successes=np.zeros((g, t), np.int64), curve_nonfinite=np.zeros((g, t), np.int64),
      best_record={}, archive_record={}, counts={}, flag_first={}, flag_count={},
      timing=Timing(total=zero, ask_tell=zero, evaluate=zero, images=zero), strategy=states)


def _with_records(state: LoopState, records: dict, counts: dict, flags: dict) -> LoopState:
  """The state with an entry for every record, count and flag name it has not seen yet."""
  t, k = state.archive_fitness.shape
  new = [name for name in records if name not in state.best_record]
  new_counts = [name for name in counts if name not in state.counts]
  new_flags = [name for name in flags if name not in state.flag_first]
  if not new and not new_counts and not new_flags:
    return state
  return state.replace(
      best_record=state.best_record | {name: np.full(t, np.nan, np.float64) for name in new},
      archive_record=state.archive_record | {
          name: np.full((t, k), np.nan, np.float64) for name in new},
      counts=state.counts | {name: np.zeros(t, np.int64) for name in new_counts},
      flag_first=state.flag_first | {name: np.full(t, -1, np.int64) for name in new_flags},
      flag_count=state.flag_count | {name: np.zeros(t, np.int64) for name in new_flags})


def run_loop(strategy, evaluate: Callable, key: jax.Array, init_means: np.ndarray,
             settings: LoopSettings, *, checkpoint_path=None, config_hash: str = "",
             similarity: Callable = cosine_similarity,
             initial_active: np.ndarray | None = None) -> LoopState:
  """Runs (or resumes) T searches to the end of their budget; returns the final loop state.

  Args:
    strategy: a `strategies.BatchedStrategy` or `gradient.GradientStrategy` (P members per
      target per generation).
    evaluate: `evaluate(solutions [A, P, n], targets [A] int) -> Evaluation` for the A active
      targets (in increasing target order); with `grad` for gradient strategies.
    key: the run's key (all draws fold in target, generation, purpose).
    init_means: [T, n] start of each search.
    settings: budget, stopping, archive, diversity, checkpointing.
    checkpoint_path: msgpack file to save to and resume from (None: no checkpointing).
    config_hash: stored with the checkpoint; a checkpoint of another config is refused.
    similarity: `similarity(x [M, n], archive [K, n]) -> [M, K]` for the diversity term.
    initial_active: [T] bool, the targets to search (None: all).
  """
  check(settings.num_generations >= 1, "num_generations", settings.num_generations,
        "use an integer >= 1")
  check(settings.archive_size >= 1, "archive_size", settings.archive_size,
        "use an integer >= 1")
  num_targets, num_dims = init_means.shape
  population = strategy.population_size
  needs_grad = getattr(strategy, "needs_grad", False)
  check(not (needs_grad and settings.diversity_weight > 0), "criterion.diversity_weight",
        settings.diversity_weight, "use 0 with a gradient method (the term is not differentiable)")
  template = new_state(strategy.init(target_keys(key, num_targets, 0, 2), init_means),
                      init_means, settings, initial_active)
  state = None
  if checkpoint_path is not None:
    state = runs.load_checkpoint(checkpoint_path, config_hash, template, "search")
  if state is None:
    state = template
  else:
    state = state.replace(strategy=strategies_lib.as_states(template.strategy, state.strategy))
  states = state.strategy
  # Compile ask and tell outside the timed loop (pure functions: results are unaffected).
  warm_x, warm_states = strategy.ask(target_keys(key, num_targets, 0, 3), states)
  grads = lambda g: {"grads": g} if needs_grad else {}
  warm_told = strategy.tell(target_keys(key, num_targets, 0, 3), warm_x,
                            np.zeros(warm_x.shape[:2], np.float32), warm_states,
                            **grads(np.zeros(warm_x.shape, np.float32)))
  jax.block_until_ready(strategies_lib.select(state.active, warm_told, states))
  start = time.perf_counter()
  progress = runs.Progress(settings.label, settings.num_generations, int(state.generation),
                           "generations")
  time_at_start = float(state.timing.total)

  while int(state.generation) < settings.num_generations and state.active.any():
    g = int(state.generation)
    t0 = time.perf_counter()
    active = np.flatnonzero(state.active)
    ask_keys = target_keys(key, num_targets, g, 0)
    tell_keys = target_keys(key, num_targets, g, 1)
    solutions, asked_states = strategy.ask(ask_keys, states)
    solutions_host = np.asarray(solutions)                      # [T, P, n]
    t1 = time.perf_counter()
    ev = evaluate(solutions_host[active], active)
    t2 = time.perf_counter()
    raw = np.asarray(ev.fitness, np.float64)                     # [A, P]
    success = np.asarray(ev.success, bool)
    finite = np.isfinite(raw)
    told_fitness = np.full((num_targets, population), np.nan, np.float32)
    told = raw.copy()
    if settings.diversity_weight > 0:
      for a, t in enumerate(active):
        n_arch = min(int(state.failures[t]), settings.archive_size)
        if n_arch:
          sim = similarity(solutions_host[t], state.archive_solution[t, :n_arch])
          told[a] = told[a] + settings.diversity_weight * np.max(sim, axis=1)
    told_fitness[active] = told
    told_grads = {}
    if needs_grad:
      check(ev.grad is not None, "strategy.name", strategy.name,
            "a gradient method needs an evaluate that returns the fitness gradient")
      told_grads = np.zeros((num_targets, population, num_dims), np.float32)
      told_grads[active] = ev.grad
      told_grads = grads(told_grads)
    told_states = strategy.tell(tell_keys, solutions, told_fitness, asked_states, **told_grads)
    # Block: tell is dispatched asynchronously, and its compute belongs to ask/tell's share.
    states = jax.block_until_ready(strategies_lib.select(state.active, told_states, states))
    t3 = time.perf_counter()
    state = _with_records(state, ev.records, ev.counts or {}, ev.flags or {})
    for name, values in (ev.counts or {}).items():
      state.counts[name][active] += np.asarray(values, np.int64)
    for name, values in (ev.flags or {}).items():
      raised = np.asarray(values, bool) & finite                 # [A, P]
      first = state.flag_first[name]
      first[active] = np.where((first[active] < 0) & raised.any(axis=1), g, first[active])
      state.flag_count[name][active] += raised.sum(axis=1)
    _update_records(state, settings, g, active, solutions_host, raw, finite, success, ev.records)
    # Best-so-far of every target, stopped ones included (their best stays what it was).
    state.curve_best[g] = np.where(np.isfinite(state.best_fitness), state.best_fitness, np.nan)
    timing = state.timing
    state = state.replace(
        generation=np.array(g + 1), strategy=states,
        timing=Timing(total=np.array(time_at_start + time.perf_counter() - start),
                      ask_tell=np.array(float(timing.ask_tell) + (t1 - t0) + (t3 - t2)),
                      evaluate=np.array(float(timing.evaluate) + (t2 - t1)),
                      images=np.array(float(timing.images) + len(active) * population)))
    done = int(state.generation)
    finished = done >= settings.num_generations or not state.active.any()
    if checkpoint_path is not None and (done % settings.checkpoint_every == 0 or finished):
      runs.save_checkpoint(checkpoint_path, state, config_hash)
    _log_progress(progress, state)
  return state


def _update_records(state, settings, g, active, solutions, raw, finite, success, records):
  population = raw.shape[1]
  k = settings.archive_size
  for a, t in enumerate(active):
    state.evaluations[t] += population
    state.nonfinite[t] += int((~finite[a]).sum())
    state.curve_nonfinite[g, t] = int((~finite[a]).sum())
    if finite[a].any():
      i = int(np.argmin(np.where(finite[a], raw[a], np.inf)))
      state.curve_mean[g, t] = float(raw[a][finite[a]].mean())
      if raw[a, i] < state.best_fitness[t]:
        state.best_fitness[t] = raw[a, i]
        state.best_solution[t] = solutions[t, i]
        state.best_generation[t] = g
        for name, values in records.items():
          state.best_record[name][t] = values[a, i]
    hits = np.flatnonzero(success[a] & finite[a])
    state.curve_successes[g, t] = len(hits)
    if len(hits) and state.first_success[t] < 0:
      state.first_success[t] = g
    for i in hits:
      slot = int(state.failures[t])
      if slot < k:
        state.archive_solution[t, slot] = solutions[t, i]
        state.archive_fitness[t, slot] = raw[a, i]
        state.archive_generation[t, slot] = g
        state.archive_member[t, slot] = i
        for name, values in records.items():
          state.archive_record[name][t, slot] = values[a, i]
      state.failures[t] += 1
    if settings.stop_after_failures and state.failures[t] >= settings.stop_after_failures:
      state.active[t] = False


def _log_progress(progress: runs.Progress, state: LoopState) -> None:
  timing = state.timing
  progress.log(int(state.generation), (
      f"active {int(state.active.sum())}/{len(state.active)}  failures found for "
      f"{int((state.failures > 0).sum())} targets  best {float(np.min(state.best_fitness)):.4g}"
      f"  {float(timing.images) / max(float(timing.evaluate), 1e-9):.2f} images/s  ask/tell "
      f"{100 * float(timing.ask_tell) / max(float(timing.total), 1e-9):.1f}%"),
               finished=not state.active.any())
