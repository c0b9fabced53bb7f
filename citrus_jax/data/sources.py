"""Text sources: JSONL, plain text, our TFDS builder and HF `datasets`, as random-access records.

Every source is a sequence of records `{"text": str, "path": str, "line": int}` (`line` is 1-based
in files, the row index for HF datasets) with `__len__`/`__getitem__`, which is what grain needs
for a global shuffle, host sharding and exact resume. File sources are indexed once at
construction (byte offset per document), and that scan also validates every document, so bad
input is found and counted before training starts, whatever the number of worker processes.
For very large corpora build a TFDS dataset once (`tfds_text.build_tfds_text`) and read that.

JSONL is read by `citrus_jax.data.records` (its rules: split on "\n" only, BOM accepted, a file
without records is an error). Bad input (invalid JSON or UTF-8, not an object, missing or
non-string field, empty document) raises `DataError` naming file, line and field
(`on_error="raise"`), or is skipped and counted per reason in a `SkipCounter`
(`on_error="skip"`). Blank lines in JSONL are always skipped and counted. Paths may be globs,
lists or comma lists; `gs://` paths go through `etils.epath`.
"""
from __future__ import annotations

import collections
import hashlib
import os
import threading
from typing import Any, Iterator, Protocol, Sequence

import numpy as np
from etils import epath

from citrus_jax.data import records

Record = dict[str, Any]
PathSpec = str | os.PathLike | Sequence[str | os.PathLike]

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")


class DataError(records.RecordError):
  """Bad input data; the message names the file, line and field."""


class Source(Protocol):
  """Random-access text records (what `grain.MapDataset.source` consumes)."""

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> Record: ...


class SkipCounter(records.Skips):
  """Counts skipped documents per reason and remembers where each reason first occurred; blank
  JSONL lines count as skips too (reason "blank_line")."""

  noun = "documents"

  def blank_line(self, where: str) -> None:
    self.add("blank_line", where)


class _Bad(Exception):
  """A per-document problem: a skip reason and a message (without the location)."""

  def __init__(self, reason: str, message: str, pos: int = 0):
    super().__init__(message)
    self.reason, self.pos = reason, pos


_check_on_error = records.check_on_error


def _handle(bad: _Bad, where: str, on_error: str, skips: SkipCounter) -> None:
  if on_error == "raise":
    raise DataError(f"{where}: {bad} (pass on_error='skip' to skip and count such documents)"
                    ) from None
  skips.add(bad.reason, where)


def _decode(data: bytes) -> str:
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise _Bad("bad_utf8", f"invalid UTF-8 byte at offset {e.start}", e.start) from None


def _check_text(text: Any, field: str) -> str:
  if not isinstance(text, str):
    raise _Bad("not_string", f"field {field!r} is {type(text).__name__}, expected a string")
  if not text.strip():
    raise _Bad("empty", f"field {field!r} is an empty document")
  return text


def _jsonl_text(record: dict[str, Any], field: str, path: str, line: int) -> str:
  try:
    return _check_text(record[field], field)
  except _Bad as bad:
    raise DataError(f"{path}:{line}: {bad}", path=path, line=line, field=field,
                    reason=bad.reason) from None


def expand_paths(paths: PathSpec) -> list[str]:
  """Expands comma lists and globs (local or gs://) into a sorted, de-duplicated list; missing
  paths raise."""
  out: list[str] = []
  for p in records.split_paths(paths):
    parts = p.split("/")
    k = next((i for i, s in enumerate(parts) if any(c in s for c in "*?[")), None)
    if k is None:
      if not epath.Path(p).exists():
        raise FileNotFoundError(f"data path does not exist: {p}")
      matches = [p]
    else:
      base = "/".join(parts[:k]) or ("/" if p.startswith("/") else ".")
      matches = sorted(os.fspath(m) for m in epath.Path(base).glob("/".join(parts[k:])))
      if not matches:
        raise FileNotFoundError(f"no files match {p!r}")
    out.extend(m for m in matches if m not in out)
  return out


# ---------------------------------------------------------------------------------------------
# Streaming scans: yield (text, line, byte offset, byte length) for every valid document.


def _scan_jsonl(path: str, field: str, on_error: str, skips: SkipCounter):
  for row in records.scan_jsonl(path, on_error=on_error, skips=skips, required=(field,),
                                error=DataError):
    try:
      text = _jsonl_text(row.record, field, path, row.line)
    except DataError as e:
      records.handle(e, on_error, skips)
      continue
    yield text, row.line, row.start, row.length


def _paragraphs(path: str):
  """(first line, byte start, byte end, raw lines) of each run of non-blank lines."""
  offset, para = 0, None
  with epath.Path(path).open("rb") as f:
    for lineno, raw in enumerate(f, 1):
      pos, offset = offset, offset + len(raw)
      if raw.strip():
        if para is None:
          para = [lineno, pos, 0, []]
        para[2] = pos + len(raw.rstrip(b"\r\n"))
        para[3].append(raw)
      elif para is not None:
        yield para
        para = None
  if para is not None:
    yield para


def _scan_text(path: str, unit: str, on_error: str, skips: SkipCounter):
  if unit == "file":
    data = epath.Path(path).read_bytes()
    chunks = [(1, 0, len(data), [data])]
  elif unit == "paragraph":
    chunks = _paragraphs(path)
  else:
    raise ValueError(f"text unit must be 'file' or 'paragraph', got {unit!r}")
  for first, start, end, raws in chunks:
    data = b"".join(raws)
    try:
      text = _decode(data)
      text = _check_text(text.rstrip("\r\n") if unit == "paragraph" else text, "text")
    except _Bad as bad:
      line = first + data[:bad.pos].count(b"\n")  # the line holding the bad byte
      _handle(bad, f"{path}:{line}", on_error, skips)
      continue
    yield text, first, start, end - start


def _stream(scan, paths: PathSpec, arg: str, on_error: str, skips: SkipCounter | None
            ) -> Iterator[Record]:
  _check_on_error(on_error)
  skips = SkipCounter() if skips is None else skips
  for path in expand_paths(paths):
    for text, line, _, _ in scan(path, arg, on_error, skips):
      yield {"text": text, "path": path, "line": line}


def read_jsonl(paths: PathSpec, *, text_field: str = "text", on_error: str = "raise",
               skips: SkipCounter | None = None) -> Iterator[Record]:
  """Streams `{"text", "path", "line"}` records from JSONL files (no index is built)."""
  return _stream(_scan_jsonl, paths, text_field, on_error, skips)


def read_text(paths: PathSpec, *, unit: str = "file", on_error: str = "raise",
              skips: SkipCounter | None = None) -> Iterator[Record]:
  """Streams records from plain text: one document per file or per blank-line paragraph."""
  return _stream(_scan_text, paths, unit, on_error, skips)


# ---------------------------------------------------------------------------------------------
# Random-access sources.


class _Records:
  """Iteration over a random-access source."""

  def __iter__(self) -> Iterator[Record]:
    for i in range(len(self)):
      yield self[i]


class _IndexedFileSource(_Records):
  """Documents addressed by (file, byte offset, byte length), read on demand (thread-safe)."""

  _MAX_OPEN = 16

  def __init__(self, paths: PathSpec, on_error: str, skips: SkipCounter | None):
    _check_on_error(on_error)
    self.paths = expand_paths(paths)
    self.skips = SkipCounter() if skips is None else skips
    cols: list[list[int]] = [[], [], [], []]
    for file_id, path in enumerate(self.paths):
      for _, line, start, length in self._scan(path, on_error):
        for col, v in zip(cols, (file_id, line, start, length)):
          col.append(v)
    self._file_ids, self._lines, self._starts, self._lengths = (
        np.asarray(c, np.int64) for c in cols)
    self.skips.log(f"{type(self).__name__}({len(self.paths)} files)")
    if not len(self._file_ids):
      raise DataError(f"no valid documents in {self.paths[:5]} ({self.skips})")
    self._handles: collections.OrderedDict = collections.OrderedDict()
    self._lock = threading.Lock()

  def _scan(self, path: str, on_error: str):
    raise NotImplementedError

  def _parse(self, raw: bytes, path: str, line: int) -> str:
    raise NotImplementedError

  def __len__(self) -> int:
    return len(self._file_ids)

  def _read(self, file_id: int, start: int, length: int) -> bytes:
    with self._lock:
      f = self._handles.pop(file_id, None)
      if f is None:
        f = epath.Path(self.paths[file_id]).open("rb")
      self._handles[file_id] = f
      while len(self._handles) > self._MAX_OPEN:
        self._handles.popitem(last=False)[1].close()
      f.seek(start)
      return f.read(length)

  def __getitem__(self, index: int) -> Record:
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} documents")
    file_id, line = int(self._file_ids[index]), int(self._lines[index])
    raw = self._read(file_id, int(self._starts[index]), int(self._lengths[index]))
    path = self.paths[file_id]
    try:
      text = self._parse(raw, path, line)
    except _Bad as bad:  # the file changed since it was indexed
      raise DataError(f"{path}:{line}: {bad} (file changed after indexing?)") from None
    except DataError as e:
      raise DataError(f"{e} (file changed after indexing?)") from None
    return {"text": text, "path": path, "line": line}

  def __getstate__(self):  # open files and locks stay in their process
    state = self.__dict__.copy()
    state["_handles"], state["_lock"] = None, None
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._handles, self._lock = collections.OrderedDict(), threading.Lock()


class JsonlSource(_IndexedFileSource):
  """JSONL files, one document per line in `text_field`."""

  def __init__(self, paths: PathSpec, *, text_field: str = "text", on_error: str = "raise",
               skips: SkipCounter | None = None):
    self.text_field = text_field
    super().__init__(paths, on_error, skips)

  def _scan(self, path, on_error):
    return _scan_jsonl(path, self.text_field, on_error, self.skips)

  def _parse(self, raw, path, line):
    record = records.parse_line(raw, path, line, (self.text_field,), DataError)
    return _jsonl_text(record, self.text_field, path, line)


class TextSource(_IndexedFileSource):
  """Plain text files: one document per file (`unit="file"`) or per blank-line paragraph."""

  def __init__(self, paths: PathSpec, *, unit: str = "file", on_error: str = "raise",
               skips: SkipCounter | None = None):
    if unit not in ("file", "paragraph"):
      raise ValueError(f"text unit must be 'file' or 'paragraph', got {unit!r}")
    self.unit = unit
    super().__init__(paths, on_error, skips)

  def _scan(self, path, on_error):
    return _scan_text(path, self.unit, on_error, self.skips)

  def _parse(self, raw, path, line):
    del path, line
    return _check_text(_decode(raw), "text")


class TfdsTextSource(_Records):
  """A dataset built by `tfds_text.build_tfds_text`, read via `as_data_source` (no TensorFlow)."""

  def __init__(self, builder_or_dir: Any, split: str = "train"):
    import tensorflow_datasets as tfds  # optional: only a TFDS-built source needs it (heavy)

    if isinstance(builder_or_dir, (str, os.PathLike)):
      builder_or_dir = tfds.builder_from_directory(os.fspath(builder_or_dir))
    self.data_dir = str(builder_or_dir.data_dir)
    self._ds = builder_or_dir.as_data_source(split)

  def __len__(self) -> int:
    return len(self._ds)

  def __getitem__(self, index: int) -> Record:
    rec = self._ds[int(index)]
    return {"text": rec["text"].decode("utf-8"), "path": rec["path"].decode("utf-8"),
            "line": int(rec["line"])}


class HfTextSource(_Records):
  """A Hugging Face `datasets.Dataset` (object, or a `save_to_disk` directory); rows validated."""

  def __init__(self, dataset: Any, *, split: str | None = None, text_field: str = "text",
               on_error: str = "raise", skips: SkipCounter | None = None):
    _check_on_error(on_error)
    try:
      import datasets  # optional: only a Hugging Face dataset source needs it (heavy)
    except ImportError as e:
      raise ImportError("HfTextSource needs the `datasets` package: pip install datasets") from e
    self.name = "<datasets.Dataset>"
    if isinstance(dataset, (str, os.PathLike)):
      self.name = os.fspath(dataset)
      dataset = datasets.load_from_disk(self.name)
    if isinstance(dataset, datasets.DatasetDict):
      if split not in dataset:
        raise ValueError(f"{self.name}: pass split= one of {list(dataset)}, got {split!r}")
      dataset = dataset[split]
    if text_field not in dataset.column_names:
      raise DataError(f"{self.name}: missing field {text_field!r} "
                      f"(columns: {dataset.column_names})")
    self.text_field = text_field
    self.skips = SkipCounter() if skips is None else skips
    self._ds = dataset.select_columns([text_field])
    keep, row = [], 0
    for batch in self._ds.iter(batch_size=4096):
      for text in batch[text_field]:
        try:
          if text is None:
            raise _Bad("missing_field", f"field {text_field!r} is null")
          _check_text(text, text_field)
          keep.append(row)
        except _Bad as bad:
          _handle(bad, f"{self.name}:row {row}", on_error, self.skips)
        row += 1
    self._rows = np.asarray(keep, np.int64)
    self.skips.log(f"HfTextSource({self.name})")
    if not len(self._rows):
      raise DataError(f"{self.name}: no valid documents ({self.skips})")

  def __len__(self) -> int:
    return len(self._rows)

  def __getitem__(self, index: int) -> Record:
    row = int(self._rows[int(index)])
    return {"text": self._ds[row][self.text_field], "path": self.name, "line": row}


class ConcatSource(_Records):
  """Several sources end to end."""

  def __init__(self, sources: Sequence[Source]):
    self.sources = list(sources)
    self._ends = np.cumsum([len(s) for s in self.sources])

  def __len__(self) -> int:
    return int(self._ends[-1]) if len(self._ends) else 0

  def __getitem__(self, index: int) -> Record:
    index = int(index)
    k = int(np.searchsorted(self._ends, index, side="right"))
    return self.sources[k][index - (int(self._ends[k - 1]) if k else 0)]


class SubsetSource(_Records):
  """The records of `source` at `indices` (used by the held-out split)."""

  def __init__(self, source: Source, indices: np.ndarray):
    self.source, self.indices = source, np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> Record:
    return self.source[int(self.indices[int(index)])]


def holdout_split(source: Source, fraction: float, *, seed: int = 0,
                  by: str = "index") -> tuple[SubsetSource, SubsetSource]:
  """Splits into (train, heldout), about `fraction` held out, deterministic for a seed.

  `by="index"` hashes the document index (no reads; stable while the source is unchanged);
  `by="text"` hashes the text (reads every document once; exact duplicates land together, and
  the split survives reordering or appending files).
  """
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
  n = len(source)
  if by == "index":
    u = _mix64(np.arange(n, dtype=np.uint64) ^ np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64))
  elif by == "text":
    salt = str(seed).encode()
    u = np.array([int.from_bytes(hashlib.blake2b(source[i]["text"].encode("utf-8"), key=salt,
                                                 digest_size=8).digest(), "little")
                  for i in range(n)], np.float64)
    u /= 2.0**64
  else:
    raise ValueError(f"by must be 'index' or 'text', got {by!r}")
  held = u < fraction
  return SubsetSource(source, np.flatnonzero(~held)), SubsetSource(source, np.flatnonzero(held))


def _mix64(x: np.ndarray) -> np.ndarray:
  """splitmix64 finaliser -> uniform floats in [0, 1)."""
  with np.errstate(over="ignore"):
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
  return (x >> np.uint64(11)).astype(np.float64) / 2.0**53


def _kind_of(path: str) -> str:
  p = epath.Path(path)
  if p.is_dir():
    if (p / "state.json").exists() or (p / "dataset_dict.json").exists():
      return "hf"  # (save_to_disk also writes a dataset_info.json)
    if (p / "dataset_info.json").exists():
      return "tfds"
    raise DataError(f"{path}: a directory that is neither a TFDS dataset version directory "
                    "(dataset_info.json) nor a `datasets` save_to_disk directory")
  if path.endswith(".gz"):
    raise DataError(f"{path}: compressed files are not supported (no random access); "
                    "decompress it or build a TFDS dataset with tfds_text.build_tfds_text")
  return "jsonl" if path.endswith(JSONL_SUFFIXES) else "text"


def open_source(paths: PathSpec | Source, *, kind: str = "auto", text_field: str = "text",
                text_unit: str = "file", split: str = "train", on_error: str = "raise",
                skips: SkipCounter | None = None) -> Source:
  """One source from paths/globs; `kind="auto"` picks jsonl/text/tfds/hf per path.

  Auto: `.jsonl/.json/.ndjson` -> JSONL, other files -> plain text, a directory with
  `dataset_info.json` -> TFDS, a `datasets.save_to_disk` directory -> HF. An object that is
  already a source (has `__getitem__`, not a str/list) is returned unchanged.
  """
  if hasattr(paths, "__getitem__") and not isinstance(paths, (str, list, tuple)):
    return paths
  skips = SkipCounter() if skips is None else skips
  files = expand_paths(paths)
  groups: dict[str, list[str]] = {}
  for f in files:
    groups.setdefault(_kind_of(f) if kind == "auto" else kind, []).append(f)
  sources: list[Source] = []
  for k, group in groups.items():
    if k == "jsonl":
      sources.append(JsonlSource(group, text_field=text_field, on_error=on_error, skips=skips))
    elif k == "text":
      sources.append(TextSource(group, unit=text_unit, on_error=on_error, skips=skips))
    elif k == "tfds":
      sources.extend(TfdsTextSource(g, split=split) for g in group)
    elif k == "hf":
      sources.extend(HfTextSource(g, split=split, text_field=text_field, on_error=on_error,
                                  skips=skips) for g in group)
    else:
      raise ValueError(f"unknown source kind {k!r}")
  return sources[0] if len(sources) == 1 else ConcatSource(sources)
