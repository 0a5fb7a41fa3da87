"""Full-shape random checkpoints for the end-to-end job tests (issue #25 item 2), built offline.

* `write_clip_tokenizer`: the real 49,408-token CLIP BPE tokenizer (transformers' CLIPTokenizer
  layout: vocab.json + merges.txt), made from the BPE merges that ship in the `open-clip-torch`
  wheel (`open_clip/bpe_simple_vocab_16e6.txt.gz`, OpenAI's CLIP file). The vocabulary is built
  as CLIP's own SimpleTokenizer builds it: the 256 byte characters, the same with "</w>", one
  token per merge (the first 49,408 − 512 − 2 merges), then <|startoftext|> and <|endoftext|>.
* `build_sd`: Stable Diffusion pipelines at the real shapes with random weights, written by the
  PyTorch diffusers / transformers classes from configs (no downloads), saved as fp16 safetensors:
  `sd15` (UNet 320/640/1280/1280, cross-attention 768, 12-layer 768-wide CLIP text tower,
  epsilon) and `sd21` (as stabilityai/stable-diffusion-2-1-base: head dim 64, linear projections,
  cross-attention 1024, 23-layer 1024-wide OpenCLIP-H text tower; v-prediction). The UNet's
  `sample_size` (and the VAE's) set the model's default resolution: the tests use 8² latents /
  64² images — the weights are those of the 512² models.
* `build_scorers`: ImageNet scorers at the real shapes with random weights, transformers layout:
  CLIP ViT-B/16 (with the real tokenizer), ViT-B/16 and ResNet-50 classifiers whose id2label are
  the 1000 ImageNet-1k classes.
"""

import gzip
import importlib.util
import json
import pathlib
import subprocess
import sys
import zipfile

import numpy as np

from jaxdiffattack.toy.tokenizer import bytes_to_unicode

OPEN_CLIP_VERSION = "3.3.0"   # the wheel the merges come from when open_clip is not installed
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


# ---------------------------------------------------------------------------------- tokenizer --


def open_clip_dir(cache: pathlib.Path | None = None) -> pathlib.Path:
  """The directory of open_clip's files (bpe gz, tokenizer.py), without importing open_clip (its
  __init__ needs torchvision, which this machine's CPU torch cannot load).

  Installed open_clip first; otherwise the `open-clip-torch` wheel is fetched with pip (no
  dependencies) into `cache` and the two files are unpacked from it.
  """
  spec = importlib.util.find_spec("open_clip")
  if spec is not None and spec.submodule_search_locations:
    return pathlib.Path(list(spec.submodule_search_locations)[0])
  cache = pathlib.Path(cache or pathlib.Path.home() / ".cache" / "jaxdiffattack_open_clip")
  out = cache / f"open_clip_{OPEN_CLIP_VERSION}"
  if not (out / BPE_FILE).exists():
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d",
                    str(cache), f"open-clip-torch=={OPEN_CLIP_VERSION}"], check=True)
    wheel = next(cache.glob(f"open_clip_torch-{OPEN_CLIP_VERSION}-*.whl"))
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
      for name in (BPE_FILE, "tokenizer.py"):
        (out / name).write_bytes(z.read(f"open_clip/{name}"))
  return out


def write_clip_tokenizer(directory: pathlib.Path, *, pad_token: str = EOS,
                         source: pathlib.Path | None = None) -> pathlib.Path:
  """vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json of the real CLIP
  tokenizer in `directory`. `pad_token`: SD 1.x pads with <|endoftext|>, SD 2.x with "!"."""
  source = pathlib.Path(source or open_clip_dir())
  lines = gzip.open(source / BPE_FILE).read().decode("utf-8").split("\n")
  merges = [tuple(line.split()) for line in lines[1:VOCAB_SIZE - 256 * 2 - 2 + 1]]
  chars = list(bytes_to_unicode().values())
  vocab_list = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [BOS, EOS]
  if len(vocab_list) != VOCAB_SIZE or len(set(vocab_list)) != VOCAB_SIZE:
    raise ValueError(f"{source / BPE_FILE}: built {len(vocab_list)} tokens "
                     f"({len(set(vocab_list))} distinct), expected {VOCAB_SIZE}")
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab_list)}))
  (directory / "merges.txt").write_text(
      "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
  special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token}
  (directory / "special_tokens_map.json").write_text(json.dumps(special))
  (directory / "tokenizer_config.json").write_text(json.dumps(dict(
      special, tokenizer_class="CLIPTokenizer", model_max_length=MAX_LENGTH,
      do_lower_case=True, errors="replace")))
  return directory


def open_clip_tokenize(texts, source: pathlib.Path | None = None) -> np.ndarray:
  """open_clip's own SimpleTokenizer (its tokenizer.py loaded by path): [N, 77] ids."""
  source = pathlib.Path(source or open_clip_dir())
  spec = importlib.util.spec_from_file_location("_open_clip_tokenizer", source / "tokenizer.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  tok = module.SimpleTokenizer(bpe_path=str(source / BPE_FILE), context_length=MAX_LENGTH)
  return np.asarray(tok(list(texts)))


# ------------------------------------------------------------------------------ SD pipelines --

SD15 = dict(
    unet=dict(block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
              attention_head_dim=8, use_linear_projection=False),
    text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, hidden_act="quick_gelu", projection_dim=768),
    pad_token=EOS, prediction_type="epsilon")
SD21 = dict(
    unet=dict(block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=1024,
              attention_head_dim=(5, 10, 20, 20), use_linear_projection=True),
    text=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
              num_attention_heads=16, hidden_act="gelu", projection_dim=512),
    pad_token="!", prediction_type="v_prediction")
MODELS = {"sd15": SD15, "sd21": SD21}
SCHEDULER = {
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False, "trained_betas": None}


POOL_SIZE = 1 << 22


def _small_init(cls, *args, seed: int, scale: float = 0.02, dtype: str = "float32", **kwargs):
  """`cls(*args, **kwargs)` built on the meta device, in `dtype`, with random weights: every
  weight is a window (at a random offset, wrapping) of one pool of 2²² N(0, scale²) draws; norm
  scales 1 and biases 0, BatchNorm statistics (0, 1), position ids 0..L−1. Skipping the default
  init and per-weight draws makes an 860 M-parameter UNet seconds instead of a minute on a busy
  2-core machine. Activations stay bounded through 23 layers; the tests need real shapes, not
  real outputs."""
  import torch  # pylint: disable=g-import-not-at-top
  torch_dtype = getattr(torch, dtype)
  with torch.device("meta"):
    module = cls(*args, **kwargs)
  module = module.to(torch_dtype).to_empty(device="cpu")
  rng = np.random.default_rng(seed)
  pool = torch.from_numpy((scale * rng.standard_normal(POOL_SIZE)).astype(np.float32))
  pool = torch.cat([pool, pool]).to(torch_dtype)
  norms = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.BatchNorm2d)
  with torch.no_grad():
    for sub in module.modules():
      for pname, p in sub.named_parameters(recurse=False):
        if isinstance(sub, norms):
          p.fill_(1.0 if pname == "weight" else 0.0)
          continue
        flat = p.view(-1)
        for start in range(0, flat.numel(), POOL_SIZE):
          n = min(POOL_SIZE, flat.numel() - start)
          offset = int(rng.integers(POOL_SIZE))
          flat[start:start + n] = pool[offset:offset + n]
      for bname, b in sub.named_buffers(recurse=False):
        if bname == "position_ids":
          b.copy_(torch.arange(b.shape[-1]).expand(b.shape))
        else:
          b.fill_(1 if bname == "running_var" else 0)
  return module


def build_sd(directory: pathlib.Path, name: str, *, sample_size: int = 8,
             tokenizer_source: pathlib.Path | None = None, seed: int = 0) -> pathlib.Path:
  """A full-shape SD pipeline (`name` in MODELS) with random weights, fp16 safetensors, in the
  diffusers layout under `directory`. `sample_size`: latent side (8 → 64² images)."""
  # pylint: disable=g-import-not-at-top
  import torch
  from diffusers import AutoencoderKL, UNet2DConditionModel
  from transformers import CLIPTextConfig, CLIPTextModel
  # pylint: enable=g-import-not-at-top
  spec = MODELS[name]
  directory = pathlib.Path(directory)
  unet = _small_init(
      UNet2DConditionModel, seed=seed * 10, dtype="float16", sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=2,
      down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
      up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, **spec["unet"])
  vae = _small_init(
      AutoencoderKL, seed=seed * 10 + 1, dtype="float16", in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
      down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
      latent_channels=4, norm_num_groups=32, sample_size=sample_size * 8, scaling_factor=0.18215)
  text = _small_init(CLIPTextModel, CLIPTextConfig(
      vocab_size=VOCAB_SIZE, max_position_embeddings=MAX_LENGTH, bos_token_id=49406,
      eos_token_id=49407, pad_token_id=1, **spec["text"]), seed=seed * 10 + 2, dtype="float16")
  (directory / "scheduler").mkdir(parents=True, exist_ok=True)
  (directory / "scheduler" / "scheduler_config.json").write_text(
      json.dumps(dict(SCHEDULER, prediction_type=spec["prediction_type"])))
  write_clip_tokenizer(directory / "tokenizer", pad_token=spec["pad_token"],
                       source=tokenizer_source)
  (directory / "model_index.json").write_text(json.dumps({
      "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.39.0",
      "tokenizer": ["transformers", "CLIPTokenizer"],
      "text_encoder": ["transformers", "CLIPTextModel"],
      "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
      "scheduler": ["diffusers", "PNDMScheduler"]}))
  unet.save_pretrained(directory / "unet", safe_serialization=True)
  vae.save_pretrained(directory / "vae", safe_serialization=True)
  text.save_pretrained(directory / "text_encoder", safe_serialization=True)
  return directory


# ---------------------------------------------------------------------------------- scorers --


def imagenet_id2label() -> dict[int, str]:
  from jaxdiffattack import labels  # pylint: disable=g-import-not-at-top
  return dict(enumerate(labels.imagenet1k().names))


def build_scorers(root: pathlib.Path, tokenizer_source: pathlib.Path | None = None,
                  seed: int = 0) -> dict[str, pathlib.Path]:
  """{"clip_vit_b16", "vit_b16", "resnet50"} → checkpoint directories (fp32 safetensors) at the
  hub models' shapes (openai/clip-vit-base-patch16, google/vit-base-patch16-224,
  microsoft/resnet-50) with their image processors' settings."""
  # pylint: disable=g-import-not-at-top
  from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, ConvNextImageProcessor,
                            ResNetConfig, ResNetForImageClassification, ViTConfig,
                            ViTForImageClassification, ViTImageProcessor)
  # pylint: enable=g-import-not-at-top
  root = pathlib.Path(root)
  id2label = imagenet_id2label()
  label2id = {v: k for k, v in id2label.items()}
  dirs = {k: root / k for k in ("clip_vit_b16", "vit_b16", "resnet50")}
  clip = _small_init(CLIPModel, CLIPConfig(
      text_config=dict(vocab_size=VOCAB_SIZE, hidden_size=512, intermediate_size=2048,
                       num_hidden_layers=12, num_attention_heads=8,
                       max_position_embeddings=MAX_LENGTH, bos_token_id=49406,
                       eos_token_id=49407, pad_token_id=1),
      vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, image_size=224, patch_size=16),
      projection_dim=512), seed=seed)
  with __import__("torch").no_grad():
    clip.logit_scale.fill_(float(np.log(100.0)))
  clip.save_pretrained(dirs["clip_vit_b16"], safe_serialization=True)
  write_clip_tokenizer(dirs["clip_vit_b16"], source=tokenizer_source)
  CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
                     ).save_pretrained(dirs["clip_vit_b16"])
  vit = _small_init(ViTForImageClassification, ViTConfig(
      image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12,
      num_attention_heads=12, intermediate_size=3072, num_labels=1000, id2label=id2label,
      label2id=label2id), seed=seed + 1)
  vit.save_pretrained(dirs["vit_b16"], safe_serialization=True)
  ViTImageProcessor(size={"height": 224, "width": 224}, image_mean=[0.5] * 3,
                    image_std=[0.5] * 3).save_pretrained(dirs["vit_b16"])
  resnet = _small_init(ResNetForImageClassification, ResNetConfig(
      embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3],
      layer_type="bottleneck", num_labels=1000, id2label=id2label, label2id=label2id),
      seed=seed + 2)
  resnet.save_pretrained(dirs["resnet50"], safe_serialization=True)
  ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875, resample=3
                         ).save_pretrained(dirs["resnet50"])
  return dirs


def build_all(root: pathlib.Path, models=tuple(MODELS)) -> pathlib.Path:
  """`root/<model>` for each of `models` and `root/scorers/*` (the layout
  tests/fullshape_config.py reads from FULLSHAPE_ROOT); returns root."""
  root = pathlib.Path(root)
  source = open_clip_dir()
  for name in models:
    build_sd(root / name, name, tokenizer_source=source)
  build_scorers(root / "scorers", tokenizer_source=source)
  return root
