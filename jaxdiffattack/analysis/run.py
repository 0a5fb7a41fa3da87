"""The `analyze` job: generates what each analysis needs and writes its records (issue #16).

Analyses (each a function of `Context` returning plain JSON data, registered in `ANALYSES`):
  speed        ATM §4.1 generation speed: SSIM of each step's predicted x0 with the final image
               per class, per object of two-object prompts, and its correlation with losses;
  attention    ATM §4.2 coarse-feature similarity: the two nouns' cross-attention maps, their
               cosine and IoU against whether an object is lost;
  orders       ATM §4.4 word position: every order of the same words on the same seeds;
  inject       ATM §4.3 polysemy / injected words: the judged class distribution's move;
  brittleness  arXiv 2312.11473 §5: class-wise robustness at every α, confusion, displacement,
               trajectory step distances;
  polysemy     ATM §4.3 on world 2's three polysemous words, each in its other sense in a
               trained caption against a control caption on the same seeds (`polysemy.py`).

Resumable by analysis: each finished analysis is written to `stages/<name>.json` (atomically, with
the config hash) and not recomputed on a restart with the same config; `report.write_report`
makes every CSV/JSON, figure and report.md from those files (`config.report_only` only redoes
that).
"""

import dataclasses
import itertools
import pathlib
from typing import Callable

from absl import logging
import ml_collections
import numpy as np

from jaxdiffattack import io
from jaxdiffattack import judges as judges_lib
from jaxdiffattack import labels as labels_lib
from jaxdiffattack import pages
from jaxdiffattack import publish
from jaxdiffattack import runs
from jaxdiffattack.analysis import brittleness
from jaxdiffattack.analysis import generation
from jaxdiffattack.analysis import inject
from jaxdiffattack.analysis import objects
from jaxdiffattack.analysis import orders
from jaxdiffattack.analysis import overlap
from jaxdiffattack.analysis import polysemy
from jaxdiffattack.analysis import report
from jaxdiffattack.analysis import speed
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.errors import UserError
from jaxdiffattack.sweep import trajectories


@dataclasses.dataclass
class Context:
  """What every analysis reads: the config, the class list, the generator, shared batches."""
  config: ml_collections.ConfigDict
  classes: tuple[str, ...]
  generator: generation.Generator
  finder: objects.Finder
  progress: runs.Progress
  workdir: pathlib.Path
  cache: dict = dataclasses.field(default_factory=dict)

  def generate(self, prompts, seeds, **kw) -> generation.Batch:
    batch = self.generator(prompts, seeds, **kw)
    self.progress.log(self.generator.images_made)
    return batch

  def read(self, batch: generation.Batch, phrases) -> tuple[list, list]:
    """The object finder on a batch: (judged class or None [P], Found [P][K] per named
    phrase)."""
    return self.finder(batch.images, batch.attention, batch.prompts, phrases)

  @property
  def seeds(self) -> list[int]:
    return list(range(self.config.seeds))

  def singles(self):
    """Every class × seed, unshifted, with decoded steps: (members, batch, preds, found)."""
    if "singles" not in self.cache:
      members = [(c, s) for c in self.classes for s in self.seeds]
      batch = self.generate([self.config.template.format(c) for c, _ in members],
                            [s for _, s in members], decode_steps=True)
      preds, found = self.read(batch, [[objects.phrase(c)] for c, _ in members])
      self.cache["singles"] = (members, batch, preds, [f[0] for f in found])
    return self.cache["singles"]

  def pairs(self):
    """Pair prompts × seeds with decoded steps: (members, batch, found [P][2])."""
    if "pairs" not in self.cache:
      members = [(a, b, s) for a, b in pair_list(self.classes, self.config.pairs,
                                                  self.config.pair_seed) for s in self.seeds]
      batch = self.generate([self.config.pair_template.format(a, b) for a, b, _ in members],
                            [s for _, _, s in members], decode_steps=True)
      _, found = self.read(batch, [[objects.phrase(a), objects.phrase(b)]
                                   for a, b, _ in members])
      self.cache["pairs"] = (members, batch, found)
    return self.cache["pairs"]


def pair_list(classes, count: int, seed: int) -> list[tuple[str, str]]:
  """`count` pairs of classes with different modifiers and different nouns (so each named object
  is told apart by its colour and its noun token), drawn without replacement by `seed`."""
  candidates = [(a, b) for a, b in itertools.permutations(classes, 2)
                if a.split()[0] != b.split()[0] and a.split()[-1] != b.split()[-1]]
  if not candidates:
    raise ConfigError(f"config.classes={tuple(classes)!r} is invalid: pair analyses need two "
                      "classes that differ in both colour and noun")
  order = np.random.default_rng(seed).permutation(len(candidates))
  return [candidates[i] for i in order[:count]]


def spread(classes, count: int) -> tuple[str, ...]:
  """`count` classes evenly spaced through the class list (all when it has fewer)."""
  if count >= len(classes):
    return tuple(classes)
  return tuple(classes[i * len(classes) // count] for i in range(count))


def _outcome(found_a, found_b, level: str = "correct") -> str:
  """Which named objects survive: "both", "lost_a", "lost_b" or "neither"; `level` "correct"
  (read as the named class) or "drawn" (an object of the named colour is there at all)."""
  return {(True, True): "both", (True, False): "lost_b", (False, True): "lost_a",
          (False, False): "neither"}[(getattr(found_a, level), getattr(found_b, level))]


# ------------------------------------------------------------------ speed ---
def analyse_speed(ctx: Context) -> dict:
  threshold = ctx.config.speed.threshold
  members, batch, _, found = ctx.singles()
  size = ctx.config.speed.x0_size
  curves = speed.ssim_curves(batch.x0_images, generation.pool(batch.images, size))  # [P, S]
  first = speed.first_step_above(curves, threshold)
  singles = [{"class": c, "seed": s, "first_step": float(f), "correct": bool(fd.correct),
              "curve": [round(float(v), 5) for v in curve]}
             for (c, s), f, fd, curve in zip(members, first, found, curves)]
  pmembers, pbatch, pfound = ctx.pairs()
  masks = np.stack([[fa.mask, fb.mask] for fa, fb in pfound])[..., None]       # [P, 2, H, W, 1]
  masks = generation.pool(masks.astype(np.float32), size)[..., 0] > 0.5          # pooled like x0
  region = speed.region_ssim_curves(pbatch.x0_images, generation.pool(pbatch.images, size),
                                    masks)                                       # [P, 2, S]
  pfirst = speed.first_step_above(region, threshold)                           # [P, 2]
  pairs = []
  for (a, b, s), (fa, fb), (first_a, first_b), curve in zip(pmembers, pfound, pfirst, region):
    formed = ("none" if np.isnan(first_a) or np.isnan(first_b) else
              "a" if first_a < first_b else "b" if first_b < first_a else "tie")
    pairs.append({"a": a, "b": b, "seed": s, "outcome": _outcome(fa, fb),
                  "drawn_outcome": _outcome(fa, fb, "drawn"), "drawn_a": fa.drawn,
                  "drawn_b": fb.drawn, "first_a": _num(first_a),
                  "first_b": _num(first_b), "formed_first": formed,
                  "curve_a": [_num(v, 5) for v in curve[0]],
                  "curve_b": [_num(v, 5) for v in curve[1]]})
  per_class = class_speed_table(singles, pairs, ctx.classes,
                                attack_success(ctx.config.attack_workdir))
  return {"threshold": threshold, "singles": singles, "pairs": pairs, "classes": per_class,
          "correlations": speed_correlations(per_class)}


def _num(x, digits: int = 3):
  return None if x is None or np.isnan(x) else round(float(x), digits)


def class_speed_table(singles, pairs, classes, attack: dict | None) -> list[dict]:
  """Per class: mean first step above threshold (single prompts), pair losses (lost while the
  other named object survived), the share of its pairs in which it formed first, and ATM's
  success rate for its class word (when an attack workdir is given)."""
  rows = []
  for c in classes:
    steps = [r["first_step"] for r in singles if r["class"] == c]
    mine = [(r, "a") for r in pairs if r["a"] == c] + [(r, "b") for r in pairs if r["b"] == c]
    lost = sum(r["outcome"] == f"lost_{side}" for r, side in mine)
    decided = [r["formed_first"] for r, _ in mine if r["formed_first"] in ("a", "b")]
    first = sum(f == side for (r, side) in mine for f in [r["formed_first"]])
    rows.append({"class": c, "formation_step": float(np.mean(steps)) if steps else None,
                 "pair_images": len(mine), "pair_losses": lost,
                 "loss_rate": lost / len(mine) if mine else None,
                 "formed_first_rate": first / len(decided) if decided else None,
                 "attack_success_rate": None if attack is None else attack.get(c)})
  return rows


def speed_correlations(per_class) -> dict:
  get = lambda k: [np.nan if r[k] is None else r[k] for r in per_class]
  out = {"formation_step_vs_loss_rate": speed.correlation(get("formation_step"),
                                                          get("loss_rate"))}
  if any(r["attack_success_rate"] is not None for r in per_class):
    out["formation_step_vs_attack_success"] = speed.correlation(
        get("formation_step"), get("attack_success_rate"))
  return out


def attack_rows(workdir: str) -> list[dict] | None:
  """An ATM workdir's results.jsonl rows (None when no workdir is configured)."""
  if not workdir:
    return None
  path = pathlib.Path(workdir) / "results.jsonl"
  if not path.exists():
    raise ConfigError(f"config.attack_workdir={workdir!r} is invalid: {path} does not exist; "
                      "give an ATM attack workdir (launch/attack.py) or ''")
  rows = io.read_jsonl(path)
  for i, row in enumerate(rows):
    for key in ("prompt", "class_word", "success"):
      if key not in row:
        raise UserError(f"{path} row {i} has no {key!r}: not an ATM results.jsonl")
  return rows


def attack_success(workdir: str) -> dict | None:
  """ATM success rate per class word over attacked prompts ({class word: rate})."""
  rows = attack_rows(workdir)
  if rows is None:
    return None
  tally = {}
  for row in rows:
    if row["success"] is None:              # not attacked (e.g. clean prompt already failing)
      continue
    n, k = tally.get(row["class_word"], (0, 0))
    tally[row["class_word"]] = (n + 1, k + bool(row["success"]))
  return {word: k / n for word, (n, k) in tally.items()}


# -------------------------------------------------------------- attention ---
def analyse_attention(ctx: Context) -> dict:
  config = ctx.config
  tokenizer = ctx.generator.sd.tokenizer
  steps = overlap.step_range(config.num_steps, config.attention.steps)
  fraction = config.attention.iou_fraction
  # Single objects: how much of the noun's map lies on its own object (concentration); only
  # with a finder whose regions do not come from the maps themselves (the oracle's masks).
  members, batch, _, found = ctx.singles()
  if config.finder not in objects.MASK_FINDERS:
    found = [f._replace(drawn=False) for f in found]
  prompts = [config.template.format(c) for c, _ in members]
  idx = [[overlap.word_token_indices(tokenizer, p, objects.phrase(c).noun)]
         for p, (c, _) in zip(prompts, members)]
  maps = overlap.word_maps(batch.attention, idx, steps)[:, 0]                   # [P, h, w]
  singles = []
  for (c, s), m, f in zip(members, maps, found):
    if f.drawn:
      share = float(f.mask.mean())
      inside = float(overlap.mass_inside(m, f.mask))
      singles.append({"class": c, "seed": s, "area_share": share, "mass_inside": inside,
                      "ratio": inside / share})
  # Pairs: the two nouns' maps, their overlap, and the outcome.
  pmembers, pbatch, pfound = ctx.pairs()
  pprompts = [config.pair_template.format(a, b) for a, b, _ in pmembers]
  pidx = [[overlap.word_token_indices(tokenizer, p, objects.phrase(x).noun) for x in (a, b)]
          for p, (a, b, _) in zip(pprompts, pmembers)]
  pmaps = overlap.word_maps(pbatch.attention, pidx, steps)                      # [P, 2, h, w]
  cos = overlap.cosine(pmaps[:, 0], pmaps[:, 1])
  ious = overlap.iou(pmaps[:, 0], pmaps[:, 1], fraction)
  pairs = []
  for i, ((a, b, s), (fa, fb)) in enumerate(zip(pmembers, pfound)):
    # The share of each noun's map on its own object over the object's area share.
    own = [overlap.mass_inside(pmaps[i, k], f.mask) / f.mask.mean() if f.drawn else None
           for k, f in enumerate((fa, fb))]
    pairs.append({"a": a, "b": b, "seed": s, "outcome": _outcome(fa, fb),
                  "drawn_outcome": _outcome(fa, fb, "drawn"),
                  "cosine": float(cos[i]), "iou": float(ious[i]),
                  "ratio_a": _num(own[0]), "ratio_b": _num(own[1])})
  n = min(config.attention.overlays, len(pmembers))
  report.save_arrays(ctx.workdir / "stages" / "attention_overlays.npz",
                     images=pbatch.images[:n], maps=pmaps[:n])
  return {"steps": [steps.start, steps.stop], "iou_fraction": fraction, "singles": singles,
          "pairs": pairs, "overlay_prompts": pprompts[:n],
          "overlay_nouns": [[objects.phrase(x).noun for x in m[:2]] for m in pmembers[:n]]}


# ----------------------------------------------------------------- orders ---
def analyse_orders(ctx: Context) -> dict:
  config = ctx.config
  rows, prompts, seeds, keys = [], [], [], []
  for a, b in pair_list(ctx.classes, config.pairs, config.pair_seed)[:config.orders.pairs]:
    given = (objects.phrase(a), objects.phrase(b))
    for prompt, key, named in orders.word_orders(given, config.pair_template,
                                                 tuple(config.orders.placements)):
      for s in ctx.seeds:
        prompts.append(prompt)
        seeds.append(s)
        keys.append((a, b, key, named))
  batch = ctx.generate(prompts, seeds)
  _, found = ctx.read(batch, [[objects.phrase(a), objects.phrase(b)] for a, b, _, _ in keys])
  for prompt, s, (a, b, key, named), (fa, fb) in zip(prompts, seeds, keys, found):
    first_is_a = named[0].label == a
    rows.append({"a": a, "b": b, "order": key, "prompt": prompt, "seed": s,
                 "outcome": _outcome(fa, fb), "drawn_outcome": _outcome(fa, fb, "drawn"),
                 "correct_a": fa.correct, "correct_b": fb.correct,
                 "first_named_correct": fa.correct if first_is_a else fb.correct,
                 "second_named_correct": fb.correct if first_is_a else fa.correct})
  return {"rows": rows, "summary": orders_summary(rows)}


def orders_summary(rows) -> list[dict]:
  """Per order key: images, and how often A, B, the first- and the second-named object survive."""
  out = []
  for key in sorted({r["order"] for r in rows}):
    mine = [r for r in rows if r["order"] == key]
    out.append({"order": key, "n": len(mine),
                **{f"{k}": sum(r[k] for r in mine) for k in
                   ("correct_a", "correct_b", "first_named_correct", "second_named_correct")},
                "both": sum(r["outcome"] == "both" for r in mine)})
  return out


# ----------------------------------------------------------------- inject ---
def analyse_inject(ctx: Context) -> dict:
  config = ctx.config
  words = list(config.inject.words)
  if config.inject.from_attack:
    rows = attack_rows(config.attack_workdir)
    if rows is None:
      raise ConfigError("config.inject.from_attack is set but config.attack_workdir is empty: "
                        "give an ATM attack workdir")
    words = inject.attack_words(rows, config.inject.from_attack)
  classes = spread(ctx.classes, config.inject.classes)
  members = [(c, w, s) for c in classes for w in [None] + words for s in ctx.seeds]
  prompts = [config.template.format(c) if w is None else
             inject.injected_prompt(config.inject.template, c, w) for c, w, _ in members]
  batch = ctx.generate(prompts, [s for _, _, s in members])
  preds, _ = ctx.read(batch, [[] for _ in members])
  records = [{"class": c, "word": w or "", "seed": s, "prompt": p, "pred": pred}
             for (c, w, s), p, pred in zip(members, prompts, preds)]
  summary = []
  for c in classes:
    clean = inject.distribution([r["pred"] for r in records if r["class"] == c and not r["word"]])
    for w in words:
      preds = [r["pred"] for r in records if r["class"] == c and r["word"] == w]
      dist = inject.distribution(preds)
      summary.append({
          "class": c, "word": w, "n": len(preds),
          "clean_hit": clean.get(c, 0.0), "hit": dist.get(c, 0.0),
          "total_variation": inject.total_variation(clean, dist),
          "took_word": sum(p is not None and w in p.split() for p in preds) / len(preds),
          "distribution": dist})
  return {"words": words, "records": records, "summary": summary}


# ------------------------------------------------------------ brittleness ---
def analyse_brittleness(ctx: Context) -> dict:
  config = ctx.config
  members, batch, preds, found = ctx.singles()
  records = _brittle_records("none", 0.0, members, batch, preds, found)
  for shift in config.brittleness.shifts:
    for alpha in config.brittleness.alphas:
      shifted = ctx.generate([config.template.format(c) for c, _ in members],
                             [s for _, s in members], shift=shift, alpha=float(alpha))
      p, f = ctx.read(shifted, [[objects.phrase(c)] for c, _ in members])
      records += _brittle_records(shift, float(alpha), members, shifted, p, [x[0] for x in f])
  steps = []
  for shift, alpha in {(r["shift"], r["alpha"]) for r in records}:
    mine = [r["step_distance"] for r in records if (r["shift"], r["alpha"]) == (shift, alpha)]
    for k, d in enumerate(np.mean(mine, axis=0)):
      steps.append({"shift": shift, "alpha": alpha, "step": k, "step_distance": float(d)})
  for r in records:
    del r["step_distance"]
  return {"records": records, "classwise": brittleness.classwise(records),
          "confusion": brittleness.confusion(records),
          "displacement": brittleness.displacement(records),
          "trajectory": sorted(steps, key=lambda r: (r["shift"], r["alpha"], r["step"]))}


def _brittle_records(shift, alpha, members, batch, preds, found) -> list[dict]:
  distances = trajectories.trajectory_statistics(batch.latent_trajectory,
                                                 batch.initial)["step_distance"]
  return [{"shift": shift, "alpha": alpha, "class": c, "seed": s, "pred": pred,
           "correct": pred == c, "cx": f.centroid[0], "cy": f.centroid[1],
           "step_distance": d.tolist()}
          for (c, s), pred, f, d in zip(members, preds, found, distances)]


# ---------------------------------------------------------------- polysemy ---
def analyse_polysemy(ctx: Context) -> dict:
  config = ctx.config
  cases = [(w, *case) for w in config.polysemy.words
           for case in polysemy.prompts(w, ctx.classes)]
  members = [(case, s) for case in cases for s in ctx.seeds]
  seeds = [s for _, s in members]
  batch = ctx.generate([m[0][3] for m in members] + [m[0][4] for m in members], seeds + seeds)
  preds, _ = ctx.read(batch, [[] for _ in range(2 * len(members))])
  word_preds, control_preds = preds[:len(members)], preds[len(members):]
  records = []
  for ((w, c, control_class, p, q), s), pred, cpred in zip(members, word_preds, control_preds):
    records.append({"word": w, "class": c, "seed": s, "prompt": p, "control_prompt": q,
                    "pred": pred, "control_pred": cpred, "leak": polysemy.leaked(pred, w),
                    "control_leak": polysemy.leaked(cpred, w), "correct": pred == c,
                    "control_correct": cpred == control_class})
  return {"words": list(config.polysemy.words), "records": records,
          "summary": polysemy.summarise(records)}


ANALYSES: dict[str, Callable[[Context], dict]] = {
    "speed": analyse_speed, "attention": analyse_attention, "orders": analyse_orders,
    "inject": analyse_inject, "brittleness": analyse_brittleness,
    "polysemy": analyse_polysemy}


# -------------------------------------------------------------------- job ---
# Keys renamed for what they do: old key → what to write instead.
RETIRED_KEYS = {"judge": "the object finder is config.finder (analysis.objects.FINDERS: "
                         "'classifier', 'oracle'), e.g. --config.finder=oracle"}


def validate(config) -> None:
  for name in config.analyses:
    if name not in ANALYSES:
      raise ConfigError(f"config.analyses entry {name!r} is invalid: use {tuple(ANALYSES)}")
  judges_lib.check_retired_keys(config, RETIRED_KEYS)
  if config.finder not in objects.FINDERS:
    raise ConfigError(f"config.finder={config.finder!r} is invalid: use one of "
                      f"{tuple(objects.FINDERS)}")
  if not 0.0 < config.speed.threshold < 1.0:
    raise ConfigError(f"config.speed.threshold={config.speed.threshold!r} is invalid: use a "
                      "value in (0, 1)")
  for key in ("seeds", "unit", "pairs", "num_steps"):
    if not isinstance(config[key], int) or config[key] < 1:
      raise ConfigError(f"config.{key}={config[key]!r} is invalid: use an integer >= 1")
  overlap.step_range(config.num_steps, config.attention.steps)
  for p in config.orders.placements:
    if p not in orders.PLACEMENTS:
      raise ConfigError(f"config.orders.placements entry {p!r} is invalid: use {orders.PLACEMENTS}")
  if "polysemy" in config.analyses:
    if config.label_set != "world2":
      raise ConfigError(f"config.analyses names 'polysemy' with config.label_set="
                        f"{config.label_set!r}: the polysemous words are world 2's; use "
                        "label_set='world2' (configs/analysis.py:world2,study)")
    words = config.get("polysemy", {}).get("words", ())
    if not words:
      raise ConfigError("config.analyses names 'polysemy' but config.polysemy.words is empty or "
                        f"missing: give some of {tuple(polysemy.CASES)}")
    for w in words:
      if w not in polysemy.CASES:
        raise ConfigError(f"config.polysemy.words entry {w!r} is invalid: use "
                          f"{tuple(polysemy.CASES)}")


def resolve_classes(config) -> tuple[str, ...]:
  names = labels_lib.class_names(config.label_set)
  for c in config.classes:
    if c not in names:
      raise ConfigError(f"config.classes entry {c!r} is invalid: not a class of label set "
                        f"{config.label_set!r} (e.g. {names[0]!r})")
  return tuple(config.classes) or names


def run(config: ml_collections.ConfigDict, workdir: str, *, model_loader=None,
        command: str | None = None) -> dict:
  """Runs (or resumes) every configured analysis and writes the report; returns the stages.

  `command` (the launch command line, overrides included) is kept in command.txt for the
  report's captions; without it they show the config variant's plain command."""
  validate(config)
  workdir = pathlib.Path(workdir)
  if config.report_only:
    out = report.write_report(workdir)
    pages.write_index(workdir)
    _publish(config, workdir)
    return out
  digest = runs.config_hash(config)
  classes = resolve_classes(config)
  pending = [n for n in config.analyses if report.load_stage(workdir, n, digest) is None]
  if pending:
    if model_loader is None:
      from jaxdiffattack.models import load_stable_diffusion  # pylint: disable=g-import-not-at-top
      model_loader = load_stable_diffusion
    sd, params = model_loader(config.model)
    gen = generation.Generator(sd, params, scheduler=config.scheduler,
                               num_steps=config.num_steps,
                               guidance_scale=config.guidance_scale, unit=config.unit,
                               seed=config.seed, x0_size=config.speed.x0_size)
    finder = objects.FINDERS[config.finder](config, sd)
  # The inputs (classes, model, object finder) are read and checked: only now is anything written.
  runs.write_config(config, workdir)
  if command:
    io.atomic_write_bytes(workdir / "command.txt", command.encode())
  if pending:
    progress = runs.Progress("analyze", planned_images(config, classes), unit="images")
    ctx = Context(config, classes, gen, finder, progress, workdir)
    for name in pending:
      logging.info("analysis %s", name)
      report.save_stage(workdir, name, digest, ANALYSES[name](ctx))
  out = report.write_report(workdir)
  pages.write_index(workdir)
  _publish(config, workdir)
  return out


def _publish(config, workdir: pathlib.Path) -> None:
  """config.results_file (the `world2,study` variant): report.md, config.json, every stage's
  JSON and CSV and the report's plots copied into that folder with provenance.json
  (`jaxdiffattack.publish.write_dir`)."""
  dest = config.get("results_file", "")
  if dest:
    names = ["report.md", "config.json"] + sorted(
        str(p.relative_to(workdir)) for pattern in ("*.json", "*.csv", "plots/*.png")
        for p in workdir.glob(pattern) if p.name != "config.json")
    publish.write_dir(dest, workdir, names)


def planned_images(config, classes) -> int:
  """Images the configured analyses generate (for the progress line's ETA)."""
  s = config.seeds
  singles = len(classes) * s
  pairs = min(config.pairs, len(pair_list(classes, config.pairs, config.pair_seed))) * s
  total = 0
  if {"speed", "attention", "brittleness"} & set(config.analyses):
    total += singles
  if {"speed", "attention"} & set(config.analyses):
    total += pairs
  if "orders" in config.analyses:
    n = len(config.orders.placements) ** 2 * 2
    total += min(config.orders.pairs, pairs // s) * n * s
  if "inject" in config.analyses:
    words = config.inject.from_attack or len(config.inject.words)
    total += min(config.inject.classes, len(classes)) * (words + 1) * s
  if "brittleness" in config.analyses:
    total += singles * len(config.brittleness.shifts) * len(config.brittleness.alphas)
  if "polysemy" in config.analyses:
    total += 2 * s * sum(len(polysemy.prompts(w, classes)) for w in config.polysemy.words)
  return total
