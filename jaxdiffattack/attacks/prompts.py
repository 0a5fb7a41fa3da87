"""Prompt sets for ATM (arXiv 2306.02583 §4.1): short and long prompts, each naming one class.

The paper attacks 1000 short prompts "a photo of a {class} and a" (one per ImageNet-1k class) and
1000 long descriptive sentences of about 29 words. A prompt set is a list of (prompt, class word,
label-set index); the *class word* is the text that must survive the attack — the ImageNet class
name, or on the toy world the whole label ("red circle": colour and shape are both fixed, since the
toy classes are colour × shape pairs).

Sets, chosen by name in config (`PROMPT_SETS`: one function + one line to add one), or a CSV path:
  * `short`: "a photo of a {class} and a" for each class of the label set (the paper's short
    prompts; over `imagenet1k` these are its 1000 prompts, over `toy` one per toy label);
  * `toy_long`: descriptive 24–28-word sentences around the toy label (`TOY_LONG_TEMPLATES`, in the
    toy tokenizer's vocabulary, 32–37 tokens, within its 77-token limit);
  * `world2_short`, `world2_long`: world 2's grammar captions of one object, short (6–9 tokens)
    and long (40–43; `labels.WORLD2_SHORT` / `WORLD2_LONG`), the same scene in both;
  * `world2_census_short`, `world2_census_long`: the clean census's own single-object prompts
    (`census.make_prompts`, prompt seed `WORLD2_CENSUS_SEED`): for each class, `per_label` scenes
    drawn from the world's scene distribution (sizes, textures, backgrounds), each with a short
    caption of the grammar (a length target drawn in 4–16 CLIP tokens, `WORLD2_CENSUS_TOKENS`,
    which `captions.caption` overshoots: 6–22 tokens over 83 classes × 3 scenes) and its long
    version (the same caption with fillers to 40–60 tokens): the lengths world 2 was trained on, the same
    scene in both sets. The class word is the caption's "<hue> <shape>" as written (the shape
    "star" may be written "five-pointed star": then that is the class word);
  * a CSV file (UTF-8, header row) with columns `prompt` and `classname` (aliases `sentence`,
    `class`) and optionally `label` (label-set index) — the released code's prompt files have this
    layout. Each prompt must contain its class word (case-insensitive, at a word start; a suffix
    such as a plural "s" is allowed: "Electric rays are ..." names "electric ray").

`encode` tokenizes a set for a model: ids [N, L], and which positions hold the class word. Prompts
over the tokenizer's limit are truncated with a warning saying how many tokens are dropped
(`text.tokenize`); a prompt whose class word would be cut off is an error.
"""

import csv
import io
import pathlib
import re
from typing import NamedTuple, Sequence

import numpy as np

from jaxdiffattack import labels as labels_lib
from jaxdiffattack import text
from jaxdiffattack.errors import UserError

SHORT_TEMPLATE = "a photo of a {} and a"
# Descriptive sentences around the toy label; every word but "close-up" is one toy token.
TOY_LONG_TEMPLATES = (
    "a detailed studio photo of a {} in the middle of a plain background, with soft light, sharp "
    "focus and a simple, clean, modern style",
    "a simple drawing of a {} near the center of the picture, in bright colour on a quiet grey "
    "background, like an icon or a small logo",
    "here is a close-up photo of one {} on a smooth light background; the shape is flat, the "
    "colour is bright, and the light is warm",
    "an illustration in a minimal style: a single {} at the center, a soft shadow below it, a "
    "clean background and no other object in the scene",
    "a professional photograph of a {}, made in a quiet studio with soft morning light, high "
    "quality, sharp focus, simple and elegant design",
)
CSV_COLUMNS = {"prompt": ("prompt", "sentence"), "classname": ("classname", "class")}


class PromptSet(NamedTuple):
  """Prompts that each name one class of a label set."""
  name: str                      # "short" | "long" (the row's `set`)
  prompts: tuple[str, ...]       # [N]
  class_words: tuple[str, ...]   # [N] text that must stay in the prompt
  labels: tuple[int, ...]        # [N] label-set index of each prompt's class

  def __len__(self) -> int:
    return len(self.prompts)


class EncodedPrompts(NamedTuple):
  """A prompt set tokenized for one model."""
  ids: np.ndarray                # [N, L] int32, BOS … EOS, padded
  lengths: np.ndarray            # [N] int32 tokens up to and including EOS
  class_mask: np.ndarray         # [N, L] bool: positions of the class word's tokens
  class_text: tuple[str, ...]    # [N] the class word as the tokenizer decodes its tokens


def class_word_pattern(class_word: str) -> re.Pattern:
  """The class word at a word start, any case, any whitespace, with an optional word suffix."""
  words = [re.escape(w) for w in class_word.split()]
  return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"\w*", re.IGNORECASE)


def class_word_present(prompt: str, class_text: str) -> bool:
  """True when `class_text` occurs in `prompt` as whole words (any case, any whitespace).

  ATM's success rule needs the class word still in the attacked prompt; `class_text` is the class
  word as it appears in the clean prompt, so "bred circle" does not contain "red circle".
  """
  words = [re.escape(w) for w in class_text.split()]
  if not words:
    return False
  return re.search(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", prompt, re.IGNORECASE) is not None


def _check(prompt_set: PromptSet, source: str) -> PromptSet:
  if not prompt_set.prompts:
    raise UserError(f"prompt set {source!r} is empty: give at least one prompt")
  for i, (prompt, word) in enumerate(zip(prompt_set.prompts, prompt_set.class_words)):
    if not prompt.strip():
      raise UserError(f"prompt set {source!r}, prompt {i}: the prompt is empty")
    if not class_word_pattern(word).search(prompt):
      raise UserError(f"prompt set {source!r}, prompt {i} {prompt!r} does not contain its class "
                      f"word {word!r}: put the class name in the prompt")
  return prompt_set


def from_template(name: str, label_set: labels_lib.LabelSet, templates: Sequence[str],
                  labels: Sequence[int] | None = None, per_label: int = 1) -> PromptSet:
  """`per_label` prompts per class (at most one per template): templates (label index + k) mod T
  for k < per_label, so consecutive classes start at different templates."""
  labels = range(len(label_set)) if labels is None else labels
  prompts, words, index = [], [], []
  for label in labels:
    for k in range(min(per_label, len(templates))):
      template = templates[(label + k) % len(templates)]
      prompts.append(template.format(label_set.names[label]))
      words.append(label_set.names[label])
      index.append(int(label))
  return _check(PromptSet(name, tuple(prompts), tuple(words), tuple(index)), name)


def short(name, label_set, labels=None, per_label=1):
  return from_template(name, label_set, (SHORT_TEMPLATE,), labels, per_label)


def toy_long(name, label_set, labels=None, per_label=1):
  return from_template(name, label_set, TOY_LONG_TEMPLATES, labels, per_label)


def world2_short(name, label_set, labels=None, per_label=1):
  return from_template(name, label_set, labels_lib.get_templates("world2"), labels, per_label)


def world2_long(name, label_set, labels=None, per_label=1):
  return from_template(name, label_set, labels_lib.get_templates("world2_long"), labels,
                       per_label)


# The census's prompt seed and caption length ranges (configs/census.py: short target 4–16,
# long 40–60 CLIP tokens; the short captions come out 6–22), so world2_census_* are the census's single-object prompts of the same scenes.
WORLD2_CENSUS_SEED = 0
WORLD2_CENSUS_TOKENS = {"short": (4, 16), "long": (40, 60)}


def _world2_class_word(prompt: str, label: str) -> str:
  """The class's "<hue> <shape>" as `prompt` writes it (a shape synonym of the grammar allowed)."""
  from jaxdiffattack.world2 import captions  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.world2 import scene  # pylint: disable=g-import-not-at-top
  cls = scene.CLASS2ID[label]
  hue, shape = scene.class_hue(cls), scene.class_shape(cls)
  for noun in captions.SHAPE_NAMES.get(shape, (shape,)):
    if class_word_pattern(f"{hue} {noun}").search(prompt):
      return f"{hue} {noun}"
  raise UserError(f"world 2 caption {prompt!r} does not name its class {label!r}")  # Never.


def world2_census(kind: str):
  """The prompt set of the census's single-object scenes: "short" or "long" captions."""
  def load(name, label_set, labels=None, per_label=1):
    import ml_collections  # pylint: disable=g-import-not-at-top
    from jaxdiffattack import census  # pylint: disable=g-import-not-at-top
    if label_set.name != "world2":
      raise UserError(f"prompt set 'world2_census_{kind}' holds world 2's captions: use it with "
                      f"label_set='world2', not {label_set.name!r}")
    labels = range(len(label_set)) if labels is None else labels
    config = ml_collections.ConfigDict({
        "classes": tuple(label_set.names[i] for i in labels), "scenes_per_class": int(per_label),
        "kinds": ("single", "long"), "two_object_layouts": census.TWO_OBJECT_LAYOUTS,
        "prompt_seed": WORLD2_CENSUS_SEED, "short_tokens": WORLD2_CENSUS_TOKENS["short"],
        "long_tokens": WORLD2_CENSUS_TOKENS["long"]})
    want = "single" if kind == "short" else "long"
    got = [p for p in census.make_prompts(config) if p.scene_kind == "single" and p.kind == want]
    prompts = tuple(p.prompt for p in got)
    words = tuple(_world2_class_word(p.prompt, p.label) for p in got)
    index = tuple(int(label_set.names.index(p.label)) for p in got)
    return _check(PromptSet(name, prompts, words, index), f"world2_census_{kind}")
  return load


PROMPT_SETS = {
    "short": short,
    "toy_long": toy_long,
    "world2_short": world2_short,
    "world2_long": world2_long,
    "world2_census_short": world2_census("short"),
    "world2_census_long": world2_census("long"),
}


def _column(fieldnames, key: str, path) -> str:
  for alias in CSV_COLUMNS[key]:
    if alias in fieldnames:
      return alias
  raise UserError(f"{path}: the header {list(fieldnames)} has no {key!r} column: name the columns "
                  f"{CSV_COLUMNS[key][0]!r} (or {CSV_COLUMNS[key][1]!r}) and "
                  f"{'classname' if key == 'prompt' else 'prompt'!r}")


def _label_of(label_set, classname: str, label: str | None, where: str) -> int:
  if label not in (None, ""):
    try:
      index = int(label)
    except ValueError:
      raise UserError(f"{where}: label {label!r} is not an integer label index") from None
    if not 0 <= index < len(label_set):
      raise UserError(f"{where}: label {index} is outside label set {label_set.name!r} "
                      f"(0..{len(label_set) - 1})")
    return index
  lower = {n.lower(): i for i, n in reversed(list(enumerate(label_set.names)))}
  if classname.lower() not in lower:
    raise UserError(f"{where}: class {classname!r} is not in label set {label_set.name!r}; add a "
                    "'label' column with its index")
  return lower[classname.lower()]


def read_csv(name: str, path, label_set: labels_lib.LabelSet, labels=None,
             per_label=None) -> PromptSet:
  """A prompt set from a CSV file (see the module docstring); one-line errors for bad files."""
  del per_label
  path = pathlib.Path(path)
  if not path.is_file():
    raise UserError(f"prompt file {path} does not exist: give a CSV path or one of "
                    f"{sorted(PROMPT_SETS)}")
  raw = path.read_bytes()
  try:
    content = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise UserError(f"{path} is not valid UTF-8 (byte {e.start}): save it as UTF-8") from None
  reader = csv.DictReader(io.StringIO(content))
  if not reader.fieldnames:
    raise UserError(f"{path} is empty: write a header 'prompt,classname' and one row per prompt")
  prompt_key = _column(reader.fieldnames, "prompt", path)
  class_key = _column(reader.fieldnames, "classname", path)
  wanted = None if labels is None else set(int(i) for i in labels)
  prompts, words, index = [], [], []
  for row_number, row in enumerate(reader, start=2):
    where = f"{path}, line {row_number}"
    prompt, classname = (row.get(prompt_key) or "").strip(), (row.get(class_key) or "").strip()
    if not classname:
      raise UserError(f"{where}: the class name is empty")
    label = _label_of(label_set, classname, row.get("label"), where)
    if wanted is not None and label not in wanted:
      continue
    if not prompt:
      raise UserError(f"{where}: the prompt is empty")
    if not class_word_pattern(classname).search(prompt):
      raise UserError(f"{where}: prompt {prompt!r} does not contain its class word "
                      f"{classname!r}: put the class name in the prompt")
    prompts.append(prompt)
    words.append(classname)
    index.append(label)
  return _check(PromptSet(name, tuple(prompts), tuple(words), tuple(index)), str(path))


def load(spec: str, name: str, label_set: labels_lib.LabelSet, labels=None,
         per_label: int = 1) -> PromptSet:
  """A prompt set by registry name or CSV path, restricted to `labels` (label indices) if given."""
  if spec in PROMPT_SETS:
    return PROMPT_SETS[spec](name, label_set, labels, per_label)
  if spec.lower().endswith(".csv") or pathlib.Path(spec).exists():
    return read_csv(name, spec, label_set, labels)
  raise UserError(f"prompt set {spec!r} is neither one of {sorted(PROMPT_SETS)} nor a .csv file")


def _num_tokens(tokenizer, prompt_text: str) -> int:
  return len(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])


def encode(sd, prompt_set: PromptSet) -> EncodedPrompts:
  """Token ids and class-word positions of a prompt set for the model `sd` (its tokenizer).

  The class word's first match in the prompt (`class_word_pattern`) spans the tokens between the
  token counts of the text before it and the text through its end (CLIP's tokenizer splits words
  before BPE, so both counts fall on token boundaries; checked against the full tokenization).
  """
  tokenizer = sd.tokenizer
  ids = text.tokenize(sd, list(prompt_set.prompts))             # warns about dropped tokens
  n, length = ids.shape
  eos = int(tokenizer.eos_token_id)
  lengths = np.zeros(n, np.int32)
  class_mask = np.zeros((n, length), bool)
  class_text = []
  for i, (prompt, word) in enumerate(zip(prompt_set.prompts, prompt_set.class_words)):
    full = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    lengths[i] = min(len(full) + 2, length)
    match = class_word_pattern(word).search(prompt)
    start = 1 + _num_tokens(tokenizer, prompt[:match.start()])
    end = 1 + _num_tokens(tokenizer, prompt[:match.end()])
    if end > length - 1:
      raise UserError(f"prompt set {prompt_set.name!r}, prompt {i}: the class word {word!r} lies "
                      f"beyond the model's {length}-token limit; shorten the prompt")
    if list(ids[i, start:end]) != list(full[start - 1:end - 1]) or eos in ids[i, start:end]:
      raise UserError(f"prompt set {prompt_set.name!r}, prompt {i}: cannot locate the tokens of "
                      f"class word {word!r} in {prompt!r}")
    class_mask[i, start:end] = True
    class_text.append(tokenizer.decode(ids[i, start:end].tolist()).strip())
  return EncodedPrompts(ids, lengths, class_mask, tuple(class_text))


def decode(sd, ids: np.ndarray) -> list[str]:
  """Prompts [M] from token ids [M, L]: special tokens (BOS, EOS, padding) dropped."""
  return [sd.tokenizer.decode(np.asarray(row).tolist(), skip_special_tokens=True).strip()
          for row in np.asarray(ids)]
