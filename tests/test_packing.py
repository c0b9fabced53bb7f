"""Packing: hand-checked rows, no token lost or duplicated, masks, SFT weights, exact resume."""
import json

import grain
import numpy as np
import pytest

from citrus_jax.data import packing


def _ex(tokens, weights=None):
  ex = {"tokens": np.asarray(tokens, np.int32)}
  if weights is not None:
    ex["weights"] = np.asarray(weights, np.float32)
  return ex


def _stack(rows):
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def test_cpt_hand_checked_rows():
  # seq_len 7 -> rows of 8 tokens. Docs of 3, 4 and 6 tokens; the third one spills over.
  docs = [[11, 12, 13], [21, 22, 23, 24], [31, 32, 33, 34, 35, 36]]
  rows = list(packing.pack_examples([_ex(d) for d in docs], 7, split_long=True))
  assert len(rows) == 2
  b = _stack(rows)
  # row 0 = 11 12 13 | 21 22 23 24 | 31 ; row 1 = 32 33 34 35 36 | pad pad pad
  np.testing.assert_array_equal(b["inputs"], [[11, 12, 13, 21, 22, 23, 24],
                                              [32, 33, 34, 35, 36, 0, 0]])
  np.testing.assert_array_equal(b["targets"], [[12, 13, 21, 22, 23, 24, 31],
                                               [33, 34, 35, 36, 0, 0, 0]])
  np.testing.assert_array_equal(b["segment_ids"], [[1, 1, 1, 2, 2, 2, 2],
                                                   [1, 1, 1, 1, 1, 0, 0]])
  np.testing.assert_array_equal(b["positions"], [[0, 1, 2, 0, 1, 2, 3],
                                                 [0, 1, 2, 3, 4, 0, 0]])
  np.testing.assert_array_equal(b["loss_mask"], [[1, 1, 0, 1, 1, 1, 0],
                                                 [1, 1, 1, 1, 0, 0, 0]])
  assert {k: v.dtype for k, v in b.items()} == {
      "inputs": np.int32, "targets": np.int32, "positions": np.int32,
      "segment_ids": np.int32, "loss_mask": np.float32}


def test_sft_hand_checked_rows_weights_and_truncation():
  # seq_len 7 -> 8 tokens per row. Example 2 (10 tokens) is too long: keeps its last 8.
  exs = [_ex([1, 2, 3], [0, 0, 1]),
         _ex([4, 5, 6, 7, 8, 9], [0, 0, 0, 1, 1, 1]),
         _ex(list(range(20, 30)), [0] * 5 + [1] * 5),
         _ex([40, 41], [0, 1])]
  stats = {}
  rows = list(packing.pack_examples(exs, 7, split_long=False, stats=stats))
  b = _stack(rows)
  # Ex 1 (6 tokens) does not fit the 5 left after ex 0: new row; same for ex 2; ex 3 fits.
  np.testing.assert_array_equal(b["inputs"], [[1, 2, 3, 0, 0, 0, 0],
                                              [4, 5, 6, 7, 8, 9, 0],
                                              [22, 23, 24, 25, 26, 27, 28],
                                              [40, 41, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(b["segment_ids"], [[1, 1, 1, 0, 0, 0, 0],
                                                   [1, 1, 1, 1, 1, 1, 0],
                                                   [1, 1, 1, 1, 1, 1, 1],
                                                   [1, 1, 0, 0, 0, 0, 0]])
  # loss on target j iff same segment and weight of the target token is 1.
  np.testing.assert_array_equal(b["loss_mask"], [[0, 1, 0, 0, 0, 0, 0],
                                                 [0, 0, 1, 1, 1, 0, 0],
                                                 [0, 0, 1, 1, 1, 1, 1],
                                                 [1, 0, 0, 0, 0, 0, 0]])
  assert stats["truncated"] == 1 and stats["truncated_tokens"] == 2
  assert stats["examples"] == 4 and stats["rows"] == 4


def test_sft_fills_remaining_space_when_it_fits():
  rows = list(packing.pack_examples([_ex([1, 2, 3]), _ex([4, 5, 6, 7, 8])], 7, split_long=False))
  assert len(rows) == 1
  np.testing.assert_array_equal(rows[0]["segment_ids"], [1, 1, 1, 2, 2, 2, 2])
  np.testing.assert_array_equal(rows[0]["targets"], [2, 3, 4, 5, 6, 7, 8])


def _random_docs(rng, n, max_len, vocab=1000):
  return [rng.integers(3, vocab, size=rng.integers(1, max_len)).astype(np.int32)
          for _ in range(n)]


@pytest.mark.parametrize("seq_len", [1, 5, 16, 64])
def test_cpt_no_token_lost_or_duplicated(seq_len):
  rng = np.random.default_rng(seq_len)
  docs = _random_docs(rng, 200, 3 * seq_len + 3)  # tokens >= 3, so 0 marks padding here
  rows = list(packing.pack_examples([_ex(d) for d in docs], seq_len, split_long=True))
  b = _stack(rows)
  full = np.concatenate([b["inputs"], b["targets"][:, -1:]], axis=1)  # the T+1 token rows
  n_real = (full != 0).sum(axis=1)
  assert np.all(n_real[:-1] == seq_len + 1)  # only the last row is padded
  stream = np.concatenate([row[:n] for row, n in zip(full, n_real)])
  np.testing.assert_array_equal(stream, np.concatenate(docs))
  # Every trained pair is (token, next token) of one document; padding is never trained.
  lengths = [len(d) for d in docs]
  doc_of = np.repeat(np.arange(len(docs)), lengths)
  pos_in_doc = np.concatenate([np.arange(n) for n in lengths])
  offsets = np.arange(len(rows)) * (seq_len + 1)
  trained = 0
  for r, t in zip(*np.nonzero(b["loss_mask"])):
    g = offsets[r] + t
    assert doc_of[g] == doc_of[g + 1] and pos_in_doc[g + 1] == pos_in_doc[g] + 1
    assert b["targets"][r, t] == stream[g + 1]
    trained += 1
  assert np.all(b["loss_mask"][b["segment_ids"] == 0] == 0)
  # Exactly the within-document transitions that do not straddle a row boundary are trained.
  expected = sum(1 for g in range(len(stream) - 1)
                 if doc_of[g] == doc_of[g + 1] and (g + 1) % (seq_len + 1))
  assert trained == expected


def test_cpt_positions_and_segments_restart_per_piece():
  rng = np.random.default_rng(0)
  docs = _random_docs(rng, 50, 40)
  for row in packing.pack_examples([_ex(d) for d in docs], 16, split_long=True):
    seg, pos = row["segment_ids"], row["positions"]
    for s in np.unique(seg[seg > 0]):
      idx = np.flatnonzero(seg == s)
      np.testing.assert_array_equal(idx, np.arange(idx[0], idx[-1] + 1))  # contiguous
      np.testing.assert_array_equal(pos[idx], np.arange(len(idx)))
    assert np.all(np.diff(seg[seg > 0]) >= 0) and seg[0] == 1
    # Document boundary inside the row: the target there is never trained.
    change = np.flatnonzero(np.diff(seg) != 0)
    assert np.all(row["loss_mask"][change] == 0)


def test_sft_examples_never_split_and_weights_respected():
  rng = np.random.default_rng(1)
  seq_len = 24
  exs = []
  for _ in range(100):
    n = int(rng.integers(2, 40))  # >= 2 tokens, so none starts in a row's last slot
    exs.append(_ex(rng.integers(3, 500, n), (rng.random(n) < 0.5).astype(np.float32)))
  got = []
  for row in packing.pack_examples(exs, seq_len, split_long=False):
    full = np.append(row["inputs"], row["targets"][-1])
    seg = np.append(row["segment_ids"], row["segment_ids"][-1] if full[-1] else 0)
    for s in np.unique(seg[seg > 0]):
      idx = np.flatnonzero(seg == s)
      got.append((full[idx], row["loss_mask"][idx[:-1]]))
  assert len(got) == len(exs)
  for (tokens, mask), ex in zip(got, exs):
    keep = slice(-(seq_len + 1), None)  # an over-long example keeps its last T+1 tokens
    np.testing.assert_array_equal(tokens, ex["tokens"][keep])
    np.testing.assert_array_equal(mask, ex["weights"][keep][1:])


def test_pack_iter_dataset_exact_resume():
  rng = np.random.default_rng(2)
  docs = _random_docs(rng, 60, 50)
  base = grain.MapDataset.source([_ex(d) for d in docs]).to_iter_dataset()
  for split_long in (True, False):
    ds = packing.PackIterDataset(base, 16, split_long=split_long)
    full = list(ds)
    for k in (0, 1, 5, len(full) - 1, len(full)):
      it = iter(ds)
      for _ in range(k):
        next(it)
      state = json.loads(json.dumps(it.get_state()))  # what the Orbax handler writes
      it2 = iter(ds)
      it2.set_state(state)
      rest = list(it2)
      assert len(rest) == len(full) - k
      for a, b in zip(rest, full[k:]):
        for key in a:
          np.testing.assert_array_equal(a[key], b[key])
      assert it2.stats["rows"] == len(full)


def test_bad_examples_raise():
  with pytest.raises(ValueError, match="weights"):
    list(packing.pack_examples([_ex([1, 2, 3], [1, 1])], 4))
  with pytest.raises(ValueError, match="no tokens"):
    list(packing.pack_examples([_ex([])], 4))
  with pytest.raises(ValueError, match="tokens"):
    list(packing.pack_examples([{"ids": [1]}], 4))
