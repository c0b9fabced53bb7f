"""What every benchmark reader shares: the `Raw` row, the `Issues` bad-input policy, and small
cell helpers (readers.py and jmed_xlsx.py build on it; benchmarks.py validates `Raw` rows).
"""
from __future__ import annotations

import collections
import dataclasses
import math
import re
from typing import Any

from citrus_jax.data import records

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


class Issues(records.Skips):
  """Bad-input policy of one file: raise (default) or skip and count per reason (the policy of
  every reader, citrus_jax.data.records)."""

  def __init__(self, path: str, on_error: str = "raise"):
    records.check_on_error(on_error)
    super().__init__()
    self.path = path
    self.on_error = on_error
    self.dropped: collections.Counter = collections.Counter()  # dropped by design, never raised
    self.warnings: collections.Counter = collections.Counter()  # kept, but worth reporting
    self.filtered = 0  # rows of another category (e.g. MMLU-Pro file with all categories)

  @property
  def skipped(self) -> collections.Counter:
    return self.counts

  def error(self, line: int | str, field: str, reason: str, msg: str) -> None:
    records.handle(records.RecordError.at(self.path, line, field, msg, reason), self.on_error,
                   self)


@dataclasses.dataclass
class Raw:
  """One parsed row before the common validation; `fields` names the source fields for errors."""

  line: int | str
  id: str
  question: Any
  options: list[tuple[str, Any]]
  gold: Any
  source: str
  language: str = "en"
  context: str | None = None
  meta: dict = dataclasses.field(default_factory=dict)
  fields: dict = dataclasses.field(default_factory=dict)  # question/options/gold/id -> name


def is_chinese(text: str) -> bool:
  """True when at least 10% of the non-space characters are CJK ideographs."""
  chars = [c for c in text if not c.isspace()]
  return bool(chars) and sum(bool(_CJK_RE.match(c)) for c in chars) >= 0.1 * len(chars)


def _blank(v: Any) -> bool:
  if v is None:
    return True
  if isinstance(v, float) and math.isnan(v):
    return True
  return isinstance(v, str) and not v.strip()


def _strip(v: Any) -> Any:
  return v.strip() if isinstance(v, str) else v


def _raw(question: Any, options: Any) -> dict[str, Any]:
  """The question and option texts exactly as the file has them (unstripped), for the prompt
  variant that is byte-identical to the reference evaluation's (eval/prompts.py, "reference")."""
  if not isinstance(question, str):
    return {}
  return {"raw_question": question,
          "raw_options": {str(k): v for k, v in options if isinstance(v, str)}}
