"""The ATM job (jaxdiffattack.attacks.job/report) on a tiny random SD and tiny random judges:
outputs and their fields, the success rule and clean-failure skipping, resume == uninterrupted,
the random-substitution baseline, 8 fake devices == 1 device, and one-line errors for bad
configs."""

import json
import os
import pathlib
import re
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

import tiny_vision
from jaxdiffattack import io
from jaxdiffattack import runs
from jaxdiffattack import stats
from jaxdiffattack.attacks import atm
from jaxdiffattack.attacks import job
from jaxdiffattack.attacks import report
from jaxdiffattack.errors import UserError

_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT / "configs"))
import atm as atm_config  # pylint: disable=g-import-not-at-top,wrong-import-position

# Tiny SD: a character tokenizer with 16 positions, so prompts are a few short words.
PROMPTS = (("a red star", "red star"), ("a blue cross", "blue cross"),
           ("a green circle", "green circle"), ("a yellow square", "yellow square"))


def tiny_config(sd_dir, vision_dirs, prompt_file):
  c = atm_config.get_config("toy,smoke")
  c.model = str(sd_dir)
  c.scorers = tiny_vision.fitness_config(vision_dirs).scorers
  c.labels = ()
  c.prompt_sets = {"short": str(prompt_file)}
  c.num_steps = 2
  c.attack.num_iters = 4
  c.checkpoint_every = 2
  c.num_samples = 3
  c.population = 2
  c.eval_batch = 6
  c.images_per_prompt = 1
  c.oracle = False        # the toy oracle reads 32×32 toy images, not the tiny SD's 16×16 ones
  return c


@pytest.fixture(scope="module")
def vision_dirs(tmp_path_factory):
  return tiny_vision.build_all_cached(tmp_path_factory)


def _write_prompts(path, labels):
  path.write_text("prompt,classname,label\n" + "".join(
      f'"{p}",{c},{label}\n' for (p, c), label in zip(PROMPTS, labels)))


@pytest.fixture(scope="module")
def prompt_file(tiny_sd_dirs, vision_dirs, tmp_path_factory):
  """The prompts with labels chosen so that the random tiny CLIP reads prompts 0, 1 and 3
  correctly when clean and prompt 2 wrongly (it is skipped): the label of a prompt is what the
  tiny CLIP sees in its clean image (the noise depends only on the set and prompt index)."""
  path = tmp_path_factory.mktemp("prompts") / "short.csv"
  _write_prompts(path, [0] * len(PROMPTS))
  config = tiny_config(tiny_sd_dirs[1], vision_dirs, path)
  workdir = tmp_path_factory.mktemp("atm_clean")
  first = job.Job(config, workdir)
  clean = first.clean_check(first.prepare("short", str(path)))
  seen = [first.label_set.names.index(p) for p in clean["pred"]["attack"]]
  seen[2] = (seen[2] + 1) % len(first.label_set)
  _write_prompts(path, seen)
  return path


@pytest.fixture(scope="module")
def uninterrupted(tiny_sd_dirs, vision_dirs, prompt_file, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("atm_full")
  out = job.run(tiny_config(tiny_sd_dirs[1], vision_dirs, prompt_file), workdir)
  return workdir, out


@pytest.mark.slow
def test_outputs_and_row_fields(uninterrupted):
  workdir, out = uninterrupted
  rows = io.read_jsonl(workdir / "results.jsonl")
  assert [r["index"] for r in rows] == [0, 1, 2, 3] and all(r["set"] == "short" for r in rows)
  summary = json.loads((workdir / "summary.json").read_text())
  s = summary["asr_short"]
  assert set(s) == {"rate", "successes", "attacked", "skipped_clean_failures", "ci95"}
  assert s["attacked"] + s["skipped_clean_failures"] == 4
  assert s["attacked"] == sum(r["clean_correct"] for r in rows) >= 1
  assert summary["asr_long"]["attacked"] == 0 and summary["baseline"]["asr_short"]["attacked"] == \
      s["attacked"]
  for r in rows:
    assert {"prompt", "class_word", "set", "clean_correct", "success", "successful_prompts",
            "samples"} <= set(r)
    if not r["clean_correct"]:       # clean failures are skipped, not attacked
      assert r["attacked"] is False and r["success"] is None and r["samples"] == 0
      continue
    assert r["samples"] == 3 and len(r["loss_curve"]) == 4
    assert r["success"] == (r["successful_samples"] > 0) == bool(r["successful_prompts"])
    for p in r["successful_prompts"]:
      assert r["class_word"] in p
    assert len(r["images"]) == min(1, r["successful_samples"])
    assert r["baseline"]["tokens_changed_mean"] == r["tokens_changed_mean"]
  assert (workdir / "report.md").read_text().count("published") >= 1
  assert (workdir / "plots" / "loss_curves.png").is_file()
  # Intervals clustered by prompt (fresh noise, every judge, ATM and its baseline paired).
  fresh = summary["intervals"]["by_noise"]["fresh"]
  assert set(summary["intervals"]["by_noise"]) == {"fresh"} and "attack" in fresh
  attacked = [r for r in rows if r["attacked"]]
  for judge, entry in fresh.items():
    hits = [r["judges"][judge]["successful_samples"] for r in attacked]
    values = np.concatenate([np.r_[np.ones(h), np.zeros(3 - h)] for h in hits])
    want = stats.clustered_rate(values, np.repeat(np.arange(len(hits)), 3))
    assert entry["atm"]["short"]["per_sample"]["ci95"] == pytest.approx(want["ci95"])
    assert entry["atm"]["short"]["asr"]["prompts"] == len(attacked)
    paired = entry["atm_minus_random_substitution"]["short"]
    assert paired["prompts"] == len(attacked) and 0 <= paired["asr"]["mcnemar_p"] <= 1
    assert entry["short_minus_long"]["atm"] is None            # no long set in this run
  text = (workdir / "report.md").read_text()
  assert "## Intervals (clustered by prompt)" in text and "### Noise: fresh" in text
  assert "ATM − random substitution, short (paired" in text
  # The report is rebuilt from the files alone.
  again = report.write_report(workdir)
  assert again["summary"]["asr_short"] == out["summary"]["asr_short"]


@pytest.mark.slow
def test_resume_equals_uninterrupted(tiny_sd_dirs, vision_dirs, prompt_file, uninterrupted,
                                     tmp_path, monkeypatch):
  config = tiny_config(tiny_sd_dirs[1], vision_dirs, prompt_file)
  calls = []

  def stop_after_first_checkpoint(self, *args):
    calls.append(args)
    raise KeyboardInterrupt("killed after the first checkpoint")

  monkeypatch.setattr(runs.Progress, "log", stop_after_first_checkpoint)
  with pytest.raises(KeyboardInterrupt):
    job.run(config, tmp_path)
  # Logged after the first checkpoint: iteration 2 of the first group of 2 prompts.
  assert calls[0][0] == 2 * 2 and "iteration 2 " in calls[0][1]
  assert (tmp_path / "checkpoint.msgpack").exists()
  monkeypatch.undo()
  job.run(config, tmp_path)
  full = (uninterrupted[0] / "results.jsonl").read_text()
  assert (tmp_path / "results.jsonl").read_text() == full
  config.attack.num_iters = 5         # another config may not resume this workdir
  with pytest.raises(UserError, match="holds an attack with a different config"):
    job.run(config, tmp_path)


def _fake_readings(pred_correct, present):
  return {"attack": {"failure": ~np.asarray(pred_correct),
                     "success": ~np.asarray(pred_correct) & np.asarray(present)},
          "class_word_present": np.asarray(present)}


def test_success_rule_needs_misclassification_and_the_class_word(tiny_sd_dirs, vision_dirs,
                                                                  prompt_file):
  config = tiny_config(tiny_sd_dirs[1], vision_dirs, prompt_file)
  j = job.Job.__new__(job.Job)
  j.judge_names = ("attack",)

  class Role:
    output_ids = ("red star", "blue cross")

  j.scoring = type("S", (), {"roles": {"attack": Role}})()
  scores = {"attack/pred": np.array([0, 1, 1, 0]), "attack/top1_hit": np.array([1., 0., 0., 1.]),
            "attack/confidence": np.array([.9, .8, .7, .6])}
  texts = ["a red star x", "a red star y", "a bred star", "a red star"]
  read = j.readings(scores, np.zeros(4, int), texts, ["red star"] * 4)
  # Sample 1: misread and the class word kept → success; 2: misread but "bred star" → no;
  # 0 and 3: read correctly → no.
  assert read["attack"]["success"].tolist() == [False, True, False, False]
  assert read["attack"]["pred"] == ["red star", "blue cross", "blue cross", "red star"]
  # The toy oracle as a further judge: sure failures count, unclear readings do not.
  j.judge_names = ("attack", "oracle")
  scores.update({"oracle/pred": np.array([None, "blue cross", None, "red star"], object),
                 "oracle/confidence": np.array([None, 0.9, None, 0.8], object),
                 "oracle/failure": np.array([False, True, True, False], object),
                 "oracle/unclear": np.array([True, False, False, False], object)})
  read = j.readings(scores, np.zeros(4, int), texts, ["red star"] * 4)
  assert read["oracle"]["success"].tolist() == [False, True, False, False]
  assert read["oracle"]["unclear"].tolist() == [True, False, False, False]
  assert read["oracle"]["pred"][0] == "unclear" and np.isnan(read["oracle"]["confidence"][0])
  del config


def test_asr_counts_and_interval():
  rows = [{"set": "short", "clean_correct": False, "attacked": False},
          {"set": "short", "clean_correct": True, "attacked": True,
           "judges": {"attack": {"success": True}}},
          {"set": "short", "clean_correct": True, "attacked": True,
           "judges": {"attack": {"success": False}}}]
  got = report.asr(rows, "short")
  assert (got["successes"], got["attacked"], got["skipped_clean_failures"]) == (1, 2, 1)
  assert got["rate"] == 0.5 and got["ci95"][0] < 0.5 < got["ci95"][1]
  assert report.asr(rows, "long")["rate"] is None


def test_random_substitution_changes_as_many_free_tokens_as_asked():
  p, length = 3, 12
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 5, (p, length)).astype(np.int32)
  free = np.zeros((p, length), bool)
  free[:, 4:10] = True
  prompts = atm.Prompts(np.array([0, 1, 2], np.uint32), ids, free, np.zeros(p, np.int32),
                        np.zeros((p, length, 1)), np.zeros((p, length)))
  changed = np.array([[0, 1, 6], [2, 3, 4], [5, 6, 1]])
  tokens = np.arange(100, 200, dtype=np.int32)       # never equal to a clean token
  out = np.asarray(job.random_substitution(jax.random.PRNGKey(0), prompts, changed, tokens))
  diff = out != ids[:, None]
  np.testing.assert_array_equal(diff.sum(-1), changed)
  assert not diff[..., ~free[0]].any()
  assert (out[diff] >= 100).all()


@pytest.mark.parametrize("key, value, message", [
    ("attack.kappa", float("nan"), "config.attack.kappa=nan is invalid"),
    ("attack.lr", float("inf"), "config.attack.lr=inf is invalid"),
    ("attack.lr", 0.0, "config.attack.lr=0.0 is invalid"),
    ("attack.lam_fluency", 1.0, "only 0 is supported"),
    ("attack.grad_depth", "first", "config.attack.grad_depth='first' is invalid"),
    ("attack.grad_depth", "99", "config.attack.grad_depth='99' is invalid"),
    ("mode", "swap", "config.mode='swap' is invalid"),
    ("num_samples", 0, "config.num_samples=0 is invalid"),
    ("eval_noise", "none", "config.eval_noise='none' is invalid"),
    ("steps_per_call", 3, "config.steps_per_call=3 is invalid"),
    ("label_set", "imagenet1k", "config.oracle=True is invalid"),
])
def test_bad_configs_are_one_line_errors(key, value, message, tmp_path):
  config = atm_config.get_config("toy,smoke")
  section, _, name = key.rpartition(".")
  target = config[section] if section else config
  with target.ignore_type():
    target[name] = value
  with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")) as e:
    job.run(config, tmp_path)
  assert "\n" not in str(e.value) and not any(tmp_path.iterdir())


def test_variants_and_empty_prompt_sets(tmp_path):
  with pytest.raises(ValueError, match="unknown variant 'tiny'"):
    atm_config.get_config("toy,tiny")
  for variant in ("", "sd21", "toy", "toy,smoke"):
    job.validate(atm_config.get_config(variant))
  config = atm_config.get_config("toy,smoke")
  config.prompt_sets = {}
  with pytest.raises(UserError, match="config.prompt_sets"):
    job.run(config, tmp_path)


@pytest.mark.slow
def test_eight_devices_match_one(tiny_sd_dirs, vision_dirs, prompt_file, tmp_path):
  """The same job (2 iterations) on 8 fake devices (each group of 2 prompts padded to 8) and on
  1 device."""
  worker = pathlib.Path(__file__).with_name("attacks_multidevice_worker.py")
  env = dict(os.environ, PYTHONPATH=str(_ROOT))
  proc = subprocess.run([sys.executable, str(worker), str(tiny_sd_dirs[1]),
                         str(vision_dirs["clip"].parent), str(prompt_file), str(tmp_path)],
                        env=env, capture_output=True, text=True, timeout=1200, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  single, eight = (io.read_jsonl(tmp_path / name / "results.jsonl") for name in ("single", "eight"))
  assert len(single) == len(eight) == 4 and sum(r["attacked"] for r in single) == 3
  for a, b in zip(single, eight):
    assert (a["index"], a["clean_correct"], a["success"], a.get("successful_prompts")) == (
        b["index"], b["clean_correct"], b["success"], b.get("successful_prompts"))
    if a["attacked"]:
      np.testing.assert_allclose(a["loss_curve"], b["loss_curve"], rtol=1e-4)
      assert a["judges"] == b["judges"] and a["baseline"] == b["baseline"]


class _PromptSet(types.SimpleNamespace):

  def __len__(self):
    return len(self.prompts)


def test_a_nonfinite_clean_image_is_skipped_not_attacked(tmp_path):
  """The clean check on scores where the model overflowed for prompt 1 (NaN, as
  `sampler.nonfinite_as_nan` reports it): that prompt is not "correctly generated" — skipped
  and flagged — while the others follow top-1 as before; the judge names no class for it."""
  nan = float("nan")
  scores = {"attack/top1_hit": np.array([1.0, nan, 0.0]), "attack/pred": np.array([0, 0, 2]),
            "attack/confidence": np.array([0.9, nan, 0.8]),
            "images": np.zeros((3, 8, 8, 3), np.float32)}   # the judge returns the images too
  fake = types.SimpleNamespace(
      workdir=tmp_path, judge_names=("attack",),
      scoring=types.SimpleNamespace(roles={"attack": types.SimpleNamespace(
          output_ids=("red cube", "blue ball", "green cone"))}),
      noise=lambda *a: np.zeros((3, 4, 2, 2)), judge=lambda *a: scores)
  fake.readings = lambda *a: job.Job.readings(fake, *a)
  data = types.SimpleNamespace(
      name="short", purpose_key=lambda purpose: None,
      prompt_set=_PromptSet(prompts=("a red cube", "a blue ball", "a green cone"),
                            labels=(0, 1, 2)),
      encoded=types.SimpleNamespace(class_text=("red cube", "blue ball", "green cone")))
  clean = job.Job.clean_check(fake, data)
  assert clean["correct"] == [True, False, False]
  assert clean["nonfinite"] == [False, True, False]
  assert clean["pred"]["attack"] == ["red cube", None, "green cone"]
  assert json.loads((tmp_path / "clean_short.json").read_text())["nonfinite"][1] is True
  assert sorted(p.name for p in (tmp_path / "images" / "short" / "clean").iterdir()) == [
      "p0000.png", "p0001.png", "p0002.png"]   # shown beside the attacked images on index.html
  row = job._row(types.SimpleNamespace(name="short", prompt_set=types.SimpleNamespace(
      prompts=data.prompt_set.prompts, class_words=("cube", "ball", "cone"), labels=(0, 1, 2))),
      1, clean, ("attack",))
  assert row["clean_correct"] is False and row["clean_nonfinite"] is True


@pytest.mark.slow
def test_index_page_and_rating_kit_in_headless_chromium(uninterrupted, chrome_driver, tmp_path):
  """index.html shows every successful sample's bare image beside its prompt's clean image, the
  adversarial prompt with the words that differ from the clean prompt marked, and each judge's
  reading of that sample; every image loads, no console error; the rating kit rates those images
  against the clean prompt."""
  import shutil  # pylint: disable=g-import-not-at-top
  import browser  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import pages  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import rate  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  shutil.copytree(uninterrupted[0], workdir)
  rows = io.read_jsonl(workdir / "results.jsonl")
  for r in rows:                           # every prompt's clean image is on disk
    assert (workdir / "images" / "short" / "clean" / f"p{r['index']:04d}.png").is_file()
  job_name, entries = pages.collect(workdir)
  samples = [e for e in entries if e.kind == "sample"]
  assert job_name == "attack" and len(samples) == sum(len(r["shown"]) for r in rows
                                                      if r.get("attacked")) > 0
  page = (workdir / "index.html").read_text()
  for r in rows:
    for s in r.get("shown", []):
      assert s["prompt"] in r["successful_prompts"] and s["judges"]["attack"]["failure"]
      assert f'src="{s["image"]}"' in page
      marked = " ".join(re.findall(r"<mark>(.*?)</mark>", pages.marked_prompt(s["prompt"],
                                                                                r["prompt"])))
      for w in s["prompt"].split():
        assert (w in marked.split()) or (w in r["prompt"].split()), (w, s["prompt"], r["prompt"])
  shown = browser.check_page(chrome_driver[0], workdir / "index.html")
  assert shown >= 2 * len(samples)
  doc = rate.make_kit(workdir)
  assert {i["id"] for i in doc["items"]} == {e.id for e in entries}
  assert all(i["prompt"] in [r["prompt"] for r in rows] for i in doc["items"])
