"""Word position (ATM, Du et al. 2023, arXiv 2306.02583 §4.4): the same words in every order.

Objects are named by (modifier, noun) phrases; an order is a permutation of the phrases and, for
each phrase, whether its modifier comes before or after its noun ("red circle" / "circle red").
With N phrases there are N! · 2^N orders; on fixed seeds, which object survives is counted per
order.
"""

import itertools
from typing import Sequence

from jaxdiffattack.analysis.objects import Phrase

PLACEMENTS = ("before", "after")   # the modifier relative to its noun



def phrase_text(p: Phrase, placement: str) -> str:
  words = (p.modifier, p.noun) if placement == "before" else (p.noun, p.modifier)
  return " ".join(w for w in words if w)


def word_orders(phrases: Sequence[Phrase], template: str,
                placements: Sequence[str] = PLACEMENTS) -> list[tuple[str, str, tuple]]:
  """Every order of the phrases: [(prompt, order key, named phrases in prompt order)].

  The key names the permutation by the phrases' letters in the given order (A, B, ...) and the
  modifier placement of each named phrase, e.g. "BA/before+after".
  """
  letters = "ABCDEFGH"[:len(phrases)]
  out = []
  for perm in itertools.permutations(range(len(phrases))):
    for place in itertools.product(placements, repeat=len(phrases)):
      named = tuple(phrases[i] for i in perm)
      prompt = template.format(*[phrase_text(p, pl) for p, pl in zip(named, place)])
      key = "".join(letters[i] for i in perm) + "/" + "+".join(place)
      out.append((prompt, key, named))
  return out
