"""The UNet/VAE path before issue #12 (diffusers' Flax classes), kept for side-by-side benchmarks.

Benchmark-only: nothing in `jaxdiffattack/` imports this. It needs diffusers 0.39.0, the last
release with `FlaxUNet2DConditionModel` / `FlaxAutoencoderKL`; `available()` says whether it can
run. Two pieces:
  * `bundle(sd)`: the same `StableDiffusion` bundle with diffusers' Flax modules in place of
    jaxdiffattack's (same param trees, so the same params drive both), for the sampler's images/s;
  * `load(kind, directory)`: the previous loader of a diffusers safetensors checkpoint (main at
    74cea81, `weights.load_diffusers_model`): build the Flax class, `jax.eval_shape` its init,
    map every PyTorch key with diffusers' `rename_key` / `rename_key_and_reshape_tensor`.
"""

import dataclasses
import json
import pathlib
from typing import Any

import flax
import jax
import numpy as np

from jaxdiffattack.models import unet as unet_lib
from jaxdiffattack.models import vae as vae_lib
from jaxdiffattack.models import weights


def available() -> bool:
  try:
    import diffusers  # pylint: disable=g-import-not-at-top
    return hasattr(diffusers, "FlaxUNet2DConditionModel")
  except ImportError:
    return False


def _classes():
  # pylint: disable=g-import-not-at-top
  from diffusers import FlaxAutoencoderKL
  from diffusers import FlaxUNet2DConditionModel
  from diffusers.utils import logging as diffusers_logging
  # pylint: enable=g-import-not-at-top
  diffusers_logging.set_verbosity_error()   # the per-module deprecation notices
  return {"unet": FlaxUNet2DConditionModel, "vae": FlaxAutoencoderKL}


@dataclasses.dataclass(frozen=True, eq=False)
class _FlaxModule:
  """A diffusers Flax module behind jaxdiffattack's calling convention (arrays, not outputs)."""
  module: Any
  config: Any            # jaxdiffattack's typed config, for the bundle's properties
  decode = "decode"      # `method=sd.vae.decode` in the sampler

  def apply(self, variables, *args, method=None):
    if method == "decode":
      return self.module.apply(variables, *args, method=self.module.decode).sample
    return self.module.apply(variables, *args).sample


def bundle(sd):
  """`sd` with diffusers' Flax UNet and VAE (same params)."""
  classes = _classes()
  to_json = {"unet": unet_lib.config_json, "vae": vae_lib.config_json}
  modules = {kind: _FlaxModule(classes[kind].from_config(to_json[kind](getattr(sd, kind).config),
                                                         dtype=sd.dtype),
                               getattr(sd, kind).config)
             for kind in ("unet", "vae")}
  return dataclasses.replace(sd, **modules)


def load(kind: str, directory, dtype=np.float32):
  """(module, params) through the previous loader (safetensors only)."""
  # pylint: disable-next=g-import-not-at-top
  from diffusers.models.modeling_flax_pytorch_utils import rename_key, rename_key_and_reshape_tensor
  directory = pathlib.Path(directory)
  module = _classes()[kind].from_config(json.loads((directory / "config.json").read_text()),
                                        dtype=dtype)
  expected = jax.eval_shape(module.init_weights, jax.random.PRNGKey(0))
  expected_flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(expected))
  state = weights.read_safetensors(directory / weights.DIFFUSERS_SAFETENSORS[0])
  flat = {}
  for pt_key, tensor in state.items():
    key = tuple(rename_key(pt_key).split("."))
    flax_key, value = rename_key_and_reshape_tensor(key, np.asarray(tensor), expected_flat)
    flat[flax_key] = value
  if set(flat) != set(expected_flat):
    raise ValueError(f"{directory}: weights do not match config.json")
  cast = lambda x: np.asarray(x).astype(dtype)   # the previous cast: always a copy
  return module, jax.tree_util.tree_map(cast, flax.traverse_util.unflatten_dict(flat))
