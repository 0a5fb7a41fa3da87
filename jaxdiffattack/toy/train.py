"""Trains every model of the toy world from a seed and exports them.

``run(config, workdir)`` executes the stages in order (cheap ones first):

  data -> tokenizer -> clip -> vae -> unet -> vae_tune -> vit -> resnet
  -> clip_tune -> export

(the classifiers last: the UNet needs only CLIP's text tower and the VAE, and
the classifiers can be trained by a second process into the same checkpoint
files meanwhile).

Every stage is resumable: training state (params, optimizer, EMA) is
checkpointed to ``workdir/checkpoints/<stage>.msgpack`` every
``ckpt_every`` steps, and a finished stage leaves its checkpoint with
``step == num_steps`` so a re-run skips it. Lowering ``num_steps`` and
re-running therefore stops a stage early and exports what it has. All files
are written atomically (temp file, then ``os.replace``).

The export (``workdir/export`` or ``config.export.dir``; the package's
``assets`` directory when ``config.export.to_assets``) holds ``sd/`` in the
diffusers Stable Diffusion layout, ``clip/``, ``vit/`` and ``resnet/`` in the
transformers layout, all Flax msgpack.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
import time
from typing import Any, Callable, NamedTuple

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxdiffattack import toy
from jaxdiffattack.io import atomic_write_bytes
from jaxdiffattack.models import clip as clip_lib
from jaxdiffattack.models import convert_transformers
from jaxdiffattack.models import resnet as resnet_lib
from jaxdiffattack.models import vit as vit_lib
from jaxdiffattack.models import unet as unet_lib
from jaxdiffattack.models import vae as vae_lib
from jaxdiffattack.models import weights
from jaxdiffattack.toy import tokenizer as toy_tokenizer
from jaxdiffattack.toy import world

PIXEL_MEAN = (0.5, 0.5, 0.5)  # Every toy model sees (x / 255 - 0.5) / 0.5.
PIXEL_STD = (0.5, 0.5, 0.5)
TRAIN_SEQ_LEN = 16  # CLIP is causal, so the EOS state never sees padding.


class Net(NamedTuple):
  """A linen module with its params (a ResNet's: {"params", "batch_stats"})."""
  module: Any
  params: Any


class TrainState(NamedTuple):
  step: Any
  params: Any
  opt_state: Any
  ema: Any  # EMA of params (or the BatchNorm stats for the ResNet).


# ------------------------------------------------------------------- utils --


def to_pixels(images_uint8) -> jnp.ndarray:
  """uint8 NHWC -> float NCHW normalised with PIXEL_MEAN / PIXEL_STD."""
  x = jnp.asarray(images_uint8, jnp.float32) / 255.0
  x = (x - jnp.asarray(PIXEL_MEAN)) / jnp.asarray(PIXEL_STD)
  return jnp.transpose(x, (0, 3, 1, 2))


def _channels_last(x: jnp.ndarray) -> jnp.ndarray:
  """NCHW -> NHWC (the CLIP / ViT / ResNet modules take channels last)."""
  return jnp.transpose(x, (0, 2, 3, 1))


def _batch_rng(config, stage: str, step: int) -> np.random.Generator:
  return np.random.default_rng([config.seed, sum(map(ord, stage)), step])


def lr_schedule(cfg) -> optax.Schedule:
  """Linear warm-up, then cosine decay to `final_lr_fraction` of the peak (1.0: constant);
  with `cooldown_steps` > 0 the last steps decay linearly to zero (warmup-stable-decay).

  With final_lr_fraction == 1 the schedule before the cool-down does not depend on
  `num_steps`, so a checkpoint taken before step num_steps - cooldown_steps continues
  exactly as a run that had the larger num_steps from the start."""
  sched = optax.warmup_cosine_decay_schedule(
      0.0, cfg.lr, cfg.warmup_steps, max(cfg.num_steps, cfg.warmup_steps + 1),
      end_value=cfg.lr * cfg.get("final_lr_fraction", 0.05))
  cooldown = int(cfg.get("cooldown_steps", 0))
  if cooldown <= 0:
    return sched
  start = int(cfg.num_steps) - cooldown
  if start < cfg.warmup_steps:
    raise ValueError(f"cooldown_steps={cooldown} leaves no room after the "
                     f"{cfg.warmup_steps} warm-up steps of num_steps={cfg.num_steps}")
  peak = sched(start)
  return optax.join_schedules(
      [sched, lambda n: peak * (1.0 - n / cooldown)], [start])


def _optimizer(cfg) -> optax.GradientTransformation:
  sched = lr_schedule(cfg)
  return optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(sched, weight_decay=cfg.weight_decay))


def _apply_gradients(opt: optax.GradientTransformation, state: TrainState, grads):
  """One optimiser update of `state.params`: returns (new params, new optimiser state)."""
  updates, opt_state = opt.update(grads, state.opt_state, state.params)
  return optax.apply_updates(state.params, updates), opt_state


def frozen_optimizer(cfg, params, frozen: tuple[str, ...]) -> optax.GradientTransformation:
  """`_optimizer(cfg)` on the top-level entries of `params` not in `frozen`; those stay fixed."""
  labels = {k: ("freeze" if k in frozen else "train") for k in params}
  return optax.multi_transform({"train": _optimizer(cfg), "freeze": optax.set_to_zero()},
                               labels)


def _image_batches(config, stage: str, data: "ToyData", batch_size: int,
                   pair_fraction: float) -> Callable[[int], np.ndarray]:
  """make_batch(step) -> uint8 training images of `stage` (deterministic per step)."""
  def make_batch(step):
    rng = _batch_rng(config, stage, step)
    return data.train.images[_sample_batch(rng, data.train, batch_size, pair_fraction)]
  return make_batch


def _fit(name: str, state: TrainState, step_fn: Callable,
         make_batch: Callable[[int], Any], cfg, workdir: pathlib.Path,
         on_checkpoint: Callable[[TrainState], None] | None = None
         ) -> TrainState:
  """Runs ``step_fn`` until ``cfg.num_steps`` with checkpoints + ETA logs."""
  ckpt = workdir / "checkpoints" / f"{name}.msgpack"
  if ckpt.exists():
    state = flax.serialization.from_bytes(state, ckpt.read_bytes())
    logging.info("[%s] resumed from %s at step %d", name, ckpt, int(state.step))
  start, total = int(state.step), int(cfg.num_steps)
  if start >= total:
    logging.info("[%s] done (step %d >= %d), skipping", name, start, total)
    return state
  t0, t_log, losses = time.time(), time.time(), []
  for step in range(start, total):
    state, loss = step_fn(state, make_batch(step))
    losses.append(loss)
    last = step + 1 == total
    if (step + 1) % cfg.log_every == 0 or last:
      mean_loss = float(np.mean(jax.device_get(losses)))
      losses = []
      elapsed = time.time() - t0
      rate = (step + 1 - start) / max(elapsed, 1e-9)
      logging.info("[%s] step %d/%d loss %.4f  %.2f step/s  elapsed %.0fs  "
                   "ETA %.0fs", name, step + 1, total, mean_loss, rate,
                   elapsed, (total - step - 1) / rate)
      t_log = time.time()
    if (step + 1) % cfg.ckpt_every == 0 or last:
      atomic_write_bytes(ckpt, flax.serialization.to_bytes(state))
      if on_checkpoint is not None:
        on_checkpoint(state)
  del t_log
  return state


def lecun_reinit(params, key):
  """Re-draws every Dense / Conv kernel with LeCun-normal (std 1/sqrt(fan_in)).

  The ViT / CLIP initialisers (transformers') are tuned for wide models
  (e.g. ViT: std 0.02 / sqrt(fan_in)); at width 64 they leave attention
  uniform and the tiny ViTs never get past "colour only" (stuck at 20 %
  top-1 = chance over shapes). Standard fan-in scaling fixes that.
  """
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  for i, path in enumerate(sorted(flat)):
    leaf = flat[path]
    if path[-1] == "kernel" and leaf.ndim >= 2:
      fan_in = int(np.prod(leaf.shape[:-1]))
      flat[path] = (jax.random.normal(jax.random.fold_in(key, i), leaf.shape,
                                      leaf.dtype) / np.sqrt(fan_in))
  return flax.traverse_util.unflatten_dict(flat)


def init_net(module, seed: int, *inputs) -> Net:
  """`module` with variables initialised under jit (eager init dispatches
  every op separately and is slow on CPU); params only unless it has
  BatchNorm statistics."""
  variables = jax.jit(module.init)(jax.random.PRNGKey(seed), *inputs)
  params = variables if "batch_stats" in variables else variables["params"]
  return Net(module, params)


def _image_input():
  return jnp.zeros((1, world.IMAGE_SIZE, world.IMAGE_SIZE, 3), jnp.float32)


def _ema_update(ema, params, decay):
  return jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p,
                                ema, params)


# -------------------------------------------------------------------- data --
class ToyData(NamedTuple):
  train: world.Dataset
  heldout: world.Dataset


def make_data(config, workdir: pathlib.Path) -> ToyData:
  """Generates (or loads the cached) train / held-out datasets."""
  d = config.data
  path = workdir / "data.npz"
  if path.exists():
    z = np.load(path)
    ds = {k: world.Dataset(z[f"{k}_images"], z[f"{k}_labels"],
                           z[f"{k}_templates"]) for k in ("train", "heldout")}
    if len(ds["train"]) == d.num_train + d.num_train_pairs:
      logging.info("[data] loaded %s", path)
      return ToyData(ds["train"], ds["heldout"])
  t0 = time.time()
  train = world.make_dataset("train", d.num_train, d.num_train_pairs, config.seed)
  heldout = world.make_dataset("heldout", d.num_heldout, d.num_heldout_pairs,
                               config.seed)
  logging.info("[data] rendered %d train + %d held-out scenes in %.0fs",
               len(train), len(heldout), time.time() - t0)
  import io  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  np.savez(buf, **{f"{k}_{f}": getattr(v, a)
                   for k, v in (("train", train), ("heldout", heldout))
                   for f, a in (("images", "images"), ("labels", "labels"),
                                ("templates", "template_ids"))})
  atomic_write_bytes(path, buf.getvalue())
  return ToyData(train, heldout)


def _augment(key, x, flip: bool = True):
  """Light augmentation of a normalised NCHW batch (flip, shift, noise,
  blur, brightness) so classifiers tolerate imperfect generated images
  (`flip=False`: no left-right flip, for captions that state "left of")."""
  k = jax.random.split(key, 6)
  n = x.shape[0]
  if flip:
    do_flip = jax.random.bernoulli(k[0], 0.5, (n, 1, 1, 1))
    x = jnp.where(do_flip, x[..., ::-1], x)
  shifts = jax.random.randint(k[1], (2,), -2, 3)
  x = jnp.roll(x, shifts, axis=(2, 3))
  blur = (x + jnp.roll(x, 1, 2) + jnp.roll(x, -1, 2) + jnp.roll(x, 1, 3)
          + jnp.roll(x, -1, 3)) / 5
  do_blur = jax.random.bernoulli(k[2], 0.25, (n, 1, 1, 1))
  x = jnp.where(do_blur, blur, x)
  x = x * jax.random.uniform(k[3], (n, 1, 1, 1), minval=0.85, maxval=1.1)
  x = x + jax.random.uniform(k[4], (n, 1, 1, 1), minval=-0.1, maxval=0.1)
  sigma = jax.random.uniform(k[5], (n, 1, 1, 1), maxval=0.12)
  x = x + sigma * jax.random.normal(jax.random.fold_in(key, 7), x.shape)
  return x


def _sample_batch(rng: np.random.Generator, data: world.Dataset, batch: int,
                  pair_fraction: float) -> np.ndarray:
  """Indices of a batch with about ``pair_fraction`` two-object scenes."""
  is_pair = data.labels[:, 1] >= 0
  singles, pairs = np.flatnonzero(~is_pair), np.flatnonzero(is_pair)
  n_pairs = int(round(batch * pair_fraction)) if len(pairs) else 0
  return np.concatenate([rng.choice(singles, batch - n_pairs),
                         rng.choice(pairs, n_pairs)]).astype(np.int64)


def _soft_targets(labels: np.ndarray) -> np.ndarray:
  """(N, 2) labels -> (N, C) one-hot, 0.5 / 0.5 for two-object scenes."""
  t = np.zeros((len(labels), world.NUM_CLASSES), np.float32)
  single = labels[:, 1] < 0
  t[single, labels[single, 0]] = 1.0
  pair = ~single
  t[pair, labels[pair, 0]] += 0.5
  t[pair, labels[pair, 1]] += 0.5
  return t


def _random_captions(rng, labels: np.ndarray) -> list[str]:
  out = []
  for a, b in labels:
    if b < 0:
      t = world.SINGLE_TEMPLATES[rng.integers(len(world.SINGLE_TEMPLATES))]
      out.append(world.caption([a], t))
    else:
      t = world.PAIR_TEMPLATES[rng.integers(len(world.PAIR_TEMPLATES))]
      out.append(world.caption([a, b] if rng.random() < 0.5 else [b, a], t))
  return out


# --------------------------------------------------------------------- clip --
def clip_model_config(config, vocab_size: int) -> clip_lib.CLIPConfig:
  """The toy CLIP's config (the tokenizer's last id is its EOS and padding)."""
  c = config.clip
  return clip_lib.CLIPConfig(
      text=clip_lib.CLIPTextConfig(
          vocab_size=vocab_size, hidden_size=c.text_width,
          intermediate_size=c.text_width * c.mlp_ratio,
          num_hidden_layers=c.text_layers, num_attention_heads=c.text_heads,
          max_position_embeddings=toy_tokenizer.MODEL_MAX_LENGTH,
          eos_token_id=vocab_size - 1, projection_dim=c.projection_dim),
      vision=clip_lib.CLIPVisionConfig(
          hidden_size=c.vision_width,
          intermediate_size=c.vision_width * c.mlp_ratio,
          num_hidden_layers=c.vision_layers, num_attention_heads=c.vision_heads,
          image_size=world.IMAGE_SIZE, patch_size=c.patch_size,
          projection_dim=c.projection_dim),
      projection_dim=c.projection_dim)


def _tokenize(tok, captions, length=TRAIN_SEQ_LEN) -> np.ndarray:
  return np.asarray(tok(captions, padding="max_length", max_length=length,
                        truncation=True).input_ids, np.int32)


def clip_train_step(config, stage: str, opt, loss_fn, flip: bool = True):
  """The jitted step of a contrastive CLIP stage: step_fn(state, (ids, images, positives))
  -> (state, loss), with `loss_fn(params, ids, pixels, positives)` -> scalar on augmented
  pixels (`_augment(..., flip)`); the logit scale is kept in [0, log 100]."""
  base_key = jax.random.PRNGKey(config.seed + (0 if stage == "clip" else 10))

  @jax.jit
  def step_fn(state, batch):
    ids, images, positives = batch
    key = jax.random.fold_in(base_key, state.step)
    pixels = _augment(key, to_pixels(images), flip=flip)
    loss, grads = jax.value_and_grad(loss_fn)(state.params, ids, pixels, positives)
    params, opt_state = _apply_gradients(opt, state, grads)
    params["logit_scale"] = jnp.clip(params["logit_scale"], 0, np.log(100.0))
    return TrainState(state.step + 1, params, opt_state, None), loss

  return step_fn


def _clip_step_and_batches(config, c, model: Net, tok, data: ToyData, opt,
                           stage: str):
  """The contrastive train step and the batch function of a CLIP stage."""

  def loss_fn(params, ids, pixels, keys):
    logits, _ = model.module.apply({"params": params}, ids, _channels_last(pixels))
    pos = (keys[:, None] == keys[None, :]).astype(jnp.float32)
    tgt = pos / pos.sum(1, keepdims=True)
    li = -jnp.mean(jnp.sum(tgt * jax.nn.log_softmax(logits, 1), 1))
    lt = -jnp.mean(jnp.sum(tgt * jax.nn.log_softmax(logits.T, 1), 1))
    return (li + lt) / 2

  step_fn = clip_train_step(config, stage, opt, loss_fn)

  def make_batch(step):
    rng = _batch_rng(config, stage, step)
    idx = _sample_batch(rng, data.train, c.batch_size, c.pair_fraction)
    labels = data.train.labels[idx]
    lo, hi = np.sort(labels, 1)[:, 0], np.sort(labels, 1)[:, 1]
    keys = np.where(labels[:, 1] < 0, labels[:, 0], 100 + lo * 32 + hi)
    ids = _tokenize(tok, _random_captions(rng, labels))
    return ids, data.train.images[idx], keys.astype(np.int32)

  return step_fn, make_batch


def train_clip(config, workdir, data: ToyData, tok):
  """Contrastive training; positives = same (unordered) class set."""
  c = config.clip
  module = clip_lib.CLIPModel(clip_model_config(config, len(tok)))
  model = init_net(module, config.seed,
                   jnp.zeros((1, toy_tokenizer.MODEL_MAX_LENGTH), jnp.int32),
                   _image_input())
  params = lecun_reinit(model.params, jax.random.PRNGKey(config.seed))
  opt = _optimizer(c)
  state = TrainState(jnp.array(0), params, opt.init(params), None)

  step_fn, make_batch = _clip_step_and_batches(config, c, model, tok, data,
                                               opt, "clip")
  state = _fit("clip", state, step_fn, make_batch, c, workdir)
  model = model._replace(params=state.params)
  acc = clip_zero_shot_accuracy(model, tok, data.heldout)
  logging.info("[clip] zero-shot top-1 on held-out singles: %.4f", acc)
  return model, acc


def tune_clip_vision(config, workdir, data: ToyData, tok, model: Net):
  """Continues CLIP's contrastive training with the text tower frozen.

  The text tower is SD's text encoder, fixed once the UNet trains on it; the
  vision tower (and both projections) may keep learning afterwards, which is
  what lifts CLIP's zero-shot accuracy (the vision side learns shapes last).
  """
  c = config.clip_tune
  opt = frozen_optimizer(c, model.params, ("text_model",))
  state = TrainState(jnp.array(0), model.params, opt.init(model.params), None)
  step_fn, make_batch = _clip_step_and_batches(config, c, model, tok, data,
                                               opt, "clip_tune")
  state = _fit("clip_tune", state, step_fn, make_batch, c, workdir)
  model = model._replace(params=state.params)
  acc = clip_zero_shot_accuracy(model, tok, data.heldout)
  logging.info("[clip_tune] zero-shot top-1 on held-out singles: %.4f", acc)
  return model, acc


def clip_zero_shot_accuracy(model: Net, tok, data: world.Dataset,
                            batch: int = 500) -> float:
  single = data.labels[:, 1] < 0
  images, labels = data.images[single], data.labels[single, 0]
  prompts = [world.caption([i]) for i in range(world.NUM_CLASSES)]
  ids = np.asarray(tok(prompts, padding="max_length",
                       max_length=toy_tokenizer.MODEL_MAX_LENGTH).input_ids)
  apply = lambda method: jax.jit(lambda p, x: model.module.apply(
      {"params": p}, x, method=method))
  text = apply("get_text_features")(model.params, ids)
  text = text / jnp.linalg.norm(text, axis=-1, keepdims=True)
  image_fn = apply("get_image_features")
  preds = []
  for i in range(0, len(images), batch):
    img = image_fn(model.params, _channels_last(to_pixels(images[i:i + batch])))
    preds.append(np.asarray(jnp.argmax(img @ text.T, -1)))
  return float(np.mean(np.concatenate(preds) == labels))


# -------------------------------------------------------------- classifiers --
def vit_model(config) -> Net:
  c = config.vit
  cfg = vit_lib.ViTConfig(
      image_size=world.IMAGE_SIZE, patch_size=c.patch_size,
      hidden_size=c.width, num_hidden_layers=c.layers,
      num_attention_heads=c.heads, intermediate_size=c.width * c.mlp_ratio,
      num_labels=world.NUM_CLASSES)
  return init_net(vit_lib.ViTForImageClassification(cfg), config.seed,
                  _image_input())


def resnet_model(config) -> Net:
  c = config.resnet
  cfg = resnet_lib.ResNetConfig(
      embedding_size=c.embedding_size, hidden_sizes=tuple(c.hidden_sizes),
      depths=tuple(c.depths), layer_type="basic",
      num_labels=world.NUM_CLASSES)
  return init_net(resnet_lib.ResNetForImageClassification(cfg), config.seed,
                  _image_input())


def train_classifier(name: str, config, workdir, data: ToyData):
  """Softmax classifier on singles (one-hot) and pairs (0.5 / 0.5)."""
  c = config[name]
  model = vit_model(config) if name == "vit" else resnet_model(config)

  def make_batch(step):
    rng = _batch_rng(config, name, step)
    idx = _sample_batch(rng, data.train, c.batch_size, c.pair_fraction)
    return data.train.images[idx], _soft_targets(data.train.labels[idx])

  model = fit_classifier(name, config, c, model, make_batch, workdir)
  acc = classifier_accuracy(model, data.heldout)
  logging.info("[%s] top-1 on held-out singles: %.4f", name, acc)
  return model, acc


def fit_classifier(name: str, config, c, model: Net, make_batch: Callable[[int], Any], workdir,
                   fit: Callable[..., TrainState] = _fit, *, seed: int | None = None,
                   extra_augment: Callable[[Any, jnp.ndarray], jnp.ndarray] | None = None
                   ) -> Net:
  """Trains the classifier `model` under stage `name`: soft-target cross-entropy on
  make_batch(step) = (uint8 images, [B, classes] targets), augmented pixels
  (`c.augment`, default on), BatchNorm statistics (a ResNet's) carried in `TrainState.ema`,
  kernels LeCun-re-initialised (`c.lecun_reinit`, default: when there is no BatchNorm; the
  ResNet's He-style conv initialisers are fine). `fit` runs the steps (`_fit`'s signature
  without on_checkpoint). `seed` (default config.seed) keys the re-initialisation and the
  augmentation; `extra_augment(key, pixels [B, 3, H, W]) -> pixels`, when given, runs after
  the light augmentation with key fold_in(step key, 101) (world 2's noise-trained surrogate).
  Returns the trained Net."""
  seed = config.seed if seed is None else seed
  has_bn = "batch_stats" in model.params
  params = model.params["params"] if has_bn else model.params
  if c.get("lecun_reinit", not has_bn):
    params = lecun_reinit(params, jax.random.PRNGKey(seed))
  bn = model.params["batch_stats"] if has_bn else None
  opt = _optimizer(c)
  state = TrainState(jnp.array(0), params, opt.init(params), bn)

  def loss_fn(params, bn, pixels, targets):
    pixels = _channels_last(pixels)
    if has_bn:
      logits, new = model.module.apply({"params": params, "batch_stats": bn},
                                       pixels, train=True,
                                       mutable=["batch_stats"])
      new_bn = new["batch_stats"]
    else:
      logits, new_bn = model.module.apply({"params": params}, pixels), None
    loss = -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits), -1))
    return loss, new_bn

  @jax.jit
  def step_fn(state, batch):
    images, targets = batch
    key = jax.random.fold_in(jax.random.PRNGKey(seed + 1), state.step)
    pixels = to_pixels(images)
    if c.get("augment", True):
      pixels = _augment(key, pixels)
    if extra_augment is not None:
      pixels = extra_augment(jax.random.fold_in(key, 101), pixels)
    (loss, new_bn), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.ema, pixels, targets)
    params, opt_state = _apply_gradients(opt, state, grads)
    return TrainState(state.step + 1, params, opt_state, new_bn), loss

  state = fit(name, state, step_fn, make_batch, c, workdir)
  return model._replace(params={"params": state.params, "batch_stats": state.ema}
                        if has_bn else state.params)


def classifier_accuracy(model: Net, data: world.Dataset, batch: int = 500) -> float:
  single = data.labels[:, 1] < 0
  images, labels = data.images[single], data.labels[single, 0]
  has_bn = "batch_stats" in model.params
  fn = jax.jit(lambda p, x: model.module.apply(
      p if has_bn else {"params": p}, _channels_last(x)))
  preds = [np.asarray(jnp.argmax(fn(model.params, to_pixels(
      images[i:i + batch])), -1)) for i in range(0, len(images), batch)]
  return float(np.mean(np.concatenate(preds) == labels))


# ---------------------------------------------------------------------- vae --
def vae_module(config, scaling_factor: float = 1.0):
  c = config.vae
  n = len(c.block_out_channels)
  return vae_lib.AutoencoderKL(vae_lib.VAEConfig(
      in_channels=3, out_channels=3,
      down_block_types=("DownEncoderBlock2D",) * n,
      up_block_types=("UpDecoderBlock2D",) * n,
      block_out_channels=tuple(c.block_out_channels),
      layers_per_block=c.layers_per_block,
      latent_channels=c.latent_channels, norm_num_groups=c.norm_num_groups,
      sample_size=world.IMAGE_SIZE, scaling_factor=scaling_factor))


def train_vae(config, workdir, data: ToyData):
  """Reconstruction (MSE + L1) with a small KL term; returns (module,
  params, scaling_factor = 1 / std of the latents)."""
  c = config.vae
  vae = vae_module(config)
  params = jax.jit(vae.init_weights)(jax.random.PRNGKey(config.seed + 2))
  opt = _optimizer(c)
  state = TrainState(jnp.array(0), params, opt.init(params), None)

  step_fn = vae_train_step(config, opt, vae_loss_fn(vae, c.kl_weight), seed_offset=3,
                           flip=True)
  make_batch = _image_batches(config, "vae", data, c.batch_size, 0.3)
  state = _fit("vae", state, step_fn, make_batch, c, workdir)
  mean, std = encode_latents(vae, state.params, data.train.images[:2000])
  z = mean + std * np.random.default_rng(0).normal(size=mean.shape)
  scaling = float(1.0 / np.std(z))
  rec = vae.apply({"params": state.params}, jnp.asarray(mean[:500]),
                  method=vae.decode)
  mse = float(jnp.mean((rec - to_pixels(data.train.images[:500])) ** 2))
  logging.info("[vae] latent std %.4f -> scaling_factor %.5f; recon MSE "
               "(normalised pixels) %.5f", 1 / scaling, scaling, mse)
  return vae, state.params, scaling, mse


def tune_vae_decoder(config, workdir, data: ToyData, vae, params):
  """Fine-tunes the VAE decoder with the encoder frozen (as SD's ft-MSE VAE):
  the latent space the UNet was trained on is unchanged, reconstructions get
  sharper. Returns (params, reconstruction MSE)."""
  c = config.vae_tune
  opt = frozen_optimizer(c, params, VAE_ENCODER)
  state = TrainState(jnp.array(0), params, opt.init(params), None)
  step_fn = vae_train_step(config, opt, vae_decoder_loss_fn(vae, c.l1_weight), seed_offset=6,
                           flip=False)
  make_batch = _image_batches(config, "vae_tune", data, c.batch_size, 0.3)
  state = _fit("vae_tune", state, step_fn, make_batch, c, workdir)
  mse = vae_recon_mse(vae, state.params, data.heldout.images[:500])
  logging.info("[vae_tune] held-out recon MSE (normalised pixels) %.5f", mse)
  return state.params, mse


VAE_ENCODER = ("encoder", "quant_conv")  # The VAE's top-level params that make the latents.


def vae_loss_fn(vae, kl_weight: float):
  """loss_fn(params, x, key) of the VAE: MSE + 0.1 L1 of the reconstruction of a posterior
  sample, + kl_weight x the KL per pixel value."""
  def loss_fn(params, x, key):
    post = vae.apply({"params": params}, x, method=vae.encode)
    z = post.sample(key)
    rec = vae.apply({"params": params}, z, method=vae.decode)
    err = rec - x
    kl = jnp.mean(post.kl()) / x[0].size
    return (jnp.mean(err ** 2) + 0.1 * jnp.mean(jnp.abs(err))
            + kl_weight * kl)
  return loss_fn


def vae_decoder_loss_fn(vae, l1_weight: float):
  """loss_fn(params, x, key) of the decoder tuning: MSE + l1_weight L1 (no KL)."""
  def loss_fn(params, x, key):
    post = vae.apply({"params": params}, x, method=vae.encode)
    rec = vae.apply({"params": params}, post.sample(key),
                    method=vae.decode)
    err = rec - x
    return jnp.mean(err ** 2) + l1_weight * jnp.mean(jnp.abs(err))
  return loss_fn


def vae_train_step(config, opt, loss_fn, *, seed_offset: int, flip: bool):
  """The jitted step of a VAE stage: step_fn(state, uint8 images) -> (state, loss), with
  `loss_fn(params, x, key)` on the normalised pixels (left-right flipped at random with
  `flip`); key = fold_in(PRNGKey(config.seed + seed_offset), step)."""
  @jax.jit
  def step_fn(state, images):
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed + seed_offset), state.step)
    x = to_pixels(images)
    if flip:
      do_flip = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1))
      x = jnp.where(do_flip, x[..., ::-1], x)
    loss, grads = jax.value_and_grad(loss_fn)(state.params, x, key)
    params, opt_state = _apply_gradients(opt, state, grads)
    return TrainState(state.step + 1, params, opt_state, None), loss
  return step_fn


def vae_recon_mse(vae, params, images) -> float:
  x = to_pixels(images)
  fn = jax.jit(lambda p, x: vae.apply(
      {"params": p}, vae.apply({"params": p}, x, method=vae.encode
                               ).mean, method=vae.decode))
  return float(jnp.mean((fn(params, x) - x) ** 2))


def encode_latents(vae, params, images, batch: int = 500):
  """Posterior mean and std, NCHW, as float32 numpy."""
  def enc_fn(p, x):
    post = vae.apply({"params": p}, x, method=vae.encode)
    return post.mean, post.std

  enc = jax.jit(enc_fn)
  means, stds = [], []
  for i in range(0, len(images), batch):
    mean, std = enc(params, to_pixels(images[i:i + batch]))
    means.append(np.asarray(mean))
    stds.append(np.asarray(std))
  return np.concatenate(means), np.concatenate(stds)


# --------------------------------------------------------------------- unet --
def unet_module(config):
  """The toy UNet; `flax_numerics`: the arithmetic of diffusers' Flax UNet (tanh GELU, transformer
  GroupNorm eps 1e-5) that the shipped toy UNet was trained with (see models/unet.py)."""
  c = config.unet
  n = len(c.block_out_channels)
  return unet_lib.UNet2DConditionModel(unet_lib.UNetConfig(
      sample_size=world.IMAGE_SIZE // 2 ** (len(config.vae.block_out_channels) - 1),
      in_channels=config.vae.latent_channels,
      out_channels=config.vae.latent_channels,
      down_block_types=("CrossAttnDownBlock2D",) * n,
      up_block_types=("CrossAttnUpBlock2D",) * n,
      block_out_channels=tuple(c.block_out_channels),
      layers_per_block=c.layers_per_block,
      attention_head_dim=c.attention_heads,
      cross_attention_dim=config.clip.text_width, flax_numerics=True))


def sd_betas(config) -> np.ndarray:
  s = config.scheduler
  return np.linspace(s.beta_start ** 0.5, s.beta_end ** 0.5,
                     s.num_train_timesteps, dtype=np.float64) ** 2


class CaptionBank(NamedTuple):
  """Every caption's frozen text-encoder states, as SD feeds the UNet."""
  states: np.ndarray  # (num_captions, 77, width) float32.
  single: np.ndarray  # (num_classes, num_single_templates) -> caption row.
  pair: np.ndarray  # (C, C, num_pair_templates) -> row (-1 on the diagonal).
  empty: int  # Row of "" (the unconditional prompt).


def encode_prompts(text_model, text_params, tok, prompts,
                   batch: int = 256) -> np.ndarray:
  fn = jax.jit(lambda p, i: text_model.apply({"params": p}, i).last_hidden_state)
  out = []
  for i in range(0, len(prompts), batch):
    ids = np.asarray(tok(prompts[i:i + batch], padding="max_length",
                         max_length=toy_tokenizer.MODEL_MAX_LENGTH,
                         truncation=True).input_ids)
    if len(ids) < batch and len(prompts) > batch:  # One compiled shape.
      ids = np.concatenate([ids, np.repeat(ids[-1:], batch - len(ids), 0)])
    out.append(np.asarray(fn(text_params, ids))[:len(prompts) - i])
  return np.concatenate(out).astype(np.float32)


def build_caption_bank(text_model, text_params, tok) -> CaptionBank:
  prompts, c = [], world.NUM_CLASSES
  single = np.zeros((c, len(world.SINGLE_TEMPLATES)), np.int32)
  pair = -np.ones((c, c, len(world.PAIR_TEMPLATES)), np.int32)
  for a in range(c):
    for t, tpl in enumerate(world.SINGLE_TEMPLATES):
      single[a, t] = len(prompts)
      prompts.append(world.caption([a], tpl))
    for b in range(c):
      if a != b:
        for t, tpl in enumerate(world.PAIR_TEMPLATES):
          pair[a, b, t] = len(prompts)
          prompts.append(world.caption([a, b], tpl))
  prompts.append("")
  states = encode_prompts(text_model, text_params, tok, prompts)
  return CaptionBank(states, single, pair, len(prompts) - 1)


def train_unet(config, workdir, data: ToyData, bank: CaptionBank, vae, vae_params,
               scaling: float, on_checkpoint=None):
  """Epsilon-prediction DDPM training on VAE latents with caption dropout."""
  unet = unet_module(config)

  def loss_fn(params, z0, zt, t, noise, cond):
    del z0
    pred = unet.apply({"params": params}, zt, t, cond)
    return jnp.mean((pred - noise) ** 2)

  state = fit_unet("unet", config, config.unet, workdir, data, bank, vae,
                   vae_params, scaling, unet, loss_fn, on_checkpoint)
  return unet, state.ema


def unet_train_step(config, c, opt, loss_fn, scaling: float, condition):
  """The jitted step of a UNet stage: step_fn(state, (mu, sd, rows), cond_params=None)
  -> (state, loss).

  The text states `cond` are `condition[rows]` when `condition` is an array (a bank of
  encoded captions [K, 77, width]; the toy), else `condition(cond_params, rows)` (world 2:
  the frozen text encoder's states of the token ids `rows`, its params `cond_params`).
  z0 = posterior sample of the VAE latents (computed in float32) x `scaling`, t ~ U{0..T-1},
  zt = sqrt(abar_t) z0 + sqrt(1 - abar_t) noise; `loss_fn(params, z0, zt, t, noise, cond)`
  -> scalar. The keys depend only on config.seed and the step, so every UNet stage sees the
  same t and noise; EMA of the params with a warm-up of the decay."""
  alphas_cumprod = jnp.asarray(np.cumprod(1 - sd_betas(config)), jnp.float32)
  if not callable(condition):
    bank_states = condition
    condition = lambda _, rows: bank_states[rows]

  @jax.jit
  def step_fn(state, batch, cond_params=None):
    mu, sd, rows = batch
    cond = condition(cond_params, rows)
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 5), state.step)
    k1, k2, k3 = jax.random.split(key, 3)
    mu, sd = mu.astype(jnp.float32), sd.astype(jnp.float32)
    z0 = (mu + sd * jax.random.normal(k1, mu.shape)) * scaling
    t = jax.random.randint(k2, (mu.shape[0],), 0,
                           config.scheduler.num_train_timesteps)
    noise = jax.random.normal(k3, z0.shape)
    a = alphas_cumprod[t][:, None, None, None]
    zt = jnp.sqrt(a) * z0 + jnp.sqrt(1 - a) * noise
    loss, grads = jax.value_and_grad(loss_fn)(state.params, z0, zt, t, noise, cond)
    params, opt_state = _apply_gradients(opt, state, grads)
    decay = jnp.minimum(c.ema_decay, (1.0 + state.step) / (10.0 + state.step))
    return TrainState(state.step + 1, params, opt_state,
                      _ema_update(state.ema, params, decay)), loss

  return step_fn


def unet_batches(config, c, data: ToyData, bank: CaptionBank, mean, std):
  """make_batch(step) -> (latent means, stds, caption-bank rows) of a UNet stage.

  Drawn from the "unet" stream whatever the stage, so every UNet stage trains on the same
  scenes and captions (caption dropout to "" with probability c.caption_dropout)."""
  def make_batch(step):
    rng = _batch_rng(config, "unet", step)
    idx = _sample_batch(rng, data.train, c.batch_size, c.pair_fraction)
    rows = []
    for a, b in data.train.labels[idx]:
      if rng.random() < c.caption_dropout:
        rows.append(bank.empty)
      elif b < 0:
        rows.append(bank.single[a, rng.integers(bank.single.shape[1])])
      else:
        if rng.random() < 0.5:
          a, b = b, a
        rows.append(bank.pair[a, b, rng.integers(bank.pair.shape[2])])
    return mean[idx], std[idx], np.asarray(rows, np.int32)
  return make_batch


def unet_init_state(name: str, config, c, unet) -> tuple[TrainState, Any]:
  """(TrainState with params = EMA = unet's init from config.seed, its optimiser) of a UNet
  stage."""
  params = jax.jit(unet.init_weights)(jax.random.PRNGKey(config.seed + 4))
  logging.info("[%s] %d parameters", name, sum(
      x.size for x in jax.tree_util.tree_leaves(params)))
  opt = _optimizer(c)
  return TrainState(jnp.array(0), params, opt.init(params), params), opt


def fit_unet(name: str, config, c, workdir, data: ToyData, bank: CaptionBank, vae,
             vae_params, scaling: float, unet, loss_fn, on_checkpoint=None) -> TrainState:
  """Trains `unet` (initialised from config.seed) with `loss_fn` (see unet_train_step)
  under stage `name`'s checkpoints; returns the final TrainState (EMA in `.ema`)."""
  state, opt = unet_init_state(name, config, c, unet)
  mean, std = encode_latents(vae, vae_params, data.train.images)
  step_fn = unet_train_step(config, c, opt, loss_fn, scaling, jnp.asarray(bank.states))
  make_batch = unet_batches(config, c, data, bank, mean, std)
  return _fit(name, state, step_fn, make_batch, c, workdir, on_checkpoint)


# ------------------------------------------------------------------- export --
def scheduler_config(config) -> dict:
  s = config.scheduler
  return {
      "_class_name": "DDIMScheduler", "_diffusers_version": "0.39.0",
      "beta_start": s.beta_start, "beta_end": s.beta_end,
      "beta_schedule": "scaled_linear", "num_train_timesteps":
          s.num_train_timesteps, "clip_sample": False, "set_alpha_to_one": False,
      "steps_offset": 1, "prediction_type": "epsilon",
      "timestep_spacing": "leading", "trained_betas": None,
      "skip_prk_steps": True,
  }


MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.39.0",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


class Trained(NamedTuple):
  tok_dir: pathlib.Path
  clip: Net
  vit: Net | None
  resnet: Net | None
  vae: Any
  vae_params: Any
  scaling: float
  unet: Any
  unet_params: Any


def export(config, trained: Trained, out_dir: pathlib.Path,
           metrics: dict | None = None, *, image_size: int | None = None,
           labels: tuple[str, ...] | None = None,
           vae_fn: Callable[..., Any] | None = None,
           text_encoder_params: Any | None = None) -> None:
  """Writes sd/, clip/, vit/, resnet/ into out_dir (each replaced atomically).

  `image_size`, `labels` and `vae_fn(config, scaling)` default to the toy world's
  (world.IMAGE_SIZE, world.LABELS, vae_module); world 2 passes its own. sd/text_encoder is
  `text_encoder_params` ({"text_model": ...}, shaped as the CLIP's text tower: one trained
  with the UNet) when given, else the CLIP's text tower."""
  from transformers import (CLIPImageProcessor, ConvNextImageProcessor,  # pylint: disable=g-import-not-at-top
                            ViTImageProcessor)
  out_dir.mkdir(parents=True, exist_ok=True)
  for stale in out_dir.glob(".export_*"):   # an export cut by a kill: nothing reads it
    shutil.rmtree(stale, ignore_errors=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=out_dir, prefix=".export_"))
  norm = dict(image_mean=list(PIXEL_MEAN), image_std=list(PIXEL_STD),
              do_normalize=True, do_rescale=True, rescale_factor=1 / 255)
  size = image_size or world.IMAGE_SIZE
  labels = labels or world.LABELS
  vae_fn = vae_fn or vae_module
  # CLIP.
  convert_transformers.save(tmp / "clip", "clip", trained.clip.module.config,
                            trained.clip.params)
  for f in trained.tok_dir.iterdir():
    shutil.copy(f, tmp / "clip" / f.name)
  CLIPImageProcessor(size={"shortest_edge": size},
                     crop_size={"height": size, "width": size},
                     do_convert_rgb=True, **norm).save_pretrained(tmp / "clip")
  # Classifiers (absent from the intermediate exports during UNet training).
  if trained.vit is not None:
    convert_transformers.save(tmp / "vit", "vit", trained.vit.module.config,
                              trained.vit.params, labels)
    ViTImageProcessor(size={"height": size, "width": size}, **norm
                      ).save_pretrained(tmp / "vit")
  if trained.resnet is not None:
    convert_transformers.save(tmp / "resnet", "resnet",
                              trained.resnet.module.config,
                              trained.resnet.params, labels)
    ConvNextImageProcessor(size={"shortest_edge": size}, crop_pct=1.0, **norm
                           ).save_pretrained(tmp / "resnet")
  # Stable Diffusion.
  sd = tmp / "sd"
  sd.mkdir()
  (sd / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2))
  shutil.copytree(trained.tok_dir, sd / "tokenizer")
  CLIPImageProcessor(size={"shortest_edge": size},
                     crop_size={"height": size, "width": size},
                     do_convert_rgb=True, **norm
                     ).save_pretrained(sd / "feature_extractor")
  if text_encoder_params is None:
    text_encoder_params = {"text_model": trained.clip.params["text_model"]}
  convert_transformers.save(sd / "text_encoder", "clip_text",
                            trained.clip.module.config.text, text_encoder_params)
  weights.save_diffusers_model(sd / "unet", trained.unet, trained.unet_params)
  weights.save_diffusers_model(sd / "vae", vae_fn(config, trained.scaling),
                               trained.vae_params)
  (sd / "scheduler").mkdir()
  (sd / "scheduler" / "scheduler_config.json").write_text(
      json.dumps(scheduler_config(config), indent=2))
  if metrics is not None:
    (tmp / "train_metrics.json").write_text(json.dumps(metrics, indent=2))
  for name in ("sd", "clip", "vit", "resnet", "train_metrics.json"):
    if not (tmp / name).exists():
      continue
    target = out_dir / name
    if target.is_dir():
      shutil.rmtree(target)
    os.replace(tmp / name, target)
  shutil.rmtree(tmp)
  logging.info("[export] wrote %s", out_dir)


def export_dir(config, workdir: pathlib.Path) -> pathlib.Path:
  if config.export.to_assets:
    return toy.ASSETS_DIR
  return pathlib.Path(config.export.dir) if config.export.dir else (
      workdir / "export")


# ---------------------------------------------------------------------- run --
def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Trains every part (resuming where possible) and exports; returns metrics."""
  from transformers import CLIPTokenizer  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t_start = time.time()
  timings = {}

  def timed(name, fn, *args, **kw):
    t0 = time.time()
    out = fn(*args, **kw)
    timings[name] = round(time.time() - t0, 1)
    return out

  data = timed("data", make_data, config, workdir)
  tok_dir = workdir / "tokenizer"
  vocab = toy_tokenizer.build_tokenizer_files(tok_dir)
  logging.info("[tokenizer] vocab size %d -> %s", vocab, tok_dir)
  tok = CLIPTokenizer.from_pretrained(tok_dir)
  clip, clip_acc = timed("clip", train_clip, config, workdir, data, tok)
  vae, vae_params, scaling, vae_mse = timed("vae", train_vae, config, workdir,
                                            data)
  text_model = clip_lib.CLIPTextModel(clip.module.config.text)
  bank = build_caption_bank(text_model, {"text_model": clip.params["text_model"]},
                            tok)
  metrics = {"clip_zero_shot_top1": clip_acc, "vae_recon_mse": vae_mse,
             "vae_scaling_factor": scaling, "vocab_size": vocab}
  out = export_dir(config, workdir)

  def on_checkpoint(state):  # Intermediate SD exports, to evaluate early.
    if config.unet.export_every and (int(state.step) % config.unet.export_every
                                     == 0):
      export(config, Trained(tok_dir, clip, None, None, vae, vae_params,
                             scaling, unet_module(config), state.ema), out,
             dict(metrics, unet_step=int(state.step)))

  unet, unet_params = timed("unet", train_unet, config, workdir, data, bank,
                            vae, vae_params, scaling, on_checkpoint)
  vae_params, vae_mse = timed("vae_tune", tune_vae_decoder, config, workdir,
                              data, vae, vae_params)
  metrics.update(vae_recon_mse_after_decoder_tune=vae_mse)
  vit, vit_acc = timed("vit", train_classifier, "vit", config, workdir, data)
  resnet, resnet_acc = timed("resnet", train_classifier, "resnet", config,
                             workdir, data)
  clip, clip_acc = timed("clip_tune", tune_clip_vision, config, workdir, data,
                         tok, clip)
  metrics.update(vit_top1=vit_acc, resnet_top1=resnet_acc,
                 clip_zero_shot_top1=clip_acc,
                 clip_zero_shot_top1_before_tune=metrics["clip_zero_shot_top1"],
                 steps={k: int(config[k].num_steps)
                        for k in ("clip", "clip_tune", "vit", "resnet", "vae",
                                  "vae_tune", "unet")},
                 timings_s=timings, total_s=round(time.time() - t_start, 1))
  export(config, Trained(tok_dir, clip, vit, resnet, vae, vae_params, scaling,
                         unet, unet_params), out, metrics)
  logging.info("[run] done in %.0fs: %s", time.time() - t_start, metrics)
  return metrics
