"""The own CLIP (text tower, vision tower, projections) against PyTorch transformers' CLIP.

Tiny random PyTorch models write their weights as safetensors (and their config.json); the
project's loader reads those files, and outputs must agree within 1e-5 of the output scale in
float32. Two text towers: SD1-like (quick_gelu, eos_token_id 2 = the legacy rule "EOS = highest
id") and SD2-like (gelu, a real eos_token_id with higher ids present, so the two pooling rules
give different positions and only the right one passes). Gradients through the text encoder
from token embeddings are checked against central finite differences in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxdiffattack.errors import ConfigError
from jaxdiffattack.models import clip
from jaxdiffattack.models import convert_transformers

import parity
import tiny_vision

LENGTH = 16
TEXT = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
            max_position_embeddings=LENGTH)
# SD1's text config carries eos_token_id 2 (written before transformers' fix): EOS = highest id.
SD1_TEXT = dict(TEXT, vocab_size=99, hidden_act="quick_gelu", bos_token_id=97, eos_token_id=2,
                pad_token_id=98)
# SD2-like: gelu, EOS 98 while ids up to 119 occur, padding with id 0 (SD2's tokenizer pads "!").
SD2_TEXT = dict(TEXT, vocab_size=120, hidden_act="gelu", bos_token_id=97, eos_token_id=98,
                pad_token_id=0)


def _ids(rng, rows: int, vocab_high: int, bos: int, eos: int, pad: int, decoy: int | None):
  """Token ids [rows, LENGTH]: BOS, words, EOS, padding; `decoy` placed among the words (a
  position the wrong pooling rule would pick). Also the attention mask (1 = not padding)."""
  ids = np.full((rows, LENGTH), pad, np.int64)
  mask = np.zeros((rows, LENGTH), np.int64)
  for r in range(rows):
    n = int(rng.integers(3, LENGTH - 1))
    ids[r, 0], ids[r, 1:n], ids[r, n] = bos, rng.integers(3, vocab_high, n - 1), eos
    if decoy is not None:
      ids[r, 1] = decoy
    mask[r, :n + 1] = 1
  return ids, mask


@pytest.fixture(scope="module")
def text_models(tmp_path_factory):
  """{name: (torch CLIPTextModel, directory, ids, mask)} for the SD1- and SD2-like towers."""
  rng = np.random.default_rng(0)
  out = {}
  for seed, (name, kwargs) in enumerate((("sd1", SD1_TEXT), ("sd2", SD2_TEXT))):
    model = transformers.CLIPTextModel(transformers.CLIPTextConfig(**kwargs)).eval()
    directory = tiny_vision.save_random(model, tmp_path_factory.mktemp(name), seed)
    if name == "sd1":  # words below the BOS/EOS/pad ids; the id 2 is a decoy for the eos search
      ids, mask = _ids(rng, 4, 97, bos=97, eos=98, pad=98, decoy=2)
    else:              # words up to 119 > EOS: a decoy for the "highest id" rule
      ids, mask = _ids(rng, 4, 120, bos=97, eos=98, pad=0, decoy=119)
    out[name] = (model, directory, ids, mask)
  return out


def _torch_text(model, ids, mask=None, hidden_states=False):
  with torch.no_grad():
    return model(input_ids=torch.from_numpy(ids),
                 attention_mask=None if mask is None else torch.from_numpy(mask),
                 output_hidden_states=hidden_states)


@pytest.mark.parametrize("name", ["sd1", "sd2"])
@pytest.mark.parametrize("use_mask", [False, True])
def test_text_encoder_matches_pytorch(text_models, name, use_mask):
  model, directory, ids, mask = text_models[name]
  mask = mask if use_mask else None
  encoder, params = convert_transformers.load_text_encoder(directory)
  got = encoder.apply({"params": params}, jnp.asarray(ids, jnp.int32),
                      None if mask is None else jnp.asarray(mask))
  want = _torch_text(model, ids, mask)
  parity.assert_rel_close(got.last_hidden_state, want.last_hidden_state.numpy(),
                          what="last_hidden_state")
  parity.assert_rel_close(got.pooled, want.pooler_output.numpy(), what="pooled")


def test_pooling_rules_pick_different_positions(text_models):
  """The decoys make the two EOS rules disagree, so the parity above tests the rule itself."""
  for name, (model, _, ids, _) in text_models.items():
    eos_at = np.argmax(ids == 98, axis=-1)                     # where the EOS token really is
    wrong_rule = np.argmax(ids == 2, axis=-1) if name == "sd1" else np.argmax(ids, axis=-1)
    assert np.all(wrong_rule != eos_at), name
    got = clip.eos_positions(jnp.asarray(ids), model.config.eos_token_id)
    np.testing.assert_array_equal(np.asarray(got), eos_at, err_msg=name)


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_clip_skip_matches_pytorch_hidden_states(text_models, clip_skip):
  """diffusers' clip_skip: hidden_states[-(k + 1)], then final_layer_norm."""
  model, directory, ids, _ = text_models["sd2"]
  encoder, params = convert_transformers.load_text_encoder(directory, clip_skip=clip_skip)
  got = encoder.apply({"params": params}, jnp.asarray(ids, jnp.int32)).last_hidden_state
  hidden = _torch_text(model, ids, hidden_states=True).hidden_states[-(clip_skip + 1)]
  with torch.no_grad():
    want = model.text_model.final_layer_norm(hidden).numpy()
  parity.assert_rel_close(got, want, what=f"clip_skip={clip_skip}")


def test_clip_skip_out_of_range_is_one_line_error(text_models):
  directory = text_models["sd2"][1]
  for bad in (-1, 3, 1.0):
    with pytest.raises(ConfigError, match=f"clip_skip={bad!r} is invalid") as info:
      convert_transformers.load_text_encoder(directory, clip_skip=bad)
    assert "\n" not in str(info.value)


def test_token_embedding_entry_point_gradient_matches_finite_differences(text_models):
  """Directional derivatives of a scalar of the hidden states w.r.t. the token embeddings:
  jax.grad vs central differences. float32 (the attention's logits and softmax are float32 by
  design, so float64 would not help): with eps 1e-3 the differences are good to ~1e-3 here
  (truncation ∝ eps², rounding ∝ 1/eps, measured 7e-4 at worst), a wrong gradient is off by O(1)."""
  _, directory, ids, _ = text_models["sd1"]
  encoder, params = convert_transformers.load_text_encoder(directory)
  weights = jax.random.normal(jax.random.PRNGKey(1), (2, LENGTH, 32))

  @jax.jit
  def loss(token_embeds):
    hidden = encoder.apply({"params": params}, token_embeds, method="encode_embeddings")
    return jnp.sum(jnp.tanh(hidden) * weights)

  embeds = encoder.apply({"params": params}, jnp.asarray(ids[:2]), method="embed_tokens")
  grad = jax.jit(jax.grad(loss))(embeds)
  eps = 1e-3
  for i in range(2):
    direction = jax.random.normal(jax.random.PRNGKey(10 + i), embeds.shape)
    numeric = (loss(embeds + eps * direction) - loss(embeds - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(float(jnp.sum(grad * direction)), float(numeric), rtol=5e-3)
  # Causality: position 4's state depends on positions ≤ 4 only.
  last = jax.jit(jax.grad(lambda e: jnp.sum(encoder.apply(
      {"params": params}, e, method="encode_embeddings")[:, 4])))(embeds)
  assert float(jnp.abs(last[:, 5:]).max()) == 0.0 and float(jnp.abs(last[:, :5]).max()) > 0


@pytest.fixture(scope="module")
def clip_model(tmp_path_factory):
  """A tiny two-tower PyTorch CLIPModel (SD2-like text tower) written as safetensors."""
  config = transformers.CLIPConfig(
      text_config=SD2_TEXT,
      vision_config=dict(hidden_size=24, intermediate_size=29, num_hidden_layers=2,
                         num_attention_heads=3, image_size=12, patch_size=4, hidden_act="gelu"),
      projection_dim=8)
  model = transformers.CLIPModel(config).eval()
  directory = tiny_vision.save_random(model, tmp_path_factory.mktemp("clip"), seed=5)
  return model, directory


def test_clip_features_and_logits_match_pytorch(clip_model, text_models):
  model, directory = clip_model
  _, _, ids, mask = text_models["sd2"]
  pixels = np.random.default_rng(1).standard_normal((3, 3, 12, 12)).astype(np.float32)
  loaded = convert_transformers.load(directory, "clip")
  variables = {"params": loaded.params}
  nhwc = jnp.asarray(pixels.transpose(0, 2, 3, 1))
  ids_j, mask_j = jnp.asarray(ids, jnp.int32), jnp.asarray(mask)
  with torch.no_grad():
    inputs = dict(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    want = model(pixel_values=torch.from_numpy(pixels), **inputs)
    want_image = model.get_image_features(pixel_values=torch.from_numpy(pixels)).numpy()
    want_text = model.get_text_features(**inputs).numpy()
  parity.assert_rel_close(loaded.module.apply(variables, nhwc, method="get_image_features"),
                          want_image, what="image features")
  parity.assert_rel_close(loaded.module.apply(variables, ids_j, mask_j,
                                              method="get_text_features"),
                          want_text, what="text features")
  per_image, per_text = loaded.module.apply(variables, ids_j, nhwc, mask_j)
  parity.assert_rel_close(per_image, want.logits_per_image.numpy(), what="logits_per_image")
  parity.assert_rel_close(per_text, want.logits_per_text.numpy(), what="logits_per_text")
  assert float(loaded.params["logit_scale"]) == pytest.approx(float(model.logit_scale.detach()), 1e-7)


def test_attention_implementations_agree_and_bfloat16_loads(text_models):
  _, directory, ids, _ = text_models["sd2"]
  ids = jnp.asarray(ids, jnp.int32)
  xla, params = convert_transformers.load_text_encoder(directory)
  reference, _ = convert_transformers.load_text_encoder(directory, attention="reference")
  want = xla.apply({"params": params}, ids).last_hidden_state
  parity.assert_rel_close(reference.apply({"params": params}, ids).last_hidden_state, want,
                          tol=1e-6)
  bf16, bf16_params = convert_transformers.load_text_encoder(directory, jnp.bfloat16)
  assert {x.dtype for x in jax.tree_util.tree_leaves(bf16_params)} == {jnp.dtype(jnp.bfloat16)}
  got = bf16.apply({"params": bf16_params}, ids).last_hidden_state
  assert got.dtype == jnp.bfloat16
  parity.assert_rel_close(got.astype(jnp.float32), want, tol=5e-2)
  if jax.default_backend() != "gpu":
    with pytest.raises(ConfigError, match="'cudnn' needs an NVIDIA GPU") as info:
      convert_transformers.load_text_encoder(directory, attention="cudnn")
    assert "\n" not in str(info.value)
