"""Does world 2's generator read every word of its caption? (issue #23: a generator whose
text conditioning carries the hue but not the shape draws the same image for "a picture of a
orange square" and "... orange circle" -- found at UNet step 5,000 of the first run,
docs/results/world2_preview_unet_step5000.png.)

For the 83 class prompts `labels.WORLD2_SHORT.format(class)` this measures, on an exported
SD-layout generator:

  text    the text encoder's last hidden states (what the UNet's cross-attention reads) at the
          class's last word and at EOS: mean cosine between prompts of the same hue and another
          shape ("same_hue") and of the same shape and another hue ("same_shape"); near 1 for
          same_hue means the states do not tell the shapes apart;
  eps     the UNet's noise prediction on shared noisy latents x_t (`num_latents` standard-normal
          latents, each timestep t of `timesteps`): the mean over pairs of
          ‖ε(x_t, t, c_a) − ε(x_t, t, c_b)‖ / √n (n = latent size, so a unit is one standard
          deviation per coordinate) for same_hue pairs and same_shape pairs, and
          ‖ε(x_t, t, c) − ε(x_t, t, "")‖ / √n (the conditional signal that classifier-free
          guidance amplifies); `shape_to_hue` = same_hue / same_shape distance (0: the shape
          word changes nothing; ~1: a shape change moves the prediction as much as a hue change).

Pairs are unordered and taken within the 83 classes (`pair_masks`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack import labels as labels_lib
from jaxdiffattack import text
from jaxdiffattack.world2 import scene

TIMESTEPS = (999, 700, 400, 100)


def _r(x: float) -> float:
  """4 significant digits (the eps distances of a young UNet are ~1e-3)."""
  return float(f"{x:.4g}")


def class_prompts() -> list[str]:
  return [labels_lib.WORLD2_SHORT.format(name) for name in scene.CLASSES]


def pair_masks() -> tuple[np.ndarray, np.ndarray]:
  """(same_hue, same_shape): [83, 83] booleans, upper triangle only (unordered pairs);
  same_hue = same hue and another shape, same_shape = same shape and another hue."""
  hue = np.array([scene.class_hue(i) for i in range(scene.NUM_CLASSES)])
  shape = np.array([scene.class_shape(i) for i in range(scene.NUM_CLASSES)])
  upper = np.triu(np.ones((scene.NUM_CLASSES,) * 2, bool), k=1)
  same_hue = (hue[:, None] == hue[None]) & (shape[:, None] != shape[None]) & upper
  same_shape = (hue[:, None] != hue[None]) & (shape[:, None] == shape[None]) & upper
  return same_hue, same_shape


def _cosines(u: np.ndarray) -> np.ndarray:
  u = u / np.linalg.norm(u, axis=-1, keepdims=True)
  return u @ u.T


def pair_distances(x: np.ndarray) -> np.ndarray:
  """[P, P] Euclidean distances between the rows of x [P, ...] divided by √(row size)."""
  flat = x.reshape(len(x), -1).astype(np.float64)
  sq = (flat ** 2).sum(1)
  d2 = np.maximum(sq[:, None] + sq[None] - 2 * flat @ flat.T, 0.0)
  return np.sqrt(d2) / np.sqrt(flat.shape[1])


def text_states(sd, params, prompts) -> tuple[np.ndarray, np.ndarray]:
  """(states [P, 77, D], EOS positions [P]) of the generator's text encoder."""
  ids = text.tokenize(sd, prompts)
  states = np.asarray(text.encode_ids(sd, params["text_encoder"], jnp.asarray(ids)), np.float64)
  eos = np.argmax(ids == sd.tokenizer.eos_token_id, axis=1)
  return states, eos


def separation(sd, params, *, num_latents: int = 2, timesteps=TIMESTEPS, seed: int = 0,
               batch: int = 83) -> dict:
  """The text and eps measures of the module docstring (floats to 4 significant digits)."""
  same_hue, same_shape = pair_masks()
  prompts = class_prompts()
  states, eos = text_states(sd, params, prompts)
  uncond, _ = text_states(sd, params, [""])
  rows = np.arange(len(prompts))
  out = {"prompts": len(prompts), "pairs_same_hue": int(same_hue.sum()),
         "pairs_same_shape": int(same_shape.sum()), "text": {}, "eps": {}}
  for name, pos in (("last_word", eos - 1), ("eos", eos)):
    cos = _cosines(states[rows, pos])
    out["text"][f"cos_{name}_same_hue"] = _r(float(cos[same_hue].mean()))
    out["text"][f"cos_{name}_same_shape"] = _r(float(cos[same_shape].mean()))
  dist = pair_distances(states)
  out["text"]["dist_same_hue"] = _r(float(dist[same_hue].mean()))
  out["text"]["dist_same_shape"] = _r(float(dist[same_shape].mean()))

  cfg = sd.unet.config
  size = int(cfg.sample_size)
  shape = (int(cfg.in_channels), size, size)
  dtype = jax.tree_util.tree_leaves(params["unet"])[0].dtype

  @jax.jit
  def eps(x, t, cond):  # x [B, C, h, w], t scalar, cond [B, 77, D]
    ts = jnp.full((x.shape[0],), t, jnp.int32)
    return sd.unet.apply({"params": params["unet"]}, x, ts, cond)

  cond_all = jnp.asarray(np.concatenate([states, uncond]), dtype)  # [P + 1, 77, D]
  key = jax.random.PRNGKey(seed)
  for t in timesteps:
    hue_d, shape_d, signal = [], [], []
    for k in range(num_latents):
      x = jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, t), k), (1,) + shape,
                            dtype)
      preds = []
      for start in range(0, len(cond_all), batch):
        c = cond_all[start:start + batch]
        preds.append(np.asarray(eps(jnp.broadcast_to(x, (len(c),) + shape), t, c)))
      e = np.concatenate(preds)
      full = pair_distances(e)          # [P + 1, P + 1]: the last row is the unconditional
      d = full[:-1, :-1]
      hue_d.append(d[same_hue].mean())
      shape_d.append(d[same_shape].mean())
      signal.append(np.mean(full[-1, :-1]))
    h, s = float(np.mean(hue_d)), float(np.mean(shape_d))
    out["eps"][str(t)] = {"dist_same_hue": _r(h), "dist_same_shape": _r(s),
                          "dist_to_uncond": _r(float(np.mean(signal))),
                          "shape_to_hue": _r(h / s) if s else None}
  ratios = [v["shape_to_hue"] for v in out["eps"].values() if v["shape_to_hue"] is not None]
  out["eps_shape_to_hue_mean"] = _r(float(np.mean(ratios))) if ratios else None
  return out
