"""The analyze job end to end: the `toy,smoke` variant on the toy world (every analysis), its
outputs, resume without regeneration, and config errors.

Also the behaviour of the per-step cross-attention maps on toy prompts: the noun token's map
(heads, layers and all steps averaged) concentrates on the named object's pixels (oracle mask).
Measured on the smoke run (2026-11-29, CPU): 1.68× the object's area share on average over 8
images (median 1.46×); 1× would be a map unrelated to the object. The bars below leave room for
platform numerics.
"""

import importlib.util
import json
import pathlib
import re

import numpy as np
import pytest

from jaxdiffattack.analysis import report
from jaxdiffattack.analysis import run as analysis_run
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.errors import UserError

MIN_MEAN_RATIO = 1.3
_SPEC = importlib.util.spec_from_file_location(
    "analysis_config", pathlib.Path(__file__).resolve().parent.parent / "configs" / "analysis.py")
analysis_config = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(analysis_config)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("analysis_smoke")
  config = analysis_config.get_config("toy,smoke")
  stages = analysis_run.run(config, str(workdir), command=_command(workdir))
  return config, workdir, stages


def _command(workdir):
  """The launch line given to the job (an override included): the report's captions quote it."""
  return (f"python launch/analyze.py --config configs/analysis.py:toy,smoke --workdir {workdir} "
          "--config.unit=8")


def test_every_analysis_writes_its_outputs(smoke):
  config, workdir, stages = smoke
  assert set(stages) == set(config.analyses)
  text = (workdir / "report.md").read_text()
  command = _command(workdir)
  figures = re.findall(r"!\[(\w+)\]\((plots/\w+\.png)\)", text)
  assert len(figures) == 9
  for name, path in figures:
    assert (workdir / path).stat().st_size > 1000
    caption = text.split(f"](plots/{name}.png)")[1].split("\n\n")[1]
    assert caption.startswith(f"*Figure `{name}`:") and command in caption
  for name in ("speed_classes", "speed_pairs", "attention_pairs", "attention_singles", "orders",
               "orders_summary", "inject", "brittleness_classwise", "brittleness_confusion",
               "brittleness_displacement", "brittleness_trajectory"):
    assert (workdir / f"{name}.csv").exists(), name
  for name in config.analyses:
    assert json.loads((workdir / f"{name}.json").read_text()) == stages[name]


def test_speed_records(smoke):
  config, _, stages = smoke
  s = stages["speed"]
  assert len(s["singles"]) == len(config.classes) * config.seeds
  for r in s["singles"]:
    assert len(r["curve"]) == config.num_steps
    assert r["curve"][-1] > 0.99                 # the last predicted x0 is the final image
    assert 0 <= r["first_step"] <= config.num_steps
  assert len(s["pairs"]) == config.pairs * config.seeds
  for r in s["pairs"]:                            # formation order only where both are drawn
    assert (r["formed_first"] == "none") == (not (r["drawn_a"] and r["drawn_b"]))


def test_attention_concentrates_on_the_named_object(smoke):
  config, _, stages = smoke
  singles = stages["attention"]["singles"]
  assert len(singles) >= len(config.classes) * config.seeds - 1     # objects drawn
  ratios = [r["ratio"] for r in singles]
  assert np.mean(ratios) >= MIN_MEAN_RATIO, ratios
  for r in stages["attention"]["pairs"]:
    assert 0.0 <= r["iou"] <= 1.0 and 0.0 < r["cosine"] <= 1.0 + 1e-9


def test_orders_inject_and_brittleness_tables(smoke):
  config, _, stages = smoke
  rows = stages["orders"]["rows"]
  assert len({r["order"] for r in rows}) == 8 and len(rows) == 8 * config.seeds
  for r in rows:
    assert r["first_named_correct"] + r["second_named_correct"] == r["correct_a"] + r["correct_b"]
  inj = stages["inject"]["summary"]
  assert len(inj) == config.inject.classes * len(config.inject.words)
  for r in inj:
    assert abs(sum(r["distribution"].values()) - 1.0) < 1e-9
  b = stages["brittleness"]
  n_cells = 1 + len(config.brittleness.shifts) * len(config.brittleness.alphas)
  assert len(b["records"]) == n_cells * len(config.classes) * config.seeds
  overall = [r for r in b["classwise"] if r["class"] == "all"]
  assert len(overall) == n_cells
  for o in overall:
    per_class = [r for r in b["classwise"] if (r["shift"], r["alpha"]) == (o["shift"], o["alpha"])
                 and r["class"] != "all"]
    assert o["hits"] == sum(r["hits"] for r in per_class)
    assert o["n"] == sum(r["n"] for r in per_class) == len(config.classes) * config.seeds
  steps = {(r["shift"], r["alpha"]) for r in b["trajectory"]}
  assert len(steps) == n_cells and len(b["trajectory"]) == n_cells * config.num_steps


def test_resume_does_not_regenerate(smoke):
  config, workdir, stages = smoke
  def refuse(name):
    raise AssertionError(f"model {name} loaded on resume")
  (workdir / "report.md").unlink()
  again = analysis_run.run(config, str(workdir), model_loader=refuse)
  assert again == stages and (workdir / "report.md").exists()
  assert report.load_stage(workdir, "speed", "another config hash") is None


def test_config_errors(tmp_path):
  config = analysis_config.get_config("toy,smoke")
  with config.unlocked():
    config.analyses = ("speed", "nope")
  with pytest.raises(ConfigError, match="config.analyses entry 'nope'"):
    analysis_run.run(config, str(tmp_path))
  config = analysis_config.get_config("toy,smoke")
  config.classes = ("red circle", "purple blob")
  with pytest.raises(ConfigError, match="purple blob"):
    analysis_run.run(config, str(tmp_path))
  config = analysis_config.get_config("toy,smoke")
  config.finder = "human"
  with pytest.raises(ConfigError, match="config.finder='human'"):
    analysis_run.run(config, str(tmp_path))
  config = analysis_config.get_config("toy,smoke")
  with config.unlocked():
    config.judge = "oracle"     # the key before it was named for what it does
  with pytest.raises(ConfigError, match=r"config.judge is retired: .*config.finder") as info:
    analysis_run.run(config, str(tmp_path))
  assert "\n" not in str(info.value)
  with pytest.raises(ValueError, match="unknown variant 'tiny'"):
    analysis_config.get_config("toy,tiny")
  config = analysis_config.get_config("toy,smoke")
  config.model = str(tmp_path / "no_such_model")
  with pytest.raises(UserError):
    analysis_run.run(config, str(tmp_path / "w"))
  # Every refusal above came before anything was written.
  assert not list(tmp_path.iterdir())


def test_index_page_in_headless_chromium(smoke, chrome_driver):
  """The job's index.html shows every figure of the report and the report itself; every image
  loads, no console error, not blank."""
  import browser  # pylint: disable=g-import-not-at-top
  _, workdir, _ = smoke
  page = (workdir / "index.html").read_text()
  figures = re.findall(r"!\[\w+\]\((plots/\w+\.png)\)", (workdir / "report.md").read_text())
  for path in figures:
    assert f"src='{path}'" in page
  shown = browser.check_page(chrome_driver[0], workdir / "index.html")
  assert shown >= len(figures) == 9
