"""The world-2 studies of issue #26 (items 2-4): each `world2,study` variant is one command that
writes its results file with provenance (`jaxdiffattack.publish`). Config-level requirements
(prompt counts and lengths, both evaluation noises, MS and PAS fractions, guidance on and off,
the analyses) on the real configs; every `world2,study,smoke` variant end to end on the smoke
world (tests/conftest.py `world2_smoke`), its published numbers checked against its rows by an
independent count."""
import csv
import importlib.util
import json
import pathlib

import numpy as np
import pytest

from jaxdiffattack import labels as labels_lib
from jaxdiffattack.attacks import prompts as prompts_lib
from jaxdiffattack.errors import UserError
from jaxdiffattack.world2 import captions
from jaxdiffattack.world2 import scene

_ROOT = pathlib.Path(__file__).resolve().parents[1]
PROVENANCE = {"command", "date_utc", "machine", "code_version", "workdir"}


def _published(out, workdir) -> dict:
  """A job's published results folder `out`: its provenance.json (every provenance field), each
  listed file a byte copy of the workdir's."""
  provenance = json.loads((out / "provenance.json").read_text())
  assert PROVENANCE <= set(provenance)
  for name in provenance["files"]:
    assert (out / name).read_bytes() == (workdir / name).read_bytes(), name
  return provenance


def _config(name, arg):
  spec = importlib.util.spec_from_file_location(f"w2s_{name}", _ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _jsonl(path):
  return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


# ------------------------------------------------------------------------------ ATM ---
def test_atm_study_config_meets_item_2():
  c = _config("atm", "world2,study")
  assert c.model == "world2" and c.label_set == "world2"
  assert c.eval_noise == "both" and c.baseline == "random_substitution"
  assert c.mode == "released" and c.attack.lam_sim > 0 and c.attack.name == "atm"
  assert c.results_file == "docs/results/atm_world2"
  assert set(c.judges) == {"world2_regnet", "world2_oracle"}
  label_set = labels_lib.get_label_set("world2")
  sets = {name: prompts_lib.load(spec, name, label_set, None, c.per_label)
          for name, spec in c.prompt_sets.items()}
  assert set(sets) == {"short", "long"}
  for name, ps in sets.items():
    tokens = [captions.num_tokens(p) for p in ps.prompts]
    assert len(ps) >= 100, name
    assert len(set(ps.labels)) == scene.NUM_CLASSES == 83       # spread over every class
    # Trained lengths: the grammar's 4..60 tokens; long captions 40..60.
    assert min(tokens) >= captions.MIN_TOKENS and max(tokens) <= captions.MAX_TOKENS
    if name == "long":
      assert min(tokens) >= 40
    else:
      assert max(tokens) < 40
    for p, word, label in zip(ps.prompts, ps.class_words, ps.labels):
      facts = captions.parse(p)          # a grammar caption of one object of its class
      assert [(g.cls, g.count) for g in facts.groups] == [(label, 1)], p
      assert prompts_lib.class_word_present(p, word)
  # The long caption of a scene is its short caption with fillers appended: the sets are paired
  # by scene index by index, so the report also gives short − long paired (attacks.rates).
  for short, long in zip(sets["short"].prompts, sets["long"].prompts):
    assert long.startswith(short + ", ")
  from jaxdiffattack.attacks import rates  # pylint: disable=g-import-not-at-top
  assert rates.scene_paired(c.to_dict())


def test_atm_study_bad_combinations_are_one_line_errors():
  with pytest.raises(ValueError, match=r"'study' is the world-2 ATM study: use 'world2,study'"):
    _config("atm", "toy,study")
  with pytest.raises(UserError, match=r"world2_census_short.*label_set='world2', not 'toy'"):
    prompts_lib.load("world2_census_short", "short", labels_lib.get_label_set("toy"))
  from jaxdiffattack.attacks import config as config_lib  # pylint: disable=g-import-not-at-top
  c = _config("atm", "world2,study")
  c.eval_noise = "fresh"
  with pytest.raises(Exception, match=r"eval_noise.*'fresh'.*per_sample"):
    config_lib.validate(c)


def _asr(rows, set_name, block, judge):
  """Independent count: attacked prompts of a set with any successful sample, by `judge`."""
  hits = n = 0
  for r in rows:
    if r["set"] != set_name or not r.get("attacked"):
      continue
    b = r if block == "attack" else r[block]
    n += 1
    hits += int(b["judges"][judge]["successful_samples"] > 0)
  return hits, n


@pytest.mark.slow
def test_atm_study_smoke_writes_its_results_file(world2_assets, tmp_path, monkeypatch):
  from jaxdiffattack.attacks import experiment  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.attacks import job  # pylint: disable=g-import-not-at-top
  config = _config("atm", "world2,study,smoke")
  # The smoke world's classifiers are untrained (top-1 near chance), so its clean check would
  # skip nearly every prompt: count every clean prompt as correctly generated, so that both sets
  # are attacked and every block of the study (fresh, fixed, baseline) is written.
  clean_check = experiment.Job.clean_check

  def all_correct(self, data):
    return clean_check(self, data) | {"correct": [True] * len(data.prompt_set)}
  monkeypatch.setattr(experiment.Job, "clean_check", all_correct)
  job.run(config, str(tmp_path))
  rows = _jsonl(tmp_path / "results.jsonl")
  published = json.loads((tmp_path / "atm_world2_smoke.json").read_text())
  assert PROVENANCE <= set(published) and published["workdir"] == str(tmp_path.resolve())
  assert published["summary"] == json.loads((tmp_path / "summary.json").read_text())
  md = (tmp_path / "atm_world2_smoke.md").read_text()
  assert "code_version" in md and md.endswith((tmp_path / "report.md").read_text())
  summary = published["summary"]
  by_noise = summary["intervals"]["by_noise"]
  assert set(by_noise) == {"fresh", "fixed"}                   # eval_noise="both"
  attacked = [r for r in rows if r.get("attacked")]
  assert len(attacked) == 4 and all("fixed_noise" in r and "baseline" in r for r in attacked)
  for noise, block in (("fresh", "attack"), ("fixed", "fixed_noise")):
    for judge in ("attack", "world2_regnet", "world2_oracle"):
      for s in ("short", "long"):
        hits, n = _asr(rows, s, block, judge)
        got = by_noise[noise][judge]["atm"][s]["asr"]
        assert (got["successes"], got["prompts"]) == (hits, n), (noise, judge, s)
        if noise == "fresh":
          hits_b, n_b = _asr(rows, s, "baseline", judge)
          got = by_noise[noise][judge]["random_substitution"][s]["asr"]
          assert (got["successes"], got["prompts"]) == (hits_b, n_b)
  # Per-sample: every sample of every attacked prompt counted once.
  for s in ("short", "long"):
    per_sample = by_noise["fresh"]["attack"]["atm"][s]["per_sample"]
    assert per_sample["n"] == sum(r["samples"] for r in attacked if r["set"] == s)
  # Fixed noise: the hard samples of the fixed block were made on the clean check's noise.
  assert summary["fixed_noise"] is not None


# ---------------------------------------------------------------------------- sweep ---
def test_sweep_study_config_meets_item_3():
  from jaxdiffattack import perturb  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.sweep import plan as plan_lib  # pylint: disable=g-import-not-at-top
  c = _config("shift_sweep", "world2,study")
  plan_lib.validate(c)
  assert set(c.shifts) == {"ums", "rms", "sds", "ms", "pas_fraction"}
  assert sorted(s.guidance_scale for s in c.settings) == [1.0, 7.5]     # guidance off and on
  assert {s.model for s in c.settings} == {"world2"}
  assert c.judges == ("evaluator", "world2_oracle") and c.labels == ()
  assert c.object_positions                       # object displacement (displacement.csv)
  assert c.results_file == "docs/results/sweep_world2"
  # The paper's grids (the default config's), each inside the study's, and wider values.
  paper = _config("shift_sweep", None).grids
  for key in ("ums", "rms", "sds", "ms_alpha_c", "ms_alpha_s", "pas_fraction"):
    assert set(paper[key]) <= set(c.grids[key]), key
    assert max(map(abs, c.grids[key])) > max(map(abs, paper[key])), key
  assert set(c.grids.pas_fraction) >= {8 / 4096, 16 / 4096, 32 / 4096, 64 / 4096}
  assert all(0 < f <= 1 for f in c.grids.pas_fraction)
  # MS is on the grid: cells with both α_c and α_s non-zero.
  cells = plan_lib.grid_cells(c.grids, c.shifts)
  assert any(x.shift == "ms" and x.alpha[0] and x.alpha[1] for x in cells)
  # The paper's PAS fractions on world 2's latents (8² default, 16² f4) and SD's 64²: pixels.
  assert [int(perturb.pas_pixels(f, (64, 64))) for f in paper.pas_fraction] == [8, 16, 32, 64]


def test_sweep_study_bad_combinations_are_one_line_errors():
  from jaxdiffattack.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.sweep import plan as plan_lib  # pylint: disable=g-import-not-at-top
  for arg in ("study", "toy,study", "world2,study,compare"):
    with pytest.raises(ValueError, match=r"'study' is the world-2 brittleness study.*"
                                         r"'world2,study'"):
      _config("shift_sweep", arg)
  c = _config("shift_sweep", "world2,study")
  c.judges = ("evaluator",)
  with pytest.raises(ConfigError, match=r"object_positions.*'world2_oracle' in config.judges"):
    plan_lib.validate(c)
  c = _config("shift_sweep", "toy")
  c.object_positions = True
  with pytest.raises(ConfigError, match=r"object_positions.*label_set='world2'"):
    plan_lib.validate(c)


@pytest.mark.slow
def test_sweep_study_smoke_writes_its_results_folder(world2_assets, tmp_path):
  from jaxdiffattack import sweep  # pylint: disable=g-import-not-at-top
  config = _config("shift_sweep", "world2,study,smoke")
  sweep.run(config, str(tmp_path))
  out = tmp_path / "sweep_world2_smoke"
  provenance = _published(out, tmp_path)
  assert set(provenance["files"]) >= {"results.csv", "report.md", "paired.csv", "config.json"}
  with open(tmp_path / "members.csv", newline="") as f:
    members = list(csv.DictReader(f))
  with open(out / "results.csv", newline="") as f:
    results = list(csv.DictReader(f))
  settings = {"world2_cfg7.5", "world2_noguidance"}
  assert {r["setting"] for r in members} == {r["setting"] for r in results} == settings
  assert {r["shift"] for r in results} == {"ums", "rms", "sds", "ms", "pas_fraction"}
  # Each published class-wise oracle rate equals the mean over its members (independent
  # count): per setting, shift cell and class; the unshifted members are every shift's α = 0.
  checked = 0
  for r in results:
    if r["metric"] != "world2_oracle_top1" or r["class"] == "all":
      continue
    cell = [m for m in members if m["setting"] == r["setting"] and m["label"] == r["class"]
            and float(m["alpha_c"]) == float(r["alpha_c"])
            and float(m["alpha_s"]) == float(r["alpha_s"])
            and m["shift"] in (r["shift"], "none")]
    values = [float(m["world2_oracle_top1"]) for m in cell]
    assert int(r["n"]) == len(values) > 0
    np.testing.assert_allclose(float(r["value"]), np.mean(values), atol=1e-6)
    checked += 1
  assert checked >= 2 * 2 * 8                     # settings × classes × cells
  # Object displacement: each row's mean move equals an independent re-derivation from the
  # members' centroids (the unshifted member of the same setting, prompt and seed).
  assert "displacement.csv" in provenance["files"]
  with open(out / "displacement.csv", newline="") as f:
    moves = list(csv.DictReader(f))
  assert {(r["setting"], r["shift"]) for r in moves} == {
      (s, x) for s in settings for x in ("ums", "rms", "sds", "ms", "pas_fraction")}
  base = {(m["setting"], m["prompt_index"], m["seed_index"]):
          (float(m["object_cx"]), float(m["object_cy"])) for m in members if m["shift"] == "none"}
  for r in moves:
    cell = [m for m in members if (m["setting"], m["shift"]) == (r["setting"], r["shift"])
            and float(m["alpha_c"]) == float(r["alpha_c"])
            and float(m["alpha_s"]) == float(r["alpha_s"])]
    d = np.array([[float(m["object_cx"]) - base[(m["setting"], m["prompt_index"],
                                                 m["seed_index"])][0],
                   float(m["object_cy"]) - base[(m["setting"], m["prompt_index"],
                                                 m["seed_index"])][1]] for m in cell])
    d = d[np.isfinite(d).all(1)]
    assert (int(r["members"]), int(r["n"])) == (len(cell), len(d))
    if len(d):
      np.testing.assert_allclose([float(r["dx"]), float(r["dy"])], d.mean(0), atol=1e-6)
  assert all(0 <= float(m["object_cx"]) <= 1 for m in members if m["object_cx"] != "nan")


# ------------------------------------------------------------------------- analyses ---
def test_analysis_study_config_covers_item_4():
  from jaxdiffattack.analysis import run as analysis  # pylint: disable=g-import-not-at-top
  c = _config("analysis", "world2,study")
  analysis.validate(c)
  assert set(c.analyses) == {"speed", "attention", "orders", "inject", "brittleness", "polysemy"}
  assert c.finder == "world2_oracle" and c.model == "world2" and c.classes == ()
  assert c.results_file == "docs/results/analysis_world2"
  # Two-object prompts are trained captions ("{A} and {B}" with a prefix), in both orders, the
  # modifier before the noun as the grammar writes it.
  assert c.orders.placements == ("before",) and c.pairs >= 100 and c.orders.pairs >= 40
  a, b = analysis.pair_list(scene.CLASSES, 1, c.pair_seed)[0]
  facts = captions.parse(c.pair_template.format(a, b))
  assert [g.cls for g in facts.groups] == [scene.CLASS2ID[a], scene.CLASS2ID[b]]
  assert set(c.polysemy.words) == {"star", "ring", "orange"}
  assert {"ums", "rms"} <= set(c.brittleness.shifts) and max(c.brittleness.alphas) >= 1.0


def test_analysis_study_bad_combinations_are_one_line_errors():
  from jaxdiffattack.analysis import run as analysis  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.errors import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r"'study' is the world-2 analysis study"):
    _config("analysis", "toy,study")
  c = _config("analysis", "toy")
  c.analyses = ("polysemy",)
  with pytest.raises(ConfigError, match=r"'polysemy' with config.label_set='toy'.*world2"):
    analysis.validate(c)
  c = _config("analysis", "world2,study")
  c.polysemy.words = ("star", "bank")
  with pytest.raises(ConfigError, match=r"polysemy.words entry 'bank' is invalid"):
    analysis.validate(c)


def test_polysemy_prompts_are_trained_captions_with_the_word_in_its_other_sense():
  from jaxdiffattack.analysis import polysemy  # pylint: disable=g-import-not-at-top
  for word in ("star", "ring", "orange"):
    cases = polysemy.prompts(word, scene.CLASSES)
    assert cases
    for label, control, p, q in cases:
      f, g = captions.parse(p), captions.parse(q)
      assert [x.cls for x in f.groups] == [scene.CLASS2ID[label]], p
      assert [x.cls for x in g.groups] == [scene.CLASS2ID[control]], q
      # The caption never names the word's shape sense: a leak is never asked for.
      assert polysemy.CASES[word].shape not in scene.class_shape(scene.CLASS2ID[label]).split()
      if word == "star":
        assert f.background == "star field" and g.background == "plain"
      elif word == "ring":
        assert f.groups[0].texture == "ring" and g.groups[0].texture == "striped"
      else:
        assert label.split()[0] == "orange" and control.split()[0] == "red"
        assert label.split()[1:] == control.split()[1:]
  assert len(polysemy.prompts("orange", scene.CLASSES)) == 10
  assert polysemy.leaked("green star", "star") and polysemy.leaked("teal ring", "ring")
  assert polysemy.leaked("yellow orange", "orange") and not polysemy.leaked(None, "star")
  assert not polysemy.leaked("red six-pointed star", "star")


def test_polysemy_summary_against_an_independent_count():
  from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top
  from statsmodels.stats import sandwich_covariance  # pylint: disable=g-import-not-at-top
  import statsmodels.api as sm  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import stats  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.analysis import polysemy  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  records = [{"word": w, "class": f"c{i % 7}", "seed": i, "leak": bool(rng.random() < pw),
              "control_leak": bool(rng.random() < 0.1), "correct": bool(rng.random() < 0.8),
              "control_correct": True}
             for w, pw in (("star", 0.4), ("ring", 0.12)) for i in range(60)]
  got = {r["word"]: r for r in polysemy.summarise(records)}
  assert set(got) == {"star", "ring"}
  for w, row in got.items():
    mine = [r for r in records if r["word"] == w]
    a = np.array([r["leak"] for r in mine])
    b = np.array([r["control_leak"] for r in mine])
    assert row["n"] == 60 and row["classes"] == 7
    assert row["leak"] == pytest.approx(a.mean()) and row["control_leak"] == pytest.approx(b.mean())
    assert row["difference"] == pytest.approx(a.mean() - b.mean())
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    assert (row["only_word"], row["only_control"]) == (only_a, only_b)
    exact = scipy_stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    assert row["mcnemar_p"] == pytest.approx(exact)
    # Intervals clustered by class (7 classes × seeds), against statsmodels: the difference's
    # is the CR1 cluster-robust interval of the OLS intercept of the per-pair differences; the
    # leak rates' the same of the 0/1 leaks, clipped to [0, 1].
    classes = np.array([int(r["class"][1:]) for r in mine])
    # The difference: statsmodels' OLS of the per-pair differences on a constant, cluster
    # covariance by class, t on G − 1 = 6 df.
    diff = a.astype(float) - b
    fit = sm.OLS(diff, np.ones(len(diff))).fit(cov_type="cluster", cov_kwds={"groups": classes},
                                               use_t=True)
    assert fit.df_resid_inference == 6
    np.testing.assert_allclose(row["difference_ci95"], fit.conf_int()[0], rtol=1e-6)
    assert row["difference_p"] == pytest.approx(fit.pvalues[0], rel=1e-6)
    assert row["difference_interval"] == "cluster-robust by class (t, 6 df)"
    for values, ci in ((a.astype(float), row["leak_ci95"]), (b.astype(float),
                                                             row["control_leak_ci95"])):
      ols = sm.OLS(values, np.ones(len(values))).fit()
      se = np.sqrt(sandwich_covariance.cov_cluster(ols, classes)[0, 0])
      want = [max(0.0, values.mean() - 1.959964 * se), min(1.0, values.mean() + 1.959964 * se)]
      np.testing.assert_allclose(ci, want, rtol=1e-5, atol=1e-12)
    assert row["leak_interval"] == "cluster-robust"
  assert got["star"]["mcnemar_p"] < 0.05          # 40 % vs 10 % leaks over 60 pairs
  # One class: no cluster-robust variance; Newcombe's paired interval, no clustered p.
  one = polysemy.summarise([r | {"class": "c0"} for r in records if r["word"] == "ring"])[0]
  pairs = [r for r in records if r["word"] == "ring"]
  a = np.array([r["leak"] for r in pairs], int)
  b = np.array([r["control_leak"] for r in pairs], int)
  assert one["difference_ci95"] == list(stats.paired_proportion_interval(a, b)[1:])
  assert one["difference_interval"] == "newcombe paired" and one["difference_p"] is None


@pytest.mark.slow
def test_analysis_study_smoke_writes_its_results_folder(world2_assets, tmp_path):
  from jaxdiffattack.analysis import run as analysis  # pylint: disable=g-import-not-at-top
  config = _config("analysis", "world2,study,smoke")
  analysis.run(config, str(tmp_path))
  out = tmp_path / "analysis_world2_smoke"
  provenance = _published(out, tmp_path)
  for stage in config.analyses:
    assert f"{stage}.json" in provenance["files"], stage
  data = json.loads((out / "polysemy.json").read_text())
  records = data["records"]
  # 3 star cases (not the green star) + 5 ring cases + 1 orange case, 1 seed each.
  assert sorted({(r["word"], r["class"]) for r in records}) == sorted(
      [("star", c) for c in ("red circle", "crimson oval", "blue rounded square",
                             "orange circle")] +
      [("ring", c) for c in config.classes] + [("orange", "orange circle")])
  for row in data["summary"]:
    mine = [r for r in records if r["word"] == row["word"]]
    assert row["n"] == len(mine)
    assert row["leak"] == pytest.approx(np.mean([r["leak"] for r in mine]))
    assert row["control_leak"] == pytest.approx(np.mean([r["control_leak"] for r in mine]))
  report = (out / "report.md").read_text()
  assert "Polysemous words" in report and "Brittleness discussion" in report
  displacement = json.loads((out / "brittleness.json").read_text())["displacement"]
  assert {r["shift"] for r in displacement} <= {"ums"}


def test_object_positions_on_rendered_scenes():
  """The named object's centroid as the oracle reads it: a rendered object's drawn position;
  another hue's object is not the named one (NaN)."""
  from jaxdiffattack.sweep import plan as plan_lib  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.world2 import render  # pylint: disable=g-import-not-at-top
  spec = scene.sample_scene(np.random.default_rng(6), layout="single",
                            classes=[scene.CLASS2ID["red circle"]], relation=None,
                            size="medium", texture="flat", background="plain")
  image = render.render(spec, 64).astype(np.float64) / 255.0
  names = list(scene.CLASSES)
  got = plan_lib.object_positions(np.stack([image, image]),
                                  [names.index("red circle"), names.index("blue circle")], names)
  (obj,) = spec.objects
  np.testing.assert_allclose([got["object_cx"][0], got["object_cy"][0]], [obj.cx, obj.cy],
                             atol=0.03)
  assert np.isnan(got["object_cx"][1]) and np.isnan(got["object_cy"][1])


def test_displacement_against_an_independent_computation():
  from statsmodels.stats import sandwich_covariance  # pylint: disable=g-import-not-at-top
  import statsmodels.api as sm  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.sweep import report  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  rows = []
  for p in range(6):
    for s in range(3):
      x0, y0 = rng.uniform(0.3, 0.7, 2)
      rows.append({"setting": "a", "shift": "none", "alpha_c": "0.0", "alpha_s": "0.0",
                   "prompt_index": str(p), "seed_index": str(s), "object_cx": str(x0),
                   "object_cy": str(y0)})
      for a in (0.5, 1.0):
        lost = rng.random() < 0.2
        rows.append({"setting": "a", "shift": "ums", "alpha_c": str(a), "alpha_s": "0.0",
                     "prompt_index": str(p), "seed_index": str(s),
                     "object_cx": "nan" if lost else str(x0 + 0.1 * a + rng.normal(0, 0.02)),
                     "object_cy": str(y0 + rng.normal(0, 0.02))})
  got = report.displacement(rows)
  assert [(r["shift"], r["alpha"]) for r in got] == [("ums", "0.5"), ("ums", "1")]
  for r in got:
    mine = [m for m in rows if m["shift"] == "ums" and float(m["alpha_c"]) == r["alpha_c"]]
    base = {(m["prompt_index"], m["seed_index"]): (float(m["object_cx"]), float(m["object_cy"]))
            for m in rows if m["shift"] == "none"}
    d = np.array([[float(m["object_cx"]) - base[(m["prompt_index"], m["seed_index"])][0],
                   float(m["object_cy"]) - base[(m["prompt_index"], m["seed_index"])][1],
                   int(m["prompt_index"])] for m in mine])
    d = d[np.isfinite(d).all(1)]
    assert (r["members"], r["n"]) == (len(mine), len(d))
    # The cluster-robust (CR1) interval of the mean: statsmodels' OLS on a constant.
    fit = sm.OLS(d[:, 0], np.ones(len(d))).fit()
    se = np.sqrt(sandwich_covariance.cov_cluster(fit, d[:, 2].astype(int))[0, 0])
    np.testing.assert_allclose(r["dx"], d[:, 0].mean(), atol=1e-12)
    np.testing.assert_allclose([r["dx_low"], r["dx_high"]],
                               [r["dx"] - 1.959964 * se, r["dx"] + 1.959964 * se], rtol=1e-4)
    assert r["interval"] == "cluster-robust" and r["dx"] > 0.04
    # The mean distance moved, with its cluster-robust interval, the same way.
    dist = np.hypot(d[:, 0], d[:, 1])
    fit = sm.OLS(dist, np.ones(len(d))).fit()
    se = np.sqrt(sandwich_covariance.cov_cluster(fit, d[:, 2].astype(int))[0, 0])
    np.testing.assert_allclose(r["dist"], dist.mean(), atol=1e-12)
    np.testing.assert_allclose([r["dist_low"], r["dist_high"]],
                               [dist.mean() - 1.959964 * se, dist.mean() + 1.959964 * se],
                               rtol=1e-4)


def test_displacement_without_the_unshifted_member_is_a_one_line_error():
  from jaxdiffattack.sweep import report  # pylint: disable=g-import-not-at-top
  row = {"setting": "a", "shift": "ums", "alpha_c": "0.5", "alpha_s": "0.0",
         "prompt_index": "3", "seed_index": "1", "object_cx": "0.5", "object_cy": "0.5"}
  with pytest.raises(UserError, match="prompt 3, seed 1 has no unshifted member") as e:
    report.displacement([row])
  assert "\n" not in str(e.value)
