"""World 2's training data: rendered scenes in resumable shards, captions drawn on the fly.

``ensure_split(workdir, split, count, shard_size, size, seed)`` renders scenes
``0..count-1`` of a split (`scene.scene(split, i, seed)`) into
``workdir/data/<split>_<k:05d>.npz`` shards of `shard_size` scenes, each written atomically and
read back with ``np.load(allow_pickle=False)``. Several processes may call it on one workdir at
once: a shard is claimed by creating ``<shard>.claim`` exclusively (O_EXCL; the claim holds the
claimer's pid, and a claim of a dead pid on this host is taken over), so every shard is
rendered once, and each process then waits until every shard exists.

A shard holds the images and each scene's *spec* as int arrays (`SPEC_FIELDS`: per group class,
count, size, texture; the relation; the background kind; -1 = no such group), so a training
step draws a fresh caption of each scene (`captions.caption`, any length 4-60) from a
step-seeded rng: many captions per scene, never stored.
"""
from __future__ import annotations

import io
import os
import pathlib
import socket
import time
from typing import NamedTuple, Sequence

from absl import logging
import numpy as np

from jaxdiffattack.errors import UserError
from jaxdiffattack.io import atomic_write_bytes
from jaxdiffattack.world2 import captions as captions_lib
from jaxdiffattack.world2 import render as render_lib
from jaxdiffattack.world2 import scene as scene_lib

MAX_GROUPS = 3
SPEC_FIELDS = ("group_cls", "group_count", "group_size", "group_texture", "relation",
               "background", "layout")


class Split(NamedTuple):
  """Rendered scenes of one split (N scenes)."""
  images: np.ndarray         # (N, S, S, 3) uint8
  index: np.ndarray          # (N,) int64 scene index within the split
  group_cls: np.ndarray      # (N, 3) int16 class id per group, -1 = none
  group_count: np.ndarray    # (N, 3) int8 objects per group (0 = none)
  group_size: np.ndarray     # (N, 3) int8 index into scene.SIZES, -1 = none
  group_texture: np.ndarray  # (N, 3) int8 index into scene.TEXTURES, -1 = none
  relation: np.ndarray       # (N,) int8 index into scene.RELATIONS, -1 = none
  background: np.ndarray     # (N,) int8 index into scene.BACKGROUNDS
  layout: np.ndarray         # (N,) int8 index into scene.LAYOUTS

  def __len__(self):
    return len(self.images)

  def spec(self, i: int) -> scene_lib.SceneSpec:
    """Scene i's spec without geometry (what `captions.caption` reads)."""
    groups = tuple(
        scene_lib.GroupSpec(int(self.group_cls[i, g]), int(self.group_count[i, g]),
                            scene_lib.SIZES[self.group_size[i, g]],
                            scene_lib.TEXTURES[self.group_texture[i, g]])
        for g in range(MAX_GROUPS) if self.group_cls[i, g] >= 0)
    bg = scene_lib.BackgroundSpec(scene_lib.BACKGROUNDS[self.background[i]], (0.0,) * 3,
                                  (0.0,) * 3, 0.0, 0.0, 0.0, 0)
    rel = scene_lib.RELATIONS[self.relation[i]] if self.relation[i] >= 0 else None
    return scene_lib.SceneSpec(bg, groups, rel, (), scene_lib.LAYOUTS[self.layout[i]][0])

  @property
  def num_objects(self) -> np.ndarray:
    return self.group_count.sum(1)

  @property
  def single(self) -> np.ndarray:
    """(N,) bool: scenes of one object."""
    return self.num_objects == 1


def spec_arrays(specs: Sequence[scene_lib.SceneSpec]) -> dict[str, np.ndarray]:
  n = len(specs)
  out = {"group_cls": -np.ones((n, MAX_GROUPS), np.int16),
         "group_count": np.zeros((n, MAX_GROUPS), np.int8),
         "group_size": -np.ones((n, MAX_GROUPS), np.int8),
         "group_texture": -np.ones((n, MAX_GROUPS), np.int8),
         "relation": -np.ones(n, np.int8), "background": np.zeros(n, np.int8),
         "layout": np.zeros(n, np.int8)}
  layouts = [l[0] for l in scene_lib.LAYOUTS]
  for i, s in enumerate(specs):
    for g, grp in enumerate(s.groups):
      out["group_cls"][i, g] = grp.cls
      out["group_count"][i, g] = grp.count
      out["group_size"][i, g] = scene_lib.SIZES.index(grp.size)
      out["group_texture"][i, g] = scene_lib.TEXTURES.index(grp.texture)
    if s.relation is not None:
      out["relation"][i] = scene_lib.RELATIONS.index(s.relation)
    out["background"][i] = scene_lib.BACKGROUNDS.index(s.background.kind)
    out["layout"][i] = layouts.index(s.layout)
  return out


def render_shard(split: str, start: int, count: int, size: int, seed: int) -> dict:
  specs = scene_lib.sample_scenes(split, start, count, seed)
  return dict(images=render_lib.render_batch(specs, size),
              index=np.arange(start, start + count, dtype=np.int64), **spec_arrays(specs))


def shard_path(workdir: pathlib.Path, split: str, k: int) -> pathlib.Path:
  return pathlib.Path(workdir) / "data" / f"{split}_{k:05d}.npz"


def _claim(path: pathlib.Path) -> bool:
  """Claims `path` for this process (exclusive create of path.claim); takes over the claim of
  a dead process of this host."""
  claim = path.with_name(path.name + ".claim")
  me = f"{socket.gethostname()} {os.getpid()}"
  for _ in range(2):
    try:
      fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      try:
        host, pid = claim.read_text().split()
      except (OSError, ValueError):
        return False  # Being written right now: another process's.
      if host != socket.gethostname() or _alive(int(pid)):
        return False
      claim.unlink(missing_ok=True)  # A dead claimer's: take it over.
      continue
    with os.fdopen(fd, "w") as f:
      f.write(me)
    return True
  return False


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def ensure_split(workdir, split: str, count: int, shard_size: int, size: int, seed: int,
                 poll_s: float = 5.0) -> Split:
  """Renders the missing shards of scenes 0..count-1 of `split` (shared by processes, see the
  module docstring) and returns them all, loaded."""
  if count <= 0 or shard_size <= 0:
    raise UserError(f"world2 data: count={count}, shard_size={shard_size} are invalid: both "
                    "must be positive")
  workdir = pathlib.Path(workdir)
  (workdir / "data").mkdir(parents=True, exist_ok=True)
  n_shards = -(-count // shard_size)
  t0, made = time.time(), 0
  for k in range(n_shards):
    path = shard_path(workdir, split, k)
    if path.exists() or not _claim(path):
      continue
    start = k * shard_size
    n = min(shard_size, count - start)
    arrays = render_shard(split, start, n, size, seed)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    path.with_name(path.name + ".claim").unlink(missing_ok=True)
    made += n
    rate = made / max(time.time() - t0, 1e-9)
    left = sum(not shard_path(workdir, split, j).exists() for j in range(n_shards))
    logging.info("[data] %s shard %d/%d (%d scenes) written; %.1f scenes/s, ETA %.0fs "
                 "(this process alone)", split, k + 1, n_shards, n, rate,
                 left * shard_size / rate)
  waited = False
  while True:
    missing = [k for k in range(n_shards) if not shard_path(workdir, split, k).exists()]
    if not missing:
      break
    if not waited:
      logging.info("[data] waiting for %d %s shard(s) another process renders (%s)",
                   len(missing), split, shard_path(workdir, split, missing[0]).name)
      waited = True
    for k in missing:  # A claimer that died: render its shard ourselves.
      path = shard_path(workdir, split, k)
      if not path.exists() and _claim(path):
        start = k * shard_size
        arrays = render_shard(split, start, min(shard_size, count - start), size, seed)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())
        path.with_name(path.name + ".claim").unlink(missing_ok=True)
    time.sleep(poll_s)
  return load_split(workdir, split, n_shards, count, size)


def load_split(workdir, split: str, n_shards: int, count: int, size: int) -> Split:
  parts = []
  for k in range(n_shards):
    with np.load(shard_path(workdir, split, k), allow_pickle=False) as z:
      parts.append({f: z[f] for f in Split._fields})
  out = Split(**{f: np.concatenate([p[f] for p in parts]) for f in Split._fields})
  if len(out) != count or out.images.shape[1:] != (size, size, 3):
    raise UserError(f"world2 data: {workdir}/data holds {len(out)} {split} scenes of "
                    f"{out.images.shape[1:]}, the config asks {count} of {(size, size, 3)}: "
                    "use a fresh workdir or the config it was made with")
  return out


# ------------------------------------------------------------------- batches --
def sample_batch(rng: np.random.Generator, split: Split, batch: int,
                 single_fraction: float | None = None) -> np.ndarray:
  """Indices of a batch: uniform over scenes, or with about `single_fraction` single-object
  scenes when given."""
  if single_fraction is None:
    return rng.integers(0, len(split), batch).astype(np.int64)
  single = split.single
  ones, many = np.flatnonzero(single), np.flatnonzero(~single)
  n1 = int(round(batch * single_fraction)) if len(many) else batch
  return np.concatenate([rng.choice(ones, n1), rng.choice(many, batch - n1)]).astype(np.int64)


def sample_hue_groups(rng: np.random.Generator, split: Split, batch: int,
                      group: int) -> np.ndarray:
  """Indices of a contrastive batch of `batch // group` groups of `group` scenes, each group
  sharing its first object's hue and its number of object groups (anchors uniform over scenes,
  the rest drawn with replacement from the anchor's pool). With uniform batches a caption can be
  told from the others by hue, background and size alone, and CLIP learns no shapes (world 2's
  first CLIP: zero-shot hue right 100 %, shape right 11 %); within a group only the shape (and
  texture, size) tells the captions apart. group=1 is `sample_batch`'s uniform batch."""
  if group < 1 or batch % group:
    raise UserError(f"world2: hue group {group} must be >= 1 and divide the batch {batch}")
  if group == 1:
    return sample_batch(rng, split, batch)
  hue = np.array([scene_lib.HUE_NAMES.index(scene_lib.class_hue(c))
                  for c in range(scene_lib.NUM_CLASSES)])
  key = hue[split.group_cls[:, 0]] * (MAX_GROUPS + 1) + (split.group_cls >= 0).sum(1)
  order = np.argsort(key, kind="stable")
  sorted_key = key[order]
  anchors = rng.integers(0, len(split), batch // group)
  out = []
  for a in anchors:
    lo, hi = np.searchsorted(sorted_key, key[a], "left"), np.searchsorted(sorted_key, key[a],
                                                                          "right")
    out.append(a)
    out.extend(order[rng.integers(lo, hi, group - 1)])
  return np.asarray(out, np.int64)


def soft_targets(split: Split, idx: np.ndarray, num_classes: int) -> np.ndarray:
  """(B, C) class weights: each object's class gets 1 / (objects in the scene)."""
  t = np.zeros((len(idx), num_classes), np.float32)
  for g in range(MAX_GROUPS):
    cls, cnt = split.group_cls[idx, g], split.group_count[idx, g].astype(np.float32)
    ok = cls >= 0
    np.add.at(t, (np.flatnonzero(ok), cls[ok]), cnt[ok])
  return t / t.sum(1, keepdims=True)


def draw_captions(rng: np.random.Generator, split: Split, idx: np.ndarray
                  ) -> tuple[list[str], list[captions_lib.Facts]]:
  """A fresh caption of each scene of the batch (lengths 4-60 tokens, `captions.caption`)."""
  texts, facts = [], []
  for i in idx:
    t, f = captions_lib.caption(split.spec(int(i)), rng)
    texts.append(t)
    facts.append(f)
  return texts, facts


def _facts_array(facts: Sequence[captions_lib.Facts]) -> tuple[np.ndarray, ...]:
  n = len(facts)
  g = -np.ones((n, MAX_GROUPS, 4), np.int16)  # cls, count, size (-1 unnamed), texture
  rel, bg = -np.ones(n, np.int16), -np.ones(n, np.int16)
  for i, f in enumerate(facts):
    for k, gf in enumerate(f.groups):
      g[i, k] = (gf.cls, gf.count, -1 if gf.size is None else scene_lib.SIZES.index(gf.size),
                 -1 if gf.texture is None else scene_lib.TEXTURES.index(gf.texture))
    rel[i] = -1 if f.relation is None else scene_lib.RELATIONS.index(f.relation)
    bg[i] = -1 if f.background is None else scene_lib.BACKGROUNDS.index(f.background)
  return g, rel, bg


def caption_matches(facts: Sequence[captions_lib.Facts], split: Split,
                    idx: np.ndarray) -> np.ndarray:
  """(B, B) bool: caption i is true of scene idx[j] (`captions.consistent`, vectorised: the
  groups of a scene have distinct classes, so groups match by class)."""
  g, rel, bg = _facts_array(facts)
  s = np.stack([split.group_cls[idx], split.group_count[idx], split.group_size[idx],
                split.group_texture[idx]], -1).astype(np.int16)  # (B, 3, 4)
  c, s_ = g[:, None, :, None, :], s[None, :, None, :, :]  # (B, 1, 3, 1, 4), (1, B, 1, 3, 4)
  m = ((c[..., 0] == s_[..., 0]) & (c[..., 1] == s_[..., 1])
       & ((c[..., 2] < 0) | (c[..., 2] == s_[..., 2]))
       & ((c[..., 3] < 0) | (c[..., 3] == s_[..., 3])) & (s_[..., 0] >= 0))  # (B, B, 3, 3)
  ordered = rel[:, None] >= 0
  same_slot = np.eye(MAX_GROUPS, dtype=bool)[None, None]
  m = np.where(ordered[..., None, None], m & same_slot, m)
  used = g[:, None, :, 0] >= 0                                        # (B, 1, 3)
  ok = np.all(~used | m.any(-1), -1)
  n_cap = (g[:, :, 0] >= 0).sum(1)
  n_scene = (split.group_cls[idx] >= 0).sum(1)
  ok &= n_cap[:, None] == n_scene[None, :]
  ok &= rel[:, None] == split.relation[idx][None, :]
  ok &= (bg[:, None] < 0) | (bg[:, None] == split.background[idx][None, :])
  return ok
