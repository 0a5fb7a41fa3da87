"""A transformers `config.json` read into a typed, frozen config of the project's own modules.

Each model (`clip`, `vit`, `resnet`) declares its config as a frozen dataclass whose fields are the
config.json keys it implements, with transformers' defaults (a key missing from config.json means
its default there too). `parse` fills one from the JSON dict and sorts every other key into:

  * ignored: keys every transformers config carries that do not change a forward pass (generation
    settings, label maps, dtype and version notes: `GENERIC_KEYS`) plus the model's own
    training-only keys (dropout rates, initialiser scales);
  * pinned: keys whose value must be the one the module implements (e.g. a ViT's `pooler_act` is
    irrelevant because the classifier has no pooler, but a ResNet `layer_type` must be "basic" or
    "bottleneck"); a different value is refused;
  * anything else: an unknown option, refused — a checkpoint relying on a feature the modules do
    not implement must not load and silently compute something else.

Errors are one-line `ConfigError`s naming the file, the key and the value.
"""

import dataclasses
import functools
import json
import pathlib
import types
import typing
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax

from jaxdiffattack.errors import ConfigError


def quick_gelu(x: jax.Array) -> jax.Array:
  """x · σ(1.702 x): the GELU approximation OpenAI's CLIP was trained with."""
  return x * jax.nn.sigmoid(1.702 * x)


# config `hidden_act` name → function. A new activation is one line here.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "quick_gelu": quick_gelu,
    "gelu": functools.partial(nn.gelu, approximate=False),          # erf form (PyTorch default)
    "gelu_new": functools.partial(nn.gelu, approximate=True),       # tanh form
    "gelu_pytorch_tanh": functools.partial(nn.gelu, approximate=True),
    "relu": nn.relu,
}

# Keys of every transformers PretrainedConfig (4.x) that do not affect a forward pass here,
# plus keys older releases wrote (torch_dtype, gradient_checkpointing, ...).
GENERIC_KEYS = frozenset({
    "_name_or_path", "_commit_hash", "_attn_implementation_autoset", "add_cross_attention",
    "architectures", "bad_words_ids", "begin_suppress_tokens", "bos_token_id",
    "chunk_size_feed_forward", "cross_attention_hidden_size", "decoder_start_token_id",
    "diversity_penalty", "do_sample", "dtype", "early_stopping", "encoder_no_repeat_ngram_size",
    "eos_token_id", "exponential_decay_length_penalty", "finetuning_task", "forced_bos_token_id",
    "forced_eos_token_id", "gradient_checkpointing", "id2label", "is_decoder",
    "is_encoder_decoder", "label2id", "length_penalty", "max_length", "min_length", "model_type",
    "no_repeat_ngram_size", "num_beam_groups", "num_beams", "num_labels",
    "num_return_sequences", "output_attentions", "output_hidden_states", "output_scores",
    "pad_token_id", "prefix", "problem_type", "pruned_heads", "remove_invalid_values",
    "repetition_penalty", "return_dict", "return_dict_in_generate", "sep_token_id",
    "suppress_tokens", "task_specific_params", "temperature", "tf_legacy_loss",
    "tie_encoder_decoder", "tie_word_embeddings", "tokenizer_class", "top_k", "top_p",
    "torch_dtype", "torchscript", "transformers_version", "typical_p", "use_bfloat16",
    "use_cache",
})

def read_json(path: pathlib.Path) -> dict[str, Any]:
  """config.json as a dict; one-line error when missing or not a JSON object."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise ConfigError(f"{path}: missing; a transformers checkpoint directory holds config.json")
  try:
    raw = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConfigError(f"{path}: not valid JSON ({e.__class__.__name__}: line "
                      f"{getattr(e, 'lineno', '?')})") from None
  if not isinstance(raw, dict):
    raise ConfigError(f"{path}: holds a JSON {type(raw).__name__}, not an object")
  return raw


def _coerce(value: Any, annotation: Any, source: str, key: str) -> Any:
  """JSON value → the field's type (lists → tuples); one-line error on a type mismatch."""
  origin = typing.get_origin(annotation)
  if origin in (typing.Union, types.UnionType):
    options = typing.get_args(annotation)
    if value is None and type(None) in options:
      return None
    annotation = next(a for a in options if a is not type(None))
    origin = typing.get_origin(annotation)
  if origin is tuple:
    if not isinstance(value, (list, tuple)):
      raise ConfigError(f"{source}: {key}={value!r} is invalid: expected a list")
    item = typing.get_args(annotation)[0]
    return tuple(_coerce(v, item, source, key) for v in value)
  if annotation is bool:
    if not isinstance(value, bool):
      raise ConfigError(f"{source}: {key}={value!r} is invalid: expected true or false")
    return value
  if annotation is int:
    if isinstance(value, bool) or not isinstance(value, int):
      raise ConfigError(f"{source}: {key}={value!r} is invalid: expected an integer")
    return value
  if annotation is float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(f"{source}: {key}={value!r} is invalid: expected a number")
    return float(value)
  if annotation is str and not isinstance(value, str):
    raise ConfigError(f"{source}: {key}={value!r} is invalid: expected a string")
  return value


def parse(cls, raw: Mapping[str, Any], source: str, *, ignored: frozenset = frozenset(),
          pinned: Mapping[str, tuple] | None = None, choices: Mapping[str, tuple] | None = None):
  """A `cls` (frozen dataclass) from a config.json dict.

  Args:
    cls: the dataclass; its fields are the keys read (type hints drive the conversion).
    raw: the JSON object.
    source: what to name in errors (the file, and the sub-config for nested ones).
    ignored: model-specific keys accepted without effect (training-only settings).
    pinned: key → the values the module implements; others are refused.
    choices: field → allowed values (e.g. `hidden_act` → ACTIVATIONS).
  """
  hints = typing.get_type_hints(cls)
  fields = {f.name for f in dataclasses.fields(cls) if f.init}
  pinned = dict(pinned or {})
  values = {}
  for key, value in raw.items():
    if key in fields:
      values[key] = _coerce(value, hints[key], source, key)
    elif key in pinned:
      if value not in pinned[key]:
        raise ConfigError(f"{source}: {key}={value!r} is not supported (implemented: "
                          f"{' or '.join(repr(v) for v in pinned[key])})")
    elif key not in GENERIC_KEYS and key not in ignored:
      raise ConfigError(f"{source}: unknown config option {key!r}={value!r}; the project's "
                        f"{cls.__name__} does not implement it")
  for key, allowed in (choices or {}).items():
    value = values.get(key, getattr(cls, key, None))
    if value not in allowed:
      raise ConfigError(f"{source}: {key}={value!r} is not supported; use one of "
                        f"{sorted(allowed)}")
  return cls(**values)


def id2label(raw: Mapping[str, Any], source: str) -> tuple[str, ...]:
  """A classifier's output names in output order, from `id2label` (transformers' default when
  absent: `num_labels` outputs, default 2, named LABEL_i)."""
  mapping = raw.get("id2label")
  if mapping is None:
    count = raw.get("num_labels", 2)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
      raise ConfigError(f"{source}: num_labels={count!r} is invalid: a positive integer")
    return tuple(f"LABEL_{i}" for i in range(count))
  if not isinstance(mapping, dict) or not mapping:
    raise ConfigError(f"{source}: id2label={mapping!r} is invalid: a non-empty object")
  try:
    indices = sorted(int(k) for k in mapping)
  except ValueError:
    raise ConfigError(f"{source}: id2label has a non-integer key; keys are output indices "
                      "'0', '1', ...") from None
  if indices != list(range(len(indices))):
    raise ConfigError(f"{source}: id2label keys are not 0..{len(indices) - 1}")
  return tuple(str(mapping[str(i)] if str(i) in mapping else mapping[i]) for i in indices)
