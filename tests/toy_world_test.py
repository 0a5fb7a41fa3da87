"""Tests of the procedural toy world (jaxdiffattack.toy.world)."""
from absl.testing import absltest
import numpy as np

from jaxdiffattack.toy import world


def _object_mask(spec: world.SceneSpec, index: int = 0) -> np.ndarray:
  """Pixels at least half covered by object ``index``, from the pixels alone:
  the alpha of each pixel between the background and the object colour."""
  bg = world.render(spec._replace(objects=())).astype(float)
  img = world.render(spec._replace(objects=(spec.objects[index],)))
  rgb = np.asarray(spec.objects[index].rgb)
  diff = rgb - bg
  alpha = ((img - bg) * diff).sum(-1) / (diff * diff).sum(-1)
  return alpha > 0.5


class WorldTest(absltest.TestCase):

  def test_labels(self):
    self.assertLen(world.LABELS, 20)
    self.assertLen(set(world.LABELS), 20)
    self.assertEqual(world.LABELS[0], "red circle")
    self.assertEqual(world.LABEL2ID["yellow cross"], 19)
    for i, label in enumerate(world.LABELS):
      self.assertEqual(f"{world.label_colour(i)} {world.label_shape(i)}", label)
    words = world.world_words()
    for label in world.LABELS:
      for w in label.split():
        self.assertIn(w, words)

  def test_captions(self):
    self.assertEqual(world.caption([0]), "a photo of a red circle")
    self.assertEqual(world.caption([0, 19]),
                     "a photo of a red circle and a yellow cross")
    data = world.make_dataset("train", 3, 2)
    caps = data.captions()
    self.assertLen(caps, 5)
    self.assertIn("red circle", caps[0])
    self.assertIn(" and a ", caps[-1])

  def test_deterministic_and_splits_differ(self):
    a = world.make_dataset("train", 40, 10, seed=0)
    b = world.make_dataset("train", 40, 10, seed=0)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.template_ids, b.template_ids)
    h = world.make_dataset("heldout", 40, 10, seed=0)
    self.assertFalse(np.array_equal(a.images, h.images))
    c = world.make_dataset("train", 40, 0, seed=1)
    self.assertFalse(np.array_equal(a.images[:40], c.images))
    self.assertEqual(a.images.shape, (50, 32, 32, 3))
    self.assertEqual(a.images.dtype, np.uint8)

  def test_balanced_singles_and_distinct_pairs(self):
    d = world.make_dataset("heldout", 60, 30)
    np.testing.assert_array_equal(d.labels[:60, 0], np.arange(60) % 20)
    self.assertTrue(np.all(d.labels[:60, 1] == -1))
    self.assertTrue(np.all(d.labels[60:, 0] != d.labels[60:, 1]))
    self.assertTrue(np.all(d.labels[60:] >= 0))

  def test_colour_recoverable_from_pixels(self):
    names = list(world.COLOUR_RGB)
    ref = np.asarray([world.COLOUR_RGB[n] for n in names], float)
    for i in range(60):
      label = i % 20
      spec = world.sample_spec(world.scene_rng("train", i), [label])
      obj = spec.objects[0]
      cov = world.shape_coverage(world.label_shape(label), obj.cx, obj.cy,
                                 obj.radius, obj.angle)
      img = world.render(spec).astype(float)
      mean = img[cov > 0.99].mean(0)
      got = names[int(np.argmin(np.linalg.norm(ref - mean, axis=-1)))]
      self.assertEqual(got, world.label_colour(label), msg=f"scene {i}")

  def test_shape_recoverable_from_pixels(self):
    for i in range(60):
      label = i % 20
      spec = world.sample_spec(world.scene_rng("heldout", i), [label])
      obj = spec.objects[0]
      mask = _object_mask(spec)
      ious = []
      for shape in world.SHAPES:
        cand = world.shape_coverage(shape, obj.cx, obj.cy, obj.radius,
                                    obj.angle) > 0.5
        ious.append((mask & cand).sum() / (mask | cand).sum())
      self.assertEqual(world.SHAPES[int(np.argmax(ious))],
                       world.label_shape(label), msg=f"scene {i}: {ious}")
      self.assertGreater(max(ious), 0.7)

  def test_scene_spec_is_the_dataset_scene(self):
    data = world.make_dataset("heldout", 25, 5)
    for i in (0, 21):
      spec, template = world.scene_spec("heldout", i)
      np.testing.assert_array_equal(world.render(spec), data.images[i])
      self.assertEqual(template, data.template_ids[i])
    spec, template = world.scene_spec("heldout", 3, num_objects=2)
    np.testing.assert_array_equal(world.render(spec), data.images[28])
    self.assertEqual([o.label for o in spec.objects], list(data.labels[28]))
    self.assertEqual(template, data.template_ids[28])

  def test_object_coverage_composites_to_the_render(self):
    """The background weighted by what no object covers plus each object's colour weighted
    by its visible coverage is the rendered image (up to rounding), overlaps included."""
    for i in range(10):
      spec, _ = world.scene_spec("train", i, num_objects=2)
      if i % 2:  # Move the second object onto the first: it hides part of it.
        first = spec.objects[0]
        spec = spec._replace(objects=(first, spec.objects[1]._replace(cx=first.cx + 3,
                                                                      cy=first.cy)))
      cov = world.object_coverage(spec)  # [2, 32, 32]
      self.assertEqual(cov.shape, (2, 32, 32))
      self.assertTrue(np.all(cov >= 0) and np.all(cov.sum(0) <= 1 + 1e-9))
      rgb = np.asarray([o.rgb for o in spec.objects])  # [2, 3]
      bg = world.render_background(spec.background)
      composite = bg * (1 - cov.sum(0))[..., None] + np.einsum("khw,kc->hwc", cov, rgb)
      np.testing.assert_allclose(np.clip(composite, 0, 255), world.render(spec), atol=0.51)

  def test_two_object_scenes_show_both(self):
    for i in range(20):
      rng = world.scene_rng("train", i, num_objects=2)
      spec = world.sample_spec(rng, [i % 20, (i + 7) % 20])
      self.assertLen(spec.objects, 2)
      full = world.render(spec).astype(int)
      bg = world.render(spec._replace(objects=())).astype(int)
      for k in range(2):
        own = _object_mask(spec, k)
        self.assertGreater(own.sum(), 20)
        visible = np.abs(full - bg).sum(-1)[own] > 40
        self.assertGreater(visible.mean(), 0.6)


if __name__ == "__main__":
  absltest.main()
