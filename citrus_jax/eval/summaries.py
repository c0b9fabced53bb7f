"""Per-benchmark and macro summaries of evaluation records, with 95% bootstrap intervals, and
the printed table (split out of eval/harness.py; harness re-exports these names).

Summary per benchmark: n, n_correct, n_answered, n_no_answer, acc = correct / n, valid_acc =
correct / answered, loglik acc / acc_norm, maj@k / pass@k for k-sample runs; each accuracy X has
X_ci95 = [lo, hi], a seeded bootstrap interval over the items (eval/stats.py).
"""
from __future__ import annotations

from typing import Any, Sequence

from citrus_jax.eval import extract, loglik, stats

CI_LEVEL, CI_BOOT, CI_SEED = 0.95, 1000, 0  # the *_ci95 bootstrap intervals in summaries


def _ci(correct: Sequence[bool]) -> list[float] | None:
  """[lo, hi]: the 95% percentile bootstrap interval of an accuracy; None without items."""
  if not len(correct):
    return None
  return list(stats.bootstrap_interval(correct, n_boot=CI_BOOT, seed=CI_SEED, level=CI_LEVEL))


def _macro_ci(groups: Sequence[Sequence[bool]]) -> list[float] | None:
  if not groups or not all(len(g) for g in groups):
    return None
  return list(stats.macro_bootstrap_interval(groups, n_boot=CI_BOOT, seed=CI_SEED,
                                             level=CI_LEVEL))


def _correctness(records: Sequence[dict]) -> dict[str, list[bool]]:
  """Per-item 0/1 lists behind each accuracy: acc, valid_acc (answered items), loglik ones."""
  gen = [r for r in records if "output" in r]
  ll = [r["loglik"] for r in records if "loglik" in r]
  out: dict[str, list[bool]] = {}
  if gen:
    out["acc"] = [bool(r["correct"]) for r in gen]
    out["valid_acc"] = [bool(r["correct"]) for r in gen if r["pred"] is not None]
    k = sample_count(gen)
    if k > 1:
      out[f"maj@{k}"] = [bool(r["maj_correct"]) for r in gen]
      out[f"pass@{k}"] = [bool(r["pass_correct"]) for r in gen]
  if ll:
    out["loglik/acc"] = [bool(r["correct"]) for r in ll]
    out["loglik/acc_norm"] = [bool(r["correct_norm"]) for r in ll]
  return out


def sample_count(gen: Sequence[dict]) -> int:
  """k of a k-samples run (records with "samples"), else 1; mixed k is an error."""
  ks = {len(r["samples"]) if "samples" in r else 1 for r in gen}
  if len(ks) > 1:
    raise ValueError(f"records mix sample counts {sorted(ks)}")
  return ks.pop() if ks else 1


def summarize(records: Sequence[dict]) -> dict:
  """Per-benchmark numbers from its records (the same numbers a recount of the JSONL gives).

  Every accuracy X comes with X_ci95 = [lo, hi], its 95% bootstrap interval over the items
  (eval/stats.py; seeded, so reruns give the same interval; None when it has no items)."""
  out: dict[str, Any] = {"n": len(records)}
  gen = [r for r in records if "output" in r]
  per_item = _correctness(records)
  if gen:
    s = extract.summarize(gen)
    out.update(n_correct=s["correct"], n_answered=s["answered"], n_no_answer=s["no_answer"],
               acc=s["acc"], valid_acc=s["valid_acc"],
               n_truncated=sum(bool(r.get("truncated")) for r in gen),
               n_length=sum(r.get("finish_reason") == "length" for r in gen))
    if any("missing" in r for r in gen):
      out["n_missing"] = sum(bool(r.get("missing")) for r in gen)
    out.update(acc_ci95=_ci(per_item["acc"]), valid_acc_ci95=_ci(per_item["valid_acc"]))
    if any("forced" in r for r in gen):
      out["n_forced"] = sum(bool(r.get("forced")) for r in gen)
    k = sample_count(gen)
    if k > 1:  # acc above is the first sample's; maj@k / pass@k use all k
      out["samples"] = k
      for name in (f"maj@{k}", f"pass@{k}"):
        out[name] = sum(per_item[name]) / len(per_item[name])
        out[f"{name}_ci95"] = _ci(per_item[name])
  ll = [r["loglik"] for r in records if "loglik" in r]
  if ll:
    out["loglik"] = loglik.summarize(ll)
    out["loglik"].update(acc_ci95=_ci(per_item["loglik/acc"]),
                         acc_norm_ci95=_ci(per_item["loglik/acc_norm"]))
  return out


def macro_average(per_benchmark: dict[str, dict],
                  records: dict[str, Sequence[dict]] | None = None) -> dict:
  """Means over benchmarks; with their `records`, also X_ci95 for each mean (each benchmark's
  items resampled on their own; None when a benchmark has no items for that accuracy)."""
  def mean(values):
    values = list(values)
    return sum(values) / len(values) if values else None
  gen = [s for s in per_benchmark.values() if "acc" in s]
  ll = [s["loglik"] for s in per_benchmark.values() if "loglik" in s]
  out = {"n_benchmarks": len(per_benchmark)}
  scaled = [n for n in gen[0] if n.startswith(("maj@", "pass@")) and not n.endswith("_ci95")
            and all(n in s for s in gen)] if gen else []
  if gen:
    out.update(acc=mean(s["acc"] for s in gen), valid_acc=mean(s["valid_acc"] for s in gen))
    out.update({n: mean(s[n] for s in gen) for n in scaled})
  if ll:
    out["loglik"] = {"acc": mean(s["acc"] for s in ll), "acc_norm": mean(s["acc_norm"] for s in ll)}
  if records is not None:
    per_item = [_correctness(records[k]) for k in per_benchmark]
    def groups(name):
      return [c[name] for c in per_item if name in c]
    if gen:
      out.update(acc_ci95=_macro_ci(groups("acc")), valid_acc_ci95=_macro_ci(groups("valid_acc")))
      out.update({f"{n}_ci95": _macro_ci(groups(n)) for n in scaled})
    if ll:
      out["loglik"].update(acc_ci95=_macro_ci(groups("loglik/acc")),
                           acc_norm_ci95=_macro_ci(groups("loglik/acc_norm")))
  return out


def format_table(summary: dict) -> str:
  def pct(x):
    return "-" if x is None else f"{100 * x:.2f}"
  rows = [("benchmark", "n", "acc%", "valid_acc%", "no_answer", "ll_acc%", "ll_acc_norm%")]
  for key, s in summary["benchmarks"].items():
    ll = s.get("loglik", {})
    rows.append((key, str(s["n"]), pct(s.get("acc")), pct(s.get("valid_acc")),
                 str(s.get("n_no_answer", "-")), pct(ll.get("acc")), pct(ll.get("acc_norm"))))
  m = summary["macro_avg"]
  rows.append(("macro_avg", "", pct(m.get("acc")), pct(m.get("valid_acc")), "",
               pct(m.get("loglik", {}).get("acc")), pct(m.get("loglik", {}).get("acc_norm"))))
  scaled = sorted({n for s in summary["benchmarks"].values() for n in s
                   if n.startswith(("maj@", "pass@")) and not n.endswith("_ci95")})
  if scaled:  # test-time scaling columns (k samples per item)
    rows[0] += tuple(f"{n}%" for n in scaled)
    for i, s in enumerate(summary["benchmarks"].values(), start=1):
      rows[i] += tuple(pct(s.get(n)) for n in scaled)
    rows[-1] += tuple(pct(m.get(n)) for n in scaled)
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                     enumerate(zip(r, widths))) for r in rows]
  lines.insert(1, "  ".join("-" * w for w in widths))
  lines.insert(len(lines) - 1, lines[1])
  return "\n".join(lines)
