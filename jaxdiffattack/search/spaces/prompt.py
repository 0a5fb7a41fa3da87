"""Natural-prompt space: word substitutions / insertions around a class noun that stays (SAGE §4).

SAGE searches "natural text prompts producing images that fail to capture the semantics of input
texts". Here a prompt is the template (e.g. "a photo of a {}") around the target's class noun, with
S categorical slots, each choosing among V + 1 options:
  * one substitution slot per template word (`substitute=True`): 0 keeps the word, v ≥ 1 puts
    vocabulary word v − 1 in its place;
  * one insertion slot per entry of `insertions` ("start", "before_noun", "after_noun", "end"):
    0 inserts nothing, v ≥ 1 inserts word v − 1 there.
The class noun itself is never edited, so it is in every candidate prompt. The vocabulary is
`words` (a tuple) or, if that is empty, the named list `vocabulary`; with `exclude_label_words`
every word of every class name of the label set is removed from it, so a failure cannot be the
trivial "name another class".

Encodings for evosax (`encoding`):
  * "integer" (for SimpleGA and other GAs; default): x [S] real, slot s chooses
    floor(x_s + 0.5) mod (V + 1) — every real vector is a valid prompt, x = 0 is the clean prompt;
    the random baseline draws each slot uniformly;
  * "logits" (a relaxation for CMA-ES-like strategies): x [S · (V + 1)], slot s chooses the argmax
    of its V + 1 logits; the search starts with the "keep" logit `keep_margin` above the others.

Constraint: text similarity (cosine of the pooled text states, see `base`) to the clean prompt
≥ `min_similarity`; fitness += `penalty_weight` · max(0, min_similarity − similarity), and a failure
counts only when the constraint holds. Images use the target's fixed base latent.
"""

import jax
import numpy as np

from jaxdiffattack import labels as labels_lib
from jaxdiffattack.errors import check
from jaxdiffattack.search.spaces import base
from jaxdiffattack.search.spaces.base import Decoded
from jaxdiffattack.search.spaces.base import Space

ENCODINGS = ("integer", "logits")
INSERTIONS = ("start", "before_noun", "after_noun", "end")


def vocabulary(name_or_words) -> tuple[str, ...]:
  """A named vocabulary ("toy_extra": the toy tokenizer's class-free words) or a tuple of words."""
  if isinstance(name_or_words, str):
    if name_or_words == "toy_extra":
      from jaxdiffattack.toy import tokenizer  # pylint: disable=g-import-not-at-top
      return tuple(dict.fromkeys(tokenizer.EXTRA_WORDS))
    check(False, "prompt.vocabulary", name_or_words, "use 'toy_extra' or a tuple of words")
  words = tuple(dict.fromkeys(str(w) for w in name_or_words))
  check(len(words) > 0 and all(w and " " not in w for w in words), "prompt.vocabulary",
        name_or_words, "give single words")
  return words


class PromptSpace(Space):
  name = "prompt"

  def __init__(self, config, sd, params, targets, key):
    super().__init__(config, sd, params, targets, key)
    self.cfg = config.prompt
    check(self.cfg.encoding in ENCODINGS, "prompt.encoding", self.cfg.encoding,
          f"use one of {ENCODINGS}")
    for where in self.cfg.insertions:
      check(where in INSERTIONS, "prompt.insertions", where, f"use entries of {INSERTIONS}")
    words = vocabulary(tuple(self.cfg.words) or self.cfg.vocabulary)
    if self.cfg.exclude_label_words:
      banned = set()
      for name in labels_lib.class_names(config.get("label_set"), config.labels):
        banned |= set(name.lower().split())
      words = tuple(w for w in words if w.lower() not in banned)
    check(len(words) > 0, "prompt.vocabulary", self.cfg.vocabulary, "no words left to use")
    self.words = words
    before, _, after = config.template.partition("{}")
    self.before, self.after = before.split(), after.split()
    self.slots = []  # (kind, where): ("sub", i) for template word i, ("ins", position)
    if self.cfg.substitute:
      self.slots += [("sub", i) for i in range(len(self.before) + len(self.after))]
    self.slots += [("ins", where) for where in self.cfg.insertions]
    check(len(self.slots) > 0, "prompt.insertions", self.cfg.insertions,
          "give insertions or set prompt.substitute=True")
    self.options = len(words) + 1
    per_slot = 1 if self.cfg.encoding == "integer" else self.options
    self.num_dims = len(self.slots) * per_slot

  def init_means(self) -> np.ndarray:
    mean = np.zeros((len(self.targets), self.num_dims), np.float32)
    if self.cfg.encoding == "logits":
      mean.reshape(len(self.targets), len(self.slots), self.options)[..., 0] = self.cfg.keep_margin
    return mean

  def sample_prior(self, key):
    if self.cfg.encoding == "integer":
      return jax.random.uniform(key, (self.num_dims,), minval=-0.5, maxval=self.options - 0.5)
    return jax.random.normal(key, (self.num_dims,))

  def choices(self, x: np.ndarray) -> np.ndarray:
    """Solutions [M, n] → slot choices [M, S] in 0 … V (0: keep / insert nothing)."""
    x = np.asarray(x, np.float64)
    if self.cfg.encoding == "integer":
      return np.mod(np.floor(x + 0.5), self.options).astype(np.int64)
    return x.reshape(x.shape[0], len(self.slots), self.options).argmax(axis=-1)

  def encode(self, choices, t) -> np.ndarray:
    """Choice vectors [M, S] → solutions (integer: the choices; logits: margin one-hot)."""
    del t
    choices = np.asarray(choices, np.int64)
    if self.cfg.encoding == "integer":
      return choices.astype(np.float32)
    x = np.zeros((len(choices), len(self.slots), self.options), np.float32)
    np.put_along_axis(x, choices[..., None], self.cfg.keep_margin, axis=-1)
    return x.reshape(len(choices), -1)

  def prompt_text(self, choice: np.ndarray, t: int) -> str:
    """The edited prompt of one choice vector [S]."""
    word = lambda c: self.words[c - 1]
    template = list(self.before) + list(self.after)
    inserted = {where: [] for where in INSERTIONS}
    for (kind, where), c in zip(self.slots, choice):
      if kind == "sub" and c:
        template[where] = word(c)
      elif kind == "ins" and c:
        inserted[where].append(word(c))
    nb = len(self.before)
    parts = (inserted["start"] + template[:nb] + inserted["before_noun"] +
             [self.targets[t].label] + inserted["after_noun"] + template[nb:] + inserted["end"])
    return " ".join(parts)

  def decode(self, x, t) -> Decoded:
    prompts = [self.prompt_text(c, t) for c in self.choices(x)]
    m = len(prompts)
    ids = self.sd.tokenizer(prompts, padding="max_length", max_length=self.ids.shape[1],
                            truncation=True, return_tensors="np")["input_ids"].astype(np.int32)
    cond = base.encode_ids(self.sd, self.text_params, ids)
    sim = base.row_cosine(base.pooled(cond, base.eos_positions(self.sd, ids)),
                          self.clean_pooled[t])
    shortfall = np.maximum(0.0, self.cfg.min_similarity - sim)
    metrics = {"text_similarity": sim,
               "words_changed": (self.choices(x) > 0).sum(axis=1).astype(np.float64)}
    return Decoded(self._fixed_latents(t, m), cond, self.cfg.penalty_weight * shortfall,
                   sim >= self.cfg.min_similarity, metrics)

  def similarity(self, x, archive) -> np.ndarray:
    """Fraction of slots making the same choice."""
    a, b = self.choices(x), self.choices(archive)
    return (a[:, None, :] == b[None, :, :]).mean(axis=-1)

  def describe(self, x, t) -> dict:
    return {"prompt": self.prompt_text(self.choices(np.asarray(x)[None])[0], t)}

  def artifacts(self, x, t) -> dict:
    return {"prompt.txt": self.describe(x, t)["prompt"], "latent.npy": self.base_latents[t]}
