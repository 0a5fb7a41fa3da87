"""The search job end to end on the tiny SD with the synthetic scorer: outputs, a found failure
re-checked independently, every space, config errors, and killed-and-resumed == uninterrupted."""

import json
import shutil

import numpy as np
import pytest

from jaxdiffattack import runs
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import scoring
from jaxdiffattack import search
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.search import report

from search_multidevice_worker import tiny_config  # pylint: disable=g-bad-import-order


@pytest.fixture(scope="module")
def latent_run(tiny_sd_dirs, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("search_latent")
  config = tiny_config("latent", tiny_sd_dirs[1])
  out = search.run(config, workdir, scoring=scoring.synthetic_scoring())
  return config, workdir, out


def _rows(workdir):
  return [json.loads(line) for line in (workdir / "results.jsonl").read_text().splitlines()]


def test_outputs_schema(latent_run):
  config, workdir, out = latent_run
  rows = _rows(workdir)
  assert [(r["method"], r["target"]) for r in rows] == [
      (m, t) for m in ("Sep_CMA_ES", "random") for t in range(3)]
  # Deterministic (every draw is keyed): each target fails within the budget — "cube" and "cone"
  # already fail clean; "ball" does not, and needs a search (or random seeds) to fail.
  assert [r["success"] for r in rows] == [True] * 6
  assert [r["clean"]["verdict"] for r in rows] == [True, False, True] * 2
  for r in rows:
    assert r["budget"] == 6 * 4 and 0 < r["evaluations"] <= 24
    assert r["failures_found"] > 0 and r["first_success_generation"] is not None
    assert r["evaluations_to_first_success"] == 6 * (r["first_success_generation"] + 1)
    # Stops after its first failure (stop_after_failures = 1).
    assert r["evaluations"] == r["evaluations_to_first_success"]
    f = r["failures"][0]
    assert f["generation"] == r["first_success_generation"]
    assert f["scores"]["verdict_margin"] < 0  # evaluator: top-1 lost
    assert f["judges"] == {"evaluator": {"pred": f["judges"]["evaluator"]["pred"],
                                         "confidence": f["judges"]["evaluator"]["confidence"],
                                         "failure": True}}
    assert f["judges"]["evaluator"]["pred"] in ("cube", "ball", "cone")
    assert f["judges"]["evaluator"]["pred"] != r["label"]
    assert set(f["ngr_reject"]) == set(report.NGR_TESTS)
    assert set(r["ngr"]) == set(report.NGR_TESTS)
    assert f["files"] and all((workdir / name).is_file() for name in f["files"])
    assert len(r["curve_best"]) == 4 and r["clean"]["clip"] is not None
    assert (workdir / r["best"]["files"][0]).is_file()
  summary = json.loads((workdir / "summary.json").read_text())
  for method in ("Sep_CMA_ES", "random"):
    s = summary["methods"][method]
    sel = [r for r in rows if r["method"] == method]
    assert s["successes"] == sum(r["success"] for r in sel) and s["targets"] == 3
    assert s["images_per_s"] > 0 and 0 < s["ask_tell_share"] < 1
    assert s["evaluations"] == sum(r["evaluations"] for r in sel)
  assert "| Sep_CMA_ES |" in (workdir / "report.md").read_text()
  assert (workdir / "plots" / "fitness_curves.png").is_file()
  # The report is rebuilt from the files alone.
  before = (workdir / "summary.json").read_text()
  report.write_report(workdir)
  assert (workdir / "summary.json").read_text() == before
  assert out["summary"]["methods"]["random"]["strategy"] == "random"


def test_found_failure_confirmed_independently(latent_run, tiny_sd_model):
  """Re-generate a found failure from its saved latent with the plain sampler and apply the
  synthetic scorer's rule in NumPy: the evaluator verdict and the fitness agree."""
  config, workdir, _ = latent_run
  sd, params = tiny_sd_model
  # The failures of the target whose clean image passes: found by a search, not given.
  found = [r for r in _rows(workdir) if r["success"] and not r["clean"]["verdict"]]
  assert [(r["method"], r["label"]) for r in found] == [("Sep_CMA_ES", "ball"), ("random", "ball")]
  from jaxdiffattack import text  # pylint: disable=g-import-not-at-top
  uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0])
  plain = sampler_lib.PopulationSampler(sd, params, sampler_lib.SamplerSettings(num_steps=3))
  for r in found:
    f = r["failures"][0]
    latent = np.load(workdir / next(n for n in f["files"] if n.endswith("latent.npy")))
    assert abs(np.linalg.norm(latent) / np.sqrt(latent.size) - 1) < 1e-5  # on the sphere
    cond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [r["prompt"]]))
    image = plain(latent[None], cond, uncond, config.guidance_scale).images[0]
    means = image.mean(axis=(0, 1))
    c = ["cube", "ball", "cone"].index(r["label"]) % 3
    assert int(np.argmax(means)) != c  # the evaluator's rule: not top-1 any more
    margin = means[c] - np.max(np.delete(means, c))
    np.testing.assert_allclose(f["fitness"], margin, atol=1e-4)


@pytest.mark.parametrize("space", ["embedding", "token", "prompt"])
def test_other_spaces_end_to_end(space, tiny_sd_dirs, tmp_path):
  config = tiny_config(space, tiny_sd_dirs[1])
  config.num_generations = 2
  config.population_size = 4
  config.save_images = False
  config.baseline = ""
  out = search.run(config, tmp_path, scoring=scoring.synthetic_scoring())
  rows = _rows(tmp_path)
  assert len(rows) == 3 and {r["space"] for r in rows} == {space}
  for r in rows:
    assert r["best"]["records"]["space/text_similarity"] is not None
    if space == "token":
      assert r["target_label"] and r["best"]["scores"]["clip"] is not None
    if space == "prompt":
      assert r["label"] in r["best"]["prompt"].split()
      for f in r["failures"]:
        assert r["label"] in f["prompt"].split()
        assert (tmp_path / f["files"][0]).read_text().strip() == f["prompt"]
  if space == "prompt":  # the loop above checked found prompts: there are some
    assert sum(len(r["failures"]) for r in rows) > 0
  assert out["summary"]["methods"][config.strategy.name]["targets"] == 3


def test_bad_configs(tiny_sd_dirs, tmp_path):
  config = tiny_config("latent", tiny_sd_dirs[1])
  config.strategy.name = "CMA"
  with pytest.raises(ConfigError, match="config.strategy.name='CMA' is invalid"):
    search.run(config, tmp_path, scoring=scoring.synthetic_scoring())
  config = tiny_config("latent", tiny_sd_dirs[1])
  config.criterion.fitness = "nonexistent"
  with pytest.raises(ConfigError, match=r"config.criterion names score\(s\) \['nonexistent'\]"):
    search.run(config, tmp_path, scoring=scoring.synthetic_scoring())
  import latent_search  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="unknown variant"):
    latent_search.get_config("huge")


@pytest.mark.parametrize("space", ["latent", "embedding", "token", "prompt"])
@pytest.mark.parametrize("variant", ["", "toy"])
def test_shipped_configs_validate(space, variant):
  import importlib  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.search import experiment  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.search import targets as targets_lib  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"{space}_search").get_config(variant)
  experiment.validate(config)
  targets = targets_lib.make_targets(config)
  assert len(targets) == len(config.labels or range(config.num_labels))
  if space == "token":
    assert all(t.target_index != t.label_index for t in targets)


def test_protocol_variant_validates_and_covers_every_label():
  """configs/latent_search.py:toy,protocol: 20 labels × 4 seeds, clean-passing targets only,
  random / Sep-CMA-ES / Adam at one budget, the whole budget searched, transfer on."""
  import latent_search  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.search import experiment  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.search import targets as targets_lib  # pylint: disable=g-import-not-at-top
  config = latent_search.get_config("toy,protocol")
  experiment.validate(config)
  assert len(targets_lib.make_targets(config)) == 80
  assert experiment.methods_of(config) == ["random", "Sep_CMA_ES", "adam"]
  assert config.filter_clean and config.stop_after_failures == 0 and config.transfer_per_target
  assert "oracle" in config.judges


@pytest.mark.parametrize("space", ["latent", "embedding", "prompt"])
def test_wide_variant_covers_every_label_twice(space):
  import importlib  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import labels as labels_lib  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.search import targets as targets_lib  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f"{space}_search")
  for arg in ("toy,wide", "wide,toy"):
    targets = targets_lib.make_targets(module.get_config(arg))
    names = labels_lib.get_label_set("toy").names
    assert len(targets) == 2 * len(names) == 40
    assert sorted({t.label for t in targets}) == sorted(names)
    assert {(t.label, t.seed_index) for t in targets} == {(n, s) for n in names for s in (0, 1)}


@pytest.mark.slow
def test_killed_and_resumed_equals_uninterrupted(latent_run, tmp_path, monkeypatch):
  config, workdir_full, _ = latent_run
  real_save = runs.save_checkpoint
  saves = {"n": 0}

  def dying_save(*args):
    real_save(*args)
    saves["n"] += 1
    if saves["n"] == 1:
      raise KeyboardInterrupt("killed")

  monkeypatch.setattr(runs, "save_checkpoint", dying_save)
  for _ in range(2):  # killed twice, right after a checkpoint each time
    saves["n"] = 0
    with pytest.raises(KeyboardInterrupt):
      search.run(config, tmp_path, scoring=scoring.synthetic_scoring())
    assert not (tmp_path / "results.jsonl").exists()
  monkeypatch.setattr(runs, "save_checkpoint", real_save)
  search.run(config, tmp_path, scoring=scoring.synthetic_scoring())
  assert (tmp_path / "results.jsonl").read_text() == (workdir_full / "results.jsonl").read_text()
  for path in sorted((workdir_full / "failures").rglob("*.npy")):
    rel = path.relative_to(workdir_full)
    np.testing.assert_array_equal(np.load(tmp_path / rel), np.load(path))
  config.num_steps = 4
  with pytest.raises(ConfigError, match="holds a search with a different config"):
    search.run(config, tmp_path, scoring=scoring.synthetic_scoring())


def _judge_failures(workdir) -> dict:
  """{item id: {judge: True / False / None (unclear)}} read straight from results.jsonl."""
  out = {}
  state = lambda j: None if j.get("unclear") else bool(j["failure"])
  for r in _rows(workdir):
    out[f"search/clean/t{r['target']:03d}"] = {n: state(j) for n, j in r["clean"]["judges"].items()}
    for k, f in enumerate(r["failures"]):
      out[f"search/{r['method']}/t{r['target']:03d}/failure_{k}"] = {
          n: state(j) for n, j in f["judges"].items()}
  return out


@pytest.mark.slow
def test_rating_kit_and_index_page_in_headless_chromium(latent_run, tmp_path, chrome_driver):
  """Two raters rate every image of the search run with the keyboard (one reload midway each),
  export, and the ingest's SSR(H) per method, Cohen's κ and the evaluator's confusion table equal
  the figures computed from the plan and results.jsonl; index.html (and the rating page) load
  every image with no console error, and the rating page shows no judge's reading."""
  import browser          # pylint: disable=g-import-not-at-top
  import rating_flow      # pylint: disable=g-import-not-at-top
  from jaxdiffattack import rate  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import Select  # pylint: disable=g-import-not-at-top
  _, source, _ = latent_run
  workdir = tmp_path / "run"
  shutil.copytree(source, workdir)
  assert (workdir / "index.html").is_file()        # written by the job itself
  driver, downloads = chrome_driver
  shown = browser.check_page(driver, workdir / "index.html")
  rows = _rows(workdir)
  failures = sum(len(r["failures"]) for r in rows)
  assert shown >= 2 * failures       # each failure beside its target's clean image (+ plots)
  methods = Select(driver.find_element(By.ID, "method"))
  methods.select_by_visible_text("random")
  count = int(driver.find_element(By.ID, "count").text)
  assert count == sum(len(r["failures"]) for r in rows if r["method"] == "random")
  every = rate.make_kit(workdir, sample=0)
  assert len(every["items"]) == failures + 3         # every failure and the 3 clean images
  shutil.rmtree(workdir / "rating")
  doc = rate.make_kit(workdir, sample=10, seed=1)    # a random 10 of them (keeps the test short)
  assert len(doc["items"]) == 10 and doc["run_id"] == every["run_id"]
  assert {i["id"] for i in doc["items"]} <= {i["id"] for i in every["items"]}
  page = workdir / "rating" / "index.html"
  html = page.read_text()
  for r in rows:                                      # no judge's reading on the page
    for f in r["failures"]:
      assert f"evaluator" not in html and str(f["judges"]["evaluator"]["confidence"]) not in html
  results = {}
  for rater in ("ann", "bob"):
    exported, order, path, text = rating_flow.rate_in_browser(driver, page, rater, downloads)
    assert "Rating guide" in text and "evaluator" not in text
    assert exported["rater"] == rater and exported["run_id"] == doc["run_id"]
    assert [r["item"] for r in exported["ratings"]] == order
    results[rater] = (order, path)
  assert results["ann"][0] != results["bob"][0]       # shuffled per rater
  summary = rating_flow.check_ingest(workdir, [results["ann"][1], results["bob"][1]], doc,
                                     _judge_failures(workdir))
  assert set(summary["ssr"]) == {"clean", "Sep_CMA_ES", "random"}
  assert set(summary["judges_vs_human"]) == {"evaluator"}
  assert _rows(workdir) == rows                       # the job's records are untouched
  browser.check_page(driver, workdir / "index.html")  # now with the human judge
  assert "human:" in driver.find_element(By.ID, "cards").text
