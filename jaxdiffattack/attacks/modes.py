"""Which token positions an ATM attack may change (arXiv 2306.02583 §3.1, and its released code).

A mode maps a tokenized clean prompt to a boolean mask over its L positions (`MODES`: one function
+ one line to add one). Positions outside the mask keep their clean token exactly: their relaxed
sample is the clean token's one-hot and their logits get no gradient, so the class word, BOS and
any other fixed token never change in any mode.
  * `replace` (the paper's "replace" attack): the prompt's own word tokens, except the class
    word's; BOS, EOS and padding stay.
  * `extend` (the paper's "extend" attack): `extend_tokens` new tokens appended after the prompt,
    i.e. the EOS position and the padding positions after it (fewer when the prompt leaves less
    room: a prompt truncated at the token limit can change only its last, EOS, position); the
    prompt itself stays.
  * `released`: what the released code does — every position whose clean token id does not occur
    among the prompt's tokens before its EOS may change (gradients are zeroed at all others). For
    CLIP tokenizers that pad with EOS (SD 1.x, the toy) this is `extend` into all of the padding.
    One difference, on purpose: the released code still Gumbel-samples its frozen positions from
    their initial logits (clean token at logit 15, so a frozen token changes with probability
    ≈ V / (V + e^15), 1.5 % on SD's 49408-token vocabulary); here frozen tokens never change.
A mode that leaves a prompt nothing to change (`replace` on a prompt that is only its class word)
is an error.
"""

import numpy as np

from jaxdiffattack.errors import ConfigError


def replace(ids: np.ndarray, length: int, class_mask: np.ndarray, extend_tokens: int) -> np.ndarray:
  del ids, extend_tokens
  free = np.zeros(class_mask.shape, bool)
  free[1:length - 1] = True
  return free & ~class_mask


def extend(ids: np.ndarray, length: int, class_mask: np.ndarray, extend_tokens: int) -> np.ndarray:
  del ids
  free = np.zeros(class_mask.shape, bool)
  free[length - 1:length - 1 + extend_tokens] = True
  return free


def released(ids: np.ndarray, length: int, class_mask: np.ndarray, extend_tokens: int) -> np.ndarray:
  del class_mask, extend_tokens
  return ~np.isin(ids, ids[:length - 1])


MODES = {"replace": replace, "extend": extend, "released": released}


def free_positions(mode: str, ids: np.ndarray, lengths: np.ndarray, class_mask: np.ndarray,
                   extend_tokens: int = 5) -> np.ndarray:
  """[N, L] bool: the positions each prompt's attack may change.

  Args:
    mode: a `MODES` name.
    ids: [N, L] clean token ids (BOS … EOS, padded).
    lengths: [N] tokens up to and including EOS.
    class_mask: [N, L] the class word's positions (never free).
    extend_tokens: tokens appended by `extend`.
  """
  if mode not in MODES:
    raise ConfigError(f"config.mode={mode!r} is invalid: use one of {sorted(MODES)}")
  if mode == "extend" and (not isinstance(extend_tokens, int) or extend_tokens < 1):
    raise ConfigError(f"config.extend_tokens={extend_tokens!r} is invalid: use an integer >= 1")
  free = np.stack([MODES[mode](ids[i], int(lengths[i]), class_mask[i], extend_tokens)
                   for i in range(len(ids))]).astype(bool)
  free[:, 0] = False               # BOS
  free &= ~class_mask
  empty = np.flatnonzero(~free.any(axis=1))
  if len(empty):
    raise ConfigError(f"config.mode={mode!r} leaves prompt {int(empty[0])} nothing to change "
                      f"({int(lengths[empty[0]])} of {ids.shape[1]} tokens used): use another mode "
                      "or a shorter prompt")
  return free
