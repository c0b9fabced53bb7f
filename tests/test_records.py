"""The one JSONL/JSON reader (data/records.py): a table of malformed inputs x on_error, then each
reader family built on it (benchmarks, CPT/SFT sources, preference pairs, synthesis items,
rejection questions, eval predictions, append-only logs)."""
import json
import logging
import pathlib

import pytest

from citrus_jax.data import preference, records, sft, sources
from citrus_jax.eval import benchmarks, harness, validate
from citrus_jax.rollout import questions
from citrus_jax.synth import items as synth_items

BOM = b"\xef\xbb\xbf"
OK = b'{"a": 1}\n'

# name -> (file bytes, raise: (line, reason) of the first error, skip: (lines read, skip counts));
# an entry of None for skip means the file holds no record, which is an error in both modes.
TABLE = {
    "bad_json": (OK + b'{"a": \n' + OK, (2, "bad_json"), ([1, 3], {"bad_json": 1})),
    "invalid_utf8": (OK + b'{"a": "caf\xe9"}\n' + OK, (2, "bad_utf8"),
                     ([1, 3], {"bad_utf8": 1})),
    "bom": (BOM + OK + OK, None, ([1, 2], {})),
    "u2028_in_string": ('{"a": "x\u2028y\u2029z\x85w"}\n'.encode() + OK, None, ([1, 2], {})),
    "blank_lines": (b"\n" + OK + b"   \n\r\n" + OK, None, ([2, 5], {})),
    "crlf": (b'{"a": 1}\r\n{"a": 2}\r\n', None, ([1, 2], {})),
    "no_final_newline": (OK + b'{"a": 2}', None, ([1, 2], {})),
    "not_object": (OK + b"[1, 2]\n" + b'"text"\n', (2, "not_object"),
                   ([1], {"not_object": 2})),
    "empty_file": (b"", (None, "empty_file"), None),
    "blank_file": (b"\n  \n", (None, "empty_file"), None),
    "all_bad": (b'{"a": \n\xff\n[]\n', (1, "bad_json"), None),
}


def _write(tmp_path, name, data: bytes, suffix=".jsonl") -> str:
  path = tmp_path / f"{name}{suffix}"
  path.write_bytes(data)
  return str(path)


@pytest.mark.parametrize("name", sorted(TABLE))
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_malformed_input_table(tmp_path, name, on_error):
  data, raised, skipped = TABLE[name]
  path = _write(tmp_path, name, data)
  skips = records.Skips()
  expect_error = raised if on_error == "raise" else (None, "empty_file") if skipped is None \
      else None
  if expect_error is not None:
    line, reason = expect_error
    with pytest.raises(records.RecordError) as e:
      list(records.read_jsonl(path, on_error=on_error, skips=skips))
    err = e.value
    assert isinstance(err, ValueError)
    assert (err.path, err.line, err.reason) == (path, line, reason)
    head = f"{path}:{line}: field '<json>': " if line is not None else f"{path}: no records"
    assert str(err).startswith(head), str(err)
    if reason == "empty_file" and name == "all_bad":  # counted per reason in the message
      assert "all 3 skipped (bad_json=1, bad_utf8=1, not_object=1)" in str(err)
    return
  got = list(records.read_jsonl(path, on_error=on_error, skips=skips))
  lines, counts = skipped
  assert [line for line, _ in got] == lines
  assert skips.as_dict() == counts and skips.total() == sum(counts.values())
  for reason in counts:
    assert skips.first[reason].startswith(f"{path}:")
  assert len(skips.messages) == skips.total()
  assert all(m.startswith(f"{path}:") and "field '<json>'" in m for m in skips.messages)
  if name == "u2028_in_string":
    assert got[0][1]["a"] == "x\u2028y\u2029z\x85w"  # one record, not split at U+2028
  if name == "blank_lines":
    assert skips.blank_lines == 3


def test_error_messages_name_the_byte_and_the_column(tmp_path):
  path = _write(tmp_path, "u", OK + b'{"a": "caf\xe9"}\n')
  with pytest.raises(records.RecordError, match=r"u\.jsonl:2: field '<json>': invalid UTF-8 "
                     r"\(byte 0xe9 at byte 11\)"):
    list(records.read_jsonl(path))
  path = _write(tmp_path, "j", b'{"a": 1,}\n')
  with pytest.raises(records.RecordError, match=r"j\.jsonl:1: field '<json>': invalid JSON: "
                     r"Expecting property name enclosed in double quotes \(column 9\)"):
    list(records.read_jsonl(path))


def test_required_fields_and_offsets_for_random_access(tmp_path):
  path = _write(tmp_path, "r", b'{"text": "a"}\r\n{"body": "b"}\n\n' + BOM + b'{"text": "c"}\n')
  with pytest.raises(records.RecordError, match=r"r\.jsonl:2: field 'text': missing") as e:
    list(records.scan_jsonl(path, required=("text",)))
  assert (e.value.field, e.value.reason) == ("text", "missing_field")
  skips = records.Skips()
  rows = list(records.scan_jsonl(path, on_error="skip", skips=skips, required=("text",)))
  assert [(r.line, r.index) for r in rows] == [(1, 0), (4, 2)] and skips.as_dict() == {
      "missing_field": 1}
  raw = pathlib.Path(path).read_bytes()
  for r in rows:  # the (start, length) a source keeps re-reads to the same record
    body = raw[r.start:r.start + r.length]
    assert body == r.body and records.parse_line(body, path, r.line) == r.record
  with pytest.raises(ValueError, match="on_error must be"):
    list(records.read_jsonl(path, on_error="ignore"))
  assert list(records.read_jsonl(_write(tmp_path, "e", b""), allow_empty=True)) == []


def test_json_array_documents(tmp_path):
  ok = _write(tmp_path, "ok", BOM + b'[{"a": 1},\n {"a": 2}]', ".json")
  assert records.is_json_array(ok)
  assert list(records.read_records(ok)) == [(f"{ok}:[0]", {"a": 1}), (f"{ok}:[1]", {"a": 2})]
  bad = _write(tmp_path, "bad", b'[{"a": 1},\n {"a": "\xff"}]', ".json")
  with pytest.raises(records.RecordError, match=r"bad\.json:2: field '<json>': invalid UTF-8"):
    list(records.read_json_array(bad))
  broken = _write(tmp_path, "broken", b'[{"a": 1},\n {"a": }]', ".json")
  with pytest.raises(records.RecordError, match=r"broken\.json:2: field '<json>': invalid JSON"):
    records.load_json(broken)
  mixed = _write(tmp_path, "mixed", b'[{"a": 1}, 3]', ".json")
  with pytest.raises(records.RecordError, match=r"mixed\.json:\[1\]: field '<json>': expected"):
    list(records.read_json_array(mixed))
  skips = records.Skips()
  assert len(list(records.read_json_array(mixed, on_error="skip", skips=skips))) == 1
  assert skips.as_dict() == {"not_object": 1}
  with pytest.raises(records.RecordError, match=r"empty\.json: no records"):
    list(records.read_json_array(_write(tmp_path, "empty", b"[]", ".json")))
  with pytest.raises(records.RecordError, match=r"obj\.json: expected a JSON array"):
    list(records.read_json_array(_write(tmp_path, "obj", b'{"a": 1}', ".json")))
  # A .json file of one object per line is JSONL.
  lines = _write(tmp_path, "lines", OK + OK, ".json")
  assert not records.is_json_array(lines) and len(list(records.read_records(lines))) == 2


def test_split_paths():
  assert records.split_paths("a.jsonl,b.jsonl") == ["a.jsonl", "b.jsonl"]
  assert records.split_paths(" a.jsonl , ,b.jsonl ") == ["a.jsonl", "b.jsonl"]
  assert records.split_paths(["a.jsonl,b.jsonl", pathlib.Path("c.jsonl")]) == [
      "a.jsonl", "b.jsonl", "c.jsonl"]
  assert records.split_paths(("a.jsonl",)) == ["a.jsonl"]
  assert records.split_paths(None) == records.split_paths("") == []


def test_first_record_sniffs_one_line(tmp_path):
  assert records.first_record(_write(tmp_path, "a", b"\n" + BOM + OK + b"not json\n")) == {"a": 1}
  assert records.first_record(_write(tmp_path, "b", b"\xff\n" + OK)) is None
  assert records.first_record(_write(tmp_path, "c", b"")) is None
  assert records.first_record(_write(tmp_path, "d", b'[{"q": 1}]', ".json")) == {"q": 1}


def test_append_only_log_cuts_a_torn_tail_only(tmp_path, caplog):
  path = _write(tmp_path, "log", OK + b'{"a": 2}\r\n{"a": 3, "b')
  with caplog.at_level(logging.WARNING):
    assert records.read_log(path) == [{"a": 1}, {"a": 2}]
  assert pathlib.Path(path).read_bytes() == OK + b'{"a": 2}\r\n' and "torn" in caplog.text
  path = _write(tmp_path, "mid", OK + b"{oops\n" + OK)
  with pytest.raises(records.RecordError, match=r"mid\.jsonl:2: field '<json>': invalid JSON"):
    records.read_log(path)
  assert pathlib.Path(path).read_bytes() == OK + b"{oops\n" + OK  # nothing cut
  assert records.read_log(str(tmp_path / "missing.jsonl")) == []
  with pytest.raises(records.RecordError, match=r"k\.jsonl:1: field 'key': missing"):
    records.read_log(_write(tmp_path, "k", OK), required=("key",))


# ------------------------------------------------------------------------------------------------
# The reader families: invalid UTF-8 is a file:line error (and a counted skip), a BOM is accepted.


def _medqa(i, **kw):
  row = {"question": f"Which one {i}?", "options": {"A": "x", "B": "y"}, "answer_idx": "B"}
  return json.dumps({**row, **kw}).encode() + b"\n"


def test_benchmark_reader(tmp_path):
  path = _write(tmp_path, "medqa", BOM + _medqa(0) + _medqa(1, question="caf\xe9"))
  data = benchmarks.load_benchmark("medqa", path)
  assert len(data) == 2 and data.items[1].question == "caf\xe9"
  assert benchmarks.detect_benchmark(path) == "medqa"  # the BOM does not hide the layout
  bad = _write(tmp_path, "bad", _medqa(0) + b'{"question": "\xff"}\n' + _medqa(2))
  with pytest.raises(ValueError, match=rf"{bad}:2: field '<json>': invalid UTF-8"):
    benchmarks.load_benchmark("medqa", bad)
  data = benchmarks.load_benchmark("medqa", bad, on_error="skip")
  assert len(data) == 2 and data.report["skipped"] == {"bad_utf8": 1}
  assert data.report["rows"] == 3 and [it.id for it in data] == ["00000", "00002"]
  csv = tmp_path / "anatomy_test.csv"
  csv.write_bytes(BOM + b"Q one?,a,b,c,d,A\nQ two \xe9?,a,b,c,d,B\n")
  with pytest.raises(ValueError, match=r"anatomy_test\.csv:2: field '<csv>': invalid UTF-8 "
                     r"\(byte 0xe9 at byte 7\)"):
    benchmarks.load_benchmark("mmlu", str(csv))
  # An empty benchmark file, or one whose rows are all skipped, is an error naming it.
  empty = _write(tmp_path, "empty", b"")
  with pytest.raises(ValueError, match=rf"{empty}: no records"):
    benchmarks.load_benchmark("medqa", empty)
  all_bad = _write(tmp_path, "all_bad", _medqa(0, answer_idx="Z"))
  with pytest.raises(ValueError, match=rf"{all_bad}: no medqa items \(skipped or dropped: "
                     r"gold_not_in_options=1\)"):
    benchmarks.load_benchmark("medqa", all_bad, on_error="skip")
  # validate reports an empty .jsonl instead of passing it over as "not a benchmark".
  d = tmp_path / "dir"
  d.mkdir()
  (d / "medqa_test.jsonl").write_bytes(b"")
  assert validate.main(["--data_dir", str(d), "--no_expected"]) == 1


def test_cpt_and_sft_sources(tmp_path):
  path = _write(tmp_path, "c", BOM + b'{"text": "one"}\n{"text": "two \xe2\x80\xa8 lines"}\n')
  src = sources.JsonlSource(path)
  assert [r["text"] for r in src] == ["one", "two \u2028 lines"]
  assert len(sources.JsonlSource(f"{path},{path}")) == 2  # a comma list, de-duplicated
  bad = _write(tmp_path, "bad", b'{"text": "one"}\n{"text": "\xff"}\n')
  with pytest.raises(sources.DataError, match=rf"{bad}:2: field '<json>': invalid UTF-8"):
    sources.JsonlSource(bad)
  skips = sources.SkipCounter()
  assert len(sources.JsonlSource(bad, on_error="skip", skips=skips)) == 1
  assert skips.as_dict() == {"bad_utf8": 1} and f"{bad}:2" in str(skips)
  # SFT's reader: the same rules (it indexes the file, then tokenizes what it read).
  rec = b'{"input": "q", "target": "a"}\n'
  reader, = sft.open_readers(_write(tmp_path, "s", BOM + rec + rec))
  assert [r for _, r in reader.scan("raise", records.Skips())] == [{"input": "q", "target": "a"}] * 2
  assert reader.load(1) == {"input": "q", "target": "a"}
  reader, = sft.open_readers(_write(tmp_path, "sb", rec + b"\xff\n"))
  with pytest.raises(sources.DataError, match=r"sb\.jsonl:2: field '<json>': invalid UTF-8"):
    list(reader.scan("raise", records.Skips()))
  arr, = sft.open_readers(_write(tmp_path, "sa", BOM + b'[{"input": "q", "target": "a"}]',
                                 ".json"))
  assert [r for _, r in arr.scan("raise", records.Skips())] == [{"input": "q", "target": "a"}]


class _Rendered:
  def __init__(self, tokens, mask):
    self.tokens, self.assistant_mask = tokens, mask


def _render(messages, tokenizer, add_generation_prompt=False):
  """Characters as tokens; assistant content is trained (a stand-in for chat.render)."""
  del tokenizer
  tokens, mask = [], []
  for m in messages:
    ids = [ord(c) for c in f"<{m['role']}>{m['content']}"]
    tokens += ids
    mask += [int(m["role"] == "assistant")] * len(ids)
  if add_generation_prompt:
    tokens += [ord(c) for c in "<assistant>"]
    mask += [0] * len("<assistant>")
  return _Rendered(tokens, mask)


def test_preference_pairs(tmp_path):
  pair = json.dumps({"prompt": "Q\u2028?", "chosen": "yes", "rejected": "no"}).encode() + b"\n"
  a = _write(tmp_path, "a", BOM + pair)
  b = _write(tmp_path, "b", pair + b'{"prompt": "\xff"}\n' + pair)
  kw = dict(max_length=64, max_prompt_length=32, render=_render)
  with pytest.raises(preference.PairError, match=rf"{b}:2: field '<json>': invalid UTF-8"):
    preference.load_pairs(b, None, **kw)
  pairs, stats = preference.load_pairs(f"{a},{b}", None, on_error="skip", **kw)
  assert [p.where for p in pairs] == [f"{a}:1", f"{b}:1", f"{b}:3"]
  assert stats["read"] == 4 and stats["skipped"] == 1 and stats["reasons"] == {"bad_utf8": 1}
  assert any(f"{b}:2" in e for e in stats["errors"])
  with pytest.raises(preference.PairError, match=r"empty\.jsonl: no records"):
    preference.load_pairs(_write(tmp_path, "empty", b"\n"), None, **kw)


def test_synthesis_items(tmp_path):
  rec = lambda i, q: json.dumps({"id": i, "question": q, "answer": "Scurvy"}).encode() + b"\n"
  path = _write(tmp_path, "items", BOM + rec("a", "Which\u2028deficiency?") + rec("b", "Why?"))
  got, report = synth_items.read_items(path)
  assert [it.id for it in got] == ["items/a", "items/b"] and report["skipped"] == {}
  assert got[0].question == "Which\u2028deficiency?"
  bad = _write(tmp_path, "bad", rec("a", "Q?") + b'{"question": "\xff"}\n')
  with pytest.raises(ValueError, match=rf"{bad}:2: field '<json>': invalid UTF-8"):
    synth_items.read_items(bad)
  got, report = synth_items.read_items(f"{path},{bad}", on_error="skip")
  assert len(got) == 3 and report["skipped"] == {"bad_utf8": 1}
  assert report["files"][bad] == {"items": 1, "skipped": {"bad_utf8": 1}}
  with pytest.raises(ValueError, match=r"empty\.jsonl: no records"):
    synth_items.read_items(_write(tmp_path, "empty", b""))
  none_left = _write(tmp_path, "none", rec("a", ""))
  with pytest.raises(ValueError, match=r"none\.jsonl: no synthesis items .*missing_question=1"):
    synth_items.read_items(none_left, on_error="skip")


def test_rejection_questions(tmp_path):
  rec = lambda i: json.dumps({"id": i, "question": "Q?", "answer": "x"}).encode() + b"\n"
  a = _write(tmp_path, "qa", BOM + rec("a"))
  b = _write(tmp_path, "qb", rec("b"))
  assert [q.id for q in questions.load_questions(f"{a},{b}")] == ["a", "b"]
  bad = _write(tmp_path, "qbad", rec("a") + b'{"question": "\xff"}\n')
  with pytest.raises(questions.QuestionError, match=rf"{bad}:2: field '<json>': invalid UTF-8"):
    questions.load_questions(bad)
  with pytest.raises(questions.QuestionError, match=r"qempty\.jsonl: no records"):
    questions.load_questions(_write(tmp_path, "qempty", b""))


def test_eval_predictions(tmp_path):
  path = _write(tmp_path, "p", BOM + b'{"id": "1", "output": "A"}\n{"id": "2", "output": "\xff"}\n')
  with pytest.raises(ValueError, match=rf"{path}:2: field '<json>': invalid UTF-8"):
    harness.read_predictions([path], ["medqa"])
  preds, skipped = harness.read_predictions([path], ["medqa"], on_error="skip")
  assert list(preds["medqa"]) == ["1"] and skipped == {"bad_utf8": 1}
