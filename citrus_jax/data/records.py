"""The one reader of JSONL / JSON record files, with the one bad-input policy every reader uses.

Why one: the benchmark, CPT/SFT, preference, synthesis and rejection readers each had their own
copy, and they disagreed (a BOM accepted by some, invalid UTF-8 a bare UnicodeDecodeError without
file or line in others, `str.splitlines` splitting records at U+2028 inside strings, an empty
file read as zero items and a success).

The rules, for every file:
  * JSONL is split on b"\\n" only (a trailing "\\r" is dropped), each line decoded as strict
    UTF-8; a UTF-8 BOM is accepted; blank lines are not records.
  * A bad line (invalid UTF-8, invalid JSON, not an object, a required field missing) is a
    `RecordError` "file:line: field 'name': why". With on_error="skip" it is counted in a
    `Skips` by reason (bad_utf8, bad_json, not_object, missing_field) instead, and the caller
    reports the counts.
  * A file without a single record (empty, blank, or every line skipped) is always an error
    naming the file: zero items is never a success.
  * Path arguments take comma-separated lists (`split_paths`).
"""
from __future__ import annotations

import collections
import json
import os
from typing import Any, Iterator, NamedTuple, Sequence

from absl import logging
from etils import epath

BOM = b"\xef\xbb\xbf"
RECORD = "<json>"  # the field named when the whole line is the problem
ON_ERROR = ("raise", "skip")


class RecordError(ValueError):
  """Bad input; the message names file:line and field, and the attributes say the same."""

  def __init__(self, message: str, *, path: str | None = None, line: int | str | None = None,
               field: str | None = None, reason: str = "bad_record"):
    super().__init__(message)
    self.path, self.line, self.field, self.reason = path, line, field, reason

  @classmethod
  def at(cls, path: str, line: int | str | None, field: str | None, why: str,
         reason: str = "bad_record") -> "RecordError":
    """An error whose message is `file:line: field 'name': why` (parts left out when None)."""
    return cls(locate(path, line, field, why), path=path, line=line, field=field, reason=reason)

  @property
  def where(self) -> str:
    return where(self.path, self.line)


def where(path: Any, line: int | str | None) -> str:
  return f"{path}" if line is None else f"{path}:{line}"


def locate(path: Any, line: int | str | None, field: str | None, why: str) -> str:
  head = where(path, line)
  return f"{head}: field '{field}': {why}" if field else f"{head}: {why}"


class Skips:
  """Skipped records per reason, where each reason first occurred, and the first messages."""

  noun = "records"
  max_messages = 20

  def __init__(self):
    self.counts: collections.Counter[str] = collections.Counter()
    self.first: dict[str, str] = {}
    self.messages: list[str] = []
    self.blank_lines = 0

  def add(self, reason: str, where_: str, message: str | None = None) -> None:
    self.counts[reason] += 1
    self.first.setdefault(reason, where_)
    if message is not None and len(self.messages) < self.max_messages:
      self.messages.append(message)

  def count(self, err: RecordError) -> None:
    self.add(err.reason, err.where, str(err))

  def blank_line(self, where_: str) -> None:
    """A blank JSONL line: not a record and not an error (a subclass may count it as a skip)."""
    del where_
    self.blank_lines += 1

  def total(self) -> int:
    return sum(self.counts.values())

  def as_dict(self) -> dict[str, int]:
    return dict(self.counts)

  def __str__(self) -> str:
    if not self.counts:
      return f"no {self.noun} skipped"
    parts = [f"{r}={n} (first at {self.first[r]})" for r, n in sorted(self.counts.items())]
    return f"skipped {self.total()} {self.noun}: " + ", ".join(parts)

  def log(self, what: str = "data") -> None:
    if self.counts:
      logging.warning("%s: %s", what, self)


def check_on_error(on_error: str) -> None:
  if on_error not in ON_ERROR:
    raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def handle(err: RecordError, on_error: str, skips: Skips | None) -> None:
  """The policy: raise `err` (on_error="raise"), or count it by its reason in `skips`."""
  if on_error == "raise":
    raise err
  if skips is not None:
    skips.count(err)


def split_paths(paths: Any) -> list[str]:
  """"a.jsonl,b.jsonl", a list or tuple of paths (each may be a comma list), or None -> paths."""
  if paths is None:
    return []
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  out: list[str] = []
  for p in paths:
    out.extend(s.strip() for s in os.fspath(p).split(",") if s.strip())
  return out


# ------------------------------------------------------------------------------------------------
# Lines and whole documents.


def _open(path: str):
  return epath.Path(path).open("rb")


def _raw_lines(path: str) -> Iterator[tuple[int, int, bytes]]:
  offset = 0
  with _open(path) as f:
    for lineno, raw in enumerate(f, 1):  # binary files split on b"\n" only
      yield lineno, offset, raw
      offset += len(raw)


def iter_lines(path: str) -> Iterator[tuple[int, int, bytes]]:
  """(1-based line, byte offset, bytes without "\\n" / "\\r\\n") of every line; streams."""
  for lineno, start, raw in _raw_lines(path):
    body = raw[:-1] if raw.endswith(b"\n") else raw
    yield lineno, start, body[:-1] if body.endswith(b"\r") else body


def _is_blank(body: bytes) -> bool:
  return not body.removeprefix(BOM).strip()


def _utf8_error(e: UnicodeDecodeError, data: bytes) -> str:
  return f"invalid UTF-8 (byte 0x{data[e.start]:02x} at byte {e.start + 1})"


def parse_line(body: bytes, path: str, line: int, required: Sequence[str] = (),
               error: type[RecordError] = RecordError) -> dict[str, Any]:
  """One JSONL line -> its object; raises `error` naming file:line, field and a skip reason."""
  body = body.removeprefix(BOM)
  try:
    text = body.decode("utf-8")
  except UnicodeDecodeError as e:
    raise error.at(path, line, RECORD, _utf8_error(e, body), "bad_utf8") from None
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
    raise error.at(path, line, RECORD, f"invalid JSON: {e.msg} (column {e.colno})",
                   "bad_json") from None
  return check_record(obj, path, line, required, error)


def check_record(obj: Any, path: str, line: int | str, required: Sequence[str] = (),
                 error: type[RecordError] = RecordError) -> dict[str, Any]:
  if not isinstance(obj, dict):
    raise error.at(path, line, RECORD, f"expected a JSON object, got {type(obj).__name__}",
                   "not_object")
  for field in required:
    if field not in obj:
      raise error.at(path, line, field, f"missing (the record has {sorted(obj)[:8]})",
                     "missing_field")
  return obj


def read_text(path: str, error: type[RecordError] = RecordError, field: str = RECORD) -> str:
  """A whole file as text (BOM dropped); invalid UTF-8 is an error naming file:line."""
  with _open(path) as f:
    data = f.read().removeprefix(BOM)
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    start = data.rfind(b"\n", 0, e.start) + 1
    raise error.at(path, line, field, _utf8_error(e, data).replace(
        f"at byte {e.start + 1}", f"at byte {e.start - start + 1}"), "bad_utf8") from None


def parse_json(text: str, path: str, error: type[RecordError] = RecordError, **kw: Any) -> Any:
  try:
    return json.loads(text, **kw)
  except json.JSONDecodeError as e:
    raise error.at(path, e.lineno, RECORD, f"invalid JSON: {e.msg} (column {e.colno})",
                   "bad_json") from None


def load_json(path: str, error: type[RecordError] = RecordError, **kw: Any) -> Any:
  """A whole-file JSON document; errors name file:line."""
  return parse_json(read_text(path, error), path, error, **kw)


def is_json_array(path: str) -> bool:
  """A .json file whose first non-space byte is "[" (else it is read as JSONL)."""
  if not os.fspath(path).endswith(".json"):
    return False
  with _open(path) as f:
    head = f.read(4096).removeprefix(BOM).lstrip(b" \t\r\n")
  return head.startswith(b"[")


# ------------------------------------------------------------------------------------------------
# Records.


class Row(NamedTuple):
  line: int  # 1-based
  record: dict[str, Any]
  start: int  # byte offset of the line
  length: int  # bytes of the line without its newline
  index: int  # 0-based count of non-blank lines before it (bad ones included): a stable row id
  body: bytes  # the line as read, without its newline (for writing it back unchanged)


def _no_records(path: str, skipped: collections.Counter, error: type[RecordError]) -> RecordError:
  if skipped:
    why = (f"no records: all {sum(skipped.values())} skipped ("
           + ", ".join(f"{r}={n}" for r, n in sorted(skipped.items())) + ")")
  else:
    why = "no records (the file is empty)"
  return error.at(path, None, None, why, "empty_file")


def scan_jsonl(path: str, *, on_error: str = "raise", skips: Skips | None = None,
               required: Sequence[str] = (), error: type[RecordError] = RecordError,
               allow_empty: bool = False) -> Iterator[Row]:
  """Every record of a JSONL file with its place; see the module doc for the rules."""
  check_on_error(on_error)
  path = os.fspath(path)
  skips = Skips() if skips is None else skips
  skipped: collections.Counter[str] = collections.Counter()
  n = index = 0
  for line, start, body in iter_lines(path):
    if _is_blank(body):
      skips.blank_line(where(path, line))
      continue
    index += 1
    try:
      obj = parse_line(body, path, line, required, error)
    except RecordError as e:
      handle(e, on_error, skips)
      skipped[e.reason] += 1
      continue
    n += 1
    yield Row(line, obj, start, len(body), index - 1, body)
  if not n and not allow_empty:
    raise _no_records(path, skipped, error)


def read_jsonl(path: str, **kw: Any) -> Iterator[tuple[int, dict[str, Any]]]:
  """(line, record) of every record of a JSONL file; keywords as `scan_jsonl`."""
  for row in scan_jsonl(path, **kw):
    yield row.line, row.record


def read_json_array(path: str, *, on_error: str = "raise", skips: Skips | None = None,
                    required: Sequence[str] = (), error: type[RecordError] = RecordError,
                    allow_empty: bool = False, objects: bool = True
                    ) -> Iterator[tuple[int, Any]]:
  """(0-based index, record) of a JSON array file (errors say `file:[i]`); `objects=False`
  leaves the elements unchecked."""
  check_on_error(on_error)
  path = os.fspath(path)
  data = load_json(path, error)
  if not isinstance(data, list):
    raise error.at(path, None, None, f"expected a JSON array of records, got "
                   f"{type(data).__name__}", "not_array")
  skipped: collections.Counter[str] = collections.Counter()
  n = 0
  for i, obj in enumerate(data):
    if objects:
      try:
        check_record(obj, path, f"[{i}]", required, error)
      except RecordError as e:
        handle(e, on_error, skips)
        skipped[e.reason] += 1
        continue
    n += 1
    yield i, obj
  if not n and not allow_empty:
    raise _no_records(path, skipped, error)


def read_records(path: str, **kw: Any) -> Iterator[tuple[str, Any]]:
  """(where, record) of a JSON array file (where = "file:[i]") or a JSONL file ("file:line")."""
  path = os.fspath(path)
  if is_json_array(path):
    for i, obj in read_json_array(path, **kw):
      yield f"{path}:[{i}]", obj
  else:
    for line, obj in read_jsonl(path, **kw):
      yield f"{path}:{line}", obj


def first_record(path: str) -> dict[str, Any] | None:
  """The first record of a JSONL or JSON array file, or None when it does not start with one
  (for sniffing a file's format; reads one line of a JSONL file)."""
  try:
    if is_json_array(path):
      data = load_json(path)
      return data[0] if data and isinstance(data[0], dict) else None
    for line, _, body in iter_lines(path):
      if not _is_blank(body):
        return parse_line(body, path, line)
  except RecordError:
    return None
  return None


def read_log(path: str, *, required: Sequence[str] = (),
             error: type[RecordError] = RecordError) -> list[dict[str, Any]]:
  """Records of an append-only JSONL file (a cache, a provenance log) that a killed writer may
  have left with a torn last line: a last line without its newline is cut off the file (and
  logged); any other bad line is an error naming file:line. A missing file has no records."""
  if not os.path.exists(path):
    return []
  records, good = [], 0
  size = os.path.getsize(path)
  for line, start, raw in _raw_lines(path):
    if not raw.endswith(b"\n"):  # torn: the writer died before the newline
      break
    good = start + len(raw)
    body = raw.rstrip(b"\r\n")
    if not _is_blank(body):
      records.append(parse_line(body, path, line, required, error))
  if good < size:
    logging.warning("%s: cutting off a torn last record (%d bytes at byte %d)", path,
                    size - good, good)
    with open(path, "r+b") as f:
      f.truncate(good)
  return records

