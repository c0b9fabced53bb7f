"""Paired comparison of two evaluations on the same items: exact McNemar and bootstrap difference.

  python -m citrus_jax.eval.compare RUN_A RUN_B [--metric correct|loglik|loglik_norm]

RUN_A / RUN_B are each an eval output directory (summary.json + <benchmark>.jsonl, as
eval/harness.py writes) or one per-item JSONL file (a harness <benchmark>.jsonl, or a demo
pipeline <workdir>/eval/<stage>_items.jsonl). Per-item records are matched by "id" within a
benchmark; items present on one side only are counted and left out. The difference is B - A.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from citrus_jax.data import records
from citrus_jax.eval import stats

METRICS = ("correct", "loglik", "loglik_norm")  # generation; loglik acc; loglik acc_norm


def _read_jsonl(path: str) -> list[dict]:
  return [r for _, r in records.read_jsonl(path)]  # bad lines: file:line errors


def _benchmark_files(path: str) -> dict[str, str] | None:
  """{benchmark key: per-item file} for an eval output directory, None for a file."""
  if not os.path.isdir(path):
    return None
  summary = os.path.join(path, "summary.json")
  if os.path.exists(summary):
    with open(summary, encoding="utf-8") as f:
      per = json.load(f).get("benchmarks", {})
    files = {k: os.path.join(path, s["file"]) for k, s in per.items() if "file" in s}
    if files:
      return files
  files = {n[:-len(".jsonl")]: os.path.join(path, n) for n in sorted(os.listdir(path))
           if n.endswith(".jsonl") and not n.endswith(".prompts.jsonl")}
  if not files:
    raise ValueError(f"{path}: no summary.json with per-item files and no *.jsonl files")
  return files


def _by_benchmark(path: str) -> dict[str, list[dict]]:
  files = _benchmark_files(path)
  if files is not None:
    return {k: _read_jsonl(p) for k, p in files.items()}
  out: dict[str, list[dict]] = {}
  for r in _read_jsonl(path):
    out.setdefault(str(r.get("benchmark") or ""), []).append(r)
  return out


def _value(rec: dict, metric: str, where: str) -> bool:
  if metric == "correct":
    if "correct" not in rec:
      raise ValueError(f"{where}: item {rec.get('id')!r} has no generation 'correct' field "
                       "(a loglik-only run? use metric='loglik')")
    return bool(rec["correct"])
  if "loglik" not in rec:
    raise ValueError(f"{where}: item {rec.get('id')!r} has no 'loglik' record")
  return bool(rec["loglik"]["correct" if metric == "loglik" else "correct_norm"])


def _by_id(records: Sequence[dict], metric: str, where: str) -> dict[str, bool]:
  out: dict[str, bool] = {}
  for r in records:
    item_id = str(r["id"])
    if item_id in out:
      raise ValueError(f"{where}: duplicate id {item_id!r}")
    out[item_id] = _value(r, metric, where)
  return out


def _pair_keys(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str, str]]:
  """(name, key in A, key in B): shared benchmark keys, or the single benchmark on each side."""
  shared = [k for k in a if k in b]
  if shared:
    return [(k, k, k) for k in shared]
  if len(a) == 1 and len(b) == 1:  # e.g. two demo stages: "test/cpt" vs "test/rl"
    (ka,), (kb,) = a, b
    return [(f"{ka} vs {kb}", ka, kb)]
  raise ValueError(f"no benchmark in common: A has {sorted(a)}, B has {sorted(b)}")


def compare_predictions(path_a: str, path_b: str, *, metric: str = "correct",
                        n_boot: int = 1000, seed: int = 0) -> dict:
  """Per benchmark, B vs A on the items both evaluated (matched by id).

  Returns {"a": path_a, "b": path_b, "metric": metric, "benchmarks": {name: {
    "n": paired items, "n_a_unmatched", "n_b_unmatched": items on one side only,
    "acc_a", "acc_b": accuracies on the paired items, "diff": acc_b - acc_a,
    "diff_ci95": [lo, hi] (paired bootstrap), "b_only", "a_only": discordant counts
    (items only B / only A gets right), "p": two-sided exact McNemar p}}}.
  With no paired items a benchmark has n=0 and None for the numbers.
  """
  if metric not in METRICS:
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
  recs_a, recs_b = _by_benchmark(path_a), _by_benchmark(path_b)
  out: dict[str, Any] = {"a": path_a, "b": path_b, "metric": metric, "benchmarks": {}}
  for name, ka, kb in _pair_keys(recs_a, recs_b):
    a = _by_id(recs_a[ka], metric, f"{path_a} [{ka}]")
    b = _by_id(recs_b[kb], metric, f"{path_b} [{kb}]")
    ids = [i for i in a if i in b]
    row: dict[str, Any] = {"n": len(ids), "n_a_unmatched": len(a) - len(ids),
                           "n_b_unmatched": len(b) - len(ids)}
    if ids:
      ca, cb = [a[i] for i in ids], [b[i] for i in ids]
      diff, lo, hi = stats.paired_bootstrap_diff(ca, cb, n_boot=n_boot, seed=seed)
      row.update(acc_a=sum(ca) / len(ids), acc_b=sum(cb) / len(ids), diff=diff,
                 diff_ci95=[lo, hi], **stats.mcnemar_exact(ca, cb))
    else:
      row.update(acc_a=None, acc_b=None, diff=None, diff_ci95=None, b_only=None, a_only=None,
                 p=None)
    out["benchmarks"][name] = row
  return out


def format_comparison(result: dict) -> str:
  """A plain-text table of compare_predictions' result."""
  def pct(x):
    return "-" if x is None else f"{100 * x:+.2f}"
  rows = [("benchmark", "n", "acc_a%", "acc_b%", "diff%", "95% CI", "b_only", "a_only",
           "mcnemar_p")]
  for name, r in result["benchmarks"].items():
    if not r["n"]:
      rows.append((name, "0", *["-"] * 7))
      continue
    lo, hi = r["diff_ci95"]
    rows.append((name, str(r["n"]), f"{100 * r['acc_a']:.2f}", f"{100 * r['acc_b']:.2f}",
                 pct(r["diff"]), f"[{100 * lo:+.2f}, {100 * hi:+.2f}]", str(r["b_only"]),
                 str(r["a_only"]), f"{r['p']:.4g}"))
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                     enumerate(zip(row, widths))) for row in rows]
  lines.insert(1, "  ".join("-" * w for w in widths))
  head = f"A = {result['a']}\nB = {result['b']}\nmetric = {result['metric']}; diff = B - A"
  unmatched = [f"{n}: {r['n_a_unmatched']} only in A, {r['n_b_unmatched']} only in B"
               for n, r in result["benchmarks"].items() if r["n_a_unmatched"] or r["n_b_unmatched"]]
  tail = ("\nunpaired items left out: " + "; ".join(unmatched)) if unmatched else ""
  return f"{head}\n{chr(10).join(lines)}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m citrus_jax.eval.compare", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("run_a", help="eval output directory or per-item JSONL file (A)")
  p.add_argument("run_b", help="eval output directory or per-item JSONL file (B)")
  p.add_argument("--metric", choices=METRICS, default="correct")
  p.add_argument("--n_boot", type=int, default=1000)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", action="store_true", help="print the result as JSON instead")
  args = p.parse_args(argv)
  try:
    result = compare_predictions(args.run_a, args.run_b, metric=args.metric,
                                 n_boot=args.n_boot, seed=args.seed)
  except (OSError, ValueError) as e:
    print(f"compare: {e}", file=sys.stderr)
    return 2
  print(json.dumps(result, indent=2) if args.json else format_comparison(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
