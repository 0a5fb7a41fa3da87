"""The search protocol (search.protocol): clean-failing targets excluded and counted, equal budget,
rates by judge, budget accounting per method (unequal budgets refused in one line), the paired
comparison with random (stats.paired_proportion_interval; McNemar against SciPy's binomial
test), and the transfer of found latents re-checked with the plain sampler."""

import json

import numpy as np
import pytest
from scipy import stats as sps

from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import scoring
from jaxdiffattack import stats
from jaxdiffattack import search
from jaxdiffattack import text
from jaxdiffattack.errors import UserError
from jaxdiffattack.search import protocol

from search_multidevice_worker import tiny_config  # pylint: disable=g-bad-import-order


@pytest.mark.parametrize("only_a,only_b", [(0, 0), (5, 0), (7, 3), (2, 9), (20, 21)])
def test_mcnemar_exact_is_the_binomial_test_of_discordant_targets(only_a, only_b):
  expected = 1.0 if only_a + only_b == 0 else sps.binomtest(only_a, only_a + only_b).pvalue
  assert np.isclose(protocol.mcnemar_exact(only_a, only_b), expected)


def _row(method, target, searched, first, label="a", clean_pred=None):
  """A results.jsonl row with judge firsts {judge: generation or None}."""
  return {"method": method, "kind": "random" if method == "random" else "evolution",
          "target": target, "label": label, "searched": searched, "success": first["evaluator"]
          is not None, "budget": 8, "population_size": 2, "evaluations": 8 if searched else 0,
          "gradient_evaluations": 0, "evaluations_to_first_success":
              None if first["evaluator"] is None else 2 * (first["evaluator"] + 1),
          "judge_first_generation": first, "judge_failures": {
              j: int(g is not None) for j, g in first.items()},
          "clean": {"judges": {j: {"pred": clean_pred.get(j, label) if clean_pred else label}
                               for j in first}}}


def test_summarise_counts_excluded_targets_and_compares_with_random():
  none = {"evaluator": None, "oracle": None}
  rows = [
      # Target 0 fails the oracle when clean, target 1 the evaluator: excluded, never searched.
      _row("search", 0, False, none, clean_pred={"oracle": None}),
      _row("search", 1, False, none, clean_pred={"evaluator": "b"}),
      _row("search", 2, True, {"evaluator": 0, "oracle": 1}),
      _row("search", 3, True, {"evaluator": 2, "oracle": None}),
      _row("search", 4, True, {"evaluator": 1, "oracle": 3}),
      _row("random", 0, False, none, clean_pred={"oracle": None}),
      _row("random", 1, False, none, clean_pred={"evaluator": "b"}),
      _row("random", 2, True, {"evaluator": 3, "oracle": None}),
      _row("random", 3, True, none),
      _row("random", 4, True, none),
  ]
  config = dict(model="m", space="latent", num_steps=3, scheduler="ddim", guidance_scale=7.5,
                population_size=2, num_generations=4, seed=0, seeds_per_label=1)
  s = protocol.summarise(rows, [], config)
  assert s["targets"] == {"candidates": 5, "searched": 3, "excluded": 2,
                          "excluded_by_judge": {"evaluator": 1, "oracle": 1}}
  by = s["methods"]["search"]["by_judge"]
  assert (by["evaluator"]["successes"], by["evaluator"]["n"]) == (3, 3)
  assert (by["oracle"]["successes"], by["oracle"]["n"]) == (2, 3)
  assert by["oracle"]["evaluations_to_first"]["mean"] == (4 + 8) / 2
  assert s["methods"]["search"]["evaluations"] == 24   # excluded targets cost nothing
  v = s["vs_random"]["search"]["oracle"]
  assert (v["method"], v["random"], v["only_method"], v["only_random"]) == (2, 0, 2, 0)
  # Paired over the 3 searched targets: search fails targets 2 and 4, random neither.
  assert v["difference_ci95"] == list(stats.paired_proportion_interval([1, 0, 1], [0, 0, 0])[1:])
  assert v["difference_bootstrap_ci95"][0] <= v["difference"] <= v["difference_bootstrap_ci95"][1]
  assert v["beats_random"] == (v["difference_ci95"][0] > 0)
  assert np.isclose(v["mcnemar_p"], 0.5)
  text_md = protocol.markdown(s, {}, "cmd")
  assert "2 excluded" in text_md and "| search | oracle | 2 / 0 of 3 |" in text_md
  assert "| search | 8 | 3 | 24 (8.0) | 0 |" in text_md


def _budget_rows():
  none = {"evaluator": None}
  rows = [_row(m, t, True, none) for m in ("random", "adam") for t in range(3)]
  for r in rows:
    if r["method"] == "adam":
      r["kind"], r["gradient_evaluations"], r["backward_passes"] = "gradient", 8, 8
      r["forward_evaluations"] = 8
  rows[1]["evaluations"] = 4           # random stopped early on target 1: within budget
  return rows


def test_budgets_count_forward_and_backward_passes_and_wall_time():
  b = protocol.budgets(_budget_rows(), {"adam": {"time/total": 30.0},
                                        "random": {"time/total": 6.0}})
  assert b["random"] == {"per_target": 8, "targets": 3, "forward_evaluations": 20,
                         "backward_passes": 0, "forward_per_target_mean": 20 / 3,
                         "wall_s": 6.0, "wall_s_per_target": 2.0}
  assert (b["adam"]["forward_evaluations"], b["adam"]["backward_passes"]) == (24, 24)
  assert b["adam"]["wall_s_per_target"] == 10.0


def test_unequal_or_exceeded_budgets_are_refused_in_one_line():
  rows = _budget_rows()
  for r in rows:
    if r["method"] == "adam":
      r["budget"] = 16
  with pytest.raises(UserError, match="unequal budgets per target") as e:
    protocol.summarise(rows, [], {})
  assert "\n" not in str(e.value)
  rows = _budget_rows()
  rows[0]["evaluations"] = 9
  with pytest.raises(UserError, match="more than its budget of 8 evaluations on targets \\[0\\]"):
    protocol.budgets(rows)
  rows = _budget_rows()
  rows[4]["budget"] = 4
  with pytest.raises(UserError, match="'adam' has budgets \\[4, 8\\]"):
    protocol.budgets(rows)


@pytest.fixture(scope="module")
def protocol_run(tiny_sd_dirs, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("search_protocol")
  config = tiny_config("latent", tiny_sd_dirs[1])
  config.filter_clean = True
  config.transfer_per_target = 1
  config.num_generations = 3
  config.export = str(workdir / "exported" / "search_protocol")
  out = search.run(config, workdir, scoring=scoring.synthetic_scoring())
  return config, workdir, out


def test_clean_failing_targets_are_excluded_and_counted(protocol_run):
  """The synthetic judge fails "cube" and "cone" when clean (tests/search_run_test.py): only
  "ball" is searched, by every method, at the same budget; the others cost nothing."""
  config, workdir, out = protocol_run
  rows = [json.loads(line) for line in (workdir / "results.jsonl").read_text().splitlines()]
  for r in rows:
    assert r["searched"] == (r["label"] == "ball") == r["clean"]["passes"]
    assert r["evaluations"] == 0 or r["searched"]
    if not r["searched"]:
      assert not r["success"] and r["failures"] == []
      assert r["clean"]["judges"]["evaluator"]["failure"]
    assert r["budget"] == config.population_size * config.num_generations
    assert r["forward_evaluations"] == r["evaluations"] and r["backward_passes"] == 0
  p = json.loads((workdir / "protocol.json").read_text())
  assert p["targets"] == {"candidates": 3, "searched": 1, "excluded": 2,
                          "excluded_by_judge": {"evaluator": 2}}
  assert set(p["methods"]) == {"Sep_CMA_ES", "random"}
  for m in p["methods"].values():
    assert m["by_judge"]["evaluator"]["n"] == 1
    assert m["budget"]["per_target"] == config.population_size * config.num_generations
    assert m["budget"]["targets"] == 1 and m["budget"]["wall_s"] > 0
  assert (workdir / "exported" / "search_protocol.md").read_text() == (
      workdir / "protocol.md").read_text()
  assert out["protocol"]["targets"]["excluded"] == 2


def test_transfer_rows_recomputed_with_the_plain_sampler(protocol_run, tiny_sd_model):
  """Every found latent (and the clean reference) is tried with the other labels' prompts; the
  stored evaluator verdict equals the synthetic rule on the plain sampler's image."""
  config, workdir, _ = protocol_run
  sd, params = tiny_sd_model
  rows = [json.loads(line) for line in (workdir / "transfer.jsonl").read_text().splitlines()]
  results = [json.loads(line) for line in (workdir / "results.jsonl").read_text().splitlines()]
  found = {(r["method"], r["target"]) for r in results if r["failures"]}
  assert {(r["method"], r["target"]) for r in rows if r["method"] != "clean"} == found
  assert {(r["target"], r["other_label"]) for r in rows if r["method"] == "clean"} == {
      (1, "cube"), (1, "cone")}
  uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0])
  plain = sampler_lib.PopulationSampler(sd, params, sampler_lib.SamplerSettings(num_steps=3))
  for r in rows:
    assert r["other_label"] != r["label"] and r["prompt"] == f"a {r['other_label']}"
    result = next(x for x in results if x["method"] == r["method"] and x["target"] == r["target"]
                  ) if r["method"] != "clean" else None
    if result is None:
      continue
    latent = np.load(workdir / next(n for n in result["failures"][r["failure_index"]]["files"]
                                    if n.endswith("latent.npy")))
    cond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [r["prompt"]]))
    image = plain(latent[None], cond, uncond, config.guidance_scale).images[0]
    c = ["cube", "ball", "cone"].index(r["other_label"]) % 3
    assert r["judges"]["evaluator"] == (int(np.argmax(image.mean(axis=(0, 1)))) != c)
