"""The own RegNet classifier against PyTorch transformers' RegNetForImageClassification.

References are transformers' own modules on the very same files: the PyTorch model (random
weights and BatchNorm statistics, `tiny_vision.randomise`), transformers' Flax RegNet (its
`flax_model.msgpack` layout), `AutoImageProcessor` for the scorer's preprocessing. Logits agree
within 1e-5 of their scale in float32, in inference mode (stored statistics) and in training
mode (batch statistics). Configs cover Y blocks (squeeze-excitation) with group convolutions,
the SE width's rounding (round(10 / 4) = 2), X blocks with one group and GELU, and world 2's
evaluator at full size (64² inputs, 83 classes).
"""

import json
import shutil

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from jaxdiffattack import objectives
from jaxdiffattack import scorers
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.models import convert_transformers
from jaxdiffattack.models import regnet
from jaxdiffattack.toy import world

import parity
import tiny_vision

CONFIGS = {
    # groups 2 then 4 (width // groups_width), SE of round(8/4)=2 then round(16/4)=4 units.
    "y_grouped": dict(layer_type="y", embedding_size=8, hidden_sizes=[16, 32], depths=[1, 2],
                      groups_width=8),
    # SE widths round(10/4) = 2 (half to even), round(12/4) = 3; groups 3 and 6; GELU.
    "y_se_rounding_gelu": dict(layer_type="y", embedding_size=10, hidden_sizes=[12, 24],
                               depths=[2, 1], groups_width=4, hidden_act="gelu"),
    # X blocks, one group (groups_width > width), three stages.
    "x_one_group": dict(layer_type="x", embedding_size=8, hidden_sizes=[8, 16, 16],
                        depths=[1, 1, 2], groups_width=64),
}


def _pytorch(directory_or_config, num_labels=7, seed=4, directory=None):
  config = transformers.RegNetConfig(num_labels=num_labels, **directory_or_config)
  model = transformers.RegNetForImageClassification(config).eval()
  if directory is not None:
    tiny_vision.save_random(model, directory, seed=seed)
  return model


def _logits(model, pixels):
  with torch.no_grad():
    return model(pixel_values=torch.from_numpy(pixels)).logits.numpy()


def _nhwc(pixels):
  return jnp.asarray(pixels.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_match_pytorch(tmp_path, name):
  model = _pytorch(CONFIGS[name], directory=tmp_path)
  assert any(m.groups > 1 for m in model.modules() if isinstance(m, torch.nn.Conv2d)) == (
      name != "x_one_group")
  pixels = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
  loaded = convert_transformers.load(tmp_path, "regnet")
  assert set(loaded.params) == {"params", "batch_stats"}
  parity.assert_rel_close(loaded.module.apply(loaded.params, _nhwc(pixels)),
                          _logits(model, pixels), what=f"{name} eval")
  model.train()
  want_train = _logits(model, pixels)
  got_train, _ = loaded.module.apply(loaded.params, _nhwc(pixels), train=True,
                                     mutable=["batch_stats"])
  parity.assert_rel_close(got_train, want_train, what=f"{name} train")
  assert not np.allclose(_logits(model.eval(), pixels), want_train, atol=1e-3)


@pytest.mark.parametrize("stride,size,groups", [(1, 6, 3), (2, 7, 4), (2, 8, 2)])
def test_grouped_conv_gradients_equal_xla_autodiff(stride, size, groups):
  """The custom kernel gradient (patch einsum) and the input gradient equal JAX's own autodiff
  of the grouped convolution, odd sizes and stride 2 included."""
  rng = np.random.default_rng(stride * size)
  x = jnp.asarray(rng.standard_normal((2, size, size, 4 * groups)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((3, 3, 4, 6 * groups)), jnp.float32)
  reference = lambda x, k: jax.lax.conv_general_dilated(
      x, k, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups)
  ours = lambda x, k: regnet.grouped_conv(x, k, stride, groups)
  np.testing.assert_allclose(ours(x, kernel), reference(x, kernel), rtol=1e-5, atol=1e-5)
  weights = jnp.asarray(rng.standard_normal(reference(x, kernel).shape), jnp.float32)
  loss = lambda f: lambda x, k: jnp.sum(weights * jnp.tanh(f(x, k)))
  got = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(x, kernel)
  want = jax.grad(loss(reference), argnums=(0, 1))(x, kernel)
  for g, w in zip(got, want):
    parity.assert_rel_close(g, w, what=f"stride {stride}, size {size}")


@pytest.mark.slow   # transformers' Flax RegNet initialises and converts eagerly: ~40 s
def test_transformers_flax_msgpack_loads(tmp_path):
  """A flax_model.msgpack written by transformers' own Flax RegNet loads unchanged."""
  if not hasattr(transformers, "FlaxRegNetForImageClassification"):
    pytest.skip("this transformers has no Flax RegNet (removed in transformers 5)")
  model = _pytorch(CONFIGS["y_grouped"], directory=tmp_path / "pt")
  flax_model = transformers.FlaxRegNetForImageClassification.from_pretrained(
      tmp_path / "pt", from_pt=True)
  flax_model.save_pretrained(tmp_path / "flax")
  assert not (tmp_path / "flax" / "model.safetensors").exists()
  loaded = convert_transformers.load(tmp_path / "flax", "regnet")
  pixels = np.random.default_rng(1).standard_normal((2, 3, 24, 24)).astype(np.float32)
  parity.assert_rel_close(loaded.module.apply(loaded.params, _nhwc(pixels)),
                          _logits(model, pixels), what="transformers msgpack")


def test_world2_evaluator_full_size_matches_pytorch(tmp_path):
  """WORLD2_EVALUATOR as transformers builds it from the config.json we write: same parameter
  count, same logits on 64² images."""
  config = regnet.WORLD2_EVALUATOR
  raw = convert_transformers.config_dict("regnet", config)
  (tmp_path / "config.json").write_text(json.dumps(raw))
  model = transformers.RegNetForImageClassification(
      transformers.AutoConfig.from_pretrained(tmp_path)).eval()
  tiny_vision.save_random(model, tmp_path, seed=7)
  loaded = convert_transformers.load(tmp_path, "regnet")
  assert loaded.config == config
  count = sum(x.size for x in jax.tree_util.tree_leaves(loaded.params["params"]))
  assert count == sum(p.numel() for p in model.parameters())
  assert count == 1_025_545   # the figure regnet.py and the model card state
  pixels = np.random.default_rng(2).standard_normal((2, 3, 64, 64)).astype(np.float32)
  logits = loaded.module.apply(loaded.params, _nhwc(pixels))
  assert logits.shape == (2, 83)
  parity.assert_rel_close(logits, _logits(model, pixels), what="world2 evaluator")


def test_regnet_model_trains_and_exports_to_transformers(tmp_path):
  """regnet_model → a train-mode step (batch statistics updated) → convert_transformers.save:
  reads back identically, and PyTorch transformers (config.json + the same weights) computes the
  same logits. (The msgpack's names are transformers' Flax ones: test_transformers_flax_...)"""
  config = regnet.RegNetConfig(embedding_size=8, hidden_sizes=[16, 24], depths=[1, 2],
                               groups_width=8, num_labels=5)
  module, variables = regnet.regnet_model(config, jax.random.PRNGKey(3), image_size=32)
  assert set(variables) == {"params", "batch_stats"}
  pixels = np.random.default_rng(3).standard_normal((4, 3, 32, 32)).astype(np.float32)
  _, updated = module.apply(variables, _nhwc(pixels) + 0.5, train=True, mutable=["batch_stats"])
  variables = {"params": variables["params"], "batch_stats": updated["batch_stats"]}
  means = jax.tree_util.tree_leaves(variables["batch_stats"])
  assert any(np.abs(np.asarray(m)).max() > 1e-3 for m in means)  # statistics moved
  labels = tuple(f"class {i}" for i in range(5))
  out = convert_transformers.save(tmp_path / "ckpt", "regnet", config, variables, labels)
  again = convert_transformers.load(out, "regnet")
  assert again.config == config
  for a, b in zip(jax.tree_util.tree_leaves(again.params), jax.tree_util.tree_leaves(variables)):
    np.testing.assert_array_equal(a, b)
  assert again.raw_config["id2label"]["4"] == "class 4"
  ours = module.apply(variables, _nhwc(pixels))
  reference = transformers.RegNetForImageClassification(
      transformers.AutoConfig.from_pretrained(out)).eval()
  flat = flax.traverse_util.flatten_dict(variables)
  state = convert_transformers.tree_to_pytorch(flat, reference.state_dict().keys(), "regnet",
                                               config)
  result = reference.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                                     strict=False)
  assert not result.unexpected_keys
  assert all(k.endswith("num_batches_tracked") for k in result.missing_keys)
  parity.assert_rel_close(ours, _logits(reference, pixels), what="exported → PyTorch")


def _one_line(error_type, match, directory):
  with pytest.raises(error_type, match=match) as info:
    convert_transformers.load(directory, "regnet")
  message = str(info.value)
  assert "\n" not in message and str(directory) in message, message


def test_bad_weights_and_configs_are_one_line_errors(tmp_path):
  _pytorch(CONFIGS["y_grouped"], directory=tmp_path / "ok")
  directory = shutil.copytree(tmp_path / "ok", tmp_path / "bad")
  weights_file = directory / "model.safetensors"
  tensors = safetensors.numpy.load_file(str(weights_file))
  se = "regnet.encoder.stages.1.layers.0.layer.2.attention.0.weight"
  safetensors.numpy.save_file({k: v for k, v in tensors.items() if k != se}, str(weights_file))
  _one_line(convert_transformers.WeightsMismatchError,
            "missing weight params/regnet/encoder/stages/1/layers/0/layer/2/attention/0/kernel",
            directory)
  safetensors.numpy.save_file(tensors, str(weights_file))
  raw = json.loads((directory / "config.json").read_text())

  def edit(**changes):
    (directory / "config.json").write_text(json.dumps(dict(raw, **changes)))

  edit(groups_width=4)     # 4 and 8 groups instead of 2 and 4: the 3×3 kernels' input width
  _one_line(convert_transformers.WeightsMismatchError,
            r"weight params/regnet/encoder/stages/0/layers/0/layer/1/convolution/kernel has "
            r"shape \(3, 3, 8, 16\), config.json implies \(3, 3, 4, 16\)", directory)
  edit(layer_type="x")     # no SE weights in an X block
  _one_line(convert_transformers.WeightsMismatchError,
            r"unexpected weight 'regnet\.encoder\.stages\.0\.layers\.0\.layer\.2\.attention\."
            r"0\.(weight|bias)'", directory)
  for changes, match in [
      (dict(layer_type="z"), r"layer_type='z' is not supported; use one of \['x', 'y'\]"),
      (dict(downsample_in_first_stage=False),
       r"downsample_in_first_stage=False is not supported \(implemented: True\)"),
      (dict(hidden_sizes=[12, 18], groups_width=4),
       r"hidden_sizes entry 18 does not split into its 4 groups \(max\(1, 18 // "
       r"groups_width=4\)\)"),
      (dict(depths=[1]), "must be non-empty and of equal length"),
      (dict(hidden_act="silu"), "hidden_act='silu' is not supported"),
      (dict(stem_type="deep"), "unknown config option 'stem_type'"),
  ]:
    edit(**changes)
    _one_line(ConfigError, match, directory)


def _toy_images(n=3, size=16):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  data = world.make_dataset("heldout", n, seed=0)
  return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC))
                   for im in data.images])


def test_regnet_directory_is_a_scorer_and_an_evaluator(tmp_path):
  """A RegNet checkpoint directory loads as a classifier scorer (preprocessing and logits equal
  transformers' processor + PyTorch model) and serves as the held-out evaluator of a fitness."""
  directory = tiny_vision.build_regnet(tmp_path / "regnet")
  images = _toy_images()
  reference = transformers.AutoModelForImageClassification.from_pretrained(directory).eval()
  pixels = transformers.AutoImageProcessor.from_pretrained(directory, use_fast=False)(
      list(images), return_tensors="np")["pixel_values"]
  expected = _logits(reference, pixels)
  x = jnp.asarray(images / 255.0, jnp.float32)
  spec = {"type": "classifier", "model": str(directory), "quantize": True}
  scorer = scorers.load_scorer("w2_regnet", scorers.get_spec(spec), "toy")
  assert scorer.model.model_type == "regnet" and scorer.model.has_batch_stats
  got = jax.jit(scorers.logits, static_argnums=0)(scorer, scorer.params, x)
  np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
  config = objectives.default_config("toy")
  config.scorers = {"w2_regnet": spec}
  config.roles = {"evaluator": {"classifiers": ("w2_regnet",)}}
  config.objectives = {"evaluator": ("top1_hit", "margin")}
  fit = objectives.build(config)
  id2label = json.loads((directory / "config.json").read_text())["id2label"]
  predicted = [id2label[str(i)] for i in np.argmax(expected, -1)]
  # Targets: the reference's top-1 for images 0 and 2, another class for image 1.
  targets = np.array([world.LABELS.index(p) for p in predicted])
  targets[1] = (targets[1] + 1) % len(world.LABELS)
  scores = fit(x, fit.aux(labels=targets))
  want_hit = [True, False, True]
  np.testing.assert_array_equal(scores["evaluator/top1_hit"], want_hit)
  np.testing.assert_array_equal(np.asarray(scores["evaluator/margin"]) > 0, want_hit)
