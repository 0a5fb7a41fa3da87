"""results.jsonl rows of the attack job: one per prompt, attacked or skipped (the clean check),
from the judges' verdicts (`experiment.Judged`, `judges.Verdict`)."""

import math

import numpy as np

from jaxdiffattack.attacks.config import ATTACK_JUDGE


def _rounded(x) -> float | None:
  x = float(x)
  return round(x, 6) if math.isfinite(x) else None


def _clean_entry(clean: dict, j: str, i: int) -> dict:
  """Judge j's reading of prompt i's clean image (+ "unclear" for judges that give reasons)."""
  out = {"pred": clean["pred"][j][i], "confidence": _rounded(clean["confidence"][j][i])}
  if j in clean.get("unclear", {}):
    out["unclear"] = bool(clean["unclear"][j][i])
  return out


def _judge_counts(got, j: str, sl: slice) -> dict:
  """Judge j's counts over one prompt's samples: success (the attack's rule by j), failures and,
  for judges that give reasons (the oracle), unclear readings."""
  verdict, success = got.verdicts[j], got.success(j)[sl]
  out = {"success": bool(success.any()), "successful_samples": int(success.sum()),
         "failures": int(verdict.failure[sl].sum())}
  if verdict.reason:
    out["unclear"] = int(verdict.unclear[sl].sum())
  return out


def row(data, i: int, clean: dict, judges, result=None, position=None, curves=None) -> dict:
  """The row of prompt i of `data` (attacked when `result`, an evaluated group, is given; it sits
  at `position` in the group, whose loss curves are `curves`)."""
  ps = data.prompt_set
  out = {"set": data.name, "index": i, "prompt": ps.prompts[i], "class_word": ps.class_words[i],
         "label": int(ps.labels[i]), "clean_correct": bool(clean["correct"][i]),
         # Clean checks cached before the flag existed have no "nonfinite".
         "clean_nonfinite": "nonfinite" in clean and bool(clean["nonfinite"][i]),
         "clean": {j: _clean_entry(clean, j, i) for j in judges}}
  if result is None:
    out.update(attacked=False, success=None, samples=0, successful_prompts=[])
    return out
  s = len(result["attack"].texts) // result["prompts"]
  sl = slice(position * s, (position + 1) * s)
  for method in ("attack", "baseline", "fixed_noise"):
    if method not in result:
      continue
    got = result[method]
    successes = got.success(ATTACK_JUDGE)[sl]
    block = {
        "success": bool(successes.any()),
        "successful_samples": int(successes.sum()),
        "successful_prompts": list(dict.fromkeys(np.asarray(got.texts[sl], object)[successes]
                                                 .tolist())),
        "class_word_kept": int(got.class_word_present[sl].sum()),
        "tokens_changed_mean": round(float(np.mean(got.changed[sl])), 4),
        "judges": {j: _judge_counts(got, j, sl) for j in judges},
    }
    if method == "attack":
      out.update(attacked=True, samples=s, **block)
      curve = lambda k: [round(float(v), 5) for v in curves[k][:, position]]
      out["loss_curve"] = curve("loss") if "loss" in curves else []
      out["curves"] = {k: curve(k) for k in curves if k != "loss"}
    else:
      out[method] = block
  return out
