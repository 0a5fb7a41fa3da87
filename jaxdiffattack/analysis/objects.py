"""Named objects of a prompt and where they are in an image (toy world: the oracle's reading).

A prompt names objects as (modifier, noun) phrases, e.g. ("red", "circle"). On the toy world an
object's colour is its identity in a two-object scene (pair prompts name two colours), so a named
object is *drawn* when the oracle reads an object of its colour, and *correct* (survives, in ATM's
sense, arXiv 2306.02583 §4) when that object is read as the named class. Its region is that
object's mask, its position the mask's centroid.
"""

from typing import NamedTuple, Sequence

import numpy as np

from jaxdiffattack.toy import oracle
from jaxdiffattack.toy import world


class Phrase(NamedTuple):
  modifier: str   # e.g. "red"
  noun: str       # e.g. "circle"

  @property
  def label(self) -> str:
    return f"{self.modifier} {self.noun}"


class Found(NamedTuple):
  """A named object in one image."""
  drawn: bool                      # an object of the phrase's colour is there
  correct: bool                    # ... and is read as the named class
  shape: str | None                # the shape read for it (None: not drawn or unreadable)
  mask: np.ndarray                 # [H, W] bool (all False when not drawn)
  centroid: tuple[float, float]    # (x, y) pixels; NaN when not drawn


def phrase(label: str) -> Phrase:
  modifier, noun = label.split()
  return Phrase(modifier, noun)


def find(reading: oracle.Reading, named: Phrase) -> Found:
  """The named object in an oracle reading: its largest object of the named colour."""
  matches = [o for o in reading.objects if o.colour == named.modifier]
  if not matches:
    return Found(False, False, None, np.zeros((world.IMAGE_SIZE,) * 2, bool), (np.nan, np.nan))
  best = max(matches, key=lambda o: o.area)
  return Found(True, best.label == named.label, best.shape, best.mask, best.centroid)


def find_all(images: np.ndarray, named: Sequence[Sequence[Phrase]]) -> tuple[list, list]:
  """(readings, found): per image its oracle reading and a Found per named phrase."""
  readings = oracle.read(images)
  return readings, [[find(r, p) for p in phrases] for r, phrases in zip(readings, named)]
