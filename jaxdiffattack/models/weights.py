"""Safe weight loading: Flax msgpack, or PyTorch safetensors converted at load time; never pickle.

Pickle-based checkpoints (.bin, .ckpt, .pt, .pth, .pkl) can execute arbitrary code when loaded, so
they are refused with an error that says how to get safetensors instead. diffusers models (UNet,
VAE) are jaxdiffattack's own modules (`unet.py`, `vae.py`) built from their `config.json` (read
into a typed config that refuses options the modules do not implement) and filled from
`diffusion_flax_model.msgpack`, or from `diffusion_pytorch_model[.fp16].safetensors` renamed and
transposed straight into the expected tree (`convert_diffusers.py`; the tree's shapes come from
`jax.eval_shape`, nothing is initialised). transformers models (CLIP, ViT, ResNet) load the same
way through `convert_transformers.py`, after the same pickle check. Every failure is one line naming the file and the key.
"""

import pathlib
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack import io
from jaxdiffattack.errors import UserError
from jaxdiffattack.models import convert_diffusers
from jaxdiffattack.models import model_config
from jaxdiffattack.models import unet as unet_lib
from jaxdiffattack.models import vae as vae_lib

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")

DIFFUSERS_FLAX_WEIGHTS = ("diffusion_flax_model.msgpack",)
DIFFUSERS_SAFETENSORS = ("diffusion_pytorch_model.safetensors",
                         "diffusion_pytorch_model.fp16.safetensors")


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
    with open(path, "rb") as f:
      head = f.read(4)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":   # torch.save's zip, or a raw pickle
      raise CorruptWeightsError(
          f"{path}: is a PyTorch pickle under a .safetensors name (pickles are never loaded); "
          "convert it to real safetensors (safetensors.torch.save_file) or download the "
          "safetensors weights") from None
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
  """Casts every floating-point leaf of `tree` to `dtype` (integer leaves untouched); NumPy
  leaves already of `dtype` are kept, not copied."""
  def cast(x):
    if not isinstance(x, jax.Array):
      x = np.asarray(x)
      return x.astype(dtype, copy=False) if jnp.issubdtype(x.dtype, jnp.floating) else x
    return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
  return jax.tree_util.tree_map(cast, tree)


def write_safetensors(path, tensors: dict[str, np.ndarray]) -> pathlib.Path:
  """Writes {name: array} as a .safetensors file, atomically."""
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  data = safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in tensors.items()})
  return io.atomic_write_bytes(path, data)


# The diffusers model kinds: config parser, module class, config.json writer.
DIFFUSERS_MODELS = {
    "unet": (unet_lib.unet_config, unet_lib.UNet2DConditionModel, unet_lib.config_json),
    "vae": (vae_lib.vae_config, vae_lib.AutoencoderKL, vae_lib.config_json),
}


def build_diffusers_model(kind: str, config: dict, source="config", dtype=jnp.float32,
                          attention: str = "xla"):
  """The module of a diffusers model kind ("unet", "vae") from its config.json dict."""
  parse, module_class, _ = DIFFUSERS_MODELS[kind]
  return module_class(parse(config, source), dtype=dtype, attention=attention)


def expected_params(module) -> dict:
  """{Flax path tuple: ShapeDtypeStruct} of the module's params (no init computed)."""
  shapes = jax.eval_shape(module.init_weights, jax.random.PRNGKey(0))
  return flax.traverse_util.flatten_dict(shapes)


def load_diffusers_model(kind: str, directory: pathlib.Path, dtype: jnp.dtype = jnp.float32,
                         attention: str = "xla"):
  """Builds jaxdiffattack's module for a diffusers model directory and loads its weights.

  Args:
    kind: "unet" or "vae".
    directory: holds config.json and msgpack or safetensors weights.
    dtype: computation and parameter dtype (float32 or bfloat16).
    attention: the attention implementation (see `attention.IMPLEMENTATIONS`).

  Returns:
    (module, params): the linen module and its parameters as a nested dict of arrays.
  """
  directory = pathlib.Path(directory)
  config_file = directory / "config.json"
  if not config_file.is_file():
    raise WeightsNotFoundError(f"{directory}: no config.json")
  module = build_diffusers_model(kind, model_config.read_json(config_file), config_file, dtype,
                                 attention)
  expected = expected_params(module)
  path = find_weights(directory, DIFFUSERS_FLAX_WEIGHTS + DIFFUSERS_SAFETENSORS)
  if path.suffix == ".msgpack":
    flat = convert_diffusers.check_flax(
        flax.traverse_util.flatten_dict(read_msgpack(path)), expected, path)
  else:
    flat = convert_diffusers.from_pytorch(read_safetensors(path), expected, path)
  params = flax.traverse_util.unflatten_dict(flat)
  return module, cast_floating(params, dtype)


def save_diffusers_model(directory, module, params) -> pathlib.Path:
  """Writes config.json + diffusion_flax_model.msgpack (each atomically) for `load_diffusers_model`."""
  directory = pathlib.Path(directory)
  to_json = next(write for _, cls, write in DIFFUSERS_MODELS.values() if isinstance(module, cls))
  io.write_json(directory / "config.json", to_json(module.config))
  io.atomic_write_bytes(directory / DIFFUSERS_FLAX_WEIGHTS[0],
                        flax.serialization.msgpack_serialize(jax.device_get(params)))
  return directory
