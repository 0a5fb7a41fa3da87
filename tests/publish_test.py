"""jaxdiffattack.publish: a study's results file with provenance (issue #26 item 5)."""
import json
import pathlib
import re
import subprocess

from jaxdiffattack import publish

_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_paths_resolve_against_the_workdir_or_the_repository(tmp_path):
  assert publish.resolve("{workdir}/x/atm", tmp_path) == tmp_path / "x" / "atm"
  assert publish.resolve("docs/results/atm_world2", tmp_path) == (
      _ROOT / "docs" / "results" / "atm_world2")
  assert publish.resolve(str(tmp_path / "abs"), "/elsewhere") == tmp_path / "abs"


def test_code_version_is_git_head_with_dirty_flag():
  head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                        cwd=_ROOT, check=False).stdout.strip()
  got = publish.code_version()
  assert re.fullmatch(re.escape(head) + r"(\+dirty)?", got), (got, head)


def test_code_version_marks_changed_tracked_files_dirty(tmp_path, monkeypatch):
  """In a scratch repository: clean HEAD, an untracked file (not dirty), a changed tracked
  file (dirty), and no repository at all."""
  git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a],
                                  cwd=tmp_path, capture_output=True, text=True, check=True).stdout
  monkeypatch.setattr(publish, "ROOT", tmp_path)
  monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
  assert publish.code_version() == "unknown (not a git checkout)"
  git("init", "-q")
  (tmp_path / "a.py").write_text("x = 1\n")
  git("add", "a.py")
  git("commit", "-qm", "one")
  head = git("rev-parse", "--short", "HEAD").strip()
  assert publish.code_version() == head
  (tmp_path / "new.py").write_text("y = 2\n")           # untracked: results do not depend on it
  assert publish.code_version() == head
  (tmp_path / "a.py").write_text("x = 2\n")
  assert publish.code_version() == head + "+dirty"


def test_write_pair_and_write_dir(tmp_path):
  work = tmp_path / "run"
  work.mkdir()
  (work / "report.md").write_text("# report\nrate 12.5 %\n")
  (work / "results.csv").write_text("a,b\n1,2\n")
  (work / "plots").mkdir()
  (work / "plots" / "p.png").write_bytes(b"\x89PNG")
  record = publish.write_pair("{workdir}/out/study", work, {"rate": 0.125},
                              (work / "report.md").read_text())
  got = json.loads((work / "out" / "study.json").read_text())
  assert got["summary"] == {"rate": 0.125}
  assert {k: got[k] for k in record} == record
  assert set(record) == {"command", "date_utc", "machine", "code_version", "workdir"}
  assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["date_utc"])
  md = (work / "out" / "study.md").read_text()
  assert md.endswith("# report\nrate 12.5 %\n") and f"code_version: {record['code_version']}" in md
  record = publish.write_dir("{workdir}/folder", work, ["results.csv", "plots/p.png"])
  assert (work / "folder" / "results.csv").read_text() == "a,b\n1,2\n"
  assert (work / "folder" / "plots" / "p.png").read_bytes() == b"\x89PNG"
  saved = json.loads((work / "folder" / "provenance.json").read_text())
  assert saved["files"] == ["results.csv", "plots/p.png"] and saved == record
