"""Text -> packed, batched token rows with grain: deterministic, host-sharded, exactly resumable.

    source records -> [process shard] -> shuffle(seed) per epoch -> repeat
      -> transform (CPT: tokenize + eos; SFT: chat template + per-token weights)
      -> to_iter_dataset -> pack into rows of seq_len+1 -> batch(global // process_count)
      -> mp_prefetch (worker processes, optional)

Each process reads only documents `process_index::process_count`. The iterator's
`get_state()`/`set_state()` is exact: a restored iterator yields the very batches the original
would have yielded next (same seed, sources, seq_len, batch size, process and worker counts; the
packed output depends on `worker_count`, so keep it fixed across a resume). Save it with Orbax
next to the train state, e.g. in a `CheckpointManager` with
`args=ocp.args.Composite(state=..., data=grain.checkpoint.CheckpointSave(it))`, and restore with
`data=grain.checkpoint.CheckpointRestore(it)` (one JSON file per process).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import grain
import jax
import numpy as np

from citrus_jax import multihost
from citrus_jax.data import packing
from citrus_jax.data import sources

BATCH_KEYS = ("inputs", "targets", "positions", "segment_ids", "loss_mask")


class Tokenizer(Protocol):
  """What the pipeline needs from a tokenizer (see citrus_jax/tokenizer.py)."""

  eos_id: int
  bos_id: int | None

  def encode(self, text: str) -> list[int]: ...


class TokenizeDoc:
  """Record -> `{"tokens": [bos] + encode(text) + [eos]}` (picklable, for worker processes)."""

  def __init__(self, tokenizer: Tokenizer, *, add_bos: bool = False, add_eos: bool = True):
    if add_bos and getattr(tokenizer, "bos_id", None) is None:
      raise ValueError("add_bos=True but the tokenizer has no bos_id")
    if add_eos and getattr(tokenizer, "eos_id", None) is None:
      raise ValueError("the tokenizer has no eos_id to end each document with")
    self.tokenizer, self.add_bos, self.add_eos = tokenizer, add_bos, add_eos

  def __call__(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
    ids = list(self.tokenizer.encode(record["text"]))
    if self.add_bos:
      ids.insert(0, self.tokenizer.bos_id)
    if self.add_eos:
      ids.append(self.tokenizer.eos_id)
    return {"tokens": np.asarray(ids, np.int32)}


class PadBatch:
  """Pads a short final batch with all-zero rows to keep shapes static: loss_mask 0 for token
  batches, row_mask 0 for pair batches (data/preference.py), so they weigh nothing."""

  def __init__(self, batch_size: int):
    self.batch_size = batch_size

  def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = self.batch_size - len(next(iter(batch.values())))
    if n <= 0:
      return batch
    return {k: np.concatenate([v, np.zeros((n,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise ValueError(f"global_batch_size {global_batch_size} is not divisible by the "
                     f"{process_count} processes")
  return global_batch_size // process_count


def _process_index_count(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  return process_index, process_count


def make_packed_dataset(
    source: sources.Source,
    transform: Callable[[Any], dict[str, np.ndarray]],
    seq_len: int,
    global_batch_size: int,
    *,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    worker_count: int = 0,
    worker_buffer_size: int = 2,
    process_index: int | None = None,
    process_count: int | None = None,
    split_long: bool = True,
    final_batch: str = "drop",
    read_threads: int = 4,
) -> grain.IterDataset:
  """Records -> `transform` (-> {"tokens", "weights"?}) -> packed batches [B_local, seq_len].

  Shared by CPT (`make_text_dataset`) and SFT (a chat transform, `split_long=False`).
  `num_epochs=None` repeats forever (stop by step count: with several hosts, shards differ in
  token count, so a finite epoch ends at different steps on different hosts).
  `final_batch`: "drop" the last short batch (training) or "pad" it with empty rows (eval).
  Process index/count default to jax's. With `worker_count > 0` the transform and source are
  pickled to spawned workers, and absl flags must be parsed (`absl.app.run`, or
  `absl.flags.FLAGS.mark_as_parsed()`), else grain raises UnparsedFlagAccessError.
  """
  if final_batch not in ("drop", "pad"):
    raise ValueError(f"final_batch must be 'drop' or 'pad', got {final_batch!r}")
  process_index, process_count = _process_index_count(process_index, process_count)
  batch_size = local_batch_size(global_batch_size, process_count)
  ds = multihost.shard_records(source, process_index, process_count, seed=seed, shuffle=shuffle,
                               num_epochs=num_epochs).map(transform)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=64))
  it = packing.PackIterDataset(it, seq_len, split_long=split_long)
  it = it.batch(batch_size, drop_remainder=final_batch == "drop")
  if final_batch == "pad":
    it = it.map(PadBatch(batch_size))
  if worker_count > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=worker_count, per_worker_buffer_size=worker_buffer_size))
  return it


def make_text_dataset(source: sources.PathSpec | sources.Source, tokenizer: Tokenizer,
                      seq_len: int, global_batch_size: int, *, add_bos: bool = False,
                      source_kwargs: dict[str, Any] | None = None,
                      **kwargs: Any) -> grain.IterDataset:
  """The CPT pipeline: paths/globs (see `sources.open_source`, configured by `source_kwargs`)
  or a source -> documents `[bos] + encode(text) + [eos]` -> packed batches.

  Keyword options are those of `make_packed_dataset` (seed, shuffle, num_epochs, worker_count,
  process_index, process_count, final_batch, ...).
  """
  src = sources.open_source(source, **(source_kwargs or {}))
  return make_packed_dataset(src, TokenizeDoc(tokenizer, add_bos=add_bos), seq_len,
                             global_batch_size, **kwargs)


def make_text_pipeline(source: sources.PathSpec | sources.Source, tokenizer: Tokenizer,
                       seq_len: int, global_batch_size: int,
                       **kwargs: Any) -> grain.DatasetIterator:
  """`iter(make_text_dataset(...))` (same keywords): batch dicts, with `get_state`/`set_state`."""
  return iter(make_text_dataset(source, tokenizer, seq_len, global_batch_size, **kwargs))
