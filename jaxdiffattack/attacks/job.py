"""The attack job (ATM, arXiv 2306.02583 §4): prompt sets → clean check → attack → hard samples.

`run(config, workdir)` does, for each prompt set ("short", "long"):
  1. clean check — one image per clean prompt (noise `fold_in(clean key, prompt index)`), judged by
     the attack's classifier; prompts it already misclassifies are skipped and counted, as the
     released code does (`experiment.Job.clean_check`);
  2. attack — the clean-correct prompts in groups of `population`, each group one sharded
     population of the attack `config.attack.name` (`registry.ATTACKS`: "atm", the Gumbel-softmax
     attack of `atm.py`, or "random", random substitution), its iterations checkpointed every
     `checkpoint_every` (`step.py`, `checkpoint.py`), so a killed run resumes where it stopped and
     ends with the same results as an uninterrupted one;
  3. evaluation — `num_samples` hard prompts per attacked prompt read out of the attack's final
     state (ATM: drawn from softmax(θ)), decoded to text, re-tokenized and generated (noise per
     sample; the clean check's noise with `eval_noise="fixed"`; both, reported side by side, with
     "both"), judged by every judge (`judges.make_judges(...).read`: a `judges.Verdict` each).
     Success of a sample (the paper's rule, `experiment.Judged.success`): the attack's
     classifier (`config.classifier`, the judge "attack") calls it a failure — its top-1 is not
     the prompt's class — AND the class word is still in the decoded prompt; a prompt is attacked
     successfully when any of its samples succeeds. Further judges (`config.judges`: scorers and
     image judges such as the toy "oracle") read the same images with the same rule and are
     reported beside it;
  4. baseline — random token substitution at the same number of sampled prompts: sample j of a
     prompt replaces as many of its free positions as the attack's sample j changed, chosen at
     random, with random non-special tokens, and is generated with sample j's noise.

Outputs (workdir): config.json; results.jsonl (one row per prompt, `rows.py`); clean_<set>.json;
images/<set>/*.png (captioned successful samples); summary.json, report.md and plots/ (rebuilt from
the files by `report.write_report`); timing.json (kept apart so results.jsonl is identical across
resumes); with config.results_file (the `study` variants) its <stem>.json and <stem>.md
(provenance + summary.json / report.md, `jaxdiffattack.publish`); checkpoint.msgpack (the
group in progress) and, for large states, checkpoint_arrays/.
"""

import json
import pathlib
import time

from absl import logging
import ml_collections
import numpy as np

from jaxdiffattack import io
from jaxdiffattack import pages
from jaxdiffattack import publish
from jaxdiffattack import runs
from jaxdiffattack.attacks import report
from jaxdiffattack.attacks import step as step_lib
from jaxdiffattack.attacks.atm import grad_steps_of  # noqa: F401  (benchmarks)
from jaxdiffattack.attacks.atm import settings_of  # noqa: F401
from jaxdiffattack.attacks.config import RUN_SHAPE_KEYS
from jaxdiffattack.attacks.config import config_hash  # noqa: F401
from jaxdiffattack.attacks.config import validate
from jaxdiffattack.attacks.experiment import Job  # noqa: F401
from jaxdiffattack.attacks.experiment import PromptData  # noqa: F401
from jaxdiffattack.attacks.random_substitution import random_substitution  # noqa: F401
from jaxdiffattack.attacks.rows import row as _row


def run(config: ml_collections.ConfigDict, workdir, *, mesh=None, model_loader=None) -> dict:
  """Runs (or resumes) the attack on every prompt set; writes every output (module docstring)."""
  validate(config)
  workdir = pathlib.Path(workdir)
  if config.report_only:
    out = report.write_report(workdir)
    pages.write_index(workdir)
    _publish(config, workdir, out)
    return out
  # Results and clean checks on disk belong to the config that wrote them.
  runs.check_workdir(config, workdir, "attack", RUN_SHAPE_KEYS)
  job = Job(config, workdir, mesh=mesh, model_loader=model_loader)
  datas = [job.prepare(name, spec) for name, spec in config.prompt_sets.items()]
  # The inputs are read and checked: only now is anything written.
  runs.write_config(config, workdir)      # (multi-host: also checks the workdir is shared)
  results_path = workdir / "results.jsonl"
  rows = io.read_jsonl(results_path) if results_path.exists() else []
  done = {(r["set"], r["index"]) for r in rows}
  timing_path = workdir / "timing.json"
  timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
  plan = []
  for data in datas:
    clean = job.clean_check(data)
    correct = np.flatnonzero(clean["correct"])
    for i in np.flatnonzero(~np.asarray(clean["correct"])):
      if (data.name, int(i)) not in done:
        rows.append(_row(data, int(i), clean, job.judge_names))
    plan += [(data, clean, g, idx) for g, idx in enumerate(step_lib.groups(correct,
                                                                           config.population))]
  io.write_jsonl(results_path, rows)
  iterations = job.attack.iterations
  finished = [sum(len(idx) for d, _, _, idx in plan
                  if all((d.name, int(i)) in done for i in idx)) * iterations]
  tracker = runs.Progress("attack", max(sum(len(idx) for *_, idx in plan) * iterations, 1),
                          finished[0], unit="prompt-iterations")

  def progress(name, group, iteration, width, curves):
    details = "  ".join(f"{k} {float(curves[k][-1].mean()):.3f}" for k in curves
                        if k in ("loss", "margin", "similarity"))
    tracker.log(finished[0] + width * iteration, f"[{name}] group {group} iteration "
                f"{iteration}  {details}")

  for data, clean, group, index in plan:
    if all((data.name, int(i)) in done for i in index):
      continue
    t0 = time.perf_counter()
    state, padded, curves, resumed_at = step_lib.attack_group(job, data, group, index, progress)
    t1 = time.perf_counter()
    clean_latents = job.noise(data.purpose_key(step_lib.CLEAN_NOISE), index, None)
    result = job.evaluate_group(data, index, state, padded, clean_latents)
    t2 = time.perf_counter()
    new = [_row(data, int(i), clean, job.judge_names, result, k, curves)
           for k, i in enumerate(index)]
    report.save_images(workdir, data.name, index, new, result, job.judge_names,
                       config.images_per_prompt)
    rows += new
    rows.sort(key=lambda r: (r["set"], r["index"]))
    io.write_jsonl(results_path, rows)
    timing.setdefault(data.name, {"attack_s": 0.0, "eval_s": 0.0, "prompt_iterations": 0,
                                  "images": 0})
    t = timing[data.name]
    t["attack_s"] += t1 - t0
    t["eval_s"] += t2 - t1
    t["prompt_iterations"] += int(len(index) * (iterations - resumed_at))
    t["images"] += sum(len(result[m].texts) for m in ("attack", "baseline", "fixed_noise")
                       if m in result)
    io.write_json(timing_path, timing)
    finished[0] += len(index) * iterations
    for r in new:
      logging.info("[%s] prompt %d %r: %s (%d/%d samples succeed; baseline %s)", data.name,
                   r["index"], r["prompt"], "SUCCESS" if r["success"] else "no success",
                   r["successful_samples"], r["samples"],
                   r.get("baseline", {}).get("successful_samples", "-"))
  rows.sort(key=lambda r: (r["set"], r["index"]))
  io.write_jsonl(results_path, rows)
  out = report.write_report(workdir)
  pages.write_index(workdir)
  _publish(config, workdir, out)
  return out


def _publish(config, workdir: pathlib.Path, out: dict) -> None:
  """config.results_file (the `study` variants): <stem>.json (provenance + summary.json) and
  <stem>.md (provenance + report.md), `jaxdiffattack.publish.write_pair`."""
  stem = config.get("results_file", "")
  if stem:
    publish.write_pair(stem, workdir, out["summary"], (workdir / "report.md").read_text())
