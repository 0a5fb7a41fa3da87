"""Trains world 2's models (issue #23; docs/world2_model_card.md) in resumable stages.

``run(config, workdir)`` runs the stages named by ``config.stages`` (comma-separated, in that
order; "all" = `ALL_STAGES`), after rendering the data (`world2.data`, shared by processes):

  vae        AutoencoderKL on 64² scenes (4 levels, f = 8, 16 latent channels)
  clip       CLIP (causal text tower, 77 positions, EOS pooling; ViT vision tower, patch 8),
             contrastive on fresh captions of each scene (4-60 tokens; positives = every
             caption true of the image, `data.caption_matches`)
  unet       epsilon-prediction DDPM on the frozen VAE's latents, conditioned on the frozen CLIP
             text tower's states of a fresh caption per step (caption dropout for CFG; EMA);
             with config.unet.text_encoder_lr > 0 the text tower trains with it (then it is
             the export's sd/text_encoder)
  vae_tune   the VAE decoder with the encoder frozen (the UNet's latent space stays)
  vit, resnet, evaluator   classifiers over the 83 classes (multi-object scenes as soft
             targets); `CLASSIFIERS` is the registry of architectures (the evaluator's is
             ``config.evaluator.arch``: adding one is a builder plus a line); each records its
             test top-1 clean and under Gaussian pixel noise (``config.eval_noise_stds``)
  robust     a second ResNet surrogate (its own seed, ``config.robust.seed``) trained with
             Gaussian noise augmentation (`gaussian_noise_augment`; SAGE searches against robust
             classifiers, issue #26); records the plain resnet's noisy top-1 beside its own
  clip_tune  CLIP's vision tower (and projections) with the text tower frozen
  export     sd/ (diffusers layout), clip/, vit/, resnet/, robust/ (and evaluator/)
             (transformers layout), Flax msgpack, to ``workdir/export`` (or
             ``config.export.dir``, or ``world2/assets`` with ``config.export.to_assets``)

Every stage reuses the toy's training machinery (`toy.train._fit`: atomic msgpack checkpoints
every ``ckpt_every`` steps to ``workdir/checkpoints/<stage>.msgpack``, progress lines with an
ETA; batches and PRNG keys are functions of (seed, stage, step), so a resumed stage equals an
uninterrupted one; warmup-stable-decay learning rates, so stopping at step N == a run with
num_steps = N). A finished stage writes ``workdir/stages/<stage>.json`` (its num_steps and
metrics) and is skipped on rerun. A stage whose inputs another stage makes (`DEPENDS`: unet needs
vae and clip) polls for that stage's file, logging what it waits for, so two processes can train
independent stages into one workdir at once (configs/train_world2.py's docstring has the
commands).
"""
from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any, Callable, NamedTuple

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxdiffattack import errors
from jaxdiffattack.errors import UserError
from jaxdiffattack.io import atomic_write_bytes
from jaxdiffattack.models import clip as clip_lib
from jaxdiffattack.models import convert_transformers
from jaxdiffattack.models import regnet as regnet_lib
from jaxdiffattack.models import resnet as resnet_lib
from jaxdiffattack.models import unet as unet_lib
from jaxdiffattack.models import vae as vae_lib
from jaxdiffattack.models import vit as vit_lib
from jaxdiffattack.toy import train as toy_train
from jaxdiffattack.world2 import ASSETS_DIR
from jaxdiffattack.world2 import data as data_lib
from jaxdiffattack.world2 import scene as scene_lib
from jaxdiffattack.world2 import tokenizer as w2_tokenizer

TrainState = toy_train.TrainState
Net = toy_train.Net
to_pixels = toy_train.to_pixels
_channels_last = toy_train._channels_last  # pylint: disable=protected-access
MODEL_MAX_LENGTH = w2_tokenizer.MODEL_MAX_LENGTH  # 77 positions, as SD.
TRAIN_SEQ_LEN = 64  # >= 60 caption tokens + BOS + EOS; causal, so EOS never sees padding.
LABELS = scene_lib.CLASSES
NUM_CLASSES = scene_lib.NUM_CLASSES

ALL_STAGES = ("vae", "clip", "unet", "vae_tune", "vit", "resnet", "robust", "evaluator",
              "clip_tune", "export")
# robust needs the finished resnet only for its comparison metrics (the plain ResNet under noise).
DEPENDS = {"vae": (), "clip": (), "unet": ("vae", "clip"), "vae_tune": ("vae",), "vit": (),
           "resnet": (), "robust": ("resnet",), "evaluator": (), "clip_tune": ("clip",),
           "export": ("vae", "clip", "unet", "vae_tune", "vit", "resnet", "robust", "clip_tune")}
# Classifier stages: trained by `train_classifier`, exported in the transformers layout.
CLASSIFIER_STAGES = ("vit", "resnet", "robust", "evaluator")


# ------------------------------------------------------------------- data --
class World2Data(NamedTuple):
  train: data_lib.Split
  test: data_lib.Split


def make_data(config, workdir: pathlib.Path) -> World2Data:
  d = config.data
  kw = dict(shard_size=d.shard_size, size=d.image_size, seed=config.seed, poll_s=config.poll_s)
  t0 = time.time()
  train = data_lib.ensure_split(workdir, "train", d.num_train, **kw)
  test = data_lib.ensure_split(workdir, "test", d.num_test, **kw)
  logging.info("[data] %d train + %d test scenes of %d² ready in %.0fs", len(train), len(test),
               d.image_size, time.time() - t0)
  return World2Data(train, test)


def _rng(config, stage: str, step: int) -> np.random.Generator:
  return toy_train._batch_rng(config, stage, step)  # pylint: disable=protected-access


def tokenize(tok, texts, length: int) -> np.ndarray:
  return np.asarray(tok(list(texts), padding="max_length", max_length=length,
                        truncation=True).input_ids, np.int32)


# ------------------------------------------------------------ stage files --
def stage_file(workdir, name: str) -> pathlib.Path:
  return pathlib.Path(workdir) / "stages" / f"{name}.json"


def stage_done(config, workdir, name: str) -> dict | None:
  """The finished stage's record when it reached this config's num_steps, else None."""
  path = stage_file(workdir, name)
  if not path.exists():
    return None
  rec = json.loads(path.read_text())
  if name in config and "num_steps" in config[name] and rec["num_steps"] < config[name].num_steps:
    return None  # Finished at a smaller budget: resumes to the larger one.
  return rec


def _finish(config, workdir, name: str, metrics: dict) -> dict:
  rec = {"stage": name, "num_steps": int(config[name].num_steps) if "num_steps" in config[name]
         else 0, "metrics": metrics, "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                  time.gmtime())}
  atomic_write_bytes(stage_file(workdir, name), json.dumps(rec, indent=2).encode())
  logging.info("[%s] finished: %s", name, metrics)
  return rec


def wait_for(config, workdir, names, waiter: str) -> None:
  """Polls until every stage in `names` has finished (its stages/<name>.json)."""
  t0, said = time.time(), set()
  while True:
    missing = [n for n in names if stage_done(config, workdir, n) is None]
    if not missing:
      return
    for n in missing:
      if n not in said:
        logging.info("[%s] waiting for stage %r to finish (%s; another process trains it, or "
                     "add it to config.stages)", waiter, n, stage_file(workdir, n))
        said.add(n)
    if config.wait_timeout_s and time.time() - t0 > config.wait_timeout_s:
      raise UserError(f"world2 train: stage {waiter!r} waited {config.wait_timeout_s}s for "
                      f"{missing}: train them (config.stages) or raise config.wait_timeout_s")
    time.sleep(config.poll_s)


def load_checkpoint(workdir, name: str) -> dict:
  """Stage `name`'s latest checkpoint as a state dict {"step", "params", "opt_state", "ema"}
  (a finished stage's or a running one's)."""
  path = pathlib.Path(workdir) / "checkpoints" / f"{name}.msgpack"
  return flax.serialization.msgpack_restore(path.read_bytes())


# Test hook: called with (stage name, state) at every checkpoint (tests stop a stage there).
CHECKPOINT_HOOK: Callable[[str, Any], None] | None = None
# Timing hook: when a dict, STEP_TIMES[stage] collects (wall time, process CPU time) after each
# step (the loss fetched, so the step has run): benchmarks/world2_train_rates.py.
STEP_TIMES: dict[str, list[float]] | None = None


def _fit(name, state, step_fn, make_batch, c, workdir):
  hook = CHECKPOINT_HOOK
  if STEP_TIMES is not None:
    times = STEP_TIMES.setdefault(name, [])
    inner = step_fn

    def step_fn(state, batch):  # pylint: disable=function-redefined
      out = inner(state, batch)
      jax.block_until_ready(out[1])
      times.append((time.time(), time.process_time()))
      return out
  return toy_train._fit(  # pylint: disable=protected-access
      name, state, step_fn, make_batch, c, workdir,
      (lambda s: hook(name, s)) if hook is not None else None)


# ------------------------------------------------------------------ models --
def vae_module(config, scaling_factor: float = 1.0):
  c = config.vae
  n = len(c.block_out_channels)
  return vae_lib.AutoencoderKL(vae_lib.VAEConfig(
      in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
      up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(c.block_out_channels),
      layers_per_block=c.layers_per_block, latent_channels=c.latent_channels,
      norm_num_groups=c.norm_num_groups, sample_size=config.data.image_size,
      scaling_factor=scaling_factor))


def latent_size(config) -> int:
  return config.data.image_size // 2 ** (len(config.vae.block_out_channels) - 1)


_UP_BLOCK = {"CrossAttnDownBlock2D": "CrossAttnUpBlock2D", "DownBlock2D": "UpBlock2D"}


def unet_module(config):
  c = config.unet
  n = len(c.block_out_channels)
  # Which levels attend (SD's layout names): every level unless config.unet.down_block_types
  # says otherwise (e.g. no attention at a 16² top level, where it is the costliest).
  down = tuple(c.get("down_block_types", ("CrossAttnDownBlock2D",) * n))
  errors.check(len(down) == n and set(down) <= set(_UP_BLOCK), "unet.down_block_types", down,
               f"give {n} entries from {sorted(_UP_BLOCK)} (one per block_out_channels)")
  return unet_lib.UNet2DConditionModel(unet_lib.UNetConfig(
      sample_size=latent_size(config), in_channels=config.vae.latent_channels,
      out_channels=config.vae.latent_channels, down_block_types=down,
      up_block_types=tuple(_UP_BLOCK[t] for t in reversed(down)),
      block_out_channels=tuple(c.block_out_channels),
      layers_per_block=c.layers_per_block, attention_head_dim=c.attention_heads,
      norm_num_groups=c.get("norm_num_groups", 32),
      cross_attention_dim=config.clip.text_width, flax_numerics=True))


def clip_model_config(config, vocab_size: int) -> clip_lib.CLIPConfig:
  c = config.clip
  return clip_lib.CLIPConfig(
      text=clip_lib.CLIPTextConfig(
          vocab_size=vocab_size, hidden_size=c.text_width,
          intermediate_size=c.text_width * c.mlp_ratio, num_hidden_layers=c.text_layers,
          num_attention_heads=c.text_heads, max_position_embeddings=MODEL_MAX_LENGTH,
          eos_token_id=vocab_size - 1, projection_dim=c.projection_dim),
      vision=clip_lib.CLIPVisionConfig(
          hidden_size=c.vision_width, intermediate_size=c.vision_width * c.mlp_ratio,
          num_hidden_layers=c.vision_layers, num_attention_heads=c.vision_heads,
          image_size=config.data.image_size, patch_size=c.patch_size,
          projection_dim=c.projection_dim),
      projection_dim=c.projection_dim)


def _image_input(config):
  return jnp.zeros((1, config.data.image_size, config.data.image_size, 3), jnp.float32)


def build_vit(config, c) -> tuple[Any, str]:
  cfg = vit_lib.ViTConfig(image_size=config.data.image_size, patch_size=c.patch_size,
                          hidden_size=c.width, num_hidden_layers=c.layers,
                          num_attention_heads=c.heads, intermediate_size=c.width * c.mlp_ratio,
                          num_labels=NUM_CLASSES)
  return vit_lib.ViTForImageClassification(cfg), "vit"


def build_resnet(config, c) -> tuple[Any, str]:
  del config
  cfg = resnet_lib.ResNetConfig(embedding_size=c.embedding_size,
                                hidden_sizes=tuple(c.hidden_sizes), depths=tuple(c.depths),
                                layer_type="basic", num_labels=NUM_CLASSES)
  return resnet_lib.ResNetForImageClassification(cfg), "resnet"


def build_regnet(config, c) -> tuple[Any, str]:
  del config
  cfg = regnet_lib.RegNetConfig(embedding_size=c.embedding_size,
                                hidden_sizes=tuple(c.hidden_sizes), depths=tuple(c.depths),
                                groups_width=c.groups_width, layer_type=c.layer_type,
                                num_labels=NUM_CLASSES)
  cfg.validate()
  return regnet_lib.RegNetForImageClassification(cfg), "regnet"


# Classifier architectures: name -> builder(config, stage config) -> (linen module, the
# convert_transformers kind it exports as). The evaluator stage uses config.evaluator.arch.
CLASSIFIERS: dict[str, Callable[..., tuple[Any, str]]] = {
    "vit": build_vit, "resnet": build_resnet, "regnet": build_regnet}


def classifier_arch(config, name: str) -> str:
  arch = config[name].get("arch", name)
  if arch not in CLASSIFIERS:
    raise errors.ConfigError(f"config.{name}.arch={arch!r} is invalid: use one of "
                             f"{sorted(CLASSIFIERS)} (register one in world2.train.CLASSIFIERS)")
  return arch


# -------------------------------------------------------------------- vae --
def _vae_batches(config, stage, d: World2Data, batch):
  def make_batch(step):
    return d.train.images[data_lib.sample_batch(_rng(config, stage, step), d.train, batch)]
  return make_batch


# ----------------------------------------------------- vae loss terms --
# The VAE's optional sharpening terms (issue #23): round trips at MSE + 0.1 L1 + KL blur object
# edges into blobs (docs/results/world2_vae_check_f4_step600.json). SD's VAEs get sharp detail
# from a perceptual (LPIPS, Zhang et al. 2018) and a patch-GAN loss; world 2 has no pretrained
# VGG, so the perceptual term reads a frozen world-2 classifier's hidden states instead.
def image_gradients(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Forward differences of NCHW images: (dx [B, C, H, W-1], dy [B, C, H-1, W])."""
  return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def edge_loss(rec: jax.Array, x: jax.Array) -> jax.Array:
  """L1 between the images' finite-difference gradients, the mean of the x and y terms."""
  (rdx, rdy), (xdx, xdy) = image_gradients(rec), image_gradients(x)
  return (jnp.mean(jnp.abs(rdx - xdx)) + jnp.mean(jnp.abs(rdy - xdy))) / 2


def feature_distance(feats_a, feats_b) -> jax.Array:
  """LPIPS's distance (Zhang et al. 2018, eq. 1) with unit weights: each layer's states
  [B, ..., D] normalised to unit length over D, the squared difference summed over D and
  averaged over batch and positions; the mean over layers. Each layer's term is in [0, 4]."""
  unit = lambda h: h / (jnp.linalg.norm(h, axis=-1, keepdims=True) + 1e-10)
  return jnp.mean(jnp.stack([jnp.mean(jnp.sum((unit(a) - unit(b)) ** 2, -1))
                             for a, b in zip(feats_a, feats_b)]))


def vit_feature_layers(module, name: str) -> bool:
  """The ViT's encoder layers (their residual-stream outputs [B, 1 + patches, width])."""
  del name
  return isinstance(module, vit_lib.ViTLayer)


# Perceptual feature nets: config.vae.feature_net -> which submodules' outputs are the features
# (a flax capture_intermediates filter). Adding one is a filter plus a line (the net must be a
# `CLASSIFIERS` architecture trained as the stage of that name).
FEATURE_LAYERS: dict[str, Callable[[Any, str], bool]] = {"vit": vit_feature_layers}


def feature_checkpoint(config, workdir, stage: str = "vae") -> pathlib.Path:
  c = config[stage]
  ck = c.get("feature_ckpt", "")
  return (pathlib.Path(ck) if ck else
          pathlib.Path(workdir) / "checkpoints" / f"{c.get('feature_net', 'vit')}.msgpack")


def feature_extractor(config, workdir,
                      stage: str = "vae") -> Callable[[jax.Array], list[jax.Array]]:
  """features(x NCHW normalised pixels) -> the frozen feature net's hidden states (a list, one
  [B, ..., D] array per layer), read from `feature_checkpoint` (config.<stage>.feature_ckpt,
  or workdir/checkpoints/<feature_net>.msgpack as it is when the stage starts)."""
  c = config[stage]
  name = c.get("feature_net", "vit")
  errors.check(name in FEATURE_LAYERS, f"{stage}.feature_net", name,
               f"one of {sorted(FEATURE_LAYERS)} (register one in world2.train.FEATURE_LAYERS)")
  path = feature_checkpoint(config, workdir, stage)
  if not path.is_file():
    raise UserError(f"config.{stage}.feature_weight={c.feature_weight} needs the "
                    f"{name!r} classifier's checkpoint {path}: train stage {name!r} first, or "
                    f"set config.{stage}.feature_ckpt to a copy of one")
  model, _ = classifier_net(config, name)
  params = flax.serialization.msgpack_restore(path.read_bytes())["params"]
  if "batch_stats" in model.params:
    raise UserError(f"config.{stage}.feature_net={name!r} has BatchNorm statistics: use a net "
                    "without (e.g. 'vit')")
  params = jax.tree_util.tree_map(jnp.asarray, params)
  keep = FEATURE_LAYERS[name]

  def features(x):
    _, state = model.module.apply({"params": params}, _channels_last(x),
                                  capture_intermediates=keep, mutable=["intermediates"])
    leaves = jax.tree_util.tree_leaves_with_path(state["intermediates"])
    return [v for _, v in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0]))]

  return features


def vae_loss_fn(config, workdir, vae, stage: str = "vae"):
  """loss_fn(params, x, key) of a world-2 VAE stage, from config.<stage>: for "vae" the toy's
  MSE + 0.1 L1 + kl_weight KL, for "vae_tune" (the decoder; the optimiser freezes the
  encoder) MSE + l1_weight L1, each plus edge_weight x `edge_loss` and feature_weight x
  `feature_distance` of the frozen feature net's states (reconstruction vs original). Both
  weights 0 (the default): the toy's loss function itself, so runs without the terms train
  (and resume) exactly as before."""
  c = config[stage]
  edge_w, feat_w = float(c.get("edge_weight", 0.0)), float(c.get("feature_weight", 0.0))
  errors.check(edge_w >= 0, f"{stage}.edge_weight", c.get("edge_weight"), "a weight >= 0")
  errors.check(feat_w >= 0, f"{stage}.feature_weight", c.get("feature_weight"), "a weight >= 0")
  tune = stage == "vae_tune"
  if edge_w == 0 and feat_w == 0:
    return (toy_train.vae_decoder_loss_fn(vae, c.l1_weight) if tune
            else toy_train.vae_loss_fn(vae, c.kl_weight))
  l1_w, kl_w = (c.l1_weight, 0.0) if tune else (0.1, c.kl_weight)
  features = feature_extractor(config, workdir, stage) if feat_w else None

  def loss_fn(params, x, key):
    post = vae.apply({"params": params}, x, method=vae.encode)
    rec = vae.apply({"params": params}, post.sample(key), method=vae.decode)
    err = rec - x
    loss = jnp.mean(err ** 2) + l1_w * jnp.mean(jnp.abs(err))
    if kl_w:
      loss = loss + kl_w * jnp.mean(post.kl()) / x[0].size
    if edge_w:
      loss = loss + edge_w * edge_loss(rec, x)
    if feat_w:
      loss = loss + feat_w * feature_distance(features(rec),
                                              jax.lax.stop_gradient(features(x)))
    return loss

  return loss_fn


def train_vae(config, workdir, d: World2Data) -> dict:
  """MSE + 0.1 L1 + kl_weight KL (the toy's loss) + the optional edge / feature terms
  (`vae_loss_fn`); returns metrics incl. scaling_factor."""
  c = config.vae
  vae = vae_module(config)
  params = jax.jit(vae.init_weights)(jax.random.PRNGKey(config.seed + 2))
  opt = toy_train._optimizer(c)  # pylint: disable=protected-access
  state = TrainState(jnp.array(0), params, opt.init(params), None)

  step_fn = toy_train.vae_train_step(config, opt, vae_loss_fn(config, workdir, vae),
                                     seed_offset=3, flip=True)
  state = _fit("vae", state, step_fn, _vae_batches(config, "vae", d, c.batch_size), c, workdir)
  n = min(2000, len(d.train))
  mean, std = toy_train.encode_latents(vae, state.params, d.train.images[:n], batch=250)
  z = mean + std * np.random.default_rng(0).normal(size=mean.shape)
  scaling = float(1.0 / np.std(z))
  mse = toy_train.vae_recon_mse(vae, state.params, d.test.images[:250])
  return {"scaling_factor": scaling, "latent_std": float(np.std(z)), "test_recon_mse": mse}


def load_vae(config, workdir, which: str = "vae"):
  """(module, params, scaling) from a finished vae / vae_tune stage."""
  scaling = stage_done(config, workdir, "vae")["metrics"]["scaling_factor"]
  params = load_checkpoint(workdir, which)["params"]
  return vae_module(config, scaling), params, scaling


def tune_vae_decoder(config, workdir, d: World2Data) -> dict:
  c = config.vae_tune
  vae, params, _ = load_vae(config, workdir)
  opt = toy_train.frozen_optimizer(c, params, toy_train.VAE_ENCODER)
  state = TrainState(jnp.array(0), params, opt.init(params), None)
  step_fn = toy_train.vae_train_step(config, opt, vae_loss_fn(config, workdir, vae, "vae_tune"),
                                     seed_offset=6, flip=False)
  state = _fit("vae_tune", state, step_fn, _vae_batches(config, "vae_tune", d, c.batch_size),
               c, workdir)
  return {"test_recon_mse": toy_train.vae_recon_mse(vae, state.params, d.test.images[:250])}


# ------------------------------------------------------------------- clip --
def _tokenizer(workdir):
  from transformers import CLIPTokenizer  # pylint: disable=g-import-not-at-top
  tok_dir = pathlib.Path(workdir) / "tokenizer"
  if not (tok_dir / "vocab.json").exists():
    w2_tokenizer.build_tokenizer_files(tok_dir)
  return CLIPTokenizer.from_pretrained(tok_dir), tok_dir


def clip_net(config, tok) -> Net:
  module = clip_lib.CLIPModel(clip_model_config(config, len(tok)))
  return toy_train.init_net(module, config.seed, jnp.zeros((1, MODEL_MAX_LENGTH), jnp.int32),
                            _image_input(config))


def clip_loss(model: Net, class_ids: jax.Array, weight: float) -> Callable:
  """loss_fn(params, ids [B, L], pixels [B, 3, S, S], (match [B, B], soft [B, 83])): the
  contrastive loss with soft targets over every (caption, image) pair of the batch where the
  caption is true of the image (`data.caption_matches`; the diagonal always), plus, when
  weight > 0, weight × the cross-entropy of the 83 class prompts' logits ("a <class>",
  `class_ids` [83, L]) against each image's class weights (`data.soft_targets`: 1 / objects
  per object's class): an explicit shape signal, which contrastive batches alone gave the
  first CLIP too weakly (zero-shot shape right 11 % after 2,000 steps)."""

  def loss_fn(params, ids, pixels, extra):
    match, soft = extra
    batch = ids.shape[0]
    if weight:
      ids = jnp.concatenate([ids, class_ids.astype(ids.dtype)])
    logits_img, logits_txt = model.module.apply({"params": params}, ids, _channels_last(pixels))
    logits_img, logits_txt, logits_cls = (logits_img[:, :batch], logits_txt[:batch],
                                          logits_img[:, batch:])
    t_txt = match / match.sum(1, keepdims=True)        # caption i -> its true images
    t_img = match.T / match.T.sum(1, keepdims=True)    # image j -> captions true of it
    lt = -jnp.mean(jnp.sum(t_txt * jax.nn.log_softmax(logits_txt, 1), 1))
    li = -jnp.mean(jnp.sum(t_img * jax.nn.log_softmax(logits_img, 1), 1))
    loss = (li + lt) / 2
    if weight:
      loss += weight * -jnp.mean(jnp.sum(soft * jax.nn.log_softmax(logits_cls, 1), 1))
    return loss

  return loss_fn


def _clip_step_and_batches(config, c, model: Net, tok, d: World2Data, opt, stage: str):
  """The CLIP stage's step (`clip_loss` with c.class_prompt_weight) and batches (hue groups,
  `data.sample_hue_groups`); no left-right flips (captions state "left of")."""
  class_ids = jnp.asarray(tokenize(tok, [class_prompt(i) for i in range(NUM_CLASSES)],
                                   TRAIN_SEQ_LEN))
  loss_fn = clip_loss(model, class_ids, float(c.get("class_prompt_weight", 0.0)))

  step_fn = toy_train.clip_train_step(config, stage, opt, loss_fn, flip=False)

  def make_batch(step):
    rng = _rng(config, stage, step)
    idx = data_lib.sample_hue_groups(rng, d.train, c.batch_size, c.get("hue_group", 1))
    texts, facts = data_lib.draw_captions(rng, d.train, idx)
    match = data_lib.caption_matches(facts, d.train, idx).astype(np.float32)
    soft = data_lib.soft_targets(d.train, idx, NUM_CLASSES)
    return tokenize(tok, texts, TRAIN_SEQ_LEN), d.train.images[idx], (match, soft)

  return step_fn, make_batch


def class_prompt(cls: int) -> str:
  name = scene_lib.CLASSES[cls]
  return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def clip_zero_shot(model: Net, tok, split: data_lib.Split, batch: int = 250) -> dict:
  """Zero-shot over the 83 prompts "a <class>" on the single-object scenes of `split`: top-1,
  and how often the predicted class has the right hue / the right shape."""
  single = split.single
  images, labels = split.images[single], split.group_cls[single, 0]
  ids = tokenize(tok, [class_prompt(i) for i in range(NUM_CLASSES)], MODEL_MAX_LENGTH)
  apply = lambda method: jax.jit(lambda p, x: model.module.apply({"params": p}, x,
                                                                 method=method))
  text = apply("get_text_features")(model.params, ids)
  text = text / jnp.linalg.norm(text, axis=-1, keepdims=True)
  image_fn = apply("get_image_features")
  preds = np.concatenate([np.asarray(jnp.argmax(image_fn(model.params, _channels_last(to_pixels(
      images[i:i + batch]))) @ text.T, -1)) for i in range(0, len(images), batch)])
  same = lambda part: float(np.mean([part(int(p)) == part(int(l))
                                     for p, l in zip(preds, labels)]))
  return {"zero_shot_top1": float(np.mean(preds == labels)),
          "zero_shot_hue_right": same(scene_lib.class_hue),
          "zero_shot_shape_right": same(scene_lib.class_shape)}


def train_clip(config, workdir, d: World2Data) -> dict:
  c = config.clip
  tok, _ = _tokenizer(workdir)
  model = clip_net(config, tok)
  params = toy_train.lecun_reinit(model.params, jax.random.PRNGKey(config.seed))
  opt = toy_train._optimizer(c)  # pylint: disable=protected-access
  state = TrainState(jnp.array(0), params, opt.init(params), None)
  step_fn, make_batch = _clip_step_and_batches(config, c, model, tok, d, opt, "clip")
  state = _fit("clip", state, step_fn, make_batch, c, workdir)
  return clip_zero_shot(model._replace(params=state.params), tok, d.test)


def load_clip(config, workdir, which: str = "clip") -> tuple[Net, Any, pathlib.Path]:
  tok, tok_dir = _tokenizer(workdir)
  model = clip_net(config, tok)
  return model._replace(params=load_checkpoint(workdir, which)["params"]), tok, tok_dir


def tune_clip_vision(config, workdir, d: World2Data) -> dict:
  """CLIP's contrastive training continued with the text tower (SD's text encoder) frozen."""
  c = config.clip_tune
  model, tok, _ = load_clip(config, workdir)
  opt = toy_train.frozen_optimizer(c, model.params, ("text_model",))
  state = TrainState(jnp.array(0), model.params, opt.init(model.params), None)
  step_fn, make_batch = _clip_step_and_batches(config, c, model, tok, d, opt, "clip_tune")
  state = _fit("clip_tune", state, step_fn, make_batch, c, workdir)
  return clip_zero_shot(model._replace(params=state.params), tok, d.test)


# -------------------------------------------------------------------- unet --
def cached_latents(config, workdir, vae, vae_params, images) -> tuple[np.ndarray, np.ndarray]:
  """Posterior (mean, std) [N, C, h, w] of the frozen VAE (float16, cached in workdir)."""
  path = pathlib.Path(workdir) / "latents" / f"train_{len(images)}.npz"
  if path.exists():
    with np.load(path, allow_pickle=False) as z:
      return z["mean"], z["std"]
  t0 = time.time()
  mean, std = toy_train.encode_latents(vae, vae_params, images, batch=250)
  import io  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  np.savez(buf, mean=mean.astype(np.float16), std=std.astype(np.float16))
  atomic_write_bytes(path, buf.getvalue())
  logging.info("[unet] encoded %d latents in %.0fs -> %s", len(images), time.time() - t0, path)
  with np.load(path, allow_pickle=False) as z:
    return z["mean"], z["std"]


# config.unet.text_encoder_lr > 0 (issue #23): the unet checkpoint's params and EMA are
# {UNET_KEY: the UNet's, TEXT_KEY: {"text_model": the text tower's}}; 0 (the default): the
# UNet's alone, as before.
UNET_KEY, TEXT_KEY = "unet", "text_encoder"


def text_encoder_lr(config) -> float:
  """config.unet.text_encoder_lr (0.0 when absent: the text tower frozen)."""
  return float(config.unet.get("text_encoder_lr", 0.0))


def split_unet_params(params) -> tuple[Any, Any | None]:
  """(UNet params, text tower params {"text_model": ...} or None) of a unet checkpoint's
  params or EMA: the text tower's only when the stage trained it (text_encoder_lr > 0)."""
  if isinstance(params, dict) and set(params) == {UNET_KEY, TEXT_KEY}:
    return params[UNET_KEY], params[TEXT_KEY]
  return params, None


def joint_optimizer(c, unet_params, text_params):
  """The optimiser of the joint params {UNET_KEY, TEXT_KEY}: one global-norm clip (1.0) of the
  whole gradient, then AdamW per part with its own peak rate (the UNet's c.lr, the text
  tower's c.text_encoder_lr) on the same warmup-stable-decay schedule shape (c's steps)."""
  text_c = ml_collections.ConfigDict(c.to_dict())
  text_c.lr = float(c.text_encoder_lr)
  adamw = lambda cfg: optax.adamw(toy_train.lr_schedule(cfg), weight_decay=cfg.weight_decay)
  labels = {UNET_KEY: jax.tree_util.tree_map(lambda _: UNET_KEY, unet_params),
            TEXT_KEY: jax.tree_util.tree_map(lambda _: TEXT_KEY, text_params)}
  return optax.chain(optax.clip_by_global_norm(1.0), optax.multi_transform(
      {UNET_KEY: adamw(c), TEXT_KEY: adamw(text_c)}, labels))


def train_unet(config, workdir, d: World2Data) -> dict:
  """Epsilon-prediction DDPM on VAE latents x scaling, conditioned on the CLIP text tower's 77
  states of a fresh caption (or "" with probability caption_dropout); EMA. The text tower is
  frozen unless config.unet.text_encoder_lr > 0: then it is trained with the UNet by the same
  loss (`joint_optimizer`, initialised from the clip stage's; see UNET_KEY)."""
  c = config.unet
  unet = unet_module(config)
  vae, vae_params, scaling = load_vae(config, workdir)
  clip, tok, _ = load_clip(config, workdir)
  text_model = clip_lib.CLIPTextModel(clip.module.config.text)
  text_params = {"text_model": clip.params["text_model"]}
  state, opt = toy_train.unet_init_state("unet", config, c, unet)
  params = state.params
  mean, std = cached_latents(config, workdir, vae, vae_params, d.train.images)
  joint = text_encoder_lr(config) > 0

  def encode(text_params, ids):  # The text tower's 77 states [B, 77, width].
    return text_model.apply({"params": text_params}, ids).last_hidden_state

  if not joint:
    def loss_fn(params, z0, zt, t, noise, cond):
      del z0
      return jnp.mean((unet.apply({"params": params}, zt, t, cond) - noise) ** 2)

    def encode_text(text_params, ids):  # Frozen.
      return jax.lax.stop_gradient(encode(text_params, ids))

    jit_step = toy_train.unet_train_step(config, c, opt, loss_fn, scaling, encode_text)
    step_fn = lambda s, b: jit_step(s, b, text_params)
  else:
    # The step's "cond" is the token ids [B, 77]; the loss encodes them with the trained tower.
    def loss_fn(params, z0, zt, t, noise, ids):
      del z0
      cond = encode(params[TEXT_KEY], ids)
      return jnp.mean((unet.apply({"params": params[UNET_KEY]}, zt, t, cond) - noise) ** 2)

    params = {UNET_KEY: params, TEXT_KEY: text_params}
    opt = joint_optimizer(c, params[UNET_KEY], text_params)
    state = TrainState(jnp.array(0), params, opt.init(params), params)
    jit_step = toy_train.unet_train_step(config, c, opt, loss_fn, scaling, lambda _, ids: ids)
    step_fn = lambda s, b: jit_step(s, b)

  def make_batch(step):
    rng = _rng(config, "unet", step)
    idx = data_lib.sample_batch(rng, d.train, c.batch_size)
    texts, _ = data_lib.draw_captions(rng, d.train, idx)
    texts = ["" if rng.random() < c.caption_dropout else t for t in texts]
    return mean[idx], std[idx], tokenize(tok, texts, MODEL_MAX_LENGTH)

  state = _fit("unet", state, step_fn, make_batch, c, workdir)
  unet_params, trained_text = split_unet_params(params)
  out = {"unet_parameters": int(sum(x.size for x in jax.tree_util.tree_leaves(unet_params))),
         "final_step": int(state.step)}
  if trained_text is not None:
    out["text_encoder_parameters"] = int(sum(
        x.size for x in jax.tree_util.tree_leaves(trained_text)))
  return out


# ------------------------------------------------------------- classifiers --
def classifier_seed(config, name: str) -> int:
  """The seed of a classifier's initialisation and augmentation keys (batches are keyed by the
  stage name): ``config.<name>.seed`` when set (the robust surrogate's own), else config.seed."""
  return int(config[name].get("seed", config.seed))


def classifier_net(config, name: str) -> tuple[Net, str]:
  module, kind = CLASSIFIERS[classifier_arch(config, name)](config, config[name])
  return toy_train.init_net(module, classifier_seed(config, name), _image_input(config)), kind


def train_classifier(config, workdir, d: World2Data, name: str,
                     extra_augment: Callable[[Any, jnp.ndarray], jnp.ndarray] | None = None
                     ) -> dict:
  """Softmax classifier over the 83 classes: soft targets (1 / objects per object's class),
  about c.single_fraction single-object scenes per batch, the toy's light augmentation (then
  `extra_augment(key, pixels)` when given); metrics: `classifier_metrics` on the test split."""
  c = config[name]
  model, _ = classifier_net(config, name)

  def make_batch(step):
    rng = _rng(config, name, step)
    idx = data_lib.sample_batch(rng, d.train, c.batch_size, c.single_fraction)
    return d.train.images[idx], data_lib.soft_targets(d.train, idx, NUM_CLASSES)

  model = toy_train.fit_classifier(name, config, c, model, make_batch, workdir, fit=_fit,
                                   seed=classifier_seed(config, name),
                                   extra_augment=extra_augment)
  return classifier_metrics(config, model, d.test)


# Pixel scale of every world-2 classifier's input: toy_train.to_pixels, (x / 255 - 0.5) / 0.5,
# in [-1, 1]. Noise stds below are in this scale: σ = 0.1 is 12.75 of 255 grey levels, 0.4 is 51.
def gaussian_noise_augment(key, pixels: jnp.ndarray, noise_fraction: float,
                           noise_max_std: float) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Gaussian noise augmentation (Cohen et al. 2019's training noise, with a per-image σ).

  Per image, with probability `noise_fraction`: add N(0, σ²) i.i.d. over channels and pixels,
  σ ~ U(0, noise_max_std) in the model's input scale (see above), unclipped (as the light
  augmentation's noise); the other images are returned unchanged.

  Args:
    key: PRNG key of this batch.
    pixels: [B, 3, H, W] model-scale pixels.
  Returns:
    (pixels [B, 3, H, W], sigma [B]: each image's σ, 0 for the images left unchanged).
  """
  n = pixels.shape[0]
  k_on, k_sigma, k_noise = jax.random.split(key, 3)
  noised = jax.random.bernoulli(k_on, noise_fraction, (n,))
  sigma = jnp.where(noised, jax.random.uniform(k_sigma, (n,), maxval=noise_max_std), 0.0)
  noise = jax.random.normal(k_noise, pixels.shape, pixels.dtype)
  return pixels + sigma.astype(pixels.dtype)[:, None, None, None] * noise, sigma


def eval_noise_key(config) -> jax.Array:
  """The key of the test split's evaluation noise (the same draws for every classifier)."""
  return jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x5e7)


def eval_noise(key, indices: jnp.ndarray, shape) -> jnp.ndarray:
  """[N, *shape] standard normal noise, row i drawn from fold_in(key, indices[i]): an image's
  noise depends on its index only (not on the batch split); scaled by σ it is the noise of
  every σ (common random numbers across σ and classifiers)."""
  return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), tuple(shape)))(
      indices)


def classifier_accuracy(model: Net, split: data_lib.Split, batch: int = 250,
                        noise_stds=(0.0,), key=None) -> list[float]:
  """Top-1 on the single-object scenes of `split`, one per σ of `noise_stds`: pixels (model
  scale) + σ · `eval_noise(key, j)` for the j-th single scene (unclipped; σ = 0: clean)."""
  single = split.single
  images, labels = split.images[single], split.group_cls[single, 0]
  has_bn = isinstance(model.params, dict) and "batch_stats" in model.params
  if key is None and any(s for s in noise_stds):
    raise ValueError("classifier_accuracy: noise_stds > 0 need a key (eval_noise_key)")

  @jax.jit
  def predict(params, x, idx, std):  # x [b, 3, H, W], idx [b] int32, std scalar
    if key is not None:
      x = x + std * eval_noise(key, idx, x.shape[1:])
    logits = model.module.apply(params if has_bn else {"params": params}, _channels_last(x))
    return jnp.argmax(logits, -1)

  out = []
  for std in noise_stds:
    preds = [np.asarray(predict(model.params, to_pixels(images[i:i + batch]),
                                jnp.arange(i, min(i + batch, len(images)), dtype=jnp.int32),
                                jnp.float32(std)))
             for i in range(0, len(images), batch)]
    out.append(float(np.mean(np.concatenate(preds) == labels)))
  return out


def noisy_metric(std: float) -> str:
  return f"test_single_top1_sigma{std:g}"


def classifier_metrics(config, model: Net, split: data_lib.Split) -> dict:
  """{"test_single_top1": clean top-1, noisy_metric(σ): top-1 under noise σ for each σ of
  config.eval_noise_stds} on the single-object scenes of `split` (`classifier_accuracy`)."""
  stds = tuple(float(s) for s in config.get("eval_noise_stds", ()))
  accs = classifier_accuracy(model, split, noise_stds=(0.0,) + stds, key=eval_noise_key(config))
  return {"test_single_top1": accs[0], **{noisy_metric(s): a for s, a in zip(stds, accs[1:])}}


def train_robust(config, workdir, d: World2Data) -> dict:
  """The noise-trained surrogate: `train_classifier` with `gaussian_noise_augment`
  (config.robust.noise_fraction, noise_max_std) after the light augmentation; its metrics and
  the finished plain resnet's on the same noise draws ("resnet_" + each metric name)."""
  c = config.robust

  def augment(key, pixels):
    return gaussian_noise_augment(key, pixels, c.noise_fraction, c.noise_max_std)[0]

  metrics = train_classifier(config, workdir, d, "robust", extra_augment=augment)
  plain, _ = load_classifier(config, workdir, "resnet")
  metrics.update({f"resnet_{k}": v for k, v in classifier_metrics(config, plain, d.test).items()})
  return metrics


def load_classifier(config, workdir, name: str) -> tuple[Net, str]:
  model, kind = classifier_net(config, name)
  ck = load_checkpoint(workdir, name)
  params = ({"params": ck["params"], "batch_stats": ck["ema"]}
            if "batch_stats" in model.params else ck["params"])
  return model._replace(params=params), kind


# ------------------------------------------------------------------ export --
def export_dir(config, workdir) -> pathlib.Path:
  if config.export.to_assets:
    return ASSETS_DIR
  return pathlib.Path(config.export.dir) if config.export.dir else pathlib.Path(workdir) / "export"


def export(config, workdir, d: World2Data | None = None) -> dict:
  """Writes the finished models (sd/, clip/, vit/, resnet/, robust/, evaluator/ when trained)."""
  del d
  clip, _, tok_dir = load_clip(config, workdir, "clip_tune")
  vae, vae_params, scaling = load_vae(config, workdir, "vae_tune")
  del vae
  classifiers = {n: load_classifier(config, workdir, n)[0] for n in ("vit", "resnet")}
  out = export_dir(config, workdir)
  metrics = {n: stage_done(config, workdir, n)["metrics"] for n in DEPENDS["export"]}
  # The UNet's EMA, and with text_encoder_lr > 0 the text tower's EMA trained with it (sd/'s
  # text_encoder; clip/ stays clip_tune's CLIP).
  unet_params, text_params = split_unet_params(load_checkpoint(workdir, "unet")["ema"])
  trained = toy_train.Trained(tok_dir, clip, classifiers["vit"], classifiers["resnet"], None,
                              vae_params, scaling, unet_module(config), unet_params)
  toy_train.export(config, trained, out, metrics, image_size=config.data.image_size,
                   labels=LABELS, vae_fn=vae_module, text_encoder_params=text_params)
  for name in ("robust", "evaluator"):
    if stage_done(config, workdir, name) is not None:
      export_classifier(config, workdir, name, out / name)
  size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
  return {"export_dir": str(out), "export_mb": round(size / 2 ** 20, 2)}


def export_classifier(config, workdir, name: str, path: pathlib.Path) -> None:
  """Classifier stage `name` in the transformers layout at `path`, with transformers' ConvNext
  processor (the ResNet's and RegNet's) set to the normalisation every world model trains with
  (toy_train.to_pixels), so `vision.load_image_classifier` reads it."""
  from transformers import ConvNextImageProcessor  # pylint: disable=g-import-not-at-top
  model, kind = load_classifier(config, workdir, name)
  convert_transformers.save(path, kind, model.module.config, model.params, LABELS)
  ConvNextImageProcessor(
      size={"shortest_edge": config.data.image_size}, crop_pct=1.0, do_normalize=True,
      image_mean=list(toy_train.PIXEL_MEAN), image_std=list(toy_train.PIXEL_STD),
      do_rescale=True, rescale_factor=1 / 255).save_pretrained(path)


# --------------------------------------------------------------------- run --
STAGE_FNS: dict[str, Callable[..., dict]] = {
    "vae": train_vae, "clip": train_clip, "unet": train_unet, "vae_tune": tune_vae_decoder,
    "vit": lambda config, workdir, d: train_classifier(config, workdir, d, "vit"),
    "resnet": lambda config, workdir, d: train_classifier(config, workdir, d, "resnet"),
    "robust": train_robust,
    "evaluator": lambda config, workdir, d: train_classifier(config, workdir, d, "evaluator"),
    "clip_tune": tune_clip_vision, "export": export,
}


def parse_stages(config) -> list[str]:
  raw = config.stages
  names = [s for s in ALL_STAGES if s != "evaluator" or config.evaluator.arch] if raw == "all" else [s.strip() for s in str(raw).split(",")
                                                 if s.strip()]
  bad = [s for s in names if s not in STAGE_FNS]
  if not names or bad:
    raise errors.ConfigError(f"config.stages={raw!r} is invalid: a comma-separated list of "
                             f"{', '.join(ALL_STAGES)} (or 'all')")
  if len(set(names)) != len(names):
    raise errors.ConfigError(f"config.stages={raw!r} is invalid: names a stage twice")
  for name in ("robust", "evaluator"):
    if name in names:
      classifier_arch(config, name)
  return names


def validate(config) -> None:
  d = config.data
  errors.check(d.image_size % 2 ** (len(config.vae.block_out_channels) - 1) == 0,
               "data.image_size", d.image_size,
               "a multiple of 2 ** (len(vae.block_out_channels) - 1)")
  errors.check(d.image_size % config.clip.patch_size == 0, "clip.patch_size",
               config.clip.patch_size, "a divisor of data.image_size")
  for name in ALL_STAGES:
    if name in config and "num_steps" in config[name]:
      errors.check(config[name].num_steps >= 0, f"{name}.num_steps", config[name].num_steps,
                   "a step count >= 0")
      errors.check(config[name].ckpt_every > 0, f"{name}.ckpt_every", config[name].ckpt_every,
                   "a positive step count")
  if "robust" in config:
    r = config.robust
    errors.check(0.0 <= r.noise_fraction <= 1.0, "robust.noise_fraction", r.noise_fraction,
                 "a probability in [0, 1]")
    errors.check(r.noise_max_std >= 0.0, "robust.noise_max_std", r.noise_max_std,
                 "a std >= 0 in the model's input scale ([-1, 1])")
  errors.check(text_encoder_lr(config) >= 0.0, "unet.text_encoder_lr", text_encoder_lr(config),
               "a learning rate >= 0 (0: the text tower frozen, > 0: trained with the UNet)")
  stds = tuple(config.get("eval_noise_stds", ()))
  errors.check(all(s > 0 for s in stds), "eval_noise_stds", stds,
               "stds > 0 in the model's input scale ([-1, 1]), e.g. (0.1, 0.2, 0.4)")


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Runs config.stages (after the shared data) into workdir; returns {stage: metrics}."""
  stages = parse_stages(config)
  validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  d = make_data(config, workdir)
  out = {}
  for name in stages:
    rec = stage_done(config, workdir, name)
    if rec is not None and name != "export":
      logging.info("[%s] already finished (%s), skipping", name, stage_file(workdir, name))
      out[name] = rec["metrics"]
      continue
    wait_for(config, workdir, DEPENDS[name], name)
    t0, cpu0 = time.time(), time.process_time()
    metrics = STAGE_FNS[name](config, workdir, d)
    # Wall and CPU seconds (all of this process's threads) of this run of the stage only: a
    # stage resumed from a checkpoint counts what the earlier runs spent in their logs.
    metrics["seconds_this_run"] = round(time.time() - t0, 1)
    metrics["cpu_seconds_this_run"] = round(time.process_time() - cpu0, 1)
    out[name] = _finish(config, workdir, name, metrics)["metrics"]
  return out
