"""Parsers for the distribution formats of the medical MCQ benchmarks.

Each reader yields `Raw` records (options as an ordered list, gold as a letter) and reports bad
input through `Issues` (both in reader_base.py), which either raises a ValueError naming file,
line and field or counts the skip. Validation common to every format (letters, gold among options,
duplicate ids) lives in benchmarks.py; readers only check what is specific to their format.
JMED's .xlsx spreadsheet is read by jmed_xlsx.py (through read_unified).
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from typing import Any, Iterator

from citrus_jax.data import records
from citrus_jax.eval.jmed_xlsx import JMED_COLUMNS, JMED_QUESTION, read_jmed_xlsx  # noqa: F401
# Shared with jmed_xlsx.py; their names stay importable from here.
from citrus_jax.eval.reader_base import (LETTERS, Issues, Raw, _blank, _raw, _strip,  # noqa: F401
                                         is_chinese)

MMLU_SUBJECTS = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine",
                 "medical_genetics", "professional_medicine")


def _iter_jsonl(path: str, issues: Issues) -> Iterator[tuple[int, int, dict]]:
  """Yields (1-based line, 0-based record index, object) for every non-blank line."""
  for row in records.scan_jsonl(path, on_error=issues.on_error, skips=issues):
    yield row.line, row.index, row.record


class _JsonFile:
  """A whole-file JSON document that can say on which line a key sits (for error messages)."""

  def __init__(self, path: str, issues: Issues):
    self.text = records.read_text(path)
    self.dups: list[str] = []
    self._lines: dict[str | None, dict[str, int]] = {}

    def hook(pairs):
      out = {}
      for k, v in pairs:
        if k in out:
          self.dups.append(k)
        else:  # keep the first occurrence; json's default silently keeps the last
          out[k] = v
      return out

    self.data = records.parse_json(self.text, path, object_pairs_hook=hook)

  def line_of(self, key: str, after: str | None = None) -> int:
    """Line of the first `"key":` (optionally after the first `"after":`); 1 if not found."""
    if after not in self._lines:
      start = 0
      if after is not None:
        m = re.search(re.escape(json.dumps(after)) + r"\s*:", self.text)
        start = m.end() if m else 0
      lines, line, pos = {}, self.text.count("\n", 0, start) + 1, start
      for m in re.finditer(r'"((?:[^"\\\n]|\\.)*)"\s*:', self.text[start:]):
        line += self.text.count("\n", pos, start + m.start())
        pos = start + m.start()
        lines.setdefault(m.group(1), line)
      self._lines[after] = lines
    return self._lines[after].get(key, 1)


# ------------------------------------------------------------------------------------------------
# MedQA-USMLE: {"question", "options": {"A": ...}, "answer_idx", "answer", "meta_info"}


def read_medqa(path: str, issues: Issues, *, source: str = "medqa") -> Iterator[Raw]:
  for line, idx, obj in _iter_jsonl(path, issues):
    opts = obj.get("options")
    if not isinstance(opts, dict):
      issues.error(line, "options", "no_options", "missing or not an object of letter -> text")
      continue
    options = sorted(((str(k).strip().upper(), v) for k, v in opts.items()), key=lambda kv: kv[0])
    gold = _strip(obj.get("answer_idx"))
    if isinstance(gold, str) and gold in opts and isinstance(obj.get("answer"), str):
      if opts[gold].strip() != obj["answer"].strip():
        issues.warnings["answer_text_mismatch"] += 1
    # MedQA files have no ids (the row index is used); files in this layout that carry an "id"
    # (e.g. the demo world's) keep it, and any "group" label rides along in meta.
    item_id = str(obj["id"]) if obj.get("id") not in (None, "") else f"{idx:05d}"
    meta = {"meta_info": obj.get("meta_info"), **_raw(obj.get("question"), options)}
    if "group" in obj:
      meta["group"] = obj["group"]
    yield Raw(line=line, id=item_id, question=obj.get("question"), options=options,
              gold=gold, source=source, meta=meta,
              fields={"gold": "answer_idx", "options": "options", "question": "question"})


# ------------------------------------------------------------------------------------------------
# PubMedQA PQA-L: {PMID: {"QUESTION", "CONTEXTS": [...], "final_decision": yes/no/maybe, ...}}

PUBMEDQA_OPTIONS = (("A", "yes"), ("B", "no"), ("C", "maybe"))


def read_pubmedqa(path: str, issues: Issues, *, source: str = "pubmedqa", split: str = "all",
                  test_ids_path: str | None = None, with_context: bool = False) -> Iterator[Raw]:
  """PQA-L; split="test" keeps the 500 ids of `test_ground_truth.json` (default: next to path)."""
  doc = _JsonFile(path, issues)
  if not isinstance(doc.data, dict):
    raise ValueError(f"{path}:1: field '<json>': expected an object keyed by PMID")
  for pmid in sorted(set(doc.dups) & set(doc.data)):
    issues.error(doc.line_of(pmid), "PMID", "duplicate_id", f"duplicate PMID {pmid!r}")
  truth = None
  if split == "test":
    test_ids_path = test_ids_path or os.path.join(os.path.dirname(path), "test_ground_truth.json")
    truth = _JsonFile(test_ids_path, issues).data
    missing = [k for k in truth if k not in doc.data]
    if missing:
      raise ValueError(f"{test_ids_path}:1: field 'PMID': {len(missing)} test ids not in {path}, "
                       f"e.g. {missing[0]!r}")
  elif split != "all":
    raise ValueError(f"split must be 'all' or 'test', got {split!r}")
  letter_of = {text: letter for letter, text in PUBMEDQA_OPTIONS}
  for pmid, rec in doc.data.items():
    if truth is not None and pmid not in truth:
      continue
    line = doc.line_of(pmid)
    if not isinstance(rec, dict):
      issues.error(line, pmid, "bad_row", "expected an object")
      continue
    decision = _strip(rec.get("final_decision"))
    if truth is not None and truth[pmid] != decision:
      issues.error(line, "final_decision", "gold_mismatch",
                   f"{decision!r} disagrees with test ground truth {truth[pmid]!r}")
      continue
    contexts = rec.get("CONTEXTS")
    context = None
    if with_context:
      if isinstance(contexts, list) and all(isinstance(c, str) for c in contexts):
        context = "\n".join(c.strip() for c in contexts)
      else:
        issues.error(line, "CONTEXTS", "no_context", "expected a list of strings")
        continue
    yield Raw(line=line, id=str(pmid), question=rec.get("QUESTION"),
              options=list(PUBMEDQA_OPTIONS),
              gold=letter_of.get(str(decision).lower(), decision), source=source,
              context=context,
              meta={"year": rec.get("YEAR"), **_raw(rec.get("QUESTION"), PUBMEDQA_OPTIONS)},
              fields={"gold": "final_decision", "question": "QUESTION", "id": "PMID"})


# ------------------------------------------------------------------------------------------------
# MMLU: headerless CSV `question,A,B,C,D,answer`, one file per subject (`<subject>_test.csv`).


def mmlu_subject(path: str) -> str | None:
  m = re.match(r"(.+?)_(test|dev|val)\.csv$", os.path.basename(path))
  return m.group(1) if m else None


def read_mmlu(path: str, issues: Issues, *, source: str | None = None,
              subject: str | None = None) -> Iterator[Raw]:
  subject = subject or mmlu_subject(path) or "unknown"
  source = source or f"mmlu_{subject}"
  with io.StringIO(records.read_text(path, field="<csv>"), newline="") as f:  # BOM, UTF-8
    reader = csv.reader(f)
    idx, end = 0, 0
    while True:
      start = end + 1  # a record may span several lines (newlines inside quoted fields)
      try:
        row = next(reader)
      except StopIteration:
        break
      except csv.Error as e:
        raise ValueError(f"{path}:{start}: field '<csv>': {e}") from None
      end = reader.line_num
      if not row or all(not c.strip() for c in row):
        continue
      if len(row) != 6:
        issues.error(start, "<row>", "bad_row",
                     f"expected 6 columns (question, A, B, C, D, answer), got {len(row)}")
        idx += 1
        continue
      yield Raw(line=start, id=f"{idx:05d}", question=row[0],
                options=list(zip("ABCD", row[1:5])), gold=row[5].strip().upper(),
                source=source, meta={"subject": subject,
                                     **_raw(row[0], list(zip("ABCD", row[1:5])))},
                fields={"gold": "answer (column 6)", "question": "question (column 1)",
                        "options": "A-D (columns 2-5)"})
      idx += 1


# ------------------------------------------------------------------------------------------------
# MMLU-Pro: {"question_id", "question", "options": [3-10], "answer": letter, "answer_index", ...}


def read_mmlu_pro(path: str, issues: Issues, *, source: str | None = None,
                  category: str | None = None) -> Iterator[Raw]:
  for line, idx, obj in _iter_jsonl(path, issues):
    cat = obj.get("category")
    if category is not None and cat is not None and str(cat).lower() != category:
      issues.filtered += 1
      continue
    opts = obj.get("options")
    if not isinstance(opts, list):
      issues.error(line, "options", "no_options", "missing or not a list")
      continue
    if len(opts) > len(LETTERS):
      issues.error(line, "options", "bad_options", f"{len(opts)} options, at most 26")
      continue
    gold = _strip(obj.get("answer"))
    ai = obj.get("answer_index")
    if isinstance(ai, int) and isinstance(gold, str) and 0 <= ai < len(LETTERS):
      if LETTERS[ai] != gold.upper():
        issues.error(line, "answer_index", "gold_mismatch",
                     f"answer_index {ai} ({LETTERS[ai]}) disagrees with answer {gold!r}")
        continue
    qid = obj.get("question_id")
    yield Raw(line=line, id=str(qid) if qid is not None else f"{idx:05d}",
              question=obj.get("question"), options=list(zip(LETTERS, opts)), gold=gold,
              source=source or f"mmlu_pro_{str(cat).lower()}",
              meta={"category": cat, "src": obj.get("src"),
                    **_raw(obj.get("question"), list(zip(LETTERS, opts)))},
              fields={"gold": "answer", "options": "options", "question": "question",
                      "id": "question_id"})


# ------------------------------------------------------------------------------------------------
# MedBullets: pandas column dict {"question": {"0": ...}, "opa": {...}, ..., "answer_idx": {...}}


def read_medbullets(path: str, issues: Issues, *, source: str = "medbullets") -> Iterator[Raw]:
  doc = _JsonFile(path, issues)
  cols = doc.data
  if not isinstance(cols, dict) or not isinstance(cols.get("question"), dict):
    raise ValueError(f"{path}:1: field 'question': expected a pandas column dict "
                     '{"question": {"0": ...}, "opa": {...}, ...}')
  for row in sorted(set(doc.dups) & set(cols["question"])):
    issues.error(doc.line_of(row, after="question"), "question", "duplicate_id",
                 f"duplicate row {row!r}")
  op_cols = []
  for letter in LETTERS:
    if f"op{letter.lower()}" not in cols:
      break
    op_cols.append((letter, f"op{letter.lower()}"))
  rows = sorted(cols["question"], key=lambda k: (0, int(k), "") if k.isdigit() else (1, 0, k))
  for row in rows:
    missing = [c for c in ["answer_idx"] + [c for _, c in op_cols] if row not in cols.get(c, {})]
    if missing:
      issues.error(doc.line_of(row, after="question"), missing[0], "missing_field",
                   f"row {row!r} has no {missing[0]!r} value")
      continue
    options = [(letter, cols[c][row]) for letter, c in op_cols]
    gold = _strip(cols["answer_idx"][row])
    answer = cols.get("answer", {}).get(row)
    if isinstance(gold, str) and isinstance(answer, str) and gold in dict(options):
      if str(dict(options)[gold]).strip() != answer.strip():
        issues.warnings["answer_text_mismatch"] += 1
    yield Raw(line=doc.line_of(row, after="question"),
              id=f"{int(row):05d}" if row.isdigit() else row, question=cols["question"][row],
              options=options, gold=gold, source=source,
              meta={"link": cols.get("link", {}).get(row),
                    **_raw(cols["question"][row], options)},
              fields={"gold": "answer_idx", "question": "question", "options": "opa.."})


# ------------------------------------------------------------------------------------------------
# CareQA: {"exam_id", "question", "op1".."op4", "cop": 1-4 (maybe 3.0), "year", "category", ...}


def _int_like(v: Any) -> int | None:
  if isinstance(v, bool):
    return None
  if isinstance(v, int):
    return v
  if isinstance(v, float) and v.is_integer():
    return int(v)
  if isinstance(v, str) and re.fullmatch(r"\s*\d+(\.0*)?\s*", v):
    return int(float(v))
  return None


def read_careqa(path: str, issues: Issues, *, source: str = "careqa") -> Iterator[Raw]:
  """All-empty rows (the full file has 2) are dropped and counted, never raised."""
  for line, idx, obj in _iter_jsonl(path, issues):
    op_keys = sorted((k for k in obj if re.fullmatch(r"op\d+", k)), key=lambda k: int(k[2:]))
    if _blank(obj.get("question")) and all(_blank(obj.get(k)) for k in op_keys):
      issues.dropped["empty_row"] += 1
      continue
    if [int(k[2:]) for k in op_keys] != list(range(1, len(op_keys) + 1)):
      issues.error(line, "op1..", "no_options", f"option fields {op_keys} are not op1..opN")
      continue
    cop = _int_like(obj.get("cop"))
    if cop is None:
      issues.error(line, "cop", "bad_gold", f"expected an option number, got {obj.get('cop')!r}")
      continue
    if not 1 <= cop <= len(op_keys):
      issues.error(line, "cop", "gold_not_in_options",
                   f"cop {obj.get('cop')!r} is not among the options 1-{len(op_keys)}")
      continue
    uid = obj.get("unique_id")
    options = [(LETTERS[i], obj[k]) for i, k in enumerate(op_keys)]
    meta = {"category": obj.get("category"), **_raw(obj.get("question"), options)}
    for k in ("exam_id", "year"):
      meta[k] = obj.get(k) if _int_like(obj.get(k)) is None else _int_like(obj.get(k))
    yield Raw(line=line, id=str(uid) if not _blank(uid) else f"{idx:05d}",
              question=obj.get("question"),
              options=options, gold=LETTERS[cop - 1], source=source,
              meta=meta, fields={"gold": "cop", "question": "question", "options": "op1..",
                                 "id": "unique_id"})


# ------------------------------------------------------------------------------------------------
# Citrus unified JSONL (also JMED): {"exam_name", "id", "Q", "A", "C", "OP": [{op_idx, op_value,
# op_text}]}; op_idx is the letter, op_value the option text, op_text the display form "A. text".

_DISPLAY_PREFIX = re.compile(r"^\s*[A-Z]\s*[.:)、．]\s*")


def canonical_name(exam_name: str) -> str:
  return re.sub(r"[^a-z0-9]+", "_", exam_name.strip().lower()).strip("_")


def _context_of(c: Any) -> str | None:
  if isinstance(c, str):
    return c.strip() or None
  if isinstance(c, dict) and isinstance(c.get("CONTEXTS"), list):
    return "\n".join(str(x).strip() for x in c["CONTEXTS"])
  return None


def read_unified(path: str, issues: Issues, *, source: str | None = None,
                 language: str | None = None, with_context: bool = False) -> Iterator[Raw]:
  """Unified JSONL; a `.xlsx` path is JMED's released spreadsheet (read_jmed_xlsx)."""
  if path.lower().endswith(".xlsx"):
    yield from read_jmed_xlsx(path, issues, source=source or "jmed",
                              language=language or "zh", with_context=with_context)
    return
  for line, idx, obj in _iter_jsonl(path, issues):
    ops = obj.get("OP")
    if not isinstance(ops, list) or not all(isinstance(o, dict) for o in ops):
      issues.error(line, "OP", "no_options", "missing or not a list of {op_idx, op_value, op_text}")
      continue
    options = []
    for o in ops:
      text = o.get("op_value")
      if text is None and isinstance(o.get("op_text"), str):
        text = _DISPLAY_PREFIX.sub("", o["op_text"], count=1)
      options.append((str(o.get("op_idx", "")).strip().upper(), text))
    options.sort(key=lambda kv: (len(kv[0]), kv[0]))
    exam = str(obj.get("exam_name") or "")
    q = obj.get("Q")
    lang = language or ("zh" if isinstance(q, str) and is_chinese(q) else "en")
    context = _context_of(obj.get("C")) if with_context else None
    yield Raw(line=line, id=str(obj["id"]) if obj.get("id") is not None else f"{idx:05d}",
              question=q, options=options, gold=_strip(obj.get("A")),
              source=source or canonical_name(exam) or "unified", language=lang,
              context=context, meta={"exam_name": exam, **_raw(q, options)},
              fields={"gold": "A", "question": "Q", "options": "OP", "id": "id"})
