"""The layout transformers' BatchNorm convolutional classifiers share (ResNet, RegNet).

  <name>.embedder.embedder      the stem (the model's own: `Spec.embedder`)
  <name>.encoder.stages.<i>.layers.<j>
                                block j of stage i (`Spec.block(config, in_channels, out_channels,
                                stride, dtype)`); the first block of stage i takes the previous
                                stage's width (the stem's for i = 0) and `Spec.first_stride(config,
                                i)`, the others stride 1
  global average pool → classifier.1 (linear)

These are the module names of transformers' Flax/PyTorch classifiers, so their checkpoints map onto
the variable trees by name alone (`convert_transformers`). `resnet.py` and `regnet.py` define the
stem and the block, and a `Spec`; everything between (and the head) is here.
"""

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdiffattack.models import transformers_config as tc


class Spec(NamedTuple):
  """What a model defines: its name (the backbone's scope: "resnet", "regnet") and title (in
  errors: "ResNet"), the stem module class (fields config, dtype; x → x), the residual block class (config, in_channels,
  out_channels, stride, dtype; (x, train) → x), and the first block's stride per stage."""
  name: str
  title: str
  embedder: type
  block: type
  first_stride: Callable[[Any, int], int]


class ConvLayer(nn.Module):
  """Convolution (no bias, padding k // 2; `convolution`) → BatchNorm (eps 1e-5, stored
  statistics unless `train`; `normalization`) → activation (None: identity)."""
  features: int
  kernel_size: int = 3
  stride: int = 1
  activation: str | None = "relu"
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

  def convolution(self, x: jax.Array) -> jax.Array:
    """The convolution (a subclass may replace it: RegNet's grouped one)."""
    k = self.kernel_size
    return nn.Conv(self.features, (k, k), strides=self.stride, padding=k // 2, use_bias=False,
                   dtype=self.dtype, kernel_init=self.kernel_init, name="convolution")(x)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = self.convolution(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, name="normalization")(x)
    return x if self.activation is None else tc.ACTIVATIONS[self.activation](x)


class _StageLayers(nn.Module):
  spec: Spec
  config: Any
  in_channels: int
  out_channels: int
  stride: int
  depth: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i in range(self.depth):
      first = i == 0
      x = self.spec.block(self.config, self.in_channels if first else self.out_channels,
                          self.out_channels, self.stride if first else 1, self.dtype,
                          name=str(i))(x, train)
    return x


class _Stage(nn.Module):
  spec: Spec
  config: Any
  in_channels: int
  out_channels: int
  stride: int
  depth: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return _StageLayers(self.spec, self.config, self.in_channels, self.out_channels, self.stride,
                        self.depth, self.dtype, name="layers")(x, train)


class _Stages(nn.Module):
  spec: Spec
  config: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = self.config
    inputs = (c.embedding_size,) + tuple(c.hidden_sizes[:-1])
    for i, (in_ch, out_ch, depth) in enumerate(zip(inputs, c.hidden_sizes, c.depths)):
      x = _Stage(self.spec, c, in_ch, out_ch, self.spec.first_stride(c, i), depth, self.dtype,
                 name=str(i))(x, train)
    return x


class _Encoder(nn.Module):
  spec: Spec
  config: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return _Stages(self.spec, self.config, self.dtype, name="stages")(x, train)


class _Backbone(nn.Module):
  spec: Spec
  config: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = self.spec.embedder(self.config, self.dtype, name="embedder")(x, train)
    x = _Encoder(self.spec, self.config, self.dtype, name="encoder")(x, train)
    return jnp.mean(x, axis=(1, 2))                             # global average pool [P, C]


class _Head(nn.Module):
  num_labels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Dense(self.num_labels, dtype=self.dtype, name="1")(x)


def classify(spec: Spec, config, dtype, pixels: jax.Array, train: bool) -> jax.Array:
  """Normalised pixels [P, h, w, C] (channels last; any size) → logits [P, num_labels], called
  inside a compact `__call__` (the scopes `<spec.name>` and `classifier` are its children)."""
  if pixels.shape[-1] != config.num_channels:
    raise ValueError(f"{spec.title} input must have "
                     f"{config.num_channels} channels (last axis), got {pixels.shape}")
  pooled = _Backbone(spec, config, dtype, name=spec.name)(pixels.astype(dtype), train)
  return _Head(config.num_labels, dtype, name="classifier")(pooled)
