"""Synthesis inputs: MCQs (rewritten to open questions first) and open questions with an answer.

Accepted files:
  * JSONL or a JSON array of records with "question" and a ground truth:
      MCQ:  "options" (dict letter -> text, or a list) and "answer_idx" / "gold" (a letter), or
            "answer" (a letter, or the text of one option);
      open: "answer" (the ground-truth text), e.g. the demo world's sft3 records.
    Optional: "id" (else the line number), "context", "input" (an SFT prompt to keep as is).
  * Any benchmark file `citrus_jax.eval.benchmarks.load_benchmark` reads (MedQA, PubMedQA, MMLU
    CSV, MMLU-Pro, MedBullets, CareQA, unified), detected from the file or named by `fmt`.
Item ids are "<file stem>/<id>", so several input files never collide. Files are read by
`citrus_jax.data.records` (BOM, invalid UTF-8, "\n"-only lines). Bad records raise a ValueError
naming file, line and field, or with on_error="skip" are skipped and counted per reason; a file
that yields no item is always an error.
"""
from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any, Iterator, Sequence

from citrus_jax.data import records
from citrus_jax.eval import benchmarks
from citrus_jax.eval.prompts import format_question

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclasses.dataclass(frozen=True)
class SynthItem:
  """One question to synthesize a chain for. `question` never shows the options."""

  id: str
  question: str
  answer: str  # ground-truth text
  options: dict[str, str] | None = None  # MCQ only
  gold: str | None = None  # MCQ only: the letter of `answer`
  input: str | None = None  # an SFT prompt to keep instead of building one
  where: str = ""  # file:line

  @property
  def is_mcq(self) -> bool:
    return self.options is not None


class _Bad(Exception):
  def __init__(self, reason: str, field: str, message: str):
    super().__init__(message)
    self.reason, self.field = reason, field


def _options(raw: Any) -> dict[str, str]:
  if isinstance(raw, list):
    raw = dict(zip(_LETTERS, raw))
  if not isinstance(raw, dict) or not raw:
    raise _Bad("bad_options", "options", "options must be a non-empty object letter -> text or "
               "a list of texts")
  out = {}
  for k, v in raw.items():
    key = str(k).strip().upper()
    if key not in _LETTERS or not isinstance(v, (str, int, float)) or not str(v).strip():
      raise _Bad("bad_options", "options", f"option {k!r} has no text or is not a letter")
    out[key] = str(v).strip()
  return dict(sorted(out.items()))


def _text(obj: dict, field: str, reason: str) -> str | None:
  value = obj.get(field)
  if value is None:
    return None
  if not isinstance(value, str):
    raise _Bad(reason, field, f"field {field!r} is {type(value).__name__}, expected a string")
  return value.strip() or None


def item_from_record(obj: Any, *, item_id: str, where: str) -> SynthItem:
  """One JSON record -> SynthItem (raises _Bad with a reason and the field)."""
  if not isinstance(obj, dict):
    raise _Bad("bad_json", "<record>", f"expected a JSON object, got {type(obj).__name__}")
  question = _text(obj, "question", "missing_question")
  if question is None:
    raise _Bad("missing_question", "question", "missing or empty question")
  context = _text(obj, "context", "bad_field")
  if context:
    question = f"Context:\n{context}\n\nQuestion:\n{question}"
  keep_input = _text(obj, "input", "bad_field")
  answer = obj.get("answer")
  if "options" in obj:
    options = _options(obj["options"])
    gold = next((obj[f] for f in ("answer_idx", "gold") if obj.get(f) not in (None, "")), None)
    if gold is None and isinstance(answer, str) and answer.strip():
      a = answer.strip()
      gold = a.upper() if a.upper() in options else next(
          (k for k, v in options.items() if v.lower() == a.lower()), None)
    if gold is None:
      raise _Bad("missing_ground_truth", "answer_idx",
                 "no ground truth: expected 'answer_idx' or 'gold' (a letter) or 'answer' (a "
                 "letter or an option's text)")
    gold = str(gold).strip().upper()
    if gold not in options:
      raise _Bad("gold_not_in_options", "answer_idx",
                 f"gold {gold!r} is not among the options {''.join(options)}")
    return SynthItem(item_id, question, options[gold], options, gold, keep_input, where)
  if not isinstance(answer, str) or not answer.strip():
    raise _Bad("missing_ground_truth", "answer",
               "no ground truth: an open question needs a non-empty 'answer' text")
  return SynthItem(item_id, question, answer.strip(), None, None, keep_input, where)


def _records(path: str, on_error: str, skips: records.Skips) -> Iterator[tuple[int, Any]]:
  """(line, record) for JSONL, or (index + 1, record) for a JSON array (data/records rules)."""
  if records.is_json_array(path):
    for i, obj in records.read_json_array(path, on_error=on_error, skips=skips):
      yield i + 1, obj
  else:
    yield from records.read_jsonl(path, on_error=on_error, skips=skips)


def _is_generic(path: str) -> bool:
  if not path.endswith((".jsonl", ".json")):
    return False
  if benchmarks.detect_benchmark(path) not in (None, "medqa"):
    return False
  rec = records.first_record(path)
  return rec is None or "question" in rec  # None: let the generic reader say what is wrong


def _generic_items(path: str, stem: str, on_error: str, skips: records.Skips
                   ) -> list[SynthItem]:
  items: list[SynthItem] = []
  seen: dict[str, int] = {}
  for line, rec in _records(path, on_error, skips):
    try:
      raw_id = rec.get("id")
      local = str(raw_id) if isinstance(raw_id, (str, int)) and str(raw_id) else f"L{line}"
      if local in seen:
        raise _Bad("duplicate_id", "id", f"duplicate id {local!r} (first at line "
                   f"{seen[local]})")
      items.append(item_from_record(rec, item_id=f"{stem}/{local}", where=f"{path}:{line}"))
      seen[local] = line
    except _Bad as e:
      records.handle(records.RecordError.at(path, line, e.field, str(e), e.reason), on_error,
                     skips)
  return items


def read_items(paths: str | Sequence[str], fmt: str = "auto", on_error: str = "raise",
               **benchmark_kw: Any) -> tuple[list[SynthItem], dict]:
  """Items of every file (a comma list is several), in file order, and a report of counts and
  skipped records. A file that yields no item is an error naming it."""
  records.check_on_error(on_error)
  files = records.split_paths(paths)
  if not files:
    raise ValueError(f"no synthesis input files in {paths!r}")
  items: list[SynthItem] = []
  report: dict[str, Any] = {"files": {}, "skipped": collections.Counter(), "messages": []}
  for path in files:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: input file not found")
    stem = os.path.splitext(os.path.basename(path))[0]
    if fmt == "generic" or (fmt == "auto" and _is_generic(path)):
      skips = records.Skips()
      new = _generic_items(path, stem, on_error, skips)
      skipped, messages = skips.counts, skips.messages
      if not new:
        raise records.RecordError.at(path, None, None, f"no synthesis items ({skips})",
                                     "empty_file")
    else:  # load_benchmark raises on a file without items
      data = benchmarks.load_benchmark(fmt, path, on_error=on_error, **benchmark_kw)
      new = [SynthItem(f"{stem}/{it.id}", format_question(it, with_options=False), it.gold_text,
                       dict(it.options), it.gold, None, f"{path}:{it.meta.get('line', '?')}")
             for it in data.items]
      skipped, messages = data.report.get("skipped", {}), data.report.get("messages", [])
    items += new
    report["messages"] += messages[:20 - len(report["messages"])]
    report["files"][path] = {"items": len(new), "skipped": dict(skipped)}
    report["skipped"].update(skipped)
  report["skipped"] = dict(report["skipped"])
  report["items"] = len(items)
  return items, report
