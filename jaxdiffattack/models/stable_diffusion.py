"""Stable Diffusion 1.x / 2.x in the diffusers directory layout, as Flax modules + params.

A pipeline directory holds `model_index.json`, `tokenizer/`, `text_encoder/`, `unet/`, `vae/` and
`scheduler/` (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models").
`load_stable_diffusion` returns an immutable `StableDiffusion` bundle: the modules and static facts
(hashable, safe to close over in jitted code) plus a separate params pytree, so the sampler can take
params as an argument and shard/replicate them. The UNet and VAE are jaxdiffattack's own linen
modules (`unet.py`, `vae.py`) with the attention implementation chosen at load time. epsilon- and
v-prediction both come from the scheduler config; `dtype` is float32 or bfloat16.
"""

import dataclasses
import json
import pathlib
from typing import Any

import jax.numpy as jnp
from transformers import CLIPTokenizer

from jaxdiffattack.errors import UserError
from jaxdiffattack.models import attention as attention_lib
from jaxdiffattack.models import clip
from jaxdiffattack.models import convert_transformers
from jaxdiffattack.models import hub
from jaxdiffattack.models import weights
from jaxdiffattack.models.unet import UNet2DConditionModel
from jaxdiffattack.models.vae import AutoencoderKL

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
PREDICTION_TYPES = ("epsilon", "v_prediction")
_SUBFOLDERS = ("tokenizer", "text_encoder", "unet", "vae", "scheduler")


@dataclasses.dataclass(frozen=True, eq=False)
class StableDiffusion:
  """A loaded Stable Diffusion pipeline: modules and static facts; params kept apart.

  Equality/hash are by identity, so the bundle can be a static argument of jitted functions.
  """
  source: str                      # what the user passed (`toy`, a dir or a hub id)
  path: pathlib.Path               # the resolved local directory
  dtype: Any
  tokenizer: CLIPTokenizer
  text_encoder: clip.CLIPTextModel  # the linen module; params {"text_model": ...}
  unet: UNet2DConditionModel       # `.config` is its typed UNetConfig
  vae: AutoencoderKL               # `.config` is its typed VAEConfig
  scheduler_config: dict[str, Any]  # scheduler/scheduler_config.json as a dict

  @property
  def latent_channels(self) -> int:
    return int(self.unet.config.in_channels)

  @property
  def vae_scale_factor(self) -> int:
    return self.vae.config.downscale

  @property
  def learned_variance(self) -> bool:
    """The UNet outputs [ε, v] (out_channels = 2 × latent channels, Improved DDPM §3.1)."""
    return self.unet.config.learned_variance

  @property
  def latent_size(self) -> int:
    """Default latent height = width (the UNet's `sample_size`)."""
    return int(self.unet.config.sample_size)

  @property
  def image_size(self) -> int:
    return self.latent_size * self.vae_scale_factor

  @property
  def latent_shape(self) -> tuple[int, int, int]:
    return (self.latent_channels, self.latent_size, self.latent_size)

  @property
  def scaling_factor(self) -> float:
    return float(self.vae.config.scaling_factor)

  @property
  def prediction_type(self) -> str:
    return self.scheduler_config.get("prediction_type", "epsilon")

  @property
  def max_length(self) -> int:
    return int(self.tokenizer.model_max_length)

  @property
  def text_dim(self) -> int:
    return int(self.text_encoder.config.hidden_size)


def load_stable_diffusion(name_or_path: str = hub.TOY_ALIAS, dtype: str = "float32",
                          attention: str = "xla"):
  """Loads a diffusers-layout Stable Diffusion pipeline.

  Args:
    name_or_path: `toy`, a local pipeline directory, or a hub id (see `hub.resolve`).
    dtype: "float32" or "bfloat16": computation and parameter dtype.
    attention: the UNet/VAE attention implementation, one of `attention.IMPLEMENTATIONS`
      ("xla" anywhere; "cudnn" on NVIDIA GPUs).

  Returns:
    (sd, params): the `StableDiffusion` bundle and params
    {"text_encoder": ..., "unet": ..., "vae": ...}.
  """
  if dtype not in DTYPES:
    raise UserError(f"dtype={dtype!r} is not supported; use one of {sorted(DTYPES)}")
  attention_lib.check_implementation(attention)
  path = hub.resolve(name_or_path, "sd")
  missing = [s for s in _SUBFOLDERS if not (path / s).is_dir()]
  if missing:
    raise UserError(
        f"{path} is not a diffusers Stable Diffusion directory: missing {', '.join(missing)}/ "
        "(expected tokenizer/, text_encoder/, unet/, vae/, scheduler/)")
  jdtype = DTYPES[dtype]
  scheduler_config = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
  prediction_type = scheduler_config.get("prediction_type", "epsilon")
  if prediction_type not in PREDICTION_TYPES:
    raise UserError(f"{path}/scheduler: prediction_type={prediction_type!r} is not supported; "
                     f"allowed: {PREDICTION_TYPES}")
  tokenizer = CLIPTokenizer.from_pretrained(str(path / "tokenizer"), local_files_only=True)
  text_encoder, text_params = convert_transformers.load_text_encoder(
      path / "text_encoder", jdtype, attention)
  unet, unet_params = weights.load_diffusers_model("unet", path / "unet", jdtype, attention)
  vae, vae_params = weights.load_diffusers_model("vae", path / "vae", jdtype, attention)
  sd = StableDiffusion(
      source=str(name_or_path), path=path, dtype=jdtype, tokenizer=tokenizer,
      text_encoder=text_encoder, unet=unet, vae=vae, scheduler_config=scheduler_config)
  params = {"text_encoder": text_params, "unet": unet_params, "vae": vae_params}
  return sd, params


def attention_sites(sd: StableDiffusion, params, text_length: int, *,
                    implementation: str = "cudnn", max_head_dim: int | None = None,
                    latent_size: int | None = None) -> list[attention_lib.CallSite]:
  """Which attention implementation every call site of `sd` gets (shape tracing, any backend).

  Traces one classifier-free-guidance UNet call (batch 2) at `latent_size` (default: the
  model's), one VAE decode and, if present, the text encoder with every module's attention
  set to `implementation`, under `attention.plan(max_head_dim)`; params may be abstract
  (`jax.ShapeDtypeStruct`s). Returns the call sites in trace order, prefixed "unet/", "vae/"
  and "text_encoder/".
  """
  import jax  # pylint: disable=g-import-not-at-top
  size = latent_size or sd.latent_size
  latents = jax.ShapeDtypeStruct((2, sd.latent_channels, size, size), jnp.float32)
  context = jax.ShapeDtypeStruct((2, text_length, sd.unet.config.cross_attention_dim), sd.dtype)
  unet = sd.unet.clone(attention=implementation)
  vae = sd.vae.clone(attention=implementation)
  calls = {   # name → (function of (params, *inputs), inputs)
      "unet": (lambda p, z, c: unet.apply({"params": p}, z, jnp.ones((2,)), c),
               (latents, context)),
      "vae": (lambda p, z: vae.apply({"params": p}, z, method="decode"), (latents,)),
  }
  if sd.text_encoder is not None and "text_encoder" in params:
    text_encoder = sd.text_encoder.clone(attention=implementation)
    calls["text_encoder"] = (lambda p, ids: text_encoder.apply({"params": p}, ids),
                             (jax.ShapeDtypeStruct((2, text_length), jnp.int32),))
  sites = []
  for name, (call, inputs) in calls.items():
    with attention_lib.plan(max_head_dim) as traced:
      jax.eval_shape(call, params[name], *inputs)
    sites += [dataclasses.replace(s, site=f"{name}/{s.site}") for s in traced]
  return sites
