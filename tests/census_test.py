"""The clean failure census (jaxdiffattack/census.py, world2/failures.py; issue #23 item 4):
failure kinds of the oracle's assessments of rendered scenes, the census prompts, the per-prompt
rates against scipy's Wilson interval, and the `world2,smoke` census end to end on the session's
smoke export (outputs consistent, resumed == uninterrupted, one-line config errors)."""
import collections
import csv
import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from jaxdiffattack import census
from jaxdiffattack import variants
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.world2 import captions
from jaxdiffattack.world2 import failures
from jaxdiffattack.world2 import oracle
from jaxdiffattack.world2 import render
from jaxdiffattack.world2 import scene

SIZE = 64


def _spec(seed, layout, names, relation=None, size="large", texture="flat"):
  return scene.sample_scene(np.random.default_rng(seed), layout=layout,
                            classes=[scene.CLASS2ID[n] for n in names], relation=relation,
                            size=size, texture=texture, background="plain")


def _kind(spec, caption):
  facts = captions.parse(caption)
  (assessment,) = oracle.judge(render.render(spec, SIZE)[None], [facts])
  return failures.failure_kind(assessment, facts), assessment


# --------------------------------------------------------------------------- failure kinds ---
def test_failure_kind_of_rendered_scenes_of_every_kind():
  cases = [  # (scene, caption, kind, expected, drawn, neighbour, detail)
      (_spec(1, "single", ["red circle"]), "a red circle", "holds", None, None, "", ""),
      (_spec(1, "single", ["crimson circle"]), "a red circle", "other_class", "red circle",
       "crimson circle", "hue", ""),
      (_spec(2, "single", ["red square"]), "a red rectangle", "other_class", "red rectangle",
       "red square", "shape", ""),
      (_spec(3, "single", ["blue star"]), "a red circle", "other_class", "red circle",
       "blue star", "", ""),
      (_spec(4, "single", ["red circle"], size="medium"), "a red circle and a blue square",
       "missing", "blue square", None, "", ""),
      (_spec(5, "two", ["red circle"], size="medium"), "a red circle", "count", "red circle",
       None, "", "more"),
      (_spec(6, "single", ["red circle"], size="medium"), "two red circles", "count",
       "red circle", None, "", "fewer"),
      (_spec(7, "pair", ["red square", "blue circle"], size="medium"),
       "a red circle and a blue square", "swapped", "red circle", "blue circle", "",
       "blue circle, red square"),   # largest first
      (_spec(8, "pair", ["red circle", "blue square"], relation="left", size="medium"),
       "a blue square left of a red circle", "relation", None, None, "", ""),
      (_spec(9, "single", ["red square"]), "a striped red square", "texture", "red square",
       None, "", ""),
      (_spec(10, "pair", ["red circle", "blue square"], size="medium"), "a red circle",
       "extra", None, "blue square", "", ""),
  ]
  for spec, caption, kind, expected, drawn, nbr, detail in cases:
    got, assessment = _kind(spec, caption)
    assert captions.consistent(captions.parse(caption), spec) == (kind == "holds"), caption
    assert (got.kind, got.expected, got.drawn, got.neighbour, got.detail) == (
        kind, expected, drawn, nbr, detail), (caption, assessment.reason)
    assert (kind == "holds") == (assessment.verdict == "holds")
    assert (kind in failures.FAILURE_KINDS) == (assessment.verdict == "violated")


def test_failure_kind_unreadable_cases_are_unclear_never_failures():
  # Two objects of different hues that touch: the oracle cannot read either.
  spec = _spec(13, "pair", ["red square", "blue circle"])
  a, b = spec.objects
  touching = spec._replace(objects=(a, b._replace(cx=a.cx + 0.5 * a.radius, cy=a.cy)))
  # A hue between two palette hues (red 0°, orange 25°): unreadable.
  (obj,) = _spec(14, "single", ["red circle"]).objects
  between = _spec(14, "single", ["red circle"])._replace(
      objects=(obj._replace(rgb=scene.hsv_rgb(12.5, 0.88, 0.86)),))
  for spec, caption in ((touching, "a red square and a blue circle"),
                        (between, "a red circle")):
    got, assessment = _kind(spec, caption)
    assert assessment.verdict == "unclear", assessment.reason
    assert got.kind == "unreadable" and got.detail == assessment.reason
    assert got.kind not in failures.FAILURE_KINDS


def test_neighbour_names_hue_and_shape_neighbours_only():
  assert failures.neighbour("red circle", "orange circle") == "hue"
  assert failures.neighbour("red circle", "red oval") == "shape"
  assert failures.neighbour("red circle", "blue circle") == ""
  assert failures.neighbour("red circle", "crimson oval") == ""


# --------------------------------------------------------------------------------- prompts ---
def _config(arg="world2", **overrides):
  config = variants.load_config("census", arg)
  for key, value in overrides.items():
    config[key] = value
  return config


def test_prompts_deterministic_paired_and_long_captions_are_40_to_60_tokens():
  config = _config(classes=("red circle", "green orange", "purple six-pointed star"),
                   scenes_per_class=3)
  prompts = census.make_prompts(config)
  again = census.make_prompts(config)
  assert [(p.prompt, p.scene, p.kind) for p in prompts] == [
      (p.prompt, p.scene, p.kind) for p in again]
  assert len(prompts) == 3 * 3 * 4 and [p.index for p in prompts] == list(range(len(prompts)))
  counts = collections.Counter(p.kind for p in prompts)
  assert counts == {"single": 9, "two_objects": 9, "long": 18}
  # A class's prompts do not depend on which other classes are in the census.
  alone = census.make_prompts(_config(classes=("green orange",), scenes_per_class=3))
  assert [p.prompt for p in alone] == [p.prompt for p in prompts if p.label == "green orange"]
  by_scene = collections.defaultdict(list)
  for p in prompts:
    by_scene[p.scene].append(p)
  for name, (short, long) in by_scene.items():
    label, scene_kind, j = name.split("/")
    spec, _ = census.scene_spec(scene.CLASS2ID[label], scene_kind, int(j))
    assert short.kind == scene_kind and long.kind == "long"
    assert captions.parse(short.prompt) == captions.parse(long.prompt) == short.facts
    assert captions.consistent(short.facts, spec) and captions.consistent(long.facts, spec)
    assert scene.CLASSES[spec.groups[0].cls] == label == short.label
    assert len(spec.objects) == (1 if scene_kind == "single" else 2)
    assert 40 <= captions.num_tokens(long.prompt) == long.tokens <= 60
    assert 4 <= short.tokens <= 39 and long.prompt.startswith(short.prompt)
  only_long = census.make_prompts(_config(classes=("red circle",), kinds=("long",)))
  assert [p.prompt for p in only_long] == [p.prompt for p in prompts
                                           if p.kind == "long" and p.scene.endswith("/0")
                                           and p.label == "red circle"]


def test_full_census_size_is_the_docstring_s():
  prompts = census.make_prompts(_config())
  assert len(prompts) == 332 and len(prompts) * 64 == 21248
  assert len({p.label for p in prompts}) == scene.NUM_CLASSES == 83


@pytest.mark.parametrize("key,value,match", [
    ("classes", ("red dog",), "config.classes"),
    ("seeds_per_prompt", 0, "config.seeds_per_prompt"),
    ("min_seeds", 100, "config.min_seeds"),
    ("kinds", ("short",), "config.kinds"),
    ("long_tokens", (40, 70), "config.long_tokens"),
    ("judges", ("evaluator",), "config.judges"),
    ("save_images", "some", "config.save_images"),
    ("label_set", "toy", "config.label_set"),
    ("band", (0.2, 0.1), "config.band"),
])
def test_bad_config_is_one_line_error(key, value, match):
  with pytest.raises(ConfigError, match=match) as e:
    census.validate(_config(**{key: value}))
  assert "\n" not in str(e.value)


def test_config_needs_a_world():
  with pytest.raises(ValueError, match="name the world"):
    variants.load_config("census", "smoke")


# ------------------------------------------------------------------------------ rate tables ---
def _rows(outcomes, kind="single", label="red circle", start=0):
  """Image rows of prompts whose per-seed oracle outcomes ("h", "v", "u") are given."""
  rows = []
  for p, seq in enumerate(outcomes):
    for s, o in enumerate(seq):
      rows.append({"prompt_index": start + p, "prompt": f"a {label} {start + p}", "kind": kind,
                   "scene": f"{label}/{kind}/{p}", "label": label, "seed": s,
                   "judges": {"world2_oracle": {"failure": o == "v", "unclear": o == "u"},
                              "evaluator": {"failure": o != "h"}},
                   "failure": {"kind": {"h": "holds", "v": "missing", "u": "unreadable"}[o],
                               "drawn": None, "neighbour": ""}})
  return rows


def test_prompt_rates_and_wilson_intervals_match_scipy():
  rng = np.random.default_rng(0)
  outcomes = ["".join(rng.choice(list("hvu"), p=p, size=64))
              for p in ([1, 0, 0], [0.9, 0.05, 0.05], [0.5, 0.4, 0.1], [0, 1, 0])]
  table = census.prompt_table(_rows(outcomes), min_seeds=64)
  for row, seq in zip(table, outcomes):
    k = seq.count("v")
    ci = scipy_stats.binomtest(k, 64).proportion_ci(method="wilson")
    assert row["seeds"] == 64 and row["failures"] == k and row["unclear"] == seq.count("u")
    assert row["rate"] == k / 64
    np.testing.assert_allclose([row["ci_low"], row["ci_high"]], [ci.low, ci.high], atol=1e-9)
    assert row["evaluator_failures"] == 64 - seq.count("h")
  with pytest.raises(Exception, match="need >= 64"):
    census.prompt_table(_rows(["h" * 10]), min_seeds=64)


def test_targets_hold_only_prompts_in_the_band_with_their_failed_seeds():
  seqs = ["h" * 64, "v" * 2 + "h" * 62, "h" * 60 + "vvvu", "v" * 20 + "h" * 44]
  rows = _rows(seqs[:2]) + _rows(seqs[2:], kind="long", label="blue square", start=2)
  config = _config()
  chosen = census.targets(rows, config)
  assert chosen["judged"] == 4 and chosen["eligible"] == 2 and chosen["shortfall"] == 38
  got = {t["prompt_index"]: t for t in chosen["targets"]}
  assert set(got) == {1, 2}
  assert got[1]["failed_seeds"] == [0, 1] and got[1]["rate"] == 2 / 64
  assert got[2]["failed_seeds"] == [60, 61, 62] and got[2]["unclear"] == 1
  assert got[2]["kind"] == "long" and got[2]["label"] == "blue square"
  assert all(0.01 <= t["rate"] <= 0.10 for t in chosen["targets"])


def test_summary_short_vs_long_is_paired_by_scene():
  rng = np.random.default_rng(1)
  rows = []
  for scene_id in range(12):
    p_short, p_long = rng.uniform(0.6, 1.0), rng.uniform(0.1, 0.4)
    for kind, p in (("single", p_short), ("long", p_long)):
      seq = "".join(np.where(rng.random(64) < p, "h", "v"))
      part = _rows([seq], kind=kind, start=2 * scene_id + (kind == "long"))
      for r in part:
        r["scene"] = f"red circle/single/{scene_id}"
      rows += part
  config = _config()
  prompts = census.prompt_table(rows, 64)
  out = census.summary(rows, census.class_table(rows), prompts, config)
  sl = out["criteria"]["short_vs_long"]
  short = [np.mean([r["failure"]["kind"] == "holds" for r in rows
                    if r["scene"].endswith(f"/{s}") and r["kind"] == "single"]) for s in range(12)]
  long = [np.mean([r["failure"]["kind"] == "holds" for r in rows
                   if r["scene"].endswith(f"/{s}") and r["kind"] == "long"]) for s in range(12)]
  assert sl["scenes"] == 12
  np.testing.assert_allclose(sl["difference"], np.mean(np.subtract(short, long)))
  np.testing.assert_allclose([sl["short_accuracy"], sl["long_accuracy"]],
                             [np.mean(short), np.mean(long)])
  low, high = sl["ci95_by_scene"]
  assert low < sl["difference"] < high and low > 0.10 and sl["decision"] == "not met"
  assert out["images"] == len(rows) and out["prompts"] == 24
  assert out["criteria"]["readable_failures"]["share_readable"] == 1.0


def test_class_table_counts_and_clustered_interval():
  import statsmodels.api as sm  # pylint: disable=g-import-not-at-top
  rows = _rows(["hhhv", "vvhh", "uhhh"]) + _rows(["hhhh"], label="blue square", start=3)
  table = {c["class"]: c for c in census.class_table(rows)}
  red = table["red circle"]
  assert red["seeds"] == 12 and red["failures"] == 3 and red["unclear"] == 1
  assert red["missing"] == 3 and red["unreadable"] == 1 and red["rate"] == 3 / 12
  y = np.array([o == "v" for o in "hhhvvvhhuhhh"], float)
  fit = sm.OLS(y, np.ones_like(y)).fit(cov_type="cluster",
                                       cov_kwds={"groups": np.repeat([0, 1, 2], 4)})
  low, high = fit.conf_int(alpha=0.05)[0]
  np.testing.assert_allclose([red["ci_low"], red["ci_high"]], [max(0, low), high], atol=1e-6)
  assert table["blue square"]["failures"] == 0 and table["blue square"]["rate"] == 0.0
  assert census.CLASS_FIELDS[0] == "class" and set(red) == set(census.CLASS_FIELDS)


# --------------------------------------------------------------------------- end to end (smoke) ---
def _read_csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def smoke_run(world2_assets, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("census_smoke")
  return workdir, census.run(_config("world2,smoke"), str(workdir))


@pytest.mark.slow
def test_smoke_census_outputs_are_present_and_consistent(smoke_run):
  workdir, out = smoke_run
  config = _config("world2,smoke")
  rows = [json.loads(l) for l in (workdir / "images.jsonl").read_text().splitlines()]
  assert len(rows) == 2 * 4 * 4 == len(out["rows"])
  assert {r["kind"] for r in rows} == {"single", "two_objects", "long"}
  for r in rows:
    o = r["judges"]["world2_oracle"]
    assert set(r["judges"]) == {"world2_oracle", "evaluator"}
    assert not (o["failure"] and o["unclear"])
    assert r["failure"]["kind"] in failures.KINDS
    assert (r["failure"]["kind"] in failures.FAILURE_KINDS) == o["failure"]
    assert (r["failure"]["kind"] == "unreadable") == o["unclear"]
    assert (r["file"] is not None) == (r["failure"]["kind"] != "holds")
    if r["file"]:
      assert (workdir / r["file"]).is_file()
  prompts = _read_csv(workdir / "prompts.csv")
  assert len(prompts) == 8 and all(int(p["seeds"]) == 4 for p in prompts)
  classes = _read_csv(workdir / "classes.csv")
  assert [c["class"] for c in classes] == ["red circle", "blue square"]
  assert sum(int(c["seeds"]) for c in classes) == len(rows)
  assert sum(int(c["failures"]) for c in classes) == sum(
      r["judges"]["world2_oracle"]["failure"] for r in rows) == sum(
          int(p["failures"]) for p in prompts)
  for c in classes:   # the kinds partition a class's images
    kinds = sum(int(c[k]) for k in census.CLASS_KINDS)
    holds = sum(r["failure"]["kind"] == "holds" for r in rows if r["label"] == c["class"])
    assert kinds + holds == int(c["seeds"])
    assert int(c["unreadable"]) == int(c["unclear"])
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["images"] == len(rows) and summary["classes"] == 2
  assert set(summary["criteria"]) == {"rate_range", "classes_failing_1_to_10",
                                      "readable_failures", "short_vs_long"}
  short_long = summary["criteria"]["short_vs_long"]
  assert short_long["scenes"] == 4
  if short_long["short_accuracy"] == short_long["long_accuracy"] == 0:   # the smoke model
    assert short_long["decision"].startswith("undecided (degenerate")
  targets = json.loads((workdir / "targets.json").read_text())
  rates = {int(p["prompt_index"]): float(p["rate"]) for p in prompts}
  for t in targets["targets"]:
    assert config.band[0] <= t["rate"] <= config.band[1]
    assert rates[t["prompt_index"]] == t["rate"]
  assert targets["judged"] == 8
  report = (workdir / "report.md").read_text()
  assert "| red circle |" in report and "short_vs_long" in report
  for kind in {r["failure"]["kind"] for r in rows} - {"holds"}:
    assert (workdir / "grids" / f"{kind}.png").is_file()
  assert (workdir / "classes.md").read_text().count("\n") == 2 + len(classes)


@pytest.mark.slow
def test_smoke_census_resumed_equals_uninterrupted(smoke_run, tmp_path):
  workdir, _ = smoke_run
  stopped = census.run(_config("world2,smoke", max_chunks=1), str(tmp_path))
  assert stopped == {"stopped_after": 1}
  assert [p.name for p in (tmp_path / "chunks").iterdir()] == ["00000.jsonl"]
  assert not (tmp_path / "images.jsonl").exists()
  census.run(_config("world2,smoke"), str(tmp_path))
  files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
  assert files(tmp_path) == files(workdir)
  for name in files(workdir):
    assert (tmp_path / name).read_bytes() == (workdir / name).read_bytes(), name
  for key, value in (("seed", 1), ("chunk_prompts", 2)):   # chunks are cut by chunk_prompts
    with pytest.raises(ConfigError, match=f"census run with a different config.*{key}"):
      census.run(_config("world2,smoke", **{key: value}), str(tmp_path))
