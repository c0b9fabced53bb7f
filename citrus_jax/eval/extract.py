"""A model output's answer (its `<answer>` block, thinking removed) mapped to an option, scored.

`map_to_option` (eval/option_match.py) maps a free-text answer to an option letter by
deterministic rules, no LLM judge; `map_output`/`score` read an output without `<answer>` tags
more strictly (eval/untagged.py).
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from citrus_jax.eval import untagged
from citrus_jax.eval.option_match import map_to_option

__all__ = ["extract_answer_span", "has_answer_tag", "map_to_option", "map_output", "score",
           "summarize"]

_ANSWER_OPEN = re.compile(r"<\s*answer\s*>", re.I)
_ANSWER_CLOSE = re.compile(r"<\s*/\s*answer\s*>", re.I)
_THINK_CLOSE = re.compile(r"<\s*/\s*think\s*>", re.I)


def extract_answer_span(output: str | None) -> str | None:
  """The last non-empty `<answer>` block (a final unclosed one counts), else the whole output.

  Without answer tags the text after the last `</think>` is used when there is any, so letters in
  the reasoning are not mistaken for the answer. None when there is nothing to read.
  """
  if not output or not output.strip():
    return None
  opens = list(_ANSWER_OPEN.finditer(output))
  if opens:
    blocks = []
    for i, m in enumerate(opens):
      end = opens[i + 1].start() if i + 1 < len(opens) else len(output)
      close = _ANSWER_CLOSE.search(output, m.end(), end)
      blocks.append(output[m.end():close.start() if close else end])
    blocks = [b.strip() for b in blocks if b.strip()]
    return blocks[-1] if blocks else None
  closes = list(_THINK_CLOSE.finditer(output))
  if closes and output[closes[-1].end():].strip():
    return output[closes[-1].end():].strip()
  return output.strip()


def has_answer_tag(output: str | None) -> bool:
  """Whether the output has an `<answer>` block (then the block alone is the answer)."""
  return bool(output) and bool(_ANSWER_OPEN.search(output))


def map_output(output: str | None, options: dict[str, str]) -> str | None:
  """Option letter of a whole model output: its `<answer>` block mapped by `map_to_option`, or,
  without answer tags, only what the output commits to (eval/untagged.py)."""
  span = extract_answer_span(output)
  if span is None:
    return None
  if has_answer_tag(output):
    return map_to_option(span, options)
  return untagged.map_untagged(span, options)


def score(output: str | None, item: Any) -> dict:
  """Extracted span, predicted letter and correctness of one model output for an MCQItem
  (untagged outputs count only where they commit to an option: eval/untagged.py)."""
  span = extract_answer_span(output)
  pred = map_output(output, item.options)
  return {"pred": pred, "correct": pred is not None and pred == item.gold, "span": span or ""}


def summarize(scores: Iterable[dict]) -> dict:
  """acc = correct / all, valid_acc = correct / answered (the CITRUS.md report)."""
  scores = list(scores)
  n = len(scores)
  answered = sum(s["pred"] is not None for s in scores)
  correct = sum(bool(s["correct"]) for s in scores)
  return {"n": n, "correct": correct, "answered": answered, "no_answer": n - answered,
          "acc": correct / n if n else 0.0,
          "valid_acc": correct / answered if answered else 0.0}
