"""The fitness API: roles, ensembles, objectives, fusion with the sampler, sharding, errors.

Tiny random CLIP/ViT/ResNet checkpoints (tests/tiny_vision.py) stand in for the toy models, and
the tiny SD fixture (tests/conftest.py) generates the 16×16 images. References: the scorers'
own outputs (checked against transformers in scorers_test.py) combined in NumPy.
"""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffattack import objectives
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import scorers
from jaxdiffattack import text
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.errors import UserError
from jaxdiffattack.toy import world

import tiny_vision

LABELS = np.array([0, 7, 13], np.int32)
PROMPTS = [world.caption([l]) for l in LABELS]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
  return tiny_vision.build_all_cached(tmp_path_factory)


@pytest.fixture(scope="module")
def fit(dirs):
  return objectives.build(tiny_vision.fitness_config(dirs))


def _images(n=3, seed=0):
  return np.random.default_rng(seed).random((n, 16, 16, 3)).astype(np.float32)


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_default_roles_and_scores(fit):
  assert set(fit.roles) == {"surrogate", "evaluator"}
  # The toy surrogate is an ensemble (ResNet + CLIP zero-shot, mean probabilities).
  assert [s.name for s in fit.roles["surrogate"].scorers] == ["toy_resnet", "toy_clip"]
  assert fit.roles["surrogate"].spec.combine == "mean_probs"
  assert [s.name for s in fit.roles["evaluator"].scorers] == ["toy_vit", "toy_clip"]
  images = _images()
  aux = fit.aux(labels=LABELS, prompts=PROMPTS)
  scores = {k: np.asarray(v) for k, v in fit(images, aux).items()}
  assert set(scores) == set(fit.names) == {
      f"{role}/{o}" for role, chosen in objectives.DEFAULT_OBJECTIVES.items() for o in chosen}
  assert all(v.shape == (3,) for v in scores.values())
  resnet, vit, clip = (fit.roles["surrogate"].classifiers[0], fit.roles["evaluator"].classifiers[0],
                       fit.roles["evaluator"].clip)
  x = jnp.asarray(images)
  logits = jax.jit(scorers.logits, static_argnums=0)
  surrogate_probs = np.mean([
      _softmax(np.asarray(logits(m, m.params, x)))[np.arange(3), m.label_map.indices[LABELS]]
      for m in fit.roles["surrogate"].classifiers], axis=0)
  np.testing.assert_allclose(scores["surrogate/target_prob"], surrogate_probs, rtol=1e-4)
  vit_logits = np.asarray(logits(vit, vit.params, x))
  vit_target = vit.label_map.indices[LABELS]
  np.testing.assert_array_equal(scores["evaluator/top1_hit"],
                                np.argmax(vit_logits, -1) == vit_target)
  np.testing.assert_array_equal(scores["evaluator/margin"] > 0, scores["evaluator/top1_hit"] == 1)
  text_emb = scorers.text_embeddings(clip.model, clip.params["model"], PROMPTS)
  clip_score = jax.jit(scorers.clip_score, static_argnums=0)(clip, clip.params, x, text_emb)
  np.testing.assert_allclose(scores["evaluator/clip_score"], clip_score, atol=1e-4)
  # Labels may also be given by name.
  np.testing.assert_array_equal(fit.aux(labels=[world.LABELS[l] for l in LABELS])["label"], LABELS)


@pytest.mark.parametrize("combine,space", [("mean_probs", "model"), ("mean_logits", "labels")])
def test_ensembles(fit, combine, space):
  """ViT (shuffled id2label) + ResNet + CLIP zero-shot, combined in NumPy by label."""
  loaded = {s.name: s for role in fit.roles.values() for s in role.scorers}
  members = ("toy_vit", "toy_resnet", "toy_clip")
  config = objectives.default_config("toy")
  config.roles = {"surrogate": dict(classifiers=members, combine=combine, space=space)}
  config.objectives = {"surrogate": ("target_prob", "margin", "top1_hit", "pred", "confidence")}
  ensemble = objectives.build(config, loaded=loaded)
  images = _images(seed=1)
  scores = {k: np.asarray(v) for k, v in ensemble(images, ensemble.aux(labels=LABELS)).items()}
  # A judge's reading (pred, confidence) needs no target.
  reading, params = objectives.make_score_fn(ensemble.roles, {"surrogate": ("pred", "confidence")})
  unlabelled = reading(params, jnp.asarray(images), {})
  assert set(unlabelled) == {"surrogate/pred", "surrogate/confidence"}
  # Every member's logits reordered to label order (the toy label set is all their classes).
  logits_fn = jax.jit(scorers.logits, static_argnums=0)
  by_label = np.stack([np.asarray(logits_fn(loaded[m], loaded[m].params, jnp.asarray(images)))
                       [:, loaded[m].label_map.indices] for m in members])       # [M, P, 20]
  if combine == "mean_probs":
    probs = _softmax(by_label).mean(0)
    log_probs = np.log(probs)
    margin = log_probs[np.arange(3), LABELS] - np.where(
        np.eye(20, dtype=bool)[LABELS], -np.inf, log_probs).max(-1)
  else:
    logits = by_label.mean(0)
    probs = _softmax(logits)
    margin = logits[np.arange(3), LABELS] - np.where(
        np.eye(20, dtype=bool)[LABELS], -np.inf, logits).max(-1)
  np.testing.assert_allclose(scores["surrogate/target_prob"], probs[np.arange(3), LABELS],
                             rtol=1e-4)
  np.testing.assert_allclose(scores["surrogate/margin"], margin, rtol=1e-4, atol=1e-5)
  role = ensemble.roles["surrogate"]
  predicted = [role.output_ids[i] for i in scores["surrogate/pred"]]
  assert predicted == [world.LABELS[i] for i in np.argmax(probs, -1)]
  np.testing.assert_allclose(scores["surrogate/confidence"], probs.max(-1), rtol=1e-4)
  np.testing.assert_array_equal(unlabelled["surrogate/pred"], scores["surrogate/pred"])


def test_vmap_and_new_objective(fit, monkeypatch):
  """score_fn vmaps over an extra axis; an objective is one function + one registry line."""
  monkeypatch.setitem(objectives.OBJECTIVES, "target_logit",
                      objectives.Objective(lambda o: jnp.take_along_axis(
                          o.logits, o.target[:, None], -1)[:, 0], "target"))
  score_fn, params = objectives.make_score_fn(fit.roles, {"surrogate": ("target_logit",
                                                                     "target_prob")})
  images = jnp.asarray(_images(n=4).reshape(2, 2, 16, 16, 3))
  labels = jnp.asarray(np.array([[1, 2], [3, 4]], np.int32))
  batched = jax.jit(jax.vmap(score_fn, in_axes=(None, 0, 0)))(params, images, {"label": labels})
  for i in range(2):
    single = jax.jit(score_fn)(params, images[i], {"label": labels[i]})
    for key in single:
      np.testing.assert_allclose(batched[key][i], single[key], rtol=1e-5, atol=1e-6)
  assert batched["surrogate/target_logit"].shape == (2, 2)


def test_config_errors_are_one_line(fit):
  loaded = {s.name: s for role in fit.roles.values() for s in role.scorers}

  def build(**overrides):
    config = objectives.default_config("toy")
    for key, value in overrides.items():
      config[key] = value
    return objectives.build(config, loaded=loaded)

  cases = [
      (dict(roles={"surrogate": dict(classifiers=("toy_vitt",))}),
       "config.roles.surrogate.classifiers='toy_vitt' is not a scorer"),
      (dict(roles={"surrogate": dict(classifiers=("toy_vit",), combine="max")}),
       "combine='max' is invalid"),
      (dict(roles={"surrogate": dict(classifier=("toy_vit",))}), "unknown key 'classifier'"),
      (dict(roles={"surrogate": dict(classifiers=("toy_vit",), clip="toy_resnet")}),
       "is a classifier, not a CLIP"),
      (dict(objectives={"surrogate": ("target_probability",)}),
       "objective 'target_probability' is unknown"),
      (dict(objectives={"surrogate": ("clip_score",)}), "'clip_score' needs a CLIP"),
      (dict(objectives={"judge": ("top1_hit",)}), "config.objectives.judge: no such role"),
      (dict(roles={}), "config.roles is empty"),
      # The held-out evaluator shares no classifier with the surrogate ensemble.
      (dict(roles={"surrogate": dict(classifiers=("toy_resnet", "toy_vit")),
                   "evaluator": dict(classifiers=("toy_vit",))}),
       r"config.roles.evaluator.classifiers shares \['toy_vit'\] with config.roles.surrogate"),
  ]
  for overrides, message in cases:
    with pytest.raises(ConfigError, match=message) as info:
      build(**overrides)
    assert "\n" not in str(info.value)
  with pytest.raises(ConfigError, match="config.labels='imagenet'"):
    build(labels="imagenet")
  with pytest.raises(UserError, match="needs aux\\['label'\\]"):
    fit(_images(), {})
  with pytest.raises(UserError, match="'purple blob' is not in label set 'toy'"):
    fit.aux(labels=["red circle", "purple blob"])
  with pytest.raises(UserError, match="label index 20 is outside"):
    fit.aux(labels=[20])


def sampler_inputs(sd, params):
  """The population of the fused tests (the 8-device worker rebuilds exactly these)."""
  latents = np.asarray(sampler_lib.member_latents(jax.random.PRNGKey(0), np.arange(len(LABELS)),
                                                  sd.latent_shape))
  cond = np.asarray(text.encode_prompts(sd, params["text_encoder"], PROMPTS))
  uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0])
  return latents, cond, uncond


@pytest.fixture(scope="module")
def fused_single_device(tiny_sd_model, fit):
  """Sampler → preprocessing → scorers in one compiled program, on one device."""
  sd, params = tiny_sd_model
  settings = sampler_lib.SamplerSettings(num_steps=2)
  fused = sampler_lib.PopulationSampler(sd, params, settings, score_fn=fit.score_fn,
                                        score_params=fit.params)
  aux = fit.aux(labels=LABELS, prompts=PROMPTS)
  return fused, fused(*sampler_inputs(sd, params), 7.5, aux=aux), aux


def test_fused_with_sampler_and_gradients_through_it(tiny_sd_model, fit, fused_single_device):
  """The fused program returns the scores of its own images; d(objectives)/d(latents) finite."""
  sd, params = tiny_sd_model
  fused, out, aux = fused_single_device
  assert out.images.shape == (3, 16, 16, 3)
  expected = fit(out.images, aux)
  assert set(out.scores) == set(expected)
  for key, value in expected.items():
    np.testing.assert_allclose(out.scores[key], value, atol=1e-4, err_msg=key)

  # One backward pass through the CLIP and a classifier, the VAE and 2 UNet steps (finite
  # iff each term is); each objective's image gradient is checked in test_gradients_wrt_images.
  latents, cond, uncond = sampler_inputs(sd, params)

  def loss(latents):
    images = sampler_lib.sample(sd, fused.scheduler, params, latents, cond, uncond, 7.5).images
    scores = fit.score_fn(fit.params, images, aux)
    return scores["surrogate/target_prob"].sum() + 0.01 * scores["evaluator/clip_score"].sum()

  grad = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(latents)))
  assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_gradients_wrt_images(fit):
  """Each differentiable objective of each role, w.r.t. the images: finite and non-zero."""
  aux = fit.aux(labels=LABELS, prompts=PROMPTS)
  score_fn, params = objectives.make_score_fn(fit.roles, {
      "surrogate": ("target_prob", "target_logprob", "margin"),
      "evaluator": ("target_prob", "margin", "clip_score")})

  def summed(images):
    scores = score_fn(params, images, aux)
    return jnp.stack([v.sum() for v in scores.values()])

  jacobian = np.asarray(jax.jit(jax.jacrev(summed))(jnp.asarray(_images())))  # [6, P, ...]
  assert jacobian.shape[0] == 6
  for grad in jacobian:
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_eight_devices_match_one(tiny_sd_dirs, dirs, fused_single_device, tmp_path):
  """The worker runs the same fused program over 8 fake devices (P=3 padded to 8, microbatch 1)."""
  _, single, _ = fused_single_device
  out = tmp_path / "scores.npz"
  worker = pathlib.Path(__file__).with_name("scorers_multidevice_worker.py")
  env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parent.parent))
  args = [str(tiny_sd_dirs[1]), str(dirs["clip"]), str(dirs["vit"]), str(dirs["resnet"]), str(out)]
  proc = subprocess.run([sys.executable, str(worker), *args], env=env, capture_output=True,
                        text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = np.load(out)
  assert int(r["devices"]) == 8 and int(r["devices_holding_scores"]) == 8
  assert {k.replace(".", "/") for k in r.files if "/" not in k and k not in (
      "devices", "devices_holding_scores")} == set(single.scores)
  for key, value in single.scores.items():
    # Equal up to float32 summation order (XLA blocks GEMMs differently per batch size).
    np.testing.assert_allclose(r[key.replace("/", ".")], value, atol=1e-4, rtol=1e-4,
                               err_msg=key)
