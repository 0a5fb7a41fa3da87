"""Static pages of a run: every job's browsable `index.html`, and the blind rating page.

Both are built only from the files a job already wrote (so `write_index(workdir)` rebuilds a
page without recomputing), open from disk (file://) with no server, no network and no build
step: one HTML file with its CSS and script inline, images referenced by relative path.

`collect(workdir)` reads a workdir into `Entry`s — one per image worth looking at — whatever
job wrote it (`COLLECTORS`, one function + one line to add a job):
  search    every method's found failures (failures/<method>/t<t>/failure_<k>.png) and each
            target's clean image (clean/t<t>.png), with every judge's reading;
  attack    the attacked prompts' successful hard samples (images/<set>/raw/*.png) with the
            adversarial prompt, and each prompt's clean image (images/<set>/clean/p<i>.png);
  sweep     the grid tiles (grids/<setting>_<shift>/m<member>.png): clean and shifted seeds;
  generate  every generated image (images/*.png);
  analysis  no entries: its page shows the plots and the report.
The entries' `judges` are the job's records ({name: {pred, confidence, failure, unclear,
reason?}}), plus the `human` judge once ratings are ingested (judges/human.jsonl).

The rating page (`rating_html`) shows an image with its prompt only — never a judge's reading —
one at a time, in an order shuffled per rater (seeded from the rater's name), with the rating
guide; keys y / n / u and an optional note; progress; it resumes after a reload (localStorage,
keyed by run id and rater) and exports the ratings file (`jaxdiffattack.ratings/1`).
"""

import csv
import dataclasses
import difflib
import html
import json
import pathlib
import re
from typing import Callable

from jaxdiffattack import io
from jaxdiffattack import judges as judges_lib
from jaxdiffattack.errors import UserError

_GUIDE = pathlib.Path(__file__).parent / "data" / "rating_guide.md"


@dataclasses.dataclass
class Entry:
  """One image of a run: what it shows, where it came from, what each judge read."""
  id: str                 # stable across rebuilds, e.g. "search/Sep_CMA_ES/t000/failure_0"
  image: str              # path relative to the workdir
  prompt: str             # the prompt the image should show (rated against)
  method: str             # search method, "attack", a sweep shift, "clean", "generate"
  target: str             # cluster: the target / prompt the image belongs to
  kind: str               # "failure", "clean", "sample", "tile", "image"
  shown_prompt: str = ""  # the prompt that generated it (adversarial), if other than `prompt`
  clean_image: str = ""   # the same target's clean image (relative), if any
  judges: dict = dataclasses.field(default_factory=dict)
  source: dict = dataclasses.field(default_factory=dict)


# ------------------------------------------------------------------------------ collectors --
def _rows(path: pathlib.Path) -> list[dict]:
  return io.read_jsonl(path) if path.is_file() else []


def _search(workdir: pathlib.Path) -> list[Entry]:
  out, cleans = [], {}
  for row in _rows(workdir / "results.jsonl"):
    t = row["target"]
    clean = f"clean/t{t:03d}.png"
    has_clean = (workdir / clean).is_file()
    if has_clean and t not in cleans:
      cleans[t] = Entry(f"search/clean/t{t:03d}", clean, row["prompt"], "clean", f"t{t:03d}",
                        "clean", judges=(row.get("clean") or {}).get("judges") or {},
                        source={"job": "search", "method": "clean", "target": t,
                                "label": row.get("label"), "kind": "clean"})
    for k, f in enumerate(row.get("failures") or []):
      png = next((n for n in f.get("files") or [] if n.endswith(".png")), None)
      if png is None:
        continue
      shown = f.get("prompt") or ""
      txt = next((n for n in f["files"] if n.endswith("_prompt.txt")), None)
      if not shown and txt and (workdir / txt).is_file():
        shown = (workdir / txt).read_text().strip()
      out.append(Entry(
          f"search/{row['method']}/t{t:03d}/failure_{k}", png, row["prompt"], row["method"],
          f"t{t:03d}", "failure", shown_prompt=shown if shown != row["prompt"] else "",
          clean_image=clean if has_clean else "", judges=f.get("judges") or {},
          source={"job": "search", "method": row["method"], "target": t,
                  "label": row.get("label"), "member": f.get("member"),
                  "generation": f.get("generation"), "kind": "failure", "failure": k}))
  return list(cleans.values()) + out


def _attack(workdir: pathlib.Path) -> list[Entry]:
  out, cleans = [], []
  for row in _rows(workdir / "results.jsonl"):
    target = f"{row['set']}/p{row['index']:04d}"
    clean = f"images/{row['set']}/clean/p{row['index']:04d}.png"
    has_clean = (workdir / clean).is_file()
    if has_clean:
      # The clean check decides only for the attack's judge; the others' readings are shown
      # without a verdict (failure None: not counted by the ratings report).
      judges = {j: {"pred": v.get("pred"), "confidence": v.get("confidence"),
                    "failure": not row["clean_correct"] if j == "attack" else None}
                for j, v in (row.get("clean") or {}).items()}
      cleans.append(Entry(f"attack/clean/{target}", clean, row["prompt"], "clean", target,
                          "clean", judges=judges,
                          source={"job": "attack", "method": "clean", "set": row["set"],
                                  "index": row["index"], "kind": "clean"}))
    for k, s in enumerate(row.get("shown") or []):
      out.append(Entry(f"attack/{target}/{pathlib.Path(s['image']).stem}", s["image"],
                       row["prompt"], "attack", target, "sample", shown_prompt=s["prompt"],
                       clean_image=clean if has_clean else "", judges=s.get("judges") or {},
                       source={"job": "attack", "method": "attack", "set": row["set"],
                               "index": row["index"], "kind": "sample",
                               "adversarial_prompt": s["prompt"], "sample": k}))
  return cleans + out


def _sweep(workdir: pathlib.Path) -> list[Entry]:
  members = io.read_csv(workdir / "members.csv") if (workdir / "members.csv").is_file() else []
  out, seen = [], set()
  for path in sorted((workdir / "grids").glob("*.json")):
    grid = json.loads(path.read_text())
    tiles = grid.get("tiles") or []
    clean_of = {}
    for tile, caption in zip(tiles, grid.get("captions") or []):
      if len(caption) > 1 and caption[1] == "clean":
        clean_of[tile["prompt"]] = tile["image"]
    for tile, caption in zip(tiles, grid.get("captions") or []):
      m = tile["member"]
      if m in seen:       # the clean tiles of one prompt recur in every shift's grid
        continue
      seen.add(m)
      row = members[m] if m < len(members) else {}
      shift = row.get("shift") or (caption[1].split()[0] if len(caption) > 1 else "")
      method = "clean" if shift in ("none", "clean") else shift
      judges = {}
      if row.get("top1", "") != "":
        judges["evaluator"] = {"pred": None, "confidence": None,
                               "failure": float(row["top1"]) == 0.0,
                               "reason": caption[2] if len(caption) > 2 else None}
      for name in judges_lib.IMAGE_JUDGES:   # a world's oracle: <name>_top1, <name>_unclear
        if row.get(f"{name}_top1", "") not in ("", None):
          unclear = float(row.get(f"{name}_unclear") or 0.0) == 1.0
          judges[name] = {"pred": None, "confidence": None, "unclear": unclear,
                          "failure": float(row[f"{name}_top1"]) == 0.0 and not unclear}
      out.append(Entry(
          f"sweep/{path.stem}/m{m:06d}", tile["image"], tile["prompt"], method,
          f"{row.get('setting', '')}/p{row.get('prompt_index', '')}", "tile",
          clean_image="" if method == "clean" else clean_of.get(tile["prompt"], ""),
          judges=judges, source={"job": "sweep", "method": method, "grid": path.stem,
                                 "member": m, "caption": caption, "kind": "tile"}))
  return out


def _generate(workdir: pathlib.Path) -> list[Entry]:
  return [Entry(f"generate/{r['member']:05d}", r["file"], r["prompt"], "generate",
                f"p{r['prompt_index']}", "image", judges=r.get("judges") or {},
                source={"job": "generate", "method": "generate", "member": r["member"],
                        "prompt_index": r["prompt_index"], "seed_index": r["seed_index"],
                        "kind": "image"})
          for r in _rows(workdir / "results.jsonl")]


def _analysis(workdir: pathlib.Path) -> list[Entry]:
  del workdir
  return []


def detect(workdir) -> str:
  """Which job wrote `workdir` (from its files); UserError when none did."""
  workdir = pathlib.Path(workdir)
  rows = _rows(workdir / "results.jsonl")
  if rows and "failures" in rows[0] and "method" in rows[0]:
    return "search"
  if rows and "set" in rows[0] and "class_word" in rows[0]:
    return "attack"
  if rows and "file" in rows[0] and "member" in rows[0]:
    return "generate"
  if (workdir / "members.csv").is_file():
    return "sweep"
  if (workdir / "report.md").is_file() and (workdir / "config.json").is_file():
    return "analysis"
  raise UserError(f"{workdir} holds no job's outputs (results.jsonl, members.csv or report.md): "
                  "pass the --workdir of a generate, sweep, search, attack or analyze run")


COLLECTORS: dict[str, Callable[[pathlib.Path], list[Entry]]] = {
    "search": _search, "attack": _attack, "sweep": _sweep, "generate": _generate,
    "analysis": _analysis,
}


def collect(workdir) -> tuple[str, list[Entry]]:
  """(job, entries) of a workdir; the human judge merged in where ratings were ingested."""
  workdir = pathlib.Path(workdir)
  job = detect(workdir)
  entries = COLLECTORS[job](workdir)
  human = {r["item"]: r["judge"] for r in _rows(workdir / "judges" / "human.jsonl")}
  for e in entries:
    if e.id in human:
      e.judges = dict(e.judges, human=human[e.id])
  return job, entries


def collect_folder(images_dir, prompts_file) -> list[Entry]:
  """Entries of a plain folder of images. `prompts_file`: a CSV with columns `image,prompt`
  (optional `method`, `target`) or a JSON object {image file name: prompt}; image names are
  relative to `images_dir`."""
  images_dir, prompts_file = pathlib.Path(images_dir), pathlib.Path(prompts_file)
  if not images_dir.is_dir():
    raise UserError(f"--images={images_dir} is not a directory: pass the folder of images")
  try:
    text = prompts_file.read_text(encoding="utf-8")
  except (OSError, UnicodeDecodeError) as e:
    raise UserError(f"--prompts={prompts_file} cannot be read ({e}): pass a CSV with columns "
                    "image,prompt or a JSON object {image: prompt}") from None
  if prompts_file.suffix == ".json":
    try:
      mapping = json.loads(text)
    except json.JSONDecodeError as e:
      raise UserError(f"--prompts={prompts_file} is not valid JSON ({e.msg}, line {e.lineno}): "
                      "write an object {image file name: prompt}") from None
    if not isinstance(mapping, dict):
      raise UserError(f"--prompts={prompts_file} is a JSON {type(mapping).__name__}: write an "
                      "object {image file name: prompt}")
    rows = [{"image": k, "prompt": v} for k, v in mapping.items()]
  else:
    rows = list(csv.DictReader(text.splitlines()))
    if rows and not {"image", "prompt"} <= set(rows[0]):
      raise UserError(f"--prompts={prompts_file} has columns {sorted(rows[0])}: it needs "
                      "image,prompt (and optionally method,target)")
  out = []
  for r in rows:
    name = str(r["image"])
    path = (images_dir / name).resolve()
    if not path.is_file():
      raise UserError(f"--prompts={prompts_file} names image {name!r}, which is not in "
                      f"{images_dir}: fix the name or add the image")
    method = r.get("method") or "images"
    out.append(Entry(f"folder/{name}", str(path), str(r["prompt"]), method,
                     r.get("target") or name, "image",
                     source={"job": "folder", "method": method, "file": name,
                             "target": r.get("target") or name, "kind": "image"}))
  if not out:
    raise UserError(f"--prompts={prompts_file} lists no images: add rows image,prompt")
  return out


# --------------------------------------------------------------------------------- helpers --
def marked_prompt(shown: str, clean: str) -> str:
  """HTML of `shown` with the words that differ from `clean` in <mark> (ATM's changed tokens)."""
  a, b = clean.split(), shown.split()
  out = []
  for op, _, _, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
    words = " ".join(html.escape(w) for w in b[j1:j2])
    if not words:
      continue
    out.append(words if op == "equal" else f"<mark>{words}</mark>")
  return " ".join(out)


def markdown_html(text: str) -> str:
  """Tiny Markdown → HTML (the rating guide, rating reports): headings, bullets, **bold**,
  `code`, pipe tables, paragraphs."""
  blocks, items, table = [], [], []

  def inline(s):
    s = html.escape(s)
    s = re.sub(r"`(.+?)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)

  def flush_table():
    if table:
      rows = [r for r in table if not re.fullmatch(r"\|[-|: ]+\|", r)]
      cells = lambda r: [c.strip() for c in r.strip().strip("|").split("|")]
      head, body = rows[0], rows[1:]
      blocks.append("<table border='1' cellpadding='3' style='border-collapse:collapse'><tr>" +
                    "".join(f"<th>{inline(c)}</th>" for c in cells(head)) + "</tr>" +
                    "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in cells(r)) +
                            "</tr>" for r in body) + "</table>")
      table.clear()

  def flush():
    if items:
      blocks.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>")
      items.clear()
  paragraph = []
  for line in text.splitlines() + [""]:
    stripped = line.strip()
    if stripped.startswith("|"):
      flush()
      if paragraph:
        blocks.append(f"<p>{inline(' '.join(paragraph))}</p>")
        paragraph = []
      table.append(stripped)
      continue
    flush_table()
    if stripped.startswith("- "):
      if paragraph:
        blocks.append(f"<p>{inline(' '.join(paragraph))}</p>")
        paragraph = []
      items.append(stripped[2:])
    elif line.startswith("  ") and items and stripped:
      items[-1] += " " + stripped
    elif stripped.startswith("#"):
      flush()
      level = min(len(stripped) - len(stripped.lstrip("#")) + 1, 6)
      blocks.append(f"<h{level}>{inline(stripped.lstrip('#').strip())}</h{level}>")
    elif not stripped:
      flush()
      if paragraph:
        blocks.append(f"<p>{inline(' '.join(paragraph))}</p>")
        paragraph = []
    else:
      flush()
      paragraph.append(stripped)
  return "\n".join(blocks)


def guide_html(path=None) -> str:
  """The rating guide at `path` (default: the project's, data/rating_guide.md) as HTML."""
  return markdown_html(pathlib.Path(path or _GUIDE).read_text(encoding="utf-8"))


_STYLE = """
body{font-family:sans-serif;margin:1em;color:#222}
img.px{image-rendering:pixelated;border:1px solid #999;background:#eee}
.card{display:inline-block;vertical-align:top;border:1px solid #ccc;border-radius:4px;
 margin:4px;padding:6px;width:300px;font-size:13px}
.card img{width:140px;height:140px}
.judges{margin:4px 0;padding-left:1.2em}.fail{color:#b00;font-weight:bold}
.unclear{color:#a60}mark{background:#fd6}
pre{background:#f6f6f6;padding:8px;white-space:pre-wrap;font-size:12px}
.plot{max-width:640px;display:block;margin:6px 0;border:1px solid #ccc}
"""


def _judge_line(name: str, j: dict) -> str:
  pred = j.get("pred")
  state = ("unclear" if j.get("unclear") else "FAIL" if j.get("failure") else
           "ok" if j.get("failure") is not None else "")
  conf = j.get("confidence")
  conf = f" {conf:.2f}" if isinstance(conf, (int, float)) else ""
  reason = j.get("reason")
  cls = "fail" if state == "FAIL" else "unclear" if state == "unclear" else ""
  return (f'<li class="{cls}" data-judge="{html.escape(name)}">{html.escape(name)}: '
          f'{html.escape(str(pred)) if pred is not None else "-"}{conf} {state}'
          + (f' <i>({html.escape(str(reason))})</i>' if reason else "") + "</li>")


def _card(e: Entry) -> str:
  fails = " ".join(f"fail-{html.escape(n)}" for n, j in e.judges.items() if j.get("failure"))
  prompt = (f"<div>prompt: {marked_prompt(e.shown_prompt, e.prompt)}</div>"
            f"<div>clean prompt: {html.escape(e.prompt)}</div>" if e.shown_prompt else
            f"<div>prompt: {html.escape(e.prompt)}</div>")
  clean = (f'<figure style="display:inline-block;margin:0 4px"><img class="px" '
           f'src="{html.escape(e.clean_image)}" alt="clean"><figcaption>clean</figcaption>'
           f'</figure>' if e.clean_image else "")
  judges = "".join(_judge_line(n, j) for n, j in e.judges.items())
  return (f'<div class="card" data-method="{html.escape(e.method)}" data-fails="{fails}">'
          f'<figure style="display:inline-block;margin:0 4px"><img class="px" '
          f'src="{html.escape(e.image)}" alt="{html.escape(e.id)}"><figcaption>{e.kind}'
          f'</figcaption></figure>{clean}'
          f'<div><b>{html.escape(e.method)}</b> · {html.escape(e.target)}</div>{prompt}'
          f'<ul class="judges">{judges}</ul></div>')


_FILTER_JS = """
function applyFilters(){
  var m=document.getElementById('method').value, j=document.getElementById('judge').value;
  var shown=0;
  document.querySelectorAll('.card').forEach(function(c){
    var ok=(m===''||c.dataset.method===m);
    if(j!==''){var f=(' '+c.dataset.fails+' ').indexOf(' fail-'+j.slice(1)+' ')>=0;
      ok=ok&&(j[0]==='+'?f:!f);}
    c.style.display=ok?'':'none'; if(ok)shown++;});
  document.getElementById('count').textContent=shown;
}
document.getElementById('method').addEventListener('change',applyFilters);
document.getElementById('judge').addEventListener('change',applyFilters);
applyFilters();
"""


def index_html(workdir, job: str, entries: list[Entry]) -> str:
  """The run's browsable page (see the module docstring). Deterministic: it holds nothing that
  differs between two runs of one config (no times), so multi-host runs write it byte for byte
  alike."""
  workdir = pathlib.Path(workdir)
  methods = list(dict.fromkeys(e.method for e in entries))
  judges = list(dict.fromkeys(n for e in entries for n in e.judges))
  plots = sorted(str(p.relative_to(workdir)) for pattern in ("plots/*.png", "*.png", "grids/*.png",
                                                             "failures/*/grid.png")
                 for p in workdir.glob(pattern))
  report = workdir / "report.md"
  rating = workdir / "rating" / "report.md"
  parts = [f"<!doctype html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
           f"<title>{html.escape(job)} run {html.escape(workdir.name)}</title>"
           f"<style>{_STYLE}</style></head><body>",
           f"<h1>{html.escape(job)} run <code>{html.escape(workdir.name)}</code></h1>"]
  if (workdir / "rating" / "index.html").is_file():
    parts.append("<p><a href='rating/index.html'>rating page</a> (blind human ratings)</p>")
  if entries:
    parts.append("<h2>Images</h2><p>method <select id='method'><option value=''>all</option>" +
                 "".join(f"<option>{html.escape(m)}</option>" for m in methods) + "</select> "
                 "judge <select id='judge'><option value=''>any reading</option>" +
                 "".join(f"<option value='+{html.escape(j)}'>{html.escape(j)} fails</option>"
                         f"<option value='-{html.escape(j)}'>{html.escape(j)} does not fail"
                         "</option>" for j in judges) +
                 "</select> <span id='count'></span> shown</p>")
    parts.append("<div id='cards'>" + "".join(_card(e) for e in entries) + "</div>")
  if plots:
    parts.append("<h2>Plots</h2>" + "".join(
        f"<figure><img class='plot' src='{html.escape(p)}' alt='{html.escape(p)}'>"
        f"<figcaption>{html.escape(p)}</figcaption></figure>" for p in plots))
  if rating.is_file():
    parts.append(f"<h2>Human ratings</h2>{markdown_html(rating.read_text())}")
  if report.is_file():   # linked, not copied: it may hold wall-clock times, the page does not
    parts.append("<p>The run's report: <a href='report.md'>report.md</a></p>")
  if entries:
    parts.append(f"<script>{_FILTER_JS}</script>")
  parts.append("</body></html>")
  return "\n".join(parts)


def write_index(workdir) -> pathlib.Path:
  """Writes (or rebuilds) `workdir/index.html` from the job's files."""
  workdir = pathlib.Path(workdir)
  job, entries = collect(workdir)
  return io.atomic_write_bytes(workdir / "index.html",
                               index_html(workdir, job, entries).encode("utf-8"))


# ----------------------------------------------------------------------------- rating page --
_RATE_STYLE = """
body{font-family:sans-serif;margin:1em;max-width:900px;color:#222}
#img{width:384px;height:384px;image-rendering:pixelated;border:1px solid #999}
#prompt{font-size:22px;margin:10px 0}button{font-size:16px;margin:2px}
#note{width:380px;font-size:15px}details{margin-top:1em;background:#f6f6f6;padding:6px}
.hidden{display:none}
"""

_RATE_JS = r"""
var RUN=DATA.run_id, ITEMS=DATA.items, state=null, rater=null, order=null;
function xmur3(s){var h=1779033703^s.length;for(var i=0;i<s.length;i++){
  h=Math.imul(h^s.charCodeAt(i),3432918353);h=h<<13|h>>>19;}
  return function(){h=Math.imul(h^(h>>>16),2246822507);h=Math.imul(h^(h>>>13),3266489909);
  return (h^=h>>>16)>>>0;};}
function mulberry32(a){return function(){a|=0;a=a+0x6D2B79F5|0;var t=Math.imul(a^a>>>15,1|a);
  t=t+Math.imul(t^t>>>7,61|t)^t;return ((t^t>>>14)>>>0)/4294967296;};}
function shuffled(name){var rand=mulberry32(xmur3(RUN+'/'+name)());
  var o=ITEMS.map(function(_,i){return i;});
  for(var i=o.length-1;i>0;i--){var j=Math.floor(rand()*(i+1));var t=o[i];o[i]=o[j];o[j]=t;}
  return o;}
function key(){return 'jaxdiffattack.ratings/'+RUN+'/'+rater;}
function save(){localStorage.setItem(key(),JSON.stringify(state));}
function rated(){return state.ratings.length;}
function start(){
  var name=document.getElementById('rater').value.trim();
  if(!name){document.getElementById('msg').textContent='Type your name first.';return;}
  rater=name; localStorage.setItem('jaxdiffattack.ratings/'+RUN+'/last',name);
  var s=localStorage.getItem(key()); state=s?JSON.parse(s):{ratings:[],created:new Date().toISOString()};
  order=shuffled(name);
  document.getElementById('who').classList.add('hidden');
  document.getElementById('rate').classList.remove('hidden');
  document.getElementById('rater_shown').textContent=name;
  show();}
function current(){var done={};state.ratings.forEach(function(r){done[r.item]=1;});
  for(var k=0;k<order.length;k++){if(!done[ITEMS[order[k]].id])return ITEMS[order[k]];}
  return null;}
function show(){
  var it=current(), n=ITEMS.length;
  document.getElementById('progress').textContent=rated()+' / '+n+' rated';
  if(!it){document.getElementById('item').classList.add('hidden');
    document.getElementById('done').classList.remove('hidden');return;}
  var img=document.getElementById('img'); img.src=it.image; img.dataset.item=it.id;
  document.getElementById('prompt').textContent=it.prompt;
  document.getElementById('note').value='';}
function rate(verdict){var it=current(); if(!it)return;
  state.ratings.push({item:it.id,verdict:verdict,note:document.getElementById('note').value.trim(),
                      time:new Date().toISOString()});
  save(); show();}
function undo(){if(state&&state.ratings.length){state.ratings.pop();save();show();}}
function exportRatings(){
  var out={format:'jaxdiffattack.ratings/1',run_id:RUN,rater:rater,method:'browser kit',
           created:state.created,exported:new Date().toISOString(),ratings:state.ratings};
  var blob=new Blob([JSON.stringify(out,null,1)],{type:'application/json'});
  var a=document.createElement('a'); a.href=URL.createObjectURL(blob);
  a.download='ratings_'+RUN+'_'+rater.replace(/[^A-Za-z0-9_.-]/g,'_')+'.json';
  document.body.appendChild(a); a.click(); a.remove();}
document.addEventListener('keydown',function(ev){
  var t=ev.target;
  if(t&&t.id==='rater'){if(ev.key==='Enter')start();return;}
  if(t&&t.id==='note'){if(ev.key==='Enter'||ev.key==='Escape')t.blur();return;}
  if(!state||ev.ctrlKey||ev.metaKey||ev.altKey)return;
  var k=ev.key.toLowerCase();
  if(k==='y')rate('yes');else if(k==='n')rate('no');else if(k==='u')rate('unsure');
  else if(k==='backspace')undo();});
document.getElementById('rater').value=localStorage.getItem('jaxdiffattack.ratings/'+RUN+'/last')||'';
document.getElementById('count_all').textContent=ITEMS.length;
"""


def rating_html(run_id: str, items: list[dict], guide=None) -> str:
  """The blind rating page of items [{"id", "image" (relative to the page), "prompt"}]; `guide`:
  the rating guide's path (default: the project's; world 2's kit passes its own)."""
  data = json.dumps({"run_id": run_id, "items": [
      {"id": i["id"], "image": i["image"], "prompt": i["prompt"]} for i in items]})
  data = data.replace("</", "<\\/")   # no "</script>" inside the script
  return f"""<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>Rate images: {html.escape(run_id)}</title><style>{_RATE_STYLE}</style></head><body>
<h1>Does the picture show what the prompt names?</h1>
<p><span id="count_all"></span> images. Rate each on its own against the guide below; keys
<b>y</b> yes, <b>n</b> no, <b>u</b> unsure (Backspace: undo the last). For "no" and "unsure",
first type a few words on what is drawn instead in the note (Enter returns to rating).
Your ratings stay in this browser until you export them.</p>
<div id="who">Your name: <input id="rater" autocomplete="off">
<button id="start" onclick="start()">start / resume</button> <span id="msg"></span></div>
<div id="rate" class="hidden"><p>Rater: <b id="rater_shown"></b> · <span id="progress"></span>
 · <button id="export" onclick="exportRatings()">export ratings</button></p>
<div id="item"><img id="img" alt="image to rate"><div id="prompt"></div>
<div>note: <input id="note" autocomplete="off" placeholder="what is drawn instead (optional)">
</div><div><button onclick="rate('yes')">yes (y)</button><button onclick="rate('no')">no (n)
</button><button onclick="rate('unsure')">unsure (u)</button><button onclick="undo()">undo
</button></div></div>
<div id="done" class="hidden"><p><b>All images rated.</b> Export your ratings and send the file
to whoever runs <code>launch/rate.py --ingest</code>.</p></div></div>
<details open><summary>Rating guide</summary>{guide_html(guide)}</details>
<script>var DATA={data};</script><script>{_RATE_JS}</script></body></html>"""
