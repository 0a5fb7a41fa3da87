"""World 2's rating kit (jaxdiffattack/world2/rating_set.py, benchmarks/world2_rating_set.py):
the stratified sample, the split, items.json, the sheets, the agreement numbers, bad input; and
the census's save_images="sample" mode it samples from."""

import collections
import importlib.util
import json
import math
import pathlib

import numpy as np
from PIL import Image
import pytest

from jaxdiffattack import census
from jaxdiffattack import ratings
from jaxdiffattack import variants
from jaxdiffattack.errors import ConfigError, UserError
from jaxdiffattack.world2 import rating_set

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLASSES = ("red circle", "crimson circle", "blue square", "teal ring", "green orange",
           "purple six-pointed star")


def _config(arg="world2", **overrides):
  config = variants.load_config("census", arg)
  for key, value in overrides.items():
    config[key] = value
  return config


def _fake_census(workdir: pathlib.Path, seeds=4, sample=2, seed=0):
  """A census workdir as `census.run` writes it with save_images="sample" (real census prompts;
  the verdicts drawn at random; the images a grey field with one coloured patch)."""
  config = _config(classes=CLASSES, scenes_per_class=2, seeds_per_prompt=seeds,
                   save_images="sample", sample_per_prompt=sample)
  rng = np.random.default_rng(seed)
  rows = []
  for p in census.make_prompts(config):
    for s in range(seeds):
      verdict = rng.choice(["holds", "violated", "unclear"], p=[0.5, 0.3, 0.2])
      kind = {"holds": "holds", "violated": "other_class", "unclear": "unreadable"}[verdict]
      file = None
      if census.save_image(config, kind, s):
        file = f"images/{p.index:05d}_{s:03d}.png"
        image = np.full((64, 64, 3), 128, np.uint8)
        y, x = rng.integers(4, 40, size=2)
        image[y:y + 20, x:x + 20] = rng.integers(0, 256, size=3)
        (workdir / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(workdir / file)
      rows.append({"prompt_index": p.index, "prompt": p.prompt, "kind": p.kind, "scene": p.scene,
                   "scene_kind": p.scene_kind, "label": p.label, "seed": s, "file": file,
                   "judges": {"world2_oracle": {"failure": verdict == "violated",
                                                "unclear": verdict == "unclear",
                                                "pred": None, "confidence": None,
                                                "reason": verdict}},
                   "failure": {"kind": kind}})
  (workdir / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (workdir / "config.json").write_text(json.dumps({"save_images": "sample"}))
  return rows


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("fake_census")
  return workdir, _fake_census(workdir)


SIZES = {"holds": 5, "violated": 4, "unclear": 3}


@pytest.fixture(scope="module")
def kit(fake, tmp_path_factory):
  workdir, _ = fake
  out = tmp_path_factory.mktemp("kit") / "set"
  return out, rating_set.build([workdir], out, SIZES, seed=5, raters=("A", "B"),
                              max_per_prompt=4)


# ----------------------------------------------------------------------------- census mode --
def test_census_sample_mode_keeps_every_failure_and_the_first_seeds():
  config = _config(save_images="sample", sample_per_prompt=2)
  for kind in ("holds", "other_class", "unreadable"):
    for s in range(5):
      assert census.save_image(config, kind, s) == (kind != "holds" or s < 2)
  for mode, expect in (("all", True), ("none", False)):
    assert census.save_image(_config(save_images=mode), "holds", 3) is expect
  failures = _config(save_images="failures")
  assert not census.save_image(failures, "holds", 0) and census.save_image(failures, "missing", 9)
  for value in (-1, -3):
    with pytest.raises(ConfigError, match="config.sample_per_prompt") as e:
      census.validate(_config(sample_per_prompt=value))
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------- sample --
def test_sample_fills_each_stratum_spread_over_classes_and_is_deterministic(fake):
  workdir, all_rows = fake
  rows = rating_set.load_census(workdir)
  assert len(rows) == sum(r["file"] is not None for r in all_rows)
  sizes = {"holds": 6, "violated": 5, "unclear": 50}
  chosen, table = rating_set.stratified_sample(rows, sizes, seed=1, max_per_prompt=99)
  again, _ = rating_set.stratified_sample(rows, sizes, seed=1, max_per_prompt=99)
  other, _ = rating_set.stratified_sample(rows, sizes, seed=2, max_per_prompt=99)
  key = lambda rs: [(r["prompt_index"], r["seed"]) for r in rs]
  assert key(chosen) == key(again) and key(chosen) != key(other)
  by = collections.defaultdict(list)
  for r in chosen:
    by[r["stratum"]].append(r)
    verdict, kind = r["stratum"].split("/")
    assert rating_set.verdict_of(r) == verdict and r["kind"] == kind
  for verdict in rating_set.VERDICTS:
    for kind in rating_set.KINDS:
      cands = [r for r in rows if r["kind"] == kind and rating_set.verdict_of(r) == verdict]
      got = by[f"{verdict}/{kind}"]
      assert table[f"{verdict}/{kind}"] == {"requested": sizes[verdict],
                                             "candidates": len(cands), "sampled": len(got)}
      assert len(got) == min(sizes[verdict], len(cands))   # every image pixel-distinct here
      # Spread: one per class in turn, so the counts per class differ by at most one (until a
      # class runs out of candidates).
      counts = collections.Counter(r["label"] for r in got)
      available = collections.Counter(r["label"] for r in cands)
      short = [c for c in available if counts[c] < available[c]]
      if short:
        assert max(counts.values()) - min(counts[c] for c in short) <= 1
  # The per-prompt cap holds over the whole sample.
  capped, _ = rating_set.stratified_sample(rows, sizes, seed=1, max_per_prompt=1)
  assert max(collections.Counter(r["prompt"] for r in capped).values()) == 1


def test_sample_keeps_pixel_identical_images_once(fake, tmp_path):
  workdir, _ = fake
  rows = rating_set.load_census(workdir)
  twin = dict(rows[0], seed=99, prompt=rows[0]["prompt"] + ", vivid colors", census="other")
  chosen, _ = rating_set.stratified_sample(rows + [twin], {"holds": 999, "violated": 999,
                                                           "unclear": 999}, 0, max_per_prompt=99)
  pixels = [np.asarray(Image.open(r["path"])).tobytes() for r in chosen]
  assert len(pixels) == len(set(pixels)) == len(rows)


# ---------------------------------------------------------------------------------- build --
def test_items_validate_and_carry_the_caption_and_provenance(kit, fake):
  out, built = kit
  doc = json.loads((out / "items.json").read_text())
  assert doc["format"] == ratings.ITEMS_FORMAT and doc["run_id"] == "world2_v1"
  items = doc["items"]
  ids = [it["id"] for it in items]
  assert len(ids) == len(set(ids)) == len(built["items"])
  strata = json.loads((out / "sample.json").read_text())["strata"]
  assert len(items) == sum(s["sampled"] for s in strata.values())
  workdir, _ = fake
  rows = {(r["prompt_index"], r["seed"]): r for r in rating_set.load_census(workdir)}
  for it in items:
    s = it["source"]
    row = rows[(s["prompt_index"], s["seed"])]
    assert it["prompt"] == row["prompt"] and s["kind"] == row["kind"]
    assert s["stratum"] == f"{rating_set.verdict_of(row)}/{row['kind']}"
    assert {"verdict", "reason", "facts"} <= set(s["oracle"]) and s["oracle"]["facts"]
    assert all({"kind", "text", "verdict", "reason"} <= set(f) for f in s["oracle"]["facts"])
    np.testing.assert_array_equal(np.asarray(Image.open(out / it["image"]).convert("RGB")),
                                  np.asarray(Image.open(row["path"]).convert("RGB")))
  # The ratings checks accept a file rating every item, with nothing excluded.
  file = {"format": ratings.RATINGS_FORMAT, "run_id": "world2_v1", "rater": "A",
          "ratings": [{"item": i, "verdict": "yes"} for i in ids]}
  checked = ratings.check_ratings(file, "r.json", doc["run_id"], ids)
  assert len(checked.ratings) == len(ids) and not checked.excluded
  # Ids do not reveal the stratum: the id order is not the sample's stratum order.
  assert [it["source"]["stratum"] for it in items] != sorted(
      (it["source"]["stratum"] for it in items), key=lambda s: (
          rating_set.VERDICTS.index(s.split("/")[0]), rating_set.KINDS.index(s.split("/")[1])))


def test_split_puts_no_prompt_or_scene_in_both_parts(kit):
  out, _ = kit
  items = {it["id"]: it for it in json.loads((out / "items.json").read_text())["items"]}
  split = json.loads((out / "split.json").read_text())
  tune, test = set(split["tune"]), set(split["test"])
  assert not tune & test and tune | test == set(items) and tune and test
  for field in ("prompt", "scene"):
    get = (lambda it: it["prompt"]) if field == "prompt" else (lambda it: it["source"]["scene"])
    assert not {get(items[i]) for i in tune} & {get(items[i]) for i in test}, field
  # Balanced to within the largest cluster per part.
  biggest = max(collections.Counter(split["clusters"].values()).values())
  assert abs(len(tune) - len(test)) <= biggest


def test_sheets_hold_every_item_once_and_show_no_provenance(kit):
  out, _ = kit
  doc = json.loads((out / "items.json").read_text())
  ids = sorted(it["id"] for it in doc["items"])
  orders = []
  for rater in ("A", "B"):
    mapping = json.loads((out / "sheets" / rater / "map.json").read_text())
    assert set(mapping) == {"rater", "seed", "sheets"}
    tiles = [i for sheet in mapping["sheets"].values() for i in sheet.values()]
    assert sorted(tiles) == ids
    for name in mapping["sheets"]:
      assert (out / "sheets" / rater / name).is_file()
    orders.append(tiles)
  assert orders[0] != orders[1]   # each rater's own order
  # Tile 1 of rater A's first sheet is its item's image enlarged by nearest neighbour.
  mapping = json.loads((out / "sheets" / "A" / "map.json").read_text())
  first = mapping["sheets"]["sheet_01.png"]["1"]
  sheet = np.asarray(Image.open(out / "sheets" / "A" / "sheet_01.png").convert("RGB"))
  tile = 192
  x0 = (tile + 16 + 60 - tile) // 2
  crop = sheet[30 + 8:30 + 8 + tile, x0:x0 + tile]
  image = np.asarray(Image.open(out / "images" / f"{first}.png").convert("RGB"))
  np.testing.assert_array_equal(crop, image.repeat(3, 0).repeat(3, 1))
  # The rating page carries ids, images and captions only.
  page = (out / "index.html").read_text()
  for it in doc["items"]:
    assert it["id"] in page
    for secret in (it["source"]["stratum"], it["source"]["census"], it["source"]["file"]):
      assert secret not in page
  assert "stratum" not in page and "census" not in page
  assert (out / "rating_guide.md").read_text().startswith("# World 2 rating guide")


def test_build_refuses_an_existing_set_and_a_census_without_images(kit, tmp_path):
  out, _ = kit
  with pytest.raises(UserError, match="already holds a rating set") as e:
    rating_set.build([tmp_path], out, SIZES)
  assert "\n" not in str(e.value)
  with pytest.raises(UserError, match="has no images.jsonl") as e:
    rating_set.build([tmp_path], tmp_path / "new", SIZES)
  assert "\n" not in str(e.value)
  (tmp_path / "images.jsonl").write_text(json.dumps({"prompt_index": 0, "file": None}) + "\n")
  (tmp_path / "config.json").write_text(json.dumps({"save_images": "none"}))
  with pytest.raises(UserError, match=r"saved no images \(config.save_images='none'\).*"
                     "save_images=sample") as e:
    rating_set.build([tmp_path], tmp_path / "new", SIZES)
  assert "\n" not in str(e.value)
  assert not (tmp_path / "new").exists()


def test_script_reports_a_census_without_images_in_one_line(tmp_path, capsys):
  spec = importlib.util.spec_from_file_location(
      "world2_rating_set", ROOT / "benchmarks" / "world2_rating_set.py")
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  assert script.main(["build", "--census", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: --census=") and "\n" not in err


# -------------------------------------------------------------------------------- measure --
def _consensus(votes):
  """Independent of ratings.consensus: majority; a tie between the top verdicts is unsure."""
  counts = collections.Counter(votes)
  top = max(counts.values())
  winners = [v for v, c in counts.items() if c == top]
  return winners[0] if len(winners) == 1 else "unsure"


def test_measure_against_hand_made_ratings(kit, tmp_path):
  import statsmodels.api as sm  # pylint: disable=g-import-not-at-top
  from statsmodels.stats.proportion import proportion_confint  # pylint: disable=g-import-not-at-top
  out, _ = kit
  items = {it["id"]: it for it in json.loads((out / "items.json").read_text())["items"]}
  split = json.loads((out / "split.json").read_text())
  test_ids, tune_ids = split["test"], split["tune"]
  a_cycle = ["no", "no", "yes", "yes", "unsure", "no", "yes"]
  b_cycle = ["no", "yes", "yes", "yes", "unsure", "no", "no"]
  outcome_cycle = ["failure", "correct", "unclear", "correct", "failure", "unclear", "failure",
                   "correct", "failure"]
  rated = test_ids[:-1] + tune_ids           # the last test item gets one rating only
  a = {i: a_cycle[k % 7] for k, i in enumerate(rated)}
  b = {i: b_cycle[k % 7] for k, i in enumerate(rated)}
  a[test_ids[-1]] = "yes"
  outcomes = {i: outcome_cycle[k % 9] for k, i in enumerate(test_ids + tune_ids)}
  paths = []
  for rater, verdicts in (("A", a), ("B", b)):
    path = tmp_path / f"ratings_{rater}.json"
    path.write_text(json.dumps({"format": ratings.RATINGS_FORMAT, "run_id": "world2_v1",
                                "rater": rater, "method": "hand-made for the test",
                                "ratings": [{"item": i, "verdict": v} for i, v in
                                            verdicts.items()] + [{"item": "nope",
                                                                  "verdict": "yes"}]}))
    paths.append(path)
  seen = []

  def fake_oracle(kit_dir, its):
    seen.extend(it["id"] for it in its)
    return {it["id"]: outcomes[it["id"]] for it in its}

  result = rating_set.measure(out, paths, "test", outcomes=fake_oracle)
  scored = test_ids[:-1]
  assert sorted(seen) == sorted(scored)           # the tuning part is never judged
  assert result["items_in_part"] == len(test_ids) and result["items_rated"] == len(scored)
  assert result["too_few_ratings"] == 1
  assert result["raters"][0]["excluded"] == {"unknown item": 1}
  human = {i: _consensus([a[i], b[i]]) for i in scored}
  assert result["consensus"] == dict(collections.Counter(human.values()))
  for kind in ("all",) + rating_set.KINDS:
    ids = [i for i in scored if kind == "all" or items[i]["source"]["kind"] == kind]
    if not ids:
      assert kind not in result["by_kind"]
      continue
    block = result["by_kind"][kind]
    table = np.zeros((3, 3), int)
    for i in ids:
      table[["yes", "no", "unsure"].index(human[i]),
            ["failure", "correct", "unclear"].index(outcomes[i])] += 1
    assert [[block["confusion"][h][j] for j in ("failure", "correct", "unclear")]
            for h in ("yes", "no", "unsure")] == table.tolist()
    no, yes = table[1].sum(), table[0].sum()
    assert block["recall_of_human_failures"] == (table[1, 0] / no if no else None)
    assert block["false_failure_rate"] == (table[0, 0] / yes if yes else None)
    assert block["unclear_rate_on_human_correct"] == (table[0, 2] / yes if yes else None)
    for name, denominator, hit in (("recall_of_human_failures", "no", "failure"),
                                   ("false_failure_rate", "yes", "failure"),
                                   ("unclear_rate_on_human_correct", "yes", "unclear")):
      sub = [i for i in ids if human[i] == denominator]
      ci = block[f"{name}_clustered"]
      if not sub:
        assert ci["n"] == 0
        continue
      y = np.array([float(outcomes[i] == hit) for i in sub])
      groups = np.unique([items[i]["prompt"] for i in sub], return_inverse=True)[1]
      assert ci["n"] == len(sub) and ci["clusters"] == groups.max() + 1
      assert ci["rate"] == pytest.approx(y.mean())
      if ci["interval"] == "cluster-robust":
        fit = sm.OLS(y, np.ones((len(y), 1))).fit(cov_type="cluster",
                                                  cov_kwds={"groups": groups})
        low, high = fit.conf_int()[0]
        assert ci["ci95"] == pytest.approx([max(0, low), min(1, high)], abs=1e-9)
      elif ci["interval"] == "wilson":
        low, high = proportion_confint(int(y.sum()), len(y), method="wilson")
        assert ci["ci95"] == pytest.approx([low, high], abs=1e-9)
  assert any(b[f"{name}_clustered"]["interval"] == "cluster-robust"   # the path is exercised
             for b in result["by_kind"].values()
             for name in ("recall_of_human_failures", "false_failure_rate",
                          "unclear_rate_on_human_correct"))
  # Cohen's κ of the oracle (failure vs not) against the decided consensus, by hand.
  decided = [i for i in scored if human[i] != "unsure"]
  x = np.array([human[i] == "no" for i in decided])
  z = np.array([outcomes[i] == "failure" for i in decided])
  po = np.mean(x == z)
  pe = x.mean() * z.mean() + (1 - x.mean()) * (1 - z.mean())
  assert result["by_kind"]["all"]["cohen_kappa_failure"] == pytest.approx((po - pe) / (1 - pe))
  # The tuning part, asked for, scores the tuning items instead.
  seen.clear()
  tuned = rating_set.measure(out, paths, "tune", outcomes=fake_oracle)
  assert sorted(seen) == sorted(tune_ids) and tuned["part"] == "tune"


def test_measure_bad_input_is_one_line(kit, tmp_path):
  out, _ = kit
  for kwargs, match in (({"ratings_paths": []}, "no ratings files"),
                        ({"ratings_paths": [tmp_path / "x.json"], "part": "all"}, "--part")):
    with pytest.raises(UserError, match=match) as e:
      rating_set.measure(out, **kwargs)
    assert "\n" not in str(e.value)
  other = tmp_path / "r.json"
  other.write_text(json.dumps({"format": ratings.RATINGS_FORMAT, "run_id": "toy_v1",
                               "rater": "A", "ratings": []}))
  with pytest.raises(ratings.RatingsError, match="another run") as e:
    rating_set.measure(out, [other])
  assert "\n" not in str(e.value)


# ------------------------------------------------------------------------ the whole sequence --
@pytest.mark.slow
def test_dry_run_smoke_census_to_kit_to_measure(world2_assets, tmp_path):
  """The documented sequence on the smoke world: census (save_images="sample"), build, measure
  with the real oracle (re-run on the kit's images)."""
  config = _config("world2,smoke", save_images="sample", sample_per_prompt=2)
  census.run(config, str(tmp_path / "census"))
  rows = [json.loads(l) for l in (tmp_path / "census" / "images.jsonl").read_text().splitlines()]
  for r in rows:
    assert (r["file"] is not None) == (r["failure"]["kind"] != "holds" or r["seed"] < 2)
  built = rating_set.build([tmp_path / "census"], tmp_path / "kit",
                           {"holds": 2, "violated": 2, "unclear": 2}, seed=1)
  items = built["items"]
  assert items and all(it["source"]["oracle"]["verdict"] == it["source"]["census_verdict"]
                       for it in items)
  ids = built["split"]["test"] + built["split"]["tune"]
  paths = []
  for rater, verdict in (("A", "no"), ("B", "no")):
    path = tmp_path / f"ratings_{rater}.json"
    path.write_text(json.dumps({"format": ratings.RATINGS_FORMAT, "run_id": "world2_v1",
                                "rater": rater, "ratings": [{"item": i, "verdict": verdict}
                                                            for i in ids]}))
    paths.append(path)
  result = rating_set.measure(tmp_path / "kit", paths)
  test = [it for it in items if it["id"] in built["split"]["test"]]
  block = result["by_kind"]["all"]
  assert block["items"] == len(test) == result["items_rated"]
  failures = sum(it["source"]["oracle"]["verdict"] == "violated" for it in test)
  assert block["recall_of_human_failures"] == pytest.approx(failures / len(test))
  assert math.isnan(block["cohen_kappa_failure"]) or -1 <= block["cohen_kappa_failure"] <= 1


@pytest.mark.slow
def test_rating_page_in_browser_then_measure(kit, chrome_driver):
  """Two raters rate the kit's page with the keyboard (tests/rating_flow.py: reload midway,
  resume, export); their exports go straight into `measure`, whose consensus counts match the
  raters' plan."""
  import rating_flow  # pylint: disable=g-import-not-at-top
  driver, downloads = chrome_driver
  out, _ = kit
  exports, orders = [], []
  for rater in ("ann", "bob"):
    exported, shown, path, text = rating_flow.rate_in_browser(driver, out / "index.html", rater,
                                                             downloads)
    assert exported["run_id"] == "world2_v1" and exported["rater"] == rater
    assert "World 2 rating guide" in text and "Near pairs" in text   # the world-2 guide
    exports.append(path)
    orders.append(shown)
  assert sorted(orders[0]) == sorted(orders[1]) and orders[0] != orders[1]
  split = json.loads((out / "split.json").read_text())
  result = rating_set.measure(out, exports, outcomes=lambda _, its: {
      it["id"]: "unclear" for it in its})
  expect = collections.Counter(_consensus([rating_flow.plan("ann", i), rating_flow.plan("bob", i)])
                               for i in split["test"])
  assert result["consensus"] == dict(expect) and result["items_rated"] == len(split["test"])
