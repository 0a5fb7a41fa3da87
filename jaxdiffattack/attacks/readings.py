"""The attack job's readings of judged samples, in one place: per judge the predicted class,
confidence, failure and success (arXiv 2306.02583 §4.2: the classifier's top-1 is not the prompt's
class AND the class word is still in the prompt, `prompts.class_word_present`)."""

import numpy as np

from jaxdiffattack.attacks import prompts as prompts_lib


def read(judge_names, roles, scores: dict, texts, class_text) -> dict:
  """Per judge: pred names, confidences, failure and success flags of judged samples.

  `roles` are the scoring's roles by judge name (their `output_ids` name the predictions). The
  toy oracle (`toy.oracle.verdict`) fails an image only when it is sure the class is not drawn; an
  image it cannot read is `unclear` (pred None), neither failure nor success.
  """
  present = np.array([prompts_lib.class_word_present(t, c) for t, c in zip(texts, class_text)])
  out = {}
  for name in judge_names:
    if name == "oracle":
      failure = scores["oracle/failure"].astype(bool)
      out[name] = {"pred": [p if p is not None else "unclear" for p in scores["oracle/pred"]],
                   "confidence": np.array([np.nan if c is None else c
                                           for c in scores["oracle/confidence"]], np.float64),
                   "failure": failure, "success": failure & present,
                   "unclear": scores["oracle/unclear"].astype(bool),
                   # Scores cached before oracle v2 have no reason.
                   "reason": list(scores.get("oracle/reason",
                                             [""] * len(scores["oracle/pred"])))}
      continue
    role = roles[name]
    pred = np.asarray(scores[f"{name}/pred"], np.int64)
    top1_hit = np.asarray(scores[f"{name}/top1_hit"], np.float64)
    # A non-finite image/score (`sampler.nonfinite_as_nan`) is neither a failure nor correct.
    nonfinite = ~np.isfinite(top1_hit)
    failure = top1_hit < 0.5
    out[name] = {"pred": [None if bad else role.output_ids[p] for p, bad in zip(pred, nonfinite)],
                 "confidence": np.asarray(scores[f"{name}/confidence"], np.float64),
                 "failure": failure, "success": failure & present, "nonfinite": nonfinite}
  out["class_word_present"] = present
  return out
