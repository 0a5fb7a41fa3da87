"""Label sets, templates and label → classifier-output maps."""

import numpy as np
import pytest

from jaxdiffattack import labels
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.toy import world


def test_shipped_label_sets():
  full = labels.imagenet1k()
  assert len(full) == len(set(full.ids)) == len(full.names) == 1000
  assert list(full.ids) == sorted(full.ids) and full.ids[0] == "n01440764"
  assert full.names[:3] == ("tench", "goldfish", "great white shark")
  subset = labels.imagenet100()
  assert len(subset) == len(set(subset.ids)) == 100
  assert list(subset.imagenet_index) == sorted(subset.imagenet_index)
  for label_id, name, index in zip(subset.ids, subset.names, subset.imagenet_index):
    assert full.ids[index] == label_id and full.names[index] == name
  cmc = (labels.DATA_DIR / "imagenet100_cmc_wnids.txt").read_text().split()
  assert sorted(cmc) == list(subset.ids)
  toy = labels.get_label_set("toy")
  assert toy.ids == toy.names == world.LABELS and len(toy) == 20 and toy.ids[0] == "red circle"
  readme = (labels.DATA_DIR / "README.md").read_text()
  for path in labels.DATA_DIR.glob("*.txt"):
    assert path.name in readme


def test_templates_and_prompts():
  imagenet = labels.get_templates("clip_imagenet")
  assert len(imagenet) == 80 and all(t.count("{}") == 1 for t in imagenet)
  assert labels.get_templates("toy") == ("a photo of a {}",) == (world.CANONICAL_TEMPLATE,)
  assert labels.get_templates("toy_all") == world.SINGLE_TEMPLATES
  prompts = labels.class_prompts(labels.toy(), ["a photo of a {}", "a {}"])
  assert prompts[0] == ["a photo of a red circle", "a red circle"] and len(prompts) == 20
  assert labels.get_templates(["x {} y"]) == ("x {} y",)
  with pytest.raises(ConfigError, match="exactly one"):
    labels.get_templates(["no slot"])


def test_unknown_names_are_one_line_errors():
  for call, text in [(lambda: labels.get_label_set("imagenet21k"), "config.labels='imagenet21k'"),
                     (lambda: labels.get_templates("nope"), "templates='nope'")]:
    with pytest.raises(ConfigError, match=text) as info:
      call()
    assert "\n" not in str(info.value)


def test_toy_labels_map_to_a_shuffled_id2label():
  order = np.random.default_rng(0).permutation(20)
  id2label = [world.LABELS[i] for i in order]
  label_map = labels.map_labels(labels.toy(), id2label)
  assert label_map.mode == "name" and label_map.output_ids == tuple(id2label)
  for label, output in enumerate(label_map.indices):
    assert id2label[output] == world.LABELS[label]


def test_missing_label_is_a_one_line_error():
  id2label = [l for l in world.LABELS if l != "blue star"] + ["purple blob"]
  with pytest.raises(ConfigError, match="'blue star' of label set 'toy' is not a class of "
                     "scorer 'x'") as info:
    labels.map_labels(labels.toy(), id2label, model="scorer 'x'")
  assert "\n" not in str(info.value)
  with pytest.raises(ConfigError, match="ambiguous"):
    labels.map_labels(labels.toy(), list(world.LABELS) + ["Red Circle"])


def _lemma_id2label():
  """Hub-style ImageNet id2label: WordNet lemma lists, CLIP's name among the synonyms for most."""
  full = labels.imagenet1k()
  rng = np.random.default_rng(0)
  return [f"{name}, synonym {i}" if rng.random() < 0.8 else f"other name {i}"
          for i, name in enumerate(full.names)]


def test_imagenet_subsets_map_to_1k_classifiers_by_index():
  subset = labels.imagenet100()
  for id2label in (_lemma_id2label(), list(labels.imagenet1k().ids)):
    label_map = labels.map_labels(subset, id2label, model="vit")
    assert label_map.mode == "imagenet" and label_map.output_ids == labels.imagenet1k().ids
    np.testing.assert_array_equal(label_map.indices, subset.imagenet_index)
  shuffled = list(np.random.default_rng(1).permutation(_lemma_id2label()))
  with pytest.raises(ConfigError, match="not in ImageNet-1k order") as info:
    labels.map_labels(subset, shuffled, model="vit")
  assert "\n" not in str(info.value)
  trusted = labels.map_labels(subset, shuffled, mode="index")
  np.testing.assert_array_equal(trusted.indices, subset.imagenet_index)
  with pytest.raises(ConfigError, match="is not a class"):
    labels.map_labels(subset, list(world.LABELS))


def test_label_set_into_label_set():
  label_map = labels.map_label_sets(labels.imagenet100(), labels.imagenet1k())
  np.testing.assert_array_equal(label_map.indices, labels.imagenet100().imagenet_index)
  with pytest.raises(ConfigError, match="'red circle' of label set 'toy'"):
    labels.map_label_sets(labels.toy(), labels.imagenet1k(), model="scorer 'clip'")
