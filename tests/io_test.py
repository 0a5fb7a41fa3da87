"""jaxdiffattack.io: atomic JSON writes of summaries that may hold NaN/inf."""

import json
import math
import os
import signal
import stat
import subprocess
import sys

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


def test_temp_files_of_cut_writes_are_removed_and_nothing_else(tmp_path):
  debris = [tmp_path / ".a.json.x1y2.tmp", tmp_path / "sub" / ".b.png.abc.tmp"]
  kept = [tmp_path / "a.json", tmp_path / "sub" / "b.png", tmp_path / ".hidden",
          tmp_path / "c.tmp"]
  for path in debris + kept:
    path.parent.mkdir(exist_ok=True)
    path.write_text("x")
  assert io.remove_temp_files(tmp_path) == sorted(debris)
  assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(kept)
  assert io.remove_temp_files(tmp_path / "absent") == []


def test_kill_after_hook_kills_right_after_the_kth_matching_write(tmp_path):
  """JAXDIFFATTACK_TEST_KILL_AFTER=2:*.json: the process dies by SIGKILL right after its 2nd
  JSON write (a CSV write in between does not count); the trace lists the completed writes."""
  script = ("from jaxdiffattack import io\n"
            "io.write_json('a.json', 1)\nio.write_csv('b.csv', ['x'], [])\n"
            "io.write_json('c.json', 2)\nio.write_json('d.json', 3)\n")
  env = dict(os.environ, JAXDIFFATTACK_TEST_KILL_AFTER="2:*.json",
             JAXDIFFATTACK_TEST_WRITE_TRACE=str(tmp_path / "trace"), JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=False,
                        capture_output=True, timeout=120)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.csv", "c.json", "trace"]
  assert (tmp_path / "trace").read_text().splitlines() == ["a.json", "b.csv", "c.json"]
