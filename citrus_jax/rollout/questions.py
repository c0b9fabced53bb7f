"""Questions for rejection sampling (rollout/rejection.py): records -> `Question`, prompt styles.

A record is a MedQA-layout item (question, options, answer_idx and/or answer), a clinic world
rl_question, or an open question with its answer text; bad records raise a `QuestionError`
naming file:line and field.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import re
import unicodedata
from typing import Any, Callable, Sequence

from citrus_jax.data import records
from citrus_jax.eval import benchmarks, extract, prompts, readers

Messages = list[dict[str, str]]


def fold_text(text: str) -> str:
  """Case, punctuation and spacing folded: what "names the same answer" compares."""
  text = unicodedata.normalize("NFKC", text).lower()
  return " ".join(re.sub(r"[^\w]+|_", " ", text).split())


class QuestionError(records.RecordError):
  """A question record that cannot be used; the message names file:line and field."""


# ------------------------------------------------------------------------------------------------
# Questions


@dataclasses.dataclass(frozen=True)
class Question:
  """A training question; `options` may be empty (open answer, checked against gold_text)."""

  id: str
  question: str
  options: dict[str, str]
  gold: str | None  # gold letter when there are options
  gold_text: str
  context: str | None = None
  input: str | None = None  # the record's own user prompt (e.g. the SFT-3 `input`), if any

  @property
  def text(self) -> str:
    """The question as shown to the model: context and question, never the options."""
    return prompts.format_question(self, with_options=False)


def _options(value: Any, where: str) -> dict[str, str]:
  if value is None:
    return {}
  if isinstance(value, list):
    value = {chr(ord("A") + i): v for i, v in enumerate(value)}
  if not isinstance(value, dict):
    raise QuestionError(f"{where}: field 'options' must be a dict letter -> text or a list")
  out = {}
  for k, v in value.items():
    if not (isinstance(k, str) and re.fullmatch(r"[A-Z]", k.strip()) and isinstance(v, str)
            and v.strip()):
      raise QuestionError(f"{where}: field 'options': entry {k!r}: {v!r} must map a letter A-Z "
                          "to non-empty text")
    out[k.strip()] = v.strip()
  return out


def question_from_record(record: Any, where: str = "", default_id: str = "") -> Question:
  """A Question from a JSON record (MedQA layout, the clinic world's rl_questions, or open
  question + answer text), an `MCQItem`, or a Question."""
  if isinstance(record, Question):
    return record
  if hasattr(record, "options") and hasattr(record, "gold") and hasattr(record, "question"):
    return Question(str(record.id), record.question, dict(record.options), record.gold,
                    record.options[record.gold], getattr(record, "context", None))
  if not isinstance(record, dict):
    raise QuestionError(f"{where}: expected a JSON object, got {type(record).__name__}")
  question = record.get("question")
  if not isinstance(question, str) or not question.strip():
    raise QuestionError(f"{where}: field 'question' must be a non-empty string")
  options = _options(record.get("options"), where)
  letter, answer = record.get("answer_idx"), record.get("answer")
  for field, value in (("answer_idx", letter), ("answer", answer)):
    if value is not None and (not isinstance(value, str) or not value.strip()):
      raise QuestionError(f"{where}: field {field!r} must be a non-empty string")
  if letter is None and answer is None:
    raise QuestionError(f"{where}: needs the gold as field 'answer_idx' (letter) and/or "
                        "'answer' (text)")
  if letter is not None:
    letter = letter.strip()
    if letter not in options:
      raise QuestionError(f"{where}: field 'answer_idx' {letter!r} is not among the options "
                          f"{sorted(options)}")
    if answer is not None and fold_text(answer) != fold_text(options[letter]) and \
        extract.map_to_option(answer, options) not in (letter, None):
      raise QuestionError(f"{where}: field 'answer' {answer!r} names another option than "
                          f"answer_idx {letter!r} ({options[letter]!r})")
  elif options:
    exact = [k for k, v in options.items() if fold_text(v) == fold_text(answer)]
    letter = exact[0] if len(exact) == 1 else extract.map_to_option(answer, options)
    if letter is None:
      raise QuestionError(f"{where}: field 'answer' {answer!r} matches none of the options")
  gold_text = options[letter] if letter is not None else answer.strip()
  context = record.get("context") if isinstance(record.get("context"), str) else None
  user_input = record.get("input") if isinstance(record.get("input"), str) else None
  return Question(str(record.get("id", default_id)), question.strip(), options, letter,
                  gold_text, context or None, user_input or None)


def load_questions(path: str | Sequence[str], limit: int = 0) -> list[Question]:
  """Questions of .jsonl files (blank lines skipped) or .json lists (a comma list is several);
  errors name file:line (data/records), and a file without records is one."""
  files = records.split_paths(path)
  if not files:
    raise QuestionError(f"no question files in {path!r}")
  found: list[tuple[str, Any]] = []
  for f in files:
    if _is_other_bank(f):  # an MCQ bank in a benchmark layout: its MCQItems, as they are
      found += [(f"{f}:[{i}]", item) for i, item in enumerate(benchmarks.load_bank(f))]
    else:
      found += records.read_records(f, error=QuestionError)
  if limit > 0:
    found = found[:limit]
  out = [question_from_record(r, where, f"q{i}") for i, (where, r) in enumerate(found)]
  _check_unique(out, ",".join(files))
  return out


def _is_other_bank(path: str) -> bool:
  """A benchmark file in a layout the record path does not read: not MedQA or unified JSONL
  (read as records, so a Q_open field is kept)."""
  if path.lower().endswith((".csv", ".xlsx")):
    return True
  try:
    name = benchmarks.detect_benchmark(path)
  except (OSError, ValueError):
    return False  # unreadable here: the record reader names the file and line
  return name is not None and name not in ("medqa", "unified", "jmed")


def _check_unique(questions: Sequence[Question], where: str) -> None:
  seen = collections.Counter(q.id for q in questions)
  dup = [k for k, n in seen.items() if n > 1]
  if dup:
    raise QuestionError(f"{where}: duplicate question ids {dup[:5]}")


def as_questions(questions: Any) -> list[Question]:
  """A path, or records / MCQItems / Questions -> Questions."""
  if isinstance(questions, (str, os.PathLike)):
    return load_questions(os.fspath(questions))
  out = [question_from_record(r, f"questions[{i}]", f"q{i}") for i, r in enumerate(questions)]
  _check_unique(out, "questions")
  return out


def open_prompt(q: Question) -> Messages:
  """The Citrus open-question prompt (no options, no system persona) -- the default."""
  return prompts.open_question_messages(q.text)


def open_prompt_with_system(q: Question) -> Messages:
  return prompts.open_question_messages(q.text, system=True)


def input_prompt(q: Question) -> Messages:
  """The record's own `input` (the exact prompt its SFT data used), else the open prompt."""
  return [{"role": "user", "content": q.input}] if q.input else open_prompt(q)


PROMPT_STYLES: dict[str, Callable[[Question], Messages]] = {
    "open": open_prompt, "open_system": open_prompt_with_system, "input": input_prompt}
