"""Polysemy / injected words (ATM, Du et al. 2023, arXiv 2306.02583 §4.3).

A word injected into a clean prompt can shift the sense of its noun. Measured as the move of the
judged class distribution: for each class and injected word, on the same seeds, the judged
classes of the clean and injected prompts, their total-variation distance, the share still judged
as the prompt's class, and (on the toy world) how often the injected colour / shape word is what
is drawn. Words come from a list or from an ATM attack's successful prompts (`attack_words`).
"""

import collections
import re
from typing import Iterable, Sequence

UNCLEAR = "unclear"


def injected_prompt(template: str, label: str, word: str) -> str:
  return template.format(label=label, word=word)


def distribution(preds: Sequence[str | None]) -> dict[str, float]:
  """Share of each judged class (None counted as `UNCLEAR`)."""
  counts = collections.Counter(UNCLEAR if p is None else p for p in preds)
  return {k: v / len(preds) for k, v in counts.items()}


def total_variation(p: dict, q: dict) -> float:
  """½ Σ |p − q| over the union of the classes."""
  return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def _words(text: str) -> list[str]:
  return re.findall(r"[a-z][a-z0-9'-]*", text.lower())


def attack_words(rows: Iterable[dict], limit: int) -> list[str]:
  """Words that ATM's successful prompts add to their clean prompt (results.jsonl rows with
  `prompt`, `successful_prompts`), most frequent first, at most `limit`."""
  counts = collections.Counter()
  for row in rows:
    clean = set(_words(row["prompt"]))
    for prompt in row.get("successful_prompts") or ():
      counts.update(w for w in set(_words(prompt)) if w not in clean)
  return [w for w, _ in counts.most_common(limit)]
