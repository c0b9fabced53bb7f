"""Prints the BUILD file: a py_library per module, a py_test per test file, deps from the imports.

    python tools/gen_build.py > BUILD      (or `make build-file`)

Targets: one py_library per module of citrus_jax/ and launch/, one for configs/ (every preset
file), one per test helper module (tests/helpers.py, tests/multihost_helpers.py), and one py_test
per tests/test_*.py (with tests/conftest.py). A target's deps are what its sources import,
read by `ast` (module level and inside functions):

- package modules -> their targets (`from citrus_jax.data import sources` is the module
  citrus_jax/data/sources.py; `from citrus_jax.train.cpt import load_tokenizer` is cpt.py;
  `import citrus_jax.pipeline` or an attribute of it is the package's `__init__.py`);
- a string (not a docstring) that names a package module exactly ("citrus_jax.main" run as
  `python -m`, the lazily imported "citrus_jax.data.records") counts as an import, and so does
  a config file named in a test ("configs/cpt.py:tiny"): a test running the CLI needs it;
- third-party imports -> `requirement("<pip name>")` (rules_python); the standard library none.

Test targets (and helper libraries) also carry `data`: the tests/fixtures/<dir> folders their
strings name, and notebooks/ for the notebook test. tests/test_build.py checks every target's
deps against its imports, so a missing dep fails.
"""
from __future__ import annotations

import ast
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("citrus_jax", "launch")  # one library target per module
HELPERS = ("helpers", "multihost_helpers")  # tests/<name>.py, imported by bare name
# Import name -> pip distribution, where they differ (else the import name, '_' -> '-').
PIP_NAMES = {"absl": "absl-py", "ml_collections": "ml-collections", "yaml": "pyyaml",
             "orbax": "orbax-checkpoint", "tensorflow_datasets": "tensorflow-datasets",
             "array_record": "array-record", "google": "protobuf", "PIL": "pillow",
             "tensorboardX": "tensorboardx", "sklearn": "scikit-learn"}
CONFIG_REF = re.compile(r"(?:^|[=/\s])configs/(\w+)\.py")


def rel(path: pathlib.Path) -> str:
  return path.relative_to(ROOT).as_posix()


def target_name(path: str) -> str:
  return path[:-3].replace("/", "_")


def library_files() -> list[str]:
  return sorted(rel(p) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
                if "__pycache__" not in p.parts)


def config_files() -> list[str]:
  return sorted(rel(p) for p in (ROOT / "configs").glob("*.py"))


def test_files() -> list[str]:
  return sorted(rel(p) for p in (ROOT / "tests").glob("test_*.py"))


def helper_files() -> list[str]:
  return [f"tests/{h}.py" for h in HELPERS if (ROOT / "tests" / f"{h}.py").exists()]


def module_file(dotted: str) -> str | None:
  """'citrus_jax.data.sources' -> its file (a module or a package's __init__.py), if any."""
  base = ROOT.joinpath(*dotted.split("."))
  for cand in (base.with_suffix(".py"), base / "__init__.py"):
    if cand.is_file():
      return rel(cand)
  return None


def _package_of(path: str) -> list[str]:
  """The package a file's relative imports start from (its folder, for __init__.py too)."""
  return path[:-3].split("/")[:-1]


def imported_names(path: str) -> tuple[set[str], set[str]]:
  """(dotted names imported by the file, its string constants but docstrings). `from M import
  a` is the module M.a when there is one, else M (a is an attribute of it)."""
  tree = ast.parse((ROOT / path).read_text(encoding="utf-8"), path)
  names, strings = set(), set()
  docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and n.body and isinstance(n.body[0], ast.Expr)
                and isinstance(n.body[0].value, ast.Constant)}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:  # relative: from the file's own package
        pkg = _package_of(path)
        base = pkg[:len(pkg) - node.level + 1] if node.level > 1 else pkg
        module = ".".join(base + ([node.module] if node.module else []))
      else:
        module = node.module or ""
      for a in node.names:  # a submodule, else an attribute of `module`
        sub = f"{module}.{a.name}"
        names.add(sub if a.name != "*" and module_file(sub) else module)
    elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
          and id(node) not in docstrings):  # usage text is no dependency
      strings.add(node.value)
  return names, strings


def _is_stdlib(top: str) -> bool:
  return top in sys.stdlib_module_names or top == "__future__"


def deps_of(path: str) -> tuple[set[str], set[str]]:
  """(internal files it depends on, third-party pip names) for one source file."""
  names, strings = imported_names(path)
  files: set[str] = set()
  pips: set[str] = set()
  for name in names:
    top = name.split(".")[0]
    if top in PACKAGES:
      f = module_file(name)
      if f is None and "." in name:  # `from M import attr`: M itself
        f = module_file(name.rsplit(".", 1)[0])
      if f:
        files.add(f)
    elif top == "configs":
      files.add("configs")
    elif top in HELPERS and path.startswith("tests/"):
      files.add(f"tests/{top}.py")
    elif name and not _is_stdlib(top) and not (ROOT / top).exists():
      pips.add(PIP_NAMES.get(top, top.replace("_", "-")))
  for s in strings:
    if re.fullmatch(r"(citrus_jax|launch)(\.\w+)+", s) and module_file(s):
      files.add(module_file(s))
    if CONFIG_REF.search(s) and path.startswith("tests/"):  # a test running the CLI
      files.add("configs")
  files.discard(path)
  return files, pips


def data_of(path: str) -> list[str]:
  """Glob patterns of the data a test (or helper) reads: fixture folders its strings name."""
  _, strings = imported_names(path)
  parts = {p for s in strings for p in re.split(r"[/\\\s]", s) if p}
  out = []
  fixtures = ROOT / "tests" / "fixtures"
  if "fixtures" in parts or any("fixtures/" in s for s in strings):
    out += [f"tests/fixtures/{d.name}/**" for d in sorted(fixtures.iterdir())
            if d.is_dir() and d.name in parts]
  if "notebooks" in parts:
    out.append("notebooks/**")
  return out


def label(dep: str) -> str:
  return ":configs" if dep == "configs" else f":{target_name(dep)}"


def _deps_block(path_deps: set[str], pips: set[str]) -> str:
  lines = [f'        "{label(d)}",' for d in sorted(path_deps, key=label)]
  lines += [f'        requirement("{p}"),' for p in sorted(pips)]
  return "    deps = [\n" + "\n".join(lines) + "\n    ],\n" if lines else ""


def _data_block(patterns: list[str]) -> str:
  if not patterns:
    return ""
  inner = ", ".join(f'"{p}"' for p in patterns)
  return f"    data = glob([{inner}]),\n"


def _union(paths: list[str]) -> tuple[set[str], set[str]]:
  files, pips = set(), set()
  for p in paths:
    f, q = deps_of(p)
    files |= f
    pips |= q
  return files - set(paths), pips


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected groups (> 1 module) of `graph` (Tarjan), each sorted."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  out: list[list[str]] = []

  def visit(v: str) -> None:  # recursion depth <= number of modules
    index[v] = low[v] = len(index)
    stack.append(v)
    for w in sorted(graph.get(v, ())):
      if w not in graph:
        continue
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      group = []
      while True:
        w = stack.pop()
        group.append(w)
        if w == v:
          break
      if len(group) > 1:
        out.append(sorted(group))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return sorted(out)


def library_graph() -> dict[str, set[str]]:
  """Library file (or "configs") -> the files it depends on."""
  graph = {p: deps_of(p)[0] for p in library_files()}
  graph["configs"] = _union(config_files())[0] - {"configs"}
  return graph


def main() -> None:
  print("# Bazel-style targets mirroring the package; deps derived from the imports.")
  print("# Generated by tools/gen_build.py (`make build-file`); tests/test_build.py checks it.")
  cycles = import_cycles(library_graph())
  if cycles:  # a dependency cycle is an error for Bazel: listed so that it gets fixed
    print("# Import cycles among these targets (function-level imports included):")
    for group in cycles:
      print(f"#   {' <-> '.join(label(p) for p in group)}")
  print('load("@rules_python//python:defs.bzl", "py_library", "py_test")')
  print('load("@pip//:requirements.bzl", "requirement")\n')
  libs = library_files()
  for path in libs:
    files, pips = deps_of(path)
    print(f'py_library(\n    name = "{target_name(path)}",\n    srcs = ["{path}"],\n'
          f"{_deps_block(files, pips)})\n")
  configs = config_files()
  files, pips = _union(configs)
  files.discard("configs")
  srcs = ", ".join(f'"{p}"' for p in configs)
  print(f'py_library(\n    name = "configs",\n    srcs = [{srcs}],\n'
        f"{_deps_block(files, pips)})\n")
  everything = "".join(f'        "{label(p)}",\n' for p in libs + ["configs"])
  print(f'py_library(\n    name = "citrus_jax",\n    deps = [\n{everything}    ],\n'
        f'    visibility = ["//visibility:public"],\n)\n')
  for path in helper_files():
    files, pips = deps_of(path)
    print(f'py_library(\n    name = "{target_name(path)}",\n    srcs = ["{path}"],\n'
          f"    testonly = True,\n{_deps_block(files, pips)}{_data_block(data_of(path))})\n")
  for path in test_files():
    files, pips = _union([path, "tests/conftest.py"])
    print(f'py_test(\n    name = "{target_name(path)}",\n'
          f'    srcs = ["{path}", "tests/conftest.py"],\n    main = "{path}",\n'
          f"{_deps_block(files, pips)}{_data_block(data_of(path))})\n")


if __name__ == "__main__":
  main()
