"""Named objects of a prompt, and object finders that say whether and where each is in an image.

A prompt names objects as (modifier, noun) phrases: the noun is a class name's last word, the
modifier the words before it (toy: "red circle" → ("red", "circle"); ImageNet: "great white
shark" → ("great white", "shark"), "goldfish" → ("", "goldfish")). An object finder returns, per
image, its judged class and, per named phrase, a `Found`: whether the object is drawn, whether it is
*correct* (survives, in ATM's sense, arXiv 2306.02583 §4), its region and its centroid.
Registered in `FINDERS` (config key `finder`; one function + one line to add one):

  oracle      the toy world's oracle (`toy.oracle`): an object's colour is its identity in a
              two-object toy scene (pair prompts name two colours), so a named object is drawn
              when the oracle reads an object of its colour, correct when that object is read as
              the named class; its region is that object's mask. It reads every object with
              v1's object reading (`toy.oracle.read`): oracle v2 (`judges`' "oracle") judges
              an image for its prompt from its largest object, a finder needs each object.
  world2_oracle  world 2's scene oracle (`world2.oracle.read`): as `oracle`, an object's hue
              (a class name's first word) is its identity, drawn when an object of that hue is
              read, correct when the largest such object is read as the named class, its region
              that object's mask; the judged class is the largest read object's.
  classifier  any image classifier (`objectives.make_scoring(config)`, role "evaluator", objectives
              "pred" and "top5_hit"), for real models: the judged class is its top-1 (the
              evaluator's `judges.Verdict`: a class name of its outputs); a named
              object is drawn when its class is in the top 5, correct when it is the top-1 (one
              named object) or in the top 5 (several); its region is where its noun's
              cross-attention map (the sampler's capture, steps `config.attention.steps`) is at
              least `config.attention.iou_fraction` of its maximum.
"""

from typing import Callable, NamedTuple

import numpy as np

from jaxdiffattack.analysis import overlap


class Phrase(NamedTuple):
  modifier: str   # e.g. "red" ("" when the class name is one word)
  noun: str       # e.g. "circle"

  @property
  def label(self) -> str:
    return f"{self.modifier} {self.noun}".strip()


class Found(NamedTuple):
  """A named object in one image."""
  drawn: bool                      # the object is there
  correct: bool                    # ... and is judged the named class
  mask: np.ndarray                 # [H, W] bool (all False when not drawn)
  centroid: tuple[float, float]    # (x, y) pixels of the mask; NaN when empty


def phrase(label: str) -> Phrase:
  *modifier, noun = label.split()
  return Phrase(" ".join(modifier), noun)


def mask_centroid(mask: np.ndarray) -> tuple[float, float]:
  """(x, y) of a bool mask [H, W], pixel centres at integer coordinates; NaN when empty."""
  ys, xs = np.nonzero(mask)
  return (float(xs.mean()), float(ys.mean())) if len(xs) else (np.nan, np.nan)


# A finder: (images [P, H, W, 3], attention [P, S, h, w, L], prompts [P], phrases [P][K]) →
# (judged class or None [P], Found [P][K]).
Finder = Callable[..., tuple[list, list]]


def oracle_finder(config, sd) -> Finder:
  del config, sd
  from jaxdiffattack.toy import oracle  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.toy import world  # pylint: disable=g-import-not-at-top

  def find(reading, named: Phrase) -> Found:
    matches = [o for o in reading.objects if o.colour == named.modifier]
    if not matches:
      return Found(False, False, np.zeros((world.IMAGE_SIZE,) * 2, bool), (np.nan, np.nan))
    best = max(matches, key=lambda o: o.area)
    return Found(True, best.label == named.label, best.mask, best.centroid)

  def find_objects(images, attention, prompts, phrases):
    del attention, prompts
    readings = oracle.read(images)
    return ([r.label for r in readings],
            [[find(r, p) for p in named] for r, named in zip(readings, phrases)])
  return find_objects


def world2_oracle_finder(config, sd) -> Finder:
  del config, sd
  from jaxdiffattack.world2 import oracle  # pylint: disable=g-import-not-at-top

  def find(reading, named: Phrase, size: int) -> Found:
    hue = named.label.split()[0]
    matches = [o for o in reading.objects if o.hue == hue]
    if not matches:
      return Found(False, False, np.zeros((size, size), bool), (np.nan, np.nan))
    best = max(matches, key=lambda o: o.area)
    return Found(True, best.label == named.label, best.mask, mask_centroid(best.mask))

  def find_objects(images, attention, prompts, phrases):
    del attention, prompts
    readings = oracle.read(images)
    size = np.asarray(images).shape[1]
    return ([next((o.label for o in r.objects if o.label), None) for r in readings],
            [[find(r, p, size) for p in named] for r, named in zip(readings, phrases)])
  return find_objects


def classifier_finder(config, sd) -> Finder:
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import judges as judges_lib  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import labels as labels_lib  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import objectives  # pylint: disable=g-import-not-at-top
  # The evaluator is also the judge whose verdict names each image's class (`judges`).
  scoring = objectives.make_scoring(ml_collections.ConfigDict(
      {"label_set": config.label_set, "scoring": config.scoring, "judges": ("evaluator",)}))
  scoring.check_names(["evaluator/pred", "evaluator/top5_hit"], "scoring.objectives")
  names = labels_lib.class_names(config.label_set)
  judge = judges_lib.make_judges(("evaluator",), scoring, names, key="scoring.roles")
  steps = overlap.step_range(config.num_steps, config.attention.steps)
  fraction = config.attention.iou_fraction

  def find_objects(images, attention, prompts, phrases):
    images = np.asarray(images)
    first = [named[0].label if named else names[0] for named in phrases]
    preds = list(judge.read(scoring.score(images, labels=first))["evaluator"].pred)
    count = len(phrases[0]) if phrases else 0
    hits = [scoring.score(images, labels=[named[k].label for named in phrases])
            ["evaluator/top5_hit"] for k in range(count)]
    maps = overlap.word_maps(attention, [
        [overlap.word_token_indices(sd.tokenizer, prompt, p.noun) for p in named]
        for prompt, named in zip(prompts, phrases)], steps) if count else None
    found = []
    for i, named in enumerate(phrases):
      row = []
      for k, p in enumerate(named):
        drawn = bool(hits[k][i] > 0.5)
        correct = preds[i] == p.label if count == 1 else drawn
        mask = overlap.upsample(overlap.thresholded(maps[i, k], fraction), images.shape[1])
        mask = mask & drawn
        row.append(Found(drawn, correct, mask, mask_centroid(mask)))
      found.append(row)
    return preds, found
  return find_objects


FINDERS: dict[str, Callable[..., Finder]] = {"oracle": oracle_finder,
                                             "world2_oracle": world2_oracle_finder,
                                             "classifier": classifier_finder}
# Finders whose regions are the objects' own masks (not the cross-attention maps).
MASK_FINDERS = ("oracle", "world2_oracle")
