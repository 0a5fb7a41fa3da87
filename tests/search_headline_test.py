"""Issue #22 item 5: the README main command (configs/latent_search.py:toy) counts a failure only
when the evaluator AND oracle v2 call it one, and its last printed lines give, per method, the
failures the oracle confirms with its reasons."""

import pathlib
import sys

from jaxdiffattack import judges
from jaxdiffattack.search import report

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "configs"))
import latent_search  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_main_command_rule_is_evaluator_and_oracle():
  c = latent_search.get_config("toy")
  assert c.criterion.verdict == "agree"
  assert tuple(c.criterion.agree) == ("evaluator", "oracle")
  assert "oracle" in c.judges
  rule = judges.make_rule(c.criterion.verdict, judges=c.criterion.agree)
  assert rule.needs() == ("evaluator", "oracle")
  # The protocol keeps its published rule (the evaluator's top-1), as do non-toy runs.
  assert latent_search.get_config("toy,protocol").criterion.verdict == "top1_miss"
  assert latent_search.get_config().criterion.verdict == "top1_miss"


def _failure(reason, failure=True, file="failures/m/t000/failure_0.png"):
  return {"generation": 0, "files": [file],
          "judges": {"evaluator": {"pred": "red square", "confidence": 0.9, "failure": True},
                     "oracle": {"pred": "red square", "confidence": 0.8, "failure": failure,
                                "unclear": not failure, "reason": reason}}}


def _row(method, target, failures):
  return {"method": method, "target": target, "prompt": f"a photo of target {target}",
          "failures": failures}


def _summary(rows):
  methods = {}
  for m in dict.fromkeys(r["method"] for r in rows):
    sel = [r for r in rows if r["method"] == m]
    confirmed = [f for r in sel for f in r["failures"] if f["judges"]["oracle"]["failure"]]
    methods[m] = {"successes": 0, "targets": len(sel), "by_judge": {},
                  "evaluations_to_first_success_mean": None, "images_per_s": 1.0,
                  "oracle_confirmed_kept": len(confirmed),
                  "failures_kept": sum(len(r["failures"]) for r in sel),
                  "oracle_confirmed_targets": sum(
                      any(f["judges"]["oracle"]["failure"] for f in r["failures"]) for r in sel)}
  return {"methods": methods}


def test_last_lines_list_confirmed_failures_with_reasons():
  rows = [_row("Sep_CMA_ES", 0, [_failure("another shape (square, not a circle)"),
                                 _failure("unclear: between shapes", failure=False)]),
          _row("Sep_CMA_ES", 1, [_failure("several objects", file="failures/m/t001/f.png")]),
          _row("random", 0, [])]
  text = report.console_summary(rows, _summary(rows), "/runs/x",
                                pointers=("index: /runs/x/index.html",))
  lines = text.splitlines()
  assert lines[-1] == "index: /runs/x/index.html"
  assert lines[-2] == "report: /runs/x/report.md"
  assert lines[-6:-2] == [
      "Sep_CMA_ES: the oracle confirms 2 of the 3 failures kept, on 2 of 2 targets",
      "  'a photo of target 0' (target 0): another shape (square, not a circle) → "
      "failures/m/t000/failure_0.png",
      "  'a photo of target 1' (target 1): several objects → failures/m/t001/f.png",
      "random: the oracle confirms 0 of the 0 failures kept, on 0 of 1 targets"]
  assert "between shapes" not in "\n".join(lines[-6:])  # unclear: not confirmed
  # Each failure line above the headline shows every judge's reading with the oracle's reason.
  assert any("(another shape (square, not a circle))" in line for line in lines[:-6])
