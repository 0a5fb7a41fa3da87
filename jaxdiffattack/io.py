"""Atomic, self-contained run outputs: JSON/JSONL/CSV/PNG written via temp file + rename.

Nothing is ever half written: a killed job leaves either the old file or the new one (a stale
hidden `.<name>.*.tmp` at most); the file and its directory are fsynced, so the same holds after a
power loss. A write that fails (disk full, file-size limit, read-only
directory) is a one-line `WriteError` naming the file, and leaves the old file as it was.

Test hooks (tests/reliability_kill_test.py; all in `_test_hook`, unset in normal runs):
  `JAXDIFFATTACK_TEST_WRITE_DELAY="<seconds>[:<glob>]"` sleeps that long between writing the temp
    file and the rename (files whose name matches the glob, default all): a kill lands mid-write;
  `JAXDIFFATTACK_TEST_KILL_AFTER="<k>[:<glob>]"` sends this process SIGKILL right after its k-th
    completed write of a file matching the glob (a kill between a results write and the next
    checkpoint, at a deterministic point);
  `JAXDIFFATTACK_TEST_WRITE_TRACE=<file>` appends each completed write's path, relative to the
    current directory or absolute, one per line (where those points are, in an uninterrupted run).

Multi-host: only process 0 writes (`distributed.is_writer`); every writer here goes through
`atomic_write_bytes`, and every process waits for process 0's outcome after each write, so a file
read back (a report made from results.jsonl, a resume) is there on every process, and a write
that fails on process 0 stops every process with the same one-line error.
"""

import csv
import fnmatch
import io
import json
import math
import os
import pathlib
import signal
import tempfile
import time
from typing import Any, Iterable

import numpy as np
from PIL import Image

from jaxdiffattack import distributed
from jaxdiffattack.errors import UserError

WRITE_DELAY_ENV = "JAXDIFFATTACK_TEST_WRITE_DELAY"
KILL_AFTER_ENV = "JAXDIFFATTACK_TEST_KILL_AFTER"
WRITE_TRACE_ENV = "JAXDIFFATTACK_TEST_WRITE_TRACE"
_KILL_COUNT = [0]   # writes matching the kill glob so far, in this process
# The process's umask, for the permissions of written files (mkstemp creates them 0600).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class WriteError(UserError):
  """A file could not be written (no space, file-size limit, permissions); the old one is kept.

  `failure` is what failed ("could not write <path>: <reason>"), the message adds what was kept."""

  def __init__(self, failure: str, kept: str):
    super().__init__(f"{failure}; {kept}")
    self.failure = failure


def _test_hook(path: pathlib.Path, written: bool) -> None:
  """The test hooks of the module docstring: before the rename (`written` False) the delay, after
  it the trace and the kill."""
  spec = os.environ.get(KILL_AFTER_ENV if written else WRITE_DELAY_ENV)
  if written and os.environ.get(WRITE_TRACE_ENV):
    with open(os.environ[WRITE_TRACE_ENV], "a") as trace:
      trace.write(f"{path}\n")
  if spec:
    value, _, pattern = spec.partition(":")
    if fnmatch.fnmatch(path.name, pattern or "*"):
      if not written:
        time.sleep(float(value))
      else:
        _KILL_COUNT[0] += 1
        if _KILL_COUNT[0] == int(value):
          os.kill(os.getpid(), signal.SIGKILL)


def atomic_write_bytes(path, data: bytes) -> pathlib.Path:
  """Writes `data` to a hidden temp file next to `path`, flushes it to disk (fsync), renames it
  over `path` and flushes the directory entry (fsync of the directory), so the new file survives
  a power loss as well as a kill. Mode 0666 less the umask, like any new file.

  Multi-host: process 0 writes, then shares its outcome with every process (a collective that is
  also the barrier): a write that fails on process 0 raises the same one-line `WriteError` on
  every process at once, instead of leaving the others waiting at a barrier."""
  path = pathlib.Path(path)
  error = ""
  if distributed.is_writer():
    tmp = None
    try:
      path.parent.mkdir(parents=True, exist_ok=True)
      fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
      os.fchmod(fd, 0o666 & ~_UMASK)
      with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
      _test_hook(path, written=False)
      os.replace(tmp, path)
      tmp = None
      _fsync_directory(path.parent)
      _test_hook(path, written=True)
    except BaseException as e:
      if tmp is not None and os.path.exists(tmp):
        os.unlink(tmp)
      if not isinstance(e, OSError):
        raise
      error = f"could not write {path}: {e.strerror or e}"
  error = distributed.writer_outcome(error, f"wrote {path}")
  if error:   # on every process: what was kept is seen in the shared workdir
    raise WriteError(error, "the old file is unchanged" if path.exists() else
                     "nothing was written")
  return path


def remove_temp_files(directory) -> list[pathlib.Path]:
  """Removes the hidden temp files `.<name>.*.tmp` that writes cut by a kill left under
  `directory` (nothing reads them); process 0 only. A job calls it once at its start, before it
  writes (`runs.write_config`), so a resumed workdir holds the same files as an uninterrupted one.
  Returns the files removed."""
  removed = []
  if distributed.is_writer() and pathlib.Path(directory).is_dir():
    for path in sorted(pathlib.Path(directory).rglob(".*.tmp")):
      if path.is_file():
        path.unlink(missing_ok=True)
        removed.append(path)
  return removed


def _fsync_directory(directory: pathlib.Path) -> None:
  """Flushes `directory`'s entries (a rename into it) to disk."""
  fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def json_safe(x: Any) -> Any:
  """`x` with every non-finite float (NaN, ±inf) replaced by None, so the JSON is standard."""
  if isinstance(x, dict):
    return {k: json_safe(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [json_safe(v) for v in x]
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def write_json(path, obj: Any) -> pathlib.Path:
  return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_jsonl(path, rows: Iterable[dict]) -> pathlib.Path:
  text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
  return atomic_write_bytes(path, text.encode())


def read_jsonl(path) -> list[dict]:
  return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line]


def write_csv(path, fields, rows: Iterable[dict]) -> pathlib.Path:
  """CSV with a header of `fields`; floats written with 6 significant digits."""
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
  return atomic_write_bytes(path, buffer.getvalue().encode())


def read_csv(path) -> list[dict]:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def to_uint8(image: np.ndarray) -> np.ndarray:
  """[H, W, 3] floats in [0, 1] → uint8 (round to nearest)."""
  return np.clip(np.round(np.asarray(image, np.float32) * 255.0), 0, 255).astype(np.uint8)


def write_png(path, image: np.ndarray) -> pathlib.Path:
  buffer = io.BytesIO()
  Image.fromarray(to_uint8(image)).save(buffer, format="PNG")
  return atomic_write_bytes(path, buffer.getvalue())


def image_grid(images: np.ndarray, cols: int, pad: int = 1, upscale: int = 1) -> np.ndarray:
  """Tiles [N, H, W, 3] images row-major into one [rows·(H+pad)+pad, ...] image (white pad)."""
  images = np.asarray(images, np.float32)
  if upscale > 1:
    images = images.repeat(upscale, axis=1).repeat(upscale, axis=2)
  n, h, w, c = images.shape
  rows = -(-n // cols)
  grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.float32)
  for i, image in enumerate(images):
    r, col = divmod(i, cols)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h,
         pad + col * (w + pad):pad + col * (w + pad) + w] = image
  return grid


def config_to_dict(config) -> dict:
  """A ConfigDict (with nested ConfigDicts inside lists, too) as plain JSON data."""
  return json.loads(config.to_json_best_effort(sort_keys=True))
