"""Config of the toy-world training (jaxdiffattack.toy.train.run).

Full run (about 3 h on 2 CPU cores, ~5 h on one; writes DIR/export/; see
docs/toy_model_card.md for the budget):

  python launch/train_toy.py --config configs/train_toy.py --workdir DIR

Regenerate the shipped weights in jaxdiffattack/toy/assets:

  python launch/train_toy.py --config configs/train_toy.py \
      --config.export.to_assets=True --workdir DIR

Smoke test (every part a few steps on a tiny dataset, well under a minute):

  python launch/train_toy.py --config configs/train_toy.py:smoke --workdir DIR

The learned-variance toy generator (jaxdiffattack.toy.train_lv: only its UNet, on the shipped
VAE and text encoder, same budget as the fixed-variance UNet; writes DIR/export/sd_lv/, or
jaxdiffattack/toy/assets/sd_lv/ with --config.export.to_assets=True; add ",smoke" for 3 steps):

  python launch/train_toy.py --config configs/train_toy.py:learned_variance --workdir DIR
"""
import functools

import ml_collections

from jaxdiffattack import variants as variants_lib

VARIANTS = ("smoke", "learned_variance")


# A training stage's config block (cosine decay to 5 % of the peak unless a stage says 1.0).
_stage = functools.partial(variants_lib.train_stage, final_lr_fraction=0.05)


def get_config(arg=None):
  """The full config; variants (comma-separated): "smoke" (tiny), "learned_variance"."""
  variants = variants_lib.parse(arg, VARIANTS, __file__)
  config = ml_collections.ConfigDict()
  # Which job launch/train_toy.py runs: "all" (train.run) or "learned_variance"
  # (train_lv.run: the learned-variance UNet with config.unet's architecture and budget).
  config.job = "all"
  config.seed = 0
  config.data = dict(num_train=20000, num_train_pairs=10000, num_heldout=2000,
                     num_heldout_pairs=1000)
  config.clip = _stage(
      2000, 128, 2e-3, text_width=128, text_layers=2, text_heads=4,
      vision_width=64, vision_layers=3, vision_heads=4, patch_size=4,
      mlp_ratio=2, projection_dim=64, pair_fraction=0.25)
  # CLIP's vision tower keeps training against the frozen text tower (= SD's
  # text encoder) after the UNet: see train.tune_clip_vision.
  config.clip_tune = _stage(1000, 128, 1e-3, pair_fraction=0.25)
  config.clip_tune.warmup_steps = 50
  config.vit = _stage(11500, 128, 2e-3, width=64, layers=3, heads=4,
                      patch_size=4, mlp_ratio=2, pair_fraction=0.25)
  config.resnet = _stage(800, 128, 3e-3, embedding_size=32,
                         hidden_sizes=(32, 64, 128), depths=(1, 1, 1),
                         pair_fraction=0.25)
  config.vae = _stage(600, 32, 1e-3, block_out_channels=(16, 32, 64),
                      layers_per_block=1, latent_channels=4,
                      norm_num_groups=16, kl_weight=1e-3)
  # The VAE decoder is fine-tuned with the encoder frozen after the UNet
  # (train.tune_vae_decoder): the latent space stays, images get sharper.
  config.vae_tune = _stage(6000, 32, 1e-3, l1_weight=0.1)
  config.vae_tune.warmup_steps = 50
  config.unet = _stage(20000, 32, 5e-4, block_out_channels=(64, 64),
                       layers_per_block=1, attention_heads=4,
                       pair_fraction=0.3, caption_dropout=0.1,
                       ema_decay=0.999, export_every=500)
  # Constant learning rate after warm-up for CLIP, the ViT, the decoder tuning
  # and the UNet (warmup-stable-decay): the learning rate does not depend on
  # num_steps until the final linear cool-down (`cooldown_steps`, to zero), so
  # a constant-LR checkpoint continues exactly into a longer run; the step
  # counts below are where the shipped run stopped (train.lr_schedule).
  for name in ("clip", "clip_tune", "vit", "vae_tune"):
    config[name].final_lr_fraction = 1.0
    config[name].ckpt_every = 100
  config.vit.cooldown_steps = 1500
  config.vae_tune.cooldown_steps = 1000
  config.unet.warmup_steps = 200
  config.unet.final_lr_fraction = 1.0  # + EMA of the weights.
  config.unet.cooldown_steps = 2000
  config.unet.ckpt_every = 250
  config.scheduler = dict(beta_start=0.00085, beta_end=0.012,
                          num_train_timesteps=1000)
  config.export = dict(dir="", to_assets=False)
  # train_lv: base = the pipeline whose VAE and text encoder are reused (frozen); lambda_vlb = λ
  # of Improved DDPM's hybrid loss; an intermediate export every export_every steps.
  config.learned_variance = dict(base="toy", lambda_vlb=0.001, export_every=500)
  if "learned_variance" in variants:
    config.job = "learned_variance"

  if "smoke" in variants:
    config.data = dict(num_train=200, num_train_pairs=100, num_heldout=100,
                       num_heldout_pairs=40)
    for name in ("clip", "clip_tune", "vit", "resnet", "vae", "vae_tune",
                 "unet"):
      stage = config[name]
      stage.num_steps, stage.batch_size = 3, 8
      stage.warmup_steps, stage.log_every, stage.ckpt_every = 1, 1, 2
      stage.cooldown_steps = 1 if stage.cooldown_steps else 0
    config.clip.update(text_width=32, text_layers=1, text_heads=2,
                       vision_width=32, vision_layers=1, vision_heads=2,
                       projection_dim=16)
    config.vit.update(width=32, layers=1, heads=2)
    config.resnet.update(embedding_size=8, hidden_sizes=(8, 16), depths=(1, 1))
    # One level each: fewer ops, faster compiles (latents are then 4x32x32).
    config.vae.update(block_out_channels=(16,), norm_num_groups=16)
    config.unet.update(block_out_channels=(32,), attention_heads=2,
                       export_every=0)
    config.learned_variance.export_every = 0
  return config
