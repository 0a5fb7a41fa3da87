"""analysis.objects finders on rendered toy scenes with known contents (no sampler).

The classifier finder (the finder for real models) is run with the toy ViT as its classifier on
procedural toy images (99 % top-1 on held-out real toy images) and hand-made attention maps
whose noun token peaks on a known 2×2 latent block; the oracle finder on the same scenes.
"""

import importlib.util
import pathlib

import ml_collections
import numpy as np
import pytest

from jaxdiffattack import models
from jaxdiffattack.analysis import objects
from jaxdiffattack.analysis import run as analysis_run
from jaxdiffattack.toy import world

STEPS, L = 4, 77


def _scene(specs):
  bg = world.BackgroundSpec("grey", (128.0,) * 3, (128.0,) * 3, 0.0, 0.0, 0)
  objs = tuple(world.ObjectSpec(world.LABEL2ID[label], cx, cy, 7.0, 0.0,
                                world.COLOUR_RGB[label.split()[0]]) for label, cx, cy in specs)
  return world.render(world.SceneSpec(bg, objs)).astype(np.float32) / 255.0


def _attention(token_peaks):
  """[1, S, 8, 8, L] maps: each (token, (row, col)) puts most mass on a 2×2 latent block."""
  maps = np.full((1, STEPS, 8, 8, L), 1.0)
  for token, (r, c) in token_peaks:
    maps[0, :, r:r + 2, c:c + 2, token] = 50.0
  return maps / maps.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def finders():
  sd = models.load_stable_diffusion("toy")[0]
  config = ml_collections.ConfigDict({
      "label_set": "toy", "num_steps": STEPS,
      "attention": {"steps": (0.0, 1.0), "iou_fraction": 0.5},
      "scoring": {"kind": "models", "roles": {"evaluator": {"classifiers": ("toy_vit",)}},
                  "objectives": {"evaluator": ("pred", "top5_hit")}, "scorers": {}}})
  return sd, objects.classifier_finder(config, sd), objects.oracle_finder(config, sd)


def test_single_objects(finders):
  sd, classifier, oracle = finders
  labels = ["red circle", "blue star", "green cross"]
  images = np.stack([_scene([(label, 12.0, 20.0)]) for label in labels])
  prompts = [f"a photo of a {label}" for label in labels]
  # "a photo of a red circle": BOS a photo of a red circle → the noun is token 6.
  attention = np.concatenate([_attention([(6, (4, 2))])] * 3)
  phrases = [[objects.phrase(label)] for label in labels]
  preds, found = classifier(images, attention, prompts, phrases)
  assert preds == labels
  for f in found:
    assert f[0].drawn and f[0].correct
    assert f[0].mask.sum() == 64                  # the 2×2 latent block at 4× upsampling
    np.testing.assert_allclose(f[0].centroid, (2 * 4 + 3.5, 4 * 4 + 3.5))
  opreds, ofound = oracle(images, attention, prompts, phrases)
  assert opreds == labels and all(f[0].correct for f in ofound)
  np.testing.assert_allclose(ofound[0][0].centroid, (12.0, 20.0), atol=0.6)
  # Asked about a class that is not drawn: neither finder finds it.
  wrong = [[objects.phrase("yellow square")]] * 3
  _, found = classifier(images, attention, ["a photo of a yellow square"] * 3, wrong)
  assert not any(f[0].correct for f in found)
  _, found = oracle(images, attention, prompts, wrong)
  assert not any(f[0].drawn for f in found)


def test_pairs_and_phrases(finders):
  sd, classifier, oracle = finders
  image = _scene([("red circle", 9.0, 9.0), ("blue star", 23.0, 23.0)])[None]
  prompt = "a photo of a red circle and a blue star"
  attention = _attention([(6, (0, 0)), (10, (5, 5))])
  named = [[objects.phrase("red circle"), objects.phrase("blue star")]]
  _, found = oracle(image, attention, [prompt], named)
  assert [f.correct for f in found[0]] == [True, True]
  _, found = classifier(image, attention, [prompt], named)
  assert [f.drawn for f in found[0]] == [True, True]   # both in the top 5
  assert found[0][0].centroid[0] < 16 < found[0][1].centroid[0]
  assert objects.phrase("great white shark") == ("great white", "shark")
  assert objects.phrase("goldfish").label == "goldfish"


def test_classifier_finder_through_the_job(tmp_path):
  """The real-model path (classifier finder, attention regions) end to end on the toy model."""
  spec = importlib.util.spec_from_file_location(
      "analysis_config", pathlib.Path(__file__).resolve().parent.parent / "configs" / "analysis.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("toy,smoke")
  config.finder = "classifier"
  config.analyses = ("brittleness",)
  config.classes = ("red circle", "blue star")
  config.seeds = 1
  config.unit = 4
  config.brittleness.alphas = (0.6,)
  data = analysis_run.run(config, str(tmp_path))["brittleness"]
  assert len(data["records"]) == 4
  for r in data["records"]:
    assert r["pred"] in world.LABELS and r["correct"] == (r["pred"] == r["class"])
  clean = [r for r in data["records"] if r["alpha"] == 0.0]
  assert all(r["correct"] for r in clean)            # the toy draws both classes on seed 0
  assert all(np.isfinite([r["cx"], r["cy"]]).all() for r in clean)
  assert (tmp_path / "report.md").exists()
