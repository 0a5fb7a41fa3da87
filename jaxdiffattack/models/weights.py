"""Safe weight loading: Flax msgpack, or PyTorch safetensors converted at load time; never pickle.

Pickle-based checkpoints (.bin, .ckpt, .pt, .pth, .pkl) can execute arbitrary code when loaded, so
they are refused with an error that says how to get safetensors instead. diffusers models (UNet,
VAE) are built from their `config.json` and filled from `diffusion_flax_model.msgpack`, or from
`diffusion_pytorch_model[.fp16].safetensors` renamed/transposed to Flax layout with diffusers' own
key-mapping rules; transformers models (CLIP, ViT, ResNet) load `flax_model.msgpack` or
`model.safetensors` through transformers' Flax loader after the same pickle check.
"""

import json
import pathlib
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack.errors import UserError

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")

DIFFUSERS_FLAX_WEIGHTS = ("diffusion_flax_model.msgpack",)
DIFFUSERS_SAFETENSORS = ("diffusion_pytorch_model.safetensors",
                         "diffusion_pytorch_model.fp16.safetensors")
TRANSFORMERS_WEIGHTS = ("flax_model.msgpack", "model.safetensors")


class PickleWeightsError(UserError, ValueError):
  """Only pickle-format weights were found; loading them could execute code."""


class WeightsNotFoundError(UserError, FileNotFoundError):
  """A model directory without any weights file."""


def _refuse_or_missing(directory: pathlib.Path, wanted: tuple[str, ...]) -> Exception:
  pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
  if pickles:
    return PickleWeightsError(
        f"{directory}: only pickle weights ({', '.join(pickles)}) found; pickle can execute code "
        "and is refused — get the *.safetensors variant of this checkpoint (or convert it once "
        "in a sandbox with safetensors.torch.save_file) and put it beside config.json")
  return WeightsNotFoundError(
      f"{directory}: no weights file; expected one of {', '.join(wanted)}")


def find_weights(directory: pathlib.Path, candidates: tuple[str, ...]) -> pathlib.Path:
  """Returns the first existing candidate file in `directory`, refusing pickle-only dirs."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise WeightsNotFoundError(f"{directory}: not a directory")
  for name in candidates:
    if (directory / name).is_file():
      return directory / name
  raise _refuse_or_missing(directory, candidates)


class CorruptWeightsError(UserError, ValueError):
  """A weights file that cannot be parsed (truncated, corrupted, or another format)."""


def read_safetensors(path) -> dict[str, np.ndarray]:
  """All tensors of a .safetensors file as NumPy arrays; a one-line error if it is not one.

  A pickle file renamed to .safetensors, a truncated download and a corrupted header all fail
  here, before anything is built from them.
  """
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  try:
    return dict(safetensors.numpy.load_file(str(path)))
  except Exception as e:  # pylint: disable=broad-except  # SafetensorError, OSError, ...
    detail = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise CorruptWeightsError(
        f"{path}: not a readable safetensors file ({detail}); it is truncated, corrupted or "
        "another format — download it again") from None


def read_msgpack(path) -> dict:
  """A Flax msgpack params file as a nested dict; a one-line error if it is not one."""
  path = pathlib.Path(path)
  try:
    tree = flax.serialization.msgpack_restore(path.read_bytes())
  except Exception as e:  # pylint: disable=broad-except  # msgpack's many exception types
    raise CorruptWeightsError(
        f"{path}: not a readable Flax msgpack file ({type(e).__name__}); it is truncated, "
        "corrupted or another format — re-export or download it again") from None
  if not isinstance(tree, dict):
    raise CorruptWeightsError(f"{path}: holds a {type(tree).__name__}, not a params tree")
  return tree


def cast_floating(tree: Any, dtype: jnp.dtype) -> Any:
  """Casts every floating-point leaf of `tree` to `dtype` (integer leaves untouched)."""
  def cast(x):
    x = np.asarray(x) if not isinstance(x, jax.Array) else x
    return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
  return jax.tree_util.tree_map(cast, tree)


def _pt_to_flax(state: dict[str, np.ndarray], expected_flat: dict[tuple[str, ...], Any]):
  """Maps a PyTorch diffusers state dict to Flax param names/layouts (diffusers' rules)."""
  # pylint: disable-next=g-import-not-at-top
  from diffusers.models.modeling_flax_pytorch_utils import rename_key, rename_key_and_reshape_tensor
  flat = {}
  for pt_key, tensor in state.items():
    key = tuple(rename_key(pt_key).split("."))
    flax_key, value = rename_key_and_reshape_tensor(key, np.asarray(tensor), expected_flat)
    flat[flax_key] = value
  return flat


def _check_against(flat: dict, expected_flat: dict, source: pathlib.Path) -> None:
  missing = sorted(set(expected_flat) - set(flat))
  unexpected = sorted(set(flat) - set(expected_flat))
  if missing or unexpected:
    raise ValueError(
        f"{source}: weights do not match config.json — {len(missing)} missing (e.g. "
        f"{'/'.join(missing[0]) if missing else '-'}), {len(unexpected)} unexpected (e.g. "
        f"{'/'.join(unexpected[0]) if unexpected else '-'})")
  for key, value in flat.items():
    if tuple(value.shape) != tuple(expected_flat[key].shape):
      raise ValueError(f"{source}: {'/'.join(key)} has shape {tuple(value.shape)}, config.json "
                       f"implies {tuple(expected_flat[key].shape)}")


# Config keys the diffusers Flax classes silently ignore, with the only value they implement.
# A checkpoint asking for anything else would load but compute something else: refuse it.
FLAX_FIXED_CONFIG = {
    "FlaxUNet2DConditionModel": {
        "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5, "conv_in_kernel": 3,
        "conv_out_kernel": 3, "time_embedding_type": "positional",
        "resnet_time_scale_shift": "default", "class_embed_type": None, "num_class_embeds": None,
        "time_cond_proj_dim": None, "encoder_hid_dim": None, "mid_block_scale_factor": 1,
        "dual_cross_attention": False, "cross_attention_norm": None, "resnet_out_scale_factor": 1.0,
        "time_embedding_dim": None, "time_embedding_act_fn": None, "timestep_post_act": None,
        "class_embeddings_concat": False, "attention_type": "default",
    },
    "FlaxAutoencoderKL": {
        "use_quant_conv": True, "use_post_quant_conv": True, "shift_factor": None,
        "latents_mean": None, "latents_std": None, "mid_block_add_attention": True,
    },
}


def check_supported_config(cls_name: str, config: dict, source) -> None:
  """Refuses config values the Flax implementation would silently ignore."""
  for key, supported in FLAX_FIXED_CONFIG.get(cls_name, {}).items():
    if key in config and config[key] != supported:
      raise UserError(f"{source}: config {key}={config[key]!r} is not supported by the Flax "
                      f"{cls_name} (it implements only {supported!r})")


def load_diffusers_model(cls, directory: pathlib.Path, dtype: jnp.dtype = jnp.float32):
  """Builds a diffusers Flax model from `directory` and loads its weights safely.

  Args:
    cls: a diffusers Flax model class (FlaxUNet2DConditionModel, FlaxAutoencoderKL).
    directory: holds config.json and msgpack or safetensors weights.
    dtype: computation and parameter dtype (float32 or bfloat16).

  Returns:
    (module, params): the Flax module and its parameters as a nested dict of arrays.
  """
  directory = pathlib.Path(directory)
  config_file = directory / "config.json"
  if not config_file.is_file():
    raise WeightsNotFoundError(f"{directory}: no config.json")
  config = json.loads(config_file.read_text())
  check_supported_config(cls.__name__, config, config_file)
  module = cls.from_config(config, dtype=dtype)
  expected = jax.eval_shape(module.init_weights, jax.random.PRNGKey(0))
  expected_flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(expected))
  path = find_weights(directory, DIFFUSERS_FLAX_WEIGHTS + DIFFUSERS_SAFETENSORS)
  if path.suffix == ".msgpack":
    flat = flax.traverse_util.flatten_dict(read_msgpack(path))
  else:
    flat = _pt_to_flax(read_safetensors(path), expected_flat)
  _check_against(flat, expected_flat, path)
  params = flax.traverse_util.unflatten_dict(flat)
  return module, cast_floating(params, dtype)


def load_transformers_model(cls, directory: pathlib.Path, dtype: jnp.dtype = jnp.float32):
  """Loads a transformers Flax model (msgpack or safetensors) after the pickle check.

  Returns:
    (model, params): the transformers Flax wrapper (callable with `params=`) and its params.
  """
  directory = pathlib.Path(directory)
  path = find_weights(directory, TRANSFORMERS_WEIGHTS)
  if path.suffix == ".msgpack":
    model, params = cls.from_pretrained(
        str(directory), dtype=dtype, _do_init=False, local_files_only=True)
  else:  # transformers converts safetensors only into an initialised model
    model = cls.from_pretrained(str(directory), dtype=dtype, local_files_only=True, from_pt=True)
    params = model.params
    # Params live outside the wrapper, as with _do_init=False: drop its copy.
    model._params, model._is_initialized = None, False  # pylint: disable=protected-access
  return model, cast_floating(params, dtype)
