"""Medical MCQ benchmarks as one record type, with deterministic option shuffling.

`load_benchmark(name, path)` reads any supported distribution format (parsers in readers.py),
validates every row (options present, letters A.. consecutive, gold among the options, unique ids)
and returns the items plus a report of counts and skips. JMED's gold letters are 85% "A" in the
distribution, so its options are shuffled by default (seeded by item id): otherwise a model that
always answers "A" beats every published score.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import re
from typing import Any, Callable, Iterator

from citrus_jax.data import records
from citrus_jax.eval import readers
from citrus_jax.eval.reader_base import LETTERS, Issues, Raw
from citrus_jax.eval.readers import MMLU_SUBJECTS


@dataclasses.dataclass(frozen=True)
class MCQItem:
  """One multiple-choice question; `options` is ordered letter -> text with letters A.. ."""

  id: str
  question: str
  options: dict[str, str]
  gold: str
  context: str | None = None
  language: str = "en"
  source: str = ""
  meta: dict = dataclasses.field(default_factory=dict, compare=False)

  @property
  def gold_text(self) -> str:
    return self.options[self.gold]


@dataclasses.dataclass
class BenchmarkData:
  name: str
  path: str
  items: list[MCQItem]
  report: dict

  def __len__(self) -> int:
    return len(self.items)

  def __iter__(self) -> Iterator[MCQItem]:
    return iter(self.items)


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
  reader: Callable[..., Iterator[Raw]]
  defaults: dict = dataclasses.field(default_factory=dict)
  shuffle: bool = False
  expected: int | None = None  # denominator reported in the Citrus paper
  description: str = ""


_MMLU_COUNTS = {"anatomy": 135, "clinical_knowledge": 265, "college_biology": 144,
                "college_medicine": 173, "medical_genetics": 100, "professional_medicine": 272}

BENCHMARKS: dict[str, BenchmarkSpec] = {
    "medqa": BenchmarkSpec(readers.read_medqa, {"source": "medqa"}, expected=1273,
                           description="MedQA-USMLE 4-option JSONL"),
    "pubmedqa": BenchmarkSpec(readers.read_pubmedqa, {"source": "pubmedqa"}, expected=1000,
                              description="PubMedQA PQA-L ori_pqal.json, all 1000"),
    "pubmedqa_test": BenchmarkSpec(readers.read_pubmedqa,
                                   {"source": "pubmedqa_test", "split": "test"}, expected=500,
                                   description="PubMedQA 500-id test split"),
    "mmlu": BenchmarkSpec(readers.read_mmlu, description="MMLU CSV, subject from the file name"),
    **{f"mmlu_{s}": BenchmarkSpec(readers.read_mmlu, {"source": f"mmlu_{s}", "subject": s},
                                  expected=_MMLU_COUNTS[s], description=f"MMLU {s} CSV")
       for s in MMLU_SUBJECTS},
    "mmlu_pro_health": BenchmarkSpec(readers.read_mmlu_pro,
                                     {"source": "mmlu_pro_health", "category": "health"},
                                     expected=818, description="MMLU-Pro health JSONL (A-J)"),
    "mmlu_pro_biology": BenchmarkSpec(readers.read_mmlu_pro,
                                      {"source": "mmlu_pro_biology", "category": "biology"},
                                      expected=717, description="MMLU-Pro biology JSONL (A-J)"),
    "medbullets_op4": BenchmarkSpec(readers.read_medbullets, {"source": "medbullets_op4"},
                                    expected=308, description="MedBullets 4-option column JSON"),
    "medbullets_op5": BenchmarkSpec(readers.read_medbullets, {"source": "medbullets_op5"},
                                    expected=308, description="MedBullets 5-option column JSON"),
    "careqa": BenchmarkSpec(readers.read_careqa, {"source": "careqa"}, expected=5621,
                            description="CareQA JSONL (empty rows dropped)"),
    "jmed": BenchmarkSpec(readers.read_unified, {"source": "jmed", "language": "zh"},
                          shuffle=True, description="JMED (unified layout, Chinese, 5 options)"),
    "unified": BenchmarkSpec(readers.read_unified,
                             description="Citrus unified JSONL; source from exam_name"),
}
# Sources whose options are shuffled by default even when read through the generic "unified" name.
SHUFFLE_BY_DEFAULT = frozenset(name for name, spec in BENCHMARKS.items() if spec.shuffle)


# ------------------------------------------------------------------------------------------------
# Shuffling


def _rank(seed: int, item_id: str, letter: str) -> bytes:
  return hashlib.sha256(f"{seed}\x1f{item_id}\x1f{letter}".encode()).digest()


def shuffle_item(item: MCQItem, seed: int = 0) -> MCQItem:
  """Permutes option texts by a hash of (seed, id); the gold moves with its text."""
  old = list(item.options)
  order = sorted(old, key=lambda letter: _rank(seed, item.id, letter))
  options = {LETTERS[i]: item.options[o] for i, o in enumerate(order)}
  gold = LETTERS[order.index(item.gold)]
  meta = dict(item.meta, orig_gold=item.gold, orig_letters="".join(order))
  return dataclasses.replace(item, options=options, gold=gold, meta=meta)


# ------------------------------------------------------------------------------------------------
# Validation common to all formats

_LABEL = r"^\s*(?:\(\s*{L}\s*\)|{L}\s*[.:)、．])\s*"


def _strip_own_labels(options: dict[str, str]) -> tuple[dict[str, str], bool]:
  """Removes "A. " style labels, but only when every option carries its own letter."""
  pats = {k: re.compile(_LABEL.format(L=k)) for k in options}
  if len(options) > 1 and all(pats[k].match(v) and pats[k].sub("", v, 1) for k, v in
                              options.items()):
    return {k: pats[k].sub("", v, count=1).strip() for k, v in options.items()}, True
  return options, False


def _build(raw: Raw, issues: Issues) -> tuple[MCQItem | None, bool]:
  f = raw.fields
  if not isinstance(raw.question, str) or not raw.question.strip():
    issues.error(raw.line, f.get("question", "question"), "empty_question",
                 "missing or empty question")
    return None, False
  opt_field = f.get("options", "options")
  if not raw.options:
    issues.error(raw.line, opt_field, "no_options", "item has no options")
    return None, False
  letters = [k for k, _ in raw.options]
  if letters != list(LETTERS[:len(letters)]):
    issues.error(raw.line, opt_field, "bad_option_letters",
                 f"option letters {''.join(letters)!r} are not consecutive from A")
    return None, False
  for k, v in raw.options:
    if not isinstance(v, (str, int, float)) or isinstance(v, bool) or not str(v).strip():
      issues.error(raw.line, opt_field, "empty_option", f"option {k} is empty or not text")
      return None, False
  options = {k: str(v).strip() for k, v in raw.options}
  options, stripped = _strip_own_labels(options)
  gold = raw.gold.strip().upper() if isinstance(raw.gold, str) else raw.gold
  if gold not in options:
    issues.error(raw.line, f.get("gold", "gold"), "gold_not_in_options",
                 f"gold {raw.gold!r} is not among the options {''.join(options)}")
    return None, False
  context = raw.context.strip() if isinstance(raw.context, str) and raw.context.strip() else None
  meta = dict(raw.meta, line=raw.line)
  return MCQItem(id=raw.id, question=raw.question.strip(), options=options, gold=gold,
                 context=context, language=raw.language, source=raw.source, meta=meta), stripped


def load_benchmark(name: str, path: str, *, shuffle_options: bool | None = None, seed: int = 0,
                   on_error: str = "raise", **kw: Any) -> BenchmarkData:
  """Reads one benchmark file. name: a key of BENCHMARKS or "auto" (detect from the file).

  shuffle_options=None uses the benchmark's default (on for JMED only). on_error="skip" skips bad
  rows and counts them per reason in report["skipped"] instead of raising.
  """
  if name == "auto":
    detected = detect_benchmark(path)
    if detected is None:
      raise ValueError(f"{path}: cannot tell which benchmark this file holds")
    name = detected
  if name not in BENCHMARKS:
    raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
  spec = BENCHMARKS[name]
  issues = Issues(path, on_error)
  items: list[MCQItem] = []
  seen: dict[str, int | str] = {}
  n_stripped = 0
  for raw in spec.reader(path, issues, **{**spec.defaults, **kw}):
    item, stripped = _build(raw, issues)
    if item is None:
      continue
    if item.id in seen:
      issues.error(raw.line, raw.fields.get("id", "id"), "duplicate_id",
                   f"duplicate id {item.id!r} (first at line {seen[item.id]})")
      continue
    seen[item.id] = raw.line
    n_stripped += stripped
    items.append(item)
  if not items:  # an empty benchmark scores n=0, which is never a result
    counts = {**issues.skipped, **issues.dropped, **({"other_category": issues.filtered}
                                                     if issues.filtered else {})}
    raise records.RecordError.at(path, None, None, f"no {name} items" + (
        f" (skipped or dropped: {', '.join(f'{k}={v}' for k, v in sorted(counts.items()))})"
        if counts else ""), "empty_file")
  n_shuffled = 0
  for i, item in enumerate(items):
    on = (item.source in SHUFFLE_BY_DEFAULT or spec.shuffle) if shuffle_options is None \
        else shuffle_options
    if on:
      items[i] = shuffle_item(item, seed)
      n_shuffled += 1
  skipped = sum(issues.skipped.values())
  report = {
      "benchmark": name,
      "path": path,
      "rows": len(items) + skipped + sum(issues.dropped.values()) + issues.filtered,
      "items": len(items),
      "skipped": dict(issues.skipped),
      "dropped": dict(issues.dropped),
      "filtered": issues.filtered,
      "warnings": dict(issues.warnings),
      "labels_stripped": n_stripped,
      "shuffled": n_shuffled,
      "seed": seed,
      "gold_counts": dict(sorted(collections.Counter(it.gold for it in items).items())),
      "sources": dict(collections.Counter(it.source for it in items)),
      "expected": spec.expected,
      "messages": list(issues.messages),
  }
  return BenchmarkData(name=name, path=path, items=items, report=report)


# ------------------------------------------------------------------------------------------------
# Detection (for validate.py): file name first, then the shape of the first record.


def detect_benchmark(path: str) -> str | None:
  """Registry name for a benchmark file, or None for files that are not benchmarks."""
  base = os.path.basename(path).lower()
  if base.endswith(".xlsx"):
    return "jmed"  # JMED's released spreadsheet (jmed_xlsx.read_jmed_xlsx)
  if base.endswith(".csv"):
    subject = readers.mmlu_subject(base)
    return f"mmlu_{subject}" if subject in MMLU_SUBJECTS else None
  if base.endswith(".json"):
    if "test_ground_truth" in base:
      return None  # PubMedQA test ids, read together with ori_pqal.json
    if "pqal" in base or "pubmedqa" in base:
      return "pubmedqa"
    m = re.search(r"medbullets_op([45])", base)
    if m:
      return f"medbullets_op{m.group(1)}"
    return None
  if not base.endswith(".jsonl"):
    return None
  obj = records.first_record(path)
  if obj is None:
    return None
  if "OP" in obj and "Q" in obj:
    exam = readers.canonical_name(str(obj.get("exam_name") or ""))
    return "jmed" if exam == "jmed" or "jmed" in base else "unified"
  if isinstance(obj.get("options"), dict) and "answer_idx" in obj:
    return "medqa"
  if isinstance(obj.get("options"), list) and "question_id" in obj:
    cat = str(obj.get("category", "")).lower()
    for c in ("health", "biology"):
      if cat == c or (not cat and c in base):
        return f"mmlu_pro_{c}"
    return None
  if "cop" in obj and "op1" in obj:
    return "careqa"
  return None


def load_bank(path: str, *, on_error: str = "raise", shuffle_options: bool | None = None,
              seed: int = 0) -> list[MCQItem]:
  """An MCQ bank for rejection sampling, in any layout the benchmark readers read (MedQA JSONL,
  unified JSONL, MMLU CSV, MMLU-Pro, MedBullets, CareQA, PubMedQA, JMED .xlsx): its MCQItems
  (`rollout.questions.question_from_record` takes them as they are)."""
  name = "jmed" if path.lower().endswith(".xlsx") else detect_benchmark(path)
  if name is None:
    raise ValueError(f"{path}: not an MCQ bank in a layout the benchmark readers know (MedQA, "
                     "unified, MMLU CSV, MMLU-Pro, MedBullets, CareQA, PubMedQA, JMED .xlsx)")
  return load_benchmark(name, path, on_error=on_error,
                        shuffle_options=shuffle_options, seed=seed).items
