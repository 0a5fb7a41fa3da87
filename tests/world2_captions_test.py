"""World 2's caption grammar and tokenizer: exact round trip, coverage of words and positions."""
import collections
import functools

import numpy as np
import pytest
from transformers import CLIPTokenizer

from jaxdiffattack.errors import UserError
from jaxdiffattack.world2 import captions
from jaxdiffattack.world2 import scene
from jaxdiffattack.world2 import tokenizer

N = 3000


@functools.cache
def _corpus():
  return [captions.scene_and_caption("train", i) for i in range(N)]


@pytest.fixture(scope="module")
def clip_tokenizer(tmp_path_factory):
  d = tmp_path_factory.mktemp("w2tok")
  tokenizer.build_tokenizer_files(d)
  return CLIPTokenizer.from_pretrained(str(d))


def test_caption_parses_back_to_its_facts_and_the_facts_hold_in_the_scene():
  for spec, text, facts in _corpus():
    assert captions.parse(text) == facts, text
    assert captions.consistent(facts, spec), text
  # A caption of another scene is (almost always) false of this one.
  wrong = sum(captions.consistent(_corpus()[i + 1][2], _corpus()[i][0]) for i in range(500))
  assert wrong < 5


def test_lengths_and_every_position_up_to_60():
  lengths = np.asarray([captions.num_tokens(t) for _, t, _ in _corpus()])
  assert lengths.min() >= captions.MIN_TOKENS and lengths.max() == captions.MAX_TOKENS
  # Positions 1..60 after BOS each hold a word in >= 1 % of captions.
  per_position = np.asarray([(lengths >= k).mean() for k in range(1, 61)])
  assert per_position.min() >= 0.01, per_position


def test_every_vocabulary_word_occurs():
  counts = collections.Counter(w for ws in captions.words_of([t for _, t, _ in _corpus()])
                               for w in ws)
  vocab = captions.vocabulary()
  assert set(counts) <= set(vocab)
  rare = {w: counts[w] for w in vocab if counts[w] < 5}
  assert not rare, rare


def test_polysemous_words_in_both_senses():
  texts = [t.lower() for _, t, _ in _corpus()]
  def some(pattern_fn):
    return sum(1 for t in texts if pattern_fn(t))
  hues = [h for h in scene.HUE_NAMES]
  assert some(lambda t: "orange orange" in t or any(f"{h} orange" in t.replace("orange orange",
              "") for h in ("green", "yellow"))) >= 10  # the fruit
  assert some(lambda t: any(f"orange {s}" in t for s in ("circle", "square", "star"))) >= 10
  assert some(lambda t: "star field" in t) >= 50
  assert some(lambda t: any(f"{h} star" in t for h in hues)) >= 50
  assert some(lambda t: "ring pattern" in t or "ring-patterned" in t) >= 50
  assert some(lambda t: any(f"{h} ring" in t for h in hues)) >= 50


def test_varied_orders_and_relations():
  bodies = collections.Counter()
  for _, _, f in _corpus():
    bodies[(len(f.groups), f.relation)] += 1
  assert set(bodies) == {(1, None), (2, None), (2, "left"), (2, "above"), (3, None)}
  texts = " ".join(t for _, t, _ in _corpus())
  for phrase in ("to the right of", "below", "on the left and", "on top and", ", and"):
    assert phrase in texts


def test_tokenizer_holds_every_grammar_word_as_one_token(clip_tokenizer):
  vocab = clip_tokenizer.get_vocab()
  for word in captions.vocabulary():
    assert word + "</w>" in vocab, word
  for _, text, _ in _corpus()[:300]:
    ids = clip_tokenizer(text).input_ids
    assert len(ids) == captions.num_tokens(text) + 2 <= 62
    assert clip_tokenizer.decode(ids[1:-1]).replace(" ", "") == text.lower().replace(" ", "")


def test_parse_rejects_non_grammar_text():
  with pytest.raises(UserError, match="names 0 objects"):
    captions.parse("a photo of a cat")
  with pytest.raises(UserError, match="no class"):
    captions.parse("a red orange")
  with pytest.raises(UserError, match="joins its objects in no known way"):
    captions.parse("a red circle or a blue square")
