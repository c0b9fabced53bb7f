"""Load every recognised benchmark file under a directory and print item counts.

  python -m citrus_jax.eval.validate --data_dir /path/to/benchmarks [--strict] [--seed 0]

Exit status 1 when a file fails to load (with --strict, on the first bad row) or a full test file
does not hold the number of items the Citrus paper reports.
"""
from __future__ import annotations

import argparse
import os
import sys

from citrus_jax.data import records
from citrus_jax.eval.benchmarks import BENCHMARKS, detect_benchmark, load_benchmark

_SAMPLE_WORDS = ("sample", "small", "train", "dev", "val")


def _fmt(counts: dict) -> str:
  return ",".join(f"{k}={v}" for k, v in sorted(counts.items())) or "-"


def _unreadable_jsonl(path: str) -> str | None:
  """Why a .jsonl file holds no record at all (empty, blank, every line bad), else None."""
  if not path.endswith(".jsonl"):
    return None
  try:
    next(records.read_jsonl(path, on_error="skip"), None)
  except records.RecordError as e:
    return str(e)
  return None


def _rows(data_dir: str, strict: bool, seed: int, check_counts: bool) -> list[dict]:
  rows = []
  for root, dirs, files in os.walk(data_dir):
    dirs.sort()
    for fname in sorted(files):
      path = os.path.join(root, fname)
      name = detect_benchmark(path)
      if name is None:
        why = _unreadable_jsonl(path)
        if why:  # an empty file cannot be told apart, but it is no benchmark either
          rows.append({"file": os.path.relpath(path, data_dir), "benchmark": "?", "error": why})
        continue
      names = [name]
      if name == "pubmedqa" and os.path.exists(os.path.join(root, "test_ground_truth.json")):
        names.append("pubmedqa_test")
      for n in names:
        row = {"file": os.path.relpath(path, data_dir), "benchmark": n}
        try:
          data = load_benchmark(n, path, seed=seed, on_error="raise" if strict else "skip")
        except (ValueError, OSError) as e:
          row["error"] = str(e)
          rows.append(row)
          continue
        r = data.report
        sources = sorted(r["sources"])
        if n == "unified" and len(sources) == 1:
          row["benchmark"] = f"unified:{sources[0]}"
        expected = r["expected"]
        if n == "unified" and len(sources) == 1 and sources[0] in BENCHMARKS:
          expected = BENCHMARKS[sources[0]].expected
        if not check_counts or any(w in fname.lower() for w in _SAMPLE_WORDS):
          expected = None  # samples and train splits have no reference count
        gold = r["gold_counts"]
        top = max(gold, key=gold.get) if gold else "-"
        row.update(items=r["items"], expected=expected, skipped=_fmt(r["skipped"]),
                   dropped=_fmt({**r["dropped"], **({"other_category": r["filtered"]}
                                                    if r["filtered"] else {})}),
                   shuffled=r["shuffled"],
                   top_gold=f"{top} {100 * gold.get(top, 0) / max(r['items'], 1):.0f}%",
                   warnings=_fmt(r["warnings"]))
        rows.append(row)
  return rows


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data_dir", required=True)
  p.add_argument("--strict", action="store_true", help="raise on the first bad row")
  p.add_argument("--seed", type=int, default=0, help="option-shuffling seed")
  p.add_argument("--no_expected", action="store_true",
                 help="do not compare with the item counts of the Citrus paper")
  args = p.parse_args(argv)
  rows = _rows(args.data_dir, args.strict, args.seed, not args.no_expected)
  cols = ["file", "benchmark", "items", "expected", "skipped", "dropped", "shuffled", "top_gold",
          "warnings", "status"]
  failed = 0
  for row in rows:
    if "error" in row:
      row["status"] = "ERROR"
      failed += 1
    elif row["expected"] is not None and row["items"] != row["expected"]:
      row["status"] = "MISMATCH"
      failed += 1
    else:
      row["status"] = "ok"
    row["expected"] = "-" if row.get("expected") is None else row["expected"]
  widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in cols}
  print("  ".join(c.ljust(widths[c]) for c in cols))
  print("  ".join("-" * widths[c] for c in cols))
  for row in rows:
    print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in cols).rstrip())
  for row in rows:
    if "error" in row:
      print(f"ERROR {row['file']}: {row['error']}", file=sys.stderr)
  print(f"{len(rows)} benchmark files, {failed} with problems")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
