"""Readers and random-access sources: provenance, bad input (raise or skip+count), globs, HF."""
import json
import logging
import os
import pathlib
import pickle

import numpy as np
import pytest

from citrus_jax.data import sources

FIX = pathlib.Path(__file__).parent / "fixtures" / "data"


def _jsonl_texts(path, field="text"):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line)[field] for line in f]


def test_jsonl_records_with_provenance_and_random_access():
  path = str(FIX / "corpus.jsonl")
  expected = _jsonl_texts(path)
  streamed = list(sources.read_jsonl(path))
  assert [r["text"] for r in streamed] == expected
  assert [r["line"] for r in streamed] == list(range(1, len(expected) + 1))
  assert all(r["path"] == path for r in streamed)
  src = sources.JsonlSource(path)
  assert len(src) == len(expected)
  assert [src[i] for i in range(len(src))] == streamed
  assert src[-1] == streamed[-1]
  with pytest.raises(IndexError):
    src[len(src)]


def test_jsonl_custom_text_field():
  src = sources.JsonlSource(FIX / "corpus.jsonl", text_field="body")
  assert [r["text"] for r in src] == _jsonl_texts(FIX / "corpus.jsonl", "body")


@pytest.mark.parametrize("line,reason,words", [
    (2, "bad_json", ["invalid JSON", "'<json>'"]),
    (3, "missing_field", ["field 'text': missing"]),
    (4, "not_string", ["'text'", "int"]),
    (5, "empty", ["'text'", "empty"]),
    (6, "bad_utf8", ["UTF-8"]),
    (9, "not_object", ["JSON object", "list"]),
])
def test_jsonl_bad_line_raises_naming_file_line_field(tmp_path, line, reason, words):
  del reason
  raw = (FIX / "bad.jsonl").read_bytes().split(b"\n")
  path = tmp_path / "one_bad.jsonl"
  path.write_bytes(raw[0] + b"\n" + raw[line - 1] + b"\n")  # the bad line becomes line 2
  with pytest.raises(sources.DataError) as e:
    sources.JsonlSource(str(path))
  msg = str(e.value)
  assert f"{path}:2:" in msg
  for w in words:
    assert w in msg, msg
  with pytest.raises(sources.DataError, match=f"{path}:2:"):
    list(sources.read_jsonl(str(path)))


def test_jsonl_skip_counts_each_reason(caplog):
  path = str(FIX / "bad.jsonl")
  skips = sources.SkipCounter()
  with caplog.at_level(logging.WARNING):
    src = sources.JsonlSource(path, on_error="skip", skips=skips)
  assert [r["text"] for r in src] == ["Good line one.", "Good line eight."]
  assert [r["line"] for r in src] == [1, 8]
  assert skips.as_dict() == {"bad_json": 1, "not_object": 1, "missing_field": 1, "not_string": 1,
                             "empty": 1, "bad_utf8": 1, "blank_line": 1}
  assert skips.total() == 7
  assert skips.first["bad_json"] == f"{path}:2" and skips.first["bad_utf8"] == f"{path}:6"
  assert "skipped 7 documents" in caplog.text and "missing_field=1" in caplog.text
  # The streaming reader counts the same way.
  skips2 = sources.SkipCounter()
  assert len(list(sources.read_jsonl(path, on_error="skip", skips=skips2))) == 2
  assert skips2.as_dict() == skips.as_dict()


def test_bad_on_error_value_and_all_bad_file(tmp_path):
  with pytest.raises(ValueError, match="on_error"):
    sources.JsonlSource(FIX / "corpus.jsonl", on_error="ignore")
  path = tmp_path / "all_bad.jsonl"
  path.write_text('{"text": ""}\n{"x": 1}\n')
  with pytest.raises(sources.DataError, match="no valid documents"):
    sources.JsonlSource(path, on_error="skip")


def test_text_one_document_per_file():
  paths = sorted(str(p) for p in (FIX / "notes").glob("*.txt"))
  src = sources.TextSource(str(FIX / "notes" / "*.txt"))
  assert src.paths == paths
  assert [r["text"] for r in src] == [pathlib.Path(p).read_text() for p in paths]
  assert [r["line"] for r in src] == [1, 1]


def test_text_paragraphs_with_line_numbers():
  path = str(FIX / "paragraphs.txt")
  expected = [("First paragraph, line one.\nFirst paragraph, line two.", 1),
              ("Second paragraph.", 5), ("Third paragraph\nends here.", 7)]
  streamed = list(sources.read_text(path, unit="paragraph"))
  assert [(r["text"], r["line"]) for r in streamed] == expected
  assert list(sources.TextSource(path, unit="paragraph")) == streamed


def test_text_non_utf8_raises_or_skips(tmp_path):
  path = tmp_path / "latin1.txt"
  path.write_bytes(b"fine line\n\nsecond para\ncaf\xe9\n\nthird para\n")
  with pytest.raises(sources.DataError, match=f"{path}:4: .*UTF-8"):
    sources.TextSource(path, unit="paragraph")
  with pytest.raises(sources.DataError, match=f"{path}:4: .*UTF-8"):
    sources.TextSource(path, unit="file")
  skips = sources.SkipCounter()
  src = sources.TextSource(path, unit="paragraph", on_error="skip", skips=skips)
  assert [r["text"] for r in src] == ["fine line", "third para"]
  assert skips.as_dict() == {"bad_utf8": 1}


def test_empty_text_file(tmp_path):
  (tmp_path / "empty.txt").write_text(" \n\n")
  (tmp_path / "ok.txt").write_text("ok")
  with pytest.raises(sources.DataError, match="empty.txt:1: .*empty"):
    sources.TextSource(str(tmp_path / "*.txt"))
  skips = sources.SkipCounter()
  assert len(sources.TextSource(str(tmp_path / "*.txt"), on_error="skip", skips=skips)) == 1
  assert skips.as_dict() == {"empty": 1}


def test_globs_lists_and_missing_paths(tmp_path):
  assert sources.expand_paths([FIX / "corpus.jsonl", str(FIX / "notes" / "*.txt"),
                               str(FIX / "corpus.jsonl")]) == [
      str(FIX / "corpus.jsonl"), str(FIX / "notes" / "cardiology.txt"),
      str(FIX / "notes" / "renal.txt")]
  assert sources.expand_paths(str(FIX / "*" / "*.txt")) == sorted(
      str(p) for p in FIX.glob("*/*.txt"))
  with pytest.raises(FileNotFoundError, match="no files match"):
    sources.expand_paths(str(tmp_path / "*.jsonl"))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    sources.expand_paths(str(tmp_path / "nope.jsonl"))
  cwd = os.getcwd()
  try:
    os.chdir(FIX)
    assert sources.expand_paths("*.jsonl") == ["bad.jsonl", "corpus.jsonl"]
  finally:
    os.chdir(cwd)


def test_open_source_auto_mixes_jsonl_and_text():
  src = sources.open_source([str(FIX / "corpus.jsonl"), str(FIX / "notes" / "*.txt")])
  texts = [src[i]["text"] for i in range(len(src))]
  assert texts == _jsonl_texts(FIX / "corpus.jsonl") + [
      (FIX / "notes" / n).read_text() for n in ("cardiology.txt", "renal.txt")]
  assert sources.open_source(src) is src


def test_source_pickles_after_reading():
  src = sources.JsonlSource(FIX / "corpus.jsonl")
  first = src[3]
  clone = pickle.loads(pickle.dumps(src))
  assert clone[3] == first and len(clone) == len(src)


def test_holdout_split_deterministic_disjoint_and_covering():
  src = sources.SubsetSource(sources.JsonlSource(FIX / "corpus.jsonl"), np.arange(8))
  n = 4000
  big = sources.SubsetSource(src, np.arange(n) % 8)
  train, held = sources.holdout_split(big, 0.1, seed=3)
  assert set(train.indices).isdisjoint(held.indices)
  assert sorted(np.concatenate([train.indices, held.indices])) == list(range(n))
  assert 0.07 < len(held) / n < 0.13
  train2, held2 = sources.holdout_split(big, 0.1, seed=3)
  np.testing.assert_array_equal(held.indices, held2.indices)
  _, held3 = sources.holdout_split(big, 0.1, seed=4)
  assert not np.array_equal(held.indices, held3.indices)
  # by text: the 8 distinct texts each land entirely on one side.
  train_t, held_t = sources.holdout_split(big, 0.3, seed=0, by="text")
  held_texts = {held_t[i]["text"] for i in range(len(held_t))}
  train_texts = {train_t[i]["text"] for i in range(len(train_t))}
  assert held_texts.isdisjoint(train_texts) and len(held_texts | train_texts) == 8


def test_hf_datasets_source(tmp_path):
  datasets = pytest.importorskip("datasets")
  rows = ["alpha beta", None, "gamma", "   ", "delta"]
  datasets.Dataset.from_dict({"text": rows, "n": list(range(5))}).save_to_disk(
      str(tmp_path / "hf"))
  with pytest.raises(sources.DataError, match="row 1: field 'text' is null"):
    sources.open_source(str(tmp_path / "hf"))
  skips = sources.SkipCounter()
  src = sources.open_source(str(tmp_path / "hf"), on_error="skip", skips=skips)
  assert isinstance(src, sources.HfTextSource)
  assert [(r["text"], r["line"]) for r in src] == [("alpha beta", 0), ("gamma", 2),
                                                     ("delta", 4)]
  assert skips.as_dict() == {"missing_field": 1, "empty": 1}
  with pytest.raises(sources.DataError, match="missing field 'body'"):
    sources.HfTextSource(str(tmp_path / "hf"), text_field="body")
  ints = datasets.Dataset.from_dict({"text": [1, 2]})
  with pytest.raises(sources.DataError, match="row 0: field 'text' is int"):
    sources.HfTextSource(ints)
  dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a", "b"]})})
  assert [r["text"] for r in sources.HfTextSource(dd, split="train")] == ["a", "b"]
