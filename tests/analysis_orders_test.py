"""analysis.orders: the word orders cover every order of the same words, each once."""

import itertools
import re

import pytest

from jaxdiffattack.analysis import objects
from jaxdiffattack.analysis import orders

TEMPLATE = "a photo of a {} and a {}"


def _brute_force(phrases, template):
  """Every arrangement of the content words into the template's slots (two words per slot)
  such that each slot holds one phrase's modifier and its own noun, in either order."""
  words = [w for p in phrases for w in p]
  out = set()
  for perm in itertools.permutations(words):
    slots = [perm[2 * i:2 * i + 2] for i in range(len(phrases))]
    if all(any(set(s) == {p.modifier, p.noun} for p in phrases) for s in slots) and \
        len({frozenset(s) for s in slots}) == len(phrases):
      out.add(template.format(*[" ".join(s) for s in slots]))
  return out


@pytest.mark.parametrize("labels,template", [
    (("red circle", "blue star"), TEMPLATE),
    (("red circle", "blue star", "green cross"), "a {}, a {} and a {}")])
def test_orders_cover_every_order_once(labels, template):
  phrases = [objects.phrase(l) for l in labels]
  got = orders.word_orders(phrases, template)
  prompts = [p for p, _, _ in got]
  n = len(phrases)
  assert len(prompts) == len(set(prompts)) == len(set(k for _, k, _ in got))
  assert len(prompts) == 2 ** n * len(list(itertools.permutations(range(n))))
  assert set(prompts) == _brute_force(phrases, template)
  for prompt, key, named in got:            # named phrases follow the prompt's order
    positions = [prompt.index(f" {p.noun}") for p in named]
    assert positions == sorted(positions), (prompt, key)
    words = lambda text: sorted(re.findall(r"\w+", text))
    assert words(prompt) == words(template.format(*labels))     # the same words


def test_only_before_placement_gives_the_permutations():
  phrases = [objects.phrase("red circle"), objects.phrase("blue star")]
  got = orders.word_orders(phrases, TEMPLATE, placements=("before",))
  assert [p for p, _, _ in got] == ["a photo of a red circle and a blue star",
                                    "a photo of a blue star and a red circle"]
  assert [k for _, k, _ in got] == ["AB/before+before", "BA/before+before"]


def test_one_word_class_names():
  phrases = [objects.phrase("goldfish"), objects.phrase("great white shark")]
  got = [p for p, _, _ in orders.word_orders(phrases, TEMPLATE, placements=("before",))]
  assert got == ["a photo of a goldfish and a great white shark",
                 "a photo of a great white shark and a goldfish"]
