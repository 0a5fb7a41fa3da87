"""RegNet image classifier (Radosavovic et al. 2020, "Designing Network Design Spaces", §3.1 and
Fig. 3/4: the AnyNet body of X blocks — 1×1 conv, 3×3 group conv of group width g, 1×1 conv, all
at the stage width (bottleneck ratio 1) — and Y blocks, X blocks with squeeze-and-excitation; Hu
et al. 2018, "Squeeze-and-Excitation Networks", eq. 2–3) as transformers'
`RegNetForImageClassification` implements it:

  stem: 3×3/2 conv → BN → act;  stages i = 0..3: the first block strides 2 (stage 0 too: the
  config's `downsample_in_first_stage` is always true), with a 1×1/s conv + BN shortcut where
  channels or stride change;  block: act(F(x) + shortcut(x)), F = [1×1 conv → BN → act,
  3×3/s conv of max(1, w // groups_width) groups → BN → act, (Y: SE), 1×1 conv → BN];
  SE(h) = h · σ(W₂ ReLU(W₁ mean_hw(h) + b₁) + b₂) with round(in_channels / 4) hidden units
  (transformers' choice: a fourth of the *block input* width, not of w);  head: global average
  pool → linear.

Config keys are transformers' `RegNetConfig`: `embedding_size`, `hidden_sizes`, `depths`,
`groups_width`, `layer_type` ("x" or "y"), `hidden_act`. BatchNorm (eps 1e-5) uses its stored
inference statistics, or batch statistics with `train=True` (`mutable=["batch_stats"]`), as
`resnet.py`. Variables are {"params", "batch_stats"} under transformers' Flax RegNet names (which
are its PyTorch names with dots as tree levels), so `flax_model.msgpack` files load unchanged.
Grouped convolutions differentiate their kernel by a patch einsum (`grouped_conv`): with XLA:CPU's
own kernel gradient a training step of `WORLD2_EVALUATOR` took 8.4× longer (50.0 s vs 6.0 s at
batch 128 on one loaded core; docs/results/world2_regnet_cost.json).

`regnet_model(config, key)` builds the module and its initialised variables for training;
`WORLD2_EVALUATOR` is a ~1 M-parameter RegNetY for 64² images and 83 classes (world 2's held-out
evaluator, issue #23).
"""

import dataclasses
import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdiffattack.errors import ConfigError
from jaxdiffattack.models import bn_classifier
from jaxdiffattack.models import transformers_config as tc

LAYER_TYPES = ("x", "y")
# transformers' RegNetConfig.__init__ sets downsample_in_first_stage = True whatever it is given.
_PINNED = {"downsample_in_first_stage": (True,)}


@dataclasses.dataclass(frozen=True)
class RegNetConfig:
  """config.json keys of a RegNet classifier (defaults: transformers' RegNetConfig)."""
  num_channels: int = 3
  embedding_size: int = 32
  hidden_sizes: tuple[int, ...] = (128, 192, 512, 1088)
  depths: tuple[int, ...] = (2, 6, 12, 2)
  groups_width: int = 64
  layer_type: str = "y"
  hidden_act: str = "relu"
  num_labels: int = 2   # len(id2label)

  def __post_init__(self):   # lists (as in config.json) become tuples: configs stay hashable
    for key in ("hidden_sizes", "depths"):
      object.__setattr__(self, key, tuple(getattr(self, key)))

  @classmethod
  def from_dict(cls, raw: Mapping[str, Any], source: str) -> "RegNetConfig":
    raw = dict(raw, num_labels=len(tc.id2label(raw, source)))
    config = tc.parse(cls, raw, source, pinned=_PINNED,
                      choices={"hidden_act": tc.ACTIVATIONS, "layer_type": LAYER_TYPES})
    config.validate(source)
    return config

  def validate(self, source: str = "RegNetConfig") -> None:
    """One-line ConfigError for shapes no RegNet has (PyTorch would fail on the group conv)."""
    if len(self.depths) != len(self.hidden_sizes) or not self.depths:
      raise ConfigError(f"{source}: depths={list(self.depths)} and hidden_sizes="
                        f"{list(self.hidden_sizes)} must be non-empty and of equal length")
    if min(self.depths) < 1 or min(self.hidden_sizes) < 1 or self.groups_width < 1:
      raise ConfigError(f"{source}: depths={list(self.depths)}, hidden_sizes="
                        f"{list(self.hidden_sizes)} and groups_width={self.groups_width} must be "
                        "positive")
    if self.layer_type == "y" and min((self.embedding_size,) + self.hidden_sizes) < 3:
      raise ConfigError(f"{source}: layer_type='y' needs embedding_size and hidden_sizes >= 3 "
                        "(the squeeze-excitation width is round(in_channels / 4))")
    for width in self.hidden_sizes:
      count = groups(width, self.groups_width)
      if width % count:
        raise ConfigError(f"{source}: hidden_sizes entry {width} does not split into its "
                          f"{count} groups (max(1, {width} // groups_width={self.groups_width}));"
                          " use widths that are multiples of groups_width")


def groups(width: int, groups_width: int) -> int:
  """Groups of a stage's 3×3 convolution (transformers: max(1, width // groups_width))."""
  return max(1, width // groups_width)


def _conv(x: jax.Array, kernel: jax.Array, stride: int, groups: int) -> jax.Array:
  """NHWC × HWIO convolution, padding k // 2 on every side, `groups` feature groups."""
  pad = kernel.shape[0] // 2
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=groups)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def grouped_conv(x: jax.Array, kernel: jax.Array, stride: int, groups: int) -> jax.Array:
  """`_conv` whose kernel gradient is an einsum over input patches.

  XLA:CPU computes a grouped convolution's kernel gradient (a `batch_group_count` convolution)
  far slower than this einsum (see the module docstring); the forward pass and the input gradient
  stay XLA's grouped convolution.
  x [P, H, W, C], kernel [k, k, C / groups, F] → [P, H', W', F].
  """
  return _conv(x, kernel, stride, groups)


def _grouped_conv_fwd(x, kernel, stride, groups):
  return _conv(x, kernel, stride, groups), (x, kernel)


def _grouped_conv_bwd(stride, groups, residuals, dy):
  x, kernel = residuals
  k, cin, cout = kernel.shape[0], kernel.shape[2], kernel.shape[3]
  _, pull = jax.vjp(lambda x: _conv(x, kernel, stride, groups), x)
  dx, = pull(dy)
  p, ho, wo = dy.shape[:3]
  pad = k // 2
  padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  taps = [jax.lax.slice(padded, (0, i, j, 0), (p, i + stride * (ho - 1) + 1,
                                               j + stride * (wo - 1) + 1, padded.shape[3]),
                        (1, stride, stride, 1))
          for i in range(k) for j in range(k)]
  patches = jnp.stack(taps, axis=3).reshape(p, ho, wo, k * k, groups, cin)   # [P,H',W',k²,G,C/G]
  dy = dy.reshape(p, ho, wo, groups, cout // groups)
  dkernel = jnp.einsum("bhwtgi,bhwgo->tigo", patches, dy).reshape(k, k, cin, cout)
  return dx, dkernel.astype(kernel.dtype)


grouped_conv.defvjp(_grouped_conv_fwd, _grouped_conv_bwd)


class _GroupedConv(nn.Module):
  """A bias-free grouped convolution with nn.Conv's parameter layout (`kernel` [k, k, C/G, F])."""
  features: int
  kernel_size: int
  stride: int
  groups: int
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", self.kernel_init,
                        (k, k, x.shape[-1] // self.groups, self.features), jnp.float32)
    return grouped_conv(x.astype(self.dtype), kernel.astype(self.dtype), self.stride,
                        self.groups)


class _ConvLayer(bn_classifier.ConvLayer):
  """`bn_classifier.ConvLayer` whose convolution has `groups` feature groups (> 1: `_GroupedConv`)."""
  groups: int = 1

  def convolution(self, x: jax.Array) -> jax.Array:
    if self.groups == 1:
      return super().convolution(x)
    return _GroupedConv(self.features, self.kernel_size, self.stride, self.groups, self.dtype,
                        name="convolution")(x)


class _SqueezeExcitationGate(nn.Module):
  """σ(W₂ ReLU(W₁ p + b₁) + b₂) of pooled features p [P, 1, 1, C] (1×1 convs "0" and "2")."""
  channels: int
  reduced: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pooled: jax.Array) -> jax.Array:
    conv = lambda features, name: nn.Conv(features, (1, 1), dtype=self.dtype, name=name)
    return jax.nn.sigmoid(conv(self.channels, "2")(nn.relu(conv(self.reduced, "0")(pooled))))


class _SqueezeExcitation(nn.Module):
  channels: int
  reduced: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pooled = jnp.mean(x, axis=(1, 2), keepdims=True)                          # [P, 1, 1, C]
    return x * _SqueezeExcitationGate(self.channels, self.reduced, self.dtype,
                                      name="attention")(pooled)


class _Layers(nn.Module):
  """The residual branch F: its parts applied in turn, named "0", "1", ... as in transformers."""
  config: RegNetConfig
  in_channels: int
  out_channels: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c, out, act = self.config, self.out_channels, self.config.hidden_act
    x = _ConvLayer(out, 1, 1, act, self.dtype, name="0")(x, train)
    x = _ConvLayer(out, 3, self.stride, act, self.dtype,
                   groups=groups(out, c.groups_width), name="1")(x, train)
    if c.layer_type == "y":
      x = _SqueezeExcitation(out, int(round(self.in_channels / 4)), self.dtype, name="2")(x)
    last = "3" if c.layer_type == "y" else "2"
    return _ConvLayer(out, 1, 1, None, self.dtype, name=last)(x, train)


class RegNetBlock(nn.Module):
  """act(F(x) + shortcut(x)); shortcut = 1×1/stride conv + BN where channels or stride change."""
  config: RegNetConfig
  in_channels: int
  out_channels: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    residual = x
    if self.in_channels != self.out_channels or self.stride != 1:
      residual = _ConvLayer(self.out_channels, 1, self.stride, None, self.dtype,
                            name="shortcut")(x, train)
    x = _Layers(self.config, self.in_channels, self.out_channels, self.stride, self.dtype,
                name="layer")(x, train)
    return tc.ACTIVATIONS[self.config.hidden_act](x + residual)


class _Embedder(nn.Module):
  config: RegNetConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = self.config
    return _ConvLayer(c.embedding_size, 3, 2, c.hidden_act, self.dtype,
                      name="embedder")(x, train)


def _first_stride(config: RegNetConfig, stage: int) -> int:
  del config, stage
  return 2   # downsample_in_first_stage: every stage's first block strides


_SPEC = bn_classifier.Spec("regnet", "RegNet", _Embedder, RegNetBlock, _first_stride)


class RegNetForImageClassification(nn.Module):
  """Normalised pixels [P, h, w, C] (channels last; any size) → logits [P, num_labels]."""
  config: RegNetConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pixels: jax.Array, train: bool = False) -> jax.Array:
    return bn_classifier.classify(_SPEC, self.config, self.dtype, pixels, train)


# World 2's held-out evaluator (issue #23; docs/world2_model_card.md): a RegNetY for 64² images
# and 83 classes after RegNetY-200MF (group width 8, SE on every block, the depth in the third
# stage) with one block in the last stage (at 2×2 pixels depth buys parameters, not receptive
# field): 64 → 32 (stem) → 16, 8, 4, 2 (stages). 1,025,545 parameters, 0.035 GFLOP per 64² image
# (docs/results/world2_regnet_cost.json).
WORLD2_EVALUATOR = RegNetConfig(embedding_size=32, hidden_sizes=(48, 104, 208, 440),
                                depths=(1, 1, 4, 1), groups_width=8, layer_type="y",
                                num_labels=83)


def regnet_model(config: RegNetConfig = WORLD2_EVALUATOR, key: jax.Array | None = None,
                 image_size: int = 64, dtype=jnp.float32
                 ) -> tuple[RegNetForImageClassification, dict]:
  """(module, variables {"params", "batch_stats"}) initialised from `key` (default PRNGKey(0))
  under jit; train with `module.apply(variables, x, train=True, mutable=["batch_stats"])`, save
  with `convert_transformers.save(dir, "regnet", module.config, variables, labels)`."""
  config.validate()
  module = RegNetForImageClassification(config, dtype)
  key = jax.random.PRNGKey(0) if key is None else key
  pixels = jnp.zeros((1, image_size, image_size, config.num_channels), jnp.float32)
  return module, jax.jit(module.init)(key, pixels)
