"""BUILD stays true: every package module and test file has its target, and nothing else."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _targets(kind: str) -> dict[str, list[str]]:
  tree = ast.parse((ROOT / "BUILD").read_text())
  out = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == kind:
      kw = {k.arg: k.value for k in node.keywords}
      srcs = kw["srcs"]
      files = [e.value for e in srcs.elts] if isinstance(srcs, ast.List) else []
      out[kw["name"].value] = files
  return out


def test_every_module_has_a_library_target():
  modules = {str(p.relative_to(ROOT)) for p in (ROOT / "citrus_jax").rglob("*.py")
             if "__pycache__" not in p.parts}
  listed = {f for files in _targets("py_library").values() for f in files}
  assert modules - listed == set(), "missing from BUILD (run `make build-file`)"
  assert {f for f in listed if f.startswith("citrus_jax/")} - modules == set(), "stale entries"


def test_every_test_file_has_a_test_target():
  tests = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")}
  listed = {f for files in _targets("py_test").values() for f in files if "conftest" not in f}
  assert tests == listed, "BUILD py_test targets out of date (run `make build-file`)"
