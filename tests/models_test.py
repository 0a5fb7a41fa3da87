"""Loading: both weight formats agree, pickles are refused, bad paths/configs are one-liners."""

import json
import shutil

import flax
import jax
import numpy as np
import pytest

from jaxdiffattack import models
from jaxdiffattack.models import hub
from jaxdiffattack.models import weights
from jaxdiffattack.errors import UserError


def test_safetensors_and_msgpack_load_identically(tiny_sd_dirs):
  pt_dir, flax_dir = tiny_sd_dirs
  sd_pt, params_pt = models.load_stable_diffusion(str(pt_dir))
  sd_fx, params_fx = models.load_stable_diffusion(str(flax_dir))
  assert sd_pt.latent_shape == sd_fx.latent_shape == (4, 8, 8)
  assert sd_fx.image_size == 16 and sd_fx.max_length == 16 and sd_fx.text_dim == 32
  assert sd_fx.prediction_type == "epsilon"
  leaves_pt = jax.tree_util.tree_leaves_with_path(params_pt)
  leaves_fx = dict(jax.tree_util.tree_leaves_with_path(params_fx))
  assert len(leaves_pt) == len(leaves_fx) > 50
  for path, value in leaves_pt:
    np.testing.assert_array_equal(np.asarray(value), np.asarray(leaves_fx[path]))


def test_safetensors_weights_equal_torch_weights(tiny_sd_dirs):
  """The PT→Flax conversion (renames + transposes) against the torch module itself."""
  import torch  # pylint: disable=g-import-not-at-top
  from diffusers import UNet2DConditionModel  # pylint: disable=g-import-not-at-top
  pt_dir, _ = tiny_sd_dirs
  _, params = models.load_stable_diffusion(str(pt_dir))
  unet = UNet2DConditionModel.from_pretrained(pt_dir / "unet")
  conv_in = unet.conv_in.weight.detach().numpy()  # [out, in, kh, kw] → Flax [kh, kw, in, out]
  np.testing.assert_array_equal(params["unet"]["conv_in"]["kernel"],
                                conv_in.transpose(2, 3, 1, 0))
  q = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
  flax_q = params["unet"]["down_blocks_0"]["attentions_0"]["transformer_blocks_0"]["attn1"]
  np.testing.assert_array_equal(flax_q["to_q"]["kernel"], q.detach().numpy().T)
  del torch


def test_bfloat16(tiny_sd_dirs):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  sd, params = models.load_stable_diffusion(str(tiny_sd_dirs[1]), dtype="bfloat16")
  assert sd.dtype == jnp.bfloat16
  assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.bfloat16)}


def _copy(src, dst):
  shutil.copytree(src, dst)
  return dst


@pytest.mark.parametrize("suffix", [".bin", ".ckpt"])
def test_pickle_weights_refused(tiny_sd_dirs, tmp_path, suffix):
  sd_dir = _copy(tiny_sd_dirs[0], tmp_path / "sd")
  unet = sd_dir / "unet"
  (unet / "diffusion_pytorch_model.safetensors").rename(unet / f"diffusion_pytorch_model{suffix}")
  with pytest.raises(models.PickleWeightsError) as e:
    models.load_stable_diffusion(str(sd_dir))
  assert f"diffusion_pytorch_model{suffix}" in str(e.value) and "\n" not in str(e.value)
  assert "safetensors" in str(e.value)


def test_text_encoder_pickle_refused(tiny_sd_dirs, tmp_path):
  sd_dir = _copy(tiny_sd_dirs[0], tmp_path / "sd")
  text_dir = sd_dir / "text_encoder"
  (text_dir / "model.safetensors").rename(text_dir / "pytorch_model.bin")
  with pytest.raises(models.PickleWeightsError, match="pytorch_model.bin"):
    models.load_stable_diffusion(str(sd_dir))


def test_missing_weights_and_subfolders(tiny_sd_dirs, tmp_path):
  sd_dir = _copy(tiny_sd_dirs[1], tmp_path / "sd")
  (sd_dir / "vae" / "diffusion_flax_model.msgpack").unlink()
  with pytest.raises(models.WeightsNotFoundError, match="no weights file"):
    models.load_stable_diffusion(str(sd_dir))
  shutil.rmtree(sd_dir / "vae")
  with pytest.raises(UserError, match="missing vae/"):
    models.load_stable_diffusion(str(sd_dir))


def test_unsupported_config_value_refused(tiny_sd_dirs, tmp_path):
  sd_dir = _copy(tiny_sd_dirs[1], tmp_path / "sd")
  config_file = sd_dir / "unet" / "config.json"
  config = json.loads(config_file.read_text())
  config["class_embed_type"] = "timestep"
  config_file.write_text(json.dumps(config))
  with pytest.raises(UserError, match="class_embed_type='timestep' is not supported"):
    models.load_stable_diffusion(str(sd_dir))


def test_resolve_errors(tmp_path, monkeypatch):
  with pytest.raises(models.ModelNotFoundError, match="not 'toy', an existing directory"):
    hub.resolve("./missing/dir", "sd")
  (tmp_path / "file.txt").write_text("x")
  with pytest.raises(models.ModelNotFoundError, match="is a file"):
    hub.resolve(str(tmp_path / "file.txt"), "sd")
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
  with pytest.raises(models.ModelNotFoundError) as e:
    hub.resolve("nobody/not-a-model", "sd")
  message = str(e.value)
  assert "huggingface-cli download nobody/not-a-model" in message and "\n" not in message
  assert "'*.bin'" not in message


def test_prediction_type_read_from_scheduler(tiny_sd_dirs, tmp_path):
  sd_dir = _copy(tiny_sd_dirs[1], tmp_path / "sd")
  config_file = sd_dir / "scheduler" / "scheduler_config.json"
  config = json.loads(config_file.read_text())
  config["prediction_type"] = "v_prediction"
  config_file.write_text(json.dumps(config))
  sd, _ = models.load_stable_diffusion(str(sd_dir))
  assert sd.prediction_type == "v_prediction"
  config["prediction_type"] = "flow"
  config_file.write_text(json.dumps(config))
  with pytest.raises(UserError, match="prediction_type='flow' is not supported"):
    models.load_stable_diffusion(str(sd_dir))


def test_find_weights_prefers_flax(tmp_path):
  (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"")
  (tmp_path / "diffusion_flax_model.msgpack").write_bytes(b"")
  found = weights.find_weights(tmp_path, weights.DIFFUSERS_FLAX_WEIGHTS +
                               weights.DIFFUSERS_SAFETENSORS)
  assert found.name == "diffusion_flax_model.msgpack"


# ---------------------------------------------------------------- bad checkpoints: one line each --
def _unet_copy(tiny_sd_dirs, tmp_path, fmt):
  """A copy of the tiny SD (pt: safetensors, flax: msgpack); returns (sd dir, unet weights)."""
  sd_dir = _copy(tiny_sd_dirs[0 if fmt == "pt" else 1], tmp_path / "sd")
  name = "diffusion_pytorch_model.safetensors" if fmt == "pt" else "diffusion_flax_model.msgpack"
  return sd_dir, sd_dir / "unet" / name


def _one_line_error(sd_dir, error, *fragments):
  with pytest.raises(error) as e:
    models.load_stable_diffusion(str(sd_dir))
  message = str(e.value)
  assert "\n" not in message, message
  for fragment in fragments:
    assert fragment in message, message
  return message


@pytest.mark.parametrize("fmt", ["pt", "flax"])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupted_weights_file(tiny_sd_dirs, tmp_path, fmt, damage):
  sd_dir, path = _unet_copy(tiny_sd_dirs, tmp_path, fmt)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2] if damage == "truncated" else
                   b"\xc1\xff" + bytes(range(256)) * 4)
  _one_line_error(sd_dir, weights.CorruptWeightsError, str(path), "truncated, corrupted")


@pytest.mark.parametrize("fmt", ["pt", "flax"])
def test_missing_unexpected_and_misshaped_weights(tiny_sd_dirs, tmp_path, fmt):
  sd_dir, path = _unet_copy(tiny_sd_dirs, tmp_path, fmt)
  if fmt == "pt":
    state = weights.read_safetensors(path)
    write = lambda s: weights.write_safetensors(path, s)
    key, name = "conv_in.weight", "conv_in.weight"
  else:
    state = flax.traverse_util.flatten_dict(weights.read_msgpack(path), sep="/")
    write = lambda s: path.write_bytes(flax.serialization.msgpack_serialize(
        flax.traverse_util.unflatten_dict(s, sep="/")))
    key, name = "conv_in/kernel", "conv_in/kernel"
  original = dict(state)
  del state[key]
  write(state)
  _one_line_error(sd_dir, UserError, str(path), f"missing weight {name}")
  write(dict(original, **{key.replace("conv_in", "conv_extra"): original[key]}))
  _one_line_error(sd_dir, UserError, str(path),
                  f"unexpected weight {name.replace('conv_in', 'conv_extra')}")
  write(dict(original, **{key: original[key][..., :-1]}))
  _one_line_error(sd_dir, UserError, str(path), f"weight {name} has shape")


def test_config_json_errors_name_file_and_key(tiny_sd_dirs, tmp_path):
  sd_dir = _copy(tiny_sd_dirs[1], tmp_path / "sd")
  config_file = sd_dir / "vae" / "config.json"
  config = json.loads(config_file.read_text())
  config_file.write_text(json.dumps(dict(config, latent_scaling="auto")))
  _one_line_error(sd_dir, UserError, str(config_file), "unknown config option latent_scaling")
  config_file.write_text(json.dumps(dict(config, block_out_channels=[32, 60])))
  _one_line_error(sd_dir, UserError, str(config_file), "norm_num_groups=8 is invalid")
  config_file.write_text("{not json")
  _one_line_error(sd_dir, UserError, str(config_file), "not a readable JSON config")
  unet_file = sd_dir / "unet" / "config.json"
  unet_config = json.loads(unet_file.read_text())
  unet_file.write_text(json.dumps(dict(unet_config, cross_attention_dim=48)))
  _one_line_error(sd_dir, UserError, "attn2/to_k/kernel has shape")
