"""World 2's scenes and renderer: determinism, geometry against skimage, colours, frequencies."""
import numpy as np
import pytest
from scipy import stats
from skimage import color, draw

from jaxdiffattack.errors import UserError
from jaxdiffattack.world2 import render
from jaxdiffattack.world2 import scene


def test_class_set():
  assert scene.NUM_CLASSES >= 60
  assert len(set(scene.CLASSES)) == scene.NUM_CLASSES
  assert "orange orange" in scene.CLASSES and "red orange" not in scene.CLASSES
  for c in range(scene.NUM_CLASSES):
    assert scene.class_id(scene.class_hue(c), scene.class_shape(c)) == c
  with pytest.raises(UserError, match="no class 'red orange'"):
    scene.class_id("red", "orange")


def test_hues_are_apart_and_match_skimage():
  hues = np.asarray([h for h, _, _ in scene.HUES.values()])
  d = np.abs(hues[:, None] - hues[None]) % 360
  d = np.minimum(d, 360 - d) + np.eye(len(hues)) * 360
  assert d.min() >= 17 > 2 * scene.HUE_JITTER + 10
  for name, (h, s, v) in scene.HUES.items():
    rgb = np.asarray(scene.hsv_rgb(h, s, v)) / 255
    hsv = color.rgb2hsv(rgb[None, None])[0, 0]
    np.testing.assert_allclose(hsv, [h / 360, s, v], atol=1e-6, err_msg=name)


def test_same_seed_same_pixels_different_seeds_differ():
  a = render.render_batch(scene.sample_scenes("train", 0, 6), 48)
  b = render.render_batch(scene.sample_scenes("train", 0, 6), 48)
  np.testing.assert_array_equal(a, b)
  c = render.render_batch(scene.sample_scenes("train", 6, 6), 48)
  d = render.render_batch(scene.sample_scenes("tune", 0, 6), 48)
  e = render.render_batch(scene.sample_scenes("train", 0, 6, seed=1), 48)
  for other in (c, d, e):
    assert all(np.abs(x.astype(int) - y).mean() > 5 for x, y in zip(a, other))
  assert a.dtype == np.uint8 and a.shape == (6, 48, 48, 3)


def test_every_background_is_low_chroma_and_every_object_saturated():
  specs = scene.sample_scenes("train", 0, 300)
  assert {s.background.kind for s in specs} == set(scene.BACKGROUNDS)
  for s in specs[:60]:
    spec = s._replace(objects=())
    img = render.render(spec, 48).astype(float)
    chroma = img.max(-1) - img.min(-1)
    assert np.percentile(chroma, 99) < 40, s.background
  for s in specs:
    for o in s.objects:
      dark = np.asarray(o.rgb) * scene.TEXTURE_DARK
      assert scene.chroma(dark) >= 55, (scene.CLASSES[o.cls], o.rgb)


@pytest.mark.parametrize("shape,vertices", [
    ("square", [(-0.68, -0.68), (0.68, -0.68), (0.68, 0.68), (-0.68, 0.68)]),
    ("rectangle", [(-0.92, -0.42), (0.92, -0.42), (0.92, 0.42), (-0.92, 0.42)]),
    ("triangle", None), ("star", None), ("six-pointed star", None)])
def test_polygon_coverage_matches_skimage(shape, vertices):
  """A rotated shape's coverage > 1/2 against skimage.draw.polygon of its vertices."""
  size, cx, cy, r, angle = 64, 0.45, 0.55, 0.3, 0.3
  poly = np.asarray(vertices) if vertices else render.POLYGONS[shape]
  c, s = np.cos(angle), np.sin(angle)
  xs = (cx + r * (c * poly[:, 0] - s * poly[:, 1])) * size
  ys = (cy + r * (s * poly[:, 0] + c * poly[:, 1])) * size
  ref = np.zeros((size, size), bool)
  rr, cc = draw.polygon(ys - 0.5, xs - 0.5, (size, size))
  ref[rr, cc] = True
  mine = render.coverage(shape, cx, cy, r, angle, size) > 0.5
  iou = (mine & ref).sum() / (mine | ref).sum()
  assert iou > 0.96, iou


def test_circle_and_ring_areas():
  size, r = 64, 0.3
  circle = render.coverage("circle", 0.5, 0.5, r, 0.0, size, supersample=8).sum()
  np.testing.assert_allclose(circle, np.pi * (0.82 * r * size) ** 2, rtol=0.01)
  ring = render.coverage("ring", 0.5, 0.5, r, 0.0, size, supersample=8).sum()
  np.testing.assert_allclose(ring, np.pi * (0.9 ** 2 - 0.55 ** 2) * (r * size) ** 2, rtol=0.02)


def test_flat_object_pixels_are_its_colour_and_textures_darken():
  rng = np.random.default_rng(0)
  spec = scene.sample_scene(rng, layout="single", classes=[scene.class_id("blue", "square")],
                            background="plain", size="large", texture="flat")
  o = spec.objects[0]
  img = render.render(spec, 64)
  inside = render.coverage("square", o.cx, o.cy, o.radius, o.angle, 64) == 1
  np.testing.assert_allclose(img[inside], np.round(np.broadcast_to(o.rgb, img[inside].shape)),
                             atol=0.51)
  for texture in ("striped", "ring", "dotted"):
    t = render.render(spec._replace(objects=(o._replace(texture=texture),)), 64)
    dark = np.isclose(t[inside], np.round(np.asarray(o.rgb) * scene.TEXTURE_DARK), atol=1).all(-1)
    assert 0.1 < dark.mean() < 0.65, (texture, dark.mean())


def test_objects_do_not_overlap_and_relations_hold():
  for i, s in enumerate(scene.sample_scenes("train", 0, 400)):
    objs = s.objects
    for a in range(len(objs)):
      for b in range(a):
        assert np.hypot(objs[a].cx - objs[b].cx, objs[a].cy - objs[b].cy) >= (
            objs[a].radius + objs[b].radius), i
    if s.relation:
      axis = 0 if s.relation == "left" else 1
      for p in objs:
        for q in objs:
          if p.group == 0 and q.group == 1:
            assert (q.cx, q.cy)[axis] - (p.cx, p.cy)[axis] >= 0.1, i
    assert [sum(1 for o in objs if o.group == g) for g in range(len(s.groups))] == [
        g.count for g in s.groups]


def test_long_tailed_class_frequency():
  p = scene.class_probs()
  np.testing.assert_allclose(p.max() / p.min(), scene.TAIL_RATIO)
  np.testing.assert_allclose(p.sum(), 1.0)
  # Single-object scenes draw their class from p exactly: a chi-square goodness of fit.
  specs = scene.sample_scenes("train", 0, 6000, layout="single")
  counts = np.bincount([s.groups[0].cls for s in specs], minlength=scene.NUM_CLASSES)
  assert stats.chisquare(counts, p * counts.sum()).pvalue > 1e-3
  head = counts[list(scene.CLASS_ORDER[:8])].sum()
  tail = counts[list(scene.CLASS_ORDER[-8:])].sum()
  assert 10 < head / tail < 30


def test_bad_input_is_one_line():
  with pytest.raises(UserError, match="split='val' is invalid"):
    scene.scene("val", 0)
  with pytest.raises(UserError, match="layout='four'"):
    scene.scene("train", 0, layout="four")
  with pytest.raises(UserError, match="size=4 is invalid"):
    render.render(scene.scene("train", 0), 4)
