"""The search loop on closed-form objectives (no diffusion model): optimum reached, batching of
targets, non-finite fitness, stopping, resume, strategy registry and memory refusal."""

import numpy as np
import pytest

from jaxdiffattack.errors import ConfigError
from jaxdiffattack.errors import UserError
from jaxdiffattack.search import driver
from jaxdiffattack.search import strategies as strategies_lib

from search_multidevice_worker import loop_killed_and_resumed  # pylint: disable=g-bad-import-order

import jax
import jax.numpy as jnp

N_DIMS = 6
OPTIMA = np.array([[1.5] * N_DIMS, [-2.0] * N_DIMS, np.linspace(-1, 1, N_DIMS)], np.float32)


def sphere_evaluate(optima, nan_if=None, calls=None):
  """f(x) = ‖x − x*_t‖²; success when f < 0.05. Optionally NaN where nan_if(x) holds."""
  def evaluate(x, active):
    f = ((x - optima[active][:, None]) ** 2).sum(-1).astype(np.float64)
    if nan_if is not None:
      bad = nan_if(x)
      f = np.where(bad, np.nan, f)
      if calls is not None:
        calls.append(int(bad.sum()))
    return driver.Evaluation(fitness=f, success=f < 0.05, records={"f": f, "x0": x[..., 0]})
  return evaluate


def run(name, generations=50, population=12, optima=OPTIMA, stop=0, evaluate=None, **kw):
  strategy = strategies_lib.BatchedStrategy(name, population, N_DIMS, num_targets=len(optima),
                                            std_init=kw.pop("std_init", 1.0), **kw)
  settings = driver.LoopSettings(num_generations=generations, stop_after_failures=stop)
  return driver.run_loop(strategy, evaluate or sphere_evaluate(optima), jax.random.PRNGKey(0),
                         np.zeros((len(optima), N_DIMS), np.float32), settings)


@pytest.mark.parametrize("name,tol", [("Sep_CMA_ES", 1e-3), ("CMA_ES", 1e-3), ("SNES", 1e-2),
                                      ("LM_MA_ES", 0.1), ("SimpleGA", 2.0)])
def test_reaches_known_optimum_per_target(name, tol):
  kw = {"std_init": 0.3} if name == "SimpleGA" else {}
  state = run(name, **kw)
  # Each target converges to ITS optimum: the batch of searches is really T independent ones.
  assert state.best_fitness.max() < tol, state.best_fitness
  np.testing.assert_allclose(state.best_solution, OPTIMA, atol=np.sqrt(tol) * 2)
  assert (state.evaluations == 50 * 12).all()
  # Best-so-far curves never increase; best record matches the best fitness.
  assert (np.diff(state.curve_best, axis=0) <= 0).all()
  np.testing.assert_allclose(state.best_record["f"], state.best_fitness)


def test_random_baseline_draws_from_prior_and_learns_nothing():
  lo, hi = 5.0, 6.0
  sampling_fn = lambda key: jax.random.uniform(key, (N_DIMS,), minval=lo, maxval=hi)
  seen = []

  def evaluate(x, active):
    seen.append(x.copy())
    return sphere_evaluate(OPTIMA)(x, active)

  run("random", generations=3, sampling_fn=sampling_fn, evaluate=evaluate)
  x = np.concatenate(seen)
  assert x.min() >= lo and x.max() <= hi
  # Fresh draws every generation.
  assert not np.allclose(seen[0], seen[1])


def test_nonfinite_fitness_is_worst_and_counted():
  calls = []
  # About a quarter of members fail (NaN), plus -inf must not win either.
  nan_if = lambda x: x[..., 1] > x[..., 0] + 0.7
  evaluate = sphere_evaluate(OPTIMA, nan_if=nan_if, calls=calls)

  failed = []

  def with_neg_inf(x, active):
    ev = evaluate(x, active)
    f = ev.fitness.copy()
    f[:, 0] = -np.inf
    failed.append(int((~np.isfinite(f)).sum()))
    return ev._replace(fitness=f, success=np.isfinite(f) & (f < 0.05))

  state = run("Sep_CMA_ES", evaluate=with_neg_inf)
  assert sum(calls) > 50  # NaNs really happened, beside the -inf members
  # Every NaN and -inf member of every generation counted.
  assert int(state.nonfinite.sum()) == sum(failed)
  assert np.isfinite(state.best_fitness).all()
  assert state.best_fitness.max() < 1e-2
  assert (state.curve_nonfinite.sum(axis=0) == state.nonfinite).all()


def test_all_failed_generation_leaves_state_unchanged():
  s = strategies_lib.BatchedStrategy("Sep_CMA_ES", 8, N_DIMS, std_init=1.0)
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  states = s.init(keys, jnp.zeros((2, N_DIMS)))
  x, asked = s.ask(keys, states)
  fitness = np.full((2, 8), np.nan, np.float32)
  fitness[1] = np.arange(8)  # target 1 learns, target 0 does not
  told = s.tell(keys, x, fitness, asked)
  for new, old in zip(jax.tree_util.tree_leaves(told), jax.tree_util.tree_leaves(asked)):
    np.testing.assert_array_equal(np.asarray(new)[0], np.asarray(old)[0])
  assert not np.allclose(np.asarray(told.mean)[1], np.asarray(asked.mean)[1])


def test_stop_after_failures_and_first_success():
  state = run("Sep_CMA_ES", stop=1, generations=60)
  assert (state.failures >= 1).all() and not state.active.any()
  first = state.first_success
  assert (first >= 0).all()
  # A target stops in the generation of its first success: its budget used ends there.
  np.testing.assert_array_equal(state.evaluations, (first + 1) * 12)
  assert (state.archive_fitness[:, 0] < 0.05).all()
  np.testing.assert_array_equal(state.archive_generation[:, 0], first)


def test_target_results_do_not_depend_on_the_batch():
  """Target t's draws come from fold_in(key, t): alone or among others, the same search."""
  alone = run("Sep_CMA_ES", generations=10, optima=OPTIMA[:1])
  batch = run("Sep_CMA_ES", generations=10)
  np.testing.assert_allclose(alone.best_solution[0], batch.best_solution[0], rtol=1e-6)
  np.testing.assert_allclose(alone.curve_best[:, 0], batch.curve_best[:, 0], rtol=1e-6)


def test_target_keys_fold_in_target_generation_purpose():
  key = jax.random.PRNGKey(7)
  keys = driver.target_keys(key, 3, 5, 1)
  for t in range(3):
    expected = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, t), 5), 1)
    np.testing.assert_array_equal(keys[t], expected)
  assert not np.array_equal(keys[0], driver.target_keys(key, 3, 6, 1)[0])
  assert not np.array_equal(keys[0], driver.target_keys(key, 3, 5, 0)[0])


def test_diversity_term_pushes_later_failures_apart():
  def evaluate(x, active):
    # Many optima: success anywhere on a ring; fitness prefers one point of it.
    r = np.linalg.norm(x[..., :2], axis=-1)
    f = (r - 1.0) ** 2 + 0.01 * ((x[..., :2] - [1.0, 0.0]) ** 2).sum(-1)
    return driver.Evaluation(fitness=f, success=np.abs(r - 1.0) < 0.1, records={})

  results = []
  for weight in (0.0, 5.0):
    strategy = strategies_lib.BatchedStrategy("Sep_CMA_ES", 12, N_DIMS, std_init=0.5)
    settings = driver.LoopSettings(num_generations=30, stop_after_failures=0, archive_size=6,
                                   diversity_weight=weight)
    state = driver.run_loop(strategy, evaluate, jax.random.PRNGKey(1),
                            np.zeros((1, N_DIMS), np.float32), settings)
    archive = state.archive_solution[0]
    assert state.failures[0] >= 6
    sims = driver.cosine_similarity(archive, archive)[np.triu_indices(6, 1)]
    results.append(sims.mean())
  assert results[1] < results[0], results


def test_killed_and_resumed_loop_equals_uninterrupted(tmp_path, monkeypatch):
  settings = driver.LoopSettings(num_generations=7, stop_after_failures=0, checkpoint_every=2)
  make = lambda: strategies_lib.BatchedStrategy("LM_MA_ES", 8, N_DIMS, num_targets=3,
                                                std_init=1.0)
  args = (sphere_evaluate(OPTIMA), jax.random.PRNGKey(3), np.zeros((3, N_DIMS), np.float32),
          settings)
  path = tmp_path / "ckpt.msgpack"
  _, saved, resumed = loop_killed_and_resumed(monkeypatch, make, args, path)
  # Saved by field name: the file alone says where the loop stopped.
  assert int(saved["generation"]) == 4 and set(saved["best_record"]) == {"f", "x0"}
  assert type(resumed) is driver.LoopState  # pylint: disable=unidiomatic-typecheck
  with pytest.raises(ConfigError, match="different config"):
    driver.run_loop(make(), *args, checkpoint_path=path, config_hash="other")
  # A workdir of the old npz format is refused with one line naming the change.
  (tmp_path / "old.npz").write_bytes(b"")
  with pytest.raises(UserError, match="old npz format .*msgpack by field name"):
    driver.run_loop(make(), *args, checkpoint_path=tmp_path / "old.msgpack", config_hash="h")


def test_registry_overrides_and_errors():
  assert {"CMA_ES", "Sep_CMA_ES", "LM_MA_ES", "SNES", "Open_ES", "SimpleGA",
          "random"} <= set(strategies_lib.names())
  s = strategies_lib.BatchedStrategy("SNES", 8, 4, std_init=0.25, params={"lr_std_init": 0.5})
  assert float(s.params.std_init) == 0.25 and float(s.params.lr_std_init) == 0.5
  assert strategies_lib.parse_overrides("c_std=0.1, d_std=2,flag=true") == {
      "c_std": 0.1, "d_std": 2.0, "flag": True}
  with pytest.raises(ConfigError, match="param_overrides"):
    strategies_lib.parse_overrides("c_std")
  with pytest.raises(ConfigError, match="strategy.name='CMA'"):
    strategies_lib.BatchedStrategy("CMA", 8, 4)
  with pytest.raises(ConfigError, match="params.nonsense is invalid for SNES"):
    strategies_lib.BatchedStrategy("SNES", 8, 4, params={"nonsense": 1})
  with pytest.raises(ConfigError, match="kwargs.bogus"):
    strategies_lib.BatchedStrategy("SNES", 8, 4, kwargs={"bogus": 1})
  with pytest.raises(ConfigError, match="Open_ES"):
    strategies_lib.BatchedStrategy("Open_ES", 7, 4)  # needs an even population


def test_a_strategy_registered_by_one_line_is_used_by_name(monkeypatch):
  """A new strategy is one class plus one `STRATEGIES` line: here Sep-CMA-ES with a smaller
  default step, under its own name; it is listed, runs, and differs from the original only
  through its change (same step given explicitly: the same search, member for member)."""

  class SmallStepSep(strategies_lib.STRATEGIES["Sep_CMA_ES"]):
    @property
    def _default_params(self):
      return super()._default_params.replace(std_init=0.5)

  monkeypatch.setitem(strategies_lib.STRATEGIES, "SmallStepSep", SmallStepSep)
  assert "SmallStepSep" in strategies_lib.names()
  mine = run("SmallStepSep", std_init=None)
  assert mine.best_fitness.max() < 1e-2, mine.best_fitness
  ref = run("Sep_CMA_ES", std_init=0.5)
  np.testing.assert_array_equal(mine.best_solution, ref.best_solution)
  np.testing.assert_array_equal(mine.curve_best, ref.curve_best)


def test_full_cma_refused_at_sd15_latent_size(caplog):
  with pytest.raises(ConfigError) as e:
    strategies_lib.BatchedStrategy("CMA_ES", 64, 16384, num_targets=4)
  message = str(e.value)
  assert "3.00 GiB per target" in message and "12.00 GiB for 4 targets" in message
  for alternative in ("Sep_CMA_ES", "LM_MA_ES", "SNES", "Open_ES"):
    assert alternative in message
  strategies_lib.check_memory("CMA_ES", 2000, 1, 4096)  # warned about, allowed
  assert "CMA_ES keeps 3 full 2000×2000" in caplog.text
  strategies_lib.BatchedStrategy("Sep_CMA_ES", 64, 16384)  # diagonal: fine
