"""Coarse-feature similarity (ATM, Du et al. 2023, arXiv 2306.02583 §4.2).

Two nouns whose cross-attention maps cover the same region entangle, and one object is lost.
From the sampler's per-step maps (`SampleOutput.attention_trajectory`, [P, S, h, w, L], heads
and layers averaged) each noun's map is its tokens' probabilities averaged over a range of steps;
the overlap of two maps is their cosine and the IoU of the maps thresholded at a fraction of
their maximum.
"""

from typing import Sequence

import numpy as np

from jaxdiffattack.errors import ConfigError


def word_token_indices(tokenizer, prompt: str, word: str, occurrence: int = 0) -> list[int]:
  """Positions (in the encoder's sequence, BOS = 0) of `word`'s tokens in `prompt`, its
  `occurrence`-th match (0 = first)."""
  tokens = tokenizer.tokenize(prompt)
  pieces = tokenizer.tokenize(word)
  matches = [i for i in range(len(tokens) - len(pieces) + 1)
             if tokens[i:i + len(pieces)] == pieces]
  if len(matches) <= occurrence:
    raise ValueError(f"word {word!r} (occurrence {occurrence}) is not in prompt {prompt!r}")
  start = 1 + matches[occurrence]                      # +1: the BOS token
  return list(range(start, start + len(pieces)))


def step_range(num_steps: int, fractions: Sequence[float]) -> slice:
  """Steps [lo·S, hi·S) of a sampler run (at least one step)."""
  lo, hi = fractions
  if not 0.0 <= lo < hi <= 1.0:
    raise ConfigError(f"config.attention.steps={tuple(fractions)!r} is invalid: use (lo, hi) "
                      "fractions of the run with 0 <= lo < hi <= 1, e.g. (0.0, 1.0)")
  start = min(int(lo * num_steps), num_steps - 1)
  return slice(start, max(start + 1, int(round(hi * num_steps))))


def word_maps(attention: np.ndarray, token_indices: Sequence[Sequence[int]],
              steps: slice) -> np.ndarray:
  """Per member and word: its map [P, K, h, w] = the mean over `steps` and over the word's
  tokens of the attention probabilities. attention [P, S, h, w, L]; token_indices [P][K] lists."""
  averaged = np.asarray(attention[:, steps], np.float64).mean(1)      # [P, h, w, L]
  return np.stack([np.stack([averaged[p, ..., list(idx)].mean(0) for idx in words])
                   for p, words in enumerate(token_indices)])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Cosine similarity [...] of maps [..., h, w]."""
  a = a.reshape(*a.shape[:-2], -1)
  b = b.reshape(*b.shape[:-2], -1)
  return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1),
                                      1e-30)


def thresholded(maps: np.ndarray, fraction: float) -> np.ndarray:
  """Maps [..., h, w] → bool: pixels at or above `fraction` × the map's maximum."""
  return maps >= fraction * maps.max((-2, -1), keepdims=True)


def iou(a: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
  """IoU [...] of the thresholded maps [..., h, w]."""
  ta, tb = thresholded(a, fraction), thresholded(b, fraction)
  return (ta & tb).sum((-2, -1)) / np.maximum((ta | tb).sum((-2, -1)), 1)


def upsample(maps: np.ndarray, size: int) -> np.ndarray:
  """Maps [..., h, w] repeated (nearest) to [..., size, size]."""
  factor = size // maps.shape[-1]
  return maps.repeat(factor, axis=-2).repeat(factor, axis=-1)


def mass_inside(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
  """Share [...] of each map's mass [..., h, w] inside a region mask [..., H, W] (bool), the map
  upsampled to the mask's size."""
  up = upsample(maps, masks.shape[-1])
  return (up * masks).sum((-2, -1)) / np.maximum(up.sum((-2, -1)), 1e-30)
