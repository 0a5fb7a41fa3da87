"""Randomly initialised models of real shapes (for benchmarks: weights' values do not change speed).

`SD15` holds the Stable Diffusion 1.5 UNet (860 M parameters), VAE and scheduler configs as
published in its diffusers `config.json` files; `SD21` those of Stable Diffusion 2.1 (768-v:
head dim 64, 1024-wide cross-attention, `upcast_attention`, v-prediction) and its text encoder
(OpenCLIP ViT-H/14's text tower as transformers' CLIPTextModel: 23 layers, 1024 wide, the
49,408-token vocabulary). `random_stable_diffusion` builds a `StableDiffusion` bundle of a shape
with random weights, without a tokenizer (benchmarks feed token ids or text hidden states
[P, 77, D] directly), with a text encoder when the shape has one. `sd15_tiny` / `sd21_tiny` keep
each shape's topology and options at a few-thousandth of the width (CPU rehearsals of the GPU
suite, benchmarks/gpu_suite.sh --rehearse).
"""

import functools

import jax
import jax.numpy as jnp

from jaxdiffattack.models import clip

from jaxdiffattack.models import weights
from jaxdiffattack.models.stable_diffusion import DTYPES
from jaxdiffattack.models.stable_diffusion import StableDiffusion
from jaxdiffattack.models.stable_diffusion import load_stable_diffusion

SD15 = {
    "unet": {
        "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
        "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768,
        "attention_head_dim": 8,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                             "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                           "CrossAttnUpBlock2D"],
    },
    "vae": {
        "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
        "block_out_channels": [128, 256, 512, 512], "sample_size": 512,
        "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
        "norm_num_groups": 32, "scaling_factor": 0.18215,
    },
    "scheduler": {
        "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
        "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False,
    },
    "text_length": 77,
    "text_dim": 768,
}
_SD2_SCHEDULER = {
    "_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False,
    "prediction_type": "v_prediction",
}
SD21 = {
    "unet": dict(SD15["unet"], sample_size=96, attention_head_dim=[5, 10, 20, 20],
                 cross_attention_dim=1024, use_linear_projection=True, upcast_attention=True),
    "vae": dict(SD15["vae"], sample_size=768),
    "scheduler": _SD2_SCHEDULER,
    "text_encoder": {"vocab_size": 49408, "hidden_size": 1024, "intermediate_size": 4096,
                     "num_hidden_layers": 23, "num_attention_heads": 16,
                     "max_position_embeddings": 77, "hidden_act": "gelu",
                     "projection_dim": 512, "eos_token_id": 2},
    "text_length": 77,
    "text_dim": 1024,
}
# The same topologies and options at toy width (image 16², latents 4×8×8).
_TINY_UNET = {"sample_size": 8, "block_out_channels": [32, 64], "layers_per_block": 1,
              "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
              "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]}
_TINY_VAE = {"block_out_channels": [32, 64], "layers_per_block": 1, "sample_size": 16,
             "down_block_types": ["DownEncoderBlock2D"] * 2,
             "up_block_types": ["UpDecoderBlock2D"] * 2}
SD15_TINY = dict(SD15, unet=dict(SD15["unet"], **_TINY_UNET, cross_attention_dim=32,
                                 attention_head_dim=2),
                 vae=dict(SD15["vae"], **_TINY_VAE), text_dim=32)
SD21_TINY = dict(SD21, unet=dict(SD21["unet"], **_TINY_UNET, cross_attention_dim=32,
                                 attention_head_dim=[2, 4]),
                 vae=dict(SD21["vae"], **_TINY_VAE),
                 text_encoder=dict(SD21["text_encoder"], vocab_size=1000, hidden_size=32,
                                   intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, projection_dim=32),
                 text_dim=32)
SHAPES = {"sd15": SD15, "sd21": SD21, "sd15_tiny": SD15_TINY, "sd21_tiny": SD21_TINY}
# SD 1.x's text tower (CLIP ViT-L/14's, openai/clip-vit-large-patch14), built on request
# (`text_encoder=True`): SD15 leaves it out so the benchmarks that feed hidden states skip it.
SD15_TEXT_ENCODER = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072,
                     "num_hidden_layers": 12, "num_attention_heads": 12,
                     "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                     "projection_dim": 768}


def random_stable_diffusion(shape: str = "sd15", dtype: str = "bfloat16", seed: int = 0,
                            abstract: bool = False, attention: str = "xla",
                            resolution: int | None = None, text_encoder: bool | None = None):
  """(sd, params) of a named shape with random weights; params {"unet", "vae"} and, for a shape
  with a text encoder, "text_encoder".

  abstract=True: params hold `jax.ShapeDtypeStruct`s only (no memory, no init compute), enough
  to lower the model, e.g. for `jaxdiffattack.costs.sampler_flops`.
  resolution: the image side in pixels (default: the shape's own); latents are 1/8 of it.
  text_encoder: None builds the shape's text encoder when it has one; True also SD 1.5's
    (`SD15_TEXT_ENCODER`); False none.
  """
  if shape not in SHAPES:
    raise ValueError(f"unknown model shape {shape!r}; use one of {sorted(SHAPES)}")
  spec = dict(SHAPES[shape])
  if resolution is not None:
    if resolution <= 0 or resolution % 8:
      raise ValueError(f"resolution={resolution!r} is invalid: use a positive multiple of 8")
    spec["unet"] = dict(spec["unet"], sample_size=resolution // 8)
  if text_encoder and "text_encoder" not in spec:
    if shape != "sd15":
      raise ValueError(f"model shape {shape!r} has no text encoder")
    spec["text_encoder"] = SD15_TEXT_ENCODER
  if text_encoder is False:
    spec.pop("text_encoder", None)
  jdtype = DTYPES[dtype]
  modules = {kind: weights.build_diffusers_model(kind, spec[kind], f"random_init.{shape}",
                                                jdtype, attention) for kind in ("unet", "vae")}
  init = lambda module, key: weights.cast_floating(module.init_weights(key), jdtype)
  params = {}
  for kind, key in zip(modules, jax.random.split(jax.random.PRNGKey(seed))):
    fn = functools.partial(init, modules[kind])
    params[kind] = jax.eval_shape(fn, key) if abstract else jax.jit(fn)(key)
  unet, vae = modules["unet"], modules["vae"]
  text_encoder = None
  if "text_encoder" in spec:
    text_encoder = clip.CLIPTextModel(
        clip.CLIPTextConfig.from_dict(spec["text_encoder"], f"random_init.{shape}"),
        dtype=jdtype, attention=attention)
    ids = jnp.zeros((1, spec["text_length"]), jnp.int32)
    fn = lambda key: weights.cast_floating(text_encoder.init(key, ids)["params"], jdtype)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 2)
    params["text_encoder"] = jax.eval_shape(fn, key) if abstract else jax.jit(fn)(key)
  sd = StableDiffusion(source=f"random:{shape}", path=None, dtype=jdtype, tokenizer=None,
                       text_encoder=text_encoder, unet=unet, vae=vae,
                       scheduler_config=dict(spec["scheduler"]))
  return sd, params


def text_shape(shape: str = "sd15") -> tuple[int, int]:
  return SHAPES[shape]["text_length"], SHAPES[shape]["text_dim"]


def load_shape_or_pipeline(model: str, dtype: str, abstract: bool = False,
                           attention: str = "xla"):
  """(sd, params, text_shape [L, D]) for a benchmark: `model` names a real shape of SHAPES
  (random weights; `abstract` as in `random_stable_diffusion`) or a pipeline ("toy", a
  directory, a hub id; loaded with its weights whatever `abstract`)."""
  if model in SHAPES:
    sd, params = random_stable_diffusion(model, dtype, abstract=abstract, attention=attention)
    return sd, params, text_shape(model)
  sd, params = load_stable_diffusion(model, dtype=dtype, attention=attention)
  return sd, params, (sd.max_length, sd.text_dim)


__all__ = ["SD15", "SD15_TEXT_ENCODER", "SD21", "SHAPES", "load_shape_or_pipeline", "random_stable_diffusion", "text_shape"]
