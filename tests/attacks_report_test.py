"""The ATM report's intervals (jaxdiffattack.attacks.rates.intervals) on a synthetic rows table,
against independent computations: statsmodels' cluster-robust OLS (per-sample rate clustered by
prompt), statsmodels' Newcombe interval of two independent proportions (short − long) and exact
McNemar (ATM − random, paired), NumPy re-derivations of every seeded bootstrap; both evaluation
noises, the run's baseline and a separate "random" run paired by prompt; one-line errors."""

import json
import pathlib

import numpy as np
import pytest
import statsmodels.api as sm
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.proportion import confint_proportions_2indep

from jaxdiffattack import io
from jaxdiffattack import stats
from jaxdiffattack.attacks import rates
from jaxdiffattack.attacks import report
from jaxdiffattack.errors import UserError

S = 8                                        # samples per prompt
N = {"short": 30, "long": 24}                # attacked prompts per set
N_BOOT = 2000


def _block(rng, difficulty, judges=("attack", "oracle")):
  out = {"judges": {}}
  for j in judges:
    hits = int(rng.binomial(S, difficulty))
    out["judges"][j] = {"success": hits > 0, "successful_samples": hits, "failures": hits}
  out["successful_samples"] = out["judges"]["attack"]["successful_samples"]
  out["success"] = out["judges"]["attack"]["success"]
  return out


def synthetic_rows(seed=0, samples=S, methods=("baseline", "fixed_noise")):
  """Attacked prompts with a per-prompt difficulty (beta: the samples of a prompt correlate),
  their blocks, and two skipped clean failures."""
  rng = np.random.default_rng(seed)
  rows = []
  for s, n in N.items():
    for i in range(n):
      p = rng.beta(0.6, 2.0 if s == "short" else 4.0)
      row = {"set": s, "index": i, "prompt": f"{s} prompt {i}", "clean_correct": True,
             "attacked": True, "samples": samples, "loss_curve": [], "curves": {},
             "successful_prompts": [], **_block(rng, p)}
      for m in methods:
        row[m] = _block(rng, p / 2 if m == "baseline" else p)
      rows.append(row)
    rows.append({"set": s, "index": n, "prompt": f"{s} skipped", "clean_correct": False,
                 "attacked": False, "samples": 0, "success": None, "successful_prompts": []})
  return rows


def _counts(rows, s, method, judge):
  got = [(r if method == "attack" else r[method])["judges"][judge] for r in rows
         if r["set"] == s and r["attacked"]]
  return (np.array([g["success"] for g in got], float),
          np.array([g["successful_samples"] for g in got], float))


@pytest.fixture(scope="module")
def rows():
  return synthetic_rows()


@pytest.fixture(scope="module")
def got(rows):
  return rates.intervals(rows, {"eval_noise": "both"}, n_boot=N_BOOT)


def test_per_sample_rate_is_clustered_by_prompt_as_statsmodels(rows, got):
  for s in N:
    _, hits = _counts(rows, s, "attack", "oracle")
    y = np.concatenate([np.r_[np.ones(int(h)), np.zeros(S - int(h))] for h in hits])
    groups = np.repeat(np.arange(len(hits)), S)
    fit = sm.OLS(y, np.ones((y.size, 1))).fit(cov_type="cluster", cov_kwds={"groups": groups})
    entry = got["by_noise"]["fresh"]["oracle"]["atm"][s]["per_sample"]
    assert entry["interval"] == "cluster-robust" and entry["n"] == y.size
    assert entry["rate"] == pytest.approx(fit.params[0])
    low, high = fit.conf_int(alpha=0.05)[0]
    assert entry["ci95"] == pytest.approx([max(low, 0), min(high, 1)], rel=1e-9)
    # Wider than the interval that treats the S samples of a prompt as independent.
    wilson = stats.wilson_interval(y.sum(), y.size)
    assert entry["ci95"][1] - entry["ci95"][0] > 1.15 * (wilson[1] - wilson[0])
    # The cluster bootstrap, re-derived: resample prompts, rate = hits / samples of the resample.
    pick = np.random.default_rng(0).integers(0, len(hits), (N_BOOT, len(hits)))
    rates = hits[pick].sum(1) / (S * len(hits))
    assert entry["bootstrap95"] == pytest.approx(np.quantile(rates, [0.025, 0.975]).tolist())


def test_per_prompt_asr_bootstrap_over_prompts(rows, got):
  for s in N:
    success, _ = _counts(rows, s, "baseline", "attack")
    entry = got["by_noise"]["fresh"]["attack"]["random_substitution"][s]["asr"]
    assert entry["prompts"] == N[s] and entry["successes"] == success.sum()
    pick = np.random.default_rng(0).integers(0, len(success), (N_BOOT, len(success)))
    want = np.quantile(success[pick].mean(1), [0.025, 0.975]).tolist()
    assert entry["bootstrap95"] == pytest.approx(want)
    assert entry["wilson95"] == pytest.approx(list(stats.wilson_interval(success.sum(), N[s])))
  assert got["bootstrap"] == {"seed": 0, "draws": N_BOOT, "resampled": "prompts"}


def test_short_minus_long_for_independent_groups(rows, got):
  d = got["by_noise"]["fixed"]["attack"]["short_minus_long"]["atm"]
  (a, ha), (b, hb) = (_counts(rows, s, "fixed_noise", "attack") for s in ("short", "long"))
  low, high = confint_proportions_2indep(a.sum(), a.size, b.sum(), b.size, method="newcomb",
                                         compare="diff")
  assert d["asr"]["value"] == pytest.approx(a.mean() - b.mean())
  assert d["asr"]["newcombe95"] == pytest.approx([low, high], rel=1e-9)
  # The per-sample difference: each set's prompts resampled independently (a's draws first) ...
  rng = np.random.default_rng(0)
  ra = ha[rng.integers(0, a.size, (N_BOOT, a.size))].sum(1) / (S * a.size)
  rb = hb[rng.integers(0, b.size, (N_BOOT, b.size))].sum(1) / (S * b.size)
  want = np.quantile(ra - rb, [0.025, 0.975])
  assert d["per_sample"]["value"] == pytest.approx(ha.sum() / (S * a.size) - hb.sum() / (S * b.size))
  assert d["per_sample"]["ci95"] == pytest.approx(want.tolist())
  # ... and about as wide as the normal interval from the two cluster-robust standard errors.
  se = [stats.cluster_wald_interval(*rates._expand(h.astype(int), np.full(h.size, S)))[3]
        for h in (ha, hb)]
  assert (want[1] - want[0]) / (2 * stats.Z95) == pytest.approx(np.hypot(*se), rel=0.15)


def _assert_paired(d, a, ha, b, hb):
  """A `rates.paired_difference` block against statsmodels' exact McNemar, Newcombe's paired
  interval and a NumPy paired bootstrap over prompts (a, b: per-prompt success; ha, hb: their
  successful samples of S)."""
  table = [[int(((a == 1) & (b == 1)).sum()), int(((a == 1) & (b == 0)).sum())],
           [int(((a == 0) & (b == 1)).sum()), int(((a == 0) & (b == 0)).sum())]]
  assert d["asr"]["table"] == dict(zip(("both", "only_a", "only_b", "neither"),
                                       np.ravel(table).tolist()))
  assert d["asr"]["value"] == pytest.approx(a.mean() - b.mean())
  assert d["asr"]["mcnemar_p"] == pytest.approx(sm_mcnemar(table, exact=True).pvalue)
  assert d["asr"]["newcombe95"] == pytest.approx(list(stats.paired_proportion_interval(a, b)[1:]))
  diff = ha / S - hb / S
  pick = np.random.default_rng(0).integers(0, diff.size, (N_BOOT, diff.size))
  assert d["per_sample"]["ci95"] == pytest.approx(
      np.quantile(diff[pick].mean(1), [0.025, 0.975]).tolist())


def test_short_minus_long_is_also_paired_by_scene_for_the_census_sets(rows):
  """world2_census_short / _long caption the same scenes index by index (the ATM study): short −
  long is also given paired over the scenes attacked in both (short has 30 attacked, long 24 and
  index 24 skipped: 24 pairs), against statsmodels' exact McNemar, Newcombe's paired interval
  and a NumPy paired bootstrap; other prompt sets get no paired block."""
  assert "short_minus_long_paired" not in rates.intervals(
      rows, {"eval_noise": "both"}, n_boot=200)["by_noise"]["fresh"]["attack"]
  config = {"eval_noise": "both", "prompt_sets": {"short": "world2_census_short",
                                                  "long": "world2_census_long"}}
  got = rates.intervals(rows, config, n_boot=N_BOOT)
  for noise, block in (("fresh", "attack"), ("fixed", "fixed_noise")):
    d = got["by_noise"][noise]["oracle"]["short_minus_long_paired"]["atm"]
    a, ha = (x[:N["long"]] for x in _counts(rows, "short", block, "oracle"))
    b, hb = _counts(rows, "long", block, "oracle")
    assert d["prompts"] == N["long"] == 24
    _assert_paired(d, a, ha, b, hb)
  lines = "\n".join(rates.interval_lines(got))
  assert "short − long, atm (paired by scene, 24 scenes attacked in both)" in lines


def test_atm_minus_random_is_paired_by_prompt(rows, got):
  for s in N:
    d = got["by_noise"]["fresh"]["oracle"]["atm_minus_random_substitution"][s]
    a, ha = _counts(rows, s, "attack", "oracle")
    b, hb = _counts(rows, s, "baseline", "oracle")
    _assert_paired(d, a, ha, b, hb)
  # The baseline is drawn on the attack's (fresh) noises only: no fixed-noise comparison.
  assert "random_substitution" not in got["by_noise"]["fixed"]["attack"]


def test_noises_present_in_the_run():
  assert rates.noises(synthetic_rows(methods=()), {"eval_noise": "fixed"}) == [("fixed", "attack")]
  assert rates.noises(synthetic_rows(methods=()), {"eval_noise": "per_sample"}) == [
      ("fresh", "attack")]
  assert rates.noises(synthetic_rows(), {"eval_noise": "both"}) == [
      ("fresh", "attack"), ("fixed", "fixed_noise")]


@pytest.mark.slow   # 10–75 s on 2 shared cores (matplotlib plot, 10 000-draw bootstraps)
def test_a_separate_random_run_is_paired_by_prompt_and_reported(tmp_path, rows):
  ours, theirs = tmp_path / "atm", tmp_path / "random"
  config = {"eval_noise": "both", "seed": 0, "num_samples": S, "model": "toy",
            "attack": {"name": "atm", "num_iters": 4, "batch_size": 1}}
  random_rows = [r for r in synthetic_rows(seed=1, methods=("fixed_noise",))
                 if not (r["set"] == "long" and r["index"] < 4)]     # 4 prompts it lacks
  for d, rs, c in ((ours, rows, config),
                   (theirs, random_rows, config | {"attack": {"name": "random"}})):
    io.write_jsonl(d / "results.jsonl", rs)
    io.write_json(d / "config.json", c)
  out = report.write_report(ours, random_workdir=theirs)
  run = out["summary"]["intervals"]["random_run"]
  assert run["prompts_paired"] == N["short"] + N["long"] - 4 and run["attack"] == "random"
  assert set(run["by_noise"]) == {"fresh", "fixed"}
  d = run["by_noise"]["fresh"]["attack"]["atm_minus_random"]["long"]
  a = np.array([r["success"] for r in rows if r["set"] == "long" and r["attacked"]][4:], float)
  b = np.array([r["success"] for r in random_rows if r["set"] == "long" and r["attacked"]], float)
  assert d["prompts"] == N["long"] - 4
  assert d["asr"]["newcombe95"] == pytest.approx(list(stats.paired_proportion_interval(a, b)[1:]))
  text = (ours / "report.md").read_text()
  for needle in ("## Intervals (clustered by prompt)", "default_rng(0)", "### Noise: fresh",
                 "### Noise: fixed", "short − long, atm (independent)",
                 "ATM − random substitution, short (paired", "separate run of the attack `random`"):
    assert needle in text, needle
  assert json.loads((ours / "summary.json").read_text())["intervals"]["random_run"][
      "prompts_paired"] == run["prompts_paired"]
  # Another number of samples per prompt, or a workdir without results: one-line errors.
  io.write_jsonl(theirs / "results.jsonl", synthetic_rows(samples=S + 1))
  with pytest.raises(UserError, match=r"num_samples=9 there, 8 in the ATM run"):
    report.write_report(ours, random_workdir=theirs)
  with pytest.raises(UserError, match=r"has no results.jsonl"):
    report.write_report(ours, random_workdir=tmp_path / "missing")


def test_compare_launcher_one_line_error(tmp_path, capsys):
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(__file__).resolve().parent.parent / "launch" / "attack_compare.py"
  spec = importlib.util.spec_from_file_location("attack_compare", path)
  launcher = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(launcher)
  io.write_jsonl(tmp_path / "atm" / "results.jsonl", synthetic_rows())
  io.write_json(tmp_path / "atm" / "config.json", {"eval_noise": "both"})
  with pytest.raises(SystemExit) as e:
    launcher.main(["--workdir", str(tmp_path / "atm"), "--random_workdir", str(tmp_path / "x")])
  assert str(e.value).startswith("error: random_workdir=") and "\n" not in str(e.value)
