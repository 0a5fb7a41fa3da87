"""benchmarks/oracle_v2_calibrate.py: the consensus rule, Cohen's κ against scikit-learn, the
split (fixed, stratified, disjoint, never holding no-consensus items) and bad rating files."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

_PATH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "oracle_v2_calibrate.py"
_spec = importlib.util.spec_from_file_location("oracle_v2_calibrate", _PATH)
cal = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cal)


def test_consensus_rule():
  assert cal.consensus({"A": "yes", "B": "yes"}) == "yes"
  assert cal.consensus({"A": "no", "B": "no"}) == "no"
  assert cal.consensus({"A": "yes", "B": "no"}) is None
  assert cal.consensus({"A": "yes", "B": "unsure"}) is None
  assert cal.consensus({"A": "yes"}) is None
  # Three raters: at least two of the same yes / no.
  assert cal.consensus({"A": "yes", "B": "yes", "C": "no"}) == "yes"
  assert cal.consensus({"A": "no", "B": "unsure", "C": "no"}) == "no"
  assert cal.consensus({"A": "yes", "B": "no", "C": "unsure"}) is None
  assert cal.consensus({"A": "unsure", "B": "unsure", "C": "yes"}) is None


def test_kappa_against_sklearn():
  rng = np.random.default_rng(0)
  for _ in range(20):
    a = list(rng.choice(["yes", "no", "unsure"], 60))
    b = [x if rng.uniform() < 0.7 else str(rng.choice(["yes", "no", "unsure"])) for x in a]
    assert cal.cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


def test_metrics_count_each_cell():
  outcomes = ["holds", "violated", "unclear", "violated", "holds", "unclear"]
  truth = ["yes", "yes", "yes", "no", "no", "no"]
  m = cal.metrics(outcomes, truth)
  assert m["recall"] == pytest.approx(1 / 3)
  assert m["false_failure"] == pytest.approx(1 / 3)
  assert m["unclear_correct"] == pytest.approx(1 / 3)
  assert m["confusion"]["no"] == {"holds": 1, "violated": 1, "unclear": 1}
  votes = {"holds": "yes", "violated": "no", "unclear": "unsure"}
  assert m["kappa"] == pytest.approx(cohen_kappa_score([votes[o] for o in outcomes], truth))


def _write_run(root: pathlib.Path, ratings: dict, kinds=("clean_guided", "search_latent")):
  items = [{"id": f"i{n:04d}", "image": f"images/i{n:04d}.png", "prompt": "a red circle",
            "source": {"kind": kinds[n % len(kinds)]}} for n in range(40)]
  (root / "items.json").write_text(json.dumps(
      {"format": "jaxdiffattack.rating_items/1", "run_id": "toy_v1", "items": items}))
  for rater, verdicts in ratings.items():
    (root / f"ratings_{rater}.json").write_text(json.dumps(
        {"format": cal.RATING_FORMAT, "run_id": "toy_v1", "rater": rater, "method": "test",
         "created": "2026-12-06T00:00:00Z",
         "ratings": [{"item": i, "verdict": v, "note": "", "time": 0} for i, v in verdicts]}))


def test_split_is_fixed_stratified_and_disjoint(tmp_path):
  rng = np.random.default_rng(1)
  ids = [f"i{n:04d}" for n in range(40)]
  a = [(i, str(rng.choice(["yes", "no", "unsure"], p=[0.6, 0.3, 0.1]))) for i in ids]
  b = [(i, v if rng.uniform() < 0.8 else "unsure") for i, v in a]
  _write_run(tmp_path, {"A": a, "B": b})
  first = cal.make_split(tmp_path)
  again = cal.make_split(tmp_path)
  assert first == again   # seeded: the same split every time
  tune, held = set(first["tune"]), set(first["heldout"])
  assert not tune & held
  votes = {r: dict(v) for r, v in (("A", a), ("B", b))}
  agreed = {i for i in ids if cal.consensus({r: votes[r][i] for r in votes}) is not None}
  assert tune | held == agreed
  assert set(first["no_consensus"]) == set(ids) - agreed
  # Each (kind, consensus) stratum is split in half (the tuning part gets the odd one).
  items = {it["id"]: it for it in json.loads((tmp_path / "items.json").read_text())["items"]}
  for kind in ("clean_guided", "search_latent"):
    for verdict in ("yes", "no"):
      stratum = [i for i in agreed if items[i]["source"]["kind"] == kind
                 and votes["A"][i] == verdict]
      n_tune = len([i for i in stratum if i in tune])
      assert n_tune == (len(stratum) + 1) // 2


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(run_id="other"), "run_id"),
    (lambda r: r["ratings"].append(dict(r["ratings"][0])), "rated twice"),
    (lambda r: r["ratings"].append({"item": "nope", "verdict": "yes"}), "unknown item"),
    (lambda r: r["ratings"][0].update(verdict="maybe"), "verdict"),
])
def test_bad_rating_files_are_one_line_errors(tmp_path, change, message):
  _write_run(tmp_path, {"A": [("i0000", "yes")], "B": [("i0000", "yes")]})
  path = tmp_path / "ratings_B.json"
  r = json.loads(path.read_text())
  change(r)
  path.write_text(json.dumps(r))
  with pytest.raises(SystemExit, match=message):
    cal.load(tmp_path)
