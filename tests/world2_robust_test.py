"""World 2's noise-trained surrogate (issue #26 item 1; jaxdiffattack.world2.train `robust`):
the Gaussian noise augmentation's statistics and the noisy test top-1 against NumPy, the config
and stage wiring (order, DEPENDS, one-line errors), the latent search's world-2 surrogate
ensemble, and the smoke stage trained, recorded, exported and read back through `hub` and the
`world2_robust` scorer (resume == uninterrupted: tests/world2_train_test.py's ResumeTest)."""
import json
import os
import pathlib
import shutil
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxdiffattack import errors
from jaxdiffattack import objectives
from jaxdiffattack import scorers
from jaxdiffattack import variants
from jaxdiffattack.models import hub
from jaxdiffattack.toy import train as toy_train
from jaxdiffattack.world2 import scene
from jaxdiffattack.world2 import train


def _config(arg="smoke"):
  return variants.load_config("train_world2", arg)


# ------------------------------------------------------------------------ augmentation ---
@pytest.fixture(scope="module")
def augment():
  return jax.jit(train.gaussian_noise_augment)


def test_noise_augment_statistics_against_numpy(augment):
  batch, fraction, max_std = 3000, 0.3, 0.5
  rng = np.random.default_rng(0)
  pixels = rng.uniform(-1, 1, (batch, 3, 8, 8)).astype(np.float32)
  out, sigma = augment(jax.random.PRNGKey(3), jnp.asarray(pixels), fraction, max_std)
  out, sigma = np.asarray(out, np.float64), np.asarray(sigma, np.float64)
  assert out.shape == pixels.shape and sigma.shape == (batch,)
  diff = out - pixels
  noised = np.any(diff != 0, axis=(1, 2, 3))
  # The images reported noise-free are returned bit for bit; the others all changed.
  np.testing.assert_array_equal(noised, sigma > 0)
  np.testing.assert_array_equal(out[~noised], pixels[~noised])
  # Fraction of noised images: Binomial(batch, noise_fraction).
  k = int(noised.sum())
  assert stats.binomtest(k, batch, fraction).pvalue > 1e-3, k
  # σ ~ U(0, noise_max_std) over the noised images.
  s = sigma[noised]
  assert s.min() > 0 and s.max() <= max_std
  assert stats.kstest(s, "uniform", args=(0, max_std)).pvalue > 1e-3
  # The added noise, measured from the pixels alone: per image std ≈ its σ (192 values: the
  # ratio's sd is ≈ 0.05), mean ≈ 0; the σ range is covered; pooled residual / σ ~ N(0, 1).
  flat = diff[noised].reshape(k, -1)
  ratio = flat.std(axis=1) / s
  assert np.all(np.abs(ratio - 1) < 0.3), (ratio.min(), ratio.max())
  assert abs(np.mean(ratio) - 1) < 0.01
  assert np.all(np.abs(flat.mean(axis=1)) < 5 * s / np.sqrt(flat.shape[1]))
  measured = flat.std(axis=1)
  assert measured.min() < 0.02 * max_std and measured.max() > 0.95 * max_std
  z = (flat / s[:, None]).ravel()
  assert stats.kstest(z, "norm").pvalue > 1e-3


def test_noise_augment_edge_fractions_and_keys(augment):
  pixels = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (64, 3, 4, 4)), jnp.float32)
  key = jax.random.PRNGKey(0)
  out, sigma = augment(key, pixels, 0.0, 0.5)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(pixels))
  assert not np.any(np.asarray(sigma))
  out, sigma = augment(key, pixels, 1.0, 0.5)
  assert np.all(np.asarray(sigma) > 0)
  assert np.all(np.any(np.asarray(out) != np.asarray(pixels), axis=(1, 2, 3)))
  again, _ = augment(key, pixels, 1.0, 0.5)
  np.testing.assert_array_equal(np.asarray(again), np.asarray(out))  # a function of the key
  other, _ = augment(jax.random.PRNGKey(1), pixels, 1.0, 0.5)
  assert not np.allclose(np.asarray(other), np.asarray(out))


def test_fit_classifier_runs_the_extra_augmentation_in_its_step(tmp_path):
  # A hook that poisons the pixels must poison the trained weights: the step applies it.
  c = variants.train_stage(1, 2, 1e-3, final_lr_fraction=1.0, warmup_steps=0, log_every=1,
                           ckpt_every=1, lecun_reinit=False)
  model = toy_train.init_net(_Linear(3), 0, jnp.zeros((1, 4, 4, 3)))
  images = np.zeros((2, 4, 4, 3), np.uint8)
  targets = np.eye(3, dtype=np.float32)[:2]
  cfg = types.SimpleNamespace(seed=0)
  clean = toy_train.fit_classifier("lin", cfg, c, model, lambda step: (images, targets),
                                   tmp_path / "a")
  poisoned = toy_train.fit_classifier(
      "lin", cfg, c, model, lambda step: (images, targets), tmp_path / "b",
      extra_augment=lambda key, x: x * jnp.nan)
  assert np.all(np.isfinite(np.asarray(clean.params["Dense_0"]["kernel"])))
  assert np.all(np.isnan(np.asarray(poisoned.params["Dense_0"]["kernel"])))


# ------------------------------------------------------------------- noisy accuracy ---
class _Linear(nn.Module):
  classes: int

  @nn.compact
  def __call__(self, x):  # x [B, H, W, 3] -> [B, classes]
    return nn.Dense(self.classes)(x.reshape(x.shape[0], -1))


def test_noisy_accuracy_against_numpy():
  n, size, classes = 41, 6, 5
  rng = np.random.default_rng(2)
  module = _Linear(classes)
  params = module.init(jax.random.PRNGKey(4), jnp.zeros((1, size, size, 3)))["params"]
  w = np.asarray(params["Dense_0"]["kernel"], np.float64)
  b = np.asarray(params["Dense_0"]["bias"], np.float64)
  images = rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8)
  single = rng.random(n) < 0.8
  sel = np.flatnonzero(single)

  def numpy_logits(x_nchw):
    return np.transpose(x_nchw, (0, 2, 3, 1)).reshape(len(x_nchw), -1) @ w + b

  clean = (images[sel].astype(np.float64) / 255 - 0.5) / 0.5
  clean = np.transpose(clean, (0, 3, 1, 2))
  labels = np.argmax(numpy_logits(clean), -1)
  flip = rng.random(len(sel)) < 0.3  # some wrong even when clean
  labels[flip] = rng.integers(0, classes, flip.sum())
  group_cls = np.full((n, 3), -1, np.int64)
  group_cls[sel, 0] = labels
  group_cls[~single, 0] = rng.integers(0, classes, (~single).sum())
  split = types.SimpleNamespace(single=single, images=images, group_cls=group_cls)
  key = jax.random.PRNGKey(7)
  stds = (0.0, 0.1, 0.4)
  # NumPy: the j-th single scene's noise is normal(fold_in(key, j), [3, H, W]).
  noise = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(key, j), (3, size, size)),
                               np.float64) for j in range(len(sel))])
  want = [float(np.mean(np.argmax(numpy_logits(clean + s * noise), -1) == labels))
          for s in stds]
  model = toy_train.Net(module, params)
  for batch in (7, 250):  # the noise of an image does not depend on the batch split
    got = train.classifier_accuracy(model, split, batch=batch, noise_stds=stds, key=key)
    np.testing.assert_allclose(got, want, atol=1e-12)
  assert want[0] > want[2]  # the noise matters here: the test can fail
  with pytest.raises(ValueError, match="need a key"):
    train.classifier_accuracy(model, split, noise_stds=(0.1,))
  config = _config()
  metrics = train.classifier_metrics(config, model, split)
  assert list(metrics) == ["test_single_top1"] + [f"test_single_top1_sigma{s:g}"
                                                  for s in config.eval_noise_stds]
  np.testing.assert_allclose(metrics["test_single_top1"], want[0], atol=1e-12)


# --------------------------------------------------------------------------- config ---
def test_config_stage_order_and_errors():
  full = _config(None)
  assert full.robust.num_steps == full.resnet.num_steps
  assert full.robust.batch_size == full.resnet.batch_size
  assert tuple(full.robust.hidden_sizes) == tuple(full.resnet.hidden_sizes)
  assert full.robust.arch == "resnet" and full.robust.seed != full.seed
  assert full.robust.noise_max_std >= max(full.eval_noise_stds)
  assert 0 < full.robust.noise_fraction < 1
  stages = train.parse_stages(full)
  assert stages.index("robust") == stages.index("resnet") + 1
  assert train.DEPENDS["robust"] == ("resnet",) and "robust" in train.DEPENDS["export"]
  module, kind = train.CLASSIFIERS[train.classifier_arch(full, "robust")](full, full.robust)
  assert kind == "resnet" and module.config.hidden_sizes == tuple(full.resnet.hidden_sizes)
  smoke = _config()
  assert smoke.robust.num_steps == smoke.resnet.num_steps <= 4
  for key, value, match in (("noise_fraction", 1.5, "config.robust.noise_fraction=1.5"),
                            ("noise_max_std", -0.1, "config.robust.noise_max_std=-0.1")):
    bad = _config()
    bad.robust[key] = value
    with pytest.raises(errors.ConfigError, match=match) as e:
      train.validate(bad)
    assert "\n" not in str(e.value)
  bad = _config()
  bad.eval_noise_stds = (0.1, 0.0)
  with pytest.raises(errors.ConfigError, match="config.eval_noise_stds"):
    train.validate(bad)
  bad = _config()
  bad.robust.arch = "vgg"
  bad.stages = "robust"
  with pytest.raises(errors.ConfigError, match="config.robust.arch='vgg' is invalid"):
    train.parse_stages(bad)


def test_latent_search_world2_surrogates_include_the_robust_one():
  for arg in ("world2", "world2,smoke", "world2,protocol"):
    c = variants.load_config("latent_search", arg)
    resolved = objectives.scoring_config(c)
    surrogate = tuple(resolved["roles"]["surrogate"]["classifiers"])
    evaluator = tuple(resolved["roles"]["evaluator"]["classifiers"])
    assert "world2_robust" in surrogate, arg
    assert {"world2_vit", "world2_resnet"} <= set(surrogate)
    assert evaluator == ("world2_regnet",) and not set(evaluator) & set(surrogate), arg
    assert "world2_robust" in c.judges
  assert scorers.SCORERS["world2_robust"].toy_kind == "robust"
  scorers.SCORERS["world2_robust"].validate("scorers.world2_robust")


# ------------------------------------------------------------------ smoke stage (slow) ---
@pytest.fixture(scope="module")
def robust_run(tmp_path_factory):
  """(workdir, config, metrics): smoke resnet + robust trained, robust exported to
  workdir/export/robust; records the noise augmentation's arguments at trace time."""
  workdir = tmp_path_factory.mktemp("w2robust")
  config = _config()
  config.stages = "resnet,robust"
  calls, real = [], train.gaussian_noise_augment

  def spy(key, pixels, noise_fraction, noise_max_std):
    calls.append((noise_fraction, noise_max_std, pixels.shape))
    return real(key, pixels, noise_fraction, noise_max_std)

  train.gaussian_noise_augment = spy
  try:
    out = train.run(config, workdir)
  finally:
    train.gaussian_noise_augment = real
  train.export_classifier(config, workdir, "robust", workdir / "export" / "robust")
  return workdir, config, out, calls


@pytest.mark.slow
def test_robust_stage_trains_with_noise_and_records_both_models(robust_run):
  workdir, config, out, calls = robust_run
  c = config.robust
  assert calls and all(call[:2] == (c.noise_fraction, c.noise_max_std) for call in calls)
  assert calls[0][2] == (c.batch_size, 3, config.data.image_size, config.data.image_size)
  rec = json.loads(train.stage_file(workdir, "robust").read_text())
  assert rec["num_steps"] == c.num_steps
  names = ["test_single_top1"] + [train.noisy_metric(s) for s in config.eval_noise_stds]
  for name in names:
    assert 0 <= rec["metrics"][name] <= 1
    # The plain ResNet's readings in the robust record are its own stage's (same noise draws).
    assert rec["metrics"][f"resnet_{name}"] == out["resnet"][name]
  ck = train.load_checkpoint(workdir, "robust")
  assert int(ck["step"]) == c.num_steps
  plain = train.load_checkpoint(workdir, "resnet")
  # Its own seed: a different initialisation from the plain ResNet (step-0 weights differ).
  a, _ = train.classifier_net(config, "robust")
  b, _ = train.classifier_net(config, "resnet")
  assert not all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a.params),
                                                      jax.tree_util.tree_leaves(b.params)))
  assert jax.tree_util.tree_structure(ck["params"]) == jax.tree_util.tree_structure(
      plain["params"])


@pytest.mark.slow
def test_robust_export_loads_through_hub_and_scorer(robust_run, monkeypatch):
  workdir, config, _, _ = robust_run
  export = workdir / "export"
  monkeypatch.setenv(hub.WORLD2_ENV, str(export))
  assert hub.resolve("world2", "robust") == (export / "robust").resolve()
  raw = json.loads((export / "robust" / "config.json").read_text())
  assert raw["model_type"] == "resnet" and len(raw["id2label"]) == scene.NUM_CLASSES
  scorer = scorers.load_scorer("world2_robust", scorers.SCORERS["world2_robust"], "world2")
  size = config.data.image_size
  images = np.random.default_rng(5).integers(0, 256, (3, size, size, 3)).astype(np.uint8)
  got = np.asarray(scorers.logits(scorer, scorer.params, jnp.asarray(images / 255.0,
                                                                     jnp.float32)))
  model, _ = train.load_classifier(config, workdir, "robust")
  want = np.asarray(model.module.apply(model.params, train._channels_last(  # pylint: disable=protected-access
      train.to_pixels(images))))
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
