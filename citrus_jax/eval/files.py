"""Benchmark files in (eval.benchmarks with eval.data_paths or a scanned eval.data_dir) and
result files out (split out of eval/harness.py; harness re-exports these names).
"""
from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Sequence

import ml_collections

from citrus_jax import runtime
from citrus_jax.eval import benchmarks

_SPLIT_WORDS = {"train", "dev", "val", "validation"}  # data_dir scans skip these files


def _is_split_file(path: str) -> bool:
  return bool(_SPLIT_WORDS & set(re.split(r"[^a-z0-9]+", os.path.basename(path).lower())))


def _matches(requested: str, detected: str) -> bool:
  if requested == detected:
    return True
  if requested == "mmlu":
    return detected.startswith("mmlu_") and not detected.startswith("mmlu_pro")
  return requested == "medbullets" and detected.startswith("medbullets_")


def resolve_benchmarks(ev: ml_collections.ConfigDict) -> list[tuple[str, str]]:
  """(registry name, file) pairs from eval.benchmarks with eval.data_paths or eval.data_dir."""
  names = runtime.split_paths(ev.benchmarks)
  paths = runtime.split_paths(ev.data_paths)
  if paths and ev.data_dir:
    raise runtime.ConfigError("set config.eval.data_paths or config.eval.data_dir, not both")
  if paths:
    names = names or ["auto"]
    if names == ["auto"]:
      names = names * len(paths)
    if len(names) != len(paths):
      raise runtime.ConfigError(f"config.eval.benchmarks names {len(names)} benchmarks but "
                                f"config.eval.data_paths {len(paths)} files; give one per file")
    pairs = []
    for name, path in zip(names, paths):
      if not os.path.exists(path):
        raise runtime.ConfigError(f"config.eval.data_paths: {path} does not exist")
      if name == "auto":
        name = benchmarks.detect_benchmark(path)
        if name is None:
          raise runtime.ConfigError(f"config.eval.data_paths: cannot tell which benchmark {path} "
                                    "holds; name it in config.eval.benchmarks")
      elif name not in benchmarks.BENCHMARKS:
        raise runtime.ConfigError(f"config.eval.benchmarks: unknown {name!r}; known: "
                                  f"{', '.join(sorted(benchmarks.BENCHMARKS))}")
      pairs.append((name, path))
    return pairs
  if not ev.data_dir:
    raise runtime.ConfigError("set config.eval.data_paths (with config.eval.benchmarks) or "
                              "config.eval.data_dir")
  if not os.path.isdir(ev.data_dir):
    raise runtime.ConfigError(f"config.eval.data_dir: {ev.data_dir} is not a directory")
  found = []
  for root, dirs, files in os.walk(ev.data_dir):
    dirs.sort()
    for fname in sorted(files):
      path = os.path.join(root, fname)
      detected = benchmarks.detect_benchmark(path)
      if detected is None or _is_split_file(path):
        continue
      found.append((detected, path))
      if detected == "pubmedqa" and os.path.exists(os.path.join(root, "test_ground_truth.json")):
        found.append(("pubmedqa_test", path))
  if not names:
    return [(n, p) for n, p in found if n != "pubmedqa_test"]
  pairs = []
  for name in names:
    hits = [(d if name != "unified" else name, p) for d, p in found if _matches(name, d)]
    if not hits:
      raise runtime.ConfigError(f"config.eval.benchmarks: no {name} file found under "
                                f"{ev.data_dir} (detected: "
                                f"{', '.join(sorted({d for d, _ in found})) or 'nothing'})")
    pairs += hits
  return pairs


def load_all(pairs: Sequence[tuple[str, str]], ev: ml_collections.ConfigDict
             ) -> dict[str, Any]:
  """BenchmarkData per unique key (the benchmark name, or its single source for mmlu/unified)."""
  shuffle = {"default": None, "on": True, "off": False}[ev.shuffle_options]
  data: dict[str, Any] = {}
  for name, path in pairs:
    bench = benchmarks.load_benchmark(name, path, shuffle_options=shuffle, seed=ev.shuffle_seed,
                                      on_error=ev.on_error)
    if ev.limit > 0:
      bench.items = bench.items[:ev.limit]
    sources = {it.source for it in bench.items}
    key = sources.pop() if name in ("mmlu", "unified") and len(sources) == 1 else name
    base, k = key, 2
    while key in data:
      key, k = f"{base}_{k}", k + 1
    data[key] = bench
  return data


def _write_jsonl(path: str, rows: Sequence[dict]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for r in rows:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")


def output_dir(workdir: str, timestamped: bool = True) -> str:
  if not timestamped:
    os.makedirs(workdir, exist_ok=True)
    return workdir
  base = os.path.join(workdir, time.strftime("eval_%Y%m%d-%H%M%S"))
  path, k = base, 2
  while os.path.exists(path):
    path, k = f"{base}-{k}", k + 1
  os.makedirs(path)
  return path
