"""Tiny random CLIP, ViT, ResNet (and RegNet) checkpoints (transformers layout, PyTorch
safetensors) for tests.

Written by the PyTorch transformers classes with `save_pretrained` (as hub checkpoints ship) plus a
`preprocessor_config.json` (and a character tokenizer for CLIP), so tests load them through the
project's real loader and can use the PyTorch modules on the very same files as an independent
reference. Classifiers use the toy world's 20 labels as id2label (the ViT's in a shuffled order,
to exercise the label map). Each processor resizes: CLIP 16 → 20 (bicubic) + crop 16, ViT 16 → 24
(bilinear), ResNet and RegNet 16 → 18 (bicubic) + crop 16 (crop_pct 0.875). The RegNet (a RegNetY
with group convolutions) is not part of `build_all` (its tests build it).
"""

import pathlib

import numpy as np

import tiny_sd

CLIP_TEXT_LENGTH = 32  # characters: toy prompts ("a photo of a yellow triangle") fit


def randomise(model, seed: int) -> None:
  """Redraws every weight of a PyTorch model in NumPy so that every parameter and every pixel
  matter (default inits leave tiny models nearly input-independent): Linear/Conv weights
  N(0, 1/fan_in), norm scales 1 + N(0, 0.1²), biases and BatchNorm means N(0, 0.1²), BatchNorm
  variances 1 + |N(0, 0.1²)|, other arrays (embeddings, class tokens) N(0, 0.3²), CLIP's
  logit_scale log(1/0.07) as CLIP initialises it.
  """
  import torch  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  norms = (torch.nn.LayerNorm, torch.nn.BatchNorm2d)
  with torch.no_grad():
    for module in model.modules():
      for name, tensor in list(module.named_parameters(recurse=False)) + list(
          module.named_buffers(recurse=False)):
        if not tensor.is_floating_point():
          continue
        noise = rng.standard_normal(tuple(tensor.shape))
        if name == "logit_scale":
          value = np.full(noise.shape, np.log(1 / 0.07))
        elif isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and name == "weight":
          value = noise / np.sqrt(max(1, int(np.prod(tensor.shape[1:]))))
        elif isinstance(module, norms) and name == "weight":
          value = 1.0 + 0.1 * noise
        elif name == "running_var":
          value = 1.0 + 0.1 * np.abs(noise)
        elif name in ("bias", "running_mean"):
          value = 0.1 * noise
        elif name == "position_ids":
          continue
        else:
          value = 0.3 * noise
        tensor.copy_(torch.from_numpy(value.astype(np.float32)))


def save_random(model, directory: pathlib.Path, seed: int) -> pathlib.Path:
  """Randomises a PyTorch transformers model (`randomise`) and saves it as safetensors."""
  randomise(model, seed)
  model.save_pretrained(directory, safe_serialization=True)
  return directory


def toy_id2label(shuffle_seed: int | None = None) -> dict[int, str]:
  from jaxdiffattack.toy import world  # pylint: disable=g-import-not-at-top
  names = list(world.LABELS)
  if shuffle_seed is not None:
    names = [names[i] for i in np.random.default_rng(shuffle_seed).permutation(len(names))]
  return dict(enumerate(names))


def build_clip(directory: pathlib.Path, seed: int = 0) -> pathlib.Path:
  from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel  # pylint: disable=g-import-not-at-top
  config = CLIPConfig(
      text_config=dict(vocab_size=514, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                       num_attention_heads=2, max_position_embeddings=CLIP_TEXT_LENGTH,
                       bos_token_id=512, eos_token_id=513, pad_token_id=513, projection_dim=16),
      vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, image_size=16, patch_size=4, projection_dim=16),
      projection_dim=16)
  save_random(CLIPModel(config), directory, seed)
  tiny_sd.write_char_tokenizer(directory, CLIP_TEXT_LENGTH)
  CLIPImageProcessor(size={"shortest_edge": 20}, crop_size={"height": 16, "width": 16}
                     ).save_pretrained(directory)
  return directory


def build_vit(directory: pathlib.Path, seed: int = 1) -> pathlib.Path:
  # pylint: disable-next=g-import-not-at-top
  from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor
  id2label = toy_id2label(shuffle_seed=3)
  config = ViTConfig(image_size=24, patch_size=8, hidden_size=32, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=37, num_labels=len(id2label),
                     id2label=id2label, label2id={v: k for k, v in id2label.items()})
  save_random(ViTForImageClassification(config), directory, seed)
  ViTImageProcessor(size={"height": 24, "width": 24}).save_pretrained(directory)
  return directory


def build_resnet(directory: pathlib.Path, seed: int = 2) -> pathlib.Path:
  # pylint: disable-next=g-import-not-at-top
  from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification
  id2label = toy_id2label()
  config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                        num_labels=len(id2label), id2label=id2label,
                        label2id={v: k for k, v in id2label.items()})
  save_random(ResNetForImageClassification(config), directory, seed)
  ConvNextImageProcessor(size={"shortest_edge": 16}, crop_pct=0.875, resample=3
                         ).save_pretrained(directory)
  return directory


def build_regnet(directory: pathlib.Path, seed: int = 5) -> pathlib.Path:
  # pylint: disable-next=g-import-not-at-top
  from transformers import ConvNextImageProcessor, RegNetConfig, RegNetForImageClassification
  id2label = toy_id2label(shuffle_seed=6)
  config = RegNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=4,
                        layer_type="y", num_labels=len(id2label), id2label=id2label,
                        label2id={v: k for k, v in id2label.items()})
  save_random(RegNetForImageClassification(config), directory, seed)
  ConvNextImageProcessor(size={"shortest_edge": 16}, crop_pct=0.875, resample=3
                         ).save_pretrained(directory)
  return directory


def build_all(root: pathlib.Path) -> dict[str, pathlib.Path]:
  """{"clip", "vit", "resnet"} → checkpoint directories under `root`."""
  root = pathlib.Path(root)
  return {"clip": build_clip(root / "clip"), "vit": build_vit(root / "vit"),
          "resnet": build_resnet(root / "resnet")}


def fitness_config(dirs: dict[str, pathlib.Path]):
  """The toy fitness config with the toy scorers pointing at the tiny checkpoints."""
  from jaxdiffattack import objectives  # pylint: disable=g-import-not-at-top
  config = objectives.default_config("toy")
  config.scorers = {
      "toy_clip": dict(type="clip", model=str(dirs["clip"])),
      "toy_vit": dict(type="classifier", model=str(dirs["vit"])),
      "toy_resnet": dict(type="classifier", model=str(dirs["resnet"]), toy_kind="resnet"),
  }
  return config


_BUILT = {}


def build_all_cached(tmp_path_factory) -> dict[str, pathlib.Path]:
  """`build_all` once per test process (shared by every test module's fixture)."""
  if "dirs" not in _BUILT:
    _BUILT["dirs"] = build_all(tmp_path_factory.mktemp("tiny_vision"))
  return _BUILT["dirs"]


def toy_assets():
  """The shipped toy-world directory; fails (never skips) when a model is missing from it: the
  package ships them, so a missing one is a broken checkout, not a reason to test nothing."""
  from jaxdiffattack import toy  # pylint: disable=g-import-not-at-top
  missing = [d.name for d in (toy.SD_DIR, toy.CLIP_DIR, toy.VIT_DIR, toy.RESNET_DIR)
             if not d.is_dir() or not any(d.iterdir())]
  assert not missing, (f"toy-world assets missing ({', '.join(missing)} under "
                       f"{toy.ASSETS_DIR}); train them with launch/train_toy.py "
                       "--config.export.to_assets=True")
  return toy.ASSETS_DIR
