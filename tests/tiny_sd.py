"""A tiny random Stable Diffusion, written with the PyTorch diffusers/transformers classes.

Saved in the real diffusers layout twice: PyTorch safetensors (as hub checkpoints ship) and Flax
msgpack, so the loader's two paths are exercised and the PyTorch pipeline can serve as an
independent reference on the very same weights. Image 16×16, latents 4×8×8, 16 text tokens.
"""

import json
import pathlib

import numpy as np

MAX_LENGTH = 16
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False, "trained_betas": None,
}


def write_char_tokenizer(directory: pathlib.Path, max_length: int = MAX_LENGTH) -> None:
  """A CLIP tokenizer whose vocabulary is single byte-characters (no merges)."""
  from transformers.models.clip.tokenization_clip import bytes_to_unicode  # pylint: disable=g-import-not-at-top
  chars = list(bytes_to_unicode().values())
  vocab_list = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
  vocab = {tok: i for i, tok in enumerate(vocab_list)}
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "vocab.json").write_text(json.dumps(vocab))
  (directory / "merges.txt").write_text("#version: 0.2\n")
  (directory / "tokenizer_config.json").write_text(json.dumps({
      "tokenizer_class": "CLIPTokenizer", "model_max_length": max_length,
      "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
      "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}))


def build(directory: pathlib.Path, *, seed: int = 0, prediction_type: str = "epsilon"):
  """Writes a tiny SD pipeline to `directory/pt` (safetensors) and `directory/flax` (msgpack).

  Returns (pt_dir, flax_dir).
  """
  # pylint: disable=g-import-not-at-top
  import torch
  from diffusers import AutoencoderKL, UNet2DConditionModel
  from transformers import CLIPTextConfig, CLIPTextModel
  from jaxdiffattack.models import convert_transformers, load_stable_diffusion
  # pylint: enable=g-import-not-at-top
  directory = pathlib.Path(directory)
  pt_dir, flax_dir = directory / "pt", directory / "flax"
  torch.manual_seed(seed)
  unet = UNet2DConditionModel(
      sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
      layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
      attention_head_dim=8)  # norm_num_groups stays 32: the Flax UNet implements only that
  vae = AutoencoderKL(
      in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
      down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
      latent_channels=4, norm_num_groups=8, sample_size=16)
  text = CLIPTextModel(CLIPTextConfig(
      vocab_size=514, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
      num_attention_heads=4, max_position_embeddings=MAX_LENGTH, bos_token_id=512,
      eos_token_id=513, pad_token_id=513))
  # Default inits leave some outputs near zero (zero-init conv_out): perturb every weight so
  # that parity checks see every parameter.
  with torch.no_grad():
    for module in (unet, vae, text):
      for p in module.parameters():
        p.add_(0.05 * torch.randn_like(p))
  scheduler = dict(SD15_SCHEDULER, prediction_type=prediction_type)
  for root in (pt_dir, flax_dir):
    (root / "scheduler").mkdir(parents=True, exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    write_char_tokenizer(root / "tokenizer")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.39.0",
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "PNDMScheduler"]}))
  unet.save_pretrained(pt_dir / "unet", safe_serialization=True)
  vae.save_pretrained(pt_dir / "vae", safe_serialization=True)
  text.save_pretrained(pt_dir / "text_encoder", safe_serialization=True)
  # The Flax copy: loaded through the safetensors path, saved as Flax msgpack.
  sd, params = load_stable_diffusion(str(pt_dir))
  sd.unet.save_pretrained(flax_dir / "unet", params=params["unet"])
  sd.vae.save_pretrained(flax_dir / "vae", params=params["vae"])
  convert_transformers.save(flax_dir / "text_encoder", "clip_text", sd.text_encoder.config,
                            params["text_encoder"])
  return pt_dir, flax_dir


def torch_pipeline(pt_dir: pathlib.Path, scheduler_name: str):
  """The PyTorch diffusers StableDiffusionPipeline on the same checkpoint (the reference)."""
  # pylint: disable=g-import-not-at-top
  import diffusers
  from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
  from transformers import CLIPTextModel, CLIPTokenizer
  # pylint: enable=g-import-not-at-top
  classes = {"ddim": diffusers.DDIMScheduler, "pndm": diffusers.PNDMScheduler,
             "dpmsolver++": diffusers.DPMSolverMultistepScheduler,
             "euler": diffusers.EulerDiscreteScheduler}
  config = json.loads((pt_dir / "scheduler" / "scheduler_config.json").read_text())
  return StableDiffusionPipeline(
      vae=AutoencoderKL.from_pretrained(pt_dir / "vae"),
      text_encoder=CLIPTextModel.from_pretrained(pt_dir / "text_encoder"),
      tokenizer=CLIPTokenizer.from_pretrained(pt_dir / "tokenizer"),
      unet=UNet2DConditionModel.from_pretrained(pt_dir / "unet"),
      scheduler=classes[scheduler_name].from_config(config),
      safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def torch_generate(pipe, prompts, latents: np.ndarray, num_steps: int, guidance_scale: float):
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    out = pipe(list(prompts), latents=torch.from_numpy(np.asarray(latents, np.float32)),
               num_inference_steps=num_steps, guidance_scale=guidance_scale, output_type="np",
               height=16, width=16)
  return np.asarray(out.images)


def as_float64(sd, params):
  """The same model computing in float64 (call inside `jax.enable_x64()`): for gradient checks
  against finite differences, which float32 rounding would swamp."""
  # pylint: disable=g-import-not-at-top
  import dataclasses
  import jax
  import jax.numpy as jnp
  # pylint: enable=g-import-not-at-top
  sd64 = dataclasses.replace(sd, dtype=jnp.float64, unet=sd.unet.clone(dtype=jnp.float64),
                             vae=sd.vae.clone(dtype=jnp.float64))
  return sd64, jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
