"""A preview export of a running world-2 training workdir (issue #23: how is the generator doing
while its UNet still trains?).

`world2.train.export` needs every stage finished. `preview_export(config, workdir, out)` writes the
same SD-layout directory (`toy.train.export`: sd/, clip/, vit/, resnet/, train_metrics.json) from
whatever checkpoints the workdir holds now, finished or not:

  unet    checkpoints/unet.msgpack's EMA weights (required); with config.unet.text_encoder_lr
          > 0 also its trained text tower's EMA, written as sd/text_encoder (clip/ stays CLIP's);
  vae     vae_tune's latest checkpoint if there is one, else vae's; the latent scaling from the
          finished vae stage (stages/vae.json, required: the UNet trains on those latents);
  clip    clip_tune's latest checkpoint if there is one, else clip's (required);
  vit, resnet   when their checkpoints exist.

The checkpoints, stage records and tokenizer are first copied into a temporary snapshot (each
checkpoint is replaced atomically by the trainer, so a copy is one whole version), and the
models are read from the snapshot with `world2.train`'s own loaders. The export is never written
inside the workdir. Its train_metrics.json (and preview.json) say it is a preview and record each
part's stage, checkpoint step and whether that stage had finished (`PreviewInfo`).
"""
from __future__ import annotations

import collections
import json
import pathlib
import shutil
import tempfile
from typing import NamedTuple

import numpy as np

from jaxdiffattack import io
from jaxdiffattack.census import verdict_of
from jaxdiffattack.errors import UserError
from jaxdiffattack.toy import train as toy_train
from jaxdiffattack.world2 import train

# Part of the export -> the stages whose checkpoint it reads, preferred first.
PARTS = {"unet": ("unet",), "vae": ("vae_tune", "vae"), "clip": ("clip_tune", "clip"),
         "vit": ("vit",), "resnet": ("resnet",)}
REQUIRED = ("unet", "vae", "clip")


class PartInfo(NamedTuple):
  stage: str       # the stage whose checkpoint was read
  step: int        # that checkpoint's step
  finished: bool   # whether the stage had finished (stages/<stage>.json at its num_steps)


class PreviewInfo(NamedTuple):
  workdir: str
  parts: dict      # part name -> PartInfo (absent classifiers are left out)
  scaling: float   # the VAE latent scaling (stages/vae.json)

  @property
  def unet_step(self) -> int:
    return self.parts["unet"].step

  def record(self) -> dict:
    return {"preview": True, "workdir": self.workdir, "unet_step": self.unet_step,
            "scaling_factor": self.scaling,
            "parts": {k: v._asdict() for k, v in self.parts.items()}}


def _checkpoint(workdir: pathlib.Path, stage: str) -> pathlib.Path:
  return workdir / "checkpoints" / f"{stage}.msgpack"


def snapshot(workdir: pathlib.Path, dest: pathlib.Path) -> None:
  """Copies the workdir's checkpoints/<stage>.msgpack (of PARTS' stages), stages/*.json and
  tokenizer/ into dest (a whole-file copy of each atomically replaced checkpoint)."""
  (dest / "checkpoints").mkdir(parents=True)
  for stages in PARTS.values():
    for stage in stages:
      if _checkpoint(workdir, stage).is_file():
        shutil.copyfile(_checkpoint(workdir, stage), _checkpoint(dest, stage))
  (dest / "stages").mkdir()
  for f in (workdir / "stages").glob("*.json"):
    shutil.copyfile(f, dest / "stages" / f.name)
  if (workdir / "tokenizer").is_dir():
    shutil.copytree(workdir / "tokenizer", dest / "tokenizer")


def _which(workdir: pathlib.Path, part: str) -> str | None:
  return next((s for s in PARTS[part] if _checkpoint(workdir, s).is_file()), None)


def preview_export(config, workdir, out) -> PreviewInfo:
  """Writes the preview export of `workdir` (trained with `config`, configs/train_world2.py)
  into `out` (see the module docstring); returns what it read."""
  workdir, out = pathlib.Path(workdir).resolve(), pathlib.Path(out).resolve()
  if out == workdir or workdir in out.parents:
    raise UserError(f"world2 preview: --out={out} is inside the training workdir {workdir}; "
                    "write the preview elsewhere (the workdir belongs to the training run)")
  for part in REQUIRED:
    if _which(workdir, part) is None:
      names = " or ".join(f"checkpoints/{s}.msgpack" for s in PARTS[part])
      raise UserError(f"world2 preview: workdir={workdir} has no {part} checkpoint ({names}); "
                      "wait until that stage has written its first checkpoint")
  if not train.stage_file(workdir, "vae").is_file():
    raise UserError(f"world2 preview: workdir={workdir} has no stages/vae.json; the VAE must "
                    "have finished (its latent scaling factor is recorded there)")
  with tempfile.TemporaryDirectory(prefix="w2preview_") as tmp:
    snap = pathlib.Path(tmp)
    snapshot(workdir, snap)
    parts = {}
    which = {p: _which(snap, p) for p in PARTS}
    for part, stage in which.items():
      if stage is not None:
        ck = train.load_checkpoint(snap, stage)
        parts[part] = PartInfo(stage, int(ck["step"]),
                               train.stage_done(config, snap, stage) is not None)
    # The UNet's EMA (and the text tower's, when config.unet.text_encoder_lr > 0 trains it).
    unet_params, text_params = train.split_unet_params(
        train.load_checkpoint(snap, "unet")["ema"])
    clip, _, tok_dir = train.load_clip(config, snap, which["clip"])
    _, vae_params, scaling = train.load_vae(config, snap, which["vae"])
    classifiers = {n: train.load_classifier(config, snap, n)[0] if which[n] else None
                   for n in ("vit", "resnet")}
    info = PreviewInfo(str(workdir), parts, float(scaling))
    trained = toy_train.Trained(tok_dir, clip, classifiers["vit"], classifiers["resnet"], None,
                                vae_params, scaling, train.unet_module(config), unet_params)
    finished = {n: json.loads(f.read_text())["metrics"]
                for n, f in ((f.stem, f) for f in sorted((snap / "stages").glob("*.json")))}
    toy_train.export(config, trained, out, {**info.record(), "finished_stages": finished},
                     image_size=config.data.image_size, labels=train.LABELS,
                     vae_fn=train.vae_module, text_encoder_params=text_params)
  io.write_json(out / "preview.json", info.record())
  return info


def read_info(out) -> dict:
  """The preview.json of a preview export directory."""
  path = pathlib.Path(out) / "preview.json"
  if not path.is_file():
    raise UserError(f"world2 preview: {path} does not exist; {out} is not a preview export "
                    "(write one with benchmarks/world2_preview.py)")
  return json.loads(path.read_text())


# ---------------------------------------------------------------- census summary --
def _rates(verdicts: list[str]) -> dict:
  n = len(verdicts)
  return {"images": n, **{v: (verdicts.count(v) / n if n else None)
                          for v in ("holds", "violated", "unclear")}}


def split_class(name: str) -> tuple[str, str]:
  """(hue, shape) of a class name ("purple six-pointed star" -> ("purple", "six-pointed star"))."""
  hue, shape = name.split(" ", 1)
  return hue, shape


def summarize(rows: list[dict], top: int = 10) -> dict:
  """The preview's numbers from census image rows (`census.run`'s "rows"; oracle verdicts):

    by_kind        per prompt kind: images and the holds / violated / unclear rates;
    failure_kinds  per `failures.KINDS` entry: images and share of all images;
    by_shape       per shape named by single-object prompts: images, holds rate, and how often
                   the oracle's reading of the first object (`oracle.first_object`: the named
                   class when drawn, else the largest object read) has that shape
                   ("shape_read"), the named hue ("hue_read"), or no object was read
                   ("nothing_read");
    classes        per class: images, holds / violated / unclear rates, the commonest failure
                   kind and the commonest wrong single object read;
    worst, best    the `top` classes by holds rate (ascending / descending; ties by violated
                   rate, then world order); "distinct_holds_rates" says how many values the
                   ranking had to order (1: every class ties, e.g. an early UNet at 0 %, and
                   the lists are ranked by violated rate alone)."""
  from jaxdiffattack.world2 import failures  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.world2 import scene  # pylint: disable=g-import-not-at-top
  if not rows:
    raise UserError("world2 preview: the census wrote no image rows; give at least one class, "
                    "kind and seed")
  kinds = sorted({r["kind"] for r in rows})
  by_kind = {k: _rates([verdict_of(r) for r in rows if r["kind"] == k]) for k in kinds}
  counts = {k: sum(r["failure"]["kind"] == k for r in rows) for k in failures.KINDS}
  failure_kinds = {k: {"images": c, "share": c / len(rows)} for k, c in counts.items()}
  by_shape = {}
  for r in rows:
    if r["scene_kind"] != "single":
      continue
    hue, shape = split_class(r["label"])
    pred = r["judges"]["world2_oracle"]["pred"]
    read = split_class(pred) if pred else (None, None)
    e = by_shape.setdefault(shape, {"images": 0, "holds": 0, "shape_read": 0, "hue_read": 0,
                                    "nothing_read": 0})
    e["images"] += 1
    e["holds"] += verdict_of(r) == "holds"
    e["shape_read"] += read[1] == shape
    e["hue_read"] += read[0] == hue
    e["nothing_read"] += pred is None
  by_shape = {s: {"images": e["images"], **{k: e[k] / e["images"] for k in e if k != "images"}}
              for s, e in sorted(by_shape.items(), key=lambda kv: scene.SHAPES.index(kv[0]))}
  classes = {}
  for name in scene.CLASSES:
    mine = [r for r in rows if r["label"] == name]
    if not mine:
      continue
    kinds_c = collections.Counter(r["failure"]["kind"] for r in mine if
                                  r["failure"]["kind"] != "holds")
    wrong = collections.Counter(r["judges"]["world2_oracle"]["pred"] for r in mine
                                if r["judges"]["world2_oracle"]["pred"] not in (None, name))
    classes[name] = {**_rates([verdict_of(r) for r in mine]),
                     "commonest_failure": kinds_c.most_common(1)[0][0] if kinds_c else None,
                     "commonest_wrong_read": wrong.most_common(1)[0][0] if wrong else None}
  order = {n: i for i, n in enumerate(scene.CLASSES)}
  worst = sorted(classes, key=lambda n: (classes[n]["holds"], -classes[n]["violated"], order[n]))
  best = sorted(classes, key=lambda n: (-classes[n]["holds"], classes[n]["violated"], order[n]))
  return {"images": len(rows), "by_kind": by_kind, "failure_kinds": failure_kinds,
          "by_shape": by_shape, "classes": classes,
          "ranked_by": "holds rate, ties by violated rate, then world order",
          "distinct_holds_rates": len({c["holds"] for c in classes.values()}),
          "worst": [{"class": n, **classes[n]} for n in worst[:top]],
          "best": [{"class": n, **classes[n]} for n in best[:top]]}


def grid_classes(summary: dict, n: int) -> list[str]:
  """n classes spread evenly from the worst to the best by holds rate (all when fewer)."""
  ranked = sorted(summary["classes"], key=lambda c: (summary["classes"][c]["holds"],
                                                     -summary["classes"][c]["violated"]))
  if n >= len(ranked):
    return ranked
  idx = np.unique(np.round(np.linspace(0, len(ranked) - 1, n)).astype(int))
  return [ranked[i] for i in idx]


def grid(rows: list[dict], census_dir, classes: list[str], kind: str = "single") -> np.ndarray:
  """A captioned grid [h, w, 3] in [0, 1]: one row per class of `classes` (its `kind` prompt's
  images, by seed; the census must have saved every image), each captioned with the class,
  the seed, the failure kind and what the oracle read."""
  from jaxdiffattack import runs  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  census_dir = pathlib.Path(census_dir)
  chosen = [sorted((r for r in rows if r["label"] == c and r["kind"] == kind),
                   key=lambda r: r["seed"]) for c in classes]
  cols = max((len(c) for c in chosen), default=0)
  if not cols:
    raise UserError(f"world2 preview: no {kind!r} images of {classes[:3]} to draw a grid of")
  images, captions = [], []
  for row in chosen:
    for i in range(cols):
      if i >= len(row) or not row[i].get("file"):
        raise UserError(f"world2 preview: the census kept no PNG of a {kind!r} image of "
                        f"{classes[len(images) // cols]!r}; run it with save_images='all'")
      r = row[i]
      with Image.open(census_dir / r["file"]) as im:
        images.append(np.asarray(im.convert("RGB"), np.float32) / 255.0)
      j = r["judges"]["world2_oracle"]
      read = j["pred"] or ("?" if j["unclear"] else "-")
      captions.append([r["label"], f"seed {r['seed']}: {r['failure']['kind']}", f"read: {read}"])
  images = np.stack(images)
  return runs.captioned_grid(images, captions, cols=cols,
                             upscale=max(1, 96 // images.shape[1]))
