"""Randomly initialised models of real shapes (for benchmarks: weights' values do not change speed).

`SD15` holds the Stable Diffusion 1.5 UNet (860 M parameters), VAE and scheduler configs as
published in its diffusers `config.json` files; `random_stable_diffusion` builds a `StableDiffusion`
bundle of that shape with random weights, without a tokenizer or text encoder (benchmarks feed text
hidden states [P, 77, 768] directly).
"""

import functools

import jax

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
SHAPES = {"sd15": SD15}


def random_stable_diffusion(shape: str = "sd15", dtype: str = "bfloat16", seed: int = 0,
                            abstract: bool = False, attention: str = "xla"):
  """(sd, params) of a named real shape with random weights; params {"unet", "vae"}.

  abstract=True: params hold `jax.ShapeDtypeStruct`s only (no memory, no init compute), enough
  to lower the model, e.g. for `jaxdiffattack.costs.sampler_flops`.
  """
  if shape not in SHAPES:
    raise ValueError(f"unknown model shape {shape!r}; use one of {sorted(SHAPES)}")
  spec = SHAPES[shape]
  jdtype = DTYPES[dtype]
  modules = {kind: weights.build_diffusers_model(kind, spec[kind], f"random_init.{shape}",
                                                jdtype, attention) for kind in ("unet", "vae")}
  init = lambda module, key: weights.cast_floating(module.init_weights(key), jdtype)
  params = {}
  for kind, key in zip(modules, jax.random.split(jax.random.PRNGKey(seed))):
    fn = functools.partial(init, modules[kind])
    params[kind] = jax.eval_shape(fn, key) if abstract else jax.jit(fn)(key)
  unet, vae = modules["unet"], modules["vae"]
  sd = StableDiffusion(source=f"random:{shape}", path=None, dtype=jdtype, tokenizer=None,
                       text_encoder=None, unet=unet, vae=vae,
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


__all__ = ["SD15", "SHAPES", "load_shape_or_pipeline", "random_stable_diffusion", "text_shape"]
