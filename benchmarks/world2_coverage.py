r"""World 2's caption coverage: how often each vocabulary word, each text position and each
class occurs in N sampled training captions (the tables of docs/world2_model_card.md).

  nice -n 5 python benchmarks/world2_coverage.py --n=10000 --out docs/results/world2_coverage.json

Writes the counts as JSON and prints them as Markdown tables.
"""
import collections
import json
import subprocess
import sys
import time
import pathlib

from absl import app
from absl import flags
import numpy as np

from jaxdiffattack.io import write_json
from jaxdiffattack.world2 import captions
from jaxdiffattack.world2 import scene

_N = flags.DEFINE_integer("n", 10000, "captions (train split, scenes 0..n-1)")
_OUT = flags.DEFINE_string("out", "", "results JSON")


def main(argv):
  del argv
  n = _N.value
  words, positions, lengths = collections.Counter(), collections.Counter(), collections.Counter()
  classes, layouts, relations, textures = (collections.Counter() for _ in range(4))
  for i in range(n):
    spec, text, facts = captions.scene_and_caption("train", i)
    pieces = captions.words_of([text])[0]
    words.update(set(pieces))  # captions containing the word
    positions.update(range(1, len(pieces) + 1))
    lengths[len(pieces)] += 1
    for o in spec.objects:
      classes[scene.CLASSES[o.cls]] += 1
      textures[o.texture] += 1
    layouts[spec.layout] += 1
    relations[str(spec.relation)] += 1
  vocab = captions.vocabulary()
  out = {
      "command": "python " + " ".join(sys.argv),
      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
      "code_version": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True,
                                     cwd=pathlib.Path(__file__).parent).stdout.strip(),
      "captions": n, "vocabulary_size": len(vocab),
      "captions_with_word": {w: words[w] for w in vocab},
      "captions_reaching_position": {p: positions[p] for p in range(1, captions.MAX_TOKENS + 1)},
      "length_histogram": dict(sorted(lengths.items())),
      "objects_per_class": dict(classes.most_common()),
      "objects_per_texture": dict(textures), "layouts": dict(layouts),
      "relations": dict(relations),
  }
  if _OUT.value:
    write_json(_OUT.value, out)
  w = sorted(vocab, key=lambda x: words[x])
  print(f"Rarest words (captions of {n} containing them): " + ", ".join(
      f"{x} {words[x]}" for x in w[:25]))
  print(f"Commonest: " + ", ".join(f"{x} {words[x]}" for x in w[-10:]))
  print("\n| position | " + " | ".join(str(p) for p in range(5, 61, 5)) + " |")
  print("|---|" + "---|" * 12)
  print(f"| captions reaching it (of {n}) | " + " | ".join(
      str(positions[p]) for p in range(5, 61, 5)) + " |")
  c = classes.most_common()
  print(f"\nClasses: {len(c)}; objects of the commonest {c[0]}, rarest {c[-1]}; ratio "
        f"{c[0][1] / c[-1][1]:.1f}")
  print("| rank | " + " | ".join(str(r) for r in (1, 2, 5, 10, 20, 40, 60, 80, len(c))) + " |")
  print("|---|" + "---|" * 9)
  print("| class | " + " | ".join(c[r - 1][0] for r in (1, 2, 5, 10, 20, 40, 60, 80, len(c)))
        + " |")
  print("| objects | " + " | ".join(str(c[r - 1][1]) for r in
                                   (1, 2, 5, 10, 20, 40, 60, 80, len(c))) + " |")
  print("layouts", dict(layouts), "relations", dict(relations), "textures", dict(textures))


if __name__ == "__main__":
  app.run(main)
