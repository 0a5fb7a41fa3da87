"""ResNet image classifier (He et al. 2016, "Deep Residual Learning for Image Recognition", §3 and
Table 1): a 7×7/2 convolution stem with 3×3/2 max pooling, stages of residual blocks — "basic"
(two 3×3 convolutions) or "bottleneck" (1×1 reduce by 4, 3×3, 1×1 expand) — with a projection
shortcut where the shape changes, global average pooling and a linear head.

Matches transformers' `ResNetForImageClassification` config keys: `embedding_size`,
`hidden_sizes`, `depths`, `layer_type`, `hidden_act`, `downsample_in_first_stage`,
`downsample_in_bottleneck` (stride on the first 1×1 convolution instead of the 3×3 one). As there,
`hidden_act` is the stem's and each block's output activation, while the inner activations of a
block are ReLU. BatchNorm uses its stored inference statistics (`batch_stats`), or batch statistics
with `train=True` (the toy world's training, `mutable=["batch_stats"]`). Variables are
{"params", "batch_stats"} with transformers' Flax ResNet names, so its `flax_model.msgpack` files
load unchanged. flax.linen, not NNX: params are pure pytrees passed into jitted/sharded code, and
the shipped msgpack files are linen variable trees.
"""

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdiffattack.errors import ConfigError
from jaxdiffattack.models import bn_classifier
from jaxdiffattack.models import transformers_config as tc

LAYER_TYPES = ("basic", "bottleneck")
# Backbone-only keys (which stages a feature extractor returns): no effect on the classifier.
_IGNORED_KEYS = frozenset({"out_features", "out_indices", "stage_names", "initializer_range"})


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
  """config.json keys of a ResNet classifier (defaults: transformers' ResNetConfig)."""
  num_channels: int = 3
  embedding_size: int = 64
  hidden_sizes: tuple[int, ...] = (256, 512, 1024, 2048)
  depths: tuple[int, ...] = (3, 4, 6, 3)
  layer_type: str = "bottleneck"
  hidden_act: str = "relu"
  downsample_in_first_stage: bool = False
  downsample_in_bottleneck: bool = False
  num_labels: int = 2   # len(id2label)

  @classmethod
  def from_dict(cls, raw: Mapping[str, Any], source: str) -> "ResNetConfig":
    raw = dict(raw, num_labels=len(tc.id2label(raw, source)))
    config = tc.parse(cls, raw, source, ignored=_IGNORED_KEYS,
                      choices={"hidden_act": tc.ACTIVATIONS, "layer_type": LAYER_TYPES})
    if len(config.depths) != len(config.hidden_sizes) or not config.depths:
      raise ConfigError(f"{source}: depths={list(config.depths)} and hidden_sizes="
                        f"{list(config.hidden_sizes)} must be non-empty and of equal length")
    return config


_ConvLayer = bn_classifier.ConvLayer


class _Sequence(nn.Module):
  """Conv layers applied in turn, named `names[i]` (transformers' names: basic blocks
  `layer_0, layer_1`, bottleneck blocks `0, 1, 2`)."""
  layers: tuple[tuple[str, int, int, int, str | None], ...]  # (name, features, k, stride, act)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for name, features, kernel, stride, act in self.layers:
      x = _ConvLayer(features, kernel, stride, act, self.dtype, name=name)(x, train)
    return x


class ResidualBlock(nn.Module):
  """act(F(x) + shortcut(x)); shortcut = 1×1 conv + BN where channels or stride change."""
  config: ResNetConfig
  in_channels: int
  out_channels: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c, out, stride = self.config, self.out_channels, self.stride
    if c.layer_type == "basic":
      layers = (("layer_0", out, 3, stride, "relu"), ("layer_1", out, 3, 1, None))
    else:
      reduced = out // 4
      first, middle = (stride, 1) if c.downsample_in_bottleneck else (1, stride)
      layers = (("0", reduced, 1, first, "relu"), ("1", reduced, 3, middle, "relu"),
                ("2", out, 1, 1, None))
    residual = x
    if self.in_channels != out or stride != 1:
      residual = _ConvLayer(out, 1, stride, None, self.dtype, name="shortcut",
                            kernel_init=nn.initializers.variance_scaling(
                                2.0, "fan_out", "truncated_normal"))(x, train)
    x = _Sequence(layers, self.dtype, name="layer")(x, train)
    return tc.ACTIVATIONS[c.hidden_act](x + residual)


class _Embedder(nn.Module):
  config: ResNetConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = self.config
    x = _ConvLayer(c.embedding_size, 7, 2, c.hidden_act, self.dtype, name="embedder")(x, train)
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def _first_stride(config: ResNetConfig, stage: int) -> int:
  return 2 if (stage > 0 or config.downsample_in_first_stage) else 1


_SPEC = bn_classifier.Spec("resnet", "ResNet", _Embedder, ResidualBlock, _first_stride)


class ResNetForImageClassification(nn.Module):
  """Normalised pixels [P, h, w, C] (channels last; any size) → logits [P, num_labels]."""
  config: ResNetConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pixels: jax.Array, train: bool = False) -> jax.Array:
    return bn_classifier.classify(_SPEC, self.config, self.dtype, pixels, train)
