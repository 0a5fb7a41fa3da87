"""The ATM step (jaxdiffattack.attacks.atm) on a tiny random SD and a tiny random CLIP judge: the
class word (every frozen position) never changes in any mode, only free logits move, a prompt's
attack depends on its index, not its place in the batch, the step compiles once, and the
soft-token gradient matches central finite differences (float64)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_sd
import tiny_vision
from jaxdiffattack import objectives
from jaxdiffattack import scorers
from jaxdiffattack import sampler
from jaxdiffattack import sharding
from jaxdiffattack import text
from jaxdiffattack.attacks import atm
from jaxdiffattack.attacks import modes
from jaxdiffattack.attacks import prompts
from jaxdiffattack.attacks import similarity

PROMPTS = prompts.PromptSet("short", ("a red star x", "a blue cross", "a green circle"),
                            ("red star", "blue cross", "green circle"), (3, 9, 5))
MODE_OF_PROMPT = ("replace", "extend", "released")


@pytest.fixture(scope="module")
def setup(tiny_sd_model, tmp_path_factory):
  sd, params = tiny_sd_model
  dirs = tiny_vision.build_all_cached(tmp_path_factory)
  config = tiny_vision.fitness_config(dirs)
  config.roles = {"attack": {"classifiers": ("toy_clip",)}}
  config.objectives = {"attack": ("margin",)}
  fit = objectives.build(config)   # a scoring.Scoring
  enc = prompts.encode(sd, PROMPTS)
  free = np.concatenate([modes.free_positions(m, enc.ids[i:i + 1], enc.lengths[i:i + 1],
                                              enc.class_mask[i:i + 1], extend_tokens=2)
                         for i, m in enumerate(MODE_OF_PROMPT)])
  idf = similarity.idf_table(enc.ids, enc.lengths, 514)
  weights = similarity.reference_weights(enc.ids, enc.lengths, idf)
  reference = np.asarray(text.encode_prompts(sd, params["text_encoder"], list(PROMPTS.prompts)))
  data = atm.prompts_from(enc.ids, free, PROMPTS.labels, np.array([7, 8, 9]), reference, weights)
  attack = atm.Attack.build(sd, atm.Settings(lr=2.0), fit.score_fn, "attack/margin",
                            num_steps=2)
  all_params = {"text_encoder": params["text_encoder"],
                "fused": sampler.fused_params(params, fit.params),
                "uncond": text.encode_prompts(sd, params["text_encoder"], [""])[0]}
  mesh = sharding.make_mesh(jax.devices()[:1])
  compiled = attack.compile(mesh, steps_per_call=2)
  state, metrics = compiled.step(all_params, compiled.init(enc.ids), data, jax.random.PRNGKey(0))
  return dict(sd=sd, enc=enc, free=free, data=data, attack=attack, params=all_params,
              compiled=compiled, state=state, metrics=metrics)


def test_frozen_positions_never_change_in_any_mode(setup):
  enc, free, state = setup["enc"], setup["free"], setup["state"]
  logits = np.asarray(state.logits)
  init = np.asarray(atm.init_logits(jnp.asarray(enc.ids), 514, 15.0))
  frozen = ~free
  np.testing.assert_array_equal(logits[frozen], init[frozen])   # no update at frozen positions
  assert not np.allclose(logits[free], init[free])                # the attack moved free ones
  assert (enc.class_mask & frozen).sum() == enc.class_mask.sum()  # the class word is frozen
  drawn = np.asarray(atm.hard_ids(jax.random.PRNGKey(1), logits, setup["data"], np.arange(64)))
  for i in range(3):
    np.testing.assert_array_equal(drawn[i][:, frozen[i]],
                                  np.broadcast_to(enc.ids[i][frozen[i]], (64, frozen[i].sum())))
  noise = jax.random.gumbel(jax.random.PRNGKey(2), logits[0].shape)
  weights = np.asarray(atm.relaxed_tokens(noise, jnp.asarray(logits[0]), enc.ids[0], free[0],
                                          1.0, False))
  np.testing.assert_array_equal(weights[frozen[0]], np.eye(514)[enc.ids[0][frozen[0]]])


def test_metrics_and_iteration_count(setup):
  state, metrics = setup["state"], setup["metrics"]
  assert int(state.iteration) == 2 and metrics.loss.shape == (2, 3)
  m = jax.tree_util.tree_map(np.asarray, metrics)
  np.testing.assert_allclose(m.loss, m.adv_loss - 4.0 * m.similarity, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(m.adv_loss, np.maximum(m.margin + 30.0, 0), rtol=1e-5, atol=1e-5)
  assert (m.similarity <= 1 + 1e-5).all() and (m.entropy > 0).all()


def test_a_prompts_attack_depends_on_its_index_not_its_place_in_the_batch(setup):
  """The same prompts in another order (each keeps its index) are attacked identically."""
  order = np.array([2, 0, 1])
  shuffled = jax.tree_util.tree_map(lambda a: np.asarray(a)[order], setup["data"])
  compiled = setup["compiled"]
  state, metrics = compiled.step(setup["params"], compiled.init(setup["enc"].ids[order]),
                                 shuffled, jax.random.PRNGKey(0))
  np.testing.assert_allclose(np.asarray(metrics.loss), np.asarray(setup["metrics"].loss)[:, order],
                             rtol=1e-5)
  np.testing.assert_allclose(np.asarray(state.logits), np.asarray(setup["state"].logits)[order],
                             atol=1e-5)
  # The step compiled once for this shape, whatever the state and data it was given.
  assert compiled.step._cache_size() == 1  # pylint: disable=protected-access


def test_soft_token_gradient_matches_finite_differences(tiny_sd_model):
  """d loss / d θ through Gumbel-softmax → token mix → text encoder → every sampler step → a
  linear read-out margin, plus the similarity term, == central differences, all in float64."""
  sd, params = tiny_sd_model
  enc = prompts.encode(sd, prompts.PromptSet("short", ("a red star",), ("red star",), (3,)))
  free = modes.free_positions("released", enc.ids, enc.lengths, enc.class_mask)
  with jax.enable_x64(True):
    sd64, p64 = tiny_sd.as_float64(sd, params)
    # The reference attention accumulates in float64 for float64 inputs (the XLA one in float32).
    sd64 = dataclasses.replace(sd64, text_encoder=sd.text_encoder.clone(
        dtype=jnp.float64, attention="reference"))
    readout = jnp.asarray(np.random.default_rng(0).normal(size=(16 * 16 * 3, 20)) / 10.0)

    def score_fn(w, images, aux):
      logits = images.reshape(images.shape[0], -1) @ w
      return {"margin": scorers.margin(logits, aux["label"])}

    attack = atm.Attack.build(sd64, atm.Settings(init_logit=2.0, grad_steps=None), score_fn,
                              "margin", num_steps=2)
    reference = text.encode_token_embeddings(
        sd64, p64["text_encoder"], text.embed_tokens(sd64, p64["text_encoder"], enc.ids))
    data = atm.Prompts(np.array([4], np.uint32), enc.ids, free, np.array([3], np.int32),
                       reference, jnp.full(enc.ids.shape, 1.0 / 8))
    all_params = {"text_encoder": p64["text_encoder"], "fused": sampler.fused_params(p64, readout),
                  "uncond": text.encode_token_embeddings(
                      sd64, p64["text_encoder"],
                      text.embed_tokens(sd64, p64["text_encoder"], enc.ids[:, :1].repeat(16, 1)))[0]}
    theta = atm.init_logits(jnp.asarray(enc.ids), 514, 2.0).astype(jnp.float64)
    theta = theta + jnp.asarray(np.random.default_rng(1).normal(0, 0.5, theta.shape))
    key = jax.random.PRNGKey(5)
    loss = lambda t: attack.losses(t, all_params, data, key, 0)[0]
    grad = np.asarray(jax.grad(loss)(theta))
    assert grad.dtype == np.float64
    eps = 1e-5
    position = int(np.flatnonzero(free[0])[1])
    for v in (int(enc.ids[0, position]), 7, 300):
      bump = jnp.zeros_like(theta).at[0, position, v].set(eps)
      numeric = (float(loss(theta + bump)) - float(loss(theta - bump))) / (2 * eps)
      np.testing.assert_allclose(grad[0, position, v], numeric, rtol=1e-5, atol=1e-9)
    assert np.abs(grad[0, position]).max() > 1e-6
