"""Scorers that judge generated images: CLIP score, CLIP zero-shot classification, classifiers.

All scorers start from images [P, H, W, 3] in [0, 1], preprocess them in JAX exactly as the model's
own transformers image processor would (`jaxdiffattack.preprocess`), and are pure, jit/vmap-able
and differentiable functions of the images, so they fuse into the sampler's compiled program.

* CLIP score (Hessel et al. 2021, "CLIPScore", eq. 1): w · max(cos(E_I, E_C), 0) between an image
  and its prompt, w = 100 as in torchmetrics (the paper's w = 2.5 is `clip_score_weight=2.5`).
* CLIP zero-shot classification (Radford et al. 2021, §3.1.4 and the ImageNet prompt-engineering
  notebook): a class's text embedding is the mean of its L2-normalised template embeddings,
  renormalised; computed once when the scorer is loaded and kept in its params. Logits are
  exp(logit_scale) × cosine (exp(logit_scale) = 100 for OpenAI's CLIPs).
* Image classifiers: any `FlaxAutoModelForImageClassification` checkpoint (ViT, ResNet, ...).

A scorer is named in config: a preset of `SCORERS` or a `ScorerSpec` given as a dict. A loaded
`Scorer` knows its output classes and where each class of the experiment's label set sits among
them (`labels.map_labels`), so targets are always given as label-set indices.
"""

import dataclasses
from typing import Any, Mapping, NamedTuple, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack import labels as labels_lib
from jaxdiffattack import preprocess as preprocess_lib
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.errors import UserError
from jaxdiffattack.models import convert_transformers
from jaxdiffattack.models import vision

SCORER_TYPES = ("classifier", "clip")
TEXT_BATCH = 256  # prompts per compiled text-encoder call


@dataclasses.dataclass(frozen=True)
class ScorerSpec:
  """How to build a scorer (static config).

  type: "classifier" (an image-classification checkpoint) or "clip" (CLIP: zero-shot classes and
    CLIP score).
  model: `toy`, a local directory, or a hub id.
  toy_kind: the shipped classifier `toy` / `world2` means ("vit", "resnet"; world 2 only:
    "robust", its noise-trained ResNet, "evaluator", its RegNet); classifiers only.
  classes: clip only: the label set of the zero-shot classes ("" = the experiment's label set;
    e.g. "imagenet1k" to judge ImageNet-100 targets among all 1000 classes, as ATM does).
  templates: clip only: a `labels.TEMPLATE_SETS` name or a tuple of templates.
  label_map: classifiers only: how label-set classes find the model's outputs
    (`labels.MAP_MODES`).
  quantize: preprocess through the uint8 grid exactly as the processors' PIL path does
    (straight-through gradients); False keeps preprocessing smooth (within ~1/255 of it).
  clip_score_weight: w of CLIPScore (100: torchmetrics; 2.5: Hessel et al.).
  dtype: "float32" or "bfloat16".
  torchvision: classifiers only: a torchvision architecture preset
    (`convert_transformers.TORCHVISION_VITS`, e.g. "vit_h_14_swag"); `model` is then the path of
    the model's state dict as one .safetensors file (layout: `convert_transformers`).
  """
  type: str
  model: str = "toy"
  toy_kind: str = "vit"
  classes: str = ""
  templates: Any = "toy"
  label_map: str = "auto"
  quantize: bool = False
  clip_score_weight: float = 100.0
  dtype: str = "float32"
  torchvision: str = ""

  def validate(self, key: str) -> None:
    if self.type not in SCORER_TYPES:
      raise ConfigError(f"config.{key}.type={self.type!r} is invalid: use one of {SCORER_TYPES}")
    if self.type == "classifier" and self.toy_kind not in vision.CLASSIFIER_TOY_KINDS:
      raise ConfigError(f"config.{key}.toy_kind={self.toy_kind!r} is invalid: use one of "
                        f"{vision.CLASSIFIER_TOY_KINDS}")
    if self.label_map not in labels_lib.MAP_MODES:
      raise ConfigError(f"config.{key}.label_map={self.label_map!r} is invalid: use one of "
                        f"{labels_lib.MAP_MODES}")
    if self.torchvision and (self.type != "classifier" or self.torchvision not in
                             convert_transformers.TORCHVISION_VITS):
      raise ConfigError(f"config.{key}.torchvision={self.torchvision!r} is invalid: use '' or, "
                        "for a classifier, one of "
                        f"{sorted(convert_transformers.TORCHVISION_VITS)}")
    if self.dtype not in vision.DTYPES:
      raise ConfigError(f"config.{key}.dtype={self.dtype!r} is invalid: use one of "
                        f"{sorted(vision.DTYPES)}")


# Named scorers. A new one is one line here (or a dict under config.scorers).
SCORERS = {
    # The toy world (jaxdiffattack/toy/assets): 20 classes, 32×32 images.
    "toy_clip": ScorerSpec("clip", "toy", templates="toy"),
    "toy_vit": ScorerSpec("classifier", "toy", toy_kind="vit"),
    "toy_resnet": ScorerSpec("classifier", "toy", toy_kind="resnet"),
    # World 2 (jaxdiffattack/world2/assets, or $JAXDIFFATTACK_WORLD2_ASSETS): 83 classes, 64×64;
    # surrogates ViT, ResNet and the noise-trained ResNet, held-out evaluator RegNetY
    # (docs/world2_model_card.md).
    "world2_clip": ScorerSpec("clip", "world2", templates="world2"),
    "world2_vit": ScorerSpec("classifier", "world2", toy_kind="vit"),
    "world2_resnet": ScorerSpec("classifier", "world2", toy_kind="resnet"),
    "world2_robust": ScorerSpec("classifier", "world2", toy_kind="robust"),
    "world2_regnet": ScorerSpec("classifier", "world2", toy_kind="evaluator"),
    # Real checkpoints (downloaded on first use; ImageNet-1k heads).
    "clip_vit_b16": ScorerSpec("clip", "openai/clip-vit-base-patch16",
                               templates="clip_imagenet"),  # ATM's judge
    "clip_vit_l14": ScorerSpec("clip", "openai/clip-vit-large-patch14",
                               templates="clip_imagenet"),  # torchmetrics' CLIPScore model
    "vit_b16": ScorerSpec("classifier", "google/vit-base-patch16-224"),
    "resnet50": ScorerSpec("classifier", "microsoft/resnet-50"),
    # The brittleness paper's evaluator (arXiv 2312.11473): torchvision's ViT-H/14 SWAG at 518²,
    # from a local .safetensors file (no hub copy; how to make it: convert_transformers,
    # "torchvision layout"); elsewhere: scorers {"vit_h14_swag": {"model": FILE}} in the config.
    "vit_h14_swag": ScorerSpec("classifier", "~/.cache/jaxdiffattack/vit_h_14_swag.safetensors",
                               torchvision="vit_h_14_swag"),
}


def get_spec(value, key: str = "scorer", extra: Mapping[str, Any] | None = None) -> ScorerSpec:
  """A `ScorerSpec` from a preset name, a spec, or a dict of its fields.

  Args:
    value: preset name (looked up in `extra`, then `SCORERS`), `ScorerSpec` or mapping.
    key: config key for error messages.
    extra: more named specs (config.scorers), each a spec or a mapping; a mapping under a
      preset's name overrides only the fields it names (e.g. {"toy_vit": {"quantize": True}}).
  """
  extra = dict(extra or {})
  if isinstance(value, str):
    if value in extra:
      override = extra[value]
      if value in SCORERS and not isinstance(override, ScorerSpec):
        # A dict under config.scorers.<preset> overrides only the fields it names.
        fields = dataclasses.asdict(SCORERS[value])
        fields.update(override.to_dict() if hasattr(override, "to_dict") else dict(override))
        override = fields
      return get_spec(override, f"scorers.{value}")
    if value not in SCORERS:
      raise ConfigError(f"config.{key}={value!r} is not a scorer: use one of "
                        f"{sorted(set(SCORERS) | set(extra))} or define it under config.scorers")
    return SCORERS[value]
  if isinstance(value, ScorerSpec):
    spec = value
  elif isinstance(value, Mapping) or hasattr(value, "to_dict"):
    fields = dict(value.to_dict() if hasattr(value, "to_dict") else value)
    allowed = {f.name for f in dataclasses.fields(ScorerSpec)}
    unknown = sorted(set(fields) - allowed)
    if unknown:
      raise ConfigError(f"config.{key} has unknown key {unknown[0]!r}: allowed {sorted(allowed)}")
    if "type" not in fields:
      raise ConfigError(f"config.{key} needs a type: one of {SCORER_TYPES}")
    if isinstance(fields.get("templates"), list):
      fields["templates"] = tuple(fields["templates"])
    spec = ScorerSpec(**fields)
  else:
    raise ConfigError(f"config.{key}={value!r} is invalid: a scorer name or a dict of ScorerSpec "
                      "fields")
  spec.validate(key)
  return spec


@dataclasses.dataclass(frozen=True, eq=False)
class Scorer:
  """A loaded scorer. Static parts are hashable by identity (safe to close over in jit).

  `params` rides along for convenience (`objectives.make_score_fn` collects it as score params);
  the pure functions below always take params as an argument and never read this field.
  """
  name: str
  spec: ScorerSpec
  model: Any                          # vision.ClipModel or vision.ImageClassifier
  preprocess: preprocess_lib.PreprocessSpec
  label_set: labels_lib.LabelSet      # the experiment's label set (targets index it)
  label_map: labels_lib.LabelMap      # label-set index → output index; output class ids
  output_names: tuple[str, ...]       # [C] a readable name per output
  params: Any = None                  # {"model": ..., "class_emb": [C, D] (clip)}

  @property
  def type(self) -> str:
    return self.spec.type

  @property
  def num_outputs(self) -> int:
    return len(self.label_map.output_ids)

  @property
  def required_size(self) -> int | None:
    return self.model.image_size


class ScorerOutput(NamedTuple):
  logits: jax.Array                     # [P, C] over the scorer's output classes
  image_emb: jax.Array | None = None    # [P, D] L2-normalised CLIP image embeddings (clip only)


def _normalise(x: jax.Array, axis: int = -1) -> jax.Array:
  return x / jnp.linalg.norm(x, axis=axis, keepdims=True)


# ----------------------------------------------------------------------------- CLIP text side --


def tokenize(clip: vision.ClipModel, prompts: Sequence[str]):
  """(input_ids, attention_mask), each [N, L] int32, padded to the model's max length."""
  if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
    raise UserError("prompts must be a list of strings")
  lengths = [len(ids) for ids in clip.tokenizer(list(prompts), truncation=False)["input_ids"]]
  longest = int(np.argmax(lengths)) if lengths else 0
  if lengths and lengths[longest] > clip.max_length:
    logging.warning("%d prompt(s) truncated to %d CLIP tokens, e.g. %r",
                    sum(n > clip.max_length for n in lengths), clip.max_length, prompts[longest])
  out = clip.tokenizer(list(prompts), padding="max_length", max_length=clip.max_length,
                       truncation=True, return_tensors="np")
  return out["input_ids"].astype(np.int32), out["attention_mask"].astype(np.int32)


_text_features = jax.jit(vision.clip_text_features, static_argnums=0)
TEXT_WIDTH_MULTIPLE = 8  # token columns computed: the longest prompt rounded up (few shapes)


def text_width(longest: int, max_length: int) -> int:
  """Token columns to compute for prompts of at most `longest` tokens (BOS and EOS included)."""
  return min(max_length, -(-max(longest, 1) // TEXT_WIDTH_MULTIPLE) * TEXT_WIDTH_MULTIPLE)



def text_embeddings(clip: vision.ClipModel, model_params, prompts: Sequence[str]) -> np.ndarray:
  """L2-normalised CLIP text embeddings [N, D] of prompts (host-side; batched, jitted).

  CLIP's text tower is causal and pools each row at its EOS token, so the padding columns after
  the longest prompt change nothing: they are not computed (`text_width`). The 80 templates over
  ImageNet-1k are 80,000 prompts of at most ~30 of 77 tokens: ~3× less work.
  """
  ids, mask = tokenize(clip, prompts)
  width = text_width(int(mask.sum(axis=1).max(initial=1)), ids.shape[1])
  ids, mask = ids[:, :width], mask[:, :width]
  n = len(ids)
  if n == 0:
    raise UserError("prompts is empty")
  batch = min(TEXT_BATCH, 1 << (n - 1).bit_length())  # few distinct compiled shapes
  out = []
  for start in range(0, n, batch):
    chunk_ids = ids[start:start + batch]
    chunk_mask = mask[start:start + batch]
    pad = batch - len(chunk_ids)
    chunk_ids = np.pad(chunk_ids, ((0, pad), (0, 0)), mode="edge")
    chunk_mask = np.pad(chunk_mask, ((0, pad), (0, 0)), mode="edge")
    features = _text_features(clip, model_params, chunk_ids, chunk_mask)
    out.append(np.asarray(features)[:batch - pad])
  features = np.concatenate(out)
  return features / np.linalg.norm(features, axis=-1, keepdims=True)


def zero_shot_class_embeddings(clip: vision.ClipModel, model_params, label_set: labels_lib.LabelSet,
                               templates: Sequence[str]) -> np.ndarray:
  """[K, D] class embeddings: per class the mean of its normalised template embeddings,
  renormalised (CLIP's ImageNet notebook)."""
  prompts = labels_lib.class_prompts(label_set, templates)              # [K][T]
  flat = text_embeddings(clip, model_params, [p for row in prompts for p in row])
  per_class = flat.reshape(len(label_set), len(templates), -1).mean(axis=1)
  return (per_class / np.linalg.norm(per_class, axis=-1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------------ loading --


def load_scorer(name: str, spec: ScorerSpec, label_set) -> Scorer:
  """Loads the model of `spec` and prepares it for `label_set` (a name or a `LabelSet`).

  CLIP scorers compute their zero-shot class embeddings here, once.
  """
  spec.validate(f"scorers.{name}")
  label_set = labels_lib.get_label_set(label_set)
  if spec.type == "clip":
    model, model_params = vision.load_clip(spec.model, spec.dtype)
    classes = labels_lib.get_label_set(spec.classes) if spec.classes else label_set
    label_map = labels_lib.map_label_sets(label_set, classes, model=f"scorer {name!r}")
    templates = labels_lib.get_templates(spec.templates)
    class_emb = zero_shot_class_embeddings(model, model_params, classes, templates)
    params = {"model": model_params, "class_emb": class_emb}
    output_names = classes.names
  else:
    if spec.torchvision:
      model, model_params = vision.load_torchvision_classifier(spec.model, spec.torchvision,
                                                               spec.dtype)
    else:
      model, model_params = vision.load_image_classifier(spec.model, spec.toy_kind, spec.dtype)
    label_map = labels_lib.map_labels(label_set, model.id2label, model=f"scorer {name!r} "
                                      f"({spec.model})", mode=spec.label_map)
    params = {"model": model_params}
    output_names = model.id2label
  return Scorer(name=name, spec=spec, model=model,
                preprocess=preprocess_lib.spec_from_processor(model.image_processor),
                label_set=label_set, label_map=label_map, output_names=tuple(output_names),
                params=params)


# ------------------------------------------------------------------------- pure image side --


def pixels(scorer: Scorer, images: jax.Array) -> jax.Array:
  """The model's input [P, h, w, 3] from images [P, H, W, 3] in [0, 1]."""
  x = preprocess_lib.preprocess(scorer.preprocess, images, quantize=scorer.spec.quantize)
  size = scorer.required_size
  if size is not None and tuple(x.shape[1:3]) != (size, size):
    raise UserError(f"scorer {scorer.name!r}: its image processor turns {images.shape[1]}x"
                    f"{images.shape[2]} images into {x.shape[1]}x{x.shape[2]}, but the model "
                    f"needs {size}x{size}")
  return x


def forward(scorer: Scorer, params, images: jax.Array) -> ScorerOutput:
  """Logits [P, C] (and CLIP image embeddings) of images [P, H, W, 3] in [0, 1]."""
  x = pixels(scorer, images)
  if scorer.type == "clip":
    image_emb = _normalise(vision.clip_image_features(scorer.model, params["model"], x))
    scale = vision.clip_logit_scale(params["model"])
    return ScorerOutput(scale * image_emb @ params["class_emb"].T, image_emb)
  return ScorerOutput(vision.classifier_logits(scorer.model, params["model"], x))


def logits(scorer: Scorer, params, images: jax.Array) -> jax.Array:
  """[P, C] logits over the scorer's output classes."""
  return forward(scorer, params, images).logits


def image_embeddings(scorer: Scorer, params, images: jax.Array) -> jax.Array:
  """[P, D] L2-normalised CLIP image embeddings."""
  if scorer.type != "clip":
    raise UserError(f"scorer {scorer.name!r} is a classifier; image embeddings need a CLIP")
  return forward(scorer, params, images).image_emb


def clip_score_from_embeddings(image_emb: jax.Array, text_emb: jax.Array,
                               weight: float = 100.0) -> jax.Array:
  """CLIPScore [P] = weight · max(cos(image, text), 0) of embeddings [P, D] (any norm)."""
  cosine = jnp.sum(_normalise(image_emb) * _normalise(text_emb), axis=-1)
  return weight * jnp.maximum(cosine, 0.0)


def clip_score(scorer: Scorer, params, images: jax.Array, text_emb: jax.Array) -> jax.Array:
  """CLIPScore [P] of each image with its prompt's text embedding [P, D] (`text_embeddings`)."""
  return clip_score_from_embeddings(image_embeddings(scorer, params, images), text_emb,
                                    scorer.spec.clip_score_weight)


# --------------------------------------------------------------------- logits → judgements --


def probabilities(logits_: jax.Array) -> jax.Array:
  return jax.nn.softmax(logits_, axis=-1)


def top_k(logits_: jax.Array, k: int = 5) -> jax.Array:
  """[P, k] indices of the k largest logits, best first."""
  return jax.lax.top_k(logits_, min(k, logits_.shape[-1]))[1]


def target_prob(logits_: jax.Array, target: jax.Array) -> jax.Array:
  """[P] softmax probability of the target class."""
  return jnp.take_along_axis(probabilities(logits_), target[:, None], axis=-1)[:, 0]


def target_logprob(logits_: jax.Array, target: jax.Array) -> jax.Array:
  """[P] log-softmax of the target class."""
  return jnp.take_along_axis(jax.nn.log_softmax(logits_, -1), target[:, None], axis=-1)[:, 0]


def margin(logits_: jax.Array, target: jax.Array) -> jax.Array:
  """[P] logit_y − max_{j≠y} logit_j (ATM, arXiv 2306.02583 §3; > 0 iff y is the unique top-1)."""
  target_logit = jnp.take_along_axis(logits_, target[:, None], axis=-1)[:, 0]
  is_target = jax.nn.one_hot(target, logits_.shape[-1], dtype=jnp.bool_)
  return target_logit - jnp.max(jnp.where(is_target, -jnp.inf, logits_), axis=-1)


def topk_hit(logits_: jax.Array, target: jax.Array, k: int) -> jax.Array:
  """[P] float 1.0 where the target is among the k largest logits."""
  return jnp.any(top_k(logits_, k) == target[:, None], axis=-1).astype(jnp.float32)
