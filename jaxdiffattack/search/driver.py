"""The generation loop of a batch of evolutionary searches, apart from what is searched.

Per generation g, for T targets at once (SAGE, arXiv 2306.00974, with evosax populations in the
role of its search policy):

    ask (vmapped over targets) → population [T, P, n] → evaluate(active targets' members) →
    fitness (+ diversity term) → tell (vmapped; finished targets keep their state)

`evaluate` is any function from solutions to per-member fitness, success flags and records, so
the loop is tested on cheap closed-form objectives (`tests/search_driver_test.py`) and runs the
diffusion sampler + scorer in `jaxdiffattack.search.experiment`.

Randomness: target t's ask and tell keys at generation g are fold_in(fold_in(fold_in(key, t), g),
0 / 1), so results do not depend on device count, batch split, which targets are still active, or
the resume point. A target stops after `stop_after_failures` confirmed failures (0: never) or when
its budget of `num_generations × P` evaluations is spent.

Diversity (SAGE's diversity term, optional): fitness += weight × max_j sim(x, a_j) over this
target's failures a_j found so far (`similarity` from the search space; cosine by default), so
later failures are pushed away from earlier ones. "Best fitness" is tracked without it.

Checkpoint/resume: the whole loop state (strategy states, records, archive, curves) is saved
atomically as one npz every `checkpoint_every` generations and at the end; a run restarted on the
same file continues from the last saved generation and ends with exactly the same results as an
uninterrupted run (CPU; timing fields aside).
"""

import dataclasses
import functools
import io as _io
import pathlib
import time
from typing import Callable, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack import io
from jaxdiffattack.errors import check
from jaxdiffattack.search import strategies as strategies_lib

TIMING_KEYS = ("time/total", "time/ask_tell", "time/evaluate", "images")


class Evaluation(NamedTuple):
  """What `evaluate` returns for A active targets × P members."""
  fitness: np.ndarray          # [A, P] float, minimised; NaN/inf = failed evaluation
  success: np.ndarray          # [A, P] bool: the held-out judge confirms a failure
  records: dict                # name → [A, P] float: scores and constraint figures to keep
  counts: dict | None = None   # name → [A] int: per-target tallies summed over generations


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


def new_state(states, init_means: np.ndarray, settings: LoopSettings) -> dict:
  """The loop state before generation 0 (a dict of arrays: it is the checkpoint); `states` are
  the strategy's initial stacked states."""
  t, n = init_means.shape
  g, k = settings.num_generations, settings.archive_size
  state = {
      "generation": np.array(0),
      "active": np.ones(t, bool),
      "evaluations": np.zeros(t, np.int64),
      "nonfinite": np.zeros(t, np.int64),
      "first_success": np.full(t, -1, np.int64),
      "failures": np.zeros(t, np.int64),
      "best_fitness": np.full(t, np.inf, np.float64),
      "best_solution": np.asarray(init_means, np.float32).copy(),
      "best_generation": np.full(t, -1, np.int64),
      "archive_solution": np.zeros((t, k, n), np.float32),
      "archive_fitness": np.full((t, k), np.nan, np.float64),
      "archive_generation": np.full((t, k), -1, np.int64),
      "archive_member": np.full((t, k), -1, np.int64),
      "curve_best": np.full((g, t), np.nan, np.float64),   # best so far (NaN: none finite yet)
      "curve_mean": np.full((g, t), np.nan, np.float64),
      "curve_successes": np.zeros((g, t), np.int64),
      "curve_nonfinite": np.zeros((g, t), np.int64),
  }
  state.update({name: np.array(0.0) for name in TIMING_KEYS})
  state.update(strategies_lib.state_to_arrays(states))
  return state


def _ensure_records(state: dict, records: dict, t: int, k: int) -> None:
  for name in records:
    if f"best_record/{name}" not in state:
      state[f"best_record/{name}"] = np.full(t, np.nan, np.float64)
      state[f"archive_record/{name}"] = np.full((t, k), np.nan, np.float64)


def records_of(state: dict, prefix: str) -> dict:
  """{name: array} of the state's `best_record/...`, `archive_record/...` or `count/...`."""
  return {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + "/")}


def run_loop(strategy: strategies_lib.BatchedStrategy, evaluate: Callable, key: jax.Array,
             init_means: np.ndarray, settings: LoopSettings, *, checkpoint_path=None,
             config_hash: str = "", similarity: Callable = cosine_similarity) -> dict:
  """Runs (or resumes) T searches to the end of their budget; returns the final loop state.

  Args:
    strategy: the batched strategy (P members per target per generation).
    evaluate: `evaluate(solutions [A, P, n], targets [A] int) -> Evaluation` for the A active
      targets (in increasing target order).
    key: the run's key (all draws fold in target, generation, purpose).
    init_means: [T, n] start of each search.
    settings: budget, stopping, archive, diversity, checkpointing.
    checkpoint_path: npz file to save to and resume from (None: no checkpointing).
    config_hash: stored with the checkpoint; a checkpoint of another config is refused.
    similarity: `similarity(x [M, n], archive [K, n]) -> [M, K]` for the diversity term.
  """
  check(settings.num_generations >= 1, "num_generations", settings.num_generations,
        "use an integer >= 1")
  check(settings.archive_size >= 1, "archive_size", settings.archive_size,
        "use an integer >= 1")
  num_targets = init_means.shape[0]
  population = strategy.population_size
  template_states = strategy.init(target_keys(key, num_targets, 0, 2), init_means)
  state = None
  if checkpoint_path is not None:
    state = load_checkpoint(checkpoint_path, config_hash)
  if state is None:
    state = new_state(template_states, init_means, settings)
  states = strategies_lib.state_from_arrays(template_states, state)
  # Compile ask and tell outside the timed loop (pure functions: results are unaffected).
  warm_x, warm_states = strategy.ask(target_keys(key, num_targets, 0, 3), states)
  warm_told = strategy.tell(target_keys(key, num_targets, 0, 3), warm_x,
                            np.zeros(warm_x.shape[:2], np.float32), warm_states)
  jax.block_until_ready(strategies_lib.select(state["active"], warm_told, states))
  start = time.perf_counter()
  start_generation = int(state["generation"])
  time_at_start = float(state["time/total"])

  while int(state["generation"]) < settings.num_generations and state["active"].any():
    g = int(state["generation"])
    t0 = time.perf_counter()
    active = np.flatnonzero(state["active"])
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
        n_arch = min(int(state["failures"][t]), settings.archive_size)
        if n_arch:
          sim = similarity(solutions_host[t], state["archive_solution"][t, :n_arch])
          told[a] = told[a] + settings.diversity_weight * np.max(sim, axis=1)
    told_fitness[active] = told
    told_states = strategy.tell(tell_keys, solutions, told_fitness, asked_states)
    # Block: tell is dispatched asynchronously, and its compute belongs to ask/tell's share.
    states = jax.block_until_ready(strategies_lib.select(state["active"], told_states, states))
    t3 = time.perf_counter()
    _ensure_records(state, ev.records, num_targets, settings.archive_size)
    for name, values in (ev.counts or {}).items():
      state.setdefault(f"count/{name}", np.zeros(num_targets, np.int64))
      state[f"count/{name}"][active] += np.asarray(values, np.int64)
    _update_records(state, settings, g, active, solutions_host, raw, finite, success, ev.records)
    # Best-so-far of every target, stopped ones included (their best stays what it was).
    state["curve_best"][g] = np.where(np.isfinite(state["best_fitness"]), state["best_fitness"],
                                      np.nan)
    state["generation"] = np.array(g + 1)
    state["time/ask_tell"] = np.array(float(state["time/ask_tell"]) + (t1 - t0) + (t3 - t2))
    state["time/evaluate"] = np.array(float(state["time/evaluate"]) + (t2 - t1))
    state["images"] = np.array(float(state["images"]) + len(active) * population)
    state["time/total"] = np.array(time_at_start + time.perf_counter() - start)
    state.update(strategies_lib.state_to_arrays(states))
    done = int(state["generation"])
    finished = done >= settings.num_generations or not state["active"].any()
    if checkpoint_path is not None and (done % settings.checkpoint_every == 0 or finished):
      _save_checkpoint(checkpoint_path, state, config_hash)
    _progress(settings, state, start, start_generation)
  return state


def _update_records(state, settings, g, active, solutions, raw, finite, success, records):
  population = raw.shape[1]
  k = settings.archive_size
  for a, t in enumerate(active):
    state["evaluations"][t] += population
    state["nonfinite"][t] += int((~finite[a]).sum())
    state["curve_nonfinite"][g, t] = int((~finite[a]).sum())
    if finite[a].any():
      i = int(np.argmin(np.where(finite[a], raw[a], np.inf)))
      state["curve_mean"][g, t] = float(raw[a][finite[a]].mean())
      if raw[a, i] < state["best_fitness"][t]:
        state["best_fitness"][t] = raw[a, i]
        state["best_solution"][t] = solutions[t, i]
        state["best_generation"][t] = g
        for name, values in records.items():
          state[f"best_record/{name}"][t] = values[a, i]
    hits = np.flatnonzero(success[a] & finite[a])
    state["curve_successes"][g, t] = len(hits)
    if len(hits) and state["first_success"][t] < 0:
      state["first_success"][t] = g
    for i in hits:
      slot = int(state["failures"][t])
      if slot < k:
        state["archive_solution"][t, slot] = solutions[t, i]
        state["archive_fitness"][t, slot] = raw[a, i]
        state["archive_generation"][t, slot] = g
        state["archive_member"][t, slot] = i
        for name, values in records.items():
          state[f"archive_record/{name}"][t, slot] = values[a, i]
      state["failures"][t] += 1
    if settings.stop_after_failures and state["failures"][t] >= settings.stop_after_failures:
      state["active"][t] = False


def _progress(settings, state, start, start_generation):
  done = int(state["generation"])
  total = settings.num_generations
  elapsed = time.perf_counter() - start
  rate = (done - start_generation) / max(elapsed, 1e-9)
  remaining = 0 if not state["active"].any() else total - done
  eta = remaining / rate if rate > 0 else float("nan")
  share = float(state["time/ask_tell"]) / max(float(state["time/total"]), 1e-9)
  logging.info(
      "%s gen %d/%d (%.0f%%)  active %d/%d  failures found for %d targets  best %.4g  "
      "%.2f images/s  ask/tell %.1f%%  elapsed %.0fs  ETA %.0fs", settings.label, done, total,
      100.0 * done / total, int(state["active"].sum()), len(state["active"]),
      int((state["failures"] > 0).sum()), float(np.min(state["best_fitness"])),
      float(state["images"]) / max(float(state["time/evaluate"]), 1e-9), 100 * share, elapsed,
      eta)


def load_checkpoint(path, config_hash: str) -> dict | None:
  path = pathlib.Path(path)
  if not path.exists():
    return None
  with np.load(path) as saved:
    state = {k: saved[k] for k in saved.files}
  check(str(state.pop("config_hash")) == config_hash, "workdir", str(path.parent),
        "holds a search with a different config; use a new --workdir")
  # npz stores scalars as 0-d arrays; make the mutable per-target arrays writable copies.
  state = {k: np.array(v) for k, v in state.items()}
  logging.info("resuming search from %s at generation %d", path, int(state["generation"]))
  return state


def _save_checkpoint(path, state: dict, config_hash: str) -> None:
  buffer = _io.BytesIO()
  np.savez(buffer, config_hash=np.array(config_hash), **state)
  io.atomic_write_bytes(path, buffer.getvalue())
