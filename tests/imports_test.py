"""The package's import graph: every module imports, and no module imports one that imports it back.

Edges are read from the source (AST), function-level imports included: a lazy import hides a
cycle from Python's loader but not from a reader. `from pkg import name` is an edge to the module
`pkg.name` when that is a module, else to `pkg`; a module's edge to its own ancestor packages is
not counted (Python imports a package before its submodules anyway).
"""

import ast
import importlib
import pathlib
import sys

import pytest

import jaxdiffattack

ROOT = pathlib.Path(jaxdiffattack.__file__).parent


def modules() -> dict[str, pathlib.Path]:
  """{dotted module name: its file} of every module of the package."""
  out = {}
  for path in sorted(ROOT.rglob("*.py")):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = path
  return out


def import_graph(mods: dict[str, pathlib.Path]) -> dict[str, set[str]]:
  """{module: the package modules it imports (anywhere in its source)}."""
  graph = {}
  for name, path in mods.items():
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    deps = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          parent = package[:len(package) - node.level + 1]
          base = ".".join(parent + ([base] if base else []))
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                   for a in node.names]
      else:
        continue
      for target in targets:
        # The longest package module the name lies in (`import a.b.c` imports a.b.c).
        while target and target not in mods:
          target = target.rpartition(".")[0]
        if target and target != name and not name.startswith(target + "."):
          deps.add(target)
    graph[name] = deps
  return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components with more than one module (Tarjan), each sorted."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_cycle_finder_on_a_known_graph():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set(),
           "g": {"g"}}
  assert sorted(cycles(graph)) == [["a", "b", "c"], ["d", "e"]]
  assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
  pkg = tmp_path / "pkg"
  (pkg / "sub").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "a.py").write_text("def f():\n  from pkg import b\n  return b\n")
  (pkg / "b.py").write_text("from pkg.sub import c\n")
  (pkg / "sub" / "__init__.py").write_text("from . import c\n")
  (pkg / "sub" / "c.py").write_text("from ..a import f\nimport pkg\n")
  monkeypatch.setattr(sys.modules[__name__], "ROOT", pkg)
  mods = modules()
  assert set(mods) == {"pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c"}
  graph = import_graph(mods)
  assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.sub.c"},
                   "pkg.sub": {"pkg.sub.c"}, "pkg.sub.c": {"pkg.a"}}
  assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]


def test_the_package_has_no_import_cycle():
  mods = modules()
  assert {"jaxdiffattack.judges", "jaxdiffattack.scoring", "jaxdiffattack.objectives",
          "jaxdiffattack.scorers", "jaxdiffattack.sampler", "jaxdiffattack.costs"} <= set(mods)
  found = cycles(import_graph(mods))
  assert not found, f"import cycles: {found}"


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_imports(name):
  importlib.import_module(name)
