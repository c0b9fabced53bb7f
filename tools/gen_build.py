"""Prints the BUILD file: one py_library per package module, one py_test per test file.

`make build-file` regenerates it; tests/test_build.py fails when it falls out of date.
"""
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def targets() -> tuple[list[str], list[str]]:
  libs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "citrus_jax").rglob("*.py")
                if "__pycache__" not in p.parts)
  tests = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py"))
  return libs, tests


def target_name(path: str) -> str:
  return path[:-3].replace("/", "_")


def main() -> None:
  libs, tests = targets()
  print("# Bazel-style targets mirroring the package. Regenerate with `make build-file`.")
  print('load("@rules_python//python:defs.bzl", "py_library", "py_test")\n')
  for path in libs:
    print(f'py_library(\n    name = "{target_name(path)}",\n    srcs = ["{path}"],\n)\n')
  deps = "".join(f'        ":{target_name(path)}",\n' for path in libs)
  print(f'py_library(\n    name = "citrus_jax",\n    srcs = glob(["configs/*.py"]),\n'
        f'    deps = [\n{deps}    ],\n    visibility = ["//visibility:public"],\n)\n')
  for path in tests:
    print(f'py_test(\n    name = "{target_name(path)}",\n'
          f'    srcs = ["{path}", "tests/conftest.py"],\n    deps = [":citrus_jax"],\n)\n')


if __name__ == "__main__":
  main()
