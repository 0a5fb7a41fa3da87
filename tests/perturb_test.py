"""Each shift against an independent NumPy statement of arXiv 2312.11473 §3.2; the registry's
metadata carries a new shift (two parameters, `_` in its name) through a sweep's plan and report."""

import jax
import numpy as np
import pytest

from jaxdiffattack import perturb

Z = np.random.default_rng(0).standard_normal((4, 8, 8)).astype(np.float32)
KEY = jax.random.PRNGKey(3)


def _run(name, alpha):
  return np.asarray(perturb.SHIFTS[name].fn(Z, np.asarray(alpha, np.float32), KEY))


@pytest.mark.parametrize("alpha", [-0.2, 0.05, 0.15])
def test_mean_and_std_shifts(alpha):
  np.testing.assert_allclose(_run("ums", [alpha, 0]), Z + alpha, atol=1e-6)
  np.testing.assert_allclose(_run("sds", [alpha, 0]), (1 - alpha) * Z, atol=1e-6)
  np.testing.assert_allclose(_run("sds_flipped", [alpha, 0]), (1 + alpha) * Z, atol=1e-6)
  np.testing.assert_allclose(_run("ms", [alpha, 0.3]), Z + alpha - 0.3 * Z, atol=1e-6)
  np.testing.assert_array_equal(_run("none", [alpha, 0.3]), Z)


def test_random_mean_shift_is_alpha_times_one_uniform_draw():
  u = np.asarray(jax.random.uniform(KEY, Z.shape))
  for alpha in (-0.2, 0.1):
    np.testing.assert_allclose(_run("rms", [alpha, 0]), Z + alpha * u, atol=1e-6)
  eta = _run("rms", [0.2, 0]) - Z
  assert eta.min() >= 0 and eta.max() <= 0.2 and abs(eta.mean() - 0.1) < 0.02


@pytest.mark.parametrize("count", [0, 8, 16, 32, 64])
def test_arrangement_shift_sorts_the_first_pixels_per_channel(count):
  got = _run("pas", [count, 0])
  expected = Z.reshape(4, 64).copy()
  expected[:, :count] = np.sort(expected[:, :count], axis=1)
  np.testing.assert_array_equal(got, expected.reshape(Z.shape))
  # A permutation of the original values; only the named pixels move.
  np.testing.assert_array_equal(np.sort(got.ravel()), np.sort(Z.ravel()))
  np.testing.assert_array_equal(got.reshape(4, 64)[:, count:], Z.reshape(4, 64)[:, count:])
  desc = _run("pas_descending", [count, 0]).reshape(4, 64)
  np.testing.assert_array_equal(desc[:, :count], -np.sort(-Z.reshape(4, 64)[:, :count], axis=1))


@pytest.mark.parametrize("side", [8, 16, 64])
@pytest.mark.parametrize("fraction", perturb.PAPER_PAS_FRACTIONS + (0.0625, 0.25, 1.0))
def test_pas_fraction_sorts_that_share_of_any_latent_size(side, fraction):
  """PAS as the paper's fraction of latent pixels (8–64 of SD's 4096 = 0.2–1.6 %), on 8×8,
  16×16 and 64×64 latents: the first ⌊f·h·w + ½⌋ pixels of each channel sorted (NumPy)."""
  z = np.random.default_rng(side).standard_normal((4, side, side)).astype(np.float32)
  count = int(np.floor(fraction * side * side + 0.5))
  got = np.asarray(perturb.SHIFTS["pas_fraction"].fn(z, np.array([fraction, 0], np.float32),
                                                      KEY))
  expected = z.reshape(4, -1).copy()
  expected[:, :count] = np.sort(expected[:, :count], axis=1)
  np.testing.assert_array_equal(got, expected.reshape(z.shape))
  assert int(perturb.pas_pixels(fraction, (side, side))) == count


def test_paper_pas_fractions_are_the_papers_pixels_on_sd_and_under_two_on_the_toy():
  assert [int(perturb.pas_pixels(f, (64, 64))) for f in perturb.PAPER_PAS_FRACTIONS] == [
      8, 16, 32, 64]
  assert [int(perturb.pas_pixels(f, (16, 16))) for f in perturb.PAPER_PAS_FRACTIONS] == [
      1, 1, 2, 4]
  assert [int(perturb.pas_pixels(f, (8, 8))) for f in perturb.PAPER_PAS_FRACTIONS] == [
      0, 0, 1, 1]
  np.testing.assert_allclose([100 * f for f in perturb.PAPER_PAS_FRACTIONS],
                             [0.1953125, 0.390625, 0.78125, 1.5625])


def test_arrangement_shift_pixels_moves_whole_pixels():
  got = _run("pas_pixels", [16, 0]).reshape(4, 64)
  flat = Z.reshape(4, 64)
  order = np.argsort(flat[:, :16].mean(axis=0), kind="stable")
  np.testing.assert_array_equal(got[:, :16], flat[:, order])
  np.testing.assert_array_equal(got[:, 16:], flat[:, 16:])


def test_apply_shifts_vmaps_a_mixed_population():
  kinds = ("none", "ums", "pas", "ms")
  latents = np.stack([Z] * 4)
  alphas = np.array([[0, 0], [0.1, 0], [8, 0], [0.05, -0.2]], np.float32)
  keys = jax.random.split(KEY, 4)
  out = np.asarray(jax.jit(perturb.apply_shifts, static_argnums=4)(
      np.arange(4), latents, alphas, keys, kinds))
  np.testing.assert_array_equal(out[0], Z)
  np.testing.assert_allclose(out[1], Z + 0.1, atol=1e-6)
  np.testing.assert_array_equal(out[2], _run("pas", [8, 0]))
  np.testing.assert_allclose(out[3], Z + 0.05 + 0.2 * Z, atol=1e-6)


def _scale_then_add(z, alpha, key):
  """A two-parameter shift for the registry test: z̃ = (1 + a) z + b."""
  del key
  return (1 + alpha[0]) * z + alpha[1]


def _half_mean_shift(z, alpha, key):
  del key
  return z + alpha[0] / 2


def test_new_shifts_are_one_function_and_one_line(monkeypatch, tmp_path):
  """A two-parameter shift and one with `_` in its name (which must not borrow another grid by
  its prefix), each registered in one line, go through the sweep's grid, validation, latents,
  results and plots."""
  from jaxdiffattack.sweep import plan as plan_lib  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.sweep import report  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(perturb.SHIFTS, "scale_add", perturb.Shift(
      _scale_then_add, ("sa_scale", "sa_add"), ("scale a", "offset b")))
  monkeypatch.setitem(perturb.SHIFTS, "ums_half", perturb.Shift(_half_mean_shift, ("half",),
                                                                ("α / 2",)))
  grids = ml_collections.ConfigDict({"sa_scale": (0.0, 0.5), "sa_add": (0.0, -1.0, 1.0),
                                     "half": (0.0, 0.4), "ums": (0.2,)})
  cells = plan_lib.grid_cells(grids, ("scale_add", "ums_half"))
  assert [(c.shift, c.alpha, c.label) for c in cells] == [
      ("none", (0.0, 0.0), "0"), ("scale_add", (0.0, -1.0), "0,-1"),
      ("scale_add", (0.0, 1.0), "0,1"), ("scale_add", (0.5, 0.0), "0.5,0"),
      ("scale_add", (0.5, -1.0), "0.5,-1"), ("scale_add", (0.5, 1.0), "0.5,1"),
      ("ums_half", (0.4, 0.0), "0.4")]
  config = ml_collections.ConfigDict({
      "labels": ("a",), "label_set": "", "template": "{}", "images_per_prompt": 1,
      "shifts": ("scale_add", "ums_half"), "grids": grids, "unit": 1, "settings": [
          ml_collections.ConfigDict({"name": "s", "guidance_scale": 7.5})]})
  plan_lib.validate(config)
  del config.grids["half"]   # "ums_half" reads its own grid, never the "ums" one
  with pytest.raises(Exception, match=r"config.grids.half=None is invalid: give the α values "
                                      r"of shift 'ums_half'"):
    plan_lib.validate(config)
  plan = plan_lib.Plan(cells, 1, 1)
  latents = plan_lib.shifted_latents(plan, np.arange(len(cells)), KEY, (4, 8, 8))
  z, _ = plan_lib.base_latents(KEY, np.array([0]), np.array([0]), (4, 8, 8))
  np.testing.assert_allclose(latents[3], 1.5 * z[0], atol=1e-6)
  np.testing.assert_allclose(latents[4], 1.5 * z[0] - 1.0, atol=1e-6)
  np.testing.assert_allclose(latents[6], z[0] + 0.2, atol=1e-6)
  rows = [{"setting": "s", "shift": c.shift, "alpha_c": c.alpha[0], "alpha_s": c.alpha[1],
           "label": "a", "top1": 1.0, "top5": 1.0, "clip_score": 50.0 + i}
          for i, c in enumerate(cells)]
  results = report.summarise(rows)
  labels = {(r["shift"], r["alpha"]) for r in results}
  assert ("scale_add", "0.5,-1") in labels and ("ums_half", "0.4") in labels
  assert ("scale_add", "0,0") in labels and ("ums_half", "0") in labels   # the shared α = 0
  report.plots(results, tmp_path)
  assert (tmp_path / "clip_score.png").is_file()
