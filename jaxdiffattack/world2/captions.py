"""World 2's caption grammar: every caption is generated FROM a scene, and parses back to it.

A caption is ``[prefix] body [background] [, filler, filler, ...]``:

* body: noun phrases (NPs) of the scene's groups joined by a `BODIES` template: one group
  ("two red circles"), a relation ("{A} to the left of {B}", "{B} below {A}", "{A} on the
  left and {B} on the right", ...: A is the group left of / above B) or a list ("{A} and {B}",
  "{A}, {B} and {C}", ...);
* NP: ``(a|an|one|two) [size] [texture adjective] <hue> <shape> [texture phrase]`` (`noun_phrase`),
  the size named only when small or large, the texture by an adjective ("striped") or a
  phrase ("with a ring pattern") or not at all;
* background: a phrase naming its kind ("on a star field", ...), or nothing;
* prefix and fillers: framing and style words (`PREFIXES`, `FILLERS`) that name no hue, shape,
  texture, size, count or relation, appended until a drawn target length, so captions run from
  4 to `MAX_TOKENS` = 60 CLIP tokens and every position up to 60 is used.

Polysemy: "orange" names a hue and the fruit shape ("an orange orange", "a green orange");
"star" the shape ("a red star") and the background ("on a star field"); "ring" the shape ("a
teal ring") and the texture ("with a ring pattern", "a ring-patterned blue square").

`Facts` is what a caption asserts (per group: class, count, size and texture when named; the
relation; the background when named). ``caption(spec, rng)`` returns (text, facts) and
``parse(text) == facts`` exactly (tests/world2_captions_test.py); the oracle judges `Facts`.

Token counts: the world's BPE (`tokenizer`) makes every grammar word one token, so a caption's
CLIP length is the number of its CLIP pre-tokenizer pieces (`num_tokens`).
"""
from __future__ import annotations

import re
from typing import NamedTuple, Sequence

import numpy as np

from jaxdiffattack.errors import UserError
from jaxdiffattack.toy import tokenizer as toy_tokenizer
from jaxdiffattack.world2 import scene as scene_lib

MAX_TOKENS = 60
MIN_TOKENS = 4

SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
TEXTURE_ADJECTIVES = {"flat": ("flat", "solid"), "striped": ("striped",),
                      "ring": ("ring-patterned",), "dotted": ("dotted", "spotted")}
TEXTURE_PHRASES = {"striped": ("with stripes",), "ring": ("with a ring pattern",),
                   "dotted": ("with dots", "with polka dots")}
SHAPE_NAMES = {"star": ("star", "five-pointed star")}  # Synonyms; others: the shape itself.
PLURALS = {"cross": "crosses"}                           # Others: + "s".
BACKGROUND_PHRASES = {
    "plain": ("on a plain background", "on a blank background"),
    "gradient": ("on a gradient background", "on a smooth gradient"),
    "noise": ("on a noisy background", "on a grainy background"),
    "stripes": ("on a striped background", "in front of stripes"),
    "star field": ("on a star field", "in front of a star field", "against a star field"),
}
# (template, relation or None, number of groups); A = group 0, B = group 1, C = group 2.
BODIES = (
    ("{A}", None, 1),
    ("{A} and {B}", None, 2), ("{A} next to {B}", None, 2), ("{A} beside {B}", None, 2),
    ("{A} together with {B}", None, 2),
    ("{A} to the left of {B}", "left", 2), ("{A} left of {B}", "left", 2),
    ("{B} to the right of {A}", "left", 2), ("{B} right of {A}", "left", 2),
    ("{A} on the left and {B} on the right", "left", 2),
    ("{A} above {B}", "above", 2), ("{B} below {A}", "above", 2), ("{B} under {A}", "above", 2),
    ("{A} on top and {B} at the bottom", "above", 2),
    ("{A}, {B} and {C}", None, 3), ("{A}, {B}, and {C}", None, 3),
    ("{A} with {B} and {C}", None, 3),
)
PREFIXES = (
    "", "a photo of", "a picture of", "an image of", "a drawing of", "a painting of",
    "a sketch of", "a rendering of", "a close-up photo of", "a blurry photo of",
    "a digital illustration of", "a simple cartoon of", "a professional photograph of",
    "a detailed drawing of", "this image shows", "we can see", "a neat little poster showing",
    "a carefully composed and highly detailed studio photograph showing",
    "an old vintage postcard with a faded print of",
    "in this colorful picture we can see",
)
FILLERS = (
    "high quality", "sharp focus", "studio lighting", "digital art", "minimal style",
    "clean lines", "centered composition", "vivid colors", "soft shadows", "4k", "8k",
    "detailed", "highly detailed", "award winning", "trending on artstation",
    "professional photograph", "children's book illustration", "geometric art",
    "bright daylight", "vector art", "matte finish", "by a famous artist",
    "in the style of a textbook figure", "nothing else in the picture", "isolated objects",
    "no text", "crisp edges", "hd", "photorealistic", "modern poster", "simple design",
    "made with care", "as seen in a museum", "a calm and quiet mood", "beautiful",
    "pretty", "masterpiece", "elegant", "warm tones", "cool tones", "smooth shading",
    "painted by hand", "printed on paper", "lovely", "very nice", "old", "new",
    "an abstract composition", "for a school book", "for a game", "clip art",
    "high resolution", "wide angle", "macro lens", "amateur snapshot",
)

_PIECES = toy_tokenizer._PATTERN  # pylint: disable=protected-access


def num_tokens(text: str) -> int:
  """CLIP tokens of a caption without BOS / EOS (every grammar word is one BPE token)."""
  return len(_PIECES.findall(text.lower()))


_FILLER_TOKENS = tuple(num_tokens(f) for f in FILLERS)


class GroupFacts(NamedTuple):
  cls: int
  count: int
  size: str | None      # "small" / "large" when named, else None
  texture: str | None   # when named, else None


class Facts(NamedTuple):
  """What a caption asserts. Groups in caption order, except that with a relation group 0 is
  the one left of / above group 1."""
  groups: tuple[GroupFacts, ...]
  relation: str | None
  background: str | None


def _plural(shape_name: str) -> str:
  head, _, last = shape_name.rpartition(" ")
  word = PLURALS.get(last, last + "s")
  return f"{head} {word}" if head else word


def noun_phrase(group: scene_lib.GroupSpec, rng: np.random.Generator,
                name_size: float = 0.6, name_texture: float = 0.7) -> tuple[str, GroupFacts]:
  """An NP naming a group, and what it asserts."""
  hue, shape = scene_lib.class_hue(group.cls), scene_lib.class_shape(group.cls)
  names = SHAPE_NAMES.get(shape, (shape,))
  noun = names[rng.integers(len(names))]
  if group.count == 2:
    noun = _plural(noun)
  words = []
  size = group.size if group.size in SIZE_WORDS and rng.random() < name_size else None
  if size:
    words.append(SIZE_WORDS[size][rng.integers(len(SIZE_WORDS[size]))])
  p = name_texture if group.texture != "flat" else 0.25 * name_texture
  texture = group.texture if rng.random() < p else None
  phrase = ""
  if texture:
    adjectives, phrases = TEXTURE_ADJECTIVES[texture], TEXTURE_PHRASES.get(texture, ())
    k = rng.integers(len(adjectives) + len(phrases))
    if k < len(adjectives):
      words.append(adjectives[k])
    else:
      phrase = " " + phrases[k - len(adjectives)]
  words += [hue, noun]
  if group.count == 2:
    det = "two"
  else:
    det = "one" if rng.random() < 0.1 else ("an" if words[0][0] in "aeiou" else "a")
  return f"{det} {' '.join(words)}{phrase}", GroupFacts(group.cls, group.count, size, texture)


def _body_choices(spec: scene_lib.SceneSpec) -> list[int]:
  n = len(spec.groups)
  return [i for i, (_, rel, k) in enumerate(BODIES) if k == n and rel == spec.relation]


def _order(template: str) -> list[int]:
  """Groups in the order a body template names them."""
  return ["ABC".index(m) for m in re.findall(r"\{([ABC])\}", template)]


def caption(spec: scene_lib.SceneSpec, rng: np.random.Generator,
            length: int | None = None) -> tuple[str, Facts]:
  """A caption of `spec` and the facts it asserts. `length`: the target CLIP length (default
  drawn uniformly from MIN_TOKENS..MAX_TOKENS); fillers are added while they fit."""
  template, relation, _ = BODIES[rng.choice(_body_choices(spec))]
  nps = [noun_phrase(g, rng) for g in spec.groups]
  body = template.format(**{"ABC"[i]: np_ for i, (np_, _) in enumerate(nps)})
  if relation is None:
    groups = tuple(nps[i][1] for i in _order(template))
  else:
    groups = (nps[0][1], nps[1][1])
  target = int(rng.integers(MIN_TOKENS, MAX_TOKENS + 1)) if length is None else int(length)
  background = None
  if rng.random() < 0.5:
    background = spec.background.kind
    phrases = BACKGROUND_PHRASES[background]
    body = f"{body} {phrases[rng.integers(len(phrases))]}"
  prefix = PREFIXES[rng.integers(len(PREFIXES))]
  text = f"{prefix} {body}".strip()
  if num_tokens(text) > MAX_TOKENS:
    text = body
  n = num_tokens(text)
  for filler in rng.permutation(len(FILLERS)):
    k = 1 + _FILLER_TOKENS[filler]  # ", " + the filler
    if n + k > target:
      continue
    text, n = f"{text}, {FILLERS[filler]}", n + k
    if n >= target - 1:
      break
  if num_tokens(text) < MIN_TOKENS:
    text = f"{text}, {FILLERS[0]}"
  if num_tokens(text) > MAX_TOKENS:
    raise AssertionError(f"caption over {MAX_TOKENS} tokens: {text!r}")  # Never: bodies <= 45.
  return text, Facts(groups, relation, background)


# ------------------------------------------------------------------------ parse --
def _alternatives(words) -> str:
  return "|".join(re.escape(w) for w in sorted(set(words), key=lambda w: (-len(w), w)))


_SHAPE_WORDS = {}
for _shape in scene_lib.SHAPES:
  for _name in SHAPE_NAMES.get(_shape, (_shape,)):
    _SHAPE_WORDS[_name] = (_shape, 1)
    _SHAPE_WORDS[_plural(_name)] = (_shape, 2)
_SIZE_OF = {w: s for s, ws in SIZE_WORDS.items() for w in ws}
_TEXTURE_OF = {w: t for t, ws in TEXTURE_ADJECTIVES.items() for w in ws}
_TEXTURE_OF.update({w: t for t, ws in TEXTURE_PHRASES.items() for w in ws})
_NP = re.compile(
    rf"\b(?P<det>a|an|one|two) (?:(?P<size>{_alternatives(_SIZE_OF)}) )?"
    rf"(?:(?P<tadj>{_alternatives(TEXTURE_ADJECTIVES[t][i] for t in TEXTURE_ADJECTIVES for i in range(len(TEXTURE_ADJECTIVES[t])))}) )?"
    rf"(?P<hue>{_alternatives(scene_lib.HUE_NAMES)}) (?P<shape>{_alternatives(_SHAPE_WORDS)})"
    rf"(?P<tphrase> (?:{_alternatives(w for ws in TEXTURE_PHRASES.values() for w in ws)}))?\b")
_BACKGROUND_OF = {p: k for k, ps in BACKGROUND_PHRASES.items() for p in ps}
_BG = re.compile(rf"(?:{_alternatives(_BACKGROUND_OF)})")


def parse(text: str) -> Facts:
  """The facts a grammar caption asserts (inverse of `caption`); a one-line UserError when
  the text is not a caption of the grammar."""
  low = text.lower()
  nps = list(_NP.finditer(low))
  if not 1 <= len(nps) <= 3:
    raise UserError(f"world2.parse: {text!r} names {len(nps)} objects; a world-2 caption "
                    "names 1-3 ('a red circle', 'two blue stars left of a teal ring')")
  groups = []
  for m in nps:
    shape, count = _SHAPE_WORDS[m["shape"]]
    if (m["det"] == "two") != (count == 2):
      raise UserError(f"world2.parse: {m[0]!r} in {text!r}: the count and the noun disagree")
    tex = m["tadj"] or (m["tphrase"] or "").strip() or None
    groups.append(GroupFacts(scene_lib.class_id(m["hue"], shape), count,
                             _SIZE_OF.get(m["size"]), _TEXTURE_OF.get(tex)))
  skeleton, last = "", 0
  for i, m in enumerate(nps):
    skeleton += low[last:m.start()] + f"{{{i}}}"
    last = m.end()
  skeleton += low[last:]
  best = None
  for template, relation, k in BODIES:
    if k != len(nps):
      continue
    order = _order(template)
    numbered = template
    for pos, role in enumerate(order):
      numbered = numbered.replace("{" + "ABC"[role] + "}", f"<{pos}>")
    numbered = numbered.replace("<", "{").replace(">", "}")
    if numbered in skeleton and (best is None or len(numbered) > len(best[0])):
      best = (numbered, relation, order)
  if best is None:
    raise UserError(f"world2.parse: {text!r} joins its objects in no known way; see "
                    "captions.BODIES")
  _, relation, order = best
  if relation is not None:  # Text order -> roles (A, B).
    by_role = {role: groups[pos] for pos, role in enumerate(order)}
    groups = [by_role[0], by_role[1]]
  bg = _BG.search(low[nps[-1].end():])
  return Facts(tuple(groups), relation, _BACKGROUND_OF[bg[0]] if bg else None)


def vocabulary() -> tuple[str, ...]:
  """Every CLIP pre-tokenizer piece the grammar can produce (sorted): the words the world's
  tokenizer must hold as single tokens."""
  texts = list(scene_lib.HUE_NAMES) + list(_SHAPE_WORDS) + list(_SIZE_OF) + list(_TEXTURE_OF)
  texts += [t for t, _, _ in BODIES] + list(PREFIXES) + list(FILLERS) + list(_BACKGROUND_OF)
  texts += ["a", "an", "one", "two", ","]
  pieces = set()
  for t in texts:
    pieces.update(_PIECES.findall(t.lower().replace("{a}", " ").replace("{b}", " ")
                                  .replace("{c}", " ")))
  return tuple(sorted(pieces))


def corpus(split: str, start: int, count: int, seed: int = 0) -> list[tuple[str, Facts]]:
  """Captions of scenes start..start+count of a split: caption i is drawn from its scene's own
  stream (after the scene), so it is fixed by (split, index, seed)."""
  out = []
  for i in range(start, start + count):
    rng = scene_lib.scene_rng(split, i, seed)
    spec = scene_lib.sample_scene(rng)
    out.append(caption(spec, rng))
  return out


def scene_and_caption(split: str, index: int, seed: int = 0):
  """(spec, text, facts) of scene `index` of a split (as `corpus` draws it)."""
  rng = scene_lib.scene_rng(split, index, seed)
  spec = scene_lib.sample_scene(rng)
  return (spec,) + caption(spec, rng)


def spec_facts(spec: scene_lib.SceneSpec) -> Facts:
  """Everything a scene makes true, as the fullest caption would assert it (groups in spec
  order, sizes and textures named)."""
  return Facts(tuple(GroupFacts(g.cls, g.count, g.size if g.size in SIZE_WORDS else None,
                                g.texture) for g in spec.groups),
               spec.relation, spec.background.kind)


def consistent(facts: Facts, spec: scene_lib.SceneSpec) -> bool:
  """Whether every fact a caption asserts is true of the scene."""
  full = spec_facts(spec)
  if facts.relation != full.relation or (facts.background not in (None, full.background)):
    return False
  if len(facts.groups) != len(full.groups):
    return False
  pool = list(full.groups)
  groups = facts.groups
  if facts.relation is not None:
    return all(_group_ok(f, g) for f, g in zip(groups, pool))
  for f in groups:
    match = [g for g in pool if _group_ok(f, g)]
    if not match:
      return False
    pool.remove(match[0])
  return True


def _group_ok(f: GroupFacts, g: GroupFacts) -> bool:
  return (f.cls == g.cls and f.count == g.count and f.size in (None, g.size)
          and f.texture in (None, g.texture))


def words_of(texts: Sequence[str]) -> list[list[str]]:
  return [_PIECES.findall(t.lower()) for t in texts]
