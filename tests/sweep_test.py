"""The shift sweep on the tiny SD with a synthetic scorer: schema, pairing, resume, report."""

import csv
import json
import pathlib
import sys

import jax
import ml_collections
import numpy as np
import statsmodels.api as sm
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
import pytest

from jaxdiffattack import judges
from jaxdiffattack import models
from jaxdiffattack import perturb
from jaxdiffattack import runs
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import scoring
from jaxdiffattack import sweep
from jaxdiffattack import text
from jaxdiffattack.errors import ConfigError

_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT / "configs"))
import shift_sweep  # pylint: disable=g-import-not-at-top,wrong-import-position

LABELS = ("red cube", "blue ball", "green cone")


def synthetic_clip_score(images):
  """`scoring.synthetic_scoring`'s CLIP stand-in, restated: 100·(1 − |mean brightness − 0.5|)."""
  return 100 * (1 - np.abs(images.mean(axis=(1, 2, 3)) - 0.5))


def tiny_config(model_dir):
  c = shift_sweep.get_config("toy")
  c.settings[0].model = str(model_dir)
  c.label_set = ""    # labels index into config.labels (the synthetic scoring)
  c.scoring.kind = "synthetic"
  c.labels = LABELS
  c.images_per_prompt = 2
  c.num_steps = 3
  c.shifts = ("ums", "pas")
  c.grids.ums = (-0.2, 0.2)
  c.grids.pas = (16.0,)
  c.unit = 7          # does not divide the 4 cells × 3 prompts × 2 seeds = 24 members
  c.grid_prompts = 2
  c.trajectory.prompts = (0,)
  c.trajectory.shifts = ("ums",)
  c.trajectory.alphas = (0.2,)
  return c


@pytest.fixture(scope="module")
def full_run(tiny_sd_dirs, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("sweep_full")
  out = sweep.run(tiny_config(tiny_sd_dirs[1]), workdir, scoring=scoring.synthetic_scoring())
  return workdir, out


def _read(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def test_outputs_schema_and_ranges(full_run):
  workdir, out = full_run
  members = out["members"]
  assert len(members) == 4 * 3 * 2
  assert {(m["shift"], m["alpha_c"]) for m in members} == {
      ("none", 0.0), ("ums", -0.2), ("ums", 0.2), ("pas", 16.0)}
  results = _read(workdir / "results.csv")
  assert list(results[0].keys()) == list(sweep.report.RESULT_FIELDS)
  for r in results:
    value, low, high = float(r["value"]), float(r["ci_low"]), float(r["ci_high"])
    assert low <= value + 1e-9 <= high + 2e-9
    if r["metric"] in ("top1", "top5"):
      assert 0 <= low and high <= 1
  # Each shift's α = 0 row is the shared unshifted cell; per-class rows recombine to "all".
  for shift in ("ums", "pas"):
    rows = [r for r in results if r["shift"] == shift and r["alpha"] == "0"]
    assert {r["class"] for r in rows} == {"all", *LABELS}
    for metric in sweep.plan.METRICS:
      per = [r for r in rows if r["metric"] == metric]
      whole = next(r for r in per if r["class"] == "all")
      parts = [r for r in per if r["class"] != "all"]
      assert sum(int(r["n"]) for r in parts) == int(whole["n"]) == 6
      np.testing.assert_allclose(
          sum(float(r["value"]) * int(r["n"]) for r in parts) / 6, float(whole["value"]),
          rtol=1e-5)
  for name in ("report.md", "config.json", "members.csv", "trajectory.csv", "plots/top1.png",
               "plots/clip_score.png", "plots/trajectory_toy_cfg7.5.png",
               "grids/toy_cfg7.5_ums.png", "grids/toy_cfg7.5_pas.png"):
    assert (workdir / name).is_file(), name
  assert "## toy_cfg7.5: ums" in (workdir / "report.md").read_text()


def test_grid_captions_read_the_members_the_sweep_scored(full_run):
  """Every grid tile is captioned with its cell and the evaluator's reading of that very member:
  FAIL exactly where members.csv has a top-1 miss; rows are prompts, columns α ascending."""
  workdir, out = full_run
  members = out["members"]   # one setting: row m is member m
  for shift in ("ums", "pas"):
    grid = json.loads((workdir / "grids" / f"toy_cfg7.5_{shift}.json").read_text())
    assert len(grid["members"]) == len(grid["captions"]) == 2 * (3 if shift == "ums" else 2)
    for m, caption in zip(grid["members"], grid["captions"]):
      row = members[m]
      assert row["seed_index"] == 0
      assert caption[0] == row["label"]
      assert caption[1] == ("clean" if row["shift"] == "none" else
                            f"{shift} alpha={row['alpha_c']:+g}"), (m, caption)
      assert caption[2].startswith("ViT: ")
      assert caption[2].endswith(" FAIL") == (row["top1"] == 0.0), (m, caption, row)
    prompts = [members[m]["prompt_index"] for m in grid["members"]]
    cols = 3 if shift == "ums" else 2
    assert prompts == [p for p in range(2) for _ in range(cols)]
    alphas = [members[m]["alpha_c"] for m in grid["members"][:cols]]
    assert alphas == sorted(alphas)


def test_alpha_zero_cell_equals_plain_generation(tiny_sd_dirs, full_run):
  """The unshifted cell is exactly the plain sampler on the base seed vectors."""
  _, out = full_run
  sd, params = models.load_stable_diffusion(str(tiny_sd_dirs[1]))
  config = tiny_config(tiny_sd_dirs[1])
  import jax  # pylint: disable=g-import-not-at-top
  z, _ = sweep.plan.base_latents(jax.random.PRNGKey(config.seed), np.array([0, 0, 1, 1, 2, 2]),
                            np.array([0, 1, 0, 1, 0, 1]), sd.latent_shape)
  prompts = [config.template.format(label) for label in LABELS]
  cond = np.asarray(text.encode_prompts(sd, params["text_encoder"], prompts))[[0, 0, 1, 1, 2, 2]]
  uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0])
  plain = sampler_lib.PopulationSampler(sd, params, sampler_lib.SamplerSettings(num_steps=3))(
      np.asarray(z), cond, uncond, 7.5)
  got = [m["clip_score"] for m in out["members"] if m["shift"] == "none"]
  np.testing.assert_allclose(got, synthetic_clip_score(plain.images), rtol=1e-5)
  # ...and a shifted cell equals the plain sampler on the shifted latents.
  shifted = np.asarray(perturb.SHIFTS["ums"].fn(np.asarray(z[0]), np.array([0.2, 0.0]), None))
  one = sampler_lib.PopulationSampler(sd, params, sampler_lib.SamplerSettings(num_steps=3))(
      shifted[None], cond[:1], uncond, 7.5)
  got_ums = next(m for m in out["members"] if m["shift"] == "ums" and m["alpha_c"] == 0.2)
  np.testing.assert_allclose(got_ums["clip_score"], synthetic_clip_score(one.images)[0],
                             rtol=1e-5)


def test_killed_and_resumed_equals_uninterrupted(tiny_sd_dirs, full_run, tmp_path, monkeypatch):
  workdir_full, _ = full_run
  config = tiny_config(tiny_sd_dirs[1])
  config.grid_images = False
  config.trajectory.prompts = ()
  saves = {"n": 0}
  real_save = runs.save_checkpoint

  def dying_save(*args):
    real_save(*args)
    saves["n"] += 1
    if saves["n"] == 2:
      raise KeyboardInterrupt("killed")

  monkeypatch.setattr(runs, "save_checkpoint", dying_save)
  with pytest.raises(KeyboardInterrupt):
    sweep.run(config, tmp_path, scoring=scoring.synthetic_scoring())
  assert not (tmp_path / "results.csv").exists()
  monkeypatch.setattr(runs, "save_checkpoint", real_save)
  sweep.run(config, tmp_path, scoring=scoring.synthetic_scoring())
  assert (tmp_path / "results.csv").read_text() == (workdir_full / "results.csv").read_text()
  # Another run shape (microbatch, unit) may resume the workdir: the same members are computed
  # (hits equal; CLIP-like scores to float32 summation order, which the batch size changes).
  (tmp_path / "checkpoint.msgpack").unlink()
  config.microbatch, config.unit = None, 3
  monkeypatch.setattr(runs, "save_checkpoint", dying_save)
  saves["n"] = 0
  with pytest.raises(KeyboardInterrupt):
    sweep.run(config, tmp_path, scoring=scoring.synthetic_scoring())
  monkeypatch.setattr(runs, "save_checkpoint", real_save)
  config.microbatch, config.unit = 2, 5
  sweep.run(config, tmp_path, scoring=scoring.synthetic_scoring())
  for a, b in zip(_read(tmp_path / "members.csv"), _read(workdir_full / "members.csv"),
                  strict=True):
    assert (a["shift"], a["alpha_c"], a["top1"], a["top5"]) == (
        b["shift"], b["alpha_c"], b["top1"], b["top5"])
    np.testing.assert_allclose(float(a["clip_score"]), float(b["clip_score"]), atol=1e-3)
  # A different config on the same workdir is refused.
  config.num_steps = 4
  with pytest.raises(Exception, match="holds a sweep with a different config"):
    sweep.run(config, tmp_path, scoring=scoring.synthetic_scoring())


def test_report_regenerates_from_members_csv(full_run):
  workdir, _ = full_run
  before = (workdir / "results.csv").read_text()
  (workdir / "results.csv").unlink()
  (workdir / "report.md").unlink()
  sweep.write_report(workdir)
  assert (workdir / "results.csv").read_text() == before
  assert (workdir / "report.md").is_file()


def test_trajectory_statistics():
  traj = np.stack([np.full((4, 2, 2), v) for v in (2.0, 1.0, 1.0)])[None]  # [1, 3, 4, 2, 2]
  stats_ = sweep.trajectories.trajectory_statistics(traj, np.full((1, 4, 2, 2), 4.0))
  np.testing.assert_allclose(stats_["step_distance"][0], [2.0, 1.0, 0.0])
  np.testing.assert_allclose(stats_["mean"][0], [2.0, 1.0, 1.0])
  np.testing.assert_allclose(stats_["std"][0], [0.0, 0.0, 0.0])


def test_bad_configs():
  c = shift_sweep.get_config("toy")
  c.labels = LABELS
  c.shifts = ("wobble",)
  with pytest.raises(Exception, match="config.shifts='wobble' is invalid"):
    sweep.plan.validate(c)
  with pytest.raises(ValueError, match="unknown variant"):
    shift_sweep.get_config("huge")
  cells = sweep.plan.grid_cells(ml_collections.ConfigDict(
      {"ms_alpha_c": (-0.1, 0.0), "ms_alpha_s": (0.0, 0.2)}), ("ms",))
  assert [c.alpha for c in cells] == [(0.0, 0.0), (-0.1, 0.0), (-0.1, 0.2), (0.0, 0.2)]


def test_real_scoring_matches_fitness_on_returned_images(tiny_sd_dirs, tmp_path_factory, tmp_path):
  """make_scoring (evaluator role of jaxdiffattack.objectives, tiny random ViT + CLIP standing in
  for the toy models) fused in the sweep == scoring the plain sampler's images directly."""
  import tiny_vision  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import objectives  # pylint: disable=g-import-not-at-top
  dirs = tiny_vision.build_all_cached(tmp_path_factory)
  config = tiny_config(tiny_sd_dirs[1])
  config.label_set = "toy"
  config.labels = ("red circle", "blue square")
  config.shifts = ("ums",)
  config.grids.ums = (0.2,)
  config.images_per_prompt = 1
  config.grid_images = False
  config.trajectory.prompts = ()
  config.scoring.kind = "models"
  config.scoring.scorers = tiny_vision.fitness_config(dirs).scorers
  out = sweep.run(config, tmp_path)
  members = out["members"]
  assert len(members) == 4
  fit = objectives.build(tiny_vision.fitness_config(dirs))
  sd, params = models.load_stable_diffusion(str(tiny_sd_dirs[1]))
  import jax  # pylint: disable=g-import-not-at-top
  plan = sweep.plan.Plan(sweep.plan.grid_cells(config.grids, config.shifts), 2, 1)
  latents = sweep.plan.shifted_latents(plan, np.arange(4), jax.random.PRNGKey(config.seed),
                                  sd.latent_shape)
  prompts = [config.template.format(label) for label in config.labels]
  cond = np.asarray(text.encode_prompts(sd, params["text_encoder"], prompts))[[0, 1, 0, 1]]
  uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0])
  images = sampler_lib.PopulationSampler(sd, params, sampler_lib.SamplerSettings(num_steps=3))(
      latents, cond, uncond, 7.5).images
  expected = fit.score(images, labels=list(config.labels) * 2, prompts=prompts * 2)
  np.testing.assert_allclose([m["clip_score"] for m in members],
                             expected["evaluator/clip_score"], atol=1e-3)
  np.testing.assert_array_equal([m["top1"] for m in members], expected["evaluator/top1_hit"])
  np.testing.assert_array_equal([m["top5"] for m in members], expected["evaluator/top5_hit"])


@pytest.mark.slow
def test_eight_devices_match_one(tiny_sd_dirs, tmp_path):
  """The sweep on 8 fake CPU devices == on one (separate process: device count is fixed at
  JAX start-up). Hits are equal; CLIP-like scores agree to float32 summation order."""
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  worker = pathlib.Path(__file__).with_name("sweep_multidevice_worker.py")
  env = dict(os.environ, PYTHONPATH=str(_ROOT))
  proc = subprocess.run([sys.executable, str(worker), str(tiny_sd_dirs[1]), str(tmp_path)],
                        env=env, capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  single, eight = (_read(tmp_path / name / "members.csv") for name in ("single", "eight"))
  assert len(single) == len(eight) == 24
  for a, b in zip(single, eight):
    assert (a["shift"], a["alpha_c"], a["prompt_index"], a["seed_index"], a["top1"], a["top5"]) == (
        b["shift"], b["alpha_c"], b["prompt_index"], b["seed_index"], b["top1"], b["top5"])
    np.testing.assert_allclose(float(a["clip_score"]), float(b["clip_score"]), atol=1e-3)


def test_paired_differences_match_a_numpy_statement():
  """a − b on the unshifted cell, paired by (prompt, seed) whatever the row order: the mean of
  the per-unit differences ± 1.96 × its cluster-robust standard error by prompt (statsmodels'
  cluster-robust OLS; points), McNemar against statsmodels' exact test; shifted cells and
  unpaired units are ignored."""
  rng = np.random.default_rng(0)
  hits = {"a": rng.integers(0, 2, (4, 5)), "b": rng.integers(0, 2, (4, 5))}
  rows = []
  for setting, h in hits.items():
    for p in range(4):
      for s in range(5):
        rows.append({"setting": setting, "shift": "none", "prompt_index": str(p),
                     "seed_index": str(s), "top1": str(float(h[p, s]))})
        rows.append({"setting": setting, "shift": "ums", "prompt_index": str(p),
                     "seed_index": str(s), "top1": "1.0"})
  rows.append({"setting": "a", "shift": "none", "prompt_index": "9", "seed_index": "0",
               "top1": "1.0"})   # no partner in b
  for setting in ("a", "b"):     # a unit with a NaN member (a model made NaN) drops out
    rows.append({"setting": setting, "shift": "none", "prompt_index": "8", "seed_index": "0",
                 "top1": "nan" if setting == "b" else "1.0"})
  rng.shuffle(rows)
  (row,) = sweep.report.paired_differences(rows, [("a", "b")])
  assert row["nonfinite"] == 1
  d = 100.0 * (hits["a"] - hits["b"]).ravel()
  fit = sm.OLS(d, np.ones((d.size, 1))).fit(cov_type="cluster",
                                            cov_kwds={"groups": np.repeat(np.arange(4), 5)})
  half = 1.959963984540054 * float(fit.bse[0])
  assert row["n"] == 20 and row["metric"] == "top1" and row["prompts"] == 4
  a, b = hits["a"].ravel().astype(bool), hits["b"].ravel().astype(bool)
  table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
  assert (row["only_a"], row["only_b"]) == (table[0][1], table[1][0])
  np.testing.assert_allclose(row["mcnemar_p"], min(1.0, sm_mcnemar(table, exact=True).pvalue))
  np.testing.assert_allclose([row["difference"], row["ci_low"], row["ci_high"]],
                             [d.mean(), d.mean() - half, d.mean() + half], rtol=1e-9)
  np.testing.assert_allclose([row["a_value"], row["b_value"]],
                             [100 * hits["a"].mean(), 100 * hits["b"].mean()])
  assert "| a | b | top1 |" in sweep.report.paired_markdown([row])


def test_paired_names_must_be_settings(tiny_sd_dirs):
  config = tiny_config(tiny_sd_dirs[1])
  config.paired = (("toy_cfg7.5", "nope"),)
  with pytest.raises(ConfigError, match=r"config.paired=.*setting names"):
    sweep.plan.validate(config)


def test_grids_need_the_evaluators_reading(tiny_sd_dirs, tmp_path):
  """Grid captions name the evaluator's class and confidence: a scoring without them is a
  one-line error before any image is generated."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  synthetic = scoring.synthetic_scoring()
  blind = dataclasses.replace(synthetic, names=tuple(
      n for n in synthetic.names if n not in sweep.report.GRID_SCORES))
  with pytest.raises(ConfigError, match=r"grid_images=True .* \['evaluator/pred', "
                     r"'evaluator/confidence'\]"):
    sweep.run(tiny_config(tiny_sd_dirs[1]), tmp_path / "w", scoring=blind)
  assert not (tmp_path / "w" / "members.csv").exists()


def test_index_page_and_rating_kit_in_headless_chromium(full_run, tmp_path, chrome_driver):
  """index.html (written by the job) shows every grid tile once, each shifted tile beside its
  prompt's clean tile, with the evaluator's reading; every image loads, no console error; the
  rating kit offers the same tiles."""
  import shutil  # pylint: disable=g-import-not-at-top
  import browser  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import pages  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import rate  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  shutil.copytree(full_run[0], workdir)
  members = set()
  for shift in ("ums", "pas"):
    members |= set(json.loads((workdir / "grids" / f"toy_cfg7.5_{shift}.json").read_text())
                   ["members"])
  job, entries = pages.collect(workdir)
  assert job == "sweep" and sorted(e.source["member"] for e in entries) == sorted(members)
  for e in entries:
    assert (e.method == "clean") == (e.clean_image == "")
    row = full_run[1]["members"][e.source["member"]]
    assert e.judges["evaluator"]["failure"] == (row["top1"] == 0.0)
  driver, _ = chrome_driver
  shown = browser.check_page(driver, workdir / "index.html")
  assert shown >= len(entries) + sum(e.method != "clean" for e in entries)
  doc = rate.make_kit(workdir)
  assert sorted(i["id"] for i in doc["items"]) == sorted(e.id for e in entries)
  browser.check_page(driver, workdir / "index.html")   # now linking the rating page


def _green_over_red(images, labels, targeted):
  """A dummy image judge: an image holds when its green channel's mean exceeds its red's."""
  images = np.asarray(images, np.float64)
  lead = images[..., 1].mean((1, 2)) - images[..., 0].mean((1, 2))
  fails = lead <= 0
  return judges.make_verdict([None if f else l for f, l in zip(fails, labels)], lead,
                             ~fails if targeted else fails,
                             reason=["red over green" if f else "holds" for f in fails])


@pytest.mark.slow
def test_an_image_judge_in_config_judges_adds_its_metrics(tiny_sd_dirs, tmp_path, monkeypatch):
  """An image judge named in config.judges (here a dummy registered by one line; on the toy
  world the oracle) is read on every member: members.csv gains <judge>_top1 / <judge>_unclear,
  which match the judge's rule re-derived from the grid tiles' PNGs."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(judges.IMAGE_JUDGES, "green",
                      lambda: judges.ImageJudge(_green_over_red, ("holds", "red over green")))
  config = tiny_config(tiny_sd_dirs[1])
  config.judges = ("evaluator", "green")
  config.trajectory.prompts = ()
  out = sweep.run(config, tmp_path, scoring=scoring.synthetic_scoring())
  rows = _read(tmp_path / "members.csv")
  assert len(rows) == len(out["members"]) == 24
  assert {float(r["green_unclear"]) for r in rows} == {0.0}
  checked = 0
  for shift in ("ums", "pas"):
    grid = json.loads((tmp_path / "grids" / f"toy_cfg7.5_{shift}.json").read_text())
    for tile in grid["tiles"]:
      m = tile["member"]
      image = np.asarray(Image.open(tmp_path / tile["image"]).convert("RGB"), np.float64) / 255
      lead = image[..., 1].mean() - image[..., 0].mean()
      if abs(lead) > 2 / 255:       # clear of the PNG's rounding
        assert float(rows[m]["green_top1"]) == float(lead > 0), (m, lead)
        checked += 1
  assert checked >= 4


def test_per_sample_rates_are_clustered_by_prompt():
  """results.csv's "all" rows pool several seeds of several prompts: their interval is the
  cluster-robust one by prompt (statsmodels' cluster-robust OLS); a class row (one prompt) is
  Wilson over its seeds."""
  rng = np.random.default_rng(3)
  hits = (rng.random((6, 8)) < rng.random((6, 1))).astype(float)   # 6 prompts × 8 seeds
  rows = [{"setting": "s", "shift": "none", "alpha_c": "0", "alpha_s": "0",
           "prompt_index": str(p), "label": f"c{p}", "seed_index": str(s),
           "top1": str(hits[p, s])} for p in range(6) for s in range(8)]
  out = sweep.report.summarise(rows)
  whole = next(r for r in out if r["class"] == "all" and r["metric"] == "top1")
  fit = sm.OLS(hits.ravel(), np.ones((48, 1))).fit(
      cov_type="cluster", cov_kwds={"groups": np.repeat(np.arange(6), 8)})
  half = 1.959963984540054 * float(fit.bse[0])
  assert whole["interval"] == "cluster-robust" and whole["prompts"] == 6
  np.testing.assert_allclose([whole["ci_low"], whole["ci_high"]],
                             [max(0, hits.mean() - half), min(1, hits.mean() + half)], rtol=1e-9)
  one = next(r for r in out if r["class"] == "c2" and r["metric"] == "top1")
  assert one["interval"] == "wilson"
  np.testing.assert_allclose([one["ci_low"], one["ci_high"]],
                             sweep.report.stats.wilson_interval(hits[2].sum(), 8))


def test_plots_are_small_multiples_naming_shift_and_judge(monkeypatch, tmp_path):
  """One panel per setting × shift (no panel holds two settings), shared y axis, x axes naming
  the shift's parameter, y axes the metric's judge; the two-parameter MS panel's legend sits
  outside the axes."""
  figures = {}
  monkeypatch.setattr(sweep.report.runs, "save_figure",
                      lambda fig, path: figures.__setitem__(pathlib.Path(path).name, fig))
  results = []
  for setting in ("gen_a", "gen_b", "gen_c"):
    for shift, alphas in (("ums", [(-0.2, 0), (0.2, 0)]), ("ms", [(0.1, -0.3), (0.1, 0.3)]),
                          ("pas_fraction", [(0.25, 0), (1.0, 0)])):
      for ac, as_ in [(0.0, 0.0)] + alphas:
        for metric in ("top1", "oracle_top1"):
          results.append({"setting": setting, "shift": shift, "alpha_c": ac, "alpha_s": as_,
                          "class": "all", "metric": metric, "value": 0.5, "ci_low": 0.3,
                          "ci_high": 0.7})
  sweep.report.plots(results, tmp_path)
  fig = figures["top1.png"]
  axes = fig.get_axes()
  assert len(axes) == 3 * 3
  titles = [ax.get_title() for ax in axes]
  assert titles[:3] == ["gen_a: MS", "gen_a: PAS", "gen_a: UMS"]
  assert [ax.get_xlabel() for ax in axes[:3]] == [
      "MS α_c", "PAS α_a (fraction of latent pixels)", "UMS α_c"]
  assert axes[0].get_ylabel() == "top-1 accuracy (evaluator)"
  assert figures["oracle_top1.png"].get_axes()[0].get_ylabel() == "class drawn (oracle)"
  for ax in axes:
    is_ms = ax.get_title().endswith(": MS")
    assert len(ax.get_lines()) == (3 + 1 if is_ms else 1 + 1)  # + the clean value's line
    legend = ax.get_legend()
    assert (legend is not None) == is_ms
    if legend is not None:
      assert legend.get_bbox_to_anchor().x0 >= ax.get_window_extent().x1 - 1   # beside, outside


def test_results_read_back_from_report_markdown_to_its_rounding(monkeypatch, tmp_path):
  """`results_from_markdown` recovers every overall row of `summarise` (values and CIs to the
  table's 0.1 rounding: points for rates, units for CLIP), MS's two α included, from `markdown`'s
  text alone; `replot_markdown` draws the small multiples from it; a table with a missing cell
  is a one-line error."""
  rng = np.random.default_rng(5)
  members = []
  for setting in ("gen_a", "gen_b"):
    for shift, alpha in (("none", (0.0, 0.0)), ("ums", (-0.2, 0.0)), ("ums", (0.2, 0.0)),
                         ("ms", (0.2, -0.3)), ("ms", (0.2, 0.3))):
      for p in range(4):
        for seed in range(3):
          members.append({"setting": setting, "shift": shift, "alpha_c": str(alpha[0]),
                          "alpha_s": str(alpha[1]), "prompt_index": str(p), "label": f"c{p}",
                          "seed_index": str(seed), "top1": str(float(rng.random() < 0.7)),
                          "clip_score": str(60 + 20 * rng.random())})
  results = sweep.report.summarise(members)
  text = sweep.report.markdown(results)
  back = sweep.report.results_from_markdown(text)
  overall = [r for r in results if r["class"] == "all"]
  assert len(back) == len(overall) == 2 * 2 * 3 * 2    # settings × shifts × (clean + 2 α) × metrics
  key = lambda r: (r["setting"], r["shift"], r["alpha_c"], r["alpha_s"], r["metric"])
  want = {key(r): r for r in overall}
  for r in back:
    w = want[key(r)]
    tol = 0.051 if r["metric"] == "clip_score" else 0.00051
    for field in ("value", "ci_low", "ci_high"):
      assert abs(r[field] - w[field]) <= tol, (key(r), field, r[field], w[field])
  figures = {}
  monkeypatch.setattr(sweep.report.runs, "save_figure",
                      lambda fig, path: figures.__setitem__(pathlib.Path(path).name, fig))
  report_md = tmp_path / "report.md"
  report_md.write_text(text)
  assert sweep.report.replot_markdown(report_md, tmp_path) == ["top1", "clip_score"]
  assert len(figures["top1.png"].get_axes()) == 2 * 2
  bad = "\n".join(l if not l.startswith("| top1") else l.rsplit(" | ", 1)[0] + " |"
                   for l in text.split("\n"))
  with pytest.raises(ValueError, match=r"cells for \d α columns"):
    sweep.report.results_from_markdown(bad)


def test_trajectory_plots_name_their_axes_and_keep_the_legend_off_the_data(monkeypatch, tmp_path):
  """One figure per setting (in the CSV's order), one panel per statistic with the statistic on
  its y axis and the step on its x axis, one line per shift cell × prompt drawn through every
  step, and the legend outside every panel (below them), labelled with the shift and α."""
  figures = {}
  monkeypatch.setattr(sweep.trajectories.runs, "save_figure",
                      lambda fig, path: figures.__setitem__(pathlib.Path(path).name, fig))
  rows = []
  for setting in ("gen_b", "gen_a"):
    for shift, alpha in (("none", "0"), ("ums", "-1"), ("ums", "1"), ("sds", "0.6")):
      for step in range(5):
        rows.append({"setting": setting, "shift": shift, "alpha": alpha, "prompt": "a red circle",
                     "step": str(step), "step_distance": str(0.1 * step), "mean": str(-step),
                     "std": str(1 + step)})
  csv_path = tmp_path / "trajectory.csv"
  with open(csv_path, "w", newline="") as f:
    writer = csv.DictWriter(f, sweep.trajectories.FIELDS)
    writer.writeheader()
    writer.writerows(rows)
  assert sweep.trajectories.replot_trajectories(csv_path, tmp_path) == ["gen_b", "gen_a"]
  assert sorted(figures) == ["trajectory_gen_a.png", "trajectory_gen_b.png"]
  fig = figures["trajectory_gen_b.png"]
  axes = fig.get_axes()
  assert [ax.get_ylabel() for ax in axes] == [
      "RMS step distance of the latent", "latent mean", "latent std"]
  assert {ax.get_xlabel() for ax in axes} == {"sampler step"}
  for ax in axes:
    assert len(ax.get_lines()) == 4 and ax.get_legend() is None
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), range(5))
  np.testing.assert_allclose(axes[1].get_lines()[1].get_ydata(), [0, -1, -2, -3, -4])
  assert len(fig.legends) == 1
  assert [t.get_text() for t in fig.legends[0].get_texts()] == [
      "unshifted / a red circle", "UMS α = -1 / a red circle", "UMS α = 1 / a red circle",
      "SDS α = 0.6 / a red circle"]
  fig.canvas.draw()
  legend_top = fig.legends[0].get_window_extent().y1
  assert all(legend_top <= ax.get_window_extent().y0 for ax in axes)   # below, off the data


@pytest.mark.slow
def test_toy_smoke_sweep_runs_every_shift_with_ms_and_pas_fraction(tmp_path):
  """`configs/shift_sweep.py:toy,smoke` on the shipped toy world: all five shifts run, MS cells
  (α_c, α_s) and PAS as a fraction of the 8×8 latent's pixels; each MS member's seed vector is
  z + α_c − α_s·z of its unshifted partner's."""
  c = shift_sweep.get_config("toy,smoke")
  c.grid_images = False
  c.trajectory.prompts = ()
  assert c.shifts == ("ums", "rms", "sds", "ms", "pas_fraction")
  out = sweep.run(c, tmp_path)
  members = out["members"]
  cells = {(m["shift"], float(m["alpha_c"]), float(m["alpha_s"])) for m in members}
  assert {("ms", 0.2, -0.3), ("ms", 0.2, 0.3), ("pas_fraction", 1.0, 0.0),
          ("pas_fraction", 0.015625, 0.0)} <= cells
  results = sweep.report.summarise(members)
  ms = [r for r in results if r["shift"] == "ms" and r["class"] == "all" and r["metric"] == "top1"]
  assert {(r["alpha_c"], r["alpha_s"]) for r in ms} == {(0.0, 0.0), (0.2, -0.3), (0.2, 0.3)}
  assert all(r["n"] == 3 for r in ms)
  plan = sweep.plan.Plan(sweep.plan.grid_cells(c.grids, c.shifts), 3, 1)
  ms_index = [i for i, cell in enumerate(plan.cells) if cell.shift == "ms"]
  members_idx = np.array([ms_index[0] * 3, 0])    # MS cell's prompt 0, and the clean prompt 0
  z = sweep.plan.shifted_latents(plan, members_idx, jax.random.PRNGKey(c.seed), (4, 8, 8))
  a_c, a_s = plan.cells[ms_index[0]].alpha
  np.testing.assert_allclose(z[0], z[1] + a_c - a_s * z[1], atol=1e-6)
  assert (tmp_path / "plots" / "top1.png").is_file()
