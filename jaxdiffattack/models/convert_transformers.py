"""transformers checkpoints → the project's CLIP / ViT / ResNet / RegNet modules and their param
trees.

A checkpoint directory holds `config.json` and either `flax_model.msgpack` (a linen tree, loaded
as is) or PyTorch `model.safetensors`, whose tensors are renamed and transposed straight into the
module's tree: no transformers class is built, no random initialisation happens first — the
expected names and shapes come from `jax.eval_shape` of the module's `init`. Pickle weights
(.bin, .pt, ...) are refused (`weights.find_weights`).

PyTorch → linen names: dots become tree levels; `weight` becomes `kernel` (Dense: transposed
[out, in] → [in, out]; Conv: [out, in, kh, kw] → [kh, kw, in, out]), `scale` (LayerNorm,
BatchNorm) or `embedding` (Embed), whichever the module has at that place; BatchNorm's
`running_mean` / `running_var` go to the `batch_stats` collection as `mean` / `var`. Model-specific
rules (`KINDS[...].rename`) fix the few places where transformers' Flax names differ from its
PyTorch ones (a ResNet basic block's `layer.0` is `layer/layer_0`) and list the tensors a
checkpoint may carry that no module reads (position-id buffers, BatchNorm step counters, a
ViT pooler the classifier does not have).

Every problem is a one-line `UserError` naming the file and the key: a missing weight, an
unexpected weight, a shape mismatch, a truncated or corrupted file (`weights.read_*`), an unknown
config option (`transformers_config.parse`).
"""

import dataclasses
import pathlib
import re
from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack import io
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.errors import UserError
from jaxdiffattack.models import attention as attention_lib
from jaxdiffattack.models import clip
from jaxdiffattack.models import regnet
from jaxdiffattack.models import resnet
from jaxdiffattack.models import transformers_config as tc
from jaxdiffattack.models import vit
from jaxdiffattack.models import weights

FLAX_WEIGHTS = "flax_model.msgpack"
SAFETENSORS_WEIGHTS = "model.safetensors"


class WeightsMismatchError(UserError, ValueError):
  """Weights that do not fit the module config.json describes (missing, unexpected, shape)."""


# ------------------------------------------------------------------------- renaming rules --


def _split(pt_key: str) -> tuple[str, ...]:
  return tuple(pt_key.split("."))


def _batch_norm_path(pt_key: str, config) -> tuple[str, ...]:
  """Modules with BatchNorm (RegNet): collection first, then the PyTorch name as is."""
  del config
  collection = "batch_stats" if pt_key.endswith(("running_mean", "running_var")) else "params"
  return (collection,) + _split(pt_key)


def _resnet_path(pt_key: str, config: resnet.ResNetConfig) -> tuple[str, ...]:
  """ResNet: as `_batch_norm_path`, but a basic block's conv layers are `layer_<i>` in linen."""
  if config.layer_type == "basic":
    pt_key = re.sub(r"\.layer\.(\d+)\.", r".layer.layer_\1.", pt_key)
  return _batch_norm_path(pt_key, config)


class Kind(NamedTuple):
  """How one kind of transformers checkpoint becomes a module + params."""
  model_types: tuple[str, ...]                     # config.json model_type values accepted
  parse: Callable[[dict, str], Any]                # config dict → typed config
  build: Callable[[Any, Any, str], Any]            # (config, dtype, attention) → linen module
  dummy_inputs: Callable[[Any], tuple]             # config → inputs for `init` (shapes only)
  rename: Callable[[str, Any], tuple[str, ...]]    # PyTorch key → path in the tree
  unused: str                                      # regex of PyTorch keys no module reads
  collections: bool = False                        # tree is {"params", "batch_stats"}


def _text_model_prefixed(pt_key: str) -> str:
  """transformers 5 saves CLIPTextModel without the `text_model.` prefix that checkpoints saved
  by transformers 4 (every SD release) carry; both name the same weights."""
  return pt_key if pt_key.startswith("text_model.") else "text_model." + pt_key


def _text_ids(length: int):
  return jnp.zeros((1, length), jnp.int32)


def _image(size: int, channels: int):
  return jnp.zeros((1, size, size, channels), jnp.float32)


KINDS = {
    "clip_text": Kind(
        ("clip_text_model",), clip.CLIPTextConfig.from_dict,
        lambda c, dtype, attn: clip.CLIPTextModel(c, dtype, attn),
        lambda c: (_text_ids(c.max_position_embeddings),),
        lambda key, c: _split(_text_model_prefixed(key)), r"(^|\.)position_ids$"),
    "clip": Kind(
        ("clip",), clip.CLIPConfig.from_dict,
        lambda c, dtype, attn: clip.CLIPModel(c, dtype, attn),
        lambda c: (_text_ids(c.text.max_position_embeddings),
                   _image(c.vision.image_size, c.vision.num_channels)),
        lambda key, c: _split(key), r"(^|\.)position_ids$"),
    "vit": Kind(
        ("vit",), vit.ViTConfig.from_dict,
        lambda c, dtype, attn: vit.ViTForImageClassification(c, dtype, attn),
        lambda c: (_image(c.image_size, c.num_channels),),
        lambda key, c: _split(key), r"^vit\.pooler\.|^vit\.embeddings\.mask_token$"),
    "resnet": Kind(
        ("resnet",), resnet.ResNetConfig.from_dict,
        lambda c, dtype, attn: resnet.ResNetForImageClassification(c, dtype),
        lambda c: (_image(64, c.num_channels),),
        _resnet_path, r"\.num_batches_tracked$", collections=True),
    "regnet": Kind(
        ("regnet",), regnet.RegNetConfig.from_dict,
        lambda c, dtype, attn: regnet.RegNetForImageClassification(c, dtype),
        lambda c: (_image(64, c.num_channels),),
        _batch_norm_path, r"\.num_batches_tracked$", collections=True),
}

# PyTorch leaf name → linen leaf names it may become (the module's tree decides which).
_LEAF_NAMES = {"weight": ("kernel", "scale", "embedding"), "running_mean": ("mean",),
               "running_var": ("var",)}


def _to_linen(path: tuple[str, ...], tensor: np.ndarray, expected: dict) -> tuple:
  """(linen path, array) for one PyTorch tensor; the path is unchanged if nothing fits."""
  for leaf in _LEAF_NAMES.get(path[-1], (path[-1],)):
    candidate = path[:-1] + (leaf,)
    if candidate in expected:
      if leaf == "kernel" and tensor.ndim == 2:
        tensor = tensor.T                                       # [out, in] → [in, out]
      elif leaf == "kernel" and tensor.ndim == 4:
        tensor = tensor.transpose(2, 3, 1, 0)                   # [o, i, kh, kw] → [kh, kw, i, o]
      return candidate, tensor
  return path, tensor


def pytorch_to_tree(state: dict[str, np.ndarray], kind: Kind, config, expected: dict,
                    source: pathlib.Path) -> dict:
  """Flat {path: array} in the module's layout from a PyTorch state dict (checked)."""
  unused = re.compile(kind.unused)
  flat = {}
  for key, tensor in state.items():
    if unused.search(key):
      continue
    path, value = _to_linen(kind.rename(key, config), np.asarray(tensor), expected)
    if path not in expected:
      raise WeightsMismatchError(
          f"{source}: unexpected weight {key!r} (no {'/'.join(path)} in the model config.json "
          "describes); the checkpoint and config.json disagree")
    flat[path] = value
  return flat


def tree_to_pytorch(flat: dict, pytorch_keys, kind_name: str, config) -> dict[str, np.ndarray]:
  """The inverse of `pytorch_to_tree`: a PyTorch state dict for the keys a transformers module
  has (`pytorch_keys`), from flat linen params {path: array}. Keys no module reads are left out."""
  kind = KINDS[kind_name]
  unused = re.compile(kind.unused)
  out = {}
  for key in pytorch_keys:
    if unused.search(key):
      continue
    path, _ = _to_linen(kind.rename(key, config), np.zeros(()), flat)
    if path not in flat:
      raise WeightsMismatchError(f"no linen weight {'/'.join(path)} for PyTorch key {key!r}")
    value = np.asarray(flat[path])
    if path[-1] == "kernel":
      value = value.T if value.ndim == 2 else value.transpose(3, 2, 0, 1)
    out[key] = np.ascontiguousarray(value)
  return out


def check_tree(flat: dict, expected: dict, source: pathlib.Path) -> None:
  """One-line errors for missing / unexpected weights and shape mismatches."""
  missing = [k for k in expected if k not in flat]
  if missing:
    raise WeightsMismatchError(
        f"{source}: missing weight {'/'.join(missing[0])} ({len(missing)} missing in all); "
        "the checkpoint does not match its config.json")
  unexpected = [k for k in flat if k not in expected]
  if unexpected:
    raise WeightsMismatchError(
        f"{source}: unexpected weight {'/'.join(unexpected[0])} ({len(unexpected)} in all); "
        "the checkpoint does not match its config.json")
  for key, value in flat.items():
    if tuple(np.shape(value)) != tuple(expected[key].shape):
      raise WeightsMismatchError(
          f"{source}: weight {'/'.join(key)} has shape {tuple(np.shape(value))}, config.json "
          f"implies {tuple(expected[key].shape)}")


# -------------------------------------------------------------------------------- loading --


class Loaded(NamedTuple):
  module: Any            # the linen module (dtype and attention implementation set)
  params: Any            # its params (ResNet: variables {"params", "batch_stats"})
  config: Any            # the typed config
  raw_config: dict       # config.json as read (id2label etc.)


def expected_tree(kind: Kind, module, config) -> dict:
  """{path: ShapeDtypeStruct} of the module's params (no compute, no memory)."""
  variables = jax.eval_shape(lambda key: module.init(key, *kind.dummy_inputs(config)),
                             jax.random.PRNGKey(0))
  tree = variables if kind.collections else variables["params"]
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))


def load(directory, kind_name: str, dtype=jnp.float32, attention: str = "xla") -> Loaded:
  """Builds the module `config.json` describes and fills its params from the weights file.

  Args:
    directory: a transformers checkpoint directory (config.json + msgpack or safetensors).
    kind_name: a key of KINDS ("clip_text", "clip", "vit", "resnet", "regnet").
    dtype: computation and parameter dtype (jnp.float32 or jnp.bfloat16).
    attention: the attention implementation (`attention.IMPLEMENTATIONS`).
  """
  directory = pathlib.Path(directory)
  kind = KINDS[kind_name]
  attention_lib.check_implementation(attention)
  config_file = directory / "config.json"
  raw = tc.read_json(config_file)
  model_type = raw.get("model_type")
  if model_type not in kind.model_types:
    raise ConfigError(f"{config_file}: model_type={model_type!r}; expected "
                      f"{' or '.join(repr(t) for t in kind.model_types)}")
  config = kind.parse(raw, str(config_file))
  module = kind.build(config, dtype, attention)
  expected = expected_tree(kind, module, config)
  path = weights.find_weights(directory, (FLAX_WEIGHTS, SAFETENSORS_WEIGHTS))
  if path.suffix == ".msgpack":
    flat = flax.traverse_util.flatten_dict(weights.read_msgpack(path))
  else:
    flat = pytorch_to_tree(weights.read_safetensors(path), kind, config, expected, path)
  check_tree(flat, expected, path)
  cast = lambda x: jnp.asarray(x, dtype if np.issubdtype(np.asarray(x).dtype, np.floating)
                               else None)   # one host→device copy, cast on the way
  params = {key: cast(value) for key, value in flat.items()}
  return Loaded(module, flax.traverse_util.unflatten_dict(params), config, raw)


def load_text_encoder(directory, dtype=jnp.float32, attention: str = "xla",
                      clip_skip: int = 0) -> tuple[clip.CLIPTextModel, Any]:
  """(module, params) of a Stable Diffusion `text_encoder/` (transformers' CLIPTextModel)."""
  loaded = load(directory, "clip_text", dtype, attention)
  clip_skip = clip.check_clip_skip(clip_skip, loaded.config, str(directory))
  return loaded.module.clone(clip_skip=clip_skip), loaded.params


# ------------------------------------------------------------------ torchvision layout --
#
# A torchvision `VisionTransformer` (torchvision.models.vit_*; e.g. vit_h_14 with the SWAG
# weights, Singh et al. 2022, the evaluator of arXiv 2312.11473) saved as ONE .safetensors file of
# its `state_dict()` (keys exactly as torchvision writes them, float32 or float16):
#   conv_proj.{weight [D, 3, p, p], bias}          class_token [1, 1, D]
#   encoder.pos_embedding [1, (S/p)² + 1, D]        encoder.ln.{weight, bias}
#   encoder.layers.encoder_layer_<i>.{ln_1, ln_2}.{weight, bias}
#   encoder.layers.encoder_layer_<i>.self_attention.in_proj_{weight [3D, D], bias [3D]}
#   encoder.layers.encoder_layer_<i>.self_attention.out_proj.{weight, bias}
#   encoder.layers.encoder_layer_<i>.mlp.{0, 3}.{weight, bias}     heads.head.{weight, bias}
# The architecture is not in the file (the head count cannot be read from shapes): it is a
# `TorchvisionViT` preset. One line converts torchvision's pickle checkpoint once, on a machine
# with torchvision (pickles are never loaded here):
#   python -c "import torchvision, safetensors.torch as s; s.save_file(torchvision.models.vit_h_14(
#     weights='IMAGENET1K_SWAG_E2E_V1').state_dict(), 'vit_h_14_swag.safetensors')"
# It maps onto the transformers-layout ViT (`vit.ViTForImageClassification`): the same
# computation (pre-LayerNorm blocks, exact GELU, [CLS] head), LayerNorm eps 1e-6, the fused
# in-projection split into query/key/value.


@dataclasses.dataclass(frozen=True)
class TorchvisionViT:
  """A torchvision VisionTransformer's constructor arguments and its weights' preprocessing."""
  image_size: int
  patch_size: int
  num_layers: int
  num_heads: int
  hidden_dim: int
  mlp_dim: int
  num_classes: int = 1000
  resize_size: int = 0        # shorter side resized to this (0: image_size), then a centre crop
  mean: tuple[float, float, float] = (0.485, 0.456, 0.406)   # torchvision's ImageNet statistics
  std: tuple[float, float, float] = (0.229, 0.224, 0.225)

  def vit_config(self) -> vit.ViTConfig:
    return vit.ViTConfig(
        hidden_size=self.hidden_dim, num_hidden_layers=self.num_layers,
        num_attention_heads=self.num_heads, intermediate_size=self.mlp_dim, hidden_act="gelu",
        layer_norm_eps=1e-6, image_size=self.image_size, patch_size=self.patch_size,
        num_channels=3, qkv_bias=True, num_labels=self.num_classes)


# Presets by name. A new one is one line. vit_h_14_swag: ViT_H_14_Weights.IMAGENET1K_SWAG_E2E_V1
# (torchvision's weight docs: resize 518 bicubic, centre crop 518, ImageNet mean/std; 633,470,440
# parameters; ImageNet-1k classes in index order).
TORCHVISION_VITS = {
    "vit_h_14_swag": TorchvisionViT(image_size=518, patch_size=14, num_layers=32, num_heads=16,
                                    hidden_dim=1280, mlp_dim=5120, resize_size=518),
}


def torchvision_vit_arch(arch) -> TorchvisionViT:
  """A `TorchvisionViT` from a preset name (or an instance, passed through)."""
  if isinstance(arch, TorchvisionViT):
    return arch
  if arch not in TORCHVISION_VITS:
    raise ConfigError(f"torchvision architecture {arch!r} is unknown: use one of "
                      f"{sorted(TORCHVISION_VITS)}")
  return TORCHVISION_VITS[arch]


def _torchvision_vit_path(key: str) -> tuple[str, ...] | None:
  """The linen path of a torchvision ViT key (None: the fused in-projection, split apart)."""
  fixed = {"conv_proj": ("vit", "embeddings", "patch_embeddings", "projection"),
           "encoder.ln": ("vit", "layernorm"), "heads.head": ("classifier",)}
  if key == "class_token":
    return ("vit", "embeddings", "cls_token")
  if key == "encoder.pos_embedding":
    return ("vit", "embeddings", "position_embeddings")
  module, leaf = key.rsplit(".", 1)
  if module in fixed:
    return fixed[module] + (leaf,)
  m = re.fullmatch(r"encoder\.layers\.encoder_layer_(\d+)\.(.+)", module)
  if m is None:
    return ("torchvision",) + _split(key)         # reported as unexpected
  layer = ("vit", "encoder", "layer", m.group(1))
  parts = {"ln_1": ("layernorm_before",), "ln_2": ("layernorm_after",),
           "self_attention.out_proj": ("attention", "output", "dense"),
           "mlp.0": ("intermediate", "dense"), "mlp.3": ("output", "dense"),
           "self_attention": None}
  if m.group(2) not in parts:
    return ("torchvision",) + _split(key)
  if parts[m.group(2)] is None:
    return None
  return layer + parts[m.group(2)] + (leaf,)


def torchvision_vit_tree(state: dict[str, np.ndarray], expected: dict,
                         source: pathlib.Path) -> dict:
  """Flat {linen path: array} of the ViT from a torchvision VisionTransformer state dict."""
  flat = {}
  for key, tensor in state.items():
    tensor = np.asarray(tensor)
    path = _torchvision_vit_path(key)
    if path is None:                       # in_proj_{weight,bias}: [3D, ...] → q, k, v
      layer = ("vit", "encoder", "layer", re.search(r"encoder_layer_(\d+)", key).group(1),
               "attention", "attention")
      leaf = "kernel" if key.endswith("weight") else "bias"
      for name, part in zip(("query", "key", "value"), np.split(tensor, 3, axis=0)):
        flat[layer + (name, leaf)] = part.T if leaf == "kernel" else part
      continue
    if path[-1] == "weight":
      for leaf in ("kernel", "scale"):
        if path[:-1] + (leaf,) in expected:
          path = path[:-1] + (leaf,)
          break
    if path[-1] == "kernel":
      tensor = tensor.T if tensor.ndim == 2 else tensor.transpose(2, 3, 1, 0)
    if path not in expected:
      raise WeightsMismatchError(f"{source}: unexpected weight {key!r} for a torchvision "
                                 "VisionTransformer of this architecture")
    flat[path] = tensor
  return flat


def load_torchvision_vit(file, arch, dtype=jnp.float32, attention: str = "xla") -> Loaded:
  """The ViT classifier of a torchvision VisionTransformer state dict in a .safetensors `file`
  (layout above); `arch` a `TORCHVISION_VITS` name or a `TorchvisionViT`."""
  arch = torchvision_vit_arch(arch)
  attention_lib.check_implementation(attention)
  file = pathlib.Path(file).expanduser()
  if not file.is_file():
    raise weights.WeightsNotFoundError(
        f"{file}: no such weights file; convert torchvision's checkpoint once to safetensors "
        "(see jaxdiffattack/models/convert_transformers.py, 'torchvision layout') and give its "
        "path")
  if file.suffix != ".safetensors":
    raise weights.WeightsNotFoundError(f"{file}: not a .safetensors file (pickles are never "
                                       "loaded); convert it with safetensors.torch.save_file")
  config = arch.vit_config()
  module = vit.ViTForImageClassification(config, dtype, attention)
  expected = expected_tree(KINDS["vit"], module, config)
  flat = torchvision_vit_tree(weights.read_safetensors(file), expected, file)
  check_tree(flat, expected, file)
  params = {key: jnp.asarray(value, dtype) for key, value in flat.items()}
  return Loaded(module, flax.traverse_util.unflatten_dict(params), config,
                {"model_type": "vit", "torchvision": dataclasses.asdict(arch)})


# --------------------------------------------------------------------------------- saving --

# kind → (model_type, architectures) written to config.json; nested CLIP towers get their own.
_SAVED_AS = {"clip_text": ("clip_text_model", "CLIPTextModel"), "clip": ("clip", "CLIPModel"),
             "vit": ("vit", "ViTForImageClassification"),
             "resnet": ("resnet", "ResNetForImageClassification"),
             "regnet": ("regnet", "RegNetForImageClassification")}


def config_dict(kind_name: str, config, id2label: tuple[str, ...] | None = None) -> dict:
  """The transformers config.json of a typed config (`load` reads it back to the same config)."""
  model_type, architecture = _SAVED_AS[kind_name]
  if kind_name == "clip":
    out = {"projection_dim": config.projection_dim,
           "logit_scale_init_value": config.logit_scale_init_value,
           "text_config": dict(dataclasses.asdict(config.text), model_type="clip_text_model"),
           "vision_config": dict(dataclasses.asdict(config.vision),
                                 model_type="clip_vision_model")}
  else:
    out = dataclasses.asdict(config)
  if "num_labels" in out:
    count = out.pop("num_labels")
    labels = tuple(id2label) if id2label is not None else tuple(
        f"LABEL_{i}" for i in range(count))
    if len(labels) != count:
      raise ValueError(f"{len(labels)} labels for a {count}-output classifier")
    out["id2label"] = {str(i): name for i, name in enumerate(labels)}
    out["label2id"] = {name: i for i, name in enumerate(labels)}
  out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
  return dict(out, model_type=model_type, architectures=[architecture])


def save(directory, kind_name: str, config, params, id2label: tuple[str, ...] | None = None):
  """Writes config.json + flax_model.msgpack (float32) that `load` (and transformers) read."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  io.write_json(directory / "config.json", config_dict(kind_name, config, id2label))
  host = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), flax.core.unfreeze(params))
  io.atomic_write_bytes(directory / FLAX_WEIGHTS, flax.serialization.msgpack_serialize(host))
  return directory
