"""BUILD stays true: every module and test file has its target, and every target's deps cover what
its sources import (a missing dep fails), test targets carry their helpers and fixtures.

The import scan here is written independently of tools/gen_build.py (simpler: import statements
and `python -m` module strings only), so a generator bug that drops a dep is caught too."""
import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LOCAL = ("citrus_jax", "launch")


def _targets(text: str, kind: str) -> dict[str, dict]:
  """name -> {"srcs": [...], "deps": [...labels, requirement names...], "data": [patterns]}."""
  out = {}
  for node in ast.walk(ast.parse(text)):
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == kind:
      kw = {k.arg: k.value for k in node.keywords}
      t = {"srcs": [], "deps": [], "data": []}
      if isinstance(kw.get("srcs"), ast.List):
        t["srcs"] = [e.value for e in kw["srcs"].elts]
      if isinstance(kw.get("deps"), ast.List):
        t["deps"] = [e.value if isinstance(e, ast.Constant) else f"pip:{e.args[0].value}"
                     for e in kw["deps"].elts]
      data = kw.get("data")
      if isinstance(data, ast.Call):  # glob([...])
        t["data"] = [e.value for e in data.args[0].elts]
      out[kw["name"].value] = t
  return out


def _build() -> str:
  return (ROOT / "BUILD").read_text()


def _module_label(dotted: str) -> str | None:
  base = ROOT.joinpath(*dotted.split("."))
  for f in (base.with_suffix(".py"), base / "__init__.py"):
    if f.is_file():
      return ":" + f.relative_to(ROOT).as_posix()[:-3].replace("/", "_")
  return None


def _needed(path: str) -> set[str]:
  """Labels `path` must depend on: the package modules it imports (the module, or the package
  whose attribute it imports), configs/ and test helpers, and a module it runs with -m."""
  tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
  need = set()
  for node in ast.walk(tree):
    mods = []
    if isinstance(node, ast.Import):
      mods = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
      mods = [f"{node.module}.{a.name}" if _module_label(f"{node.module}.{a.name}")
              else node.module for a in node.names]
    for m in mods:
      top = m.split(".")[0]
      if top in LOCAL:
        label = _module_label(m) or _module_label(m.rsplit(".", 1)[0])
        assert label, f"{path}: imports {m}, which is no module of the tree"
        need.add(label)
      elif top == "configs":
        need.add(":configs")
      elif top in ("helpers", "multihost_helpers") and path.startswith("tests/"):
        need.add(f":tests_{top}")
  src = (ROOT / path).read_text(encoding="utf-8")
  for m in re.findall(r'"-m",\s*"((?:citrus_jax|launch)(?:\.\w+)+)"', src):
    need.add(_module_label(m))
  if path.startswith("tests/") and re.search(r'--config=configs/\w+\.py', src):
    need.add(":configs")
  need.discard(":" + path[:-3].replace("/", "_"))
  return need


def missing_deps(text: str) -> list[str]:
  """'<target>: <label>' for every import of a target's sources that its deps lack."""
  out = []
  for kind in ("py_library", "py_test"):
    for name, t in _targets(text, kind).items():
      srcs = t["srcs"]
      need = set().union(*(_needed(s) for s in srcs)) if srcs else set()
      own = {":" + s[:-3].replace("/", "_") for s in srcs} | {f":{name}"}
      out += [f"{name}: {label}" for label in sorted(need - set(t["deps"]) - own)]
  return out


def test_every_module_has_a_library_target():
  modules = {str(p.relative_to(ROOT)) for pkg in ("citrus_jax",)
             for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts}
  listed = {f for t in _targets(_build(), "py_library").values() for f in t["srcs"]}
  assert modules - listed == set(), "missing from BUILD (run `make build-file`)"
  assert {f for f in listed if f.startswith("citrus_jax/")} - modules == set(), "stale entries"
  configs = {p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").glob("*.py")}
  assert set(_targets(_build(), "py_library")["configs"]["srcs"]) == configs


def test_every_test_file_has_a_test_target():
  tests = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")}
  listed = {f for t in _targets(_build(), "py_test").values() for f in t["srcs"]
            if "conftest" not in f}
  assert tests == listed, "BUILD py_test targets out of date (run `make build-file`)"


def test_every_target_depends_on_what_it_imports():
  assert missing_deps(_build()) == [], "BUILD deps out of date (run `make build-file`)"


@pytest.mark.parametrize("target, dep", [("citrus_jax_train_rl", ":citrus_jax_data_preference"),
                                         ("tests_test_cpt", ":tests_helpers"),
                                         ("tests_test_cpt", ":citrus_jax_main"),
                                         ("tests_test_cpt", ":configs")])
def test_a_missing_dep_fails(target, dep):
  text = _build()
  start = text.index(f'name = "{target}"')
  end = text.index("\n)\n", start)
  line = f'        "{dep}",\n'
  assert line in text[start:end], (target, dep)
  broken = text[:start] + text[start:end].replace(line, "") + text[end:]
  assert f"{target}: {dep}" in missing_deps(broken)


def test_third_party_imports_are_requirements():
  libs = _targets(_build(), "py_library")
  assert "pip:grain" in libs["citrus_jax_data_preference"]["deps"]
  assert "pip:jax" in libs["citrus_jax_train_rl"]["deps"]
  assert "pip:absl-py" in _targets(_build(), "py_test")["tests_test_cpt"]["deps"]  # conftest's
  assert not any(d in ("pip:os", "pip:json", "pip:typing") for t in libs.values()
                 for d in t["deps"])


def test_test_targets_carry_their_helpers_and_fixtures():
  tests = _targets(_build(), "py_test")
  for name, t in tests.items():
    path = t["srcs"][0]
    assert "tests/conftest.py" in t["srcs"], name
    src = (ROOT / path).read_text(encoding="utf-8")
    for helper in ("helpers", "multihost_helpers"):
      if re.search(rf"^\s*(from {helper} import|import {helper}\b)", src, re.M):
        assert f":tests_{helper}" in t["deps"], (name, helper)
    for d in re.findall(r'"fixtures"\s*(?:,|/)\s*"(\w+)"|fixtures/(\w+)', src):
      folder = next(x for x in d if x)
      if (ROOT / "tests" / "fixtures" / folder).is_dir():
        assert f"tests/fixtures/{folder}/**" in t["data"], (name, folder)
  assert "tests/fixtures/preference/**" in tests["tests_test_preference_data"]["data"]
  helpers = _targets(_build(), "py_library")
  assert helpers["tests_helpers"]["srcs"] == ["tests/helpers.py"]
  assert helpers["tests_multihost_helpers"]["srcs"] == ["tests/multihost_helpers.py"]
