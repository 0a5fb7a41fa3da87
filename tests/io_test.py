"""jaxdiffattack.io: atomic JSON writes of summaries that may hold NaN/inf."""

import json
import math
import os
import stat

from jaxdiffattack import io


def _strict(text: str):
  def refuse(name):
    raise ValueError(f"non-standard JSON constant {name}")
  return json.loads(text, parse_constant=refuse)


def test_json_safe_replaces_every_non_finite_float_and_keeps_the_rest(tmp_path):
  summary = {"rate": math.nan, "ci95": (0.1, math.inf), "rows": [{"x": -math.inf, "n": 3}],
             "ok": 0.5, "name": "nan"}
  path = io.write_json(tmp_path / "summary.json", io.json_safe(summary))
  assert _strict(path.read_text()) == {"rate": None, "ci95": [0.1, None],
                                       "rows": [{"x": None, "n": 3}], "ok": 0.5, "name": "nan"}
  # Without it the file would hold NaN / Infinity, which strict JSON readers refuse.
  raw = io.write_json(tmp_path / "raw.json", summary)
  try:
    _strict(raw.read_text())
  except ValueError as e:
    assert "non-standard" in str(e)
  else:
    raise AssertionError("json.dumps wrote non-finite floats as standard JSON")


def test_written_files_get_the_usual_mode(tmp_path):
  """Atomic writes go through mkstemp (mode 0600): the renamed file gets 0666 less the umask,
  like any new file, so other users and hosts of a shared workdir can read the results."""
  mask = os.umask(0)
  os.umask(mask)
  path = io.write_json(tmp_path / "a.json", {"x": 1})
  assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask != 0o600


def test_atomic_write_flushes_the_file_then_its_directory_entry(tmp_path, monkeypatch):
  """fsync of the written temp file (before the rename) and of the directory (after it), so the
  new file survives a power loss: the order is what makes it atomic on disk."""
  real_fsync, events = os.fsync, []

  def fsync(fd):
    st = os.fstat(fd)
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
    events.append((kind, (tmp_path / "sub" / "out.json").exists()))
    real_fsync(fd)

  monkeypatch.setattr(io.os, "fsync", fsync)
  io.write_json(tmp_path / "sub" / "out.json", {"a": 1})
  # the file's data before the rename (the final name does not exist yet), the directory after
  assert events == [("file", False), ("dir", True)]
  assert json.loads((tmp_path / "sub" / "out.json").read_text()) == {"a": 1}
  assert [p.name for p in (tmp_path / "sub").iterdir()] == ["out.json"]
