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


# ------------------------------------------------ targets from a census (targets_file) --------
def _census_file(tmp_path, entries, **extra):
  import json  # pylint: disable=g-import-not-at-top
  path = tmp_path / "census" / "targets.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({"band": [0.01, 0.1], "eligible": len(entries), "judged": 9,
                              "targets": entries} | extra))
  return path


CENSUS_ENTRIES = [
    {"prompt": "a picture of a red circle on a star field", "label": "red circle",
     "kind": "single", "rate": 0.03125, "prompt_index": 0},
    {"prompt": "a teal rectangle under a red circle, digital art", "label": "red circle",
     "kind": "two_objects", "rate": 0.0625, "prompt_index": 2},
    {"prompt": "two blue squares, flat colours, lovely, in the style of a textbook figure, no "
               "text", "label": "blue square", "kind": "long", "rate": 0.015625,
     "prompt_index": 7},
]


def _search_config(**overrides):
  from jaxdiffattack import variants  # pylint: disable=g-import-not-at-top
  config = variants.load_config("latent_search", "world2,protocol,smoke")
  config.update(overrides)
  return config


def test_census_file_gives_its_captions_labels_and_kinds(tmp_path):
  from jaxdiffattack import labels as labels_lib  # pylint: disable=g-import-not-at-top
  path = _census_file(tmp_path, CENSUS_ENTRIES)
  names = labels_lib.get_label_set("world2").names
  for where in (path, path.parent):            # the file or the census workdir
    got = targets.make_targets(_search_config(targets_file=str(where), seeds_per_label=2))
    assert [t.index for t in got] == list(range(6))
    assert [(t.prompt, t.label, t.kind, t.clean_rate, t.seed_index) for t in got] == [
        (e["prompt"], e["label"], e["kind"], e["rate"], s) for e in CENSUS_ENTRIES
        for s in range(2)]
    for t in got:
      assert names[t.label_index] == t.label and t.target_index == t.label_index
      assert t.target_label == ""
  # Without targets_file the old label × template targets, untouched.
  plain = targets.make_targets(_search_config(targets_file=""))
  assert [t.prompt for t in plain] == [
      labels_lib.WORLD2_SHORT.format(label) for label in plain and [t.label for t in plain]]
  assert all(t.kind == "" and t.clean_rate is None for t in plain)


@pytest.mark.parametrize("content,match", [
    (None, "no such file; run the census first: python launch/census.py"),
    ("{not json", "not JSON"),
    ('{"band": [0.01, 0.1]}', "has no list under 'targets'"),
    ('{"targets": [{"prompt": "a red circle", "label": "red circle"}]}',
     r"target 0 lacks \['kind'\]"),
    ('{"band": [0.01, 0.1], "eligible": 0, "judged": 12, "targets": []}',
     r"selected no targets \(0 of 12 prompts .*band \[0.01, 0.1\]\); widen the band"),
])
def test_bad_census_file_is_one_line(tmp_path, content, match):
  path = tmp_path / "targets.json"
  if content is not None:
    path.write_text(content)
  with pytest.raises(UserError, match=match) as e:
    targets.make_targets(_search_config(targets_file=str(path)))
  assert "\n" not in str(e.value) and "config.targets_file=" in str(e.value)


def test_census_label_outside_the_label_set_is_a_config_error(tmp_path):
  from jaxdiffattack.errors import ConfigError  # pylint: disable=g-import-not-at-top
  path = _census_file(tmp_path, [dict(CENSUS_ENTRIES[0], label="red cube")])
  with pytest.raises(ConfigError, match="label 'red cube' is not in label_set 'world2'"):
    targets.make_targets(_search_config(targets_file=str(path)))


def test_search_validate_refuses_census_targets_outside_the_latent_space(tmp_path):
  from jaxdiffattack.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.search import experiment  # pylint: disable=g-import-not-at-top
  path = _census_file(tmp_path, CENSUS_ENTRIES)
  experiment.validate(_search_config(targets_file=str(path)))
  with pytest.raises(ConfigError, match="config.targets_file=.*latent space"):
    experiment.validate(_search_config(targets_file=str(path), space="embedding",
                                          transfer_per_target=0))
  with pytest.raises(UserError, match="run the census first"):
    experiment.validate(_search_config(targets_file=str(tmp_path / "none")))
  with pytest.raises(ConfigError, match="filter_clean_judges"):
    experiment.validate(_search_config(filter_clean_judges=("human",)))


def test_scene_oracle_judges_each_census_target_against_its_own_caption():
  """Census captions (single, two-object, long with fillers) parse back to their scene's facts,
  and the "world2_oracle" judge reads the caption it is given (not "a <label>"): a rendered scene
  holds against its own caption and is violated by a caption of another scene of its class."""
  from jaxdiffattack import census  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import judges  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import variants  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.world2 import captions  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.world2 import render  # pylint: disable=g-import-not-at-top
  config = variants.load_config("census", "world2")
  config.classes = ("red circle", "blue square")
  config.scenes_per_class = 2
  prompts = census.make_prompts(config)
  assert {p.kind for p in prompts} == set(census.KINDS)
  assert all(captions.parse(p.prompt) == p.facts for p in prompts)
  chosen = [p for p in prompts if p.kind != "long" and p.scene.endswith("/0")]
  images = np.stack([render.render(census.scene_spec(
      census.scene_lib.CLASS2ID[p.label], p.scene_kind, 0)[0], 64) for p in chosen])
  names = tuple(census.scene_lib.CLASSES)
  labels = np.array([names.index(p.label) for p in chosen])
  own = judges.judge_scores("world2_oracle", images, labels, names, False,
                            [p.prompt for p in chosen])
  assert not own["world2_oracle/failure"].any()
  holds = ~own["world2_oracle/unclear"].astype(bool)   # a rendered blue square can be ambiguous
  assert holds.sum() >= 3
  # Each single-object scene against its class's two-object caption and vice versa.
  swap = {p.scene: q.prompt for p in chosen for q in chosen
          if q.label == p.label and q.scene_kind != p.scene_kind}
  other = judges.judge_scores("world2_oracle", images, labels, names, False,
                              [swap[p.scene] for p in chosen])
  assert other["world2_oracle/failure"][holds].all()
  plain = judges.judge_scores("world2_oracle", images, labels, names, False, None)
  two = [i for i, p in enumerate(chosen) if p.scene_kind == "two_objects" and holds[i]]
  assert two and plain["world2_oracle/failure"][two].all()   # "a <label>" is not what they show
