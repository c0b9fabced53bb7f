"""SFT data: chat records -> chat-template tokens weighted on assistant tokens only -> batches.

Records, one per JSONL line, as a JSON array in a `.json` file, or as rows of a `datasets`
`save_to_disk` directory, in any of these layouts (`LAYOUTS`, told apart by their fields):
  citrus:   {"input": user prompt, "target": assistant reply} -- the layout the reference trains
            SFT-3 from (Citrus model_train/supervised_finetune.py reads a JSON array of these;
            Citrus_S3 as the reference trains it); "output" is read as "target" when there is
            no "target" and no "instruction"
  messages: {"messages": [{"role": "system" | "user" | "assistant", "content": str}, ...]}
  alpaca:   {"instruction", "input" (optional), "output", "history" (optional [[user,
            assistant], ...] earlier turns)}; the user turn is instruction + "\n" + input, as
            LLaMA-Factory's Alpaca converter builds it (no "Below is an instruction..." preamble)
  sharegpt: {"conversations": [{"from": "human" | "gpt" | "system", "value": str}, ...]}
            ("user"/"assistant" and role/content entries are read too)
Every layout takes an optional top-level "system" prompt. A record in none of them, or a bad
field, is an error naming file:line and the field (`[i]` for the i-th turn). Each is rendered with the model's chat template (`chat.render`). `weights[j] = 1` iff token j is
assistant content or the end-of-turn token that closes it; the packer trains the prediction that
lands on token j (`loss_mask[t] = weights[t + 1]` within one example), so the prompt, the
generation header and any trailing user turn are never trained.

An example longer than a row (`seq_len + 1` tokens) keeps its LAST `seq_len + 1` tokens (left
truncation). `pack=True` lays several examples per row (never splitting one); `pack=False` gives
one example per row, padded.

`load_sft` reads, validates, renders and tokenizes every example once, on each host, before
training: bad records fail loudly with file:line (or are skipped and counted per reason), and the
audit (examples, tokens, trained tokens, truncations, skips) is exact. That pass costs one
tokenization of the dataset (measured: ~4k Citrus-sized examples, ~1M tokens, per second on one
busy CPU core, e.g. ~30 min for 7M examples); the training pipeline renders again on the fly,
so no tokens are held in memory.
"""
from __future__ import annotations

import array
import dataclasses
import os
import sys
import threading
from typing import Any, Iterator, Sequence

import grain
import jax
import numpy as np

from citrus_jax import chat, multihost
from citrus_jax.data import packing, pipeline, records, sources
from citrus_jax.data.sft_layouts import (LAYOUTS, SHAREGPT_ROLES, _Bad, layout_of,  # noqa: F401
                                         to_messages)
from citrus_jax.data.sources import DataError

Messages = list[dict[str, str]]
KINDS = ("auto", "jsonl", "json", "hf")


# ------------------------------------------------------------------------------ records
# (the layouts: citrus_jax/data/sft_layouts.py)


class _JsonlReader:
  """Records addressed by byte offset (read on demand; thread-safe; picklable)."""

  def __init__(self, path: str):
    self.path = path
    self._lines, self._starts, self._lengths = (array.array("q") for _ in range(3))
    self._file, self._lock = None, threading.Lock()

  def scan(self, on_error: str, skips: records.Skips) -> Iterator[tuple[int, Any]]:
    for row in records.scan_jsonl(self.path, on_error=on_error, skips=skips, error=DataError):
      self._lines.append(row.line)
      self._starts.append(row.start)
      self._lengths.append(row.length)
      yield len(self._lines) - 1, row.record

  def load(self, key: int) -> Any:
    with self._lock:
      if self._file is None:
        self._file = open(self.path, "rb")  # pylint: disable=consider-using-with
      self._file.seek(self._starts[key])
      raw = self._file.read(self._lengths[key])
    return records.parse_line(raw, self.path, self._lines[key], error=DataError)

  def where(self, key: int) -> str:
    return f"{self.path}:{self._lines[key]}"

  def __getstate__(self):
    return {**self.__dict__, "_file": None, "_lock": None}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()


class _ListReader:
  """A JSON array file or a `datasets` directory: records in memory / memory-mapped."""

  def __init__(self, name: str, records: Any, where_fmt: str):
    self.path, self._records, self._fmt = name, records, where_fmt

  def scan(self, on_error: str, skips: records.Skips) -> Iterator[tuple[int, Any]]:
    del on_error, skips  # records are checked by `to_messages`
    for i, record in enumerate(self._records):
      yield i, record

  def load(self, key: int) -> Any:
    return self._records[key]

  def where(self, key: int) -> str:
    return self._fmt.format(path=self.path, i=key)


def _json_array(path: str) -> _ListReader:
  data = [r for _, r in records.read_json_array(path, error=DataError, objects=False)]
  return _ListReader(path, data, "{path}:[{i}]")


def _hf_dataset(path: str, split: str) -> _ListReader:
  import datasets  # optional: only a `datasets` save_to_disk directory needs it (heavy)

  ds = datasets.load_from_disk(path)
  if isinstance(ds, datasets.DatasetDict):
    if split not in ds:
      raise DataError(f"{path}: no split {split!r} (splits: {list(ds)})")
    ds = ds[split]
  return _ListReader(path, ds, "{path}:row {i}")


def open_readers(paths: sources.PathSpec, kind: str = "auto", split: str = "train") -> list[Any]:
  """One reader per file or dataset directory (globs and comma lists expanded)."""
  if kind not in KINDS:
    raise ValueError(f"SFT data format {kind!r} is unknown; expected one of {KINDS}")
  readers = []
  for path in sources.expand_paths(paths):
    k = kind
    if k == "auto":
      if os.path.isdir(path):
        k = "hf"
      else:
        k = "json" if records.is_json_array(path) else "jsonl"
    readers.append(_hf_dataset(path, split) if k == "hf" else
                   _json_array(path) if k == "json" else _JsonlReader(path))
  return readers


class SftRecords:
  """The valid records, random access: `{"messages": [...], "where": "file:line"}`."""

  def __init__(self, readers: Sequence[Any], reader_ids: np.ndarray, keys: np.ndarray):
    self.readers, self.reader_ids, self.keys = list(readers), reader_ids, keys

  def __len__(self) -> int:
    return len(self.keys)

  def __getitem__(self, index: int) -> dict[str, Any]:
    reader = self.readers[int(self.reader_ids[index])]
    key = int(self.keys[index])
    where = reader.where(key)
    try:
      return {"messages": to_messages(reader.load(key)), "where": where}
    except _Bad as bad:  # the file changed after it was read
      raise DataError(f"{where}: {bad} (file changed after loading?)") from None


# ------------------------------------------------------------------------------ tokens


def encode(messages: Messages, tokenizer: Any, chat_format: str | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
  """(tokens int32 [N], weights float32 [N]): the chat template's ids, 1 on assistant tokens."""
  r = chat.render(messages, tokenizer, fmt=chat_format or None, require_assistant=True)
  return np.asarray(r.tokens, np.int32), np.asarray(r.assistant_mask, np.float32)


class ChatTransform:
  """Record -> `{"tokens", "weights"}` for the packer (picklable, for worker processes)."""

  def __init__(self, tokenizer: Any, chat_format: str | None = None):
    self.tokenizer, self.chat_format = tokenizer, chat_format

  def __call__(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
    try:
      tokens, weights = encode(record["messages"], self.tokenizer, self.chat_format)
    except ValueError as e:
      raise DataError(f"{record['where']}: {e}") from None
    return {"tokens": tokens, "weights": weights}


def trained_after_truncation(weights: np.ndarray, row_len: int) -> int:
  """Trained predictions left once the example keeps its last `row_len` tokens (the first kept
  token is only an input)."""
  return int(weights[-row_len:][1:].sum())


class ToRow:
  """One example per row (`pack=False`): keep the last `seq_len + 1` tokens, pad the rest."""

  def __init__(self, seq_len: int):
    self.row_len = seq_len + 1

  def __call__(self, ex: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    tokens, weights = ex["tokens"][-self.row_len:], ex["weights"][-self.row_len:]
    n, L = len(tokens), self.row_len
    pad = lambda x, dtype: np.concatenate([x, np.zeros(L - n, dtype)]).astype(dtype)
    return packing.row_to_example(pad(tokens, np.int32), pad(np.ones(n, np.int32), np.int32),
                                  pad(np.arange(n), np.int32), pad(weights, np.float32))


# ------------------------------------------------------------------------------ audit


@dataclasses.dataclass
class Audit:
  """What the loss will see; printed before training (counts after left truncation)."""
  examples: int = 0
  tokens: int = 0
  trained_tokens: int = 0
  truncated: int = 0
  truncated_tokens: int = 0
  longest: int = 0
  row_len: int = 0
  skips: records.Skips = dataclasses.field(default_factory=records.Skips)  # blanks not counted

  @property
  def trained_fraction(self) -> float:
    return self.trained_tokens / max(self.tokens, 1)

  def as_dict(self) -> dict[str, Any]:
    return {"examples": self.examples, "tokens": self.tokens,
            "trained_tokens": self.trained_tokens, "trained_fraction": self.trained_fraction,
            "truncated": self.truncated, "truncated_tokens": self.truncated_tokens,
            "longest": self.longest, "skipped": self.skips.as_dict()}

  def format(self) -> str:
    lines = [f"{self.examples:,} examples, {self.tokens:,} tokens, {self.trained_tokens:,} "
             f"trained ({100 * self.trained_fraction:.1f}% of tokens; assistant content + "
             "end-of-turn)",
             f"truncated (kept the last {self.row_len:,} tokens): {self.truncated:,} examples, "
             f"{self.truncated_tokens:,} tokens cut; longest example {self.longest:,} tokens",
             str(self.skips)]  # "no records skipped" or per reason, with the first place
    return "\n".join(lines)


@dataclasses.dataclass
class SftData:
  records: SftRecords
  lengths: np.ndarray  # tokens per record, before truncation
  audit: Audit


def load_sft(paths: sources.PathSpec, tokenizer: Any, seq_len: int, *, kind: str = "auto",
             split: str = "train", chat_format: str | None = None,
             on_error: str = "raise") -> SftData:
  """Reads, validates and tokenizes every record once; see the module doc.

  Bad records raise `DataError` naming file:line and the problem, or with `on_error="skip"` are
  counted per reason in `audit.skips`. No valid example, or no trained token, is always an error.
  """
  if on_error not in ("raise", "skip"):
    raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
  row_len = seq_len + 1
  readers = open_readers(paths, kind, split)
  audit = Audit(row_len=row_len)
  ids, keys, lengths = [], [], []
  for rid, reader in enumerate(readers):
    for key, obj in reader.scan(on_error, audit.skips):
      try:
        try:
          tokens, weights = encode(to_messages(obj), tokenizer, chat_format)
        except ValueError as e:
          raise _Bad("render_error", str(e)) from None
        trained = trained_after_truncation(weights, row_len)
        if not trained:
          raise _Bad("no_trained_after_truncation", f"all {int(weights.sum())} assistant tokens "
                     f"fall outside the kept last {row_len} of {len(tokens)} tokens")
      except _Bad as bad:
        where = reader.where(key)
        if on_error == "raise":
          raise DataError(f"{where}: {bad} (set config.data.on_error='skip' to skip and count "
                          "such records)") from None
        audit.skips.add(bad.reason, where)
        continue
      n = len(tokens)
      ids.append(rid)
      keys.append(key)
      lengths.append(n)
      audit.examples += 1
      audit.tokens += min(n, row_len)
      audit.trained_tokens += trained
      audit.longest = max(audit.longest, n)
      if n > row_len:
        audit.truncated += 1
        audit.truncated_tokens += n - row_len
  names = [r.path for r in readers]
  if not audit.examples:
    raise DataError(f"no valid SFT examples in {names[:5]} ({audit.skips})")
  if not audit.trained_tokens:  # unreachable while every kept example trains something
    raise DataError(f"no trained tokens in {names[:5]}: the loss mask is all zeros")
  records = SftRecords(readers, np.asarray(ids, np.int32), np.asarray(keys, np.int64))
  return SftData(records, np.asarray(lengths, np.int64), audit)


# ------------------------------------------------------------------------------ batches


class _CheckedIterator(grain.DatasetIterator):
  """Raises on a batch with no trained token, naming the step (the batch's 1-based index)."""

  def __init__(self, parent: grain.DatasetIterator, name: str):
    super().__init__(parent)
    self._name, self._step = name, 0

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._parent)
    self._step += 1
    if not np.asarray(batch["loss_mask"]).any():
      raise DataError(
          f"[{self._name}] the batch for step {self._step} has no trained tokens (loss mask all "
          "zeros); the SFT data or its chat template leaves nothing to learn there")
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"parent": self._parent.get_state(), "step": self._step}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._step = int(state["step"])


class CheckTrained(grain.IterDataset):
  """Wraps a batch dataset so a batch that trains nothing stops training loudly."""

  def __init__(self, parent: grain.IterDataset, name: str = "sft"):
    super().__init__(parent)
    self._name = name

  def __iter__(self) -> _CheckedIterator:
    return _CheckedIterator(self._parent.__iter__(), self._name)


def _batches(source: Any, transform: Any, seq_len: int, global_batch_size: int, *, pack: bool,
             seed: int, shuffle: bool, num_epochs: int | None, worker_count: int,
             final_batch: str, process_index: int | None,
             process_count: int | None) -> grain.IterDataset:
  if pack:
    return pipeline.make_packed_dataset(
        source, transform, seq_len, global_batch_size, seed=seed, shuffle=shuffle,
        num_epochs=num_epochs, worker_count=worker_count, split_long=False,
        final_batch=final_batch, process_index=process_index, process_count=process_count)
  if process_index is None or process_count is None:
    process_index, process_count = jax.process_index(), jax.process_count()
  batch_size = pipeline.local_batch_size(global_batch_size, process_count)
  ds = multihost.shard_records(source, process_index, process_count, seed=seed, shuffle=shuffle,
                               num_epochs=num_epochs)
  it = ds.map(transform).map(ToRow(seq_len)).to_iter_dataset()
  it = it.batch(batch_size, drop_remainder=final_batch == "drop")
  if final_batch == "pad":
    it = it.map(pipeline.PadBatch(batch_size))
  if worker_count > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return it


def make_sft_dataset(data: SftData, tokenizer: Any, seq_len: int, global_batch_size: int, *,
                     chat_format: str | None = None, pack: bool = True, seed: int = 0,
                     shuffle: bool = True, num_epochs: int | None = None,
                     worker_count: int = 0, final_batch: str = "drop",
                     process_index: int | None = None, process_count: int | None = None,
                     check_name: str | None = "sft") -> grain.IterDataset:
  """Batches `{inputs, targets, positions, segment_ids, loss_mask}` [B_local, seq_len].

  Exactly resumable (grain state). With `check_name`, a batch with no trained token raises
  `DataError` naming the step. `num_epochs=None` repeats forever.
  """
  ds = _batches(data.records, ChatTransform(tokenizer, chat_format), seq_len, global_batch_size,
                pack=pack, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                worker_count=worker_count, final_batch=final_batch,
                process_index=process_index, process_count=process_count)
  return CheckTrained(ds, check_name) if check_name else ds


class _Placeholder:
  """Length -> dummy tokens: the packer sees the real lengths without re-tokenizing."""

  def __call__(self, n: Any) -> dict[str, np.ndarray]:
    return {"tokens": np.ones(int(n), np.int32)}


def count_batches(data: SftData, seq_len: int, global_batch_size: int, num_epochs: int, *,
                  pack: bool = True, seed: int = 0, shuffle: bool = True,
                  process_count: int = 1) -> int:
  """Full batches that `num_epochs` epochs give: the same pipeline run on the token counts.

  The packing (and so the count) depends on the shuffled order; this replays it exactly. With
  several processes it is the fewest over them (each host reads its own shard).
  Cost: the packer runs over lengths only (no tokenization): ~10k example-epochs per second
  (seconds for 60k examples x 3 epochs; ~30 min for 7M x 3).
  """
  batch_size = pipeline.local_batch_size(global_batch_size, process_count)
  counts = []
  for p in range(process_count):
    if not pack:  # one example per row
      counts.append(len(range(p, len(data.lengths), process_count)) * num_epochs // batch_size)
      continue
    it = _batches(data.lengths, _Placeholder(), seq_len, global_batch_size, pack=pack,
                  seed=seed, shuffle=shuffle, num_epochs=num_epochs, worker_count=0,
                  final_batch="drop", process_index=p, process_count=process_count)
    counts.append(sum(1 for _ in it))
  return min(counts)


# ------------------------------------------------------------------------------ example batches
#
# The reference counts its global batch in examples: Citrus model_train/supervised_finetune.py
# trains one example per sequence (padded, no packing) with DataLoader(drop_last=True) and
# train_batch_size = bsz_per_gpu x GPUs x grad_accum = 512, so E epochs of N examples are
# E x floor(N / 512) optimizer steps (its scheduler's num_training_steps, floor(floor(N / bsz) x E /
# accum / GPUs), differs from that by less than E). With `batch_unit = "examples"` a stage
# trains exactly that many steps; with packing the rows per step are chosen so that the E epochs
# of packed rows fill those steps, i.e. each step still sees ~G examples on average.

BATCH_UNITS = ("rows", "examples")


def example_steps(n_examples: int, examples_per_step: int, num_epochs: int) -> int:
  """Optimizer steps of `num_epochs` epochs in batches of `examples_per_step` whole examples,
  each epoch dropping its last short batch (the reference's count)."""
  if examples_per_step < 1 or num_epochs < 1:
    raise ValueError(f"need examples_per_step >= 1 and num_epochs >= 1, got "
                     f"{examples_per_step} and {num_epochs}")
  return int(num_epochs) * (int(n_examples) // int(examples_per_step))


@dataclasses.dataclass(frozen=True)
class ExamplePlan:
  """How a stage whose batch is counted in examples runs: `steps` optimizer steps (the
  reference's), each of `rows_per_step` rows (packed: fewer rows than examples)."""
  steps: int
  rows_per_step: int
  examples_per_step: int
  num_epochs: int
  examples: int
  rows: int  # rows the num_epochs epochs make (>= steps x rows_per_step)

  @property
  def mean_examples_per_step(self) -> float:
    return self.num_epochs * self.examples / max(self.steps, 1)

  def describe(self) -> str:
    return (f"{self.steps} steps = {self.num_epochs} epoch(s) x floor({self.examples} examples / "
            f"{self.examples_per_step} per step), as the reference counts; {self.rows_per_step} "
            f"rows per step ({self.mean_examples_per_step:.1f} examples per step on average)")


def plan_example_batches(data: SftData, seq_len: int, examples_per_step: int, num_epochs: int,
                         *, pack: bool = True, seed: int = 0, shuffle: bool = True,
                         process_count: int = 1, multiple_of: int = 1) -> ExamplePlan:
  """The step count and rows per step for a global batch of `examples_per_step` examples.

  Without packing a row is one example, so rows per step = examples per step. With packing the
  packer is replayed on the lengths (as `count_batches`) to count the rows `num_epochs` epochs
  make, and rows per step = floor(rows / steps), rounded down to `multiple_of` (the process
  count, or the data-parallel size the batch is sharded over): the pipeline, run for
  `num_epochs` epochs in batches of that many rows, then gives at least `steps` full batches.
  """
  steps = example_steps(data.audit.examples, examples_per_step, num_epochs)
  if steps <= 0:
    raise ValueError(f"{data.audit.examples} examples make no full batch of {examples_per_step} "
                     "examples; lower the global batch or add data")
  multiple = max(int(multiple_of), int(process_count), 1)
  if not pack:
    if examples_per_step % multiple:
      raise ValueError(f"a global batch of {examples_per_step} examples (one per row) does not "
                       f"split over {multiple} (processes / data-parallel devices)")
    return ExamplePlan(steps, examples_per_step, examples_per_step, num_epochs,
                       data.audit.examples, num_epochs * data.audit.examples)
  per_process = count_batches(data, seq_len, process_count, num_epochs, pack=True, seed=seed,
                              shuffle=shuffle, process_count=process_count)
  rows = per_process * process_count  # the fewest any process packs, times the processes
  rows_per_step = (rows // steps) // multiple * multiple
  if rows_per_step < multiple:
    raise ValueError(
        f"{num_epochs} epoch(s) of {data.audit.examples} examples pack into {rows} rows of "
        f"{seq_len + 1} tokens, fewer than {steps} steps x {multiple} rows; with batches of "
        f"{examples_per_step} examples use pack=False, or count the batch in rows")
  return ExamplePlan(steps, rows_per_step, examples_per_step, num_epochs, data.audit.examples,
                     rows)


# ------------------------------------------------------------------------------ inspection


def format_example(tokens: Sequence[int], weights: Sequence[float], tokenizer: Any, *,
                   color: bool | None = None) -> str:
  """The tokens as text, each trained span in `[[...]]` (or green when `color`)."""
  color = sys.stdout.isatty() if color is None else color
  start, end = ("\x1b[1;32m", "\x1b[0m") if color else ("[[", "]]")
  out, i = [], 0
  tokens, on = list(tokens), [w > 0 for w in weights]
  while i < len(tokens):
    j = i
    while j < len(tokens) and on[j] == on[i]:
      j += 1
    text = tokenizer.decode(tokens[i:j], skip_special=False)
    out.append(start + text + end if on[i] else text)
    i = j
  return "".join(out)


def show_examples(data: SftData, tokenizer: Any, seq_len: int, n: int, *,
                  chat_format: str | None = None, color: bool | None = None) -> str:
  """The first `n` examples as the loss sees them (after truncation), trained spans marked."""
  row_len, parts = seq_len + 1, []
  for i in range(min(n, len(data.records))):
    rec = data.records[i]
    tokens, weights = encode(rec["messages"], tokenizer, chat_format)
    cut = max(len(tokens) - row_len, 0)
    tokens, weights = tokens[cut:], weights[cut:].copy()
    weights[0] = 0.0  # a row's first token is never a target
    head = (f"--- example {i + 1} ({rec['where']}): {len(tokens)} tokens, "
            f"{int(weights.sum())} trained" + (f", {cut} cut from the start" if cut else "")
            + " ---\n" + ("[...]" if cut else ""))
    parts.append(head + format_example(tokens, weights, tokenizer, color=color))
  return "\n".join(parts)
