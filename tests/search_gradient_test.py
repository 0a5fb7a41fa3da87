"""Gradient searches (jaxdiffattack.search.gradient) through the search loop: a known constrained
optimum on closed-form objectives with the constraint held by every member at every generation,
resume == uninterrupted, the fitness gradient through the tiny SD sampler against finite
differences, the method end to end in the search job, and config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffattack import scoring
from jaxdiffattack import search
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.search import driver
from jaxdiffattack.search import experiment
from jaxdiffattack.search import gradient

from search_multidevice_worker import loop_killed_and_resumed
from search_multidevice_worker import tiny_config  # pylint: disable=g-bad-import-order

N_DIMS = 8
# Unconstrained minima of f(x) = ‖x − c_t‖², all outside both constraint sets below.
CENTRES = np.array([[3.0] * N_DIMS, np.linspace(-4, 4, N_DIMS), [-2.0, 5.0] * (N_DIMS // 2)],
                   np.float32)
RADIUS = np.sqrt(N_DIMS)


def sphere(x, t):
  """The latent space's constraint: ‖x‖ = √n."""
  del t
  return x * (RADIUS / jnp.linalg.norm(x, axis=-1, keepdims=True))


def ball(x, t):
  """An ε-ball (the embedding space's): ‖x‖ ≤ r_t, a different radius per target."""
  r = 1.0 + 0.5 * jnp.asarray(t, jnp.float32)
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x * jnp.minimum(1.0, r / jnp.maximum(norm, 1e-12))


def optimum(constraint):
  """The constrained minimiser of ‖x − c_t‖²: c_t scaled onto the sphere / onto the ball."""
  norms = np.linalg.norm(CENTRES, axis=1, keepdims=True)
  r = RADIUS if constraint is sphere else (1.0 + 0.5 * np.arange(3))[:, None]
  return CENTRES * r / norms


def evaluate_fn(seen=None):
  """f = ‖x − c_t‖² and ∇f = 2 (x − c_t); records every evaluated x in `seen`."""
  def evaluate(x, active):
    if seen is not None:
      seen.append((np.array(active), np.array(x)))
    d = x - CENTRES[active][:, None]
    f = (d ** 2).sum(-1).astype(np.float64)
    return driver.Evaluation(fitness=f, success=f < 1e-3, records={"f": f},
                             grad=(2 * d).astype(np.float32))
  return evaluate


def run(method, constraint, generations=150, population=4, lr=0.05, evaluate=None, **kw):
  strategy = gradient.GradientStrategy(method, population, N_DIMS, num_targets=3, lr=lr,
                                       std_init=1.0, project=constraint, **kw)
  settings = driver.LoopSettings(num_generations=generations, stop_after_failures=0, **{
      k: v for k, v in kw.items() if k == "checkpoint_every"})
  return driver.run_loop(strategy, evaluate or evaluate_fn(), jax.random.PRNGKey(0),
                         np.ones((3, N_DIMS), np.float32), settings)


@pytest.mark.parametrize("method", ["adam", "pgd"])
@pytest.mark.parametrize("constraint", [sphere, ball], ids=["sphere", "ball"])
def test_reaches_constrained_optimum_and_every_member_respects_it(method, constraint):
  seen = []
  state = run(method, constraint, evaluate=evaluate_fn(seen), lr=0.05 if method == "adam" else
              0.02)
  target = optimum(constraint)
  # Every target reaches ITS constrained optimum (the batch is T independent searches).
  np.testing.assert_allclose(state.best_solution, target, atol=0.05)
  best_possible = ((target - CENTRES) ** 2).sum(1)
  np.testing.assert_allclose(state.best_fitness, best_possible, rtol=1e-3, atol=1e-3)
  # Every member of every generation was inside the constraint (the restarts too).
  for active, x in seen:
    norms = np.linalg.norm(x, axis=-1)
    if constraint is sphere:
      np.testing.assert_allclose(norms, RADIUS, rtol=1e-5)
    else:
      assert (norms <= (1.0 + 0.5 * active)[:, None] * (1 + 1e-5)).all()
  assert (state.evaluations == 150 * 4).all()
  # Restarts: restart 0 starts at the target's start, the others spread around it.
  first = seen[0][1]
  np.testing.assert_allclose(first[:, 0], np.asarray(constraint(
      jnp.ones((3, N_DIMS)), jnp.arange(3)[:, None])),
                             rtol=1e-5)
  assert np.linalg.norm(first[:, 1] - first[:, 0], axis=-1).min() > 0.1


def test_pgd_linf_steps_by_sign_and_nonfinite_members_do_not_move():
  strategy = gradient.GradientStrategy("pgd", 3, N_DIMS, num_targets=1, lr=0.1, pgd_norm="linf")
  states = strategy.init(jax.random.PRNGKey(0)[None], np.zeros((1, N_DIMS), np.float32))
  x, _ = strategy.ask(None, states)
  grads = np.random.default_rng(0).normal(size=x.shape).astype(np.float32)
  fitness = np.array([[1.0, np.nan, 1.0]], np.float32)
  grads[0, 2, 0] = np.inf
  moved = strategy.tell(None, x, fitness, states, grads).x
  np.testing.assert_allclose(moved[0, 0], x[0, 0] - 0.1 * np.sign(grads[0, 0]), rtol=1e-6)
  np.testing.assert_array_equal(moved[0, 1:], x[0, 1:])   # NaN fitness, ±inf gradient


def test_killed_and_resumed_equals_uninterrupted(tmp_path, monkeypatch):
  settings = driver.LoopSettings(num_generations=7, stop_after_failures=0, checkpoint_every=2)
  make = lambda: gradient.GradientStrategy("adam", 4, N_DIMS, num_targets=3, lr=0.1,
                                           project=sphere)
  args = (evaluate_fn(), jax.random.PRNGKey(3), np.ones((3, N_DIMS), np.float32), settings)
  _, saved, _ = loop_killed_and_resumed(monkeypatch, make, args, tmp_path / "ckpt.msgpack")
  # The optimiser state is stored by field name: Adam's moments are in the file.
  assert int(saved["generation"]) == 4 and set(saved["strategy"]) == {"x", "opt_state", "step"}


def test_errors_are_one_line():
  cases = [
      (dict(name="sgd"), "config.strategy.name='sgd' is not a gradient method"),
      (dict(lr=0.0), "config.strategy.lr=0.0 is invalid"),
      (dict(pgd_norm="l1"), "config.strategy.pgd_norm='l1' is invalid"),
  ]
  for overrides, message in cases:
    kw = dict(name="pgd", lr=0.1, pgd_norm="l2") | overrides
    with pytest.raises(ConfigError, match=message) as info:
      gradient.GradientStrategy(kw.pop("name"), 4, N_DIMS, num_targets=1, **kw)
    assert "\n" not in str(info.value)
  # A gradient method without gradients from evaluate: one line naming the method.
  with pytest.raises(ConfigError, match="strategy.name"):
    run("adam", sphere, generations=1, evaluate=lambda x, a: driver.Evaluation(
        fitness=np.zeros(x.shape[:2]), success=np.zeros(x.shape[:2], bool), records={}))


@pytest.fixture(scope="module")
def gradient_run(tiny_sd_dirs, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("search_gradient")
  config = tiny_config("latent", tiny_sd_dirs[1])
  config.methods = ("adam", "random")
  config.strategy.lr = 0.2
  config.stop_after_failures = 0    # the whole budget: the fitness curve shows the descent
  config.save_images = False
  out = search.run(config, workdir, scoring=scoring.synthetic_scoring())
  return config, workdir, out


def test_fitness_gradient_through_sampler_matches_finite_differences(gradient_run, tiny_sd_model):
  """∇_x fitness of the fused sampler + synthetic scorer (latent space on the sphere) against a
  central finite difference of the same fitness along random directions."""
  config, _, _ = gradient_run
  sd, params = tiny_sd_model
  s = experiment.Search(config, sd, params, scoring.synthetic_scoring())
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 2, s.space.num_dims)).astype(np.float32)
  active = np.array([1])
  ev = s.evaluate_with_grad(x, active)
  plain = s.evaluate(x, active)
  np.testing.assert_allclose(ev.fitness, plain.fitness, rtol=1e-4, atol=1e-5)
  assert ev.grad.shape == x.shape and np.isfinite(ev.grad).all()
  h = 1e-2
  for _ in range(2):
    v = rng.normal(size=x.shape).astype(np.float32)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    up = s.evaluate(x + h * v, active).fitness
    down = s.evaluate(x - h * v, active).fitness
    fd = (up - down) / (2 * h)
    np.testing.assert_allclose((ev.grad * v).sum(-1), fd, rtol=0.05, atol=2e-4)


def test_gradient_method_in_the_search_job(gradient_run):
  config, workdir, out = gradient_run
  rows = [r for r in out["rows"]]
  assert [(r["method"], r["kind"]) for r in rows] == (
      [("adam", "gradient")] * 3 + [("random", "random")] * 3)
  for r in rows:
    assert r["budget"] == r["evaluations"] == 6 * 4
    assert r["gradient_evaluations"] == (r["evaluations"] if r["method"] == "adam" else 0)
    for f in r["failures"]:
      assert f["judges"]["evaluator"]["failure"]
  s = out["summary"]["methods"]["adam"]
  assert s["kind"] == "gradient" and s["gradient_evaluations"] == s["evaluations"]
  # "ball" passes clean (the synthetic judge reads its channel): adam lowers its fitness.
  ball = next(r for r in rows if r["method"] == "adam" and r["label"] == "ball")
  assert not ball["clean"]["verdict"]
  curve = [c for c in ball["curve_mean"] if c is not None]
  assert len(curve) >= 2 and curve[-1] < curve[0], curve


def test_gradient_config_errors(tiny_sd_dirs, tmp_path):
  config = tiny_config("prompt", tiny_sd_dirs[1])
  config.strategy.name = "adam"
  with pytest.raises(ConfigError, match="the prompt space .* has no gradient"):
    search.run(config, tmp_path, scoring=scoring.synthetic_scoring())
  config = tiny_config("latent", tiny_sd_dirs[1])
  config.strategy.grad_steps = 1
  with pytest.raises(ConfigError, match="strategy.grad_steps=1"):
    search.run(config, tmp_path, scoring=scoring.synthetic_scoring())


@pytest.mark.parametrize("space", ["embedding", "token"])
def test_gradient_method_in_embedding_and_token_spaces(space, tiny_sd_dirs, tmp_path):
  """PGD through the sampler in the other continuous spaces runs end to end, counts a gradient
  evaluation per evaluation, and what it evaluates is inside the space's bound (the ε-ball per
  position / the token norm bound)."""
  config = tiny_config(space, tiny_sd_dirs[1])
  config.strategy.name = "pgd"
  config.strategy.lr = 0.5
  config.stop_after_failures = 0
  config.baseline = ""
  config.num_generations = 2
  config.population_size = 3
  config.save_images = False
  out = search.run(config, tmp_path, scoring=scoring.synthetic_scoring())
  rows = out["rows"]
  assert len(rows) == 3 and all(r["kind"] == "gradient" for r in rows)
  for r in rows:
    assert r["evaluations"] == r["gradient_evaluations"] == 6
    assert np.isfinite(r["best_fitness"])
    for rec in [r["best"]["records"]] + [f["records"] for f in r["failures"]]:
      if space == "embedding":
        assert rec["space/max_relative_perturbation"] <= config.embedding.epsilon * (1 + 1e-5)
      else:
        assert rec["space/token_norm_ratio"] <= 1 + 1e-5


def test_config_checks_read_the_space_interface_not_its_name(tiny_sd_dirs, monkeypatch):
  """A space registered with one line is validated by what it declares (`continuous`,
  `initial_noise`), not by a list of names in the search job."""
  from jaxdiffattack.search import spaces  # pylint: disable=g-import-not-at-top

  class Words(spaces.PromptSpace):   # like the prompt space: no gradient
    name = "words"

  class Noise(spaces.LatentSpace):   # like the latent space: it searches the initial noise
    name = "noise"

  monkeypatch.setitem(spaces.SPACES, "words", Words)
  monkeypatch.setitem(spaces.SPACES, "noise", Noise)
  config = tiny_config("prompt", tiny_sd_dirs[1])
  config.space, config.strategy.name = "words", "adam"
  with pytest.raises(ConfigError, match="the words space is not continuous"):
    experiment.validate(config)
  config = tiny_config("latent", tiny_sd_dirs[1])
  config.space, config.strategy.grad_steps = "noise", 1
  with pytest.raises(ConfigError, match="use None for the noise space"):
    experiment.validate(config)
  config.strategy.grad_steps, config.transfer_per_target = None, 2
  experiment.validate(config)   # transfer is allowed: the space searches the initial noise
  config.space = "embedding"
  with pytest.raises(ConfigError, match="transfer_per_target=2"):
    experiment.validate(config)
