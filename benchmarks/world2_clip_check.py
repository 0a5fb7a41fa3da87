r"""Does world 2's CLIP read shapes? Zero-shot on the test split's single-object scenes.

  python benchmarks/world2_clip_check.py --workdir /work/w2run/run --out docs/results/F.json

Loads the CLIP checkpoint of a (possibly unfinished) world-2 run (`--stage` clip or clip_tune,
or `--checkpoint` a copied checkpoint file) and scores the 83 prompts "a <class>" against the
single-object test scenes (`world2.train.clip_zero_shot`): top-1, top-5, how often the
predicted class has the right hue / the right shape, and how far apart the prompts' text
features are (the mean over prompts of the highest cosine to another prompt, overall and among
prompts of the same hue: near 1 means the text tower does not tell those prompts apart), and
the same for the text tower's per-token states the UNet reads (`token_state_separation`).
"""
import pathlib
import time

from absl import app
from absl import flags
import flax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack import variants
from jaxdiffattack.world2 import scene
from jaxdiffattack.world2 import train

import evidence  # benchmarks/evidence.py (run as a script: benchmarks/ is on sys.path)

_WORKDIR = flags.DEFINE_string("workdir", "/work/w2run/run", "the run's workdir (data, tokenizer)")
_STAGE = flags.DEFINE_string("stage", "clip", "checkpoint: clip or clip_tune")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "", "a checkpoint file instead of the stage's")
_VARIANT = flags.DEFINE_string("variant", "", "config variants of the run")
_NOTE = flags.DEFINE_string("note", "", "what this checkpoint is (kept in the JSON)")
_OUT = flags.DEFINE_string("out", "", "results JSON")


def text_separation(model, tok) -> dict:
  ids = train.tokenize(tok, [train.class_prompt(i) for i in range(scene.NUM_CLASSES)],
                       train.MODEL_MAX_LENGTH)
  t = np.asarray(model.module.apply({"params": model.params}, jnp.asarray(ids),
                                    method="get_text_features"), np.float64)
  t /= np.linalg.norm(t, axis=1, keepdims=True)
  cos = t @ t.T
  np.fill_diagonal(cos, -np.inf)
  hue = np.array([scene.class_hue(i) for i in range(scene.NUM_CLASSES)])
  same = np.where(hue[:, None] == hue[None, :], cos, -np.inf)
  return {"max_cos_to_another_prompt": round(float(cos.max(1).mean()), 5),
          "max_cos_to_a_same_hue_prompt": round(float(same.max(1).mean()), 5)}


def token_state_separation(model, tok) -> dict:
  """How far apart the text tower's last hidden states (what the UNet's cross-attention reads) are
  for prompts "a <hue> <shape>": the mean cosine between prompts of the same hue and another
  shape, and of the same shape and another hue, at the EOS state and at the last word's state
  (the shape word's), and the mean |difference| over all 77 states relative to their mean |state|."""
  from jaxdiffattack.models import clip as clip_lib  # pylint: disable=g-import-not-at-top
  ids = train.tokenize(tok, [train.class_prompt(i) for i in range(scene.NUM_CLASSES)],
                       train.MODEL_MAX_LENGTH)
  text = clip_lib.CLIPTextModel(model.module.config.text)
  h = np.asarray(text.apply({"params": {"text_model": model.params["text_model"]}},
                            jnp.asarray(ids)).last_hidden_state, np.float64)  # [83, 77, D]
  hue = np.array([scene.class_hue(i) for i in range(scene.NUM_CLASSES)])
  shape = np.array([scene.class_shape(i) for i in range(scene.NUM_CLASSES)])
  same_hue = (hue[:, None] == hue[None]) & (shape[:, None] != shape[None])
  same_shape = (hue[:, None] != hue[None]) & (shape[:, None] == shape[None])
  eos = np.argmax(ids == tok.eos_token_id, axis=1)
  rows = np.arange(len(ids))
  out = {}
  for name, states in (("eos", h[rows, eos]), ("shape_word", h[rows, eos - 1])):
    u = states / np.linalg.norm(states, axis=1, keepdims=True)
    cos = u @ u.T
    out[f"token_cos_{name}_same_hue_other_shape"] = round(float(cos[same_hue].mean()), 4)
    out[f"token_cos_{name}_same_shape_other_hue"] = round(float(cos[same_shape].mean()), 4)
  diff = np.abs(h[:, None] - h[None]).mean(axis=(2, 3))  # [83, 83] mean |difference|
  scale = float(np.abs(h).mean())
  out["token_diff_same_hue_other_shape_rel"] = round(float(diff[same_hue].mean()) / scale, 4)
  out["token_diff_same_shape_other_hue_rel"] = round(float(diff[same_shape].mean()) / scale, 4)
  return out


def main(argv):
  del argv
  config = variants.load_config("train_world2", _VARIANT.value)
  workdir = pathlib.Path(_WORKDIR.value)
  d = train.make_data(config, workdir)
  raw = (flax.serialization.msgpack_restore(pathlib.Path(_CHECKPOINT.value).read_bytes())
         if _CHECKPOINT.value else train.load_checkpoint(workdir, _STAGE.value))
  tok, _ = train._tokenizer(workdir)  # pylint: disable=protected-access
  step = int(raw["step"])
  model = train.clip_net(config, tok)._replace(params=raw["params"])
  t0 = time.time()
  out = {"command": "python benchmarks/world2_clip_check.py " + " ".join(
             f"--{k}={v}" for k, v in (("workdir", _WORKDIR.value), ("stage", _STAGE.value),
                                       ("checkpoint", _CHECKPOINT.value),
                                       ("variant", _VARIANT.value)) if v),
         "note": _NOTE.value, "checkpoint_step": step,
         "single_object_test_scenes": int(d.test.single.sum()),
         **train.clip_zero_shot(model, tok, d.test), **text_separation(model, tok),
         **token_state_separation(model, tok),
         "eval_s": round(time.time() - t0, 1)}
  evidence.emit(out, _OUT.value)


if __name__ == "__main__":
  app.run(main)
