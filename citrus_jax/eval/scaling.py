"""Test-time scaling for the MCQ harness: k samples per item (maj@k, pass@k), the spread of
accuracy over sampling seeds, and budget forcing of the thinking (accuracy vs think budget).

Pure helpers; eval/harness.py wires them to the sampler. Budget forcing takes a `generate`
callable (prompt ids, max_new_tokens) -> output dicts, so its logic is tested without a model.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Callable, Sequence

# Appended to prompt + partial thinking when the think budget runs out (s1-style forcing).
FORCE_ANSWER = "\n</think>\n<answer>\n"
_THINK_CLOSE = re.compile(r"<\s*/\s*think\s*>", re.I)


def parse_int_list(value: Any, field: str) -> list[int]:
  """[ints] from "", "256", "128,256", "[0, 1, 2]", an int or a list; a clear error otherwise."""
  if value is None or value == "":
    return []
  if isinstance(value, bool):
    raise ValueError(f"config.{field}: expected integers, got {value!r}")
  if isinstance(value, int):
    return [value]
  parts = value if isinstance(value, (list, tuple)) else str(value).strip("[]() ").split(",")
  out = []
  for p in parts:
    p = p.strip() if isinstance(p, str) else p
    if p == "":
      continue
    try:
      if isinstance(p, float) or isinstance(p, bool):
        raise ValueError
      out.append(int(p))
    except (TypeError, ValueError):
      raise ValueError(f"config.{field}: {p!r} is not an integer (in {value!r})") from None
  return out


def majority_vote(preds: Sequence[str | None]) -> str | None:
  """The most frequent option letter; ties go to the one seen first; None answers do not vote."""
  votes = Counter(p for p in preds if p is not None)
  if not votes:
    return None
  top = max(votes.values())
  return next(p for p in preds if p is not None and votes[p] == top)


def vote_record(sample_preds: Sequence[str | None], gold: str) -> dict:
  """Per-item test-time-scaling fields: the majority letter, maj and pass correctness."""
  maj = majority_vote(sample_preds)
  return {"maj_pred": maj, "maj_correct": maj is not None and maj == gold,
          "pass_correct": any(p is not None and p == gold for p in sample_preds)}


def spread(values: Sequence[float]) -> dict:
  """mean, std (sample std, ddof=1; 0 for one value), min and max of per-seed accuracies."""
  values = [float(v) for v in values]
  if not values:
    return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
  n = len(values)
  mean = sum(values) / n
  std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
  return {"n": n, "mean": mean, "std": std, "min": min(values), "max": max(values)}


def budget_forced_outputs(generate: Callable[[list[list[int]], int], list[dict]], tok: Any,
                          prompt_ids: Sequence[list[int]], *, budget: int,
                          answer_tokens: int) -> list[dict]:
  """Outputs with the thinking cut after `budget` new tokens and the answer block forced.

  Rows that end on their own within the budget are kept. The others keep their text up to the
  first `</think>` (if any), get FORCE_ANSWER appended, and continue for `answer_tokens` more
  tokens from prompt + that text (re-encoded). Each output dict gains "forced" and
  "n_think_tokens"; n_new_tokens counts both phases, finish_reason is the last phase's.
  """
  first = generate([list(p) for p in prompt_ids], budget)
  out: list[dict] = []
  redo, redo_ids = [], []
  for i, g in enumerate(first):
    g = {**g, "forced": False, "n_think_tokens": g["n_new_tokens"]}
    out.append(g)
    if g["finish_reason"] != "stop":
      m = _THINK_CLOSE.search(g["output"])
      head = (g["output"][:m.start()] if m else g["output"]).rstrip()
      g["output"] = head + FORCE_ANSWER
      redo.append(i)
      redo_ids.append(list(prompt_ids[i]) + list(tok.encode(g["output"])))
  if redo:
    second = generate(redo_ids, answer_tokens)
    for i, g2 in zip(redo, second):
      g = out[i]
      g.update(output=g["output"] + g2["output"], forced=True,
               n_new_tokens=g["n_new_tokens"] + g2["n_new_tokens"],
               finish_reason=g2["finish_reason"],
               truncated=bool(g.get("truncated")) or bool(g2.get("truncated")))
  return out


def plot_budgets(path: str, budgets: Sequence[int], accs: dict[str, Sequence[float | None]]
                 ) -> str:
  """accuracy-vs-think-budget PNG, one line per benchmark (and the macro average)."""
  import matplotlib  # optional: only the PNG needs it; Agg set before pyplot
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for name, ys in accs.items():
    pts = [(b, y) for b, y in zip(budgets, ys) if y is not None]
    if pts:
      ax.plot([b for b, _ in pts], [100 * y for _, y in pts], marker="o", label=name)
  ax.set_xlabel("think budget (new tokens)")
  ax.set_ylabel("accuracy (%)")
  ax.set_title("Budget forcing")
  if len(set(budgets)) > 1 and min(budgets) > 0 and max(budgets) / min(budgets) >= 8:
    ax.set_xscale("log", base=2)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
