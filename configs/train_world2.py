"""Config of world 2's training (jaxdiffattack.world2.train.run; docs/world2_model_card.md).

Everything in one process (about 11–15 CPU-hours, the estimate from the measured rates in
docs/world2_model_card.md; every stage resumes from its checkpoint on rerun):

  python launch/train_world2.py --config configs/train_world2.py --workdir DIR

Two processes on one workdir (one per core; the data is rendered once, by both together; unet
waits for vae and clip, robust for resnet, export for everything):

  python launch/train_world2.py --config configs/train_world2.py \
      --config.stages=vae,vae_tune,unet,export --workdir DIR > A.log 2>&1 &
  nice -n 5 python launch/train_world2.py --config configs/train_world2.py \
      --config.stages=clip,vit,resnet,robust,evaluator,clip_tune --workdir DIR > B.log 2>&1 &

Stop any time (kill); the same commands resume. Lowering a stage's num_steps
(--config.unet.num_steps=N) stops it at N exactly as a run planned for N (warmup-stable-decay;
the cool-down is the last cooldown_steps). Export to the package:
--config.stages=export --config.export.to_assets=True.

Variants: "smoke" (every stage a few steps on tiny models and 48 scenes; seconds of compute),
"timing" (the full models, every stage 30 steps, checkpoints off: for measuring step rates),
"f4" (the fallback latent: 3-level VAE, 16x16x4 latents, a 3-level UNet).
"""
import functools

import ml_collections

from jaxdiffattack import variants as variants_lib

VARIANTS = ("smoke", "timing", "f4")


# A training stage's config block (warmup-stable-decay: constant after warm-up).
_stage = functools.partial(variants_lib.train_stage, final_lr_fraction=1.0)


def get_config(arg=None):
  """The full config; variants (comma-separated): "smoke", "timing", "f4"."""
  variants = variants_lib.parse(arg, VARIANTS, __file__)
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Which stages this process runs, in order ("all" or a comma-separated list).
  config.stages = "all"
  config.poll_s = 30.0          # How often a waiting stage / shard looks again.
  config.wait_timeout_s = 0.0   # 0: wait for other processes' stages forever.
  config.data = dict(num_train=60000, num_test=1000, shard_size=2000, image_size=64)
  # Warmup-stable-decay everywhere (final_lr_fraction=1, a linear cool-down at the end).
  # 3,000 steps (planned 1,500): at step 750 the oracle read only 20 % of objects right on round
  # trips (docs/results/world2_vae_check_step750.json), so the VAE trains longer.
  config.vae = _stage(3000, 32, 1e-3, block_out_channels=(16, 32, 64, 64),
                      layers_per_block=1, latent_channels=16, norm_num_groups=16,
                      kl_weight=1e-3, cooldown_steps=300,
                      # Optional sharpening terms (world2.train.vae_loss_fn; 0 = off): L1 of
                      # image gradients, and a perceptual distance of a frozen world-2
                      # classifier's hidden states (feature_net's checkpoint: feature_ckpt, or
                      # the workdir's checkpoints/<feature_net>.msgpack) -- the generator's VAE
                      # is then shaped by a surrogate judge's features (never the held-out
                      # evaluator's or the oracle's).
                      edge_weight=0.0, feature_weight=0.0, feature_net="vit", feature_ckpt="")
  # The first CLIP (uniform batches, contrastive loss only) learned hues and no shapes
  # (zero-shot shape right 11 % after 2,000 steps; same-hue batches alone: 13 % after 500).
  # hue_group: batches of 32 groups of 4 scenes sharing their first object's hue
  # (data.sample_hue_groups); class_prompt_weight: the 83 class prompts scored against every
  # image, cross-entropy against its class weights (train.clip_loss).
  # 1,800 steps (planned 3,000): the text tower freezes sooner so the UNet can start
  # (zero-shot top-1 29 % at step 1,100); clip_tune then trains the vision tower 2,000 steps.
  config.clip = _stage(1800, 128, 2e-3, text_width=128, text_layers=4, text_heads=4,
                       vision_width=128, vision_layers=4, vision_heads=4, patch_size=8,
                       mlp_ratio=2, projection_dim=64, cooldown_steps=400, ckpt_every=100,
                       hue_group=4, class_prompt_weight=1.0)
  # text_encoder_lr: 0 keeps the CLIP text tower frozen (the UNet reads its 77 states; same-hue
  # prompts' shape-word states sit at cosine 0.88: the first UNet run, frozen, drew the same
  # image for every shape of a hue at step 5,000, docs/results/world2_preview_unet_step5000.png,
  # world2_conditioning_frozen_step5000.json; so the run restarted with 1e-4). > 0 trains
  # the tower jointly with the UNet by the denoising loss (one global-norm clip, then AdamW at
  # this peak rate on the UNet's schedule shape; initialised from the clip stage's; caption
  # dropout's "" through it too); its EMA is then the export's sd/text_encoder, while clip/
  # (the CLIP judge) stays clip_tune's. The unet checkpoint then holds {"unet", "text_encoder"}
  # params and EMA, so the option cannot be switched on or off mid-run.
  config.unet = _stage(16000, 32, 5e-4, block_out_channels=(64, 128), layers_per_block=1,
                       attention_heads=4, caption_dropout=0.1, ema_decay=0.999,
                       warmup_steps=200, cooldown_steps=2000, text_encoder_lr=1e-4)
  # The decoder tuning (encoder frozen: the UNet's latents stay) with the same optional terms
  # as the VAE's (world2.train.vae_loss_fn; feature_ckpt "" = checkpoints/<feature_net>.msgpack).
  # 2,000 steps (planned 4,000; 1.5 CPU-s a step). Probe from the 1,800-step VAE (45.7 % of
  # objects read right), 400 steps: plain 53.7 %, with the ViT feature term at 0.05 53.7 %
  # (docs/results/world2_vae_check_tune_{plain400,feat005_400}.json), so the term stays off.
  config.vae_tune = _stage(2000, 32, 1e-3, l1_weight=0.1, warmup_steps=50,
                           cooldown_steps=500, edge_weight=0.0, feature_weight=0.0,
                           feature_net="vit", feature_ckpt="")
  config.vit = _stage(6000, 128, 2e-3, width=128, layers=3, heads=4, patch_size=8,
                      mlp_ratio=2, single_fraction=0.6, cooldown_steps=1500, ckpt_every=100)
  resnet = dict(embedding_size=32, hidden_sizes=(32, 64, 128, 128), depths=(1, 1, 1, 1),
                single_fraction=0.6, cooldown_steps=300, ckpt_every=100)
  config.resnet = _stage(1500, 128, 3e-3, **resnet)
  # The noise-trained surrogate (issue #26: SAGE searches against robust classifiers): the
  # ResNet above with its own seed (init and augmentation keys) and, after the light
  # augmentation, per image with probability noise_fraction N(0, σ²) pixel noise,
  # σ ~ U(0, noise_max_std) in the model's input scale [-1, 1] (0.5 = 64 of 255 grey levels,
  # beyond the largest σ of eval_noise_stds).
  config.robust = _stage(1500, 128, 3e-3, arch="resnet", seed=1, noise_fraction=0.5,
                         noise_max_std=0.5, **resnet)
  # Every classifier stage's test top-1 is also measured under N(0, σ²) pixel noise, σ in the
  # model's input scale [-1, 1] (world2.train.classifier_metrics; the same draws for each).
  config.eval_noise_stds = (0.1, 0.2, 0.4)
  # The held-out judge: a third architecture (config.evaluator.arch in
  # world2.train.CLASSIFIERS): models.regnet.WORLD2_EVALUATOR, a ~1 M-parameter RegNetY.
  config.evaluator = _stage(1500, 128, 3e-3, arch="regnet", embedding_size=32,
                            hidden_sizes=(48, 104, 208, 440), depths=(1, 1, 4, 1),
                            groups_width=8, layer_type="y", single_fraction=0.6,
                            cooldown_steps=300, ckpt_every=100)
  config.clip_tune = _stage(2000, 128, 1e-3, warmup_steps=50, cooldown_steps=200,
                            ckpt_every=100, hue_group=4, class_prompt_weight=1.0)
  config.scheduler = dict(beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)
  config.export = dict(dir="", to_assets=False)

  if "f4" in variants:  # 64² -> 16x16x4 latents (3 VAE levels); a 3-level UNet whose 16² level
    # has no attention: 24.6 GFLOP per step at batch 32, 1.27x the f8 UNet's 19.3.
    config.vae.update(block_out_channels=(16, 32, 64), latent_channels=4)
    config.unet.update(block_out_channels=(32, 64, 128), down_block_types=(
        "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"))
  if "timing" in variants:
    for name in ("vae", "clip", "unet", "vae_tune", "vit", "resnet", "robust", "evaluator",
                 "clip_tune"):
      config[name].update(num_steps=25, log_every=5, ckpt_every=10**9, warmup_steps=1,
                          cooldown_steps=0)
    config.data.update(num_train=2000, num_test=200)
  if "smoke" in variants:
    config.poll_s = 0.2
    config.wait_timeout_s = 600.0
    config.data = dict(num_train=48, num_test=24, shard_size=16, image_size=32)
    for name in ("vae", "clip", "unet", "vae_tune", "vit", "resnet", "robust", "evaluator",
                 "clip_tune"):
      stage = config[name]
      stage.num_steps, stage.batch_size = 4, 4
      stage.warmup_steps, stage.log_every, stage.ckpt_every = 1, 1, 2
      stage.cooldown_steps = 1
    config.vae.update(block_out_channels=(8, 8), norm_num_groups=8, latent_channels=4)
    config.clip.update(text_width=32, text_layers=1, text_heads=2, vision_width=32,
                       vision_layers=1, vision_heads=2, projection_dim=16)
    # The smoke UNet keeps the text tower frozen (its cached exports predate the joint default;
    # tests/world2_text_encoder_test.py trains the joint path on this config).
    config.unet.update(block_out_channels=(32,), attention_heads=2, text_encoder_lr=0.0)
    if "down_block_types" in config.unet:
      config.unet.down_block_types = ("CrossAttnDownBlock2D",)
    config.vit.update(width=32, layers=1, heads=2)
    config.resnet.update(embedding_size=8, hidden_sizes=(8, 16), depths=(1, 1))
    config.robust.update(embedding_size=8, hidden_sizes=(8, 16), depths=(1, 1))
    config.evaluator.update(embedding_size=8, hidden_sizes=(8, 16), depths=(1, 1),
                            groups_width=8)
  return config
