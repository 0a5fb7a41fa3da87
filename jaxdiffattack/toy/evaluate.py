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

Images come from the project's own loader and population sampler (DDIM, pure JAX; it
matches diffusers' DDIM), so the measured quality is that of the code every job runs.
"""
from __future__ import annotations

import itertools
import json
import pathlib
import time
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack import models
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import text
from jaxdiffattack import toy
from jaxdiffattack.toy import world

PIXEL_MEAN = 0.5
PIXEL_STD = 0.5


def load_sd(sd_dir: str | pathlib.Path = toy.SD_DIR):
  """(sd, params) through the project's loader (the same path as every job)."""
  return models.load_stable_diffusion(str(sd_dir))


def initial_latents(sd, seeds: Sequence[int]) -> np.ndarray:
  """Per-seed initial noise (seed s gives the same image in any batch)."""
  return np.stack([np.asarray(jax.random.normal(jax.random.PRNGKey(int(s)), sd.latent_shape))
                   for s in seeds])


def generate(sd_and_params, prompts: Sequence[str], seeds: Sequence[int],
             num_inference_steps: int = 50, guidance_scale: float = 7.5,
             batch_size: int = 200) -> np.ndarray:
  """Generates one image per (prompt, seed) with the project's DDIM population sampler
  (chunks of `batch_size` members); returns uint8 (N, H, W, 3)."""
  sd, params = sd_and_params
  pop_sampler = sampler_lib.PopulationSampler(
      sd, params, sampler_lib.SamplerSettings(scheduler="ddim", num_steps=num_inference_steps,
                                              guidance=guidance_scale > 1.0),
      microbatch=-(-min(batch_size, len(prompts)) // jax.device_count()))
  cond = np.asarray(text.encode_prompts(sd, params["text_encoder"], list(prompts)))
  uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0])
  images = pop_sampler(initial_latents(sd, seeds), cond, uncond, guidance_scale).images
  return np.round(images * 255).astype(np.uint8)


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
