"""The clean failure census of world 2: how often, and how, the clean generator fails each class.

Issue #23 item 4 asks for failures that exist (per class, >= 64 seeds per prompt, by the scene
oracle): per-class rates from ~0 to >= 30 %, a third of the classes failing on 1-10 % of seeds,
most failures readable, and short and long captions of one scene within 10 points of clean
accuracy. Issue #26 item 1 picks SAGE's targets from the same numbers: prompts whose clean
per-seed failure rate is 1-10 % (`search.targets.select_by_clean_failure`).

Prompts (`make_prompts`, deterministic from config.prompt_seed): per class of config.classes and
scene j < config.scenes_per_class, a single-object scene of the class and a two-object scene
whose first group is the class (`config.two_object_layouts[j % n]`: "pair", the class and
another class drawn by the world's frequency, a relation as often as the grammar states one;
"two", two objects of the class), each drawn from
``np.random.default_rng([prompt_seed, class id, scene kind, j])``; per scene a *short* caption
(`captions.caption`, config.short_tokens CLIP tokens) and a *long* one: the short caption with
fillers appended until config.long_tokens (fillers assert nothing, so both state the same facts).
Prompt kinds (`targets.CleanRate.kind`): "single" and "two_objects" (short captions) and "long"
(long captions of both scenes); config.kinds picks which are generated.

Seeds: seed s of every prompt is the same seed vector, fold_in(PRNGKey(config.seed), s)
(`sampler.member_latents`), so the short and long captions of a scene are paired by scene and
seed, and a target's seed set is 0..seeds_per_prompt-1.

Judges: world 2's scene oracle reads every image against its caption (`world2.oracle.judge`, once
per image: the verdict record of "world2_oracle" and the failure kind, `world2.failures`, come
from the same assessment); the held-out evaluator (config.judges' model judges: a scoring role,
the RegNetY "world2_regnet") runs fused with the sampler and is judged against the prompt's class
(the scene's first group: on two-object scenes a one-class reader may name the other object, so
its rate there is an upper bound, reported beside the oracle's, never instead of it).

`python launch/census.py --config configs/census.py:world2 --workdir DIR` writes into DIR
(every file atomically; prompts are done in chunks of config.chunk_prompts, each kept in
chunks/NNNNN.jsonl, so a stopped run resumes at its first missing chunk):
  config.json     the resolved config;
  images.jsonl    per image: prompt_index, prompt, kind, scene, label, seed, "judges" {judge:
                  Verdict.record}, "failure" (`failures.FailureKind.record`), file (PNG or null);
  images/         PNGs (config.save_images): "failures" (every image whose verdict is not
                  holds), "sample" (those and every image of seeds 0..sample_per_prompt-1 of each
                  prompt, whatever its verdict: the passes the world-2 rating kit samples,
                  `world2.rating_set`), "all" or "none";
  prompts.csv     per prompt: seeds, failures, unclear, rate and Wilson CI (`targets.clean_rates`),
                  the evaluator's failures;
  classes.csv, classes.md   per class: seeds, failure rate with a 95 % CI clustered by prompt
                  (`stats.clustered_rate`), its rate per prompt kind, the failure kinds, the
                  commonest wrong class; classes.md is the model card's table;
  summary.json    issue #23 item 4's criteria, each with its numbers and whether it is met;
  targets.json    `select_by_clean_failure` (config.band, config.num_targets);
  report.md, grids/<kind>.png   captioned grids of failures per kind (what each judge read).
"""
from __future__ import annotations

import collections
import dataclasses
import math
import pathlib

from absl import logging
import jax
import ml_collections
import numpy as np

from jaxdiffattack import io
from jaxdiffattack import judges as judges_lib
from jaxdiffattack import runs
from jaxdiffattack import stats
from jaxdiffattack import text
from jaxdiffattack.errors import check
from jaxdiffattack.search import targets as targets_lib
from jaxdiffattack.world2 import captions as captions_lib
from jaxdiffattack.world2 import failures as failures_lib
from jaxdiffattack.world2 import scene as scene_lib

KINDS = ("single", "two_objects", "long")
SCENE_KINDS = ("single", "two_objects")
TWO_OBJECT_LAYOUTS = ("pair", "two")
SAVE_IMAGES = ("failures", "sample", "all", "none")
# Run-shape keys (how the census is executed, never what it computes): a rerun with other values
# resumes the same workdir (not chunk_prompts: the chunk files are cut by it).
RUN_SHAPE_KEYS = runs.RUN_SHAPE_KEYS + ("max_chunks", "grid_images")
ORACLE = judges_lib.WORLD2_ORACLE


@dataclasses.dataclass(frozen=True)
class CensusPrompt:
  index: int                  # position in the census
  label: str                  # the class the census row belongs to (the scene's first group)
  scene: str                  # "<class>/<scene kind>/<j>": short and long captions share it
  scene_kind: str             # SCENE_KINDS entry
  kind: str                   # KINDS entry
  prompt: str
  facts: captions_lib.Facts   # what the caption asserts (`captions.parse(prompt)`)
  tokens: int                 # CLIP tokens (`captions.num_tokens`)


# ------------------------------------------------------------------------------- prompts --
def scene_spec(cls: int, scene_kind: str, j: int, prompt_seed: int = 0,
               layouts=TWO_OBJECT_LAYOUTS) -> tuple[scene_lib.SceneSpec, np.random.Generator]:
  """Scene j of class id `cls` and `scene_kind`, and the generator its captions draw from."""
  rng = np.random.default_rng([prompt_seed, cls, SCENE_KINDS.index(scene_kind), j])
  if scene_kind == "single":
    return scene_lib.sample_scene(rng, layout="single", classes=[cls]), rng
  layout = layouts[j % len(layouts)]
  classes = [cls]
  if layout == "pair":
    p = scene_lib.class_probs()
    p[cls] = 0.0
    classes.append(int(rng.choice(scene_lib.NUM_CLASSES, p=p / p.sum())))
  return scene_lib.sample_scene(rng, layout=layout, classes=classes), rng


def lengthen(caption: str, rng: np.random.Generator, low: int, high: int) -> str:
  """`caption` with grammar fillers (`captions.FILLERS`, none it holds already) appended until it
  is low..high CLIP tokens (a target drawn in low+1..high, reached to within one token)."""
  target = int(rng.integers(low + 1, high + 1))
  used = set(caption.split(", ")[1:])
  n = captions_lib.num_tokens(caption)
  for i in rng.permutation(len(captions_lib.FILLERS)):
    if n >= target - 1:
      break
    filler = captions_lib.FILLERS[i]
    k = 1 + captions_lib.num_tokens(filler)   # ", " + the filler
    if filler in used or n + k > target:
      continue
    caption, n = f"{caption}, {filler}", n + k
  if not low <= n <= high:
    raise AssertionError(f"census: {caption!r} has {n} tokens, not {low}-{high}")  # Never.
  return caption


def make_prompts(config) -> list[CensusPrompt]:
  """The census prompts of config (see the module docstring): class-major, then scene index,
  then scene kind; per scene its short caption, then its long one."""
  classes = tuple(config.classes) or scene_lib.CLASSES
  out = []
  for name in classes:
    cls = scene_lib.CLASS2ID[name]
    for j in range(config.scenes_per_class):
      for scene_kind in SCENE_KINDS:
        spec, rng = scene_spec(cls, scene_kind, j, config.prompt_seed,
                               tuple(config.two_object_layouts))
        short, facts = captions_lib.caption(
            spec, rng, int(rng.integers(config.short_tokens[0], config.short_tokens[1] + 1)))
        long = lengthen(short, rng, *config.long_tokens)
        scene = f"{name}/{scene_kind}/{j}"
        for kind, caption in ((scene_kind, short), ("long", long)):
          if kind in config.kinds:
            out.append(CensusPrompt(len(out), name, scene, scene_kind, kind, caption, facts,
                                    captions_lib.num_tokens(caption)))
  return out


# -------------------------------------------------------------------------------- config --
def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the key, the value and what is allowed."""
  check(isinstance(config.model, str) and bool(config.model), "model", config.model,
        "use 'world2' or a world-2 export directory")
  check(config.label_set == "world2", "label_set", config.label_set,
        "the census reads world 2's captions: use 'world2'")
  bad = [c for c in config.classes if c not in scene_lib.CLASS2ID]
  check(not bad, "classes", bad[:1], "use class names of world2.scene.CLASSES, or () for all 83")
  for key in ("scenes_per_class", "seeds_per_prompt", "chunk_prompts", "num_targets"):
    check(isinstance(config[key], int) and config[key] >= 1, key, config[key],
          "use an integer >= 1")
  check(isinstance(config.min_seeds, int) and 1 <= config.min_seeds <= config.seeds_per_prompt,
        "min_seeds", config.min_seeds,
        f"use an integer in 1..seeds_per_prompt={config.seeds_per_prompt} (issue #26: 64)")
  kinds = tuple(config.kinds)
  check(bool(kinds) and all(k in KINDS for k in kinds), "kinds", kinds, f"use entries of {KINDS}")
  layouts = tuple(config.two_object_layouts)
  check(bool(layouts) and all(l in TWO_OBJECT_LAYOUTS for l in layouts), "two_object_layouts",
        layouts, f"use entries of {TWO_OBJECT_LAYOUTS}")
  lo, hi = tuple(config.short_tokens)
  check(captions_lib.MIN_TOKENS <= lo <= hi <= captions_lib.MAX_TOKENS, "short_tokens",
        tuple(config.short_tokens), f"use (low, high) within {captions_lib.MIN_TOKENS}.."
        f"{captions_lib.MAX_TOKENS}")
  lo, hi = tuple(config.long_tokens)
  check(30 <= lo < hi <= captions_lib.MAX_TOKENS, "long_tokens", tuple(config.long_tokens),
        f"use (low, high) with 30 <= low < high <= {captions_lib.MAX_TOKENS} (issue #23: 40-60)")
  check(ORACLE in config.judges, "judges", tuple(config.judges),
        f"name {ORACLE!r} (the census counts its verdicts), optionally with 'evaluator'")
  for name in config.judges:
    check(name == ORACLE or name not in judges_lib.IMAGE_JUDGES, "judges", name,
          f"use {ORACLE!r} and scoring roles (e.g. 'evaluator')")
  check(config.save_images in SAVE_IMAGES, "save_images", config.save_images,
        f"use one of {SAVE_IMAGES}")
  sample = config.get("sample_per_prompt", 0)
  check(isinstance(sample, int) and sample >= 0, "sample_per_prompt", sample,
        "use an integer >= 0 (with save_images='sample' the PNGs of seeds below it are kept)")
  check(config.max_chunks is None or (isinstance(config.max_chunks, int)
                                      and config.max_chunks >= 1), "max_chunks",
        config.max_chunks, "use None (every chunk) or an integer >= 1")
  band = tuple(config.band)
  check(len(band) == 2 and 0 <= band[0] < band[1] <= 1, "band", band,
        "give (low, high) with 0 <= low < high <= 1")
  check(isinstance(config.guidance_scale, (int, float)) and math.isfinite(config.guidance_scale),
        "guidance_scale", config.guidance_scale, "use a finite number (<= 1 disables guidance)")
  from jaxdiffattack import sampler as sampler_lib  # pylint: disable=g-import-not-at-top
  sampler_lib.SamplerSettings(scheduler=config.scheduler, num_steps=config.num_steps).validate()


# ------------------------------------------------------------------------------- judging --
def judge_images(images: np.ndarray, chunk: list[CensusPrompt], seeds: int,
                 model_verdicts: dict) -> list[tuple[dict, dict]]:
  """(judges record, failure-kind record) of each image [P·seeds, H, W, 3] of a chunk of prompts
  (prompt-major), the oracle reading each once against its caption's facts."""
  from jaxdiffattack.world2 import oracle  # pylint: disable=g-import-not-at-top
  facts = [p.facts for p in chunk for _ in range(seeds)]
  assessments = oracle.judge(images, facts)
  verdicts = {ORACLE: judges_lib.world2_oracle_verdict(assessments), **model_verdicts}
  return [(judges_lib.record(verdicts, i), failures_lib.failure_kind(a, f).record())
          for i, (a, f) in enumerate(zip(assessments, facts))]


def save_image(config, failure_kind: str, seed: int) -> bool:
  """Whether the census keeps the PNG of seed `seed`'s image whose failure kind is
  `failure_kind` (config.save_images; the module docstring)."""
  if config.save_images == "all":
    return True
  if config.save_images == "none":
    return False
  if failure_kind != "holds":
    return True
  return config.save_images == "sample" and seed < config.get("sample_per_prompt", 0)


def verdict_of(row) -> str:
  """The scene oracle's verdict of an images.jsonl row: "holds" / "violated" / "unclear"."""
  j = row["judges"][ORACLE]
  return "violated" if j["failure"] else ("unclear" if j["unclear"] else "holds")


# -------------------------------------------------------------------------------- tables --
def clean_records(rows: list[dict]) -> list[dict]:
  """Per prompt (in prompt order) {"prompt", "label", "kind", "prompt_index", "scene",
  "verdicts": per seed "holds" | "violated" | "unclear"}: `targets.clean_rates`' input."""
  by_prompt = {}
  for r in rows:
    entry = by_prompt.setdefault(r["prompt_index"], {
        "prompt": r["prompt"], "label": r["label"], "kind": r["kind"],
        "prompt_index": r["prompt_index"], "scene": r["scene"], "verdicts": [], "seeds": []})
    entry["verdicts"].append(verdict_of(r))
    entry["seeds"].append(r["seed"])
  return [by_prompt[k] for k in sorted(by_prompt)]


PROMPT_FIELDS = ("prompt_index", "prompt", "kind", "scene", "label", "tokens", "seeds",
                 "failures", "unclear", "rate", "ci_low", "ci_high", "evaluator_failures")


def prompt_table(rows: list[dict], min_seeds: int) -> list[dict]:
  """prompts.csv: per prompt its clean failure rate by the oracle (`targets.clean_rates`)."""
  records = clean_records(rows)
  rates = targets_lib.clean_rates(records, min_seeds)
  evaluator = collections.Counter(r["prompt_index"] for r in rows
                                  if r["judges"].get("evaluator", {}).get("failure"))
  out = []
  for rec, rate in zip(records, rates):
    out.append({"prompt_index": rec["prompt_index"], "prompt": rate.prompt, "kind": rate.kind,
                "scene": rec["scene"], "label": rate.label,
                "tokens": captions_lib.num_tokens(rate.prompt), "seeds": rate.seeds,
                "failures": rate.failures, "unclear": rate.unclear, "rate": rate.rate,
                "ci_low": rate.ci95[0], "ci_high": rate.ci95[1],
                "evaluator_failures": evaluator.get(rec["prompt_index"], 0)})
  return out


CLASS_KINDS = failures_lib.FAILURE_KINDS + ("unreadable",)
CLASS_FIELDS = (("class", "seeds", "failures", "unclear", "rate", "ci_low", "ci_high")
                + tuple(f"rate_{k}" for k in KINDS) + CLASS_KINDS
                + ("hue_neighbour", "shape_neighbour", "commonest_wrong_class",
                   "commonest_wrong_count", "evaluator_rate"))


def class_table(rows: list[dict]) -> list[dict]:
  """classes.csv: per class (in world order) its images' oracle failures (rate and 95 % CI
  clustered by prompt), the rate per prompt kind, counts of each failure kind (readable kinds
  and "unreadable" = unclear), how many drawn-instead classes are hue / shape neighbours, and the
  commonest class drawn instead (other_class and swapped)."""
  by_class = collections.defaultdict(list)
  for r in rows:
    by_class[r["label"]].append(r)
  out = []
  for name in (c for c in scene_lib.CLASSES if c in by_class):
    mine = by_class[name]
    failed = [verdict_of(r) == "violated" for r in mine]
    rate = stats.clustered_rate(failed, [r["prompt_index"] for r in mine])
    kinds = collections.Counter(r["failure"]["kind"] for r in mine)
    wrong = collections.Counter(r["failure"]["drawn"] for r in mine
                                if r["failure"]["kind"] in ("other_class", "swapped"))
    nbr = collections.Counter(r["failure"]["neighbour"] for r in mine
                              if r["failure"]["kind"] == "other_class")
    entry = {"class": name, "seeds": len(mine), "failures": int(sum(failed)),
             "unclear": sum(verdict_of(r) == "unclear" for r in mine), "rate": rate["rate"],
             "ci_low": rate["ci95"][0], "ci_high": rate["ci95"][1]}
    for kind in KINDS:
      of_kind = [f for f, r in zip(failed, mine) if r["kind"] == kind]
      entry[f"rate_{kind}"] = float(np.mean(of_kind)) if of_kind else ""
    entry.update({k: kinds.get(k, 0) for k in CLASS_KINDS})
    common = wrong.most_common(1)
    evaluator = [r["judges"]["evaluator"]["failure"] for r in mine if "evaluator" in r["judges"]]
    entry.update({"hue_neighbour": nbr.get("hue", 0), "shape_neighbour": nbr.get("shape", 0),
                  "commonest_wrong_class": common[0][0] if common else "",
                  "commonest_wrong_count": common[0][1] if common else 0,
                  "evaluator_rate": float(np.mean(evaluator)) if evaluator else ""})
    out.append(entry)
  return out


def _pct(x) -> str:
  return "–" if x in ("", None) else f"{100 * x:.0f}"


def class_markdown(classes: list[dict]) -> str:
  """The model card's per-class table (classes.md)."""
  head = ("| class | seeds | failure % (95 % CI) | single | two obj. | long | other class "
          "(hue / shape nbr) | missing | count | swapped | relation | texture | extra | "
          "unreadable | commonest wrong class |")
  lines = [head, "|" + "---|" * 15]
  for c in classes:
    lines.append(
        f"| {c['class']} | {c['seeds']} | {_pct(c['rate'])} ({_pct(c['ci_low'])}–"
        f"{_pct(c['ci_high'])}) | {_pct(c['rate_single'])} | {_pct(c['rate_two_objects'])} | "
        f"{_pct(c['rate_long'])} | {c['other_class']} ({c['hue_neighbour']} / "
        f"{c['shape_neighbour']}) | {c['missing']} | {c['count']} | {c['swapped']} | "
        f"{c['relation']} | {c['texture']} | {c['extra']} | {c['unreadable']} | "
        f"{c['commonest_wrong_class'] or '–'}"
        f"{' ×' + str(c['commonest_wrong_count']) if c['commonest_wrong_count'] else ''} |")
  return "\n".join(lines) + "\n"


def _decide(low, high, lo_ok, hi_ok) -> str:
  """"met" when the interval lies inside [lo_ok, hi_ok], "not met" when outside, else
  "undecided"."""
  if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
    return "undecided"
  if lo_ok <= low and high <= hi_ok:
    return "met"
  if high < lo_ok or low > hi_ok:
    return "not met"
  return "undecided"


def summary(rows: list[dict], classes: list[dict], prompts: list[dict], config) -> dict:
  """Issue #23 item 4's criteria on the census, each with its numbers and a verdict."""
  rates = {c["class"]: c["rate"] for c in classes}
  lo_class = min(rates, key=rates.get)
  hi_class = max(rates, key=rates.get)
  band = [c["class"] for c in classes if 0.01 <= c["rate"] <= 0.10]
  verdicts = collections.Counter(verdict_of(r) for r in rows)
  kinds = collections.Counter(r["failure"]["kind"] for r in rows)
  violated, unclear = verdicts["violated"], verdicts["unclear"]
  readable = violated / (violated + unclear) if violated + unclear else None
  # Short vs long: per scene the clean accuracy (share of seeds whose caption holds) of its
  # short and of its long caption, paired by scene (bootstrap over scenes) and by (scene, seed).
  holds = collections.defaultdict(dict)   # scene → {"short"|"long": {seed: 0/1}}
  for r in rows:
    holds[r["scene"]].setdefault("long" if r["kind"] == "long" else "short", {})[r["seed"]] = (
        float(verdict_of(r) == "holds"))
  paired = [s for s in sorted(holds) if len(holds[s]) == 2]
  short_long = {"scenes": len(paired)}
  if paired:
    a = [np.mean(list(holds[s]["short"].values())) for s in paired]
    b = [np.mean(list(holds[s]["long"].values())) for s in paired]
    diff, low, high = stats.paired_bootstrap_interval(a, b)
    units_a = [holds[s]["short"][k] for s in paired for k in sorted(holds[s]["short"])]
    units_b = [holds[s]["long"][k] for s in paired for k in sorted(holds[s]["short"])]
    d2, l2, h2 = stats.paired_proportion_interval(units_a, units_b)
    short_long.update({
        "short_accuracy": float(np.mean(a)), "long_accuracy": float(np.mean(b)),
        "difference": diff, "ci95_by_scene": [low, high],
        "interval": "paired bootstrap over scenes (stats.paired_bootstrap_interval)",
        "ci95_by_scene_and_seed": [l2, h2],
        "interval_by_scene_and_seed": "Newcombe paired, seeds as units (ignores clustering)",
        "criterion": "|short − long| <= 0.10 (issue #23 item 4)",
        "decision": _decide(low, high, -0.10, 0.10)})
    if {float(np.mean(a)), float(np.mean(b))} <= {0.0} or {float(np.mean(a)),
                                                             float(np.mean(b))} <= {1.0}:
      short_long["decision"] = ("undecided (degenerate: every image " + (
          "fails" if np.mean(a) == 0 else "holds") + " on both caption lengths)")
  else:
    short_long["decision"] = "undecided (no scene has both a short and a long caption)"
  evaluator = [r["judges"]["evaluator"]["failure"] for r in rows if "evaluator" in r["judges"]]
  oracle_failed = [verdict_of(r) == "violated" for r in rows if "evaluator" in r["judges"]]
  both = sum(e and o for e, o in zip(evaluator, oracle_failed))
  return {
      "images": len(rows), "prompts": len(prompts), "classes": len(classes),
      "seeds_per_prompt": config.seeds_per_prompt,
      "prompts_by_kind": dict(collections.Counter(p["kind"] for p in prompts)),
      "oracle_verdicts": dict(verdicts),
      "failure_kinds": {k: kinds.get(k, 0) for k in failures_lib.KINDS},
      "criteria": {
          "rate_range": {
              "min": rates[lo_class], "min_class": lo_class, "max": rates[hi_class],
              "max_class": hi_class,
              "criterion": "per-class clean failure rates span ~0 (<= 2 %) to >= 30 %",
              "met": bool(rates[lo_class] <= 0.02 and rates[hi_class] >= 0.30)},
          "classes_failing_1_to_10": {
              "classes": len(band), "of": len(classes),
              "share": len(band) / len(classes), "names": band,
              "criterion": "at least a third of the classes fail on 1-10 % of seeds",
              "met": bool(3 * len(band) >= len(classes))},
          "readable_failures": {
              "violated": violated, "unclear": unclear, "share_readable": readable,
              "ci95": list(stats.wilson_interval(violated, violated + unclear))
              if violated + unclear else [None, None],
              "by_kind": {k: kinds.get(k, 0) for k in failures_lib.FAILURE_KINDS},
              "criterion": "most failures are readable: violated / (violated + unclear) > 0.5",
              "met": bool(readable is not None and readable > 0.5)},
          "short_vs_long": short_long,
      },
      "evaluator": {"images": len(evaluator),
                    "failure_rate": float(np.mean(evaluator)) if evaluator else None,
                    "both_fail": both,
                    "oracle_failures_confirmed": (both / sum(oracle_failed)
                                                  if sum(oracle_failed) else None)},
  }


def targets(rows: list[dict], config) -> dict:
  """targets.json: `select_by_clean_failure` over the census prompts, each selected target with
  its prompt index, scene and failed seeds."""
  records = clean_records(rows)
  chosen = targets_lib.select_by_clean_failure(records, tuple(config.band), config.num_targets,
                                               config.min_seeds)
  index = {}
  for rec in records:
    index.setdefault((rec["prompt"], rec["label"], rec["kind"]), rec)
  selected = []
  for rate in chosen["selected"]:
    rec = index[(rate.prompt, rate.label, rate.kind)]
    selected.append(dataclasses.asdict(rate) | {
        "prompt_index": rec["prompt_index"], "scene": rec["scene"],
        "failed_seeds": [s for s, v in zip(rec["seeds"], rec["verdicts"]) if v == "violated"]})
  return {k: v for k, v in chosen.items() if k != "selected"} | {
      "targets": selected, "seed": config.seed, "seeds": config.seeds_per_prompt,
      "judge": ORACLE}


# -------------------------------------------------------------------------------- report --
def _read_png(path) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"), np.float32) / 255.0


def _short(line: str, width: int = 46) -> str:
  return line if len(line) <= width else line[:width - 1] + "…"


def write_report(workdir: pathlib.Path, rows, classes, summary_, config) -> None:
  """report.md and grids/<kind>.png: per failure kind up to config.grid_images failures, each
  captioned with its prompt, seed, kind and what each judge read."""
  lines = ["# World 2 clean failure census", "",
           "`python launch/census.py --config configs/census.py:world2 --workdir DIR` "
           "(config.json holds this run's config): "
           f"{summary_['prompts']} prompts × {config.seeds_per_prompt} seeds = "
           f"{summary_['images']} images, {config.scheduler} {config.num_steps} steps, guidance "
           f"{config.guidance_scale}; judges {', '.join(config.judges)}.", "",
           "## Issue #23 item 4", ""]
  for name, c in summary_["criteria"].items():
    state = c.get("decision", "met" if c.get("met") else "not met")
    lines.append(f"- **{name}**: {state} — {c.get('criterion', '')}")
  rr = summary_["criteria"]["rate_range"]
  sl = summary_["criteria"]["short_vs_long"]
  lines += ["", f"Per-class rates {100 * rr['min']:.1f} % ({rr['min_class']}) to "
            f"{100 * rr['max']:.1f} % ({rr['max_class']}); readable share of failures "
            f"{summary_['criteria']['readable_failures']['share_readable']}; short − long "
            f"clean accuracy {sl.get('difference', 'n/a')} (95 % CI by scene "
            f"{sl.get('ci95_by_scene', 'n/a')}).", "", "## Per class", "",
            class_markdown(classes), "## Failures by kind", ""]
  if config.save_images != "none":
    by_kind = collections.defaultdict(list)
    for r in rows:
      if r["failure"]["kind"] != "holds" and r.get("file"):
        by_kind[r["failure"]["kind"]].append(r)
    for kind in failures_lib.KINDS[1:]:
      seen = collections.Counter()
      ranked = []
      for r in by_kind.get(kind, []):   # each prompt's first failure, then its second, ...
        ranked.append((seen[r["prompt_index"]], r["prompt_index"], r["seed"], r))
        seen[r["prompt_index"]] += 1
      chosen = [x[-1] for x in sorted(ranked, key=lambda x: x[:3])][:config.grid_images]
      if not chosen:
        continue
      images = np.stack([_read_png(workdir / r["file"]) for r in chosen])
      captions = []
      for r in chosen:
        f = r["failure"]
        what = kind if kind == "unreadable" else f"{kind}: {f['drawn'] or f['expected']}" + (
            f" ({f['neighbour']} nbr)" if f["neighbour"] else "")
        captions.append([_short(r["prompt"]), f"seed {r['seed']}", _short(what)]
                        + [_short(line) for line in judges_lib.caption(r["judges"])])
      upscale = max(1, 128 // images.shape[1])
      io.write_png(workdir / "grids" / f"{kind}.png",
                   runs.captioned_grid(images, captions, cols=4, upscale=upscale))
      lines += [f"### {kind} ({len(by_kind[kind])} images)", "",
                f"![{kind}](grids/{kind}.png)", "",
                f"Each tile: the prompt, the seed, the failure kind, then each judge's reading "
                f"(class, confidence, FAIL, reason); {len(chosen)} shown, each prompt's first failure "
                f"before any prompt's second.", ""]
  io.atomic_write_bytes(workdir / "report.md", ("\n".join(lines) + "\n").encode())


# ----------------------------------------------------------------------------------- run --
def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Generates and judges every census image (resuming finished chunks) and writes the run
  directory (see the module docstring). Returns {"rows", "classes", "summary", "targets"}, or
  {"stopped_after": chunks} when config.max_chunks stopped it first."""
  from jaxdiffattack import generate  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import objectives  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import sampler as sampler_lib  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.models import load_stable_diffusion  # pylint: disable=g-import-not-at-top
  validate(config)
  prompts = make_prompts(config)
  workdir = pathlib.Path(workdir)
  runs.check_workdir(config, workdir, "census run", RUN_SHAPE_KEYS)
  models = tuple(n for n in config.judges if n != ORACLE)
  scoring = objectives.make_scoring(config) if models else None
  model_judges = judges_lib.make_judges(models, scoring) if models else None
  sd, params = load_stable_diffusion(config.model, dtype=config.dtype)
  runs.write_config(config, workdir)
  seeds = config.seeds_per_prompt
  chunks = [prompts[i:i + config.chunk_prompts]
            for i in range(0, len(prompts), config.chunk_prompts)]
  chunk_path = lambda k: workdir / "chunks" / f"{k:05d}.jsonl"
  todo = [k for k in range(len(chunks)) if not chunk_path(k).is_file()]
  logging.info("census: %d prompts × %d seeds = %d images in %d chunks (%d to do)",
               len(prompts), seeds, len(prompts) * seeds, len(chunks), len(todo))
  if todo:
    pop_sampler = generate.population_sampler(config, sd, params, scoring)
    seed_latents = np.asarray(sampler_lib.member_latents(jax.random.PRNGKey(config.seed),
                                                         np.arange(seeds), sd.latent_shape))
    uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0])
    done_images = sum(len(chunks[k]) for k in range(len(chunks)) if k not in todo) * seeds
    progress = runs.Progress("census", len(prompts) * seeds, done_images, "images")
    for n, k in enumerate(todo):
      if config.max_chunks is not None and n >= config.max_chunks:
        logging.info("census: stopped after %d chunk(s) (config.max_chunks); rerun to resume", n)
        return {"stopped_after": n}
      chunk = chunks[k]
      emb = np.asarray(text.encode_prompts(sd, params["text_encoder"],
                                           [p.prompt for p in chunk]))
      cond = np.repeat(emb, seeds, axis=0)                       # [P·S, L, D], prompt-major
      latents = np.tile(seed_latents, (len(chunk), 1, 1, 1))     # [P·S, C, h, w]
      aux = (scoring.aux(labels=[p.label for p in chunk for _ in range(seeds)])
             if scoring is not None else None)
      out = pop_sampler(latents, cond, uncond, config.guidance_scale, aux=aux)
      images = np.asarray(out.images)
      model_verdicts = model_judges.read(out.scores) if model_judges is not None else {}
      judged = judge_images(images, chunk, seeds, model_verdicts)
      rows = []
      for i, (record, failure) in enumerate(judged):
        p, s = chunk[i // seeds], i % seeds
        keep = save_image(config, failure["kind"], s)
        name = f"images/{p.index:05d}_{s:03d}.png" if keep else None
        if keep:
          io.write_png(workdir / name, images[i])
        rows.append({"prompt_index": p.index, "prompt": p.prompt, "kind": p.kind,
                     "scene": p.scene, "scene_kind": p.scene_kind, "label": p.label, "seed": s,
                     "judges": record, "failure": failure, "file": name})
      io.write_jsonl(chunk_path(k), rows)
      done_images += len(rows)
      failed = sum(r["judges"][ORACLE]["failure"] for r in rows)
      progress.log(done_images, f"chunk {k + 1}/{len(chunks)}: {failed}/{len(rows)} failed")
  return finish(config, workdir, len(chunks))


def finish(config, workdir: pathlib.Path, num_chunks: int) -> dict:
  """Writes images.jsonl and every table and report from the chunk files."""
  rows = [r for k in range(num_chunks)
          for r in io.read_jsonl(workdir / "chunks" / f"{k:05d}.jsonl")]
  io.write_jsonl(workdir / "images.jsonl", rows)
  prompts_rows = prompt_table(rows, config.min_seeds)
  io.write_csv(workdir / "prompts.csv", PROMPT_FIELDS, prompts_rows)
  classes = class_table(rows)
  io.write_csv(workdir / "classes.csv", CLASS_FIELDS, classes)
  io.atomic_write_bytes(workdir / "classes.md", class_markdown(classes).encode())
  summary_ = summary(rows, classes, prompts_rows, config)
  io.write_json(workdir / "summary.json", summary_)
  chosen = targets(rows, config)
  io.write_json(workdir / "targets.json", chosen)
  write_report(workdir, rows, classes, summary_, config)
  logging.info("census: %d images; oracle verdicts %s; wrote %s/{images.jsonl,prompts.csv,"
               "classes.csv,classes.md,summary.json,targets.json,report.md}", len(rows),
               summary_["oracle_verdicts"], workdir)
  return {"rows": rows, "classes": classes, "summary": summary_, "targets": chosen}
