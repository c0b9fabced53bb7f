"""JMED's released .xlsx spreadsheet as benchmark rows (readers.read_unified reads `.xlsx` here).

jdh-algo/JMED, 20250122_sample_multiple_choice_1094_*.xlsx: one row per item with columns diagId,
patient_age, patient_sex, final_question, final_options (a Python dict literal letter -> text),
final_correct_answer (a list literal of letters) and optionally glm_search_result. The question
and options are rebuilt exactly as the reference converter (Citrus
src/apps/data_preprocess/unify_format/unify_jmed.py) builds them, so items equal those of its
unified JSONL; line numbers are sheet rows (1 = the header).
"""
from __future__ import annotations

import ast
from typing import Any, Iterator

from citrus_jax.eval.reader_base import Issues, Raw, _blank, _raw


JMED_COLUMNS = ("diagId", "patient_age", "patient_sex", "final_question", "final_options",
                "final_correct_answer")
JMED_QUESTION = ("\n患者年龄：{}\n患者性别：{}\n患者病情摘要：{}\n\n"
                 "根据上述患者的情况，请问最有可能的诊断是什么？\n")


def _openpyxl(path: str) -> Any:
  try:  # an optional dependency: only .xlsx input needs it
    import openpyxl  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(f"{path}: reading a .xlsx spreadsheet needs openpyxl, an optional "
                      "dependency: pip install 'citrus_jax[xlsx]' (or pip install openpyxl)"
                      ) from None
  return openpyxl


def _cell_text(v: Any) -> str:
  """A cell as pandas' str.format shows it: integral numbers without '.0'."""
  if isinstance(v, float) and v.is_integer():
    return str(int(v))
  return str(v)


def _literal(text: Any, kind: type, what: str) -> Any:
  if isinstance(text, kind):
    return text
  if not isinstance(text, str):
    raise ValueError(f"expected {what} as text, got {type(text).__name__}")
  try:
    value = ast.literal_eval(text.strip())  # the reference used eval(); literals only here
  except (ValueError, SyntaxError) as e:
    raise ValueError(f"not a {what} literal ({type(e).__name__}: {text[:60]!r})") from None
  if not isinstance(value, kind):
    raise ValueError(f"expected {what}, got {type(value).__name__} ({text[:60]!r})")
  return value


def read_jmed_xlsx(path: str, issues: Issues, *, source: str = "jmed", language: str = "zh",
                   with_context: bool = False) -> Iterator[Raw]:
  """JMED items from the released .xlsx (first sheet); options rebuilt from final_options."""
  openpyxl = _openpyxl(path)
  try:
    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
  except Exception as e:  # zipfile.BadZipFile, KeyError, InvalidFileException
    raise ValueError(f"{path}: not a readable .xlsx workbook ({type(e).__name__}: {e})") from None
  try:
    rows = wb.worksheets[0].iter_rows(values_only=True)
    header = next(rows, None)
    if header is None:
      raise ValueError(f"{path}:1: field '<header>': the first sheet is empty")
    names = [str(h).strip() if h is not None else "" for h in header]
    missing = [c for c in JMED_COLUMNS if c not in names]
    if missing:
      raise ValueError(f"{path}:1: field {missing[0]!r}: missing column (JMED needs "
                       f"{', '.join(JMED_COLUMNS)}; the header has {names[:12]})")
    col = {n: i for i, n in reversed(list(enumerate(names))) if n}
    for row_no, values in enumerate(rows, start=2):
      get = lambda c: values[col[c]] if col.get(c) is not None and col[c] < len(values) else None
      if all(_blank(v) for v in values):
        issues.dropped["empty_row"] += 1
        continue
      try:
        field = "diagId"
        diag = get("diagId")
        diag_id = int(float(diag)) if not isinstance(diag, int) else diag
        field = "final_options"
        ops = _literal(get("final_options"), dict, "dict of letter -> option text")
        field = "final_correct_answer"
        gold = _literal(get("final_correct_answer"), list, "list of letters")
      except (TypeError, ValueError) as e:
        issues.error(row_no, field, "bad_field", str(e))
        continue
      if len(gold) != 1:
        issues.error(row_no, "final_correct_answer", "multi_answer",
                     f"{len(gold)} correct answers {gold!r}; a single-answer MCQ needs one")
        continue
      options = [(k, ops[k]) for k in "ABCDEF" if k in ops]
      extra = sorted(set(map(str, ops)) - set("ABCDEF"))
      if extra:
        issues.error(row_no, "final_options", "bad_options",
                     f"option keys {extra} are not letters A-F (the reference reads A-F only)")
        continue
      question = JMED_QUESTION.format(*(_cell_text(get(c)) for c in
                                        ("patient_age", "patient_sex", "final_question")))
      if _blank(get("final_question")):
        issues.error(row_no, "final_question", "empty_question", "missing or empty")
        continue
      context = get("glm_search_result") if with_context else None
      yield Raw(line=row_no, id=f"{diag_id}-{row_no - 2}-diagnose-option", question=question,
                options=options, gold=str(gold[0]), source=source, language=language,
                context=context if isinstance(context, str) else None,
                meta={"diagId": diag_id, **_raw(question, options)},
                fields={"gold": "final_correct_answer", "question": "final_question",
                        "options": "final_options", "id": "diagId"})
  finally:
    wb.close()
