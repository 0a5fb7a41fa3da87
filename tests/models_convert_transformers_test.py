"""Loading transformers checkpoints: bad inputs are one-line errors naming the file and the key;
msgpack written by `convert_transformers.save` loads back to the same module and params."""

import json
import shutil

import jax
import numpy as np
import pytest
import safetensors.numpy
import transformers

from jaxdiffattack.errors import ConfigError
from jaxdiffattack.errors import UserError
from jaxdiffattack.models import convert_transformers
from jaxdiffattack.models import weights

import tiny_vision


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
  config = transformers.CLIPTextConfig(vocab_size=50, hidden_size=16, intermediate_size=24,
                                       num_hidden_layers=2, num_attention_heads=2,
                                       max_position_embeddings=8)
  return tiny_vision.save_random(transformers.CLIPTextModel(config),
                                 tmp_path_factory.mktemp("text"), seed=0)


def _copy(src, tmp_path):
  return shutil.copytree(src, tmp_path / "ckpt")


def _edit_config(directory, **changes):
  path = directory / "config.json"
  config = json.loads(path.read_text())
  config.update(changes)
  path.write_text(json.dumps(config))


def _edit_tensors(directory, edit):
  path = directory / "model.safetensors"
  tensors = safetensors.numpy.load_file(str(path))
  edit(tensors)
  safetensors.numpy.save_file(tensors, str(path))


def _one_line_error(error_type, match, directory, **kwargs):
  with pytest.raises(error_type, match=match) as info:
    convert_transformers.load_text_encoder(directory, **kwargs)
  message = str(info.value)
  assert "\n" not in message and str(directory) in message, message
  return message


def test_truncated_and_corrupted_files(text_dir, tmp_path):
  directory = _copy(text_dir, tmp_path)
  weights_file = directory / "model.safetensors"
  weights_file.write_bytes(weights_file.read_bytes()[:1000])
  _one_line_error(weights.CorruptWeightsError, "model.safetensors: not a readable safetensors",
                  directory)
  weights_file.unlink()
  (directory / "flax_model.msgpack").write_bytes(b"\x00\x01garbage" * 10)
  _one_line_error(weights.CorruptWeightsError, "flax_model.msgpack: not a readable Flax msgpack",
                  directory)
  (directory / "config.json").write_text("{not json")
  _one_line_error(ConfigError, "config.json: not valid JSON", directory)


def test_missing_unexpected_and_misshaped_weights(text_dir, tmp_path):
  directory = _copy(text_dir, tmp_path)
  original = safetensors.numpy.load_file(str(directory / "model.safetensors"))
  _edit_tensors(directory, lambda t: t.pop("text_model.final_layer_norm.weight"))
  _one_line_error(convert_transformers.WeightsMismatchError,
                  "missing weight text_model/final_layer_norm/scale", directory)
  _edit_tensors(directory, lambda t: t.update(original, **{
      "text_model.extra.weight": np.zeros(3, np.float32)}))
  _one_line_error(convert_transformers.WeightsMismatchError,
                  "unexpected weight 'text_model.extra.weight'", directory)
  _edit_tensors(directory, lambda t: t.pop("text_model.extra.weight"))
  _edit_config(directory, intermediate_size=25)
  _one_line_error(convert_transformers.WeightsMismatchError,
                  r"weight text_model/encoder/layers/0/mlp/fc1/(kernel|bias) has shape "
                  r"\((16, )?24,?\), config.json implies \((16, )?25,?\)", directory)


def test_msgpack_mismatch(text_dir, tmp_path):
  encoder, params = convert_transformers.load_text_encoder(text_dir)
  directory = convert_transformers.save(tmp_path / "flax", "clip_text", encoder.config, params)
  _edit_config(directory, num_hidden_layers=3)
  _one_line_error(convert_transformers.WeightsMismatchError,
                  "flax_model.msgpack: missing weight text_model/encoder/layers/2/", directory)


@pytest.mark.parametrize("change,match", [
    ({"use_fancy_rope": True}, "unknown config option 'use_fancy_rope'=True"),
    ({"hidden_act": "silu"}, "hidden_act='silu' is not supported; use one of"),
    ({"use_attention_mask": True}, r"use_attention_mask=True is not supported \(implemented: "
                                   "False\\)"),
    ({"num_hidden_layers": "2"}, "num_hidden_layers='2' is invalid: expected an integer"),
    ({"num_attention_heads": 3}, "hidden_size=16 is not a multiple of num_attention_heads=3"),
    ({"model_type": "bert"}, "model_type='bert'; expected 'clip_text_model'"),
])
def test_bad_config_values(text_dir, tmp_path, change, match):
  directory = _copy(text_dir, tmp_path)
  _edit_config(directory, **change)
  message = _one_line_error(ConfigError, match, directory)
  assert "config.json" in message


def test_pickle_only_is_refused(text_dir, tmp_path):
  directory = _copy(text_dir, tmp_path)
  (directory / "model.safetensors").rename(directory / "pytorch_model.bin")
  _one_line_error(weights.PickleWeightsError, "pytorch_model.bin", directory)
  (directory / "pytorch_model.bin").unlink()
  _one_line_error(UserError, "no weights file", directory)


def test_saved_msgpack_loads_back_identically(tmp_path_factory):
  """save → load gives the same config and params, for every kind (CLIP, ViT, ResNet)."""
  dirs = tiny_vision.build_all_cached(tmp_path_factory)
  for kind, directory in (("clip", dirs["clip"]), ("vit", dirs["vit"]),
                          ("resnet", dirs["resnet"])):
    loaded = convert_transformers.load(directory, kind)
    labels = None
    if kind != "clip":
      labels = tuple(json.loads((directory / "config.json").read_text())["id2label"][str(i)]
                     for i in range(loaded.config.num_labels))
    out = convert_transformers.save(tmp_path_factory.mktemp(kind), kind, loaded.config,
                                    loaded.params, labels)
    again = convert_transformers.load(out, kind)
    assert again.config == loaded.config, kind
    assert jax.tree_util.tree_structure(again.params) == jax.tree_util.tree_structure(
        loaded.params)
    for a, b in zip(jax.tree_util.tree_leaves(again.params),
                    jax.tree_util.tree_leaves(loaded.params)):
      np.testing.assert_array_equal(a, b)
    if labels is not None:
      assert again.raw_config["id2label"] == {str(i): n for i, n in enumerate(labels)}
    # transformers (PyTorch) reads the written config.json to the same architecture.
    assert transformers.AutoConfig.from_pretrained(out).model_type == kind
