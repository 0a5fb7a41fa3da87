"""How a clean world-2 image fails its caption: one kind per image, from the scene oracle's facts.

Issue #23 item 4 asks that most clean failures be *readable* — another class drawn, an object
missing or duplicated, attributes swapped between objects — not unreadable blobs; issue #26 item 1
picks search targets by how often the clean generator fails. `failure_kind` maps the oracle's
assessment of one image (`oracle.CaptionAssessment`) against the caption's facts
(`captions.Facts`) to a `FailureKind` (`KINDS`), by the first rule that applies:

  holds        every fact holds;
  unreadable   no fact violated, some unclear (an unreadable object, a texture or relation the
               oracle cannot tell): the oracle's verdict "unclear";
  swapped      a named object is missing and a drawn object carries the hue of one named group
               and the shape of another (attributes bound to the wrong object: "a red circle and
               a blue square" drawn as a red square and a blue circle; `drawn`: the largest
               such object, `detail`: all of them);
  other_class  a named object is missing and another class is drawn in its place (`drawn`: the
               largest such object; `neighbour`: "hue" when it is the expected class's hue
               neighbour of the same shape (`scene.HUE_NEIGHBOURS`), "shape" when its shape
               neighbour of the same hue (`scene.SHAPE_NEIGHBOURS`), else "");
  missing      a named object is missing and nothing unnamed is drawn;
  count        every named class is drawn, but one in the wrong number (`detail` "more":
               duplicated, "fewer");
  relation     the objects are drawn, but not left of / above each other as stated;
  texture      ... with another texture than the caption names;
  extra        ... and something the caption does not name is drawn as well.
"""
from __future__ import annotations

from typing import NamedTuple

from jaxdiffattack.world2 import captions as captions_lib
from jaxdiffattack.world2 import oracle as oracle_lib
from jaxdiffattack.world2 import scene as scene_lib

KINDS = ("holds", "unreadable", "swapped", "other_class", "missing", "count", "relation",
         "texture", "extra")
FAILURE_KINDS = KINDS[2:]        # the readable failures (the oracle's "violated")
NEIGHBOURS = ("hue", "shape", "")


class FailureKind(NamedTuple):
  kind: str              # KINDS entry
  expected: str | None   # the named class the failure is about (None: holds / extra / unreadable)
  drawn: str | None      # other_class / swapped: the class drawn instead
  neighbour: str         # other_class: NEIGHBOURS entry ("" otherwise)
  detail: str            # count: "more" / "fewer"; swapped: every mixed class drawn (largest
                         # first); unreadable: the oracle's reason

  def record(self) -> dict:
    return self._asdict()


def neighbour(expected: str, drawn: str) -> str:
  """"hue" when `drawn` is a hue neighbour of class `expected` with its shape, "shape" when a shape
  neighbour with its hue, else ""."""
  hue, shape = expected.split(" ", 1)
  hue2, shape2 = drawn.split(" ", 1)
  if shape == shape2 and hue2 in scene_lib.HUE_NEIGHBOURS[hue]:
    return "hue"
  if hue == hue2 and shape2 in scene_lib.SHAPE_NEIGHBOURS[shape]:
    return "shape"
  return ""


def failure_kind(assessment: oracle_lib.CaptionAssessment,
                 facts: captions_lib.Facts) -> FailureKind:
  """The `FailureKind` of one image (see the module docstring); `facts` are the caption's."""
  if assessment.verdict == "holds":
    return FailureKind("holds", None, None, "", "")
  if assessment.verdict == "unclear":
    return FailureKind("unreadable", None, None, "", assessment.reason)
  violated = [f for f in assessment.facts if f.verdict == "violated"]
  kinds = {f.kind for f in violated}
  named = [scene_lib.CLASSES[g.cls] for g in facts.groups]
  drawn = [o.label for o in assessment.reading.objects if o.label]  # largest first
  missing = [f.group for f in violated if f.kind == "object"]
  if missing:
    unnamed = [d for d in drawn if d not in named]
    expected = named[missing[0]]
    for gi in missing:   # a drawn object that mixes the hue of one named group and the shape
      hue, shape = named[gi].split(" ", 1)   # of another, either way round
      for other in named:
        if other == named[gi]:
          continue
        hue2, shape2 = other.split(" ", 1)
        mixes = {f"{hue} {shape2}", f"{hue2} {shape}"} - set(named)
        hit = [d for d in unnamed if d in mixes]
        if hit:
          return FailureKind("swapped", named[gi], hit[0], "", ", ".join(hit))
    if unnamed:
      return FailureKind("other_class", expected, unnamed[0], neighbour(expected, unnamed[0]), "")
    return FailureKind("missing", expected, None, "", "")
  for kind in ("count", "relation", "texture"):
    if kind in kinds:
      fact = next(f for f in violated if f.kind == kind)
      expected = named[fact.group] if fact.group >= 0 else None
      detail = ""
      if kind == "count":
        n_drawn = sum(d == expected for d in drawn)
        detail = "more" if n_drawn > facts.groups[fact.group].count else "fewer"
      return FailureKind(kind, expected, None, "", detail)
  if "extra" in kinds:
    extra = [d for d in drawn if d not in named]
    return FailureKind("extra", None, extra[0] if extra else None, "", "")
  raise ValueError(f"world2.failures: a violated assessment with no violated fact: "
                   f"{assessment.reason!r}")  # Never: the oracle's verdict is its facts'.
