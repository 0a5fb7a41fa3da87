"""The own ResNet classifier against PyTorch transformers' ResNetForImageClassification.

Basic and bottleneck blocks (with the stride on the 1×1 or the 3×3 convolution, with and without
downsampling in the first stage, ReLU and GELU outputs), random BatchNorm statistics; logits must
agree within 1e-5 of their scale in float32, in inference mode (stored statistics) and in training
mode (batch statistics, as the toy world's training uses it).
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
    "basic": dict(layer_type="basic", embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2]),
    "bottleneck": dict(layer_type="bottleneck", embedding_size=8, hidden_sizes=[16, 32],
                       depths=[2, 1], downsample_in_first_stage=True),
    "bottleneck_stride_first_gelu": dict(
        layer_type="bottleneck", embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1],
        downsample_in_bottleneck=True, hidden_act="gelu"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_match_pytorch(tmp_path, name):
  model = transformers.ResNetForImageClassification(
      transformers.ResNetConfig(num_labels=7, **CONFIGS[name])).eval()
  tiny_vision.save_random(model, tmp_path, seed=4)
  pixels = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
  nhwc = jnp.asarray(pixels.transpose(0, 2, 3, 1))
  loaded = convert_transformers.load(tmp_path, "resnet")
  assert set(loaded.params) == {"params", "batch_stats"}
  with torch.no_grad():
    want = model(pixel_values=torch.from_numpy(pixels)).logits.numpy()
  parity.assert_rel_close(loaded.module.apply(loaded.params, nhwc), want, what=f"{name} eval")
  model.train()
  with torch.no_grad():
    want_train = model(pixel_values=torch.from_numpy(pixels)).logits.numpy()
  got_train, _ = loaded.module.apply(loaded.params, nhwc, train=True, mutable=["batch_stats"])
  parity.assert_rel_close(got_train, want_train, what=f"{name} train")
  assert not np.allclose(want, want_train, atol=1e-3)  # the two modes really differ
