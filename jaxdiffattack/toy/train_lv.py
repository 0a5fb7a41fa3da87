"""The learned-variance toy generator: the toy UNet trained with Improved DDPM's hybrid loss.

A second toy text-to-image model beside the shipped fixed-variance one, for the open question of
the brittleness paper (arXiv 2312.11473: does GLIDE's learned variance, Nichol & Dhariwal 2021
§3.1, explain its robustness to seed shifts?). ``run(config, workdir)`` executes

  data -> unet_lv -> export

* Frozen parts come from the base pipeline ``config.learned_variance.base`` (default ``toy``, the
  shipped ``jaxdiffattack/toy/assets/sd/``): latents are its VAE encoder's posterior samples x its
  ``scaling_factor`` and captions its text encoder's states, i.e. the latent and text spaces of
  the fixed-variance UNet.
* The UNet is ``config.unet``'s architecture with ``out_channels`` = 2 x latent channels (epsilon,
  then the variance output v), trained on ``ddpm.hybrid_loss`` (lambda =
  ``config.learned_variance.lambda_vlb``). Everything else is the fixed-variance UNet stage's
  (``train.fit_unet`` with ``config.unet``): data, batches, captions and their dropout, t and noise
  draws, initialisation key, optimiser, learning-rate schedule, EMA.
* Export: ``<export dir>/sd_lv/`` in the diffusers layout, with ``tokenizer/``, ``text_encoder/``,
  ``vae/`` and ``feature_extractor/`` copied from the base pipeline, the UNet's EMA params, and a
  ``DDPMScheduler`` config with ``variance_type: "learned_range"`` (the deterministic step rules
  read the same file and ignore the variance half).

Resumable like every toy stage: ``workdir/checkpoints/unet_lv.msgpack`` every ``ckpt_every``
steps, atomic writes, a rerun of a finished stage only exports.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
import time

from absl import logging
import ml_collections
import numpy as np

from jaxdiffattack import ddpm
from jaxdiffattack import models
from jaxdiffattack.models import weights
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.io import write_json
from jaxdiffattack.toy import train

STAGE = "unet_lv"
EXPORT_NAME = "sd_lv"
# Subfolders of the base pipeline that the learned-variance pipeline shares unchanged.
SHARED_SUBFOLDERS = ("tokenizer", "text_encoder", "vae", "feature_extractor")


def unet_module(config, sd: models.StableDiffusion):
  """config.unet's architecture on the base pipeline's latents and text, out = (ε, v)."""
  fixed = train.unet_module(config)
  return fixed.clone(config=dataclasses.replace(
      fixed.config, sample_size=sd.latent_size, in_channels=sd.latent_channels,
      out_channels=2 * sd.latent_channels, cross_attention_dim=sd.text_dim))


def scheduler_config(config) -> dict:
  """The toy scheduler config, as a DDPMScheduler with the learned-range variance."""
  return dict(train.scheduler_config(config), _class_name="DDPMScheduler",
              variance_type="learned_range")


def hybrid_loss_fn(unet, tables: ddpm.TrainTables, lambda_vlb: float):
  """loss_fn(params, z0, zt, t, noise, cond) of train.unet_train_step: Improved DDPM's L_hybrid."""
  def loss_fn(unet_params, z0, zt, t, noise, cond):
    out = unet.apply({"params": unet_params}, zt, t, cond)
    return ddpm.hybrid_loss(out, z0, zt, noise, t, tables, lambda_vlb)[0]
  return loss_fn


def _check_schedule(config, sd: models.StableDiffusion) -> None:
  """The training noise schedule must be the one the base pipeline's latents were made for."""
  base = sd.scheduler_config
  for key in ("beta_start", "beta_end", "num_train_timesteps"):
    if base.get(key) != config.scheduler[key]:
      raise ConfigError(
          f"config.scheduler.{key}={config.scheduler[key]!r} differs from {base.get(key)!r} in "
          f"{sd.path}/scheduler; train on the base pipeline's schedule")
  if base.get("beta_schedule", "linear") != "scaled_linear":
    raise ConfigError(f"{sd.path}/scheduler: beta_schedule={base.get('beta_schedule')!r}; the "
                      "toy training uses 'scaled_linear'")


def export(config, sd: models.StableDiffusion, unet, unet_params,
           out_dir: pathlib.Path) -> pathlib.Path:
  """Writes out_dir/sd_lv (replaced as a whole: built in a temp dir, then renamed)."""
  out_dir.mkdir(parents=True, exist_ok=True)
  for stale in out_dir.glob(f".{EXPORT_NAME}_*"):   # an export cut by a kill: nothing reads it
    shutil.rmtree(stale, ignore_errors=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{EXPORT_NAME}_"))
  try:
    for sub in SHARED_SUBFOLDERS:
      if (sd.path / sub).is_dir():
        shutil.copytree(sd.path / sub, tmp / sub)
    index = dict(train.MODEL_INDEX, scheduler=["diffusers", "DDPMScheduler"])
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
    weights.save_diffusers_model(tmp / "unet", unet, unet_params)
    (tmp / "scheduler").mkdir()
    (tmp / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(scheduler_config(config), indent=2))
    target = out_dir / EXPORT_NAME
    if target.is_dir():
      shutil.rmtree(target)
    os.replace(tmp, target)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  logging.info("[export] wrote %s", target)
  return target


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Trains the learned-variance UNet (resuming where possible) and exports it; returns metrics."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t_start = time.time()
  lv = config.learned_variance
  sd, params = models.load_stable_diffusion(lv.base)
  _check_schedule(config, sd)
  data = train.make_data(config, workdir)
  bank = train.build_caption_bank(sd.text_encoder, params["text_encoder"], sd.tokenizer)
  unet = unet_module(config, sd)
  loss_fn = hybrid_loss_fn(unet, ddpm.train_tables(np.cumprod(1 - train.sd_betas(config))),
                           lv.lambda_vlb)
  out_dir = train.export_dir(config, workdir)

  def on_checkpoint(state):  # Intermediate exports, to evaluate early.
    if lv.export_every and int(state.step) % lv.export_every == 0:
      export(config, sd, unet, state.ema, out_dir)

  state = train.fit_unet(STAGE, config, config.unet, workdir, data, bank, sd.vae, params["vae"],
                         sd.scaling_factor, unet, loss_fn, on_checkpoint)
  target = export(config, sd, unet, state.ema, out_dir)
  metrics = {"base": str(sd.path), "export": str(target), "unet_step": int(state.step),
             "lambda_vlb": float(lv.lambda_vlb), "total_s": round(time.time() - t_start, 1)}
  write_json(workdir / f"{STAGE}_metrics.json", metrics)
  logging.info("[run] %s", metrics)
  return metrics
