"""Our TFDS builder: build from local files into array_record, read back without TensorFlow."""
import json
import pathlib
import shutil
import sys

import numpy as np
import pytest

from citrus_jax.data import pipeline
from citrus_jax.data import sources
from citrus_jax.data import tfds_text

FIX = pathlib.Path(__file__).parent / "fixtures" / "data"


class ByteTokenizer:
  eos_id, bos_id = 1, 2

  def encode(self, text):
    return [b + 3 for b in text.encode("utf-8")]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  src = [str(FIX / "corpus.jsonl"), str(FIX / "notes" / "*.txt")]
  builder = tfds_text.build_tfds_text(src, tmp_path_factory.mktemp("tfds"), name="medtext")
  return src, builder


def test_build_and_read_back_with_provenance(built):
  src, builder = built
  expected = list(sources.read_jsonl(src[0])) + list(sources.read_text(src[1]))
  assert builder.info.splits["train"].num_examples == len(expected)
  assert str(builder.data_dir).endswith("citrus_text_corpus/medtext/1.0.0")
  assert any(p.name.startswith("citrus_text_corpus-train.array_record")
             for p in pathlib.Path(builder.data_dir).iterdir())
  got = list(sources.TfdsTextSource(builder))
  assert got == expected  # same order (no TFDS shuffling), text/path/line preserved
  reopened = tfds_text.load_tfds_text(pathlib.Path(builder.data_dir).parents[2], "medtext")
  assert list(reopened) == expected
  auto = sources.open_source(str(builder.data_dir))  # directory with dataset_info.json
  assert isinstance(auto, sources.TfdsTextSource) and list(auto) == expected
  assert "tensorflow" not in sys.modules


def test_tfds_source_feeds_the_pipeline(built):
  src, builder = built
  texts = [r["text"] for r in sources.read_jsonl(src[0])] + [
      r["text"] for r in sources.read_text(src[1])]
  batches = list(pipeline.make_text_pipeline(
      str(builder.data_dir), ByteTokenizer(), 16, 2, seed=0, num_epochs=1, final_batch="pad",
      process_index=0, process_count=1))
  rows = [np.append(b["inputs"][r], b["targets"][r, -1]) for b in batches for r in range(2)]
  stream = np.concatenate([row[row != 0] for row in rows])
  docs = [bytes((p[:-1] - 3).astype(np.uint8)).decode("utf-8")
          for p in np.split(stream, np.flatnonzero(stream == 1) + 1)[:-1]]
  assert sorted(docs) == sorted(texts)
  assert "tensorflow" not in sys.modules


def test_bad_input_raises_or_is_skipped_and_counted(tmp_path):
  bad = str(FIX / "bad.jsonl")
  with pytest.raises(sources.DataError, match=f"{bad}:2: field '<json>': invalid JSON"):
    tfds_text.build_tfds_text(bad, tmp_path, name="strict")
  builder = tfds_text.build_tfds_text(bad, tmp_path, name="lenient", on_error="skip")
  assert [r["text"] for r in sources.TfdsTextSource(builder)] == ["Good line one.",
                                                                  "Good line eight."]
  assert builder.skips.total() == 7 and builder.skips.as_dict()["bad_json"] == 1


def test_reuse_and_overwrite(tmp_path):
  path = tmp_path / "docs.jsonl"
  path.write_text(json.dumps({"text": "first version"}) + "\n")
  tfds_text.build_tfds_text(str(path), tmp_path / "out", name="c")
  path.write_text(json.dumps({"text": "second version"}) + "\n")
  kept = tfds_text.build_tfds_text(str(path), tmp_path / "out", name="c")
  assert [r["text"] for r in sources.TfdsTextSource(kept)] == ["first version"]
  rebuilt = tfds_text.build_tfds_text(str(path), tmp_path / "out", name="c", overwrite=True)
  assert [r["text"] for r in sources.TfdsTextSource(rebuilt)] == ["second version"]
  with pytest.raises(FileNotFoundError, match="build_tfds_text"):
    tfds_text.load_tfds_text(tmp_path / "out", "missing")


def test_paragraph_units(tmp_path):
  shutil.copy(FIX / "paragraphs.txt", tmp_path / "p.txt")
  builder = tfds_text.build_tfds_text(str(tmp_path / "p.txt"), tmp_path / "out", name="p",
                                      text_unit="paragraph")
  got = [(r["text"], r["line"]) for r in sources.TfdsTextSource(builder)]
  assert got == [("First paragraph, line one.\nFirst paragraph, line two.", 1),
                 ("Second paragraph.", 5), ("Third paragraph\nends here.", 7)]


def test_tfds_source_with_worker_processes(built):
  src, builder = built
  texts = [r["text"] for r in sources.read_jsonl(src[0])] + [
      r["text"] for r in sources.read_text(src[1])]
  it = pipeline.make_text_pipeline(
      str(builder.data_dir), ByteTokenizer(), 16, 2, seed=0, num_epochs=1, final_batch="pad",
      worker_count=2, process_index=0, process_count=1)  # the source is pickled to workers
  batches = list(it)
  it.close()
  tokens = np.concatenate([b["inputs"].ravel() for b in batches] +
                          [b["targets"][:, -1] for b in batches])
  expected = np.concatenate([ByteTokenizer().encode(t) + [1] for t in texts])
  np.testing.assert_array_equal(np.bincount(tokens[tokens != 0], minlength=260),
                                np.bincount(expected, minlength=260))
