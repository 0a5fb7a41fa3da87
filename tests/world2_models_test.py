"""Loader parity of every world-2 model with its PyTorch counterpart (issue #23): each part of the
smoke world-2 export (tests/conftest.py `world2_smoke`) through this package's loaders against
PyTorch transformers / diffusers modules filled from the very same files by those libraries'
own Flax → PyTorch converters (tests/parity.py), and the full-size world-2 UNet and VAE
(configs/train_world2.py, random weights written by the export's writer) the same way.

The world-2 UNet is written as diffusers' Flax class (`flax_numerics`: tanh-GELU and GroupNorm eps
1e-5, the arithmetic it trains with); it is compared with diffusers' Flax class as written and,
with the config's class renamed to the PyTorch one (exact GELU, eps 1e-6), with diffusers'
PyTorch UNet on the same weights.
"""
import importlib.util
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffattack.models import vision
from jaxdiffattack.models import weights
from jaxdiffattack.world2 import train

import parity

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("transformers.modeling_flax_pytorch_utils") is None,
    reason="this transformers cannot load Flax msgpack into PyTorch modules")]

PROMPTS = ["a picture of a orange square", "two crimson ovals left of a blue ring", ""]


@pytest.fixture(scope="module")
def export(world2_smoke):
  workdir, _, _ = world2_smoke
  return workdir / "export"


def _pixels(size, seed=0):
  nhwc = np.random.default_rng(seed).standard_normal((3, size, size, 3)).astype(np.float32)
  return jnp.asarray(nhwc), torch.from_numpy(nhwc.transpose(0, 3, 1, 2).copy())


def _unet_inputs(cfg, seed=0):
  rng = np.random.default_rng(seed)
  size = cfg["sample_size"]
  sample = rng.standard_normal((2, cfg["in_channels"], size, size)).astype(np.float32)
  context = rng.standard_normal((2, 77, cfg["cross_attention_dim"])).astype(np.float32)
  return sample, np.array([999, 17], np.int64), context


def _check_unet(directory, tmp_path):
  """Own UNet == diffusers' Flax UNet (as written) and == diffusers' PyTorch UNet (class renamed)."""
  cfg = json.loads((directory / "config.json").read_text())
  assert cfg["_class_name"] == "FlaxUNet2DConditionModel"
  sample, t, context = _unet_inputs(cfg)
  unet, params = weights.load_diffusers_model("unet", directory)
  got = np.asarray(jax.jit(unet.apply)({"params": params}, sample, t, context))
  flax_ref, flax_params = diffusers.FlaxUNet2DConditionModel.from_pretrained(
      str(directory), dtype=jnp.float32)
  want = np.asarray(flax_ref.apply({"params": flax_params}, jnp.asarray(sample), jnp.asarray(t),
                                   jnp.asarray(context)).sample)
  parity.assert_rel_close(got, want, what="unet vs diffusers Flax")
  torch_dir = tmp_path / "unet_torch_numerics"
  shutil.copytree(directory, torch_dir)
  (torch_dir / "config.json").write_text(json.dumps(cfg | {"_class_name": "UNet2DConditionModel"}))
  unet_t, params_t = weights.load_diffusers_model("unet", torch_dir)
  assert unet_t.config.flax_numerics is False
  ref = parity.diffusers_from_flax(diffusers.UNet2DConditionModel, torch_dir)
  with torch.no_grad():
    want_t = ref(torch.from_numpy(sample), torch.from_numpy(t),
                 encoder_hidden_states=torch.from_numpy(context)).sample.numpy()
  parity.assert_rel_close(np.asarray(jax.jit(unet_t.apply)({"params": params_t}, sample, t,
                                                           context)),
                          want_t, what="unet vs diffusers PyTorch")
  assert np.abs(want_t[0] - want_t[1]).mean() > 1e-3 * np.abs(want_t).max()  # inputs matter


def _check_vae(directory, image_size):
  vae, params = weights.load_diffusers_model("vae", directory)
  ref = parity.diffusers_from_flax(diffusers.AutoencoderKL, directory)
  images = np.random.default_rng(1).uniform(-1, 1, (2, 3, image_size, image_size)
                                            ).astype(np.float32)
  with torch.no_grad():
    posterior = ref.encode(torch.from_numpy(images)).latent_dist
    mean = posterior.mean.numpy()
    decoded = ref.decode(torch.from_numpy(mean)).sample.numpy()
  got = jax.jit(lambda p, x: vae.apply({"params": p}, x, method=vae.encode))(params, images)
  parity.assert_rel_close(got.mean, mean, what="vae encoder mean")
  parity.assert_rel_close(got.logvar, posterior.logvar.numpy(), what="vae encoder logvar")
  parity.assert_rel_close(
      jax.jit(lambda p, z: vae.apply({"params": p}, z, method=vae.decode))(params, mean),
      decoded, what="vae decoder")


def test_smoke_export_unet(export, tmp_path):
  _check_unet(export / "sd" / "unet", tmp_path)


def test_smoke_export_vae(export):
  _check_vae(export / "sd" / "vae", json.loads(
      (export / "sd" / "vae" / "config.json").read_text())["sample_size"])


def test_smoke_export_text_encoder_and_clip(export):
  from jaxdiffattack import text  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.models import load_stable_diffusion  # pylint: disable=g-import-not-at-top
  sd, params = load_stable_diffusion(str(export / "sd"))
  ref = parity.transformers_from_flax(transformers.CLIPTextModel, export / "sd" / "text_encoder")
  ids = text.tokenize(sd, PROMPTS)
  with torch.no_grad():
    want = ref(input_ids=torch.from_numpy(ids.astype(np.int64))).last_hidden_state.numpy()
  parity.assert_rel_close(text.encode_prompts(sd, params["text_encoder"], PROMPTS), want,
                          what="sd text encoder")
  clip, clip_params = vision.load_clip(str(export / "clip"))
  ref = parity.transformers_from_flax(transformers.CLIPModel, export / "clip")
  size = json.loads((export / "clip" / "config.json").read_text())["vision_config"]["image_size"]
  parity.assert_clip_close(clip, clip_params, ref, PROMPTS, *_pixels(size))


@pytest.mark.parametrize("sub,cls", [
    ("vit", "ViTForImageClassification"), ("resnet", "ResNetForImageClassification"),
    ("robust", "ResNetForImageClassification"), ("evaluator", "RegNetForImageClassification")])
def test_smoke_export_classifiers(export, sub, cls):
  classifier, params = vision.load_image_classifier(str(export / sub))
  ref = parity.transformers_from_flax(getattr(transformers, cls), export / sub)
  size = json.loads((export / sub / "config.json").read_text()).get("image_size", 32)
  nhwc, nchw = _pixels(size, seed=2)
  with torch.no_grad():
    want = ref(pixel_values=nchw).logits.numpy()
  assert want.shape == (3, train.NUM_CLASSES)
  parity.assert_rel_close(vision.classifier_logits(classifier, params, nhwc), want, what=sub)


def test_full_size_unet_and_vae(tmp_path):
  """configs/train_world2.py's own UNet and VAE shapes (random weights), written by the export's
  writer, against diffusers."""
  from jaxdiffattack import variants  # pylint: disable=g-import-not-at-top
  config = variants.load_config("train_world2")
  unet = train.unet_module(config)
  unet_params = unet.init_weights(jax.random.PRNGKey(0))
  weights.save_diffusers_model(tmp_path / "unet", unet, unet_params)
  _check_unet(tmp_path / "unet", tmp_path)
  vae = train.vae_module(config, 0.5)
  size = config.data.image_size
  vae_params = vae.init_weights(jax.random.PRNGKey(1))
  weights.save_diffusers_model(tmp_path / "vae", vae, vae_params)
  assert json.loads((tmp_path / "vae" / "config.json").read_text())["latent_channels"] == 16
  _check_vae(tmp_path / "vae", size)
