"""analysis.brittleness: class-wise tables recombine to the overall figures; displacement of a
synthetic object moved by a known amount, read by the toy oracle; confusion counts."""

import numpy as np
import pytest

from jaxdiffattack.analysis import brittleness
from jaxdiffattack.analysis import objects
from jaxdiffattack.toy import oracle
from jaxdiffattack.toy import world


def _records(seed=0):
  rng = np.random.default_rng(seed)
  classes = ["red circle", "blue star", "green cross"]
  preds = classes + [None]
  out = []
  for alpha in (-0.2, 0.0, 0.2):
    for c in classes:
      for s in range(int(rng.integers(3, 7))):          # unequal n per class
        pred = preds[rng.integers(len(preds))]
        out.append({"shift": "ums" if alpha else "none", "alpha": alpha, "class": c, "seed": s,
                    "pred": pred, "correct": pred == c, "cx": float(rng.uniform(5, 25)),
                    "cy": float(rng.uniform(5, 25))})
  return out


def test_classwise_recombines_to_overall():
  records = _records()
  rows = brittleness.classwise(records)
  for shift, alpha in {(r["shift"], r["alpha"]) for r in records}:
    mine = [r for r in rows if (r["shift"], r["alpha"]) == (shift, alpha)]
    overall = [r for r in mine if r["class"] == brittleness.ALL]
    per_class = [r for r in mine if r["class"] != brittleness.ALL]
    assert len(overall) == 1 and len(per_class) == 3
    overall = overall[0]
    # The overall row is the sum of the class rows; its accuracy the n-weighted class mean.
    assert overall["n"] == sum(r["n"] for r in per_class)
    assert overall["hits"] == sum(r["hits"] for r in per_class)
    assert overall["unclear"] == sum(r["unclear"] for r in per_class)
    np.testing.assert_allclose(
        overall["accuracy"], sum(r["accuracy"] * r["n"] for r in per_class) / overall["n"])
    # ... and equals the raw records' accuracy.
    raw = [r for r in records if (r["shift"], r["alpha"]) == (shift, alpha)]
    np.testing.assert_allclose(overall["accuracy"], np.mean([r["correct"] for r in raw]))


def test_classwise_intervals_wilson_per_class_and_clustered_by_class_overall():
  from statsmodels.stats import proportion  # pylint: disable=g-import-not-at-top
  from statsmodels.stats import sandwich_covariance  # pylint: disable=g-import-not-at-top
  import statsmodels.api as sm  # pylint: disable=g-import-not-at-top
  records = _records(3)
  rows = brittleness.classwise(records)
  for r in rows:
    if r["class"] != brittleness.ALL:
      want = proportion.proportion_confint(r["hits"], r["n"], method="wilson")
      np.testing.assert_allclose([r["low"], r["high"]], want, atol=1e-9)
      assert r["interval"] == "wilson"
      continue
    raw = [x for x in records if (x["shift"], x["alpha"]) == (r["shift"], r["alpha"])]
    y = np.array([float(x["correct"]) for x in raw])
    ids = np.unique([x["class"] for x in raw], return_inverse=True)[1]
    if r["interval"] != "cluster-robust":
      continue
    fit = sm.OLS(y, np.ones(len(y))).fit()
    se = np.sqrt(sandwich_covariance.cov_cluster(fit, ids)[0, 0])
    np.testing.assert_allclose([r["low"], r["high"]],
                               [max(0.0, y.mean() - 1.959964 * se),
                                min(1.0, y.mean() + 1.959964 * se)], rtol=1e-4)
  assert any(r["interval"] == "cluster-robust" for r in rows)


def test_confusion_counts_every_member_once():
  records = _records(1)
  rows = brittleness.confusion(records)
  assert sum(r["count"] for r in rows) == len(records)
  for c in ("red circle", "blue star"):
    n = sum(r["count"] for r in rows if r["class"] == c and r["alpha"] == 0.2)
    assert n == sum(1 for r in records if r["class"] == c and r["alpha"] == 0.2)
    hits = sum(r["count"] for r in rows if r["class"] == c and r["pred"] == c)
    assert hits == sum(r["correct"] for r in records if r["class"] == c)


def _scene(cx, cy, label="red circle"):
  bg = world.BackgroundSpec("grey", (128.0, 128.0, 128.0), (128.0, 128.0, 128.0), 0.0, 0.0, 0)
  obj = world.ObjectSpec(world.LABEL2ID[label], cx, cy, 6.0, 0.0, world.COLOUR_RGB["red"])
  return world.render(world.SceneSpec(bg, (obj,)))


def test_displacement_of_a_known_shift_read_by_the_oracle():
  # The same object drawn at x = 12, then moved 3 px right (α = +1) and 2 px left and 1 px
  # down (α = −1); two seeds at different positions.
  starts = {0: (12.0, 14.0), 1: (17.0, 11.0)}
  moves = {-1.0: (-2.0, 1.0), 0.0: (0.0, 0.0), 1.0: (3.0, 0.0)}
  images, meta = [], []
  for seed, (x, y) in starts.items():
    for alpha, (dx, dy) in moves.items():
      images.append(_scene(x + dx, y + dy))
      meta.append((seed, alpha))
  finder = objects.oracle_finder(None, None)
  _, found = finder(np.stack(images), None, None, [[objects.phrase("red circle")]] * len(images))
  records = [{"shift": "ums" if a else "none", "alpha": a, "class": "red circle", "seed": s,
              "cx": f[0].centroid[0], "cy": f[0].centroid[1]} for (s, a), f in zip(meta, found)]
  assert all(f[0].correct for f in found)
  rows = {r["alpha"]: r for r in brittleness.displacement(records)}
  assert set(rows) == {-1.0, 1.0}
  for alpha, (dx, dy) in moves.items():
    if alpha:
      assert rows[alpha]["n"] == 2
      np.testing.assert_allclose([rows[alpha]["dx"], rows[alpha]["dy"]], [dx, dy], atol=0.1)
      np.testing.assert_allclose(rows[alpha]["dist"], np.hypot(dx, dy), atol=0.1)


def test_displacement_standard_errors_are_clustered_by_class_against_statsmodels():
  """Five classes × four seeds whose moves share a per-class offset: the se is the CR1
  cluster-robust one of statsmodels (OLS on a constant, clusters = classes), wider than the
  naive sd/√n here; one class falls back to sd/√n."""
  from statsmodels.stats import sandwich_covariance  # pylint: disable=g-import-not-at-top
  import statsmodels.api as sm  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  records, moves = [], []
  for c in range(5):
    offset = rng.normal(0, 2.0, 2)
    for s in range(4):
      x, y = rng.uniform(8, 24, 2)
      dx, dy = 1.0 + offset + rng.normal(0, 0.3, 2)
      records += [{"shift": "none", "alpha": 0.0, "class": f"c{c}", "seed": s, "cx": x, "cy": y},
                  {"shift": "ums", "alpha": 0.5, "class": f"c{c}", "seed": s, "cx": x + dx,
                   "cy": y + dy}]
      moves.append((x + dx - x, y + dy - y, c))
  (row,) = brittleness.displacement(records)
  moves = np.array(moves)
  assert (row["n"], row["classes"], row["se"]) == (20, 5, "cluster-robust by class")
  for i, name in enumerate(("dx", "dy")):
    fit = sm.OLS(moves[:, i], np.ones(20)).fit()
    se = np.sqrt(sandwich_covariance.cov_cluster(fit, moves[:, 2].astype(int))[0, 0])
    assert row[name] == pytest.approx(moves[:, i].mean())
    assert row[f"{name}_se"] == pytest.approx(se, rel=1e-9)
    assert se > 1.5 * moves[:, i].std(ddof=1) / np.sqrt(20)    # the seeds are not independent
  (one,) = brittleness.displacement([r for r in records if r["class"] == "c0"])
  assert one["se"] == "sd/sqrt(n)" and one["dx_se"] == pytest.approx(
      moves[:4, 0].std(ddof=1) / 2)


def test_displacement_leaves_out_members_without_an_object():
  records = [{"shift": "none", "alpha": 0.0, "class": "c", "seed": 0, "cx": 5.0, "cy": 5.0},
             {"shift": "ums", "alpha": 0.5, "class": "c", "seed": 0, "cx": np.nan, "cy": np.nan},
             {"shift": "ums", "alpha": 0.5, "class": "c", "seed": 1, "cx": 9.0, "cy": 9.0}]
  assert brittleness.displacement(records) == []        # seed 1 has no α = 0 record
  assert oracle.read(np.full((1, 32, 32, 3), 0.5))[0].objects == ()


def test_classwise_figure_is_small_multiples_naming_shift_and_judge():
  """One panel per class (shared axes), the class's accuracy from
  `brittleness.classwise` against α with the clean cell at 0 and the overall accuracy beside it,
  x axes naming the shift, y axes the judge; rows without a shifted cell are a one-line error."""
  from jaxdiffattack.analysis import report  # pylint: disable=g-import-not-at-top
  rows = brittleness.classwise(_records())
  fig = report.classwise_figure(rows, "oracle")
  axes = [ax for ax in fig.get_axes() if ax.get_visible()]
  assert [ax.get_title() for ax in axes] == ["blue star", "green cross", "red circle"]
  assert {ax.get_xlabel() for ax in axes} == {"UMS α"}
  assert axes[0].get_ylabel() == "class drawn (oracle)"
  acc = {(r["shift"], r["alpha"], r["class"]): r["accuracy"] for r in rows}
  for ax in axes:
    overall, mine = ax.get_lines()
    np.testing.assert_allclose(mine.get_xdata(), [-0.2, 0.0, 0.2])
    np.testing.assert_allclose(mine.get_ydata(), [acc[("ums", -0.2, ax.get_title())],
                                                  acc[("none", 0.0, ax.get_title())],
                                                  acc[("ums", 0.2, ax.get_title())]])
    np.testing.assert_allclose(overall.get_ydata(), [acc[("ums", -0.2, "all")],
                                                     acc[("none", 0.0, "all")],
                                                     acc[("ums", 0.2, "all")]])
    assert ax.get_shared_y_axes().joined(ax, axes[0])
  clean_only = [r for r in rows if r["shift"] == "none"]
  with pytest.raises(ValueError, match="need a shifted cell"):
    report.classwise_figure(clean_only, "oracle")


def test_speed_figure_is_small_multiples_with_the_threshold():
  """One panel per class (shared axes, the 6th cell of a 5-wide grid hidden), its mean curve over
  seeds against the 1-based step, the mean over every class beside it, the threshold drawn; no
  curves is a one-line error."""
  from jaxdiffattack.analysis import report  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  classes = ["c0", "c1", "c2", "c3", "c4", "c5"]
  singles = [{"class": c, "curve": list(rng.random(7)), "seed": s} for c in classes
             for s in range(3)]
  fig = report.speed_figure(singles, 0.9)
  axes = [ax for ax in fig.get_axes() if ax.get_visible()]
  assert len(fig.get_axes()) == 10 and [ax.get_title() for ax in axes] == classes
  overall = np.mean([r["curve"] for r in singles], axis=0)
  for ax in axes:
    mean_all, mine, thr = ax.get_lines()
    np.testing.assert_allclose(mine.get_xdata(), np.arange(1, 8))
    np.testing.assert_allclose(mine.get_ydata(), np.mean(
        [r["curve"] for r in singles if r["class"] == ax.get_title()], axis=0))
    np.testing.assert_allclose(mean_all.get_ydata(), overall)
    np.testing.assert_allclose(thr.get_ydata(), [0.9, 0.9])
  assert axes[0].get_ylabel() == "SSIM(predicted x0, final)"
  assert axes[-1].get_xlabel() == "sampler step"
  with pytest.raises(ValueError, match="no single-object curves"):
    report.speed_figure([], 0.9)
