"""Comparison helper of the parity tests (own modules vs PyTorch transformers/diffusers)."""

import numpy as np


def assert_rel_close(got, want, tol: float = 1e-5, what: str = "") -> float:
  """max |got − want| ≤ tol · max |want| (relative to the output's scale, so near-zero
  elements do not make a float32 comparison flaky); returns the relative error."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
  scale = float(np.max(np.abs(want)))
  assert scale > 0, f"{what}: the reference is all zeros"
  error = float(np.max(np.abs(got - want))) / scale
  assert error <= tol, f"{what}: relative error {error:.2e} > {tol:.0e}"
  return error


def features(output):
  """CLIP's get_image_features / get_text_features: a tensor in transformers 4, an output whose
  pooler_output is the projected features in transformers 5."""
  return output if hasattr(output, "numpy") else output.pooler_output


# Legacy Flax attention names of diffusers' VAE mid-block -> the PyTorch module's.
_VAE_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out_0"}


def transformers_from_flax(cls, directory):
  """A PyTorch transformers `cls` with the Flax msgpack's weights of `directory`, converted by
  transformers' own converter (`load_flax_weights_in_pytorch_model`; `from_pretrained(
  from_flax=True)` leaves meta tensors in transformers 4.57, hence the direct call).
  transformers' converter maps a ResNet basic block's Flax `layer_0` to a PyTorch `layer_0` that
  does not exist (the PyTorch name is `layer.0`): those keys are renamed first."""
  import re  # pylint: disable=g-import-not-at-top
  import flax  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from transformers.modeling_flax_pytorch_utils import load_flax_weights_in_pytorch_model
  model = cls(transformers.AutoConfig.from_pretrained(directory))
  state = flax.traverse_util.flatten_dict(flax.serialization.msgpack_restore(
      (directory / "flax_model.msgpack").read_bytes()))
  rename = lambda part: re.sub(r"^layer_(\d+)$", r"\1", part)
  state = flax.traverse_util.unflatten_dict(
      {tuple(rename(p) for p in key): value for key, value in state.items()})
  return load_flax_weights_in_pytorch_model(model, state).eval()


def diffusers_from_flax(cls, directory):
  """A PyTorch diffusers `cls` (UNet2DConditionModel, AutoencoderKL) built from `directory`'s
  config.json with its diffusion_flax_model.msgpack's weights, converted by diffusers' own
  converter; the VAE's legacy Flax attention names (query/key/value/proj_attn) are renamed to
  the PyTorch module's first (diffusers' converter does not)."""
  import json  # pylint: disable=g-import-not-at-top
  import flax  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from diffusers.models.modeling_pytorch_flax_utils import load_flax_weights_in_pytorch_model
  model = cls.from_config(json.loads((directory / "config.json").read_text()))
  state = flax.traverse_util.flatten_dict(flax.serialization.msgpack_restore(
      (directory / "diffusion_flax_model.msgpack").read_bytes()))
  state = flax.traverse_util.unflatten_dict(
      {tuple(_VAE_ATTENTION.get(p, p) for p in key): value for key, value in state.items()})
  return load_flax_weights_in_pytorch_model(model, state).eval()


def assert_clip_close(clip, params, ref, prompts, nhwc, nchw, what: str = "clip") -> None:
  """The own CLIP's image and text features (`vision.clip_image_features` /
  `clip_text_features` on `prompts` tokenised by its tokenizer, pixels `nhwc`) equal the
  PyTorch transformers CLIPModel `ref`'s (on the same pixels channels-first, `nchw`)."""
  import torch  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.models import vision  # pylint: disable=g-import-not-at-top
  ids = clip.tokenizer(prompts, padding="max_length", max_length=clip.max_length,
                       return_tensors="np")
  with torch.no_grad():
    want_image = features(ref.get_image_features(pixel_values=nchw)).numpy()
    want_text = features(ref.get_text_features(
        input_ids=torch.from_numpy(ids["input_ids"]),
        attention_mask=torch.from_numpy(ids["attention_mask"]))).numpy()
  assert_rel_close(vision.clip_image_features(clip, params, nhwc), want_image,
                   what=f"{what} image features")
  assert_rel_close(vision.clip_text_features(clip, params, ids["input_ids"],
                                             ids["attention_mask"]),
                   want_text, what=f"{what} text features")
