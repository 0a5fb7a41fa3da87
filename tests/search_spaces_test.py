"""Search spaces on the tiny SD: encode/decode round trips, every member of a real strategy's
population satisfies the space's constraint, decode is pure JAX (jit == eager, gradients where the
space is continuous), and the prompt space lays out token ids exactly as the tokenizer does."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffattack import text
from jaxdiffattack.search import spaces
from jaxdiffattack.search import strategies as strategies_lib
from jaxdiffattack.search import targets as targets_lib

from search_multidevice_worker import tiny_config  # pylint: disable=g-bad-import-order


@pytest.fixture(scope="module")
def make(tiny_sd_model, tiny_sd_dirs):
  sd, params = tiny_sd_model

  def build(space, name=None, **overrides):
    c = tiny_config(space, tiny_sd_dirs[1])
    for key, value in overrides.items():
      node = c
      *path, last = key.split(".")
      for p in path:
        node = node[p]
      node[last] = value
    targets = targets_lib.make_targets(c)
    return spaces.make_space(name or space, c, sd, params, targets, jax.random.PRNGKey(0))
  return build


def _decode(space, x, t):
  """What the experiment runs: the space's decode, jitted and vmapped (host arrays)."""
  return space.decode_population(np.asarray(x)[None], np.array([t]))


def population(space, std=3.0, size=16, name="Sep_CMA_ES"):
  """A real (wide) strategy population around each target's start: [T, P, n]."""
  s = strategies_lib.BatchedStrategy(name, size, space.num_dims, std_init=std)
  t = len(space.targets)
  keys = jax.random.split(jax.random.PRNGKey(1), t)
  x, _ = s.ask(keys, s.init(keys, space.init_means()))
  return np.asarray(x)


def prior(space, size=16):
  keys = jax.random.split(jax.random.PRNGKey(2), size)
  return np.asarray(jax.vmap(space.sample_prior)(keys))


def test_latent_sphere_round_trip_and_constraint(make):
  space = make("latent")
  d = space.num_dims
  assert d == 4 * 8 * 8
  # Latents on the sphere round-trip exactly; decode is the projection (idempotent).
  z = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (5, d)))
  z = z / np.linalg.norm(z, axis=1, keepdims=True) * np.sqrt(d)
  z = z.reshape((5,) + space.latent_shape)
  np.testing.assert_allclose(_decode(space, space.encode(z, 0), 0).latents, z, rtol=1e-5,
                             atol=1e-5)
  for x in list(population(space)) + [prior(space)]:
    out = _decode(space, x, 0)
    norms = np.linalg.norm(out.latents.reshape(len(x), -1), axis=1)
    np.testing.assert_allclose(norms, np.sqrt(d), rtol=1e-5)
    assert out.feasible.all() and (out.penalty == 0).all()
    np.testing.assert_allclose(out.metrics["latent_norm_ratio"], 1.0, rtol=1e-5)
    # Text side: the clean prompt's hidden states for every member.
    np.testing.assert_array_equal(out.cond, np.broadcast_to(space.clean_cond[0], out.cond.shape))
  # The search starts from each target's base latent (its clean generation).
  np.testing.assert_array_equal(space.init_means().reshape(space.base_latents.shape),
                                space.base_latents)
  latent, cond = space.clean(1)
  np.testing.assert_array_equal(latent, space.base_latents[1])


def test_latent_penalty_mode(make):
  space = make("latent", **{"latent.mode": "penalty", "latent.max_kl": 0.05})
  d = space.num_dims
  rng = np.random.default_rng(0)
  x = np.stack([rng.standard_normal(d), 3 * rng.standard_normal(d), rng.standard_normal(d) + 1])
  out = _decode(space, x, 0)
  np.testing.assert_array_equal(out.latents.reshape(3, -1), x.astype(np.float32))
  # KL(N(m, v) ‖ N(0, 1)) = (v + m² − 1 − ln v) / 2 with the sample moments.
  m, v = x.mean(1), x.var(1)
  np.testing.assert_allclose(out.metrics["latent_kl"], 0.5 * (v + m**2 - 1 - np.log(v)),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(out.penalty, 100.0 * out.metrics["latent_kl"], rtol=1e-6)
  assert out.feasible.tolist() == [True, False, False]


@pytest.mark.parametrize("level", ["hidden", "input"])
def test_embedding_round_trip_and_bound(make, level):
  space = make("embedding", **{"embedding.level": level})
  eps = 0.2
  k = len(space.positions)
  # Positions: every token of the longest prompt after the start token, through its end token.
  assert space.positions[0] == 1 and space.positions[-1] == space.clean_eos.max()
  # Zero perturbation is the clean prompt (for "input": via the encoder on token embeddings).
  zero = _decode(space, np.zeros((2, space.num_dims), np.float32), 1)
  np.testing.assert_allclose(zero.cond, np.broadcast_to(space.clean_cond[1], zero.cond.shape),
                             atol=1e-5)
  # Perturbations inside the bound round-trip.
  rng = np.random.default_rng(0)
  delta = rng.standard_normal((3, k, space.width))
  delta *= (0.5 * space.radius[1])[None, :, None] / np.linalg.norm(delta, axis=-1, keepdims=True)
  np.testing.assert_allclose(space.delta(space.params, space.encode(delta, 1), 1), delta,
                             rtol=1e-5, atol=1e-6)
  if level == "hidden":
    cond = _decode(space, space.encode(delta, 1), 1).cond
    np.testing.assert_allclose(cond[:, space.positions] - space.clean_cond[1, space.positions],
                               delta, atol=1e-5)
    untouched = np.setdiff1d(np.arange(cond.shape[1]), space.positions)
    np.testing.assert_array_equal(cond[:, untouched],
                                  np.broadcast_to(space.clean_cond[1, untouched],
                                                  cond[:, untouched].shape))
  # Every member of a wide population respects ‖δ_k‖ ≤ ε ‖e_k‖.
  for x in list(population(space, std=5.0)) + [prior(space)]:
    for t in range(len(space.targets)):
      out = _decode(space, x, t)
      assert (out.metrics["max_relative_perturbation"] <= eps * (1 + 1e-5)).all()
      d = space.delta(space.params, x, t)
      assert (np.linalg.norm(d, axis=-1) <= space.radius[t] * (1 + 1e-5)).all()


def test_token_round_trip_insertion_and_bound(make, tiny_sd_model):
  sd, params = tiny_sd_model
  space = make("token")
  table = np.asarray(text.token_embedding_table(sd, params["text_encoder"]))
  # A real token's embedding round-trips; the mean start is x = 0.
  tokens = table[[5, 77, 300]]
  np.testing.assert_allclose(space.token(space.encode(tokens, 0)), tokens, atol=1e-5)
  np.testing.assert_allclose(space.token(space.init_means()[:1]), space.mean[None], atol=1e-6)
  # Inserted just before the end-of-text token, the rest shifted by one.
  ids = space.ids[0]
  pos = int(space.clean_eos[0])
  inserted = np.asarray(space.insert(space.params, jnp.asarray(tokens[:1]), 0)[0])
  np.testing.assert_array_equal(inserted[pos], tokens[0])
  np.testing.assert_array_equal(inserted[:pos], table[ids[:pos]])
  np.testing.assert_array_equal(inserted[pos + 1:], table[ids[pos:-1]])
  # ... and encoding that equals encoding the token ids with the token's id inserted.
  cond = _decode(space, space.encode(tokens[:1], 0), 0).cond[0]
  new_ids = np.concatenate([ids[:pos], [5], ids[pos:-1]])[None]
  np.testing.assert_allclose(cond, text.encode_ids(sd, params["text_encoder"],
                                                   jnp.asarray(new_ids))[0], atol=1e-5)
  for x in list(population(space, std=10.0, name="CMA_ES")) + [prior(space)]:
    out = _decode(space, x, 2)
    assert (np.linalg.norm(space.token(x), axis=1) <= space.max_norm * (1 + 1e-5)).all()
    assert (out.metrics["token_norm_ratio"] <= 1 + 1e-5).all()
    assert out.cond.shape == (len(x), 16, sd.text_dim)


@pytest.mark.parametrize("encoding", ["integer", "logits"])
def test_prompt_round_trip_and_noun_kept(make, encoding):
  space = make("prompt", **{"prompt.encoding": encoding})
  # "cube" names a class of the label set: excluded from the vocabulary.
  assert space.words == ("x", "yz", "w", "q")
  # Slots: substitute "a"; insert before the noun; insert at the end.
  assert space.slots == [("sub", 0), ("ins", "before_noun"), ("ins", "end")]
  choices = np.array([[0, 0, 0], [2, 1, 4], [4, 0, 3]])
  np.testing.assert_array_equal(space.choices(space.encode(choices, 0)), choices)
  assert [space.prompt_text(c, 1) for c in choices] == ["a ball", "yz x ball q", "q ball w"]
  # The clean prompt is the search's start and decodes to the clean hidden states.
  clean = _decode(space, space.init_means()[:1], 0)
  np.testing.assert_allclose(clean.cond[0], space.clean_cond[0], atol=1e-6)
  np.testing.assert_allclose(clean.metrics["text_similarity"], 1.0, atol=1e-6)
  for x in list(population(space, std=4.0)) + [prior(space)]:
    for t, target in enumerate(space.targets):
      prompts = [space.prompt_text(c, t) for c in np.asarray(space.choices(x))]
      for p in prompts:
        assert target.label in p.split()
        assert set(p.split()) <= set(space.words) | {"a", target.label}
      out = _decode(space, x, t)
      sim = out.metrics["text_similarity"]
      np.testing.assert_array_equal(out.feasible, sim >= 0.5)
      np.testing.assert_allclose(out.penalty, 10.0 * np.maximum(0, 0.5 - sim))
  # The random baseline's prior covers every option of every slot.
  c = np.asarray(space.choices(prior(space, size=400)))
  assert all(set(c[:, s]) == set(range(space.options)) for s in range(c.shape[1]))


def test_unknown_space_and_bad_options(make):
  from jaxdiffattack.errors import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match="config.space='pixels' is invalid"):
    make("latent", name="pixels")
  with pytest.raises(ConfigError, match="latent.mode"):
    make("latent", **{"latent.mode": "cube"})
  with pytest.raises(ConfigError, match="prompt.insertions"):
    make("prompt", **{"prompt.insertions": ("middle",)})


def test_prompt_token_ids_are_the_tokenizers(make, tiny_sd_model):
  """Ids laid out in JAX == the tokenizer on the edited prompt's text, for random edits of every
  slot (and with truncation: the tiny tokenizer has 16 positions, one per character)."""
  sd, _ = tiny_sd_model
  space = make("prompt", **{"prompt.words": ("wwwwww", "yyyyy", "zz", "q")})
  choices = np.asarray(space.choices(prior(space, size=64)))
  for t in range(len(space.targets)):
    ids = np.asarray(space.token_ids(space.params, jnp.asarray(choices), t))
    texts = [space.prompt_text(c, t) for c in choices]
    expected = sd.tokenizer(texts, padding="max_length", max_length=ids.shape[1],
                            truncation=True, return_tensors="np")["input_ids"]
    np.testing.assert_array_equal(ids, expected)
  assert max(len(p.replace(" ", "")) for p in texts) + 2 > ids.shape[1]  # some truncated


@pytest.mark.parametrize("name", ["latent", "embedding", "token"])
def test_continuous_spaces_decode_is_pure_and_differentiable(make, name):
  """decode jitted == eager, and jax.grad of a scalar of it w.r.t. the solution is finite,
  non-zero and matches a central difference (float32, away from the constraints' kinks; measured
  agreement 1e-4 to 1.4e-3 relative)."""
  space = make(name)
  x = jnp.asarray(population(space, std=0.1, size=4)[1])   # [P, n] of target 1, off any kink
  eager = space.decode(space.params, x, 1)
  jitted = jax.jit(space.decode)(space.params, x, jnp.int32(1))
  for a, b in zip(jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(jitted)):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=2e-5,
                               atol=2e-5)
  w_latents = jax.random.normal(jax.random.PRNGKey(4), eager.latents.shape)
  w_cond = jax.random.normal(jax.random.PRNGKey(5), eager.cond.shape)

  def scalar(x):  # reads what the solution moves (the clean cond subtracted: less rounding)
    out = space.decode(space.params, x, 1)
    return jnp.sum(out.latents * w_latents) + jnp.sum((out.cond - space.clean_cond[1]) * w_cond)

  grad = jax.jit(jax.grad(scalar))(x)
  assert np.isfinite(grad).all() and np.abs(grad).max() > 0
  direction = np.asarray(jax.random.normal(jax.random.PRNGKey(6), x.shape))
  direction = direction / np.linalg.norm(direction)
  eps = 1e-2
  numeric = (scalar(x + eps * direction) - scalar(x - eps * direction)) / (2 * eps)
  np.testing.assert_allclose(float(jnp.sum(grad * direction)), float(numeric), rtol=1e-2,
                             atol=1e-3)
