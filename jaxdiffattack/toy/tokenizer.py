"""A small byte-level BPE tokenizer in the CLIP file format.

``build_tokenizer_files(dir)`` writes ``vocab.json``, ``merges.txt``,
``tokenizer_config.json`` and ``special_tokens_map.json`` exactly as the
OpenAI CLIP / Stable Diffusion tokenizers ship them, so
``transformers.CLIPTokenizer.from_pretrained(dir)`` (and the fast tokenizer,
converted offline from the slow one) load it.

The merges are learned by plain BPE on the world's words plus a few hundred
common English words (``EXTRA_WORDS``), until every one of those words is a
single token; any other text still tokenizes through the 512 byte tokens.
"""
from __future__ import annotations

import collections
import json
import os
import pathlib

import regex

from jaxdiffattack.io import atomic_write_bytes
from jaxdiffattack.toy import world

MODEL_MAX_LENGTH = 77  # As Stable Diffusion.
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
# The CLIP pre-tokenization pattern (transformers' CLIPTokenizer, lower case).
_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+"""
    r"""|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)

# Words that name no class: for prompt searches over a neutral vocabulary.
EXTRA_WORDS = tuple("""
orange purple pink brown black white grey gray cyan magenta violet gold silver
dark light bright pale colorful colourful shiny matte hexagon diamond heart oval
rectangle ring dot line arrow moon sun shape object thing ball box block tile
big small large tiny huge little tall short wide narrow round sharp soft hard
smooth rough flat thick thin old new young good bad best beautiful ugly pretty
happy sad angry calm quiet loud fast slow hot cold warm cool wet dry clean dirty
simple plain fancy strange weird funny cute real fake famous rare common
one two three four five six seven eight nine ten many few some several every
single double pair group set lot top bottom left right center middle side front
back inside outside above below near far next under over behind between around
in on at to from with without by for into onto about like as is are was were be
been it its this that these those there here what which who where when why how
not no yes very too also just only more most less least much all any each both
other another same different first last second third dog cat bird fish horse
cow sheep pig mouse lion tiger bear car bus truck bike train plane boat ship
house home building city street road bridge tower park garden forest tree flower
grass leaf rock stone sand sea ocean river lake beach mountain hill sky cloud
rain snow ice fire water wood paper glass metal plastic cloth table chair bed
door window wall floor roof room kitchen cup bowl plate bottle book pen phone
computer screen lamp clock key bag hat shoe shirt coat man woman child boy girl
person people face hand eye hair head body friend family king queen doctor
teacher student artist painting sketch photograph photo picture image drawing
illustration render rendering cartoon poster logo icon sign symbol pattern
texture background foreground scene view style art design color colour light
shadow night day morning evening summer winter spring autumn food apple banana
bread cake pizza coffee tea milk egg cheese music song game toy robot computer
space planet star world earth nature animal plant machine vehicle weapon sword
shield crown flag map letter word number text high low quality detailed
realistic abstract minimal modern vintage classic digital photorealistic blurry
sharp focus close-up macro wide-angle studio lighting professional amateur
trending award winning masterpiece hd 4k 8k detailed intricate elegant epic
""".split())


def bytes_to_unicode() -> dict[int, str]:
  """GPT-2/CLIP's reversible byte -> printable unicode character map."""
  bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1)))
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return dict(zip(bs, [chr(c) for c in cs]))


def corpus_words(texts=None) -> tuple[str, ...]:
  """Pre-tokenized, byte-encoded words the BPE is trained on (sorted): of `texts` (default the
  toy world's words and EXTRA_WORDS)."""
  byte_encoder = bytes_to_unicode()
  words = set()
  for text in (world.world_words() + EXTRA_WORDS if texts is None else tuple(texts)):
    for piece in _PATTERN.findall(text.lower()):
      words.add("".join(byte_encoder[b] for b in piece.encode("utf-8")))
  return tuple(sorted(words))


def learn_merges(words: tuple[str, ...]) -> list[tuple[str, str]]:
  """Greedy BPE (most frequent pair first, ties broken by the pair) until
  every word is one symbol. Deterministic."""
  segs = [list(w[:-1]) + [w[-1] + "</w>"] for w in words]
  merges = []
  while True:
    counts = collections.Counter()
    for seg in segs:
      for pair in zip(seg, seg[1:]):
        counts[pair] += 1
    if not counts:
      return merges
    best = min(counts, key=lambda p: (-counts[p], p))
    merges.append(best)
    joined = best[0] + best[1]
    for k, seg in enumerate(segs):
      out, i = [], 0
      while i < len(seg):
        if i + 1 < len(seg) and (seg[i], seg[i + 1]) == best:
          out.append(joined)
          i += 2
        else:
          out.append(seg[i])
          i += 1
      segs[k] = out


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
  """CLIP vocab order: bytes, bytes + '</w>', merge results, BOS, EOS."""
  base = list(bytes_to_unicode().values())
  tokens = base + [t + "</w>" for t in base] + ["".join(m) for m in merges]
  vocab = {}
  for tok in tokens + [BOS, EOS]:
    vocab.setdefault(tok, len(vocab))
  return vocab


def _atomic_write(path: pathlib.Path, text: str) -> None:
  atomic_write_bytes(path, text.encode("utf-8"))


def build_tokenizer_files(out_dir: str | os.PathLike,
                          model_max_length: int = MODEL_MAX_LENGTH, texts=None) -> int:
  """Writes the tokenizer files into out_dir; returns the vocab size. `texts`: the words the
  merges make single tokens (default the toy world's, `corpus_words`)."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  merges = learn_merges(corpus_words(texts))
  vocab = build_vocab(merges)
  _atomic_write(out / "vocab.json", json.dumps(vocab, ensure_ascii=False))
  _atomic_write(out / "merges.txt", "#version: 0.2\n" + "".join(
      f"{a} {b}\n" for a, b in merges))
  special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS,
             "pad_token": EOS}
  _atomic_write(out / "special_tokens_map.json", json.dumps(special, indent=2))
  config = dict(special, model_max_length=model_max_length,
                tokenizer_class="CLIPTokenizer", errors="replace",
                do_lower_case=True, add_prefix_space=False,
                clean_up_tokenization_spaces=True)
  _atomic_write(out / "tokenizer_config.json", json.dumps(config, indent=2))
  return len(vocab)
