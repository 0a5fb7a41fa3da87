"""World 2 through the same code as every other model (issue #23, "Done when" 1): the `world2`
alias of `models.hub` (and its one-line error when the assets are missing), world 2's scene
oracle as the image judge "world2_oracle" (on rendered scenes), and every job's `world2,smoke`
variant end to end against the session's smoke export (tests/conftest.py `world2_smoke`)."""
import csv
import importlib.util
import json
import pathlib

import numpy as np
import pytest

from jaxdiffattack import judges
from jaxdiffattack import labels as labels_lib
from jaxdiffattack import models
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.models import hub
from jaxdiffattack.models import vision
from jaxdiffattack.world2 import oracle
from jaxdiffattack.world2 import render
from jaxdiffattack.world2 import scene

_ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE = 64
KINDS = ("sd", "clip", "vit", "resnet", "robust", "evaluator")


def _config(name, arg):
  spec = importlib.util.spec_from_file_location(f"w2_{name}", _ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _scene(seed, layout, names, size="medium"):
  return scene.sample_scene(np.random.default_rng(seed), layout=layout,
                            classes=[scene.CLASS2ID[n] for n in names], relation=None,
                            size=size, texture="flat", background="plain")


def _image(spec):
  return render.render(spec, SIZE).astype(np.float64) / 255.0


# ------------------------------------------------------------------------------ loading ---
def test_missing_assets_is_one_line_naming_the_export_command(tmp_path, monkeypatch):
  monkeypatch.setenv(hub.WORLD2_ENV, str(tmp_path / "nothing"))
  for load in (lambda: models.load_stable_diffusion("world2"),
               lambda: vision.load_clip("world2"),
               lambda: vision.load_image_classifier("world2", "evaluator")):
    with pytest.raises(models.ModelNotFoundError) as e:
      load()
    message = str(e.value)
    assert "\n" not in message
    assert "python launch/train_world2.py" in message and "export.to_assets=True" in message
    assert hub.WORLD2_ENV in message and str(tmp_path / "nothing") in message


def test_world2_label_set_and_templates_parse_back_to_each_class():
  from jaxdiffattack.world2 import captions  # pylint: disable=g-import-not-at-top
  label_set = labels_lib.get_label_set("world2")
  assert label_set.names == scene.CLASSES and len(label_set) == scene.NUM_CLASSES
  for template in ("world2", "world2_long"):
    (t,) = labels_lib.get_templates(template)
    for i, name in enumerate(label_set.names):
      facts = captions.parse(t.format(name))
      assert [(g.cls, g.count) for g in facts.groups] == [(i, 1)]
  short, long = (captions.num_tokens(labels_lib.get_templates(t)[0].format("red circle"))
                 for t in ("world2", "world2_long"))
  assert short <= 9 and long >= 40
  assert labels_lib.prompt_class("two blue rounded squares left of a red star",
                                 label_set.names) == "blue rounded square"
  with pytest.raises(ConfigError, match="config.prompts entry 'a dog' names no class"):
    labels_lib.prompt_class("a dog", label_set.names, key="prompts")


# -------------------------------------------------------------------------------- judge ---
def test_world2_oracle_judge_on_rendered_scenes():
  """A correct scene holds; another object drawn is a failure whose reason names it; touching
  objects (unreadable) are unclear, never a failure; every field equals the oracle's own
  reading (`world2.oracle.judge`)."""
  correct = _image(_scene(6, "single", ["red circle"]))
  pair = _image(_scene(13, "pair", ["red circle", "blue square"]))
  spec = _scene(13, "pair", ["red square", "blue circle"], size="large")
  a, b = spec.objects
  touching = _image(spec._replace(objects=(a, b._replace(cx=a.cx + 0.5 * a.radius, cy=a.cy))))
  images = np.stack([correct, pair, touching, np.full_like(correct, 0.5)])
  labels = ["red circle", "red circle", "red square", "green star"]
  prompts = ["a picture of a red circle", "a red circle", "a red square and a blue circle",
             "a green star"]
  judge = judges.image_judge(judges.WORLD2_ORACLE)
  v = judge.fn(images, labels, False, prompts)
  own = oracle.judge(images, prompts)
  np.testing.assert_array_equal(v.failure, [o.verdict == "violated" for o in own])
  np.testing.assert_array_equal(v.unclear, [o.verdict == "unclear" for o in own])
  assert v.failure.tolist() == [False, True, False, True]
  assert v.unclear.tolist() == [False, False, True, False]
  assert v.reason[0] == "holds" and v.pred[0] == "red circle"
  assert v.reason[1].startswith("extra:") and "blue square" in v.reason[1]
  assert v.pred[1] == "red circle"                  # the caption's first object is drawn
  assert v.reason[2] == own[2].reason and v.pred[2] is None   # nothing read
  assert v.reason[3] == "object: no green star; drawn: nothing" and v.pred[3] is None
  assert np.isnan(v.confidence).all() and np.isnan(v.margin).all()
  # The same images made for the pair's caption: it holds; targeted, a holding caption fails.
  both = judge.fn(images[1:2], ["red circle"], False, ["a red circle and a blue square"])
  assert not both.failure[0] and both.reason == ("holds",)
  assert judge.fn(images[:1], ["red circle"], True, ["a red circle"]).failure.tolist() == [True]
  # Without prompts it judges "a <label>".
  plain = judge.fn(images[:2], labels[:2], False)
  assert plain.failure.tolist() == [False, True]
  # A drawn near neighbour: the pred is what is drawn instead.
  other = judge.fn(images[:1], ["crimson circle"], False, ["a crimson circle"])
  assert other.pred == ("red circle",) and other.reason[0] == (
      "object: no crimson circle; drawn: red circle")


def test_world2_oracle_scores_round_trip_through_judges():
  """As a job stores it: scores (label-set indices, reason kinds) → `Judges.read` → records."""
  correct = _image(_scene(6, "single", ["red circle"]))
  pair = _image(_scene(13, "pair", ["red circle", "blue square"]))
  names = labels_lib.class_names("world2")
  label = names.index("red circle")
  reader = judges.Judges((judges.WORLD2_ORACLE,), {}, names)
  scores = reader.image_scores(np.stack([correct, pair]), np.array([label, label]),
                               ["a red circle", "a red circle"])
  assert scores["world2_oracle/pred"].tolist() == [label, label]
  assert scores["world2_oracle/reason"].tolist() == [
      oracle.REASON_KINDS.index("holds"), oracle.REASON_KINDS.index("extra")]
  records = judges.records_of(reader, scores)
  assert records[0]["world2_oracle"] == {"pred": "red circle", "confidence": None,
                                         "failure": False, "unclear": False,
                                         "reason": "holds"}
  assert records[1]["world2_oracle"]["failure"] is True
  assert records[1]["world2_oracle"]["reason"] == (
      "extra fact (read red circle; made for red circle)")
  with pytest.raises(Exception, match="2 labels but 1 prompts"):
    reader.image_scores(np.stack([correct, pair]), np.array([label, label]), ["a red circle"])


def test_world2_oracle_outside_world2_is_a_config_error():
  from jaxdiffattack import scoring  # pylint: disable=g-import-not-at-top
  synthetic = scoring.synthetic_scoring()
  with pytest.raises(ConfigError, match="world 2's scene oracle.*label_set='world2'"):
    judges.make_judges(("world2_oracle",), synthetic, ("red circle",))


# ------------------------------------------------------------------------- jobs (smoke) ---
def _jsonl(path):
  return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


def _check_record(record):
  """A world2_oracle record: failure and unclear exclusive, a reason for each."""
  assert set(record) == {"pred", "confidence", "failure", "unclear", "reason"}
  assert not (record["failure"] and record["unclear"])
  assert record["pred"] is None or record["pred"] in scene.CLASSES
  if record["failure"] or record["unclear"]:
    assert record["reason"] and record["reason"] != "holds"
  else:
    assert record["reason"] == "holds"


@pytest.mark.slow
def test_world2_alias_loads_every_kind_of_the_export(world2_assets):
  for kind in KINDS:
    assert hub.resolve("world2", kind) == (world2_assets / kind).resolve()
  sd, params = models.load_stable_diffusion("world2")
  _, direct = models.load_stable_diffusion(str(world2_assets / "sd"))
  np.testing.assert_array_equal(params["unet"]["conv_in"]["kernel"],
                                direct["unet"]["conv_in"]["kernel"])
  assert sd.path == (world2_assets / "sd").resolve()
  from jaxdiffattack import objectives  # pylint: disable=g-import-not-at-top
  scoring = objectives.build(objectives.default_config("world2"))
  assert {s.name for s in scoring.roles["surrogate"].classifiers} == {
      "world2_vit", "world2_resnet", "world2_robust", "world2_clip"}
  (evaluator,) = scoring.roles["evaluator"].classifiers
  assert evaluator.model.model_type == "regnet"
  assert evaluator.output_names == scene.CLASSES
  # Every world-2 classifier's exported processor gives the input its training saw.
  from jaxdiffattack import scorers  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.world2 import train  # pylint: disable=g-import-not-at-top
  size = sd.image_size
  images = np.random.default_rng(0).integers(0, 256, (2, size, size, 3)).astype(np.uint8)
  trained = np.transpose(np.asarray(train.to_pixels(images)), (0, 2, 3, 1))
  for member in [*scoring.roles["surrogate"].classifiers, evaluator]:
    if member.spec.type == "classifier":
      np.testing.assert_allclose(np.asarray(scorers.pixels(member, images / 255.0)), trained,
                                 atol=1e-5, err_msg=member.name)


@pytest.mark.slow
def test_generate_world2_smoke(world2_assets, tmp_path):
  from jaxdiffattack import generate  # pylint: disable=g-import-not-at-top
  config = _config("generate", "world2,smoke")
  assert config.prompts[1] == labels_lib.WORLD2_LONG.format("red circle")
  rows = generate.run(config, str(tmp_path))
  assert len(rows) == 2 and (tmp_path / "grid.png").is_file()
  for row in _jsonl(tmp_path / "results.jsonl"):
    _check_record(row["judges"]["world2_oracle"])
    reason = row["judges"]["world2_oracle"]["reason"]
    assert reason == "holds" or reason.split(":")[0] in oracle.FACT_KINDS


@pytest.mark.slow
def test_sweep_world2_smoke(world2_assets, tmp_path):
  from jaxdiffattack import sweep  # pylint: disable=g-import-not-at-top
  config = _config("shift_sweep", "world2,smoke")
  assert config.judges == ("evaluator", "world2_oracle")
  out = sweep.run(config, str(tmp_path))
  members = out["members"]
  assert len(members) == 3 * 6    # 3 labels × (clean + UMS, RMS, SDS, MS, PAS)
  with open(tmp_path / "members.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert {float(r["world2_oracle_top1"]) for r in rows} <= {0.0, 1.0}
  assert all(float(r["world2_oracle_top1"]) + float(r["world2_oracle_unclear"]) <= 1
             for r in rows)
  with open(tmp_path / "results.csv", newline="") as f:
    metrics = {r["metric"] for r in csv.DictReader(f)}
  assert {"top1", "world2_oracle_top1", "world2_oracle_unclear"} <= metrics
  captions = json.loads(next((tmp_path / "grids").glob("*_ums.json")).read_text())
  assert "world2_oracle:" in json.dumps(captions)
  assert (tmp_path / "report.md").is_file() and (tmp_path / "index.html").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["latent_search", "embedding_search", "token_search",
                                  "prompt_search"])
def test_search_world2_smoke(world2_assets, tmp_path, name):
  from jaxdiffattack import search  # pylint: disable=g-import-not-at-top
  config = _config(name, "world2,smoke")
  assert config.model == "world2" and "world2_oracle" in config.judges
  out = search.run(config, str(tmp_path))
  rows = _jsonl(tmp_path / "results.jsonl")
  assert len(rows) == 2 * 2       # 2 targets × (the strategy, random)
  for row in rows:
    _check_record(row["clean"]["judges"]["world2_oracle"])
    assert row["clean"]["judges"]["world2_oracle"]["reason"] == "holds" or (
        row["clean"]["judges"]["world2_oracle"]["reason"].split(" ")[0] in oracle.FACT_KINDS)
    for failure in row["failures"]:
      _check_record(failure["judges"]["world2_oracle"])
  summary = json.loads((tmp_path / "summary.json").read_text())
  for entry in summary["methods"].values():
    assert "world2_oracle" in entry["by_judge"]
    assert entry["oracle_confirmed_kept"] is not None
  assert out["rows"] and (tmp_path / "report.md").is_file()


@pytest.mark.slow
def test_analysis_world2_smoke(world2_assets, tmp_path):
  from jaxdiffattack.analysis import run as analysis  # pylint: disable=g-import-not-at-top
  config = _config("analysis", "world2,smoke")
  assert config.finder == "world2_oracle"
  analysis.run(config, str(tmp_path))
  for stage in config.analyses:
    assert list(tmp_path.glob(f"{stage}*.json")), stage
  assert (tmp_path / "report.md").is_file()


@pytest.mark.slow
def test_attack_world2_smoke(world2_assets, tmp_path):
  from jaxdiffattack.attacks import job  # pylint: disable=g-import-not-at-top
  config = _config("atm", "world2,smoke")
  assert config.prompt_sets.long == "world2_long"
  out = job.run(config, str(tmp_path))
  rows = _jsonl(tmp_path / "results.jsonl")
  assert {r["set"] for r in rows} == {"short", "long"}
  assert any(labels_lib.WORLD2_LONG.format("red circle") == r["prompt"] for r in rows)
  assert out["summary"] and (tmp_path / "summary.json").is_file()
  # World 2's scene oracle reads every clean image: a class it read, or unclear (pred None).
  for r in rows:
    got = r["clean"]["world2_oracle"]
    assert set(got) >= {"pred", "confidence", "unclear"}, got
    assert got["unclear"] or got["pred"] in labels_lib.get_label_set("world2").names, got


@pytest.mark.slow
def test_census_world2_smoke(world2_assets, tmp_path):
  from jaxdiffattack import census  # pylint: disable=g-import-not-at-top
  config = _config("census", "world2,smoke")
  assert config.model == "world2" and config.judges == ("world2_oracle", "evaluator")
  out = census.run(config, str(tmp_path))
  rows = _jsonl(tmp_path / "images.jsonl")
  assert len(rows) == len(out["rows"]) == 2 * 4 * config.seeds_per_prompt
  for row in rows:
    _check_record(row["judges"]["world2_oracle"])
    assert row["judges"]["evaluator"]["pred"] in scene.CLASSES
  for name in ("prompts.csv", "classes.csv", "classes.md", "summary.json", "targets.json",
               "report.md"):
    assert (tmp_path / name).is_file(), name
