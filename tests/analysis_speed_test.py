"""analysis.speed, inject and the ATM-workdir readers: formation steps, region SSIM curves,
correlations (vs a NumPy statement), class tables, and ATM results.jsonl rows."""

import json

import numpy as np
import pytest

from jaxdiffattack.analysis import inject
from jaxdiffattack.analysis import run as analysis_run
from jaxdiffattack.analysis import speed
from jaxdiffattack.analysis import ssim as ssim_lib
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.errors import UserError


def test_first_step_above_stays_above():
  curves = np.array([[0.1, 0.5, 0.95, 0.97, 1.0],
                     [0.92, 0.5, 0.8, 0.91, 1.0],       # an early spike does not count
                     [0.1, 0.2, 0.3, 0.4, 0.5],         # never: S
                     [0.1, np.nan, 0.3, 0.4, 0.95]])
  np.testing.assert_array_equal(speed.first_step_above(curves, 0.9), [2, 3, 5, np.nan])


def test_region_curves_equal_masked_ssim_per_step():
  rng = np.random.default_rng(0)
  final = rng.uniform(size=(2, 16, 16, 3))
  steps = np.clip(final[:, None] + rng.normal(0, 1, (2, 4, 1, 1, 1)) *
                  np.linspace(0.5, 0.0, 4)[None, :, None, None, None] *
                  rng.uniform(size=(2, 4, 16, 16, 3)), 0, 1)
  masks = np.zeros((2, 2, 16, 16), bool)
  masks[:, 0, :8] = True
  masks[0, 1, 10:, 10:] = True                            # member 1's second mask is empty
  got = speed.region_ssim_curves(steps, final, masks)
  for p in range(2):
    for k in range(2):
      for s in range(4):
        expected = ssim_lib.masked_ssim(steps[p, s], final[p], masks[p, k])
        np.testing.assert_allclose(got[p, k, s], expected, rtol=1e-12)
  assert np.isnan(got[1, 1]).all()
  np.testing.assert_allclose(got[:, 0, -1], 1.0)          # the last step is the final image
  np.testing.assert_allclose(speed.ssim_curves(steps, final)[:, -1], 1.0)


def test_correlation_matches_numpy():
  rng = np.random.default_rng(1)
  x = rng.normal(size=12)
  y = 0.5 * x + rng.normal(size=12)
  y[3] = np.nan
  got = speed.correlation(x, y)
  ok = ~np.isnan(y)
  assert got["n"] == 11
  np.testing.assert_allclose(got["pearson"], np.corrcoef(x[ok], y[ok])[0, 1])
  rank = lambda v: np.argsort(np.argsort(v))
  np.testing.assert_allclose(got["spearman"], np.corrcoef(rank(x[ok]), rank(y[ok]))[0, 1])
  assert speed.correlation([1, 2], [3, 4])["pearson"] is None


def test_class_speed_table_counts_losses_and_formation_order():
  singles = [{"class": "a", "first_step": 4.0}, {"class": "a", "first_step": 6.0},
             {"class": "b", "first_step": 9.0}]
  pairs = [{"a": "a", "b": "b", "outcome": "lost_b", "formed_first": "a"},
           {"a": "b", "b": "a", "outcome": "lost_a", "formed_first": "b"},
           {"a": "a", "b": "b", "outcome": "both", "formed_first": "tie"},
           {"a": "a", "b": "b", "outcome": "neither", "formed_first": "none"}]
  rows = {r["class"]: r for r in analysis_run.class_speed_table(singles, pairs, ("a", "b"),
                                                                {"b": 0.25})}
  assert rows["a"]["formation_step"] == 5.0 and rows["b"]["formation_step"] == 9.0
  assert rows["a"]["pair_images"] == rows["b"]["pair_images"] == 4
  assert rows["b"]["pair_losses"] == 2 and rows["a"]["pair_losses"] == 0
  assert rows["a"]["formed_first_rate"] == 1.0 and rows["b"]["formed_first_rate"] == 0.0
  assert rows["b"]["attack_success_rate"] == 0.25 and rows["a"]["attack_success_rate"] is None


def _atm_workdir(tmp_path, rows):
  (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(tmp_path)


def test_attack_workdir_success_rates_and_words(tmp_path):
  # Rows as ATM's job writes them (prompt, class_word, attacked, success, successful_prompts).
  rows = [
      {"prompt": "a photo of a red circle", "class_word": "red circle", "attacked": True,
       "success": True, "successful_prompts": ["a photo of a red circle dog",
                                               "a big photo of a red circle dog",
                                               "a close - up photo of a red circle dog"]},
      {"prompt": "a red circle", "class_word": "red circle", "attacked": True, "success": False,
       "successful_prompts": []},
      {"prompt": "a blue star", "class_word": "blue star", "attacked": False, "success": None,
       "successful_prompts": []}]
  workdir = _atm_workdir(tmp_path, rows)
  assert analysis_run.attack_success(workdir) == {"red circle": 0.5}
  # Most frequent first; ties in order of appearance; a lone "-" is no word.
  assert inject.attack_words(analysis_run.attack_rows(workdir), 5)[0] == "dog"
  assert sorted(inject.attack_words(analysis_run.attack_rows(workdir), 5)) == \
      ["big", "close", "dog", "up"]
  assert analysis_run.attack_success("") is None
  with pytest.raises(ConfigError, match="attack_workdir"):
    analysis_run.attack_success(str(tmp_path / "missing"))
  bad = tmp_path / "bad"
  bad.mkdir()
  with pytest.raises(UserError, match="class_word"):
    analysis_run.attack_success(_atm_workdir(bad, [{"prompt": "x", "success": True}]))


def test_distribution_and_total_variation():
  clean = inject.distribution(["red circle"] * 3 + [None])
  moved = inject.distribution(["red circle", "blue circle", None, None])
  assert clean == {"red circle": 0.75, inject.UNCLEAR: 0.25}
  np.testing.assert_allclose(inject.total_variation(clean, moved), 0.5)
  assert inject.total_variation(clean, clean) == 0.0
  assert inject.injected_prompt("a photo of a {word} {label}", "red circle", "blue") == \
      "a photo of a blue red circle"


def test_pool_for_ssim_of_large_images():
  from jaxdiffattack.analysis import generation  # pylint: disable=g-import-not-at-top
  x = np.arange(2 * 12 * 12 * 3, dtype=float).reshape(2, 12, 12, 3)
  np.testing.assert_array_equal(generation.pool(x, 12), x)
  got = generation.pool(x, 5)                          # 12 → 4 (factor 3, the smallest <= 5)
  assert got.shape == (2, 4, 4, 3)
  np.testing.assert_allclose(got[1, 2, 3], x[1, 6:9, 9:12].mean((0, 1)))
