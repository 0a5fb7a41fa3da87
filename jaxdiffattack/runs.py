"""What every job's run shares: its start (workdir checked, config.json written once the inputs
are good, default scoring and model loader), config hash, checkpoints by field name, progress
with ETA, figures written atomically, and image grids with a caption under every tile
(`captioned_grid`, e.g. each judge's reading).

Config hash. A workdir is resumed only by the config that started it: `config_hash(config)` is a
SHA-256 of the resolved config without the run-shape keys `RUN_SHAPE_KEYS` (how a run is executed
or what it writes, never what it computes: microbatch, checkpoint cadence, report-only mode, ...),
the same in every job.

Checkpoints. A job's loop state is a `flax.struct` dataclass (or any pytree of NumPy arrays with
dicts); `save_checkpoint` writes it with `flax.serialization` as msgpack — every array under its
field name, with the config hash — atomically (`io.atomic_write_bytes`); `load_checkpoint`
restores it into a template of the same type. Checkpoints of the earlier npz format (arrays by
leaf index) are refused with one line naming the change. `write_checkpoint` / `read_checkpoint`
are the byte layer every job's checkpoint goes through: a failed write (disk full) says in one
line that the last good checkpoint is intact; a truncated or corrupted file is one line, not a
msgpack traceback.
"""

import dataclasses
import hashlib
import io as _io
import json
import pathlib
import time

from absl import logging
import flax.serialization
import jax
import numpy as np

from jaxdiffattack import distributed
from jaxdiffattack import io
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.errors import UserError

RUN_SHAPE_KEYS = ("report_only", "microbatch", "memory_budget_gb", "checkpoint_every", "unit", "save_images",
                  "grid_images", "results_file")
# The only content of a job's workdir that may differ between a run and the same run killed and
# resumed (or run as several processes): wall-clock measurements. {workdir-relative file glob:
# names}: JSON keys and msgpack state-dict fields (at any depth), or the headers of the Markdown
# table columns that print them. Every other byte of every file is reproducible
# (tests/reliability_kill_test.py, tests/distributed_test.py via tests/same_files.py;
# docs/reliability.md quotes it).
WALL_CLOCK_FIELDS = {
    # search: the loop state's Timing (seconds, and the member count they are divided by)
    "checkpoint_*.msgpack": ("timing",),
    # search (time/*) and attack (*_s) wall-clock seconds; the attack's speed figures are timed
    # over the last invocation, so the work they divide (images, prompt_iterations) is its too
    "timing.json": ("time/total", "time/ask_tell", "time/evaluate", "attack_s", "eval_s",
                    "images", "prompt_iterations"),
    # search: per method; attack: the `timing` block (speeds from timing.json)
    "summary.json": ("wall_time_s", "images_per_s", "ask_tell_share", "timing"),
    # the same numbers in the reports' tables (search, attack)
    "report.md": ("wall s", "images/s", "ask/tell", "attack prompt-iterations/s", "attack s",
                  "evaluation s", "evaluation images/s"),
    # the search protocol (`:protocol` variants): timing.json's block and the budgets' seconds
    "protocol.json": ("timing", "wall_s", "wall_s_per_target"),
    "protocol.md": ("wall s", "wall s (per target)"),
    # train_toy: seconds per stage and in all
    "export/train_metrics.json": ("timings_s", "total_s"),
}
FORMAT = "jaxdiffattack checkpoint v2 (msgpack, arrays by field name)"


def config_hash(config, run_shape_keys=RUN_SHAPE_KEYS) -> str:
  """16 hex digits of the config (a ConfigDict or its config.json dict) without the run-shape
  keys."""
  values = config if isinstance(config, dict) else io.config_to_dict(config)
  keep = {k: v for k, v in values.items() if k not in run_shape_keys}
  return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_workdir(config, workdir, what: str, run_shape_keys=RUN_SHAPE_KEYS) -> None:
  """Refuses (one-line ConfigError, nothing written) a workdir whose config.json is another
  config's or another job's: only the config that started a workdir may resume it."""
  saved = pathlib.Path(workdir) / "config.json"
  if not saved.exists():
    return
  try:
    old = json.loads(saved.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise UserError(f"{saved} is not readable JSON ({e}); use a new --workdir") from e
  new = io.config_to_dict(config)
  if config_hash(old, run_shape_keys) != config_hash(new, run_shape_keys):
    differ = sorted(k for k in set(old) | set(new)
                    if k not in run_shape_keys and old.get(k) != new.get(k))
    article = "an" if what[0] in "aeiou" else "a"
    raise ConfigError(f"config.workdir={str(workdir)!r} is invalid: holds {article} {what} with a "
                      f"different config or another job's files (config.json differs in "
                      f"{', '.join(differ[:4])}{', ...' if len(differ) > 4 else ''}); use a new "
                      "--workdir")


def write_config(config, workdir) -> None:
  """Creates the workdir and writes its config.json: a job calls it once its inputs (models,
  labels, prompt files) are read and checked, so a bad input leaves nothing behind. Temp files
  of writes cut by an earlier kill are removed first (`io.remove_temp_files`)."""
  pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
  for path in io.remove_temp_files(workdir):
    logging.info("removed %s (a write cut by an earlier stop)", path)
  io.write_json(pathlib.Path(workdir) / "config.json", io.config_to_dict(config))
  distributed.check_shared_workdir(pathlib.Path(workdir) / "config.json")


def begin(config, workdir, scoring=None, model_loader=None, what: str = "run"):
  """A job's start: (workdir, scoring, model_loader) with the workdir checked (`check_workdir`;
  nothing is written yet: see `write_config`) and the defaults filled in
  (`objectives.make_scoring(config)`, `load_stable_diffusion`).
  """
  workdir = pathlib.Path(workdir)
  check_workdir(config, workdir, what)
  if model_loader is None:
    from jaxdiffattack.models import load_stable_diffusion  # pylint: disable=g-import-not-at-top
    model_loader = load_stable_diffusion
  if scoring is None:
    from jaxdiffattack import objectives  # pylint: disable=g-import-not-at-top
    scoring = objectives.make_scoring(config)
  return workdir, scoring, model_loader


def write_checkpoint(path, payload: dict) -> None:
  """Writes `payload` (a state dict of arrays) as msgpack, atomically. If the write fails (e.g.
  no space left), raises a one-line `io.WriteError` saying the last good checkpoint is intact."""
  path = pathlib.Path(path)
  try:
    io.atomic_write_bytes(path, flax.serialization.msgpack_serialize(payload))
  except io.WriteError as e:
    last = (f"the last good checkpoint {path} (written "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(path.stat().st_mtime))}) is "
            "intact; free space and rerun to resume") if path.exists() else (
                "no checkpoint was written yet; free space and rerun")
    raise io.WriteError(e.failure, last) from e


def read_checkpoint(path):
  """The msgpack payload at `path` (None if there is none); a one-line `UserError` if the file is
  truncated or corrupted."""
  path = pathlib.Path(path)
  if not path.exists():
    return None
  fix = "delete it to restart this run from the beginning, or use a new --workdir"
  try:
    payload = flax.serialization.msgpack_restore(path.read_bytes())
  except Exception as e:  # pylint: disable=broad-except  # msgpack: ExtraData, ValueError, ...
    raise UserError(f"checkpoint {path} is truncated or corrupted ({type(e).__name__}); "
                    f"{fix}") from e
  if not isinstance(payload, dict) or "config_hash" not in payload:
    raise UserError(f"{path} is not a jaxdiffattack checkpoint; {fix}")
  return payload


def save_checkpoint(path, state, digest: str) -> None:
  """Writes `state` (a pytree of arrays, dataclasses and dicts) by field name, atomically."""
  write_checkpoint(path, {"format": FORMAT, "config_hash": digest, "state":
                          flax.serialization.to_state_dict(jax.tree_util.tree_map(np.asarray,
                                                                                  state))})


def load_checkpoint(path, digest: str, template, what: str = "run"):
  """The state saved at `path`, restored into `template`'s type (None if there is none).

  Dict fields of the template take the saved keys (e.g. record names that appear during a
  run); arrays come back as writable NumPy copies. Raises a one-line `UserError` for a
  checkpoint of another config or of the old npz format.
  """
  path = pathlib.Path(path)
  legacy = path.with_suffix(".npz")
  if legacy.exists():
    raise UserError(f"workdir {path.parent} holds a checkpoint in the old npz format "
                    f"({legacy.name}, arrays by leaf index); checkpoints are now msgpack by field "
                    "name: use a new --workdir (or delete it to start over)")
  saved = read_checkpoint(path)
  if saved is None:
    return None
  if not isinstance(saved, dict) or saved.get("format") != FORMAT:
    raise UserError(f"{path} is not a {FORMAT} file: use a new --workdir")
  if saved["config_hash"] != digest:
    raise ConfigError(f"config.workdir={str(path.parent)!r} is invalid: holds a {what} with a "
                      "different config; use a new --workdir")
  state = flax.serialization.from_state_dict(_with_saved_keys(template, saved["state"]),
                                             saved["state"])
  logging.info("resuming %s from %s", what, path)
  return jax.tree_util.tree_map(np.array, state)


def _with_saved_keys(template, saved):
  """`template` with every dict in it keyed like the saved state dict (new keys: no template)."""
  if isinstance(template, dict):
    return {key: _with_saved_keys(template.get(key), value) for key, value in saved.items()}
  if dataclasses.is_dataclass(template) and isinstance(saved, dict):
    return dataclasses.replace(template, **{
        f.name: _with_saved_keys(getattr(template, f.name), saved[f.name])
        for f in dataclasses.fields(template) if f.name in saved})
  return template


class Progress:
  """Log lines of a long loop with its pace and ETA, measured from this session's start (a
  resumed run's earlier work does not count towards the pace)."""

  def __init__(self, label: str, total: int, done: int = 0, unit: str = "steps"):
    self.label, self.total, self.unit = label, total, unit
    self.done_at_start = done
    self.start = time.perf_counter()

  def log(self, done: int, details: str = "", finished: bool = False) -> None:
    elapsed = time.perf_counter() - self.start
    rate = (done - self.done_at_start) / max(elapsed, 1e-9)
    eta = 0.0 if finished else ((self.total - done) / rate if rate > 0 else float("nan"))
    logging.info("%s %d/%d %s (%.1f%%)  %.2f %s/s  %s%selapsed %.0fs  ETA %.0fs", self.label,
                 done, self.total, self.unit, 100.0 * done / self.total, rate, self.unit,
                 details, "  " if details else "", elapsed, eta)


def pyplot():
  """matplotlib.pyplot on the non-interactive Agg backend (imported on first use)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save_figure(fig, path) -> None:
  """Writes a matplotlib figure as PNG atomically and closes it."""
  buffer = _io.BytesIO()
  fig.savefig(buffer, format="png", dpi=110)
  pyplot().close(fig)
  io.atomic_write_bytes(path, buffer.getvalue())


def captioned_grid(images: np.ndarray, captions, cols: int, upscale: int = 1,
                   pad: int = 4) -> np.ndarray:
  """Tiles images [N, H, W, 3] (floats in [0, 1]) row-major with the lines `captions[i]` (a list
  of strings) printed under tile i in PIL's default font; white background. Returns [h, w, 3]
  floats in [0, 1] (for `io.write_png`)."""
  from PIL import Image, ImageDraw, ImageFont  # pylint: disable=g-import-not-at-top
  images = np.asarray(images, np.float32)
  if upscale > 1:
    images = images.repeat(upscale, axis=1).repeat(upscale, axis=2)
  n, h, w, _ = images.shape
  font = ImageFont.load_default()
  measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  line_h = max(measure.textbbox((0, 0), "Ag", font=font)[3], 10) + 2
  lines = max((len(c) for c in captions), default=0)
  text_w = max((measure.textlength(line, font=font) for c in captions for line in c), default=0)
  cell_w, cell_h = max(w, int(text_w) + 2), h + lines * line_h + 2
  rows = -(-n // cols)
  canvas = Image.new("RGB", (cols * (cell_w + pad) + pad, rows * (cell_h + pad) + pad), "white")
  draw = ImageDraw.Draw(canvas)
  for i, image in enumerate(images):
    r, c = divmod(i, cols)
    x0, y0 = pad + c * (cell_w + pad), pad + r * (cell_h + pad)
    canvas.paste(Image.fromarray(io.to_uint8(image)), (x0, y0))
    for k, line in enumerate(captions[i] if i < len(captions) else ()):
      draw.text((x0, y0 + h + 2 + k * line_h), line, fill="black", font=font)
  return np.asarray(canvas, np.float32) / 255.0

