"""Target selection by clean failure rate (search.targets.select_by_clean_failure): rates counted
from per-seed oracle verdicts (checked against a NumPy count), the band, the spread over kinds
and classes, too few seeds or an unknown verdict → one line."""

import numpy as np
import pytest

from jaxdiffattack import stats
from jaxdiffattack.errors import UserError
from jaxdiffattack.search import targets


def _record(prompt, label, kind, failures, seeds=64, unclear=0, rng=None):
  verdicts = ["violated"] * failures + ["unclear"] * unclear + ["holds"] * (
      seeds - failures - unclear)
  if rng is not None:
    rng.shuffle(verdicts)
  return {"prompt": prompt, "label": label, "kind": kind, "verdicts": verdicts}


def test_rates_are_violated_seeds_over_seeds():
  rng = np.random.default_rng(0)
  v = rng.choice(["holds", "violated", "unclear"], size=100, p=[0.85, 0.05, 0.1]).tolist()
  (r,) = targets.clean_rates([{"prompt": "p", "label": "a", "kind": "single", "verdicts": v}])
  arr = np.array(v)
  assert (r.seeds, r.failures, r.unclear) == (100, int((arr == "violated").sum()),
                                              int((arr == "unclear").sum()))
  assert r.rate == (arr == "violated").mean()
  assert r.ci95 == stats.wilson_interval(r.failures, 100)
  (b,) = targets.clean_rates([{"prompt": "p", "label": "a", "verdicts": [True] * 3 + [False] * 61
                               + [None] * 0}])
  assert b.failures == 3 and b.kind == ""


def test_selection_keeps_the_band_and_spreads_over_kinds_and_classes():
  rng = np.random.default_rng(1)
  records = []
  # single-object prompts: 6 classes × 3 prompts at 0–12 failures of 64 (0 %–18.75 %)
  for c in range(6):
    for j, f in enumerate((0, 3, 12)):
      records.append(_record(f"single {c} {j}", f"class{c}", "single", f, rng=rng))
  # two-object prompts: class0 has many eligible prompts, class1 one
  for j in range(8):
    records.append(_record(f"two 0 {j}", "class0", "two_objects", 2 + j % 3, rng=rng))
  records.append(_record("two 1 0", "class1", "two_objects", 4, rng=rng))
  # long captions: rates 1/128 (below 1 %) and 6/128
  records.append(_record("long a", "class2", "long", 1, seeds=128))
  records.append(_record("long b", "class3", "long", 6, seeds=128))
  out = targets.select_by_clean_failure(records, band=(0.01, 0.10), count=10)
  sel = out["selected"]
  rates = {r.prompt: r for r in targets.clean_rates(records)}
  expected_eligible = [p for p, r in rates.items() if 0.01 <= r.failures / r.seeds <= 0.10]
  assert out["eligible"] == len(expected_eligible) == 6 + 9 + 1
  assert all(0.01 <= r.rate <= 0.10 for r in sel) and len(sel) == 10 and out["shortfall"] == 0
  assert len({r.prompt for r in sel}) == 10
  # the one long prompt in the band is chosen; both two-object classes before a second class0
  assert "long b" in {r.prompt for r in sel} and "long a" not in {r.prompt for r in sel}
  two = [r.label for r in sel if r.kind == "two_objects"]
  assert two[:2] == ["class0", "class1"]
  # every single-object class once before any twice
  single = [r.label for r in sel if r.kind == "single"]
  assert len(set(single)) == len(single) == out["by_kind"]["single"]
  assert out["by_kind"] == {"long": 1, "single": 5, "two_objects": 4}
  # deterministic, and independent of the records' order
  again = targets.select_by_clean_failure(records[::-1], band=(0.01, 0.10), count=10)
  assert [r.prompt for r in again["selected"]] == [r.prompt for r in sel]


def test_shortfall_when_too_few_prompts_are_in_the_band():
  records = [_record(f"p{i}", f"c{i}", "single", f) for i, f in enumerate((0, 1, 2, 20))]
  out = targets.select_by_clean_failure(records, count=40)
  assert [r.prompt for r in out["selected"]] == ["p2", "p1"]   # 2/64 is nearer the middle
  assert out["shortfall"] == 38 and out["judged"] == 4


def test_bad_input_is_one_line():
  with pytest.raises(UserError, match="63 seeds judged, need >= 64") as e:
    targets.clean_rates([_record("p", "c", "single", 1, seeds=63)])
  assert "\n" not in str(e.value)
  with pytest.raises(UserError, match="verdict 'maybe'"):
    targets.clean_rates([{"prompt": "p", "label": "c", "verdicts": ["maybe"] * 64}])
  with pytest.raises(ValueError, match="config.band"):
    targets.select_by_clean_failure([], band=(0.2, 0.1))
