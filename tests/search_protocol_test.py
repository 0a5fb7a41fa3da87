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


def test_five_methods_share_one_budget_or_are_refused():
  methods = ("random", "Sep_CMA_ES", "LM_MA_ES", "adam", "pgd")
  rows = [_yield_row(m, t, 1, 0) for m in methods for t in range(3)]
  b = protocol.budgets(rows)
  assert list(b) == list(methods) and {v["per_target"] for v in b.values()} == {16}
  assert all(v["forward_evaluations"] == 48 for v in b.values())
  for r in rows:
    if r["method"] == "pgd":
      r["budget"] = 32
  with pytest.raises(UserError, match="unequal budgets per target .*'pgd': 32") as e:
    protocol.budgets(rows)
  assert "\n" not in str(e.value)


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


# ------------------------------------- statistics that can decide (issue #26 item 1, world 2) --
def test_paired_tests_t_against_statsmodels_and_wilcoxon_against_exact_enumeration():
  from statsmodels.stats import weightstats  # pylint: disable=g-import-not-at-top
  import itertools  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  a, b = rng.random(10), rng.random(10) * 0.8
  got = stats.paired_tests(a, b)
  d = a - b
  t, p, df = weightstats.DescrStatsW(d).ttest_mean(0.0)
  assert np.isclose(got["t"], t) and np.isclose(got["t_p"], p) and got["df"] == df == 9
  # Wilcoxon (no ties, no zeros): W = min(W+, W-), exact two-sided p over all 2^10 sign flips.
  ranks = np.argsort(np.argsort(np.abs(d))) + 1
  w_plus = ranks[d > 0].sum()
  w = min(w_plus, ranks.sum() - w_plus)
  null = np.array([sum(r for r, s in zip(range(1, 11), signs) if s)
                   for signs in itertools.product((0, 1), repeat=10)])
  exact = min(1.0, 2 * min((null <= w_plus).mean(), (null >= w_plus).mean()))
  assert got["wilcoxon_w"] == w and np.isclose(got["wilcoxon_p"], exact)
  assert got["wilcoxon_nonzero"] == 10 and np.isclose(got["mean_difference"], d.mean())


def test_paired_tests_wilcoxon_with_zeros_and_ties_is_the_tie_corrected_normal_approximation():
  rng = np.random.default_rng(4)
  a = rng.integers(0, 6, 70) / 256      # yields of k/256: many ties, some zero differences
  b = rng.integers(0, 4, 70) / 256
  got = stats.paired_tests(a, b)
  d = (a - b)[a != b]                   # "wilcox": zeros dropped
  n = d.size
  assert got["wilcoxon_nonzero"] == n < 70
  abs_d = np.abs(d)
  ranks = np.array([np.mean(np.flatnonzero(np.sort(abs_d) == x)) + 1 for x in abs_d])
  w_plus = ranks[d > 0].sum()
  _, counts = np.unique(abs_d, return_counts=True)
  var = n * (n + 1) * (2 * n + 1) / 24 - (counts ** 3 - counts).sum() / 48
  z = (w_plus - n * (n + 1) / 4) / np.sqrt(var)
  assert np.isclose(got["wilcoxon_w"], min(w_plus, ranks.sum() - w_plus))
  assert np.isclose(got["wilcoxon_p"], 2 * sps.norm.sf(abs(z)))


def test_paired_tests_degenerate_cases():
  same = stats.paired_tests([0.1, 0.2], [0.1, 0.2])
  assert (same["t"], same["t_p"], same["wilcoxon_w"], same["wilcoxon_p"]) == (None, None, None, 1.0)
  shift = stats.paired_tests([0.3, 0.4, 0.5], [0.2, 0.3, 0.4])   # zero variance of d
  assert shift["t"] is None and np.isclose(shift["mean_difference"], 0.1)
  with pytest.raises(UserError, match="2 and 3 units"):
    stats.paired_tests([1, 2], [1, 2, 3])


def _yield_row(method, target, failures, first, budget=16, population=4):
  """A world-2 protocol row: `failures` oracle failures over the budget, first at generation
  `first` (None: none)."""
  return {"method": method, "kind": "random" if method == "random" else "evolution",
          "target": target, "label": "red circle", "prompt": f"caption {target}",
          "prompt_kind": ("single", "two_objects", "long")[target % 3], "clean_rate": 0.05,
          "searched": True, "success": first is not None, "budget": budget,
          "population_size": population, "evaluations": budget, "forward_evaluations": budget,
          "gradient_evaluations": 0, "evaluations_to_first_success":
              None if first is None else population * (first + 1),
          "judge_first_generation": {"world2_oracle": first, "evaluator": 0},
          "judge_failures": {"world2_oracle": failures, "evaluator": budget},
          "clean": {"judges": {"world2_oracle": {"pred": "red circle"},
                               "evaluator": {"pred": "red circle"}}}}


# (method failures, method first generation, random failures, random first generation)
YIELD_CASES = [(4, 0, 1, 2), (3, 1, 0, None), (0, None, 0, None), (2, 3, 2, 1), (5, 0, 1, 0),
               (6, 1, 1, 3), (1, 2, 0, None), (0, None, 1, 1)]


def _yield_rows():
  rows = []
  for t, (fm, gm, fr, gr) in enumerate(YIELD_CASES):
    rows.append(_yield_row("Sep_CMA_ES", t, fm, gm))
    rows.append(_yield_row("random", t, fr, gr))
  return rows


def test_yield_comparison_against_a_numpy_recount_and_scipy():
  rows = _yield_rows()
  a = [r for r in rows if r["method"] == "Sep_CMA_ES"]
  b = [r for r in rows if r["method"] == "random"]
  got = protocol.yield_comparison(a, b, "world2_oracle")
  ya = np.array([c[0] for c in YIELD_CASES]) / 16
  yb = np.array([c[2] for c in YIELD_CASES]) / 16
  y = got["yield"]
  assert np.isclose(y["method_mean"], ya.mean()) and np.isclose(y["random_mean"], yb.mean())
  assert np.isclose(y["ratio"], ya.mean() / yb.mean())
  assert np.isclose(y["difference"], (ya - yb).mean())
  # The paired bootstrap over targets, re-derived: 10,000 resamples of the 8 targets.
  idx = np.random.default_rng(0).integers(0, 8, size=(10_000, 8))
  means = (ya - yb)[idx].mean(axis=1)
  assert np.allclose(y["difference_bootstrap_ci95"], np.quantile(means, [0.025, 0.975]))
  assert np.isclose(y["t_p"], sps.ttest_rel(ya, yb).pvalue)
  assert np.isclose(y["wilcoxon_p"], sps.wilcoxon(ya - yb).pvalue)
  assert (y["method_higher"], y["random_higher"], y["nonzero_differences"]) == (5, 1, 6)
  assert y["decides"] == (y["difference_bootstrap_ci95"][0] > 0)
  # First failure: evaluations = 4 · (generation + 1), censored (no failure) above the budget.
  f = got["first_failure"]
  first = lambda g: np.inf if g is None else 4.0 * (g + 1)
  fa = np.array([first(c[1]) for c in YIELD_CASES])
  fb = np.array([first(c[3]) for c in YIELD_CASES])
  wins, losses = int((fa < fb).sum()), int((fb < fa).sum())
  assert (f["method_first"], f["random_first"], f["ties"]) == (wins, losses, 8 - wins - losses)
  assert (wins, losses) == (4, 2)        # targets 0, 1, 5, 6 vs 3, 7; ties 2 (both none), 4
  assert (f["both_censored"], f["method_censored"], f["random_censored"]) == (1, 2, 3)
  assert np.isclose(f["sign_test_p"], sps.binomtest(wins, wins + losses).pvalue)
  assert f["fraction_method_first"] == 4 / 8 and f["fraction_method_first_of_decided"] == 4 / 6
  ra, rb = np.minimum(fa, 16), np.minimum(fb, 16)
  assert np.isclose(f["restricted_mean_method"], ra.mean())
  assert np.isclose(f["restricted_mean_random"], rb.mean())
  assert np.isclose(f["restricted_mean_difference"], (ra - rb).mean())
  assert np.allclose(f["restricted_mean_difference_bootstrap_ci95"],
                     np.quantile((ra - rb)[idx].mean(axis=1), [0.025, 0.975]))
  with pytest.raises(UserError, match="same targets in the same order"):
    protocol.yield_comparison(a, b[::-1], "world2_oracle")
  # Equal budgets but populations 4 × 4 vs 16 × 1: first failures at generation resolution would
  # favour the smaller population; refused in one line.
  wide = [r | {"population_size": 16} for r in b]
  with pytest.raises(UserError, match=r"one population size, got \[4, 16\]") as e:
    protocol.yield_comparison(a, wide, "world2_oracle")
  assert "\n" not in str(e.value)


def test_summary_has_yield_stats_only_when_asked_and_census_targets_by_kind():
  rows = _yield_rows()
  config = dict(model="world2", space="latent", num_steps=20, scheduler="ddim",
                guidance_scale=7.5, population_size=4, num_generations=4, seed=0)
  old = protocol.summarise(rows, [], config)              # the toy protocol's behaviour
  assert "yield" not in old["vs_random"]["Sep_CMA_ES"]["world2_oracle"]
  assert "source" not in old["targets"] and "targets_file" not in old["config"]
  assert "Failure yield" not in protocol.markdown(old, {}, "cmd")
  new = protocol.summarise(rows, [], config | {"yield_stats": True,
                                               "targets_file": "census/targets.json",
                                               "filter_clean_judges": ["world2_oracle"]})
  v = new["vs_random"]["Sep_CMA_ES"]["world2_oracle"]
  assert v["yield"] == protocol.yield_comparison(
      [r for r in rows if r["method"] == "Sep_CMA_ES"],
      [r for r in rows if r["method"] == "random"], "world2_oracle")["yield"]
  assert (v["method"], v["random"]) == (6, 5)             # targets failed: nearly saturated
  t = new["targets"]
  assert t["source"] == "census" and t["by_kind"] == {"long": 2, "single": 3, "two_objects": 3}
  assert t["prompts"] == 8 and t["labels"] == 1 and np.isclose(t["clean_rate_mean"], 0.05)
  by_kind = new["methods"]["random"]["by_judge"]["world2_oracle"]["by_kind"]
  assert {k: (e["successes"], e["n"]) for k, e in by_kind.items()} == {
      "single": (2, 3), "two_objects": (2, 3), "long": (1, 2)}
  md = protocol.markdown(new, {}, "cmd")
  y, f = v["yield"], v["first_failure"]
  assert (f"| Sep_CMA_ES | world2_oracle | {y['method_mean']:.4f} / {y['random_mean']:.4f} "
          f"({y['ratio']:.2f}) |") in md
  assert f"| {f['method_first']} / {f['random_first']} / {f['ties']} |" in md
  assert "8 census prompts" in md and "census/targets.json" in md
  by_kind_md = md.split("## Targets failed by prompt kind")[1]
  assert "| random | world2_oracle | 1/2 = 50 % [" in by_kind_md


def test_census_exclusions_are_counted_by_the_filter_judges_failure():
  """With filter_clean_judges (census targets) a target is excluded when the scene oracle fails
  its clean image, which it can do while reading the class right (a count or texture of the
  caption violated): excluded_by_judge counts each judge's failures of the excluded clean
  images, not class misreadings."""
  rows = _yield_rows()
  for r in rows:
    if r["target"] in (0, 1, 2):        # excluded: the oracle fails the clean image
      r["searched"], r["evaluations"], r["forward_evaluations"] = False, 0, 0
      r["judge_first_generation"] = {"world2_oracle": None, "evaluator": None}
      r["judge_failures"] = {"world2_oracle": 0, "evaluator": 0}
      r["clean"]["judges"]["world2_oracle"] |= {"failure": True}      # pred still "red circle"
      r["clean"]["judges"]["evaluator"] |= {"failure": r["target"] == 0,
                                            "pred": "blue circle" if r["target"] == 0
                                            else "red circle"}
  config = dict(model="world2", space="latent", num_steps=20, scheduler="ddim",
                guidance_scale=7.5, population_size=4, num_generations=4, seed=0,
                targets_file="census/targets.json", filter_clean_judges=["world2_oracle"])
  t = protocol.summarise(rows, [], config)["targets"]
  assert (t["searched"], t["excluded"]) == (5, 3)
  assert t["excluded_by_judge"] == {"world2_oracle": 3, "evaluator": 1}
  # Without filter_clean_judges (the toy protocol) exclusion is a misread class, as before.
  old = protocol.summarise(rows, [], {k: v for k, v in config.items()
                                      if k != "filter_clean_judges"})["targets"]
  assert old["excluded_by_judge"] == {"world2_oracle": 0, "evaluator": 1}
  md = protocol.markdown(protocol.summarise(rows, [], config | {"targets_file": ""}), {}, "cmd")
  assert "3 excluded (clean image failed by: world2_oracle 3, evaluator 1)" in md


def test_world2_protocol_config_is_the_issue_design():
  from jaxdiffattack import objectives  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import variants  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.search import experiment  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.search import strategies  # pylint: disable=g-import-not-at-top
  c = variants.load_config("latent_search", "world2,protocol")
  assert c.model == "world2" and c.space == "latent"
  assert experiment.methods_of(c) == ["random", "Sep_CMA_ES", "LM_MA_ES", "adam", "pgd"]
  assert all(m in strategies.names() for m in c.methods)
  assert strategies.is_gradient("adam") and strategies.is_gradient("pgd")
  assert "LM_MA_ES" in strategies.LOW_MEMORY and "Sep_CMA_ES" in strategies.LOW_MEMORY
  assert c.population_size * c.num_generations >= 256 and c.stop_after_failures == 0
  assert c.targets_file.endswith("targets.json") and c.yield_stats
  assert c.filter_clean and tuple(c.filter_clean_judges) == ("world2_oracle",)
  assert (c.criterion.verdict, c.criterion.judge) == ("top1_miss", "world2_oracle")
  assert c.criterion.fitness == "surrogate/margin"
  roles = objectives.DEFAULT_ROLES["world2"]
  assert "world2_robust" in roles["surrogate"]["classifiers"]
  assert roles["evaluator"]["classifiers"] == ("world2_regnet",)
  assert not set(roles["surrogate"]["classifiers"]) & set(roles["evaluator"]["classifiers"])
  assert {"evaluator", "world2_oracle", "world2_robust"} <= set(c.judges)
  assert c.export == "docs/results/search_protocol_world2"
  smoke = variants.load_config("latent_search", "world2,protocol,smoke")
  assert list(smoke.methods) == list(c.methods) and smoke.export == ""
  # The toy protocol is unchanged by the new keys.
  toy = variants.load_config("latent_search", "toy,protocol")
  assert (toy.targets_file, tuple(toy.filter_clean_judges), toy.yield_stats) == ("", (), False)
  assert list(toy.methods) == ["random", "Sep_CMA_ES", "adam"]


@pytest.fixture(scope="module")
def world2_protocol_run(world2_assets, tmp_path_factory):
  """A smoke census (every prompt eligible: the smoke world's rates are degenerate), then
  `world2,protocol,smoke` on its targets."""
  from jaxdiffattack import census  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import variants  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp("w2protocol")
  census_config = variants.load_config("census", "world2,smoke")
  census_config.band = (0.0, 1.0)
  census_config.num_targets = 3
  census.run(census_config, str(workdir / "census"))
  config = variants.load_config("latent_search", "world2,protocol,smoke")
  config.targets_file = str(workdir / "census")
  search.run(config, workdir / "search")
  return config, workdir


@pytest.mark.slow
def test_world2_protocol_smoke_end_to_end(world2_protocol_run):
  config, workdir = world2_protocol_run
  census_targets = json.loads((workdir / "census" / "targets.json").read_text())["targets"]
  assert {t["kind"] for t in census_targets} == {"single", "two_objects", "long"}
  run = workdir / "search"
  rows = [json.loads(l) for l in (run / "results.jsonl").read_text().splitlines()]
  methods = ["random", "Sep_CMA_ES", "LM_MA_ES", "adam", "pgd"]
  assert list(dict.fromkeys(r["method"] for r in rows)) == methods
  for r in rows:   # the census's captions, classes, kinds and rates are the targets
    c = census_targets[r["target"]]
    assert (r["prompt"], r["label"], r["prompt_kind"], r["clean_rate"]) == (
        c["prompt"], c["label"], c["kind"], c["rate"])
    # Searched unless the clean image (the start latent) already fails by the oracle.
    assert r["searched"] == (not r["clean"]["judges"]["world2_oracle"]["failure"])
    assert r["budget"] == 4 and r["evaluations"] == (4 if r["searched"] else 0)
    assert r["backward_passes"] == (r["evaluations"] if r["method"] in ("adam", "pgd") else 0)
  p = json.loads((run / "protocol.json").read_text())
  assert {m: b["budget"]["per_target"] for m, b in p["methods"].items()} == dict.fromkeys(
      methods, 4)
  assert p["targets"]["source"] == "census" and p["targets"]["candidates"] == 3
  searched = [r for r in rows if r["searched"]]
  for m in methods:
    mine = [r for r in searched if r["method"] == m]
    for j in p["judges"]:
      e = p["methods"][m]["by_judge"][j]
      assert e["successes"] == sum(r["judge_first_generation"][j] is not None for r in mine)
      assert e["failing_images"] == sum(r["judge_failures"][j] for r in mine)
      if m == "random":
        continue
      v = p["vs_random"][m][j]
      yields = {k: [r["judge_failures"][j] / r["evaluations"] for r in searched
                    if r["method"] == k] for k in (m, "random")}
      if yields[m]:
        assert np.isclose(v["yield"]["method_mean"], np.mean(yields[m]))
        assert np.isclose(v["yield"]["random_mean"], np.mean(yields["random"]))
      first = lambda k: [np.inf if r["judge_first_generation"][j] is None else
                         2 * (r["judge_first_generation"][j] + 1) for r in searched
                         if r["method"] == k]
      fm, fr = np.array(first(m)), np.array(first("random"))
      assert v["first_failure"]["method_first"] == int((fm < fr).sum())
      assert v["first_failure"]["random_first"] == int((fr < fm).sum())
  md = (run / "protocol.md").read_text()
  assert "## Failure yield and first failure against random" in md
  for m in methods:   # the budget table says what the rows say
    mine = [r for r in searched if r["method"] == m]
    forward = sum(r["forward_evaluations"] for r in mine)
    backward = sum(r["backward_passes"] for r in mine)
    assert f"| {m} | 4 | {len(mine)} | {forward} ({forward / len(mine):.1f}) | {backward} |" in md
  assert "configs/latent_search.py:world2,protocol,smoke" in md and str(workdir) in md
  # Found latents are tried with the next target's caption, judged against that target.
  transfer = [json.loads(l) for l in (run / "transfer.jsonl").read_text().splitlines()]
  captions = {t["prompt"]: t["label"] for t in census_targets}
  for t in transfer:
    assert captions[t["prompt"]] == t["other_label"] and t["prompt"] != rows[t["target"]]["prompt"]
  assert {t["method"] for t in transfer} <= set(methods) | {"clean"}
