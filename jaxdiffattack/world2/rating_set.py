"""World 2's blind rating kit (issue #23 item 3): the scene oracle measured on people's ratings.

Issue #23 asks for the scene oracle's agreement "on blind human ratings of generated images".
SAGE (arXiv 2306.00974, sec. 4) counts a failure only when people confirm it; the toy world's kit
(`benchmarks/toy_rating_set.py`, `docs/ratings/toy_v1/`) did this for one-object prompts. This
module does it for world 2's captions of several facts, from clean failure census workdirs
(`jaxdiffattack/census.py`, run with ``--config.save_images=sample`` so that passes are saved too).

`build` (from one or more census workdirs):
  * a **stratified sample** (`stratified_sample`): per stratum (oracle verdict holds / violated /
    unclear on the census image) × (prompt kind single / two_objects / long), `sizes[verdict]`
    images among those with a saved PNG, spread over classes (the classes in a seeded order, one
    image per class in turn) and over prompts (at most `max_per_prompt` images of a caption in the
    whole sample), pixel-identical images kept once; deterministic from `seed`;
  * items.json (`ratings.ITEMS_FORMAT`): id (a seeded shuffle, so neither id nor order tells the
    stratum), image (the 64² original), prompt = the caption the image was made for, and
    `source`: the census row (workdir, prompt index, kind, scene, label, seed, the census oracle
    verdict and failure kind) and the oracle's per-fact reading of the saved PNG
    (`world2.oracle.verdict`) — never shown to raters;
  * split.json: a tuning / test split fixed before any rating (`split_items`): items sharing a
    prompt or a scene (a scene's short and long captions) are one cluster, whole clusters go to
    one part (a seeded order, each to the part with fewer items of its strata), so no prompt is in
    both; the tuning part is reserved for oracle threshold changes, the test part is reported;
  * shuffled contact sheets per rater (`contact_sheets`: images enlarged by nearest neighbour,
    captions wrapped), each with map.json (sheet → tile → item id); the browser rating page
    index.html (`pages.rating_html`, showing the world-2 guide); rating_guide.md
    (`jaxdiffattack/data/world2_rating_guide.md`); sample.json (each stratum's request,
    candidates and count).

`measure` (returned ratings files, `ratings.RATINGS_FORMAT`): the human consensus per item
(`ratings.consensus`: the most given verdict, a tie "unsure"; items with fewer than `min_raters`
ratings are counted and left out), the oracle *re-run* on each item's image with its caption (so a
threshold change tuned on the tuning part is what the test part measures), and per prompt kind and
overall `ratings.judge_agreement` (confusion table, recall of human failures, false failures,
unclear rate, κ) with 95 % intervals clustered by prompt (`ratings.clustered_rate`) — on the test
part only unless asked for the tuning part.
"""
from __future__ import annotations

import collections
import json
import pathlib
import random
import shutil
import textwrap
from typing import Callable, Mapping, Sequence

import numpy as np

from jaxdiffattack import io
from jaxdiffattack import ratings as ratings_lib
from jaxdiffattack.census import KINDS  # census prompt kinds (strata)
from jaxdiffattack.census import ORACLE
from jaxdiffattack.census import verdict_of
from jaxdiffattack.errors import UserError

VERDICTS = ("holds", "violated", "unclear")        # the census oracle's verdicts (strata)
PARTS = ("tune", "test")
SPLIT_FORMAT = "jaxdiffattack.rating_split/1"
GUIDE = pathlib.Path(__file__).resolve().parent.parent / "data" / "world2_rating_guide.md"
OUTCOME = {"holds": "correct", "violated": "failure", "unclear": "unclear"}


# --------------------------------------------------------------------------------- census --
def load_census(workdir) -> list[dict]:
  """The census rows of `workdir` that have a saved PNG, each with "census" (the workdir) and
  "path" (the PNG) added. One-line UserError when the workdir is no finished census or saved no
  images."""
  workdir = pathlib.Path(workdir)
  rows_path = workdir / "images.jsonl"
  if not rows_path.is_file():
    raise UserError(f"--census={workdir} has no images.jsonl: pass a finished census workdir "
                    "(python launch/census.py --config configs/census.py:world2 "
                    "--config.save_images=sample --workdir DIR)")
  rows = io.read_jsonl(rows_path)
  kept = []
  for r in rows:
    if r.get("file"):
      path = workdir / r["file"]
      if not path.is_file():
        raise UserError(f"--census={workdir}: {r['file']} is listed in images.jsonl but missing; "
                        "rerun the census into a new workdir")
      kept.append(dict(r, census=str(workdir), path=str(path)))
  if not kept:
    raise UserError(f"--census={workdir} saved no images (config.save_images="
                    f"{_saved_mode(workdir)!r}): rerun the census with "
                    "--config.save_images=sample into a new workdir")
  return kept


def _saved_mode(workdir: pathlib.Path):
  try:
    return json.loads((workdir / "config.json").read_text()).get("save_images")
  except (OSError, ValueError):
    return None


def _image(path) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as im:
    return np.asarray(im.convert("RGB"))


def _write_png(path, image: np.ndarray) -> None:
  """The uint8 image [H, W, 3] as it is (io.write_png takes floats in [0, 1]), atomically."""
  import io as std_io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buffer = std_io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG")
  io.atomic_write_bytes(path, buffer.getvalue())


# --------------------------------------------------------------------------------- sample --
def stratified_sample(rows: Sequence[Mapping], sizes: Mapping[str, int], seed: int,
                      kinds: Sequence[str] = KINDS, max_per_prompt: int = 2
                      ) -> tuple[list[dict], dict]:
  """(sampled rows, per-stratum {"requested", "candidates", "sampled"}) — the module docstring.
  A stratum with fewer usable candidates than requested gives all it has (counted)."""
  bad = [v for v in sizes if v not in VERDICTS]
  if bad:
    raise UserError(f"sizes={dict(sizes)!r} is invalid: name verdicts of {VERDICTS}")
  bad = [k for k in kinds if k not in KINDS]
  if bad or not kinds:
    raise UserError(f"kinds={tuple(kinds)!r} is invalid: use entries of {KINDS}")
  ordered = sorted(rows, key=lambda r: (r["census"], r["prompt_index"], r["seed"]))
  per_prompt = collections.Counter()
  seen_pixels = set()
  chosen, table = [], {}
  for verdict in VERDICTS:
    for kind in kinds:
      want = int(sizes.get(verdict, 0))
      cands = [r for r in ordered if r["kind"] == kind and verdict_of(r) == verdict]
      rng = random.Random(f"{seed}-{verdict}-{kind}")
      by_class = collections.defaultdict(list)
      for r in cands:
        by_class[r["label"]].append(r)
      classes = sorted(by_class)
      rng.shuffle(classes)
      for c in classes:
        rng.shuffle(by_class[c])
      got = 0
      while got < want and any(by_class[c] for c in classes):
        for c in classes:                       # one image per class in turn
          if got >= want:
            break
          while by_class[c]:
            r = by_class[c].pop()
            key = r["prompt"]
            if per_prompt[key] >= max_per_prompt:
              continue
            pixels = _image(r["path"]).tobytes()
            if pixels in seen_pixels:
              continue
            seen_pixels.add(pixels)
            per_prompt[key] += 1
            chosen.append(dict(r, stratum=f"{verdict}/{kind}"))
            got += 1
            break
      table[f"{verdict}/{kind}"] = {"requested": want, "candidates": len(cands), "sampled": got}
  return chosen, table


# ---------------------------------------------------------------------------------- split --
def _clusters(items: Sequence[Mapping]) -> list[int]:
  """Cluster index of each item: items sharing a prompt, or a scene of one census, are joined
  (union-find), so a scene's short and long captions fall together."""
  parent = list(range(len(items)))

  def find(i):
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  first = {}
  for i, it in enumerate(items):
    s = it["source"]
    for key in (("prompt", it["prompt"]), ("scene", s["census"], s["scene"])):
      if key in first:
        parent[find(i)] = find(first[key])
      else:
        first[key] = i
  roots = [find(i) for i in range(len(items))]
  ids = {r: n for n, r in enumerate(dict.fromkeys(roots))}
  return [ids[r] for r in roots]


def split_items(items: Sequence[Mapping], seed: int) -> dict:
  """{"tune": ids, "test": ids, "clusters": {id: cluster}} — whole clusters (`_clusters`) to one
  part, in a seeded order, each to the part holding fewer items of the cluster's strata (ties:
  fewer items overall, then test)."""
  cluster = _clusters(items)
  members = collections.defaultdict(list)
  for it, c in zip(items, cluster):
    members[c].append(it)
  order = sorted(members)
  random.Random(f"split-{seed}").shuffle(order)
  count = {p: collections.Counter() for p in PARTS}
  total = {p: 0 for p in PARTS}
  part_of = {}
  for c in order:
    strata = collections.Counter(it["source"]["stratum"] for it in members[c])
    load = {p: (sum(count[p][s] for s in strata), total[p], p == "tune") for p in PARTS}
    part = min(PARTS, key=load.get)
    part_of[c] = part
    count[part].update(strata)
    total[part] += len(members[c])
  ids = {p: sorted(it["id"] for it, c in zip(items, cluster) if part_of[c] == p) for p in PARTS}
  return {**ids, "clusters": {it["id"]: int(c) for it, c in zip(items, cluster)}}


# --------------------------------------------------------------------------------- sheets --
def _font(size: int):
  from PIL import ImageFont  # pylint: disable=g-import-not-at-top
  path = pathlib.Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
  if not path.exists():
    raise UserError("DejaVuSans.ttf not found: install it with `apt-get install "
                    "fonts-dejavu-core`")
  return ImageFont.truetype(str(path), size)


def contact_sheets(items: Sequence[Mapping], out: pathlib.Path, rater: str, seed: int,
                   tile: int = 192, cols: int = 4, rows: int = 3, wrap: int = 34) -> dict:
  """Rater `rater`'s own shuffled order (seed "<seed>-<rater>"), cols × rows tiles per sheet:
  each image enlarged to tile² by nearest neighbour, its number and its whole caption wrapped
  below (the cells as tall as the longest caption needs).
  Writes out/sheets/<rater>/sheet_NN.png and map.json; returns map.json's content."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  order = list(items)
  random.Random(f"{seed}-{rater}").shuffle(order)
  font = _font(13)
  pad, line_h = 8, 16
  lines = max(len(textwrap.wrap(f"{len(order)}. {it['prompt']}", wrap)) for it in order)
  cell_w, cell_h = tile + 2 * pad + 60, tile + 2 * pad + lines * line_h
  sheet_dir = out / "sheets" / rater
  sheet_dir.mkdir(parents=True, exist_ok=True)
  mapping = {}
  per = cols * rows
  for s in range(0, len(order), per):
    chunk = order[s:s + per]
    number = s // per + 1
    img = Image.new("RGB", (cols * cell_w, rows * cell_h + 30), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((8, 6), f"rater {rater} · sheet {number:02d}", fill=(0, 0, 0), font=font)
    tiles = {}
    for i, item in enumerate(chunk):
      r, c = divmod(i, cols)
      x0, y0 = c * cell_w, 30 + r * cell_h
      draw.rectangle([x0 + 2, y0 + 2, x0 + cell_w - 3, y0 + cell_h - 3], fill=(90, 90, 90))
      with Image.open(out / item["image"]) as im:
        img.paste(im.convert("RGB").resize((tile, tile), Image.NEAREST),
                  (x0 + (cell_w - tile) // 2, y0 + pad))
      text = textwrap.wrap(f"{i + 1}. {item['prompt']}", wrap)
      for k, line in enumerate(text):
        draw.text((x0 + 8, y0 + pad + tile + 4 + k * line_h), line, fill=(255, 255, 255),
                  font=font)
      tiles[str(i + 1)] = item["id"]
    name = f"sheet_{number:02d}.png"
    img.save(sheet_dir / name)
    mapping[name] = tiles
  doc = {"rater": rater, "seed": f"{seed}-{rater}", "sheets": mapping}
  io.write_json(sheet_dir / "map.json", doc)
  return doc


# ---------------------------------------------------------------------------------- build --
def build(census_dirs: Sequence, out, sizes: Mapping[str, int], seed: int = 23,
          kinds: Sequence[str] = KINDS, max_per_prompt: int = 2, raters: Sequence[str] = ("A", "B"),
          run_id: str = "world2_v1") -> dict:
  """Writes the rating set into `out` (the module docstring); returns {"items", "split",
  "strata"}. Refuses an `out` that already holds items.json (a committed set is never
  overwritten)."""
  from jaxdiffattack import pages  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.world2 import oracle  # pylint: disable=g-import-not-at-top
  out = pathlib.Path(out)
  if (out / "items.json").exists():
    raise UserError(f"--out={out} already holds a rating set (items.json): pass a new folder")
  if not census_dirs:
    raise UserError("--census is empty: pass one or more census workdirs")
  rows = [r for d in census_dirs for r in load_census(d)]
  chosen, strata = stratified_sample(rows, sizes, seed, kinds, max_per_prompt)
  if not chosen:
    raise UserError(f"no image of the census workdirs {list(map(str, census_dirs))} falls in the "
                    f"strata {list(strata)}: check --holds/--violated/--unclear and --kinds")
  order = list(range(len(chosen)))
  random.Random(seed).shuffle(order)
  images = np.stack([_image(chosen[i]["path"]) for i in order])
  readings = oracle.verdict(images, [chosen[i]["prompt"] for i in order])
  items = []
  for n, (i, image, reading) in enumerate(zip(order, images, readings)):
    r = chosen[i]
    item_id = f"w{n:04d}"
    _write_png(out / "images" / f"{item_id}.png", image)
    source = {"census": r["census"], "file": r["file"], "prompt_index": r["prompt_index"],
              "kind": r["kind"], "scene": r["scene"], "scene_kind": r.get("scene_kind"),
              "label": r["label"], "seed": r["seed"], "stratum": r["stratum"],
              "census_verdict": verdict_of(r), "census_oracle": r["judges"][ORACLE],
              "failure": r.get("failure"), "oracle": reading,
              "job": "benchmarks/world2_rating_set.py build"}
    items.append({"id": item_id, "image": f"images/{item_id}.png", "prompt": r["prompt"],
                  "source": source})
  items.sort(key=lambda it: it["id"])
  split = split_items(items, seed)
  io.write_json(out / "items.json", {"format": ratings_lib.ITEMS_FORMAT, "run_id": run_id,
                                     "items": items})
  io.write_json(out / "split.json", {
      "format": SPLIT_FORMAT, "run_id": run_id, "seed": seed,
      "rule": "items sharing a prompt or a census scene form one cluster; whole clusters go to "
              "one part, in a seeded order, each to the part with fewer items of its strata; "
              "tune: reserved for oracle threshold changes; test: the reported part",
      **split})
  mismatched = sum(it["source"]["oracle"]["verdict"] != it["source"]["census_verdict"]
                   for it in items)
  io.write_json(out / "sample.json", {
      "run_id": run_id, "seed": seed, "census": [str(d) for d in census_dirs],
      "sizes_per_kind": dict(sizes), "kinds": list(kinds), "max_per_prompt": max_per_prompt,
      "strata": strata, "items": len(items),
      "png_verdict_differs_from_census": mismatched, "raters": list(raters)})
  for rater in raters:
    contact_sheets(items, out, rater, seed)
  io.atomic_write_bytes(out / "index.html", pages.rating_html(run_id, items, GUIDE).encode())
  shutil.copyfile(GUIDE, out / "rating_guide.md")
  return {"items": items, "split": split, "strata": strata}


# -------------------------------------------------------------------------------- measure --
def oracle_outcomes(kit, items: Sequence[Mapping]) -> dict[str, str]:
  """{item id: "failure" / "correct" / "unclear"}: the world-2 oracle re-run on each item's image
  against its caption."""
  from jaxdiffattack.world2 import oracle  # pylint: disable=g-import-not-at-top
  if not items:
    return {}
  kit = pathlib.Path(kit)
  images = np.stack([_image(kit / it["image"]) for it in items])
  return {it["id"]: OUTCOME[a.verdict]
          for it, a in zip(items, oracle.judge(images, [it["prompt"] for it in items]))}


def _block(human: Sequence[str], judge: Sequence[str], prompts: Sequence[str]) -> dict:
  """`ratings.judge_agreement` plus its three rates with intervals clustered by prompt."""
  out = ratings_lib.judge_agreement(human, judge)
  for name, denominator, hit in (("recall_of_human_failures", "no", "failure"),
                                 ("false_failure_rate", "yes", "failure"),
                                 ("unclear_rate_on_human_correct", "yes", "unclear")):
    idx = [i for i, h in enumerate(human) if h == denominator]
    out[f"{name}_clustered"] = ratings_lib.clustered_rate(
        [float(judge[i] == hit) for i in idx], [prompts[i] for i in idx])
  return out


def measure(kit, ratings_paths: Sequence, part: str = "test", min_raters: int = 2,
            outcomes: Callable | None = None) -> dict:
  """The oracle against the human consensus on the `part` items of the rating set `kit` (module
  docstring). `outcomes(kit, items) -> {id: outcome}` replaces the oracle (tests)."""
  kit = pathlib.Path(kit)
  if part not in PARTS:
    raise UserError(f"--part={part!r} is invalid: use 'test' (reported) or 'tune'")
  if not ratings_paths:
    raise UserError(f"no ratings files for {kit}: pass --ratings FILES (the raters' exports)")
  doc = ratings_lib.read_json(kit / "items.json", "items")
  if doc.get("format") != ratings_lib.ITEMS_FORMAT:
    raise UserError(f"{kit / 'items.json'}: format={doc.get('format')!r} is not "
                    f"{ratings_lib.ITEMS_FORMAT!r}: build the set with "
                    "benchmarks/world2_rating_set.py build")
  split = ratings_lib.read_json(kit / "split.json", "split")
  if split.get("run_id") != doc["run_id"]:
    raise UserError(f"{kit / 'split.json'}: run_id={split.get('run_id')!r} is not the items' "
                    f"{doc['run_id']!r}: keep the split written with the set")
  by_id = {it["id"]: it for it in doc["items"]}
  files = ratings_lib.load_ratings(ratings_paths, doc["run_id"], by_id)
  votes = ratings_lib.votes_by_item(files)
  ids = [i for i in split[part] if i in by_id]
  rated = [i for i in ids if len(votes.get(i, {})) >= min_raters]
  human = {i: ratings_lib.consensus([v["verdict"] for v in votes[i].values()]) for i in rated}
  items = [by_id[i] for i in rated]
  judged = (outcomes or oracle_outcomes)(kit, items)
  blocks = {}
  for kind in ("all",) + KINDS:
    mine = [it for it in items if kind == "all" or it["source"]["kind"] == kind]
    if mine:
      blocks[kind] = _block([human[it["id"]] for it in mine], [judged[it["id"]] for it in mine],
                            [it["prompt"] for it in mine])
  raters = [f.rater for f in files]
  return {
      "run_id": doc["run_id"], "part": part, "items_in_part": len(ids),
      "items_rated": len(rated), "min_raters": min_raters,
      "too_few_ratings": len(ids) - len(rated),
      "consensus_rule": "ratings.consensus: the most given verdict; a tie between the top "
                        "verdicts is unsure",
      "consensus": dict(collections.Counter(human.values())),
      "raters": [{"rater": f.rater, "method": f.method, "file": f.path, "ratings": len(f.ratings),
                  "excluded": f.excluded} for f in files],
      "inter_rater": ratings_lib.agreement({i: votes[i] for i in rated}, raters),
      "judge": ORACLE, "judge_outcomes": "world2.oracle re-run on each item image and caption",
      "cluster": "prompt", "by_kind": blocks}
