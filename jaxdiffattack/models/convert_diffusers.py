"""PyTorch diffusers weights ↔ the param trees of `unet.py` / `vae.py`: names and layouts.

A diffusers PyTorch state dict names a weight by its module path with list indices as their own
components (`down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_out.0.weight`); the linen
trees join a list name and its index with `_` (`down_blocks_0/.../to_out_0/kernel`). Linear
weights are [out, in] in PyTorch and [in, out] ("kernel") here; conv weights [out, in, kh, kw]
there and [kh, kw, in, out] here; norm weights are "scale" here. The VAE's middle attention has
two PyTorch spellings: current diffusers writes `to_q/to_k/to_v/to_out.0`, older checkpoints
`query/key/value/proj_attn` (sometimes as 1×1 conv weights); all are read into the Flax names
query/key/value/proj_attn.

The direction of the mapping is from the expected tree (`jax.eval_shape` of the module's init) to
the file: every expected weight is looked up under its candidate names, so a missing weight, an
unexpected one and a shape mismatch are each reported by name, and no random weights are ever
initialised.
"""

import re

import numpy as np

from jaxdiffattack.errors import UserError

# linen list components written `name_i` here and `name.i` in PyTorch.
_LISTS = frozenset({"down_blocks", "up_blocks", "resnets", "attentions", "transformer_blocks",
                    "downsamplers", "upsamplers", "net", "to_out"})
# The VAE middle attention: Flax name → PyTorch names, current diffusers first.
_VAE_ATTENTION = {"query": ("to_q", "query"), "key": ("to_k", "key"),
                  "value": ("to_v", "value"), "proj_attn": ("to_out.0", "proj_attn")}
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias"}


class WeightsMismatchError(UserError, ValueError):
  """A checkpoint whose weights do not match what its config.json implies."""


def _component(part: str) -> str:
  match = re.fullmatch(r"(\w+?)_(\d+)", part)
  if match and match.group(1) in _LISTS:
    return f"{match.group(1)}.{match.group(2)}"
  return part


def pytorch_names(flax_key: tuple[str, ...]) -> tuple[str, ...]:
  """The PyTorch state-dict names of one Flax weight, preferred spelling first."""
  *modules, leaf = flax_key
  prefix = ".".join(_component(p) for p in modules[:-1])
  last = modules[-1]
  if last in _VAE_ATTENTION and len(modules) >= 2 and modules[-2].startswith("attentions_"):
    options = _VAE_ATTENTION[last]
  else:
    options = (_component(last),)
  return tuple(".".join(filter(None, (prefix, name, _LEAVES[leaf]))) for name in options)


def to_flax_layout(tensor: np.ndarray, leaf: str, expected_ndim: int) -> np.ndarray:
  """A PyTorch tensor in the layout of Flax leaf `leaf` (left as is when it cannot fit)."""
  if leaf != "kernel":
    return tensor
  if tensor.ndim == 4 and expected_ndim == 4:
    return tensor.transpose(2, 3, 1, 0)
  if tensor.ndim == 4 and expected_ndim == 2 and tensor.shape[2:] == (1, 1):
    return tensor[:, :, 0, 0].T    # a 1×1 conv stored where a linear layer is expected
  if tensor.ndim == 2 and expected_ndim == 2:
    return tensor.T
  return tensor


def to_pytorch_layout(value: np.ndarray, leaf: str) -> np.ndarray:
  if leaf != "kernel":
    return value
  return value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T


def _pytorch_shape(shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
  return to_pytorch_layout(np.empty(shape, np.uint8), leaf).shape


def _refuse(source, kind: str, names: list[str], total: int) -> None:
  if names:
    raise WeightsMismatchError(
        f"{source}: {kind} weight {names[0]} ({len(names)} {kind}; the model config.json "
        f"describes has {total}); the file does not match config.json")


def from_pytorch(state: dict, expected_flat: dict, source) -> dict:
  """Flat Flax params {path tuple: array} from a PyTorch state dict {name: array}.

  Args:
    state: the safetensors contents.
    expected_flat: {Flax path tuple: ShapeDtypeStruct}, the tree config.json implies.
    source: the weights file, for messages.

  Raises:
    WeightsMismatchError: one line naming the file and the first missing, unexpected or
      mis-shaped weight.
  """
  flat, used, missing = {}, set(), []
  for key, spec in expected_flat.items():
    names = pytorch_names(key)
    name = next((n for n in names if n in state), None)
    if name is None:
      missing.append(names[0])
      continue
    value = to_flax_layout(np.asarray(state[name]), key[-1], len(spec.shape))
    if tuple(value.shape) != tuple(spec.shape):
      raise WeightsMismatchError(
          f"{source}: weight {name} has shape {tuple(np.shape(state[name]))}, config.json "
          f"implies {_pytorch_shape(tuple(spec.shape), key[-1])}")
    flat[key] = value
    used.add(name)
  _refuse(source, "missing", missing, len(expected_flat))
  _refuse(source, "unexpected", sorted(set(state) - used), len(expected_flat))
  return flat


def check_flax(flat: dict, expected_flat: dict, source) -> dict:
  """`flat` (a Flax msgpack tree, flattened) if it matches `expected_flat`; else one line naming
  the file and the first missing, unexpected or mis-shaped weight."""
  name = "/".join
  _refuse(source, "missing", [name(k) for k in sorted(set(expected_flat) - set(flat))],
          len(expected_flat))
  _refuse(source, "unexpected", [name(k) for k in sorted(set(flat) - set(expected_flat))],
          len(expected_flat))
  for key, spec in expected_flat.items():
    if tuple(np.shape(flat[key])) != tuple(spec.shape):
      raise WeightsMismatchError(f"{source}: weight {name(key)} has shape "
                                 f"{tuple(np.shape(flat[key]))}, config.json implies "
                                 f"{tuple(spec.shape)}")
  return flat


def to_pytorch(flat: dict) -> dict[str, np.ndarray]:
  """Flat Flax params {path tuple: array} → a diffusers PyTorch state dict (current names)."""
  return {pytorch_names(key)[0]: np.ascontiguousarray(to_pytorch_layout(np.asarray(value),
                                                                        key[-1]))
          for key, value in flat.items()}


__all__ = ["WeightsMismatchError", "check_flax", "from_pytorch", "pytorch_names", "to_pytorch"]
