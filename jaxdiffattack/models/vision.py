"""CLIP and image classifiers (the project's own linen modules): loading and the forward calls.

`load_clip` loads a transformers CLIP checkpoint (the toy CLIP, a local directory, or a hub id such
as openai/clip-vit-large-patch14; Radford et al. 2021) with its tokenizer and image processor;
`load_image_classifier` loads a ViT, ResNet or RegNet image-classification checkpoint
(`CLASSIFIERS`, by config.json's model_type) with its `id2label` and image processor. Modules and weights come from
`convert_transformers` (msgpack or safetensors, never pickle); the tokenizer stays transformers'
`CLIPTokenizer`. The forward functions take params explicitly and pixel values channels-last
[P, h, w, 3] already normalised by `jaxdiffattack.preprocess`; they are pure and
jit/grad/vmap-able. `attention` picks the attention implementation at load time.
"""

import dataclasses
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp

from jaxdiffattack.errors import UserError
from jaxdiffattack.models import clip as clip_lib
from jaxdiffattack.models import convert_transformers
from jaxdiffattack.models import hub
from jaxdiffattack.models import transformers_config

# pylint: disable=g-import-not-at-top,wrong-import-position
from transformers import AutoImageProcessor
from transformers import CLIPTokenizer
# pylint: enable=g-import-not-at-top,wrong-import-position

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# evaluator: world 2's RegNet; robust: world 2's noise-trained ResNet (world2.train.train_robust).
CLASSIFIER_TOY_KINDS = ("vit", "resnet", "robust", "evaluator")
# config.json model_type → `convert_transformers.KINDS` entry. A new classifier is one line here
# (plus its module and its entry there).
CLASSIFIERS = {"vit": "vit", "resnet": "resnet", "regnet": "regnet"}


@dataclasses.dataclass(frozen=True, eq=False)
class ClipModel:
  """A loaded CLIP: the linen module, its config, tokenizer and image processor; params apart.

  Equality/hash are by identity, so it can be closed over by jitted functions.
  """
  source: str
  path: pathlib.Path
  dtype: Any
  model: clip_lib.CLIPModel
  tokenizer: CLIPTokenizer
  image_processor: Any   # a slow transformers image processor (CLIPImageProcessor, ...)

  @property
  def config(self) -> clip_lib.CLIPConfig:
    return self.model.config

  @property
  def image_size(self) -> int:
    return int(self.config.vision.image_size)

  @property
  def max_length(self) -> int:
    return min(int(self.tokenizer.model_max_length),
               int(self.config.text.max_position_embeddings))


@dataclasses.dataclass(frozen=True, eq=False)
class ImageClassifier:
  """A loaded image classifier: linen module, output class names, image processor."""
  source: str
  path: pathlib.Path
  dtype: Any
  model: Any                  # vit / resnet / regnet .<Name>ForImageClassification
  model_type: str             # a key of CLASSIFIERS
  id2label: tuple[str, ...]   # [C] output class names, in output order
  image_processor: Any

  @property
  def config(self):
    return self.model.config

  @property
  def image_size(self) -> int | None:
    """The input size the model requires (None: any size, e.g. a ResNet)."""
    return int(self.config.image_size) if self.model_type == "vit" else None

  @property
  def has_batch_stats(self) -> bool:
    """Params are {"params", "batch_stats"} (BatchNorm inference statistics)."""
    return convert_transformers.KINDS[CLASSIFIERS[self.model_type]].collections


def _dtype(dtype: str):
  if dtype not in DTYPES:
    raise UserError(f"dtype={dtype!r} is not supported; use one of {sorted(DTYPES)}")
  return DTYPES[dtype]


def _image_processor(path: pathlib.Path):
  if not (path / "preprocessor_config.json").is_file():
    raise UserError(f"{path}: no preprocessor_config.json (the image processor's settings: "
                    "resize, crop, mean/std); copy it from the checkpoint")
  return AutoImageProcessor.from_pretrained(str(path), use_fast=False, local_files_only=True)


def load_clip(name_or_path: str = hub.TOY_ALIAS, dtype: str = "float32",
              attention: str = "xla"):
  """Loads a CLIP checkpoint directory (config.json, weights, tokenizer, preprocessor_config.json).

  Returns:
    (clip, params): the `ClipModel` bundle and the CLIP params (transformers' Flax layout).
  """
  jdtype = _dtype(dtype)
  path = hub.resolve(name_or_path, "clip")
  loaded = convert_transformers.load(path, "clip", jdtype, attention)
  try:
    tokenizer = CLIPTokenizer.from_pretrained(str(path), local_files_only=True)
  except (OSError, ValueError, TypeError) as e:
    raise UserError(f"{path}: no CLIP tokenizer (vocab.json, merges.txt): "
                    f"{type(e).__name__}") from None
  clip = ClipModel(source=str(name_or_path), path=path, dtype=jdtype, model=loaded.module,
                   tokenizer=tokenizer, image_processor=_image_processor(path))
  return clip, loaded.params


def load_image_classifier(name_or_path: str, toy_kind: str = "vit", dtype: str = "float32",
                          attention: str = "xla"):
  """Loads an image-classification checkpoint (ViT, ResNet or RegNet; `CLASSIFIERS`).

  Args:
    name_or_path: `toy`, `world2`, a local directory, or a hub id (e.g.
      google/vit-base-patch16-224).
    toy_kind: which shipped classifier `toy` / `world2` means: "vit", "resnet" or (world 2
      only) "robust", "evaluator".
    dtype: "float32" or "bfloat16".
    attention: the attention implementation (ViT; `attention.IMPLEMENTATIONS`).

  Returns:
    (classifier, params): the `ImageClassifier` bundle and its params (a ResNet's or RegNet's
    hold {"params", "batch_stats"}).
  """
  jdtype = _dtype(dtype)
  if toy_kind not in CLASSIFIER_TOY_KINDS:
    raise UserError(f"toy_kind={toy_kind!r} is invalid: use one of {CLASSIFIER_TOY_KINDS}")
  path = hub.resolve(name_or_path, toy_kind)
  config_file = path / "config.json"
  if not config_file.is_file():
    raise UserError(f"{path}: no config.json; not a transformers image classifier")
  model_type = json.loads(config_file.read_text()).get("model_type")
  if model_type not in CLASSIFIERS:
    raise UserError(f"{config_file}: model_type={model_type!r} is not a supported image "
                    f"classifier; supported: {sorted(CLASSIFIERS)}")
  loaded = convert_transformers.load(path, CLASSIFIERS[model_type], jdtype, attention)
  labels = transformers_config.id2label(loaded.raw_config, str(config_file))
  classifier = ImageClassifier(source=str(name_or_path), path=path, dtype=jdtype,
                               model=loaded.module, model_type=model_type, id2label=labels,
                               image_processor=_image_processor(path))
  return classifier, loaded.params


def load_torchvision_classifier(file: str, arch, dtype: str = "float32",
                                attention: str = "xla"):
  """Loads a torchvision VisionTransformer saved as one .safetensors file (e.g. ViT-H/14 SWAG;
  the layout and the conversion command: `convert_transformers`, "torchvision layout").

  `arch` names a `convert_transformers.TORCHVISION_VITS` preset (or is a `TorchvisionViT`).
  Outputs are the ImageNet-1k classes in index order (id2label: their wnids); preprocessing is the
  weights' own (torchvision's ImageClassification: shorter side resized bicubic, centre crop,
  ImageNet mean/std), expressed as a transformers image processor.

  Returns:
    (classifier, params) as `load_image_classifier`.
  """
  from transformers import CLIPImageProcessor  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import labels as labels_lib  # pylint: disable=g-import-not-at-top
  jdtype = _dtype(dtype)
  spec = convert_transformers.torchvision_vit_arch(arch)
  loaded = convert_transformers.load_torchvision_vit(file, spec, jdtype, attention)
  if spec.num_classes == labels_lib.IMAGENET_CLASSES:
    id2label = labels_lib.imagenet1k().ids
  else:
    id2label = tuple(f"LABEL_{i}" for i in range(spec.num_classes))
  processor = CLIPImageProcessor(
      do_resize=True, size={"shortest_edge": spec.resize_size or spec.image_size}, resample=3,
      do_center_crop=True, crop_size={"height": spec.image_size, "width": spec.image_size},
      do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=list(spec.mean),
      image_std=list(spec.std), do_convert_rgb=True)
  classifier = ImageClassifier(source=str(file), path=pathlib.Path(file).expanduser(),
                               dtype=jdtype, model=loaded.module, model_type="vit",
                               id2label=tuple(id2label), image_processor=processor)
  return classifier, loaded.params


def clip_image_features(clip: ClipModel, params, pixels: jax.Array) -> jax.Array:
  """Projected image embeddings [P, D] (not normalised) of normalised pixels [P, h, w, 3]."""
  return clip.model.apply({"params": params}, pixels.astype(clip.dtype),
                          method="get_image_features").astype(jnp.float32)


def clip_text_features(clip: ClipModel, params, input_ids: jax.Array,
                       attention_mask: jax.Array | None = None) -> jax.Array:
  """Projected text embeddings [N, D] (not normalised) of token ids [N, L]."""
  return clip.model.apply({"params": params}, input_ids, attention_mask,
                          method="get_text_features").astype(jnp.float32)


def clip_logit_scale(params) -> jax.Array:
  """CLIP's temperature exp(logit_scale) (a learned log-scale; 100 for OpenAI's models)."""
  return jnp.exp(params["logit_scale"].astype(jnp.float32))


def classifier_logits(classifier: ImageClassifier, params, pixels: jax.Array) -> jax.Array:
  """Logits [P, C] of normalised pixels [P, h, w, 3] (inference mode: BatchNorm statistics)."""
  variables = params if classifier.has_batch_stats else {"params": params}
  return classifier.model.apply(variables, pixels.astype(classifier.dtype)).astype(jnp.float32)
