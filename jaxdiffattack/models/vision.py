"""CLIP and image classifiers (transformers Flax models): loading and the forward calls.

`load_clip` loads any `FlaxCLIPModel` checkpoint (the toy CLIP, a local directory, or a hub id such
as openai/clip-vit-large-patch14; Radford et al. 2021) with its tokenizer and image processor;
`load_image_classifier` loads anything `FlaxAutoModelForImageClassification` knows (ViT, ResNet,
BEiT, RegNet, ...) with its `id2label` and image processor. Weights go through
`weights.load_transformers_model` (msgpack or safetensors, never pickle). The forward functions
take params explicitly and pixel values channels-last [P, h, w, 3] already normalised by
`jaxdiffattack.preprocess`; they are pure and jit/grad/vmap-able.
"""

import dataclasses
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp

from jaxdiffattack.errors import UserError
from jaxdiffattack.models import _quiet
from jaxdiffattack.models import hub
from jaxdiffattack.models import weights

_quiet.silence_flax_deprecation()

# pylint: disable=g-import-not-at-top,wrong-import-position
from transformers import AutoImageProcessor
from transformers import CLIPTokenizer
from transformers import FlaxAutoModelForImageClassification
from transformers import FlaxCLIPModel
# pylint: enable=g-import-not-at-top,wrong-import-position

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
CLASSIFIER_TOY_KINDS = ("vit", "resnet")


@dataclasses.dataclass(frozen=True, eq=False)
class ClipModel:
  """A loaded CLIP: the transformers wrapper, tokenizer and image processor; params kept apart.

  Equality/hash are by identity, so it can be closed over by jitted functions.
  """
  source: str
  path: pathlib.Path
  dtype: Any
  model: FlaxCLIPModel
  tokenizer: CLIPTokenizer
  image_processor: Any   # a slow transformers image processor (CLIPImageProcessor, ...)

  @property
  def image_size(self) -> int:
    return int(self.model.config.vision_config.image_size)

  @property
  def max_length(self) -> int:
    return min(int(self.tokenizer.model_max_length),
               int(self.model.config.text_config.max_position_embeddings))


@dataclasses.dataclass(frozen=True, eq=False)
class ImageClassifier:
  """A loaded image classifier: wrapper, output class names, image processor."""
  source: str
  path: pathlib.Path
  dtype: Any
  model: Any                  # a transformers Flax *ForImageClassification wrapper
  id2label: tuple[str, ...]   # [C] output class names, in output order
  image_processor: Any

  @property
  def image_size(self) -> int | None:
    """The input size the model requires (None: any size, e.g. a ResNet)."""
    config = self.model.config
    if getattr(config, "model_type", "") in ("vit", "beit", "deit", "dinov2", "clip_vision_model"):
      return int(config.image_size)
    return None


def _dtype(dtype: str):
  if dtype not in DTYPES:
    raise UserError(f"dtype={dtype!r} is not supported; use one of {sorted(DTYPES)}")
  return DTYPES[dtype]


def _image_processor(path: pathlib.Path):
  if not (path / "preprocessor_config.json").is_file():
    raise UserError(f"{path}: no preprocessor_config.json (the image processor's settings: "
                    "resize, crop, mean/std); copy it from the checkpoint")
  return AutoImageProcessor.from_pretrained(str(path), use_fast=False, local_files_only=True)


def load_clip(name_or_path: str = hub.TOY_ALIAS, dtype: str = "float32"):
  """Loads a CLIP checkpoint directory (config.json, weights, tokenizer, preprocessor_config.json).

  Returns:
    (clip, params): the `ClipModel` bundle and the FlaxCLIPModel params.
  """
  jdtype = _dtype(dtype)
  path = hub.resolve(name_or_path, "clip")
  config_file = path / "config.json"
  if not config_file.is_file():
    raise UserError(f"{path}: no config.json; not a transformers CLIP checkpoint")
  model_type = json.loads(config_file.read_text()).get("model_type")
  if model_type != "clip":
    raise UserError(f"{path}: config.json has model_type={model_type!r}; a CLIP model "
                    "(model_type 'clip') is needed")
  model, params = weights.load_transformers_model(FlaxCLIPModel, path, jdtype)
  try:
    tokenizer = CLIPTokenizer.from_pretrained(str(path), local_files_only=True)
  except (OSError, ValueError, TypeError) as e:
    raise UserError(f"{path}: no CLIP tokenizer (vocab.json, merges.txt): "
                    f"{type(e).__name__}") from None
  clip = ClipModel(source=str(name_or_path), path=path, dtype=jdtype, model=model,
                   tokenizer=tokenizer, image_processor=_image_processor(path))
  return clip, params


def load_image_classifier(name_or_path: str, toy_kind: str = "vit", dtype: str = "float32"):
  """Loads an image-classification checkpoint (ViT, ResNet, ...).

  Args:
    name_or_path: `toy`, a local directory, or a hub id (e.g. google/vit-base-patch16-224).
    toy_kind: which toy classifier `toy` means: "vit" or "resnet".
    dtype: "float32" or "bfloat16".

  Returns:
    (classifier, params): the `ImageClassifier` bundle and its params (a ResNet's hold
    {"params", "batch_stats"}).
  """
  jdtype = _dtype(dtype)
  if toy_kind not in CLASSIFIER_TOY_KINDS:
    raise UserError(f"toy_kind={toy_kind!r} is invalid: use one of {CLASSIFIER_TOY_KINDS}")
  path = hub.resolve(name_or_path, toy_kind)
  config_file = path / "config.json"
  if not config_file.is_file():
    raise UserError(f"{path}: no config.json; not a transformers image classifier")
  try:
    model, params = weights.load_transformers_model(FlaxAutoModelForImageClassification, path,
                                                    jdtype)
  except ValueError as e:
    if "Unrecognized configuration class" not in str(e):
      raise
    model_type = json.loads(config_file.read_text()).get("model_type")
    raise UserError(f"{path}: model_type={model_type!r} has no Flax image-classification "
                    "class in transformers") from None
  id2label = model.config.id2label
  labels = tuple(str(id2label[i]) for i in range(len(id2label)))
  classifier = ImageClassifier(source=str(name_or_path), path=path, dtype=jdtype, model=model,
                               id2label=labels, image_processor=_image_processor(path))
  return classifier, params


def _channels_first(pixels: jax.Array) -> jax.Array:
  return jnp.transpose(pixels, (0, 3, 1, 2))  # [P, h, w, 3] → [P, 3, h, w]


def clip_image_features(clip: ClipModel, params, pixels: jax.Array) -> jax.Array:
  """Projected image embeddings [P, D] (not normalised) of normalised pixels [P, h, w, 3]."""
  pixels = _channels_first(pixels).astype(clip.dtype)
  return clip.model.get_image_features(pixels, params=params).astype(jnp.float32)


def clip_text_features(clip: ClipModel, params, input_ids: jax.Array,
                       attention_mask: jax.Array | None = None) -> jax.Array:
  """Projected text embeddings [N, D] (not normalised) of token ids [N, L]."""
  return clip.model.get_text_features(input_ids, attention_mask=attention_mask,
                                      params=params).astype(jnp.float32)


def clip_logit_scale(params) -> jax.Array:
  """CLIP's temperature exp(logit_scale) (a learned log-scale; 100 for OpenAI's models)."""
  return jnp.exp(params["logit_scale"].astype(jnp.float32))


def classifier_logits(classifier: ImageClassifier, params, pixels: jax.Array) -> jax.Array:
  """Logits [P, C] of normalised pixels [P, h, w, 3] (inference mode: BatchNorm statistics)."""
  pixels = _channels_first(pixels).astype(classifier.dtype)
  return classifier.model(pixels, params=params, train=False).logits.astype(jnp.float32)
