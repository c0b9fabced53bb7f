"""The grain text pipeline: batch format, epoch coverage, exact resume, seeds, hosts, workers."""
import json

import grain
import numpy as np
import pytest

from citrus_jax.data import pipeline
from citrus_jax.data import sources

SEQ, GBS = 32, 4
EOS, BOS, OFFSET = 1, 2, 3  # token 0 is padding


class ByteTokenizer:
  """UTF-8 bytes -> ids >= 3 (picklable: a module-level class)."""

  eos_id, bos_id = EOS, BOS

  def encode(self, text):
    return [b + OFFSET for b in text.encode("utf-8")]

  def decode(self, ids):
    return bytes(int(i) - OFFSET for i in ids).decode("utf-8")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  rng = np.random.default_rng(0)
  words = ["fever", "cough", "dyspnoea", "troponin", "sepsis", "ECG", "näusea", "β-blocker"]
  texts = [f"doc{i}: " + " ".join(rng.choice(words, size=rng.integers(1, 25)))
           for i in range(120)]
  path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
  path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
  return str(path), texts


def _make(path, **kw):
  kw.setdefault("process_index", 0)
  kw.setdefault("process_count", 1)
  kw.setdefault("seed", 7)
  return pipeline.make_text_pipeline(path, ByteTokenizer(), SEQ, GBS, **kw)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _docs(batches, bos=False):
  """Concatenates the T+1 rows in order and splits at EOS: the documents, in order seen."""
  rows = [np.append(b["inputs"][r], b["targets"][r, -1]) for b in batches
          for r in range(len(b["inputs"]))]
  stream = np.concatenate([row[row != 0] for row in rows])
  ends = np.flatnonzero(stream == EOS)
  assert ends[-1] == len(stream) - 1  # nothing after the last EOS
  pieces = np.split(stream, ends + 1)[:-1]
  if bos:
    assert all(p[0] == BOS for p in pieces)
    pieces = [p[1:] for p in pieces]
  return [ByteTokenizer().decode(p[:-1]) for p in pieces]


def _equal(a, b):
  return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in pipeline.BATCH_KEYS)


def test_batch_format(corpus):
  b = next(_make(corpus[0], num_epochs=1))
  assert set(b) == set(pipeline.BATCH_KEYS)
  for k, dtype in [("inputs", np.int32), ("targets", np.int32), ("positions", np.int32),
                   ("segment_ids", np.int32), ("loss_mask", np.float32)]:
    assert b[k].shape == (GBS, SEQ) and b[k].dtype == dtype, k
  np.testing.assert_array_equal(b["targets"][:, :-1], b["inputs"][:, 1:])
  seg, pos = b["segment_ids"], b["positions"]
  same = seg[:, 1:] == seg[:, :-1]
  np.testing.assert_array_equal(pos[:, 1:][same & (seg[:, 1:] > 0)],
                                pos[:, :-1][same & (seg[:, 1:] > 0)] + 1)
  assert np.all(pos[:, 1:][~same] == 0)  # a new segment restarts its positions
  assert np.all(b["loss_mask"][:, :-1][~same] == 0)  # never across documents
  assert np.all(b["loss_mask"][seg == 0] == 0)


def test_one_epoch_covers_every_document_once(corpus):
  path, texts = corpus
  batches = list(_make(path, num_epochs=1, final_batch="pad"))
  seen = _docs(batches)
  assert sorted(seen) == sorted(texts)
  assert seen != texts  # shuffled
  ordered = _docs(list(_make(path, num_epochs=1, final_batch="pad", shuffle=False)))
  assert ordered == texts
  with_bos = _docs(list(_make(path, num_epochs=1, final_batch="pad", add_bos=True)), bos=True)
  assert sorted(with_bos) == sorted(texts)


def test_epochs_reshuffle(corpus):
  path, texts = corpus
  seen = _docs(list(_make(path, num_epochs=2, final_batch="pad")))
  assert sorted(seen) == sorted(texts * 2)
  first, second = seen[:len(texts)], seen[len(texts):]
  assert sorted(first) == sorted(texts) and first != second


def test_determinism_and_seeds(corpus):
  path, _ = corpus
  a, b = _take(_make(path, seed=1), 6), _take(_make(path, seed=1), 6)
  c = _take(_make(path, seed=2), 6)
  assert _equal(a, b)
  assert not _equal(a, c)


@pytest.mark.parametrize("where", ["start", "early", "epoch_end"])
def test_exact_resume(corpus, where):
  path, _ = corpus
  per_epoch = len(list(_make(path, num_epochs=1)))
  k = {"start": 0, "early": 3, "epoch_end": per_epoch - 1}[where]
  reference = _take(_make(path, num_epochs=3), k + 6)  # spans the epoch boundary at epoch_end
  it = _make(path, num_epochs=3)
  _take(it, k)
  state = json.loads(json.dumps(it.get_state()))  # as the Orbax handler stores it
  resumed = _make(path, num_epochs=3)
  resumed.set_state(state)
  assert _equal(_take(resumed, 6), reference[k:])


def test_orbax_checkpoint_manager_roundtrip(corpus, tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  path, _ = corpus
  it = _make(path)
  _take(it, 5)
  expected = _take(_make(path), 9)[5:]
  mngr = ocp.CheckpointManager(tmp_path / "ckpt")
  mngr.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  mngr.wait_until_finished()
  fresh = _make(path)
  mngr.restore(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  assert _equal(_take(fresh, 4), expected)
  mngr.close()


def test_process_sharding_disjoint_and_covering(corpus):
  path, texts = corpus
  shards = []
  for index in range(2):
    batches = list(_make(path, num_epochs=1, final_batch="pad", process_index=index,
                         process_count=2))
    assert batches[0]["inputs"].shape == (GBS // 2, SEQ)  # local batch
    shards.append(_docs(batches))
  assert set(shards[0]).isdisjoint(shards[1])
  assert sorted(shards[0] + shards[1]) == sorted(texts)
  assert abs(len(shards[0]) - len(shards[1])) <= 1


def test_holdout_split_feeds_train_and_eval_pipelines(corpus):
  path, texts = corpus
  train, held = sources.holdout_split(sources.JsonlSource(path), 0.2, seed=0)
  train_docs = _docs(list(_make(train, num_epochs=1, final_batch="pad")))
  eval_docs = _docs(list(_make(held, num_epochs=1, final_batch="pad", shuffle=False)))
  assert set(train_docs).isdisjoint(eval_docs) and eval_docs
  assert sorted(train_docs + eval_docs) == sorted(texts)


def test_worker_processes_cover_and_resume(corpus):
  path, texts = corpus
  kw = dict(num_epochs=2, worker_count=2, final_batch="pad")
  it = _make(path, **kw)
  head = _take(it, 3)
  state = it.get_state()
  tail = list(it)
  it.close()
  # Each worker packs its own slice of documents, and batches alternate between workers, so
  # check the token multiset: every document twice, nothing lost or duplicated.
  tokens = np.concatenate([np.append(b["inputs"][r], b["targets"][r, -1])
                           for b in head + tail for r in range(GBS)])
  expected = np.concatenate([ByteTokenizer().encode(t) + [EOS] for t in texts * 2])
  np.testing.assert_array_equal(np.bincount(tokens[tokens != 0], minlength=260),
                                np.bincount(expected, minlength=260))
  resumed = _make(path, **kw)
  resumed.set_state(json.loads(json.dumps(state)))
  again = list(resumed)
  resumed.close()
  assert len(again) == len(tail) and _equal(again, tail)


def test_bad_arguments(corpus):
  path, _ = corpus
  with pytest.raises(ValueError, match="not divisible"):
    _make(path, process_count=3)
  with pytest.raises(ValueError, match="final_batch"):
    _make(path, final_batch="keep")

  class NoBos(ByteTokenizer):
    bos_id = None

  with pytest.raises(ValueError, match="bos_id"):
    pipeline.make_text_pipeline(path, NoBos(), SEQ, GBS, add_bos=True, process_index=0,
                                process_count=1)

  class NoEos(ByteTokenizer):
    eos_id = None

  with pytest.raises(ValueError, match="eos_id"):
    pipeline.make_text_pipeline(path, NoEos(), SEQ, GBS, process_index=0, process_count=1)


def test_packed_dataset_with_sft_weights():
  """The shared builder with a per-token weight transform (what SFT plugs in)."""
  rng = np.random.default_rng(3)
  records = [{"prompt": "q" * int(rng.integers(1, 16)), "answer": "A" * int(rng.integers(1, 16))}
             for _ in range(40)]  # at most 31 tokens: no example is truncated

  def transform(rec):  # train only on the answer tokens (and the EOS after them)
    tokens = ByteTokenizer().encode(rec["prompt"]) + ByteTokenizer().encode(rec["answer"]) + [EOS]
    weights = [0.0] * len(rec["prompt"]) + [1.0] * (len(rec["answer"]) + 1)
    return {"tokens": np.asarray(tokens, np.int32), "weights": np.asarray(weights, np.float32)}

  batches = list(pipeline.make_packed_dataset(
      records, transform, SEQ, GBS, seed=0, num_epochs=1, split_long=False, final_batch="pad",
      process_index=0, process_count=1))
  targets = np.concatenate([b["targets"][b["loss_mask"] > 0] for b in batches])
  q, a = ByteTokenizer().encode("qA")
  assert set(targets.tolist()) == {a, EOS}  # no prompt token is ever a trained target
  n_answer = sum(len(r["answer"]) + 1 for r in records)
  assert len(targets) == n_answer  # every answer token and EOS is trained, exactly once
  segs = np.concatenate([b["segment_ids"].ravel() for b in batches])
  assert q in np.concatenate([b["inputs"].ravel() for b in batches])[segs > 0]
