"""The own ViT classifier against PyTorch transformers' ViTForImageClassification.

Tiny random PyTorch models write safetensors + config.json; the project's loader reads them;
logits must agree within 1e-5 of their scale in float32.
"""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxdiffattack.models import convert_transformers

import parity
import tiny_vision

CONFIGS = {
    "gelu_qkv_bias": dict(hidden_act="gelu", qkv_bias=True),
    "tanh_gelu_no_qkv_bias": dict(hidden_act="gelu_new", qkv_bias=False, layer_norm_eps=1e-6),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_match_pytorch(tmp_path, name):
  config = transformers.ViTConfig(image_size=12, patch_size=4, hidden_size=24,
                                  num_hidden_layers=2, num_attention_heads=3,
                                  intermediate_size=29, num_labels=5, **CONFIGS[name])
  model = transformers.ViTForImageClassification(config).eval()
  tiny_vision.save_random(model, tmp_path, seed=3)
  pixels = np.random.default_rng(0).standard_normal((3, 3, 12, 12)).astype(np.float32)
  with torch.no_grad():
    want = model(pixel_values=torch.from_numpy(pixels)).logits.numpy()
  loaded = convert_transformers.load(tmp_path, "vit")
  got = loaded.module.apply({"params": loaded.params}, jnp.asarray(pixels.transpose(0, 2, 3, 1)))
  parity.assert_rel_close(got, want, what=name)
  assert loaded.config.num_labels == 5
