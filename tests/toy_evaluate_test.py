"""The pixel-level two-object check of jaxdiffattack.toy.evaluate on real toy scenes."""
from jaxdiffattack.toy import evaluate
from jaxdiffattack.toy import world


def test_both_colours_found_in_real_two_object_scenes():
  real = world.make_dataset("heldout", 0, 300)
  rate, n = evaluate.pair_colours_shown(real.images, real.labels)
  colours = [(world.label_colour(a), world.label_colour(b)) for a, b in real.labels]
  assert n == sum(a != b for a, b in colours) > 200
  assert rate >= 0.99, rate


def test_absent_colours_are_not_found():
  singles = world.make_dataset("heldout", 400)
  drawn = [world.label_colour(int(l)) for l in singles.labels[:, 0]]
  assert evaluate.colours_present(singles.images, drawn).mean() >= 0.99
  for shift in (1, 2, 3):  # every colour that is not in the scene
    absent = [world.COLOURS[(world.COLOURS.index(c) + shift) % 4] for c in drawn]
    assert evaluate.colours_present(singles.images, absent).mean() <= 0.01, shift

