"""Judges and verdict rules (jaxdiffattack.judges): each rule on constructed readings, readings of
the synthetic scoring against its NumPy statement, the toy oracle on rendered scenes, the
`judges` record format, captions, a scorer named as a judge becoming a role, and one-line
config errors."""

import json

import jax
import numpy as np
import pytest

from jaxdiffattack import objectives
from jaxdiffattack import judges
from jaxdiffattack import scorers
from jaxdiffattack import scoring
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.errors import UserError
from jaxdiffattack.toy import world

import tiny_vision

NAMES = ("cube", "ball", "cone")


def _reading(failure, margin=None, pred=None, unclear=None):
  failure = np.asarray(failure, bool)
  n = len(failure)
  return judges.Verdict(pred=tuple(pred or [None] * n), confidence=np.full(n, 0.5),
                        failure=failure,
                        margin=np.full(n, np.nan) if margin is None else np.asarray(margin, float),
                        unclear=np.zeros(n, bool) if unclear is None else np.asarray(unclear))


READINGS = {
    "evaluator": _reading([1, 1, 0, 1, 0], margin=[-0.1, -3.0, 2.0, -1.0, 0.5]),
    "toy_resnet": _reading([1, 0, 0, 1, 1], margin=[-2.0, 4.0, 1.0, -0.2, -1.0]),
    "oracle": _reading([0, 1, 0, 1, 0], unclear=[1, 0, 0, 0, 0]),
}


def test_each_verdict_rule_on_constructed_readings():
  rule = judges.make_rule
  np.testing.assert_array_equal(rule("top1_miss")(READINGS), [1, 1, 0, 1, 0])
  np.testing.assert_array_equal(rule("top1_miss", judge="toy_resnet")(READINGS), [1, 0, 0, 1, 1])
  # A confident miss: the judge misses AND its margin of the class is below −m.
  np.testing.assert_array_equal(rule("confident_miss", margin=0.5)(READINGS), [0, 1, 0, 1, 0])
  np.testing.assert_array_equal(rule("confident_miss", margin=2.0)(READINGS), [0, 1, 0, 0, 0])
  np.testing.assert_array_equal(rule("confident_miss", margin=0.0)(READINGS), [1, 1, 0, 1, 0])
  np.testing.assert_array_equal(rule("agree", judges=("evaluator", "toy_resnet"))(READINGS),
                                [1, 0, 0, 1, 0])
  np.testing.assert_array_equal(
      rule("agree", judges=("evaluator", "toy_resnet", "oracle"))(READINGS), [0, 0, 0, 1, 0])
  # The oracle's unclear image (member 0) is not its failure.
  np.testing.assert_array_equal(rule("oracle")(READINGS), [0, 1, 0, 1, 0])
  # Targeted: a failure is the judged class being top-1, so its margin is above +m.
  targeted = {"evaluator": _reading([1, 1, 0], margin=[0.3, 2.5, -1.0])}
  np.testing.assert_array_equal(rule("confident_miss", margin=1.0)(targeted), [0, 1, 0])
  assert rule("agree", judges=("evaluator", "oracle")).needs() == ("evaluator", "oracle")


def test_rule_and_judge_errors_are_one_line():
  cases = [
      (lambda: judges.make_rule("majority"), "config.criterion.verdict='majority' is invalid"),
      (lambda: judges.make_rule("confident_miss", margin=-1), "config.criterion.margin=-1"),
      (lambda: judges.make_rule("agree", judges=("evaluator",)), "config.criterion.agree="),
      (lambda: judges.check_rule(judges.make_rule("oracle"),
                                 judges.Judges(("evaluator",), {}, NAMES)),
       r"reads judge\(s\) \['oracle'\] that are not in config.judges"),
      (lambda: judges.make_judges((), scoring.synthetic_scoring(), NAMES),
       "config.judges=\\(\\) is invalid"),
      (lambda: judges.make_judges(("evaluator", "oracle"), scoring.synthetic_scoring(), NAMES),
       "config.judges names 'oracle', the toy world's oracle, but the label set is None"),
      (lambda: judges.make_judges(("surrogate",), scoring.synthetic_scoring(), NAMES),
       "config.judges names judge 'surrogate' but the scoring does not return"),
  ]
  for fn, message in cases:
    with pytest.raises(ConfigError, match=message) as info:
      fn()
    assert "\n" not in str(info.value)


def test_synthetic_scoring_read_by_its_judge():
  """The synthetic evaluator's reading (pred = brightest channel, failure = it is not the
  class's channel) against the NumPy statement; targeted judges flip the failure."""
  s = scoring.synthetic_scoring()
  images = np.random.default_rng(0).random((6, 4, 4, 3)).astype(np.float32)
  labels = np.array([0, 1, 2, 0, 1, 2], np.int32)
  scores = {k: np.asarray(v) for k, v in s(images, s.aux(labels=labels)).items()}
  means = images.mean(axis=(1, 2))
  for targeted in (False, True):
    j = judges.make_judges(("evaluator",), s, NAMES, targeted=targeted)
    r = j.read(scores)["evaluator"]
    assert r.pred == tuple(NAMES[i] for i in means.argmax(1))
    hit = means.argmax(1) == labels % 3
    np.testing.assert_array_equal(r.failure, hit if targeted else ~hit)
    np.testing.assert_allclose(r.margin, scores["surrogate/margin"])
    records = judges.records_of(j, scores)
    assert [rec["evaluator"]["failure"] for rec in records] == list(r.failure)
    json.dumps(records)
    # The same role as a `Judge` of images and the label names they were made for.
    v = judges.model_judge(s, "evaluator", NAMES)(images, [NAMES[l] for l in labels], targeted)
    assert v.pred == r.pred
    np.testing.assert_array_equal(v.failure, r.failure)
    np.testing.assert_allclose(v.confidence, r.confidence)
  with pytest.raises(UserError, match=r"judge 'evaluator': labels \['dog'\] are not classes"):
    judges.model_judge(s, "evaluator", NAMES)(images[:1], ["dog"], False)


def test_a_nonfinite_member_is_unclear_and_never_a_failure():
  """A member whose scores are NaN (a model overflowed: `sampler.nonfinite_as_nan`) has no
  class, is unclear and is no failure for either direction of the verdict; the others read as
  before."""
  s = scoring.synthetic_scoring()
  images = np.random.default_rng(1).random((4, 4, 4, 3)).astype(np.float32)
  labels = np.array([0, 1, 2, 0], np.int32)
  scores = {k: np.asarray(v) for k, v in s(images, s.aux(labels=labels)).items()}
  for k in ("evaluator/top1_hit", "evaluator/confidence", "evaluator/margin"):
    scores[k] = scores[k].astype(np.float64)
    scores[k][2] = np.nan
  hit = images.mean(axis=(1, 2)).argmax(1) == labels % 3
  for targeted in (False, True):
    r = judges.make_judges(("evaluator",), s, NAMES, targeted=targeted).read(scores)["evaluator"]
    assert r.pred[2] is None and r.unclear.tolist() == [False, False, True, False]
    expected = (hit if targeted else ~hit) & np.array([1, 1, 0, 1], bool)
    np.testing.assert_array_equal(r.failure, expected)
    assert not judges.make_rule("top1_miss")({"evaluator": r})[2]


def _scene(label, background=None):
  bg = background or world.BackgroundSpec("grey", (128.0,) * 3, (200.0,) * 3, 0.7, 0.0, 3)
  obj = world.ObjectSpec(world.LABEL2ID[label], 16.0, 16.0, 9.0, 0.1,
                         world.COLOUR_RGB[label.split()[0]])
  return world.render(world.SceneSpec(bg, (obj,) if label else ())) / 255.0


def test_oracle_scores_on_rendered_scenes_and_record_format():
  """The oracle (v2) reads a rendered red circle: judged as "red circle" it holds, as "blue
  star" it is violated (another colour); a blank background is a failure of every label (no
  object), so is uniform noise (v1: unclear; a person sees no object either); an off-palette
  (purple) circle is unclear (no failure); targeted, the failure is the judged class holding.
  Records and captions carry the oracle's reason."""
  red = _scene("red circle")
  blank = world.render_background(
      world.BackgroundSpec("grey", (128.0,) * 3, (200.0,) * 3, 0.7, 0.0, 3)) / 255.0
  noise = np.random.default_rng(0).random((32, 32, 3))
  purple = world.render(world.SceneSpec(
      world.BackgroundSpec("grey", (128.0,) * 3, (200.0,) * 3, 0.7, 0.0, 3),
      (world.ObjectSpec(world.LABEL2ID["red circle"], 16.0, 16.0, 9.0, 0.1, (150, 40, 200)),)
  )) / 255.0
  images = np.stack([red, red, blank, purple, noise]).astype(np.float32)
  label_names = world.LABELS
  labels = np.array([world.LABEL2ID[n] for n in
                     ("red circle", "blue star", "red circle", "red circle", "red circle")])
  j = judges.Judges(("oracle",), {}, label_names)
  scores = j.image_scores(images, labels)
  assert set(scores) == set(judges.ORACLE_SCORES)
  r = j.read(scores)["oracle"]
  assert r.pred[:3] == ("red circle", "red circle", None)
  np.testing.assert_array_equal(r.failure, [False, True, True, False, True])
  np.testing.assert_array_equal(r.unclear, [False, False, False, True, False])
  assert r.reason[:3] == ("holds", "another colour (red, not blue)", "no object")
  assert r.reason[3].startswith("unclear") and r.reason[4] == "no object"
  assert np.isfinite(r.confidence[0]) and np.isnan(r.confidence[3])
  records = judges.records_of(j, scores)
  assert records[1] == {"oracle": {"pred": "red circle", "confidence": records[1]["oracle"][
      "confidence"], "failure": True, "unclear": False,
      "reason": "another colour (red, not blue)"}}
  assert records[3]["oracle"] == {"pred": None, "confidence": None, "failure": False,
                                  "unclear": True, "reason": r.reason[3]}
  json.dumps(records)
  targeted = judges.Judges(("oracle",), {}, label_names, targeted=True).read(
      judges.judge_scores("oracle", images[:2], labels[:2], label_names, targeted=True))["oracle"]
  np.testing.assert_array_equal(targeted.failure, [True, False])
  assert judges.caption(records[1])[0].startswith("oracle: red circle ")
  assert judges.caption(records[1])[0].endswith(" FAIL (another colour (red, not blue))")
  assert judges.caption(records[3]) == [f"oracle: ? ({r.reason[3]})"]
  assert judges.caption(records[0]) == [f"oracle: red circle {r.confidence[0]:.2f}"]
  # Scores stored before oracle v2 (no reason, no label) read with an empty reason.
  old = {k: v for k, v in scores.items() if k not in ("oracle/reason", "oracle/label")}
  assert j.read(old)["oracle"].reason == ("",) * 5


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
  return tiny_vision.build_all_cached(tmp_path_factory)


def test_scorer_named_as_judge_becomes_a_role(dirs):
  """config.judges = (evaluator, toy_resnet, oracle): the evaluator gains the judge objectives,
  toy_resnet becomes a role of its own whose pred / confidence are its own softmax's."""
  config = objectives.with_judge_roles(tiny_vision.fitness_config(dirs),
                                    ("evaluator", "toy_resnet", "oracle"))
  fit = objectives.build(config)
  assert set(fit.roles) == {"surrogate", "evaluator", "toy_resnet"}
  for name in ("evaluator", "toy_resnet"):
    assert {f"{name}/{o}" for o in judges.JUDGE_OBJECTIVES} <= set(fit.names)
  images = np.random.default_rng(1).random((3, 16, 16, 3)).astype(np.float32)
  labels = np.array([0, 5, 19], np.int32)
  scores = {k: np.asarray(v) for k, v in fit(images, fit.aux(
      labels=labels, prompts=[world.caption([int(l)]) for l in labels])).items()}
  resnet = fit.roles["toy_resnet"].classifiers[0]
  logits = np.asarray(jax.jit(scorers.logits, static_argnums=0)(resnet, resnet.params, images))
  probs = np.exp(logits - logits.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  assert judges.make_judges(("evaluator", "toy_resnet", "oracle"), fit).needs_images
  j = judges.make_judges(("evaluator", "toy_resnet"), fit)
  r = j.read(scores)["toy_resnet"]
  by_label = logits[:, resnet.label_map.indices]                  # [3, 20] in label order
  assert r.pred == tuple(world.LABELS[i] for i in by_label.argmax(1))
  np.testing.assert_allclose(r.confidence, probs.max(1), rtol=1e-4)
  np.testing.assert_array_equal(r.failure, by_label.argmax(1) != labels)


# ------------------------------------------------------ a new judge: one function, one line --
def _greenness(images, labels, targeted):
  """A dummy image judge: an image fails when it is not green enough — its green channel's mean
  leads its red's by less than 0.25 (targeted: when it does); confidence = that lead, pred = the
  label when it holds."""
  images = np.asarray(images, np.float64)
  lead = images[..., 1].mean((1, 2)) - images[..., 0].mean((1, 2))
  pale = lead < 0.25
  failure = ~pale if targeted else pale
  return judges.make_verdict([None if f else l for f, l in zip(failure, labels)], lead, failure,
                             reason=["not green enough" if p else "holds" for p in pale])


@pytest.mark.slow
def test_a_registered_image_judge_is_the_searchs_verdict_judge(tiny_sd_dirs, tmp_path,
                                                               monkeypatch):
  """A judge added by one function and one registry line is read by the search end to end: the
  verdict rule reads it, its verdicts are stored, recorded and captioned like the oracle's, and
  every failure the search reports is one by the judge's own rule re-derived from the saved
  image."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import search  # pylint: disable=g-import-not-at-top
  from search_multidevice_worker import tiny_config  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(judges.IMAGE_JUDGES, "greenness",
                      lambda: judges.ImageJudge(_greenness, ("holds", "not green enough")))
  config = tiny_config("latent", tiny_sd_dirs[1])
  config.judges = ("evaluator", "greenness")
  config.criterion.verdict, config.criterion.judge = "top1_miss", "greenness"
  config.num_generations, config.baseline = 3, ""
  search.run(config, tmp_path, scoring=scoring.synthetic_scoring())
  rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
  assert len(rows) == 3
  # Both verdicts occur: some clean images hold, some fail.
  assert {r["clean"]["judges"]["greenness"]["failure"] for r in rows} == {True, False}
  failures = [f for r in rows for f in r["failures"]]
  assert all(r["failures"] and r["success"] for r in rows)   # every target fails the judge
  for r in rows:
    clean = r["clean"]["judges"]["greenness"]
    assert set(clean) == {"pred", "confidence", "failure", "unclear", "reason"}
    assert r["clean"]["verdict"] == clean["failure"]
    assert clean["reason"] == ("not green enough" if clean["failure"] else "holds")
    assert clean["pred"] == (None if clean["failure"] else r["label"])
    for f in r["failures"]:
      entry = f["judges"]["greenness"]
      assert entry["failure"] and entry["pred"] is None and not entry["unclear"]
      assert entry["reason"] == "not green enough" and entry["confidence"] < 0.25
      assert set(f["judges"]) == {"evaluator", "greenness"}
      image = np.asarray(Image.open(tmp_path / f["files"][0]).convert("RGB"), np.float64) / 255
      lead = image[..., 1].mean() - image[..., 0].mean()
      assert abs(lead - entry["confidence"]) < 2 / 255
  line = judges.caption(failures[0]["judges"])[1]
  assert line.startswith("greenness: - ") and line.endswith(" FAIL (not green enough)")
