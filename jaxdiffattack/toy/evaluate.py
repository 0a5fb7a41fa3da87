"""Measures the toy Stable Diffusion's generation quality.

For every class, ``seeds_per_class`` images of ``"a photo of a {label}"`` are
generated with DDIM (50 steps, eta 0) and classifier-free guidance 7.5 -- the
default sampler settings -- and judged by the toy ViT and the toy ResNet (top-1). Two-object
prompts ``"a photo of a {a} and a {b}"`` count as showing both objects when
the judge's top-2 classes are exactly {a, b} (the classifiers were trained
with 0.5 / 0.5 targets on two-object scenes; the same rule on real held-out
two-object scenes gives the judge's own ceiling, reported alongside). A judge-free pixel
count (`pair_colours_shown`) says, for pairs of two colours, whether both colours were drawn,
and the toy world's oracle (`oracle`, judge-free) reads every image: how often it reads the
prompt's class, finds it confirmed missing or cannot tell, how often each judge agrees with
it, and how often it reads both objects of a pair.

  python -m jaxdiffattack.toy.evaluate [--sd_dir DIR --judge_dir DIR[,DIR]
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

from jaxdiffattack import judges
from jaxdiffattack import models
from jaxdiffattack import preprocess
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import text
from jaxdiffattack import toy
from jaxdiffattack.toy import oracle
from jaxdiffattack.toy import world


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
  """Returns f(uint8 NHWC) -> logits for a classifier directory (or `toy`), through the
  project's loader and preprocessing (`models.vision`, `preprocess`) -- the path every job uses."""
  classifier, params = models.vision.load_image_classifier(str(model_dir))
  spec = preprocess.spec_from_processor(classifier.image_processor)

  @jax.jit
  def logits(images):
    pixels = preprocess.preprocess(spec, images.astype(jnp.float32) / 255)
    return models.vision.classifier_logits(classifier, params, pixels)

  return lambda images: np.asarray(logits(jnp.asarray(images)))


def top2_match(logits: np.ndarray, pairs: np.ndarray) -> np.ndarray:
  """Whether the top-2 classes are exactly the pair, per row."""
  top2 = np.sort(np.argsort(-logits, -1)[:, :2], -1)
  return np.all(top2 == np.sort(pairs, -1), -1)


def colours_present(images: np.ndarray, colours: Sequence[str], radius: float = 60.0,
                    min_pixels: int = 10) -> np.ndarray:
  """Whether each image [N, H, W, 3] uint8 has >= `min_pixels` pixels within `radius` (RGB
  units) of the nominal colour `colours[n]` -- a pixel-level check, independent of the judges,
  that an object of that colour was drawn."""
  ref = np.asarray([world.COLOUR_RGB[c] for c in colours], np.float32)[:, None, None, :]
  dist = np.linalg.norm(images.astype(np.float32) - ref, axis=-1)
  return (dist < radius).sum(axis=(1, 2)) >= min_pixels


def pair_colours_shown(images: np.ndarray, pairs: np.ndarray) -> tuple[float, int]:
  """Over the pairs of two different colours: the fraction of images in which both colours
  are drawn (`colours_present`); returns (rate, number of such pairs)."""
  a = np.asarray([world.label_colour(int(x)) for x in pairs[:, 0]])
  b = np.asarray([world.label_colour(int(x)) for x in pairs[:, 1]])
  keep = a != b
  both = colours_present(images[keep], a[keep]) & colours_present(images[keep], b[keep])
  return float(both.mean()), int(keep.sum())


def _pair_read(readings: Sequence[oracle.SceneReading], pairs: np.ndarray) -> float:
  """The fraction of two-object images whose oracle reading is exactly the pair's classes."""
  return float(np.mean([sorted(o.label or "" for o in r.objects)
                        == sorted(world.LABELS[int(l)] for l in pair)
                        for r, pair in zip(readings, pairs)]))


def _oracle_metrics(images, labels, pimgs, pairs, real) -> tuple[dict, list]:
  """The oracle's verdicts on the single-object images (and its reading of the pairs):
  (metrics, its label or None per single-object image)."""
  verdict = judges.image_judge(judges.ORACLE).fn(
      images, [world.LABELS[int(l)] for l in labels], False)
  preds = list(verdict.pred)
  metrics = {"single_agreement": float(np.mean([p == world.LABELS[l]
                                                for p, l in zip(preds, labels)])),
             "single_read": float(np.mean([p is not None for p in preds])),
             # Oracle v2: the prompt holds (neither violated nor unclear).
             "single_holds": float(np.mean(~(verdict.failure | verdict.unclear))),
             "single_failure": float(np.mean(verdict.failure)),
             "single_unclear": float(np.mean(verdict.unclear))}
  if pimgs is not None:
    metrics.update(pair_both_read=_pair_read(oracle.read(pimgs), pairs),
                   pair_both_read_on_real=_pair_read(oracle.read(real.images), real.labels))
  return metrics, preds


def _judge_metrics(judge, images, labels, pimgs, pairs, real, oracle_preds) -> dict:
  preds = judge(images).argmax(-1)
  read = [i for i, p in enumerate(oracle_preds) if p is not None]
  metrics = {"single_top1": float(np.mean(preds == labels)),
             "oracle_agreement": float(np.mean([world.LABELS[preds[i]] == oracle_preds[i]
                                                for i in read])) if read else None,
             "single_top1_per_class": {
                 world.LABELS[c]: float(np.mean(preds[labels == c] == c))
                 for c in range(world.NUM_CLASSES)}}
  if pimgs is not None:
    plogits = judge(pimgs)
    top2 = np.argsort(-plogits, -1)[:, :2]
    metrics.update(
        pair_both_rate=float(np.mean(top2_match(plogits, pairs))),
        pair_object_recall=float(np.mean([np.isin(p, t).mean()
                                          for p, t in zip(pairs, top2)])),
        pair_judge_rate_on_real=float(np.mean(top2_match(judge(real.images),
                                                         real.labels))))
  return metrics


def evaluate(sd_dir=toy.SD_DIR, judge_dir=(toy.VIT_DIR, toy.RESNET_DIR),
             seeds_per_class: int = 20, pair_seeds: int = 2,
             num_inference_steps: int = 50, guidance_scale: float = 7.5,
             batch_size: int = 200, save_images: str | None = None) -> dict:
  """Single-object top-1 and two-object both-present rate; returns metrics.

  `judge_dir` is one classifier directory or several: the images are generated once and
  judged by each; the top-level metrics are the first judge's, `by_judge` holds all of them
  (keyed by directory name)."""
  t0 = time.time()
  judge_dirs = ([judge_dir] if isinstance(judge_dir, (str, pathlib.Path))
                else list(judge_dir))
  sd = load_sd(sd_dir)
  labels = np.repeat(np.arange(world.NUM_CLASSES), seeds_per_class)
  seeds = np.tile(np.arange(seeds_per_class), world.NUM_CLASSES)
  images = generate(sd, [world.caption([l]) for l in labels], seeds,
                    num_inference_steps, guidance_scale, batch_size)
  pimgs = pairs = real = None
  if pair_seeds:
    pairs = np.asarray(list(itertools.combinations(
        range(world.NUM_CLASSES), 2)) * pair_seeds)
    pseeds = np.repeat(np.arange(pair_seeds), len(pairs) // pair_seeds) + 1000
    pimgs = generate(sd, [world.caption(p) for p in pairs], pseeds,
                     num_inference_steps, guidance_scale, batch_size)
    real = world.make_dataset("heldout", 0, 500)
    colours, n = pair_colours_shown(pimgs, pairs)
    real_colours, _ = pair_colours_shown(real.images, real.labels)
    logging.info("two-object prompts of two colours: both colours drawn in %.4f of %d "
                 "images (real scenes: %.4f)", colours, n, real_colours)
  oracle_metrics, oracle_preds = _oracle_metrics(images, labels, pimgs, pairs, real)
  logging.info("oracle: reads the prompt's class in %.4f of %d images, confirms a failure in "
               "%.4f, cannot tell in %.4f", oracle_metrics["single_agreement"], len(labels),
               oracle_metrics["single_failure"], oracle_metrics["single_unclear"])
  by_judge = {}
  for d in judge_dirs:
    m = _judge_metrics(load_classifier(d), images, labels, pimgs, pairs, real, oracle_preds)
    by_judge[pathlib.Path(d).name] = m
    logging.info("judge %s: single-object top-1 %.4f over %d images; two-object both "
                 "shown %s", d, m["single_top1"], len(labels),
                 m.get("pair_both_rate", "-"))
  metrics = dict(by_judge[pathlib.Path(judge_dirs[0]).name], single_samples=int(len(labels)),
                 pair_samples=0, by_judge=by_judge, oracle=oracle_metrics)
  if pairs is not None:
    metrics.update(pair_samples=int(len(pairs)), pair_colours_shown=colours,
                   pair_colours_samples=n, pair_colours_shown_on_real=real_colours)
  if save_images:
    np.save(save_images, images if pimgs is None else np.concatenate([images, pimgs]))
  metrics["seconds"] = round(time.time() - t0, 1)
  return metrics


_SD_DIR = flags.DEFINE_string("sd_dir", str(toy.SD_DIR), "SD directory.")
_JUDGE = flags.DEFINE_list("judge_dir", [str(toy.VIT_DIR), str(toy.RESNET_DIR)],
                          "Judge classifier directories (the first one's numbers are top-level).")
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
