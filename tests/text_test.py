"""Text conditioning (`jaxdiffattack.text`) on the tiny SD against PyTorch transformers'
CLIPTextModel on the same safetensors, and the token-embedding entry point's identities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxdiffattack import text
from jaxdiffattack.errors import ConfigError

import parity

PROMPTS = ["a photo of a red circle", "", "a blue square and a green star"]


@pytest.fixture(scope="module")
def torch_text_encoder(tiny_sd_dirs):
  return transformers.CLIPTextModel.from_pretrained(tiny_sd_dirs[0] / "text_encoder").eval()


def test_encode_prompts_matches_pytorch(tiny_sd_model, torch_text_encoder):
  sd, params = tiny_sd_model
  ids = text.tokenize(sd, PROMPTS)
  with torch.no_grad():
    want = torch_text_encoder(input_ids=torch.from_numpy(ids.astype(np.int64)))
  got = text.encode_prompts(sd, params["text_encoder"], PROMPTS)
  parity.assert_rel_close(got, want.last_hidden_state.numpy(), what="hidden states")


def test_token_embedding_entry_point_equals_ids(tiny_sd_model):
  sd, params = tiny_sd_model
  text_params = params["text_encoder"]
  ids = jnp.asarray(text.tokenize(sd, PROMPTS))
  want = text.encode_ids(sd, text_params, ids)
  embeds = text.embed_tokens(sd, text_params, ids)                    # [P, L, D_tok]
  np.testing.assert_allclose(text.encode_token_embeddings(sd, text_params, embeds), want,
                             rtol=1e-6, atol=1e-6)
  jitted = jax.jit(text.encode_token_embeddings, static_argnums=0)
  np.testing.assert_allclose(jitted(sd, text_params, embeds), want, rtol=1e-6, atol=1e-6)
  # A (nearly) one-hot soft mixture of the embedding table, as ATM's Gumbel-softmax makes.
  table = text.token_embedding_table(sd, text_params)                 # [V, D_tok]
  weights = jax.nn.softmax(40.0 * jax.nn.one_hot(ids, table.shape[0]), axis=-1)
  np.testing.assert_allclose(text.encode_token_embeddings(sd, text_params, weights @ table), want,
                             atol=1e-4)


def test_with_clip_skip_matches_pytorch_hidden_states(tiny_sd_model, torch_text_encoder):
  sd, params = tiny_sd_model
  skipped = text.with_clip_skip(sd, 1)
  assert sd.text_encoder.clip_skip == 0 and skipped.unet is sd.unet
  ids = text.tokenize(sd, PROMPTS)
  with torch.no_grad():
    out = torch_text_encoder(input_ids=torch.from_numpy(ids.astype(np.int64)),
                             output_hidden_states=True)
    want = torch_text_encoder.text_model.final_layer_norm(out.hidden_states[-2]).numpy()
  parity.assert_rel_close(text.encode_prompts(skipped, params["text_encoder"], PROMPTS), want,
                          what="clip_skip=1")
  with pytest.raises(ConfigError, match="clip_skip=2 is invalid") as info:
    text.with_clip_skip(sd, 2)   # the tiny encoder has 2 layers
  assert "\n" not in str(info.value)
