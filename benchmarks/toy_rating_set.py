r"""Builds the toy world's blind-rating image set (issue #22 item 2): generated 32×32 images and
the prompt each was made for, from every source the oracle must judge, plus shuffled contact sheets.

  # 1. the jobs whose failures are rated (small budgets; each writes its own workdir):
  python launch/search.py --config configs/latent_search.py:toy,wide --config.seeds_per_label=1 \
      --config.stop_after_failures=0 --config.population_size=8 --config.num_generations=6 \
      --workdir RUNS/latent       # likewise embedding / token / prompt (toy,wide except token:
                                  # toy); RUNS/embedding_eps06 (epsilon 0.6) is read if present
                                  # (docs/ratings/toy_v1/README.md: the budgets toy_v1 used)
  python launch/attack.py --config configs/atm.py:toy --workdir RUNS/atm ...
  # 2. clean generations (with / without guidance) and shifted seeds, then the set and sheets:
  python benchmarks/toy_rating_set.py generate --out GEN
  python benchmarks/toy_rating_set.py build --runs RUNS --gen GEN --out /work/ratings/toy_v1

The prompt shown to raters is always the *intended* clean prompt, "a {label}" (the search's and
the attack's adversarial prompts are kept in `source`); the image's provenance (`source.kind`:
clean_guided, clean_unguided, shift, search_latent, search_embedding, search_token,
search_prompt, attack_atm) never appears on a sheet.
"""

import argparse
import json
import pathlib
import random
import sys

import numpy as np

RUN_ID = "toy_v1"
ITEMS_FORMAT = "jaxdiffattack.rating_items/1"
TILE = 128          # 32 px × 4, nearest neighbour
COLS, ROWS = 4, 5   # 20 tiles per sheet
RATERS = ("A", "B", "C")


def _label_prompt(label: str) -> str:
  return f"a {label}"


# ------------------------------------------------------------------------------------- generate
def generate(out: pathlib.Path, seed: int = 2026, num_steps: int = 20) -> None:
  """Clean generations with guidance (7.5) and without (1.0), and shifted seeds (the toy sweep's
  shifts and the variance study's wider ones), every toy label; writes out/images/*.png and
  out/rows.json."""
  import jax  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import io  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import perturb
  from jaxdiffattack import sampler as sampler_lib
  from jaxdiffattack import text
  from jaxdiffattack.models import load_stable_diffusion
  from jaxdiffattack.toy import world

  sd, params = load_stable_diffusion("toy", dtype="float32")
  labels = list(world.LABELS)
  prompts = [world.CANONICAL_TEMPLATE.format(l) for l in labels]
  emb = np.asarray(text.encode_prompts(sd, params["text_encoder"], prompts))
  uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0])
  root = jax.random.PRNGKey(seed)
  rows = []

  def run(tag, guidance, per_label, shifts=None):
    n = len(labels) * per_label
    members = np.arange(n)
    key = jax.random.fold_in(root, len(rows) + 1000 * len(tag))
    latents = np.asarray(sampler_lib.member_latents(key, members, sd.latent_shape))
    shift_desc = [None] * n
    if shifts is not None:
      rng = np.random.default_rng(seed + 7)
      kinds = tuple(sorted({k for k, _ in shifts}))
      picks = [shifts[rng.integers(len(shifts))] for _ in range(n)]
      kind_ids = np.array([kinds.index(k) for k, _ in picks])
      alphas = np.array([[a, 0.0] for _, a in picks], np.float32)
      keys = jax.random.split(jax.random.fold_in(key, 1), n)
      latents = np.asarray(perturb.apply_shifts(kind_ids, latents, alphas, keys, kinds))
      shift_desc = [{"shift": k, "alpha": float(a)} for k, a in picks]
    settings = sampler_lib.SamplerSettings(scheduler="ddim", num_steps=num_steps,
                                           guidance=guidance > 1.0)
    sampler = sampler_lib.PopulationSampler(sd, params, settings)
    images = sampler(latents, emb[members // per_label], uncond, guidance).images
    for m in members:
      label = labels[m // per_label]
      name = f"{tag}_{m:04d}.png"
      io.write_png(out / "images" / name, images[m])
      src = {"kind": tag, "prompt": prompts[m // per_label], "label": label,
             "guidance_scale": guidance, "num_steps": num_steps, "scheduler": "ddim",
             "seed": seed, "member": int(m), "job": "benchmarks/toy_rating_set.py generate"}
      if shift_desc[m]:
        src.update(shift_desc[m])
      rows.append({"file": f"images/{name}", "label": label, "source": src})
    print(f"{tag}: {n} images", flush=True)

  run("clean_guided", 7.5, 6)
  run("clean_unguided", 1.0, 4)
  sweep = ([("ums", a) for a in (-0.2, -0.1, 0.1, 0.2, -1.0, -0.5, 0.5, 1.0)] +
           [("rms", a) for a in (-0.2, -0.1, 0.1, 0.2, -2.0, -1.0, 1.0, 2.0)] +
           [("sds", a) for a in (-0.3, 0.3, -0.6, 0.6)] + [("pas", a) for a in (16.0, 64.0)])
  run("shift", 7.5, 5, sweep)
  (out / "rows.json").write_text(json.dumps(rows, indent=1))


# ---------------------------------------------------------------------------------------- build
def _search_rows_from_files(run_dir: pathlib.Path, space: str) -> list[dict]:
  """A search stopped after its first method (results.jsonl is written at the end): the failure
  PNGs each method saved as it finished (failures/<method>/tNNN/failure_K.png, + _prompt.txt),
  targets rebuilt from config.json."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.search import targets as targets_lib  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(json.loads((run_dir / "config.json").read_text()))
  targets = targets_lib.make_targets(config)
  rows = []
  for png in sorted(run_dir.glob("failures/*/t*/*.png")):   # failure_K.png and best.png
    method, t = png.parent.parent.name, int(png.parent.name[1:])
    target = targets[t]
    src = {"kind": f"search_{space}", "method": method, "target": t, "label": target.label,
           "clean_prompt": target.prompt, "which": png.stem, "job": run_dir.name,
           "file": str(png.relative_to(run_dir))}
    text = png.with_name(f"{png.stem}_prompt.txt")
    if text.exists():
      src["adversarial_prompt"] = text.read_text().strip()
    if target.target_label:
      src["target_label"] = target.target_label
    rows.append({"path": png, "label": target.label, "source": src})
  return rows


def _search_rows(run_dir: pathlib.Path, space: str) -> list[dict]:
  if not (run_dir / "results.jsonl").exists():
    return _search_rows_from_files(run_dir, space)
  rows = []
  for line in (run_dir / "results.jsonl").read_text().splitlines():
    r = json.loads(line)
    entries = [(f"failure_{k}", f) for k, f in enumerate(r["failures"])]
    if r.get("searched", True) and r["best"].get("files"):
      entries.append(("best", r["best"]))   # the target's lowest-fitness image (a near-failure)
    for name, f in entries:
      pngs = [p for p in f.get("files", []) if p.endswith(".png")]
      if not pngs:
        continue
      src = {"kind": f"search_{space}", "method": r["method"], "target": r["target"],
             "label": r["label"], "clean_prompt": r["prompt"], "which": name,
             "job": str(run_dir.name), "file": pngs[0]}
      for key in ("prompt", "adversarial_prompt", "tokens", "text"):
        if key in f and isinstance(f[key], str):
          src["adversarial_prompt"] = f[key]
      if r.get("target_label"):
        src["target_label"] = r["target_label"]
      rows.append({"path": run_dir / pngs[0], "label": r["label"], "source": src})
  return rows


def _attack_rows(run_dir: pathlib.Path) -> list[dict]:
  """The attack's saved successful samples. They are captioned (image upscaled 8× above its
  caption, `attacks.report.captioned`): the 32×32 original is every 8th pixel of the top 256²."""
  from jaxdiffattack.toy import world  # pylint: disable=g-import-not-at-top
  rows = []
  for line in (run_dir / "results.jsonl").read_text().splitlines():
    r = json.loads(line)
    texts = r.get("successful_prompts", [])
    for k, rel in enumerate(r.get("images", []) or []):
      label = world.LABELS[int(r["label"])]
      src = {"kind": "attack_atm", "label": label, "clean_prompt": r["prompt"],
             "set": r["set"], "prompt_index": r["index"], "job": run_dir.name, "file": rel,
             # the sample's adversarial prompt when the successful texts are distinct
             "adversarial_prompt": texts[k] if len(texts) == len(r["images"]) else None,
             "successful_prompts": texts}
      rows.append({"path": run_dir / rel, "label": label, "source": src, "captioned": True})
  return rows


def _font(size: int):
  from PIL import ImageFont  # pylint: disable=g-import-not-at-top
  for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",):
    if pathlib.Path(path).exists():
      return ImageFont.truetype(path, size)
  raise SystemExit("error: DejaVuSans.ttf not found; install it with `apt-get install "
                   "fonts-dejavu-core`")


def contact_sheets(items: list[dict], out: pathlib.Path, rater: str, seed: int) -> None:
  """Rater `rater`'s own shuffled order, 20 tiles per sheet, and map.json."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  order = list(items)
  random.Random(f"{seed}-{rater}").shuffle(order)
  font, small = _font(16), _font(14)
  pad, text_h = 10, 44
  cell_w, cell_h = TILE + 2 * pad + 60, TILE + 2 * pad + text_h
  sheet_dir = out / "sheets" / rater
  sheet_dir.mkdir(parents=True, exist_ok=True)
  mapping = {}
  per = COLS * ROWS
  for s in range(0, len(order), per):
    chunk = order[s:s + per]
    sheet_no = s // per + 1
    img = Image.new("RGB", (COLS * cell_w, ROWS * cell_h + 30), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((8, 6), f"rater {rater} · sheet {sheet_no:02d}", fill=(0, 0, 0), font=small)
    tiles = {}
    for i, item in enumerate(chunk):
      r, c = divmod(i, COLS)
      x0, y0 = c * cell_w, 30 + r * cell_h
      draw.rectangle([x0 + 2, y0 + 2, x0 + cell_w - 3, y0 + cell_h - 3], fill=(128, 128, 128))
      tile = Image.open(out / item["image"]).convert("RGB").resize((TILE, TILE), Image.NEAREST)
      img.paste(tile, (x0 + (cell_w - TILE) // 2, y0 + pad))
      ty = y0 + pad + TILE + 4
      draw.text((x0 + 8, ty), f"{i + 1}.", fill=(255, 255, 255), font=font)
      draw.text((x0 + 38, ty), item["prompt"], fill=(255, 255, 255), font=font)
      tiles[str(i + 1)] = item["id"]
    name = f"sheet_{sheet_no:02d}.png"
    img.save(sheet_dir / name)
    mapping[name] = tiles
  (sheet_dir / "map.json").write_text(json.dumps(
      {"rater": rater, "seed": f"{seed}-{rater}", "sheets": mapping}, indent=1))


def build(runs: pathlib.Path, gen: pathlib.Path, out: pathlib.Path, seed: int) -> None:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  pool = []
  for r in json.loads((gen / "rows.json").read_text()):
    pool.append({"path": gen / r["file"], "label": r["label"], "source": r["source"]})
  for job, space in (("latent", "latent"), ("embedding", "embedding"),
                     ("embedding_eps06", "embedding"), ("token", "token"), ("prompt", "prompt")):
    if (runs / job / "results.jsonl").exists() or list((runs / job).glob("failures/*/t*/*.png")):
      pool += _search_rows(runs / job, space)
  if (runs / "atm" / "results.jsonl").exists():
    pool += _attack_rows(runs / "atm")
  # The same picture twice (a target's best image is often one of its failures): keep the first.
  seen, unique = set(), []
  for p in pool:
    image = np.asarray(Image.open(p["path"]).convert("RGB"))
    if p.get("captioned"):
      image = image[:256:8, :256:8]
    digest = image.tobytes()
    if digest not in seen:
      seen.add(digest)
      unique.append(p)
  pool = unique
  # Stable, non-informative ids: a seeded shuffle of the pool, numbered.
  order = list(range(len(pool)))
  random.Random(seed).shuffle(order)
  (out / "images").mkdir(parents=True, exist_ok=True)
  items = []
  for n, i in enumerate(order):
    p = pool[i]
    item_id = f"i{n:04d}"
    image = np.asarray(Image.open(p["path"]).convert("RGB"))
    if p.get("captioned"):
      image = image[:256:8, :256:8]
    if image.shape != (32, 32, 3):
      raise SystemExit(f"error: {p['path']} is {image.shape}, not 32×32 RGB")
    Image.fromarray(image).save(out / "images" / f"{item_id}.png")
    items.append({"id": item_id, "image": f"images/{item_id}.png",
                  "prompt": _label_prompt(p["label"]), "source": p["source"]})
  items.sort(key=lambda it: it["id"])
  (out / "items.json").write_text(json.dumps(
      {"format": ITEMS_FORMAT, "run_id": RUN_ID, "items": items}, indent=1))
  for rater in RATERS:
    contact_sheets(items, out, rater, seed)
  kinds = {}
  for it in items:
    kinds[it["source"]["kind"]] = kinds.get(it["source"]["kind"], 0) + 1
  print(f"{len(items)} items: {kinds}")


def main(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest="cmd", required=True)
  g = sub.add_parser("generate")
  g.add_argument("--out", required=True, type=pathlib.Path)
  b = sub.add_parser("build")
  b.add_argument("--runs", required=True, type=pathlib.Path)
  b.add_argument("--gen", required=True, type=pathlib.Path)
  b.add_argument("--out", required=True, type=pathlib.Path)
  b.add_argument("--seed", type=int, default=22)
  a = p.parse_args(argv)
  if a.cmd == "generate":
    generate(a.out)
  else:
    build(a.runs, a.gen, a.out, a.seed)


if __name__ == "__main__":
  main(sys.argv[1:])
