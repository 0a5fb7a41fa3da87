"""World 2's tokenizer: the toy's CLIP-format byte-level BPE (`toy.tokenizer`), its merges
learned on world 2's caption vocabulary (`captions.vocabulary`: every word, digit and
punctuation piece the grammar can write) plus the toy's neutral English words
(`toy.tokenizer.EXTRA_WORDS`, for prompt searches over words that name nothing), so every
grammar word is one token and a caption's CLIP length is `captions.num_tokens`.

``build_tokenizer_files(dir)`` writes vocab.json, merges.txt, tokenizer_config.json and
special_tokens_map.json; ``transformers.CLIPTokenizer.from_pretrained(dir)`` loads them.
"""
from __future__ import annotations

import os

from jaxdiffattack.toy import tokenizer as toy_tokenizer
from jaxdiffattack.world2 import captions

MODEL_MAX_LENGTH = toy_tokenizer.MODEL_MAX_LENGTH


def texts() -> tuple[str, ...]:
  """The words the BPE is trained on."""
  return tuple(sorted(set(captions.vocabulary()) | set(toy_tokenizer.EXTRA_WORDS)))


def build_tokenizer_files(out_dir: str | os.PathLike,
                          model_max_length: int = MODEL_MAX_LENGTH) -> int:
  """Writes the tokenizer files into out_dir; returns the vocab size."""
  return toy_tokenizer.build_tokenizer_files(out_dir, model_max_length, texts())
