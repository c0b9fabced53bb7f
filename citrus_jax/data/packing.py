"""Greedy sequential packing of token sequences into fixed rows (pure numpy; CPT and SFT).

An example is `{"tokens": int array [N], "weights": optional float array [N]}`, where
`weights[j] = 1` means the next-token prediction that lands on token j is trained. Examples are
laid end to end into rows of T+1 tokens; each example (or piece of one) is a segment with ids
1, 2, ... and positions restarting at 0; 0 marks padding. A row becomes a training row with
`inputs = row[:-1]`, `targets = row[1:]` and a loss mask that is 1 only where input and target
share a non-zero segment and the target's weight is 1 -- so nothing is learnt across documents.

`split_long=True` (CPT): an example that does not fit the space left continues in the next row
as a new segment, so no token is lost or duplicated (the one transition across the row boundary
is not trained). `split_long=False` (SFT): an example that does not fit the space left starts a
new row, and one longer than a whole row keeps its last T+1 tokens (counted in `stats`).

`PackIterDataset` wraps this as a grain `IterDataset` with exact, JSON-serialisable iterator
state: the parent state before the example being consumed plus the offset into it.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import grain
import numpy as np

Example = dict[str, Any]
STAT_KEYS = ("examples", "rows", "tokens", "pad_tokens", "truncated", "truncated_tokens")


def row_to_example(tokens_L: np.ndarray, segment_ids_L: np.ndarray, positions_L: np.ndarray,
                   weights_L: np.ndarray) -> dict[str, np.ndarray]:
  """A packed row of L = T+1 tokens -> the training dict of [T] arrays."""
  seg_in, seg_tgt = segment_ids_L[:-1], segment_ids_L[1:]
  loss_mask = (seg_in == seg_tgt) & (seg_in != 0) & (weights_L[1:] > 0)
  return {
      "inputs": tokens_L[:-1].astype(np.int32),
      "targets": tokens_L[1:].astype(np.int32),
      "positions": positions_L[:-1].astype(np.int32),
      "segment_ids": seg_in.astype(np.int32),
      "loss_mask": loss_mask.astype(np.float32),
  }


def _as_example(ex: Any) -> tuple[np.ndarray, np.ndarray]:
  if not isinstance(ex, dict) or "tokens" not in ex:
    raise ValueError(f"packing expects dicts with a 'tokens' array, got {type(ex).__name__}")
  tokens = np.asarray(ex["tokens"])
  if tokens.ndim != 1 or (tokens.size and not np.issubdtype(tokens.dtype, np.integer)):
    raise ValueError(f"'tokens' must be a 1-D integer array, got {tokens.dtype}{tokens.shape}")
  weights = ex.get("weights")
  if weights is None:
    weights = np.ones(len(tokens), np.float32)
  else:
    weights = np.asarray(weights, np.float32)
    if weights.shape != tokens.shape:
      raise ValueError(f"'weights' shape {weights.shape} != 'tokens' shape {tokens.shape}")
  return tokens.astype(np.int32), weights


class _PlainIterator(grain.DatasetIterator):
  """Adapts a Python iterator (no resume) so `pack_examples` reuses the packing iterator."""

  def __init__(self, it: Iterator[Example]):
    super().__init__()
    self._it, self._count = it, 0

  def __next__(self):
    ex = next(self._it)
    self._count += 1
    return ex

  def get_state(self):
    return {"count": self._count}

  def set_state(self, state):
    raise NotImplementedError("a plain Python iterator cannot be restored; use PackIterDataset")


class _PackIterator(grain.DatasetIterator):
  """Emits one packed row per `next`; see module docstring."""

  def __init__(self, parent: grain.DatasetIterator, seq_len: int, split_long: bool):
    super().__init__(parent)
    self._row_len = seq_len + 1
    self._split_long = split_long
    self._cur: tuple[np.ndarray, np.ndarray] | None = None  # example being consumed
    self._cur_state: Any = None  # parent state before `_cur` was fetched
    self._offset = 0  # tokens of `_cur` already emitted (after set_state: to skip on fetch)
    self.stats = dict.fromkeys(STAT_KEYS, 0)

  def _fetch(self) -> None:
    state = self._parent.get_state()
    tokens, weights = _as_example(next(self._parent))  # StopIteration ends the stream
    if len(tokens) == 0:
      raise ValueError("packing got an example with no tokens")
    if not self._split_long and len(tokens) > self._row_len:
      self.stats["truncated"] += 1
      self.stats["truncated_tokens"] += len(tokens) - self._row_len
      tokens, weights = tokens[-self._row_len:], weights[-self._row_len:]
    if self._offset >= len(tokens):
      raise ValueError(f"restored packing offset {self._offset} >= example length {len(tokens)}"
                       " (state from a different pipeline?)")
    self.stats["examples"] += 1
    self._cur, self._cur_state = (tokens, weights), state

  def __next__(self) -> dict[str, np.ndarray]:
    L = self._row_len
    tokens_L = np.zeros(L, np.int32)
    weights_L = np.zeros(L, np.float32)
    segment_ids_L = np.zeros(L, np.int32)
    positions_L = np.zeros(L, np.int32)
    fill, seg = 0, 0
    while fill < L:
      if self._cur is None:
        try:
          self._fetch()
        except StopIteration:
          break
      tokens, weights = self._cur
      rest, space = len(tokens) - self._offset, L - fill
      if rest > space and fill and not self._split_long:
        break  # SFT: start a new row rather than split the example
      take = min(rest, space)
      src, dst = slice(self._offset, self._offset + take), slice(fill, fill + take)
      seg += 1
      tokens_L[dst], weights_L[dst] = tokens[src], weights[src]
      segment_ids_L[dst], positions_L[dst] = seg, np.arange(take)
      fill += take
      self._offset += take
      if self._offset == len(tokens):
        self._cur, self._offset = None, 0
    if fill == 0:
      raise StopIteration
    self.stats["rows"] += 1
    self.stats["tokens"] += fill
    self.stats["pad_tokens"] += L - fill
    return row_to_example(tokens_L, segment_ids_L, positions_L, weights_L)

  def get_state(self) -> dict[str, Any]:
    parent = self._parent.get_state() if self._cur is None else self._cur_state
    return {"parent": parent, "offset": self._offset, "stats": dict(self.stats)}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._cur, self._cur_state = None, None
    self._offset = int(state["offset"])
    self.stats = {k: int(state["stats"].get(k, 0)) for k in STAT_KEYS}


class PackIterDataset(grain.IterDataset):
  """Packs the parent's examples into rows of `seq_len + 1` tokens (one training dict each)."""

  def __init__(self, parent: grain.IterDataset, seq_len: int, *, split_long: bool = True):
    super().__init__(parent)
    if seq_len < 1:
      raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    self._seq_len, self._split_long = seq_len, split_long

  def __iter__(self) -> _PackIterator:
    return _PackIterator(self._parent.__iter__(), self._seq_len, self._split_long)

  def __str__(self) -> str:
    return f"PackIterDataset(seq_len={self._seq_len}, split_long={self._split_long})"


def pack_examples(examples: Iterable[Example], seq_len: int, *, split_long: bool = True,
                  stats: dict[str, int] | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Plain-generator packing (no resume); `stats`, if given, is updated in place."""
  it = _PackIterator(_PlainIterator(iter(examples)), seq_len, split_long)
  for row in it:
    if stats is not None:
      stats.update(it.stats)
    yield row
  if stats is not None:
    stats.update(it.stats)
