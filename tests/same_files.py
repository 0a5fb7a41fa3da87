"""Workdir comparison of the kill and multi-process tests; not a test module.

`assert_same_files(expected, got)`: the same file names under both (hidden files too: no debris,
nothing missing, generic over names, so a checkpoint that is a directory of files is compared
file by file) and the same bytes, except the wall-clock fields of
`jaxdiffattack.runs.WALL_CLOCK_FIELDS` (the one table of documented exceptions): a file that
differs and matches one of its globs is compared again without those fields.
"""

import fnmatch
import json
import pathlib

import flax.serialization

from jaxdiffattack import runs


def _drop(x, keys):
  """`x` without the keys `keys` at any depth (JSON data or a msgpack state dict)."""
  if isinstance(x, dict):
    return {k: _drop(v, keys) for k, v in x.items() if k not in keys}
  return [_drop(v, keys) for v in x] if isinstance(x, list) else x


def without_columns(markdown: str, headers) -> str:
  """`markdown` with the cells of every table column headed by one of `headers` removed."""
  out, drop = [], None
  for line in markdown.splitlines():
    if not line.startswith("|"):
      drop = None
      out.append(line)
      continue
    cells = line.strip().strip("|").split("|")
    if drop is None:       # a table's header row
      drop = {i for i, cell in enumerate(cells) if cell.strip() in headers}
    out.append("|".join(c for i, c in enumerate(cells) if i not in drop))
  return "\n".join(out)


def wall_clock_fields(rel: str):
  """The fields of `runs.WALL_CLOCK_FIELDS` for the workdir-relative path `rel` (None: none)."""
  return next((keys for glob, keys in runs.WALL_CLOCK_FIELDS.items()
               if fnmatch.fnmatch(rel, glob)), None)


def comparable(path: pathlib.Path, rel: str) -> bytes:
  """The file's bytes, or, for a file of `runs.WALL_CLOCK_FIELDS`, its content without those
  fields: JSON and msgpack without the keys, Markdown without the table columns so headed."""
  keys = wall_clock_fields(rel)
  if keys is None:
    return path.read_bytes()
  if path.suffix == ".json":
    return json.dumps(_drop(json.loads(path.read_text()), keys), sort_keys=True).encode()
  if path.suffix == ".msgpack":
    return flax.serialization.msgpack_serialize(
        _drop(flax.serialization.msgpack_restore(path.read_bytes()), keys))
  if path.suffix == ".md":
    return without_columns(path.read_text(), keys).encode()
  raise AssertionError(f"{rel}: no rule to drop {keys} from a {path.suffix} file")


def names(root: pathlib.Path) -> list[str]:
  return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def assert_same_files(expected, got) -> int:
  """Every file under `got` equals the one under `expected` (see the module docstring). Returns
  the number of files compared."""
  expected, got = pathlib.Path(expected), pathlib.Path(got)
  want, have = names(expected), names(got)
  assert want == have, (f"missing {sorted(set(want) - set(have))}, "
                        f"extra {sorted(set(have) - set(want))}")
  different = [rel for rel in want if (expected / rel).read_bytes() != (got / rel).read_bytes()
               and comparable(expected / rel, rel) != comparable(got / rel, rel)]
  assert not different, f"differ beyond runs.WALL_CLOCK_FIELDS: {different}"
  return len(want)
