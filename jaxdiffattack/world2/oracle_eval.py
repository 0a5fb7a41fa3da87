"""How often the world-2 oracle agrees with the truth on rendered scenes of a split.

Every rendered scene is judged twice: against its true facts (`captions.spec_facts`: every
group with its size and texture, the relation; each fact should *hold*) and against a caption
with one fact made false (`perturb`): a group's hue or shape swapped for a close neighbour
(`scene.HUE_NEIGHBOURS` / `SHAPE_NEIGHBOURS`; the "object" fact should be *violated*), its count
changed ("count"), its texture changed ("texture"), or the relation's groups swapped
("relation"). Agreement is counted per fact kind, separately for single-object and multi-object
scenes, as the share of facts the oracle gets right, calls unclear, or gets wrong.
"""
from __future__ import annotations

import collections
from typing import NamedTuple

import numpy as np

from jaxdiffattack.world2 import captions as captions_lib
from jaxdiffattack.world2 import oracle
from jaxdiffattack.world2 import render as render_lib
from jaxdiffattack.world2 import scene as scene_lib

PERTURBATIONS = ("hue", "shape", "count", "texture", "relation")
_KIND_OF = {"hue": "object", "shape": "object", "count": "count", "texture": "texture",
            "relation": "relation"}


class Perturbed(NamedTuple):
  facts: captions_lib.Facts
  kind: str        # the fact kind made false ("object", "count", "texture", "relation")
  group: int       # the group it concerns (-1: the relation)
  how: str         # PERTURBATIONS entry


def perturb(facts: captions_lib.Facts, rng: np.random.Generator) -> Perturbed:
  """The facts with one made false (see the module docstring); classes stay distinct."""
  options = ["hue", "shape", "count", "texture"] + (["relation"] if facts.relation else [])
  how = options[rng.integers(len(options))]
  groups = list(facts.groups)
  if how == "relation":
    return Perturbed(facts._replace(groups=(groups[1], groups[0])), "relation", -1, how)
  g = int(rng.integers(len(groups)))
  group = groups[g]
  taken = {x.cls for x in groups}
  hue, shape = scene_lib.class_hue(group.cls), scene_lib.class_shape(group.cls)
  if how in ("hue", "shape"):
    if how == "hue":
      names = [f"{h} {shape}" for h in scene_lib.HUE_NEIGHBOURS[hue]]
    else:
      names = [f"{hue} {s}" for s in scene_lib.SHAPE_NEIGHBOURS[shape]]
    ids = [scene_lib.CLASS2ID[n] for n in names if n in scene_lib.CLASS2ID
           and scene_lib.CLASS2ID[n] not in taken]
    if not ids:
      how = "count"
    else:
      groups[g] = group._replace(cls=int(ids[rng.integers(len(ids))]), texture=None)
  if how == "texture" and group.texture is None:  # Unnamed: the true texture is unknown.
    how = "count"
  if how == "count":
    groups[g] = group._replace(count=3 - group.count)
  if how == "texture":
    textures = [t for t in scene_lib.TEXTURES if t != group.texture]
    groups[g] = group._replace(texture=textures[rng.integers(len(textures))])
  return Perturbed(facts._replace(groups=tuple(groups)), _KIND_OF[how], g, how)


def evaluate(split: str, count: int, size: int, seed: int = 0, start: int = 0) -> dict:
  """Agreement of the oracle with the truth on `count` scenes of a split rendered at `size`."""
  specs = scene_lib.sample_scenes(split, start, count, seed)
  images = render_lib.render_batch(specs, size)
  readings = oracle.read(images)
  # counts[(scene kind, caption kind, fact kind)][outcome]
  counts = collections.defaultdict(collections.Counter)
  overall = collections.defaultdict(collections.Counter)
  class_reads = collections.Counter()
  examples = collections.defaultdict(list)
  for i, (spec, reading) in enumerate(zip(specs, readings)):
    scene_kind = "single" if len(spec.objects) == 1 else "multi"
    truth = captions_lib.spec_facts(spec)
    v = oracle.judge_reading(reading, truth)
    overall[(scene_kind, "true")][v.verdict] += 1
    for f in v.facts:
      outcome = {"holds": "right", "unclear": "unclear", "violated": "wrong"}[f.verdict]
      counts[(scene_kind, "true", f.kind)][outcome] += 1
      if outcome == "wrong" and len(examples["true"]) < 10:
        examples["true"].append(f"{split}[{i}] {f.text}: {f.reason}")
    rng = np.random.default_rng([seed, 7, i])
    p = perturb(truth, rng)
    v = oracle.judge_reading(reading, p.facts)
    overall[(scene_kind, "perturbed")][v.verdict] += 1
    target = [f for f in v.facts if f.kind == p.kind and f.group == p.group]
    verdict = target[0].verdict if target else "missing"
    outcome = {"violated": "right", "unclear": "unclear"}.get(verdict, "wrong")
    counts[(scene_kind, f"perturbed:{p.how}", p.kind)][outcome] += 1
    if outcome == "wrong" and len(examples["perturbed"]) < 10:
      examples["perturbed"].append(f"{split}[{i}] {p.how}: {verdict}")
    for o in spec.objects:  # Object reading: the read object nearest each drawn one.
      near = min(reading.objects, default=None,
                 key=lambda r: np.hypot(r.centroid[0] - o.cx, r.centroid[1] - o.cy))
      if near is None or np.hypot(near.centroid[0] - o.cx, near.centroid[1] - o.cy) > o.radius:
        class_reads["missed"] += 1
      elif near.label is None:
        class_reads["unreadable"] += 1
      else:
        class_reads["right" if near.label == scene_lib.CLASSES[o.cls] else "wrong"] += 1

  def rates(c):
    n = sum(c.values())
    return {"n": n, **{k: round(v / n, 4) for k, v in sorted(c.items())}}

  return {
      "split": split, "scenes": count, "size": size, "seed": seed,
      "overall": {f"{a}/{b}": rates(c) for (a, b), c in sorted(overall.items())},
      "facts": {f"{a}/{b}/{k}": rates(c) for (a, b, k), c in sorted(counts.items())},
      "objects": rates(class_reads),
      "examples_wrong": dict(examples),
  }
