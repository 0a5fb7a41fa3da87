"""jaxdiffattack.ratings and the rate job without a browser: κ against sklearn and statsmodels,
the clustered interval against statsmodels' cluster-robust OLS, consensus and judge agreement
against hand counts, and every bad ratings file as a one-line error or a counted exclusion
(nothing written)."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import cohen_kappa_score
import statsmodels.api as sm
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from jaxdiffattack import rate
from jaxdiffattack import ratings
from jaxdiffattack import stats
from jaxdiffattack.errors import UserError

_ROOT = pathlib.Path(__file__).resolve().parent.parent
V = ratings.VERDICTS


@pytest.mark.parametrize("seed", range(5))
def test_cohen_kappa_matches_sklearn(seed):
  rng = np.random.default_rng(seed)
  a = rng.choice(V, size=40, p=[0.6, 0.3, 0.1])
  b = np.where(rng.random(40) < 0.7, a, rng.choice(V, size=40))
  assert ratings.cohen_kappa(list(a), list(b)) == pytest.approx(
      cohen_kappa_score(a, b, labels=list(V)), abs=1e-12)


def test_cohen_kappa_edges():
  assert ratings.cohen_kappa(["yes"] * 5, ["yes"] * 5) == 1.0
  assert np.isnan(ratings.cohen_kappa([], []))
  with pytest.raises(ValueError, match="same items"):
    ratings.cohen_kappa(["yes"], [])


@pytest.mark.parametrize("raters", [3, 5])
def test_fleiss_kappa_matches_statsmodels(raters):
  rng = np.random.default_rng(raters)
  truth = rng.integers(0, 3, size=30)
  data = np.where(rng.random((30, raters)) < 0.75, truth[:, None], rng.integers(0, 3, (30, raters)))
  table, _ = aggregate_raters(data, n_cat=3)
  assert ratings.fleiss_kappa(table) == pytest.approx(sm_fleiss_kappa(table), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_clustered_interval_matches_statsmodels_cluster_robust_ols(seed):
  rng = np.random.default_rng(seed)
  clusters = np.repeat(np.arange(12), rng.integers(1, 5, size=12))
  y = (rng.random(len(clusters)) < 0.4).astype(float)
  got = ratings.clustered_rate(y, clusters)
  fit = sm.OLS(y, np.ones((len(y), 1))).fit(cov_type="cluster", cov_kwds={"groups": clusters})
  se = float(fit.bse[0])
  assert got["interval"] == "cluster-robust" and got["rate"] == pytest.approx(y.mean())
  assert got["ci95"][0] == pytest.approx(max(0, y.mean() - stats.Z95 * se), abs=1e-12)
  assert got["ci95"][1] == pytest.approx(min(1, y.mean() + stats.Z95 * se), abs=1e-12)


def test_singleton_clusters_use_wilson():
  got = ratings.clustered_rate([1, 0, 0, 1, 1], ["a", "b", "c", "d", "e"])
  assert got["interval"] == "wilson" and got["ci95"] == list(stats.wilson_interval(3, 5))


def test_rates_at_zero_and_one_use_wilson_over_clusters():
  got = ratings.clustered_rate([0, 0, 0, 0, 0, 0], ["a", "a", "b", "b", "c", "c"])
  assert got["interval"] == "wilson over clusters"
  assert got["ci95"] == list(stats.wilson_interval(0, 3)) and got["ci95"][1] > 0.5


def test_consensus_and_judge_agreement_against_hand_counts():
  assert ratings.consensus(["no", "no", "yes"]) == "no"
  assert ratings.consensus(["no", "yes"]) == "unsure"       # tie
  assert ratings.consensus(["unsure", "unsure", "no"]) == "unsure"
  assert ratings.consensus([]) is None
  human = ["no", "no", "no", "yes", "yes", "yes", "yes", "unsure"]
  judge = ["failure", "failure", "unclear", "failure", "correct", "unclear", "correct", "failure"]
  g = ratings.judge_agreement(human, judge)
  assert g["confusion"]["no"] == {"failure": 2, "correct": 0, "unclear": 1}
  assert g["confusion"]["yes"] == {"failure": 1, "correct": 2, "unclear": 1}
  assert g["recall_of_human_failures"] == pytest.approx(2 / 3)
  assert g["false_failure_rate"] == pytest.approx(1 / 4)
  assert g["unclear_rate_on_human_correct"] == pytest.approx(1 / 4)
  assert g["unclear_rate"] == pytest.approx(2 / 8)


# ------------------------------------------------------------------------ the rate job --
@pytest.fixture
def folder_kit(tmp_path):
  """A plain folder of 6 images (two targets, two methods) made into a kit in tmp_path/kit."""
  images = tmp_path / "imgs"
  images.mkdir()
  rows = ["image,prompt,method,target"]
  for i in range(6):
    Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(images / f"{i}.png")
    rows.append(f"{i}.png,a red circle,{'A' if i < 4 else 'B'},t{i % 2}")
  (tmp_path / "prompts.csv").write_text("\n".join(rows) + "\n")
  kit = tmp_path / "kit"
  doc = rate.make_kit(kit, images=images, prompts=tmp_path / "prompts.csv")
  return kit, doc


def _ratings(doc, rater, verdicts, **extra):
  return {"format": ratings.RATINGS_FORMAT, "run_id": doc["run_id"], "rater": rater,
          "method": "by hand (test)", "created": "2026-12-06T00:00:00Z",
          "ratings": [{"item": i["id"], "verdict": v, "note": "", "time": "2026-12-06T00:00:00Z"}
                      for i, v in zip(doc["items"], verdicts)], **extra}


def _write(path, obj):
  path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
  return path


def test_folder_kit_and_ingest(folder_kit, tmp_path):
  kit, doc = folder_kit
  assert doc["format"] == ratings.ITEMS_FORMAT and len(doc["items"]) == 6
  assert (kit / "rating" / "index.html").is_file()
  for item in doc["items"]:       # opaque names: the file name never tells the method
    assert (kit / "rating" / item["image"]).is_file() and "A" not in item["image"]
  a = ["no", "yes", "no", "unsure", "yes", "no"]
  b = ["no", "yes", "yes", "unsure", "yes", "no"]
  files = [_write(tmp_path / "a.json", _ratings(doc, "ann", a)),
           _write(tmp_path / "b.json", _ratings(doc, "bob", b))]
  summary = rate.ingest(kit, files)
  assert summary["agreement"]["kappa"] == pytest.approx(cohen_kappa_score(a, b, labels=list(V)))
  cons = [ratings.consensus([x, y]) for x, y in zip(a, b)]
  methods = [i["source"]["method"] for i in doc["items"]]
  for m in ("A", "B"):
    hits = [c == "no" for c, mm in zip(cons, methods) if mm == m]
    assert summary["ssr"][m]["human"]["hits"] == sum(hits)
    assert summary["ssr"][m]["human"]["n"] == len(hits)
  human = [json.loads(line) for line in (kit / "judges" / "human.jsonl").read_text().splitlines()]
  assert [h["consensus"] for h in human] == [c for c in cons]
  # Each line's judge record is the "human" judge's Verdict record (ratings.human_verdict).
  for h, x, y, c in zip(human, a, b, cons):
    assert h["judge"] == {"pred": None, "confidence": [x, y].count(c) / 2, "failure": c == "no",
                          "unclear": c == "unsure", "reason": h["judge"]["reason"],
                          "votes": {v: [x, y].count(v) for v in V}}
  assert "SSR(H)" in (kit / "rating" / "report.md").read_text()


@pytest.mark.parametrize("content, message", [
    ('{"format": "jaxdiffattack.ratings/1", "run_id": ', "not valid JSON"),   # truncated
    ("[1, 2]", "not a JSON object"),
    ({"format": "other"}, "format='other'"),
    ({"run": "wrong-run"}, "belongs to another run"),
    ({"verdict": "maybe"}, "verdict='maybe' is invalid"),
    ({"rater": ""}, "rater='' is invalid"),
])
def test_bad_ratings_files_are_one_line_errors_and_write_nothing(folder_kit, tmp_path, content,
                                                                 message):
  kit, doc = folder_kit
  good = _ratings(doc, "ann", ["yes"] * 6)
  if isinstance(content, dict):
    bad = dict(good)
    if "format" in content:
      bad["format"] = content["format"]
    if "run" in content:
      bad["run_id"] = content["run"]
    if "rater" in content:
      bad["rater"] = content["rater"]
    if "verdict" in content:
      bad["ratings"] = [dict(good["ratings"][0], verdict=content["verdict"])]
    content = bad
  files = [_write(tmp_path / "good.json", good), _write(tmp_path / "bad.json", content)]
  with pytest.raises(UserError, match=message) as e:
    rate.ingest(kit, files)
  assert "\n" not in str(e.value)
  assert not (kit / "judges").exists() and not (kit / "rating" / "report.md").exists()


def test_rater_in_two_files_is_an_error(folder_kit, tmp_path):
  kit, doc = folder_kit
  files = [_write(tmp_path / "a.json", _ratings(doc, "ann", ["yes"] * 6)),
           _write(tmp_path / "b.json", _ratings(doc, "ann", ["no"] * 6))]
  with pytest.raises(UserError, match="rater 'ann' appears in"):
    rate.ingest(kit, files)
  assert not (kit / "judges").exists()


def test_unknown_items_and_repeats_are_counted_exclusions(folder_kit, tmp_path):
  kit, doc = folder_kit
  r = _ratings(doc, "ann", ["no"] * 6)
  r["ratings"] += [dict(r["ratings"][0], verdict="yes"),              # rated again: first counts
                   dict(r["ratings"][1], item="folder/nope.png")]     # unknown item
  summary = rate.ingest(kit, [_write(tmp_path / "a.json", r)])
  assert summary["excluded"] == {"item rated again by the same rater": 1, "unknown item": 1}
  assert summary["consensus_counts"] == {"yes": 0, "no": 6, "unsure": 0}
  assert "Excluded ratings" in (kit / "rating" / "report.md").read_text()


def test_launcher_one_line_errors(tmp_path):
  out = subprocess.run([sys.executable, str(_ROOT / "launch" / "rate.py"), "--workdir",
                        str(tmp_path / "none")], capture_output=True, text=True, check=False)
  assert out.returncode != 0 and out.stderr.strip().startswith("error: ")
  assert len(out.stderr.strip().splitlines()) == 1
  out = subprocess.run([sys.executable, str(_ROOT / "launch" / "rate.py"), "--workdir",
                        str(tmp_path), "--ingest", str(tmp_path / "x.json")],
                       capture_output=True, text=True, check=False)
  assert out.returncode != 0 and "make the rating kit first" in out.stderr


def test_a_new_kit_never_replaces_one_with_other_items(folder_kit, tmp_path):
  kit, doc = folder_kit
  again = rate.make_kit(kit, images=tmp_path / "imgs", prompts=tmp_path / "prompts.csv")
  assert again == doc                      # the same kit: idempotent
  before = (kit / "rating" / "items.json").read_text()
  with pytest.raises(UserError, match="already lists another set of images"):
    rate.make_kit(kit, sample=3, seed=0, images=tmp_path / "imgs",
                  prompts=tmp_path / "prompts.csv")
  assert (kit / "rating" / "items.json").read_text() == before


def test_three_raters_give_fleiss_kappa(folder_kit, tmp_path):
  kit, doc = folder_kit
  plans = {"ann": ["no", "yes", "no", "unsure", "yes", "no"],
           "bob": ["no", "yes", "yes", "unsure", "yes", "no"],
           "cy": ["no", "unsure", "no", "yes", "yes", "yes"]}
  files = [_write(tmp_path / f"{r}.json", _ratings(doc, r, v)) for r, v in plans.items()]
  summary = rate.ingest(kit, files)
  table, _ = aggregate_raters(np.array([[V.index(plans[r][i]) for r in plans]
                                        for i in range(6)]), n_cat=3)
  assert summary["agreement"]["statistic"] == "fleiss"
  assert summary["agreement"]["kappa"] == pytest.approx(sm_fleiss_kappa(table), abs=1e-12)
  assert "fleiss κ" in (kit / "rating" / "report.md").read_text()


def test_judge_outcome():
  assert ratings.judge_outcome({"failure": True, "unclear": False}) == "failure"
  assert ratings.judge_outcome({"failure": False}) == "correct"
  assert ratings.judge_outcome({"failure": False, "unclear": True}) == "unclear"
  assert ratings.judge_outcome({"pred": "x", "failure": None}) is None
  assert ratings.judge_outcome(None) is None


def test_human_verdict_is_the_consensus_as_a_judge():
  """People as a judge: failure where most raters say "no", unclear on "unsure" or a tie;
  confidence = the consensus' share of the votes; the notes are the reason."""
  v = ratings.human_verdict([["no", "no", "yes"], ["yes", "no"], ["yes"], ["unsure", "yes",
                                                                           "unsure"]],
                            [["blurry", "two cats"], [], [], ["odd"]])
  assert v.failure.tolist() == [True, False, False, False]
  assert v.unclear.tolist() == [False, True, False, True]      # a yes/no tie is "unsure"
  np.testing.assert_allclose(v.confidence, [2 / 3, 0.0, 1.0, 2 / 3])
  assert v.reason == ("blurry; two cats", None, None, "odd") and v.pred == (None,) * 4
  assert v.record(0) == {"pred": None, "confidence": 2 / 3, "failure": True, "unclear": False,
                         "reason": "blurry; two cats"}
  assert ratings.judge_outcome(v.record(0)) == "failure"
  assert [ratings.judge_outcome(v.record(i)) for i in range(4)] == [
      "failure", "unclear", "correct", "unclear"]

