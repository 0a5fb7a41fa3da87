"""Polysemous words on world 2 (ATM, Du et al. 2023, arXiv 2306.02583 §4.3), in trained captions.

ATM found that a word with two meanings makes the generator draw the other one. World 2's grammar
has three such words (`world2.captions`): "star" (the shape, and the background "on a star
field"), "ring" (the shape, and the texture "with a ring pattern") and "orange" (the hue, and the
fruit shape "orange"). Each case (`CASES`) pairs, for every class it applies to and on the same
seeds, a caption that uses the word in its *other* sense with a control caption that differs only
there, both sentences of the grammar (they parse, `captions.parse`):

  star    "a picture of a red circle on a star field"      vs "... on a plain background"
  ring    "a picture of a red circle with a ring pattern"  vs "... with stripes"
  orange  "a picture of an orange circle"                  vs "a picture of a red circle"

(classes whose shape is the word's shape sense are left out: "star" also leaves out the
six-pointed star, "orange" takes the orange-hued classes). A *leak* is an image whose judged class
(the analysis's object finder: world 2's scene oracle) has the word's shape sense — a star, a
ring, an orange fruit — where the caption names none. Per case: leak rates of the word and
control captions, their paired difference (the same class and seed), and the share of images
judged as the named class. The seeds of one class share its difficulty (issue #26 item 5:
per-sample rates get clustered intervals), so the intervals are clustered by class: the leak
rates' by `stats.clustered_rate`, the difference's the cluster-robust (CR1) interval of the mean
per-pair difference (an OLS intercept with statsmodels' cluster covariance, CR1) with t
quantiles on G − 1 degrees of freedom (G = classes: 10 in the "orange" case, where z would be
too narrow), Newcombe's paired interval only where that is undefined (one class) or degenerate
(robust variance 0, e.g. no discordant pair). The exact McNemar p treats the pairs as
independent (anti-conservative when classes differ in difficulty); "difference_p" is the
cluster-robust t test of the difference.
"""

from typing import NamedTuple, Sequence

import numpy as np

from jaxdiffattack import stats


class Case(NamedTuple):
  word: str            # the polysemous word
  sense: str           # the sense the word caption uses ("background", "texture", "hue")
  shape: str           # the word's shape sense (a leak: the judged class has this shape)


CASES = {"star": Case("star", "background", "star"),
         "ring": Case("ring", "texture", "ring"),
         "orange": Case("orange", "hue", "orange")}
CONTROL_HUE = "red"    # the "orange" case's control hue


def _article(text: str) -> str:
  return "an" if text[0] in "aeiou" else "a"


def _parts(label: str) -> tuple[str, str]:
  from jaxdiffattack.world2 import scene  # pylint: disable=g-import-not-at-top
  cls = scene.CLASS2ID[label]
  return scene.class_hue(cls), scene.class_shape(cls)


def prompts(word: str, classes: Sequence[str]) -> list[tuple[str, str, str, str]]:
  """[(class, control class, word caption, control caption)] of case `word` over the classes it
  applies to (the control caption names the control class)."""
  if word not in CASES:
    raise ValueError(f"polysemy word {word!r}: use one of {sorted(CASES)}")
  case = CASES[word]
  out = []
  for label in classes:
    hue, shape = _parts(label)
    if case.sense == "hue":
      control = f"{CONTROL_HUE} {shape}"
      if hue != word or shape == case.shape or control not in classes:
        continue
      out.append((label, control, f"a picture of {_article(label)} {label}",
                  f"a picture of {_article(control)} {control}"))
      continue
    if case.shape in shape.split():        # "star": also the six-pointed star
      continue
    body = f"a picture of {_article(label)} {label}"
    if case.sense == "background":
      out.append((label, label, f"{body} on a star field", f"{body} on a plain background"))
    else:
      out.append((label, label, f"{body} with a ring pattern", f"{body} with stripes"))
  return out


def leaked(pred: str | None, word: str) -> bool:
  """The judged class has the word's shape sense (None, nothing read: no leak)."""
  return pred is not None and _parts(pred)[1] == CASES[word].shape


def summarise(records: Sequence[dict]) -> list[dict]:
  """Per word: n (class × seed pairs), leak rates of word and control captions with intervals
  clustered by class, their paired difference (cluster-robust interval and Wald p; McNemar),
  and the share judged as the named class (see the module docstring)."""
  from scipy import stats as sps  # pylint: disable=g-import-not-at-top
  out = []
  for word in [w for w in CASES if any(r["word"] == w for r in records)]:
    mine = [r for r in records if r["word"] == word]
    a = np.array([r["leak"] for r in mine], int)
    b = np.array([r["control_leak"] for r in mine], int)
    classes = [r["class"] for r in mine]
    both, only_a, only_b, neither = stats.paired_table(a, b)
    d, low, high = stats.paired_table_interval(both, only_a, only_b, neither)
    interval, p = "newcombe paired", None
    g = len(set(classes))
    if g >= 2:   # t with G − 1 df: few classes (the "orange" case has 10) make z too narrow
      df = g - 1
      _, c_low, c_high, se = stats.cluster_wald_interval(a - b, classes,
                                                         z=float(sps.t.ppf(0.975, df)))
      if np.isfinite(se) and se > 0:
        low, high = max(-1.0, c_low), min(1.0, c_high)
        interval = f"cluster-robust by class (t, {df} df)"
        p = float(2 * sps.t.sf(abs(d) / se, df))
    n = len(mine)
    leak, control_leak = stats.clustered_rate(a, classes), stats.clustered_rate(b, classes)
    out.append({"word": word, "sense": CASES[word].sense, "n": n,
                "classes": len(set(classes)),
                "leak": float(a.mean()), "leak_ci95": leak["ci95"],
                "leak_interval": leak["interval"], "control_leak": float(b.mean()),
                "control_leak_ci95": control_leak["ci95"],
                "difference": d, "difference_ci95": [low, high],
                "difference_interval": interval, "difference_p": p,
                "only_word": only_a, "only_control": only_b,
                "mcnemar_p": stats.mcnemar_exact(only_a, only_b),
                "named_class": float(np.mean([r["correct"] for r in mine])),
                "control_named_class": float(np.mean([r["control_correct"] for r in mine]))})
  return out
