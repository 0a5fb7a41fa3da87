"""Measures the toy Stable Diffusion's generation quality.

For every class, ``seeds_per_class`` images of ``"a photo of a {label}"`` are
generated with DDIM (50 steps, eta 0) and classifier-free guidance 7.5 -- the
default sampler settings -- and judged by the toy ViT (top-1). Two-object
prompts ``"a photo of a {a} and a {b}"`` count as showing both objects when
the judge's top-2 classes are exactly {a, b} (the classifiers were trained
with 0.5 / 0.5 targets on two-object scenes; the same rule on real held-out
two-object scenes gives the judge's own ceiling, reported alongside).

  python -m jaxdiffattack.toy.evaluate [--sd_dir DIR --judge_dir DIR
      --seeds_per_class 20 --pair_seeds 2 --out_json FILE]

This is a self-contained reference loop over the diffusers / transformers
Flax classes; the project's sampler is tested against the same thresholds.
"""
from __future__ import annotations

import itertools
import json
import pathlib
import time
from typing import Any, NamedTuple, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack import toy
from jaxdiffattack.toy import world

PIXEL_MEAN = 0.5
PIXEL_STD = 0.5


class ToySD(NamedTuple):
  tokenizer: Any
  text_encoder: Any
  unet: Any
  unet_params: Any
  vae: Any
  vae_params: Any
  scheduler: Any
  scheduler_state: Any


def load_sd(sd_dir: str | pathlib.Path = toy.SD_DIR) -> ToySD:
  """Loads a diffusers-layout SD directory with the Flax classes."""
  from diffusers import (FlaxAutoencoderKL, FlaxDDIMScheduler,  # pylint: disable=g-import-not-at-top
                         FlaxUNet2DConditionModel)
  from transformers import CLIPTokenizer, FlaxCLIPTextModel  # pylint: disable=g-import-not-at-top
  sd_dir = str(sd_dir)
  unet, unet_params = FlaxUNet2DConditionModel.from_pretrained(
      sd_dir, subfolder="unet")
  vae, vae_params = FlaxAutoencoderKL.from_pretrained(sd_dir, subfolder="vae")
  sched, sched_state = FlaxDDIMScheduler.from_pretrained(
      sd_dir, subfolder="scheduler")
  return ToySD(CLIPTokenizer.from_pretrained(sd_dir, subfolder="tokenizer"),
               FlaxCLIPTextModel.from_pretrained(sd_dir,
                                                 subfolder="text_encoder"),
               unet, unet_params, vae, vae_params, sched, sched_state)


def encode_text(sd: ToySD, prompts: Sequence[str]) -> jnp.ndarray:
  """last_hidden_state of the text encoder on 77-token padded prompts."""
  ids = sd.tokenizer(list(prompts), padding="max_length", truncation=True,
                     max_length=sd.tokenizer.model_max_length,
                     return_tensors="np").input_ids
  return sd.text_encoder(ids, params=sd.text_encoder.params)[0]


def make_sampler(sd: ToySD, num_inference_steps: int = 50,
                 guidance_scale: float = 7.5):
  """Returns f(cond, uncond, latents) -> uint8 NHWC images (jitted; the
  weights are arguments, not baked-in constants)."""
  size = sd.unet.config.sample_size
  channels = sd.unet.config.in_channels
  scaling = sd.vae.config.scaling_factor

  def sample(unet_params, vae_params, cond, uncond, latents):
    state = sd.scheduler.set_timesteps(sd.scheduler_state, num_inference_steps,
                                       (latents.shape[0], channels, size, size))
    context = jnp.concatenate([uncond, cond])

    def body(i, carry):
      latents, state = carry
      t = state.timesteps[i]
      x = jnp.concatenate([latents, latents])
      ts = jnp.full((x.shape[0],), t, jnp.int32)
      eps = sd.unet.apply({"params": unet_params}, x, ts, context).sample
      eps_u, eps_c = jnp.split(eps, 2)
      eps = eps_u + guidance_scale * (eps_c - eps_u)
      latents, state = sd.scheduler.step(state, eps, t, latents).to_tuple()
      return latents, state

    latents = latents * state.init_noise_sigma
    latents, _ = jax.lax.fori_loop(0, num_inference_steps, body,
                                   (latents, state))
    img = sd.vae.apply({"params": vae_params}, latents / scaling,
                       method=sd.vae.decode).sample
    img = jnp.clip(img / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    return jnp.round(img * 255).astype(jnp.uint8)

  jitted = jax.jit(sample)
  return lambda cond, uncond, latents: jitted(sd.unet_params, sd.vae_params,
                                              cond, uncond, latents)


def initial_latents(sd: ToySD, seeds: Sequence[int]) -> jnp.ndarray:
  """Per-seed initial noise (seed s gives the same image in any batch)."""
  size = sd.unet.config.sample_size
  shape = (sd.unet.config.in_channels, size, size)
  return jnp.stack([jax.random.normal(jax.random.PRNGKey(int(s)), shape)
                    for s in seeds])


def generate(sd: ToySD, prompts: Sequence[str], seeds: Sequence[int],
             num_inference_steps: int = 50, guidance_scale: float = 7.5,
             batch_size: int = 200) -> np.ndarray:
  """Generates one image per (prompt, seed); returns uint8 (N, H, W, 3)."""
  sampler = make_sampler(sd, num_inference_steps, guidance_scale)
  uncond_row = encode_text(sd, [""])
  out = []
  for i in range(0, len(prompts), batch_size):
    p, s = list(prompts[i:i + batch_size]), list(seeds[i:i + batch_size])
    n = len(p)
    pad = batch_size - n if len(prompts) > batch_size else 0
    cond = encode_text(sd, p + p[-1:] * pad)
    uncond = jnp.repeat(uncond_row, n + pad, axis=0)
    lat = initial_latents(sd, s + s[-1:] * pad)
    out.append(np.asarray(sampler(cond, uncond, lat))[:n])
  return np.concatenate(out)


def load_classifier(model_dir: str | pathlib.Path = toy.VIT_DIR):
  """Returns f(uint8 NHWC) -> logits for a toy ViT or ResNet directory."""
  from transformers import (FlaxResNetForImageClassification,  # pylint: disable=g-import-not-at-top
                            FlaxViTForImageClassification)
  cfg = json.loads((pathlib.Path(model_dir) / "config.json").read_text())
  cls = (FlaxResNetForImageClassification if cfg["model_type"] == "resnet"
         else FlaxViTForImageClassification)
  model = cls.from_pretrained(str(model_dir))

  @jax.jit
  def logits(images):
    x = (images.astype(jnp.float32) / 255 - PIXEL_MEAN) / PIXEL_STD
    return model(x.transpose(0, 3, 1, 2), params=model.params).logits

  return lambda images: np.asarray(logits(jnp.asarray(images)))


def top2_match(logits: np.ndarray, pairs: np.ndarray) -> np.ndarray:
  """Whether the top-2 classes are exactly the pair, per row."""
  top2 = np.sort(np.argsort(-logits, -1)[:, :2], -1)
  return np.all(top2 == np.sort(pairs, -1), -1)


def evaluate(sd_dir=toy.SD_DIR, judge_dir=toy.VIT_DIR, seeds_per_class: int = 20,
             pair_seeds: int = 2, num_inference_steps: int = 50,
             guidance_scale: float = 7.5, batch_size: int = 200,
             save_images: str | None = None) -> dict:
  """Single-object top-1 and two-object both-present rate; returns metrics."""
  t0 = time.time()
  sd, judge = load_sd(sd_dir), load_classifier(judge_dir)
  labels = np.repeat(np.arange(world.NUM_CLASSES), seeds_per_class)
  seeds = np.tile(np.arange(seeds_per_class), world.NUM_CLASSES)
  images = generate(sd, [world.caption([l]) for l in labels], seeds,
                    num_inference_steps, guidance_scale, batch_size)
  preds = judge(images).argmax(-1)
  per_class = {world.LABELS[c]: float(np.mean(preds[labels == c] == c))
               for c in range(world.NUM_CLASSES)}
  metrics = {"single_top1": float(np.mean(preds == labels)),
             "single_top1_per_class": per_class,
             "single_samples": int(len(labels))}
  logging.info("single-object top-1 %.4f over %d images (%.0fs)",
               metrics["single_top1"], len(labels), time.time() - t0)
  if pair_seeds:
    pairs = np.asarray(list(itertools.combinations(
        range(world.NUM_CLASSES), 2)) * pair_seeds)
    pseeds = np.repeat(np.arange(pair_seeds), len(pairs) // pair_seeds) + 1000
    pimgs = generate(sd, [world.caption(p) for p in pairs], pseeds,
                     num_inference_steps, guidance_scale, batch_size)
    plogits = judge(pimgs)
    both = top2_match(plogits, pairs)
    top2 = np.argsort(-plogits, -1)[:, :2]
    named = np.mean([np.isin(p, t).mean() for p, t in zip(pairs, top2)])
    real = world.make_dataset("heldout", 0, 500)
    real_rate = float(np.mean(top2_match(judge(real.images), real.labels)))
    metrics.update(pair_both_rate=float(np.mean(both)),
                   pair_object_recall=float(named),
                   pair_samples=int(len(pairs)),
                   pair_judge_rate_on_real=real_rate)
    logging.info("two-object: both shown %.4f, object recall %.4f (judge on "
                 "real pairs %.4f)", metrics["pair_both_rate"], named,
                 real_rate)
    if save_images:
      images = np.concatenate([images, pimgs])
  if save_images:
    np.save(save_images, images)
  metrics["seconds"] = round(time.time() - t0, 1)
  return metrics


_SD_DIR = flags.DEFINE_string("sd_dir", str(toy.SD_DIR), "SD directory.")
_JUDGE = flags.DEFINE_string("judge_dir", str(toy.VIT_DIR), "Judge classifier.")
_SEEDS = flags.DEFINE_integer("seeds_per_class", 20, "Seeds per class.")
_PAIR_SEEDS = flags.DEFINE_integer("pair_seeds", 2, "Seeds per class pair.")
_STEPS = flags.DEFINE_integer("steps", 50, "DDIM steps.")
_CFG = flags.DEFINE_float("guidance_scale", 7.5, "Classifier-free guidance.")
_OUT = flags.DEFINE_string("out_json", None, "Where to write the metrics.")
_IMAGES = flags.DEFINE_string("save_images", None, "Optional .npy of images.")


def main(argv):
  del argv
  metrics = evaluate(_SD_DIR.value, _JUDGE.value, _SEEDS.value,
                     _PAIR_SEEDS.value, _STEPS.value, _CFG.value,
                     save_images=_IMAGES.value)
  text = json.dumps(metrics, indent=2)
  logging.info("%s", text)
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(text)


if __name__ == "__main__":
  app.run(main)
