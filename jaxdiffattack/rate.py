"""The `launch/rate.py` job: a blind human-rating kit for a run, and ingesting its ratings.

SAGE (arXiv 2306.00974, §4) reports SSR(H), the share of found failures that people confirm,
beside the automatic evaluator's SSR(A). `make_kit` writes, for any job's workdir (or a plain
folder of images with a prompts file):

  rating/index.html   the rating page (`pages.rating_html`): opens from disk, no server
  rating/img/*.png    the images, under opaque names (a file name never tells the method)
  rating/items.json   {"format": "jaxdiffattack.rating_items/1", "run_id", "items": [{"id",
                      "image", "prompt", "source"}]} — what the page shows and where it came from

`ingest` reads exported ratings files (`ratings.RATINGS_FORMAT`), checks them all before writing
anything, and writes:

  judges/human.jsonl  one line per rated item: {"item", "source", "votes": {rater: verdict},
                      "notes", "counts", "consensus", "judge": {"pred", "confidence",
                      "failure", "unclear", "reason"}} — the `human` judge's record
  rating/summary.json and rating/report.md: SSR by humans per method (95 % CIs clustered by
                      target) beside SSR by every automatic judge on the same items, inter-rater
                      agreement (Cohen's / Fleiss' κ), each automatic judge against the human
                      consensus, and every exclusion counted
and rebuilds the run's index.html (which then shows the human judge). Job outputs
(results.jsonl, summary.json, report.md) are never rewritten.
"""

import datetime
import hashlib
import pathlib

import numpy as np

from jaxdiffattack import io
from jaxdiffattack import pages
from jaxdiffattack import ratings as ratings_lib
from jaxdiffattack.errors import UserError

HUMAN = "human"


def run_id_of(job: str, workdir: pathlib.Path, entries: list) -> str:
  """`<job>-<12 hex>`: a digest of the run's config and every image id it could offer."""
  digest = hashlib.sha256(job.encode())
  config = workdir / "config.json"
  if config.is_file():
    digest.update(config.read_bytes())
  for e in sorted(entries, key=lambda e: e.id):
    digest.update(e.id.encode() + b"\0")
  return f"{job}-{digest.hexdigest()[:12]}"


def _entries(workdir, images=None, prompts=None):
  workdir = pathlib.Path(workdir)
  if images is not None or prompts is not None:
    if images is None or prompts is None:
      raise UserError("--images and --prompts go together: pass the folder of images and the "
                      "CSV (image,prompt) or JSON {image: prompt} that names their prompts")
    return "folder", pages.collect_folder(images, prompts)
  if not workdir.is_dir():
    raise UserError(f"--workdir={workdir} is not a directory: pass a job's workdir (or --images "
                    "and --prompts for a plain folder)")
  return pages.collect(workdir)


def make_kit(workdir, *, sample: int = 0, seed: int = 0, images=None, prompts=None) -> dict:
  """Writes `workdir/rating/` (module docstring); returns the items file's content.

  Args:
    workdir: a job's workdir; with `images`/`prompts`, the folder the kit is written into.
    sample: rate a random N of the run's images (0: all of them); drawn with `seed`.
    images, prompts: a plain folder of images and its prompts file (`pages.collect_folder`).
  """
  workdir = pathlib.Path(workdir)
  job, entries = _entries(workdir, images, prompts)
  if not entries:
    raise UserError(f"{workdir} ({job}) has no images to rate: make the kit from a generate, "
                    "sweep, search or attack workdir, or from --images with --prompts")
  if not (isinstance(sample, int) and sample >= 0):
    raise UserError(f"--sample={sample!r} is invalid: use 0 (every image) or a positive count")
  run_id = run_id_of(job, workdir, entries)
  chosen = sorted(entries, key=lambda e: e.id)
  if sample and sample < len(chosen):
    pick = np.random.default_rng(seed).choice(len(chosen), size=sample, replace=False)
    chosen = [chosen[i] for i in sorted(pick)]
  out_dir = workdir / "rating"
  items = []
  for e in chosen:
    name = f"img/{hashlib.sha1(e.id.encode()).hexdigest()[:16]}{pathlib.Path(e.image).suffix}"
    items.append({"id": e.id, "image": name, "prompt": e.prompt,
                  "source": dict(e.source, method=e.method, target=e.target, kind=e.kind,
                                 file=e.image if job != "folder" else e.source.get("file"))})
  doc = {"format": ratings_lib.ITEMS_FORMAT, "run_id": run_id, "items": items}
  existing = out_dir / "items.json"
  if existing.is_file():
    old = ratings_lib.read_json(existing, "items")
    if [i["id"] for i in old.get("items", [])] != [i["id"] for i in items]:
      raise UserError(f"{existing} already lists another set of images (raters may hold ratings "
                      f"of it): ingest those first, then move {out_dir} away to make a new kit")
  for e, item in zip(chosen, items):
    src = pathlib.Path(e.image) if job == "folder" else workdir / e.image
    target = out_dir / item["image"]
    if not target.is_file() or target.read_bytes() != src.read_bytes():
      io.atomic_write_bytes(target, src.read_bytes())
  io.write_json(existing, doc)
  io.atomic_write_bytes(out_dir / "index.html",
                        pages.rating_html(run_id, items).encode("utf-8"))
  if job != "folder":
    pages.write_index(workdir)   # links the rating page
  return doc


# ------------------------------------------------------------------------------ ingest --
def _pct(x) -> str:
  return "-" if x is None else f"{100 * x:.1f} %"


def _ci(block) -> str:
  low, high = block["ci95"]
  return "" if low is None else f" [{100 * low:.0f}, {100 * high:.0f}]"


def summarise(items: list[dict], votes: dict, files: list, judges_of: dict) -> dict:
  """The figures of `rating/summary.json` (see the module docstring)."""
  raters = [f.rater for f in files]
  rated = [i for i in items if i["id"] in votes]
  cons = {i["id"]: ratings_lib.consensus([v["verdict"] for v in votes[i["id"]].values()])
          for i in rated}
  methods = list(dict.fromkeys(i["source"]["method"] for i in rated))
  automatic = list(dict.fromkeys(n for i in rated for n in judges_of.get(i["id"], {})
                                 if n != HUMAN))
  by_method = {}
  for m in methods:
    sel = [i for i in rated if i["source"]["method"] == m]
    clusters = [str(i["source"].get("target")) for i in sel]
    block = {"items": len(sel),
             "human": ratings_lib.clustered_rate([cons[i["id"]] == "no" for i in sel], clusters),
             "human_unsure": sum(cons[i["id"]] == "unsure" for i in sel), "judges": {}}
    for j in automatic:
      read = [(judges_of.get(i["id"], {}).get(j), c) for i, c in zip(sel, clusters)]
      read = [(r, c) for r, c in read if r is not None and r.get("failure") is not None]
      block["judges"][j] = ratings_lib.clustered_rate([bool(r.get("failure")) for r, _ in read],
                                                      [c for _, c in read])
    by_method[m] = block
  vs_judges = {}
  for j in automatic:
    pairs = [(cons[i["id"]], ratings_lib.judge_outcome(judges_of.get(i["id"], {}).get(j)))
             for i in rated]
    pairs = [(h, o) for h, o in pairs if o is not None]
    vs_judges[j] = ratings_lib.judge_agreement([h for h, _ in pairs], [o for _, o in pairs])
  return {"raters": [{"rater": f.rater, "method": f.method, "created": f.created,
                      "file": f.path, "ratings": len(f.ratings), "excluded": f.excluded}
                     for f in files],
          "items": len(items), "rated_items": len(rated),
          "consensus_counts": {v: sum(c == v for c in cons.values())
                               for v in ratings_lib.VERDICTS},
          "agreement": ratings_lib.agreement(votes, raters),
          "ssr": by_method, "judges_vs_human": vs_judges,
          "excluded": {k: sum(f.excluded.get(k, 0) for f in files)
                       for k in sorted({k for f in files for k in f.excluded})}}


def markdown(summary: dict, run_id: str) -> str:
  a = summary["agreement"]
  lines = [f"# Human ratings of run `{run_id}`", "",
           f"{summary['rated_items']} of {summary['items']} items rated by "
           f"{len(summary['raters'])} rater(s); consensus = the verdict most raters gave (a tie is "
           "unsure). A human failure is a consensus of **no**.", "",
           "| rater | how rated | ratings kept | excluded |", "|---|---|---|---|"]
  for r in summary["raters"]:
    excl = ", ".join(f"{v} {k}" for k, v in r["excluded"].items()) or "0"
    lines.append(f"| {r['rater']} | {r['method']} | {r['ratings']} | {excl} |")
  kappa = a.get("kappa")
  lines += ["", f"Inter-rater agreement: {a.get('statistic') or 'n/a'} κ = "
            f"{'-' if kappa is None else f'{kappa:.3f}'} over {a['items_rated_by_all']} items "
            "rated by every rater" + (f"; of {a['decided_both']} items both called yes or no they "
                                     f"disagree on {a['decided_disagree']}"
                                     if "decided_both" in a else "") + ".", ""]
  judges = sorted({j for b in summary["ssr"].values() for j in b["judges"]})
  lines += ["## SSR by humans per method (95 % CI, clustered by target)", "",
            "| method | items | SSR(H) | human unsure |"
            + "".join(f" SSR by {j} |" for j in judges),
            "|---|---|---|---|" + "---|" * len(judges)]
  for m, b in summary["ssr"].items():
    h = b["human"]
    cells = [f"{_pct(b['judges'][j]['rate'])}{_ci(b['judges'][j])} ({b['judges'][j]['hits']}/"
             f"{b['judges'][j]['n']})" if j in b["judges"] and b["judges"][j]["n"] else "-"
             for j in judges]
    lines.append(f"| {m} | {b['items']} | {_pct(h['rate'])}{_ci(h)} ({h['hits']}/{h['n']}) | "
                 f"{b['human_unsure']} |" + "".join(f" {c} |" for c in cells))
  lines += ["", "## Each automatic judge against the human consensus", ""]
  for j, g in summary["judges_vs_human"].items():
    c = g["confusion"]
    lines += [f"**{j}** ({g['items']} items): recall of human failures "
              f"{_pct(g['recall_of_human_failures'])} ({c['no']['failure']}/"
              f"{g['human_failures']}), false failures on images people call correct "
              f"{_pct(g['false_failure_rate'])} ({c['yes']['failure']}/{g['human_correct']}), "
              f"unclear on those {_pct(g['unclear_rate_on_human_correct'])}, unclear overall "
              f"{_pct(g['unclear_rate'])}.", "",
              "| human \\ judge | failure | correct | unclear |", "|---|---|---|---|"]
    lines += [f"| {h} | {c[h]['failure']} | {c[h]['correct']} | {c[h]['unclear']} |"
              for h in ratings_lib.VERDICTS]
    lines.append("")
  if summary["excluded"]:
    lines += ["Excluded ratings: " + ", ".join(f"{v} × {k}" for k, v in
                                               summary["excluded"].items()) + ".", ""]
  return "\n".join(lines) + "\n"


def ingest(workdir, files) -> dict:
  """Checks every ratings file, then writes judges/human.jsonl, rating/summary.json and
  rating/report.md and rebuilds index.html; returns the summary. Nothing is written when a
  file is bad (one-line `ratings.RatingsError`)."""
  workdir = pathlib.Path(workdir)
  items_path = workdir / "rating" / "items.json"
  if not items_path.is_file():
    raise UserError(f"{items_path} does not exist: make the rating kit first "
                    f"(python launch/rate.py --workdir {workdir})")
  doc = ratings_lib.read_json(items_path, "items")
  if doc.get("format") != ratings_lib.ITEMS_FORMAT:
    raise UserError(f"{items_path}: format={doc.get('format')!r} is not "
                    f"{ratings_lib.ITEMS_FORMAT!r}: make the kit again with launch/rate.py")
  if not files:
    raise UserError("--ingest names no ratings files: pass the exported JSON files")
  items = doc["items"]
  checked = ratings_lib.load_ratings(files, doc["run_id"], [i["id"] for i in items])
  votes = ratings_lib.votes_by_item(checked)
  judges_of = {}
  try:
    _, entries = pages.collect(workdir)
    judges_of = {e.id: e.judges for e in entries}
  except UserError:   # a plain folder of images: no automatic judges
    pass
  summary = summarise(items, votes, checked, judges_of)
  summary["run_id"] = doc["run_id"]
  summary["ingested"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  rated = [(item, votes[item["id"]]) for item in items if votes.get(item["id"])]
  human = ratings_lib.human_verdict(
      [[x["verdict"] for x in v.values()] for _, v in rated],
      [[x["note"] for x in v.values() if x["note"]] for _, v in rated])
  rows = []
  for i, (item, v) in enumerate(rated):
    verdicts = [x["verdict"] for x in v.values()]
    counts = {k: verdicts.count(k) for k in ratings_lib.VERDICTS}
    notes = {r: x["note"] for r, x in v.items() if x["note"]}
    rows.append({"item": item["id"], "source": item["source"],
                 "votes": {r: x["verdict"] for r, x in v.items()}, "notes": notes,
                 "counts": counts, "consensus": ratings_lib.consensus(verdicts),
                 "judge": human.record(i) | {"votes": counts}})
  io.write_jsonl(workdir / "judges" / "human.jsonl", rows)
  io.write_json(workdir / "rating" / "summary.json", io.json_safe(summary))
  io.atomic_write_bytes(workdir / "rating" / "report.md",
                        markdown(summary, doc["run_id"]).encode("utf-8"))
  try:
    pages.write_index(workdir)
  except UserError:
    pass
  return summary


def run(workdir, *, ingest_files=(), sample: int = 0, seed: int = 0, images=None,
        prompts=None) -> dict:
  """launch/rate.py: `ingest` when files are given, else `make_kit`."""
  if ingest_files:
    return ingest(workdir, list(ingest_files))
  return make_kit(workdir, sample=sample, seed=seed, images=images, prompts=prompts)


__all__ = ["make_kit", "ingest", "run"]
