"""Real data layouts: SFT (Citrus_S3 as the reference trains it, messages, Alpaca, ShareGPT), MCQ
banks for rejection sampling in the benchmark layouts, and JMED's released .xlsx. Each bad input
is an error naming file, line (sheet row for .xlsx) and field. Fixtures (invented) are in
tests/fixtures/formats/."""
import json
import os
import sys

import pytest

from citrus_jax.data import sft
from citrus_jax.data.sources import DataError
from citrus_jax.eval import benchmarks, prompts
from citrus_jax.rollout import questions

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "formats")
SHARED = os.environ.get("CITRUS_SHARED_DATA", "/work/shared/data/benchmarks")


def _fix(name):
  return os.path.join(FIX, name)


def _read(path):
  """(messages, where) of every record, through the SFT readers and layout converters."""
  out = []
  for reader in sft.open_readers(path):
    for key, obj in reader.scan("raise", sft.records.Skips()):
      out.append({"messages": sft.to_messages(obj), "where": reader.where(key)})
  return out


# ------------------------------------------------------------------------------------------------
# SFT layouts


def test_sft_layouts_give_the_same_conversations():
  s3 = [r["messages"] for r in _read(_fix("citrus_s3.json"))]  # the reference's JSON array
  assert [m["role"] for m in s3[0]] == ["user", "assistant"]
  assert s3[0][0]["content"].startswith("You are tasked with addressing a medical examination")
  assert [r["messages"] for r in _read(_fix("citrus_output.jsonl"))] == s3  # output as target
  with_system = [[{"role": "system", "content": prompts.SYSTEM_PROMPT}] + m for m in s3]
  assert [r["messages"] for r in _read(_fix("messages.jsonl"))] == with_system
  assert [r["messages"] for r in _read(_fix("sharegpt.jsonl"))] == with_system
  assert [sft.layout_of(json.loads(line)) for line in open(_fix("sharegpt.jsonl"))] == \
      ["sharegpt", "sharegpt"]


def test_alpaca_layout():
  recs = _read(_fix("alpaca.json"))
  assert recs[0]["messages"] == [
      {"role": "user", "content": "List two red flags of headache."},  # empty input: no "\n"
      {"role": "assistant", "content": "Sudden onset and fever with neck stiffness."}]
  assert recs[1]["messages"] == [
      {"role": "system", "content": "Answer briefly."},
      {"role": "user", "content": "What is a normal adult temperature?"},
      {"role": "assistant", "content": "About 37 degrees Celsius."},
      {"role": "user", "content": "Name the likely diagnosis.\nFever, sore throat and tender "
                                  "front neck nodes without cough."},
      {"role": "assistant", "content": "Streptococcal pharyngitis."}]
  assert recs[1]["where"] == f"{_fix('alpaca.json')}:[1]"


BAD = [
    ('{"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}',
     "bad_field", "field 'conversations'[1]: from 'bot' is not one of"),
    ('{"conversations": [{"from": "human", "value": "q"}]}', "no_assistant",
     "'conversations' has no assistant turn"),
    ('{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": 7}]}',
     "bad_field", "field 'conversations'[1] (gpt): 'value' must be a string"),
    ('{"conversations": "q"}', "bad_field", "field 'conversations' must be a non-empty list"),
    ('{"instruction": "q"}', "missing_field", "missing field 'output'"),
    ('{"instruction": "q", "input": 3, "output": "a"}', "bad_field", "field 'input' is int"),
    ('{"instruction": "q", "output": "a", "history": [["x"]]}', "bad_field",
     "field 'history'[0]: expected [user, assistant]"),
    ('{"instruction": " ", "output": "a"}', "empty_input", "field 'instruction' is empty"),
    ('{"input": "q", "output": ""}', "empty_target", "field 'output' is empty"),
    ('{"question": "q", "answer": "a"}', "missing_field", "'instruction' + 'output' (Alpaca)"),
]


@pytest.mark.parametrize("line,reason,words", BAD)
def test_bad_sft_record_names_the_field(line, reason, words):
  """The reason and message load_sft reports after `file:line: ` (test_sft_data.py checks the
  place on a few of these through load_sft itself)."""
  with pytest.raises(sft._Bad) as e:  # pylint: disable=protected-access
    sft.to_messages(json.loads(line))
  assert e.value.reason == reason and words in str(e.value), str(e.value)


# ------------------------------------------------------------------------------------------------
# MCQ banks for rejection sampling


@pytest.mark.parametrize("file,n,first_gold", [
    ("bank_medqa.jsonl", 2, "B"), ("bank_mmlu_pro.jsonl", 2, "A"), ("bank_careqa.jsonl", 2, "B"),
    ("bank_unified.jsonl", 1, "C"), ("anatomy_test.csv", 2, "B")])
def test_mcq_banks_become_rejection_questions(file, n, first_gold):
  items = benchmarks.load_bank(_fix(file))
  assert len(items) == n and items[0].gold == first_gold
  qs = [questions.question_from_record(it) for it in items]
  assert qs[0].gold == first_gold and qs[0].gold_text == items[0].options[first_gold]
  assert "A." not in qs[0].text  # the open question never shows the options


def test_load_questions_reads_banks_in_every_layout():
  """The rejection CLI's --questions: a comma list mixing a MedQA JSONL (read as records), an
  MMLU CSV and an MMLU-Pro file (read through load_bank) gives one list of Questions."""
  paths = ",".join(_fix(f) for f in ("bank_medqa.jsonl", "anatomy_test.csv",
                                     "bank_mmlu_pro.jsonl"))
  qs = questions.load_questions(paths)
  assert len(qs) == 6 and [q.gold for q in qs[2:4]] == ["B", benchmarks.load_bank(
      _fix("anatomy_test.csv"))[1].gold]
  assert qs[4].gold == "A" and len({q.id for q in qs}) == 6


def test_mcq_bank_errors(tmp_path):
  bad = tmp_path / "bank.jsonl"
  bad.write_text(json.dumps({"question": "q", "options": {"A": "x", "B": "y"},
                             "answer_idx": "C"}) + "\n")
  with pytest.raises(ValueError, match=rf"{bad}:1: field 'answer_idx': gold 'C' is not among"):
    benchmarks.load_bank(str(bad))
  other = tmp_path / "notes.jsonl"
  other.write_text(json.dumps({"text": "hello"}) + "\n")
  with pytest.raises(ValueError, match="not an MCQ bank"):
    benchmarks.load_bank(str(other))


# ------------------------------------------------------------------------------------------------
# JMED .xlsx

HEADER = ["diagId", "patient_age", "patient_sex", "final_question", "final_options",
          "final_correct_answer", "glm_search_result"]
# Invented rows in the released spreadsheet's layout (options as a dict literal, gold as a list).
ROWS = [
    [1001, "34岁", "女", "右下腹痛一天，伴发热。", repr({"A": "急性阑尾炎", "B": "胃炎", "C": "肾结石",
                                                    "D": "肠易激综合征", "E": "卵巢囊肿"}),
     "['A']", "检索结果一"],
    [1002, 5, "男", "咳嗽三天，夜间加重。", repr({"A": "支气管炎", "B": "哮喘", "C": "肺炎",
                                             "D": "过敏性鼻炎", "E": "百日咳"}), "['B']", None],
]


def _xlsx(path, rows, header=HEADER):
  openpyxl = pytest.importorskip("openpyxl")
  wb = openpyxl.Workbook()
  ws = wb.active
  ws.append(header)
  for r in rows:
    ws.append(r)
  wb.save(path)
  return str(path)


def test_jmed_xlsx_rebuilds_the_reference_items(tmp_path):
  path = _xlsx(tmp_path / "jmed.xlsx", ROWS)
  data = benchmarks.load_benchmark("jmed", path, shuffle_options=False)
  a, b = data.items
  assert a.id == "1001-0-diagnose-option" and b.id == "1002-1-diagnose-option"
  assert a.meta["raw_question"] == ("\n患者年龄：34岁\n患者性别：女\n患者病情摘要：右下腹痛一天，伴发热。\n\n"
                                    "根据上述患者的情况，请问最有可能的诊断是什么？\n")
  assert "患者年龄：5\n" in b.meta["raw_question"]  # a numeric cell as pandas prints it
  assert a.options == {"A": "急性阑尾炎", "B": "胃炎", "C": "肾结石", "D": "肠易激综合征", "E": "卵巢囊肿"}
  assert (a.gold, b.gold, a.language, a.source) == ("A", "B", "zh", "jmed")
  assert a.context is None
  ctx = benchmarks.load_benchmark("jmed", path, with_context=True).items[0]
  assert ctx.context == "检索结果一"
  shuffled = benchmarks.load_benchmark("jmed", path)  # JMED shuffles by default (gold bias)
  assert shuffled.report["shuffled"] == 2
  assert [it.gold_text for it in shuffled.items] == [a.gold_text, b.gold_text]
  # The reference prompt of an xlsx item: its question unstripped, "A. text" options.
  user = prompts.reference_user_prompt(a)
  assert "<Question>\n\n患者年龄：34岁" in user and "？\n\nA. 急性阑尾炎\nB. 胃炎" in user


@pytest.mark.parametrize("row,field,words", [
    ([1, "3岁", "男", "q", "{'A': 'x', 'B': 'y'", "['A']"], "final_options", "not a dict"),
    ([1, "3岁", "男", "q", "{'A': 'x', 'B': 'y'}", "['A', 'B']"], "final_correct_answer",
     "2 correct answers"),
    ([1, "3岁", "男", "q", "{'A': 'x', 'B': 'y'}", "A"], "final_correct_answer", "not a list"),
    (["x1", "3岁", "男", "q", "{'A': 'x', 'B': 'y'}", "['A']"], "diagId", "could not convert"),
    ([1, "3岁", "男", "q", "{'A': 'x', 'Z': 'y'}", "['A']"], "final_options", "not letters A-F"),
    ([1, "3岁", "男", "q", "{'A': 'x', 'B': 'y'}", "['C']"], "final_correct_answer",
     "gold 'C' is not among the options"),
])
def test_jmed_xlsx_errors_name_the_row_and_column(tmp_path, row, field, words):
  path = _xlsx(tmp_path / "bad.xlsx", [ROWS[0], row + [None]])
  with pytest.raises(ValueError) as e:
    benchmarks.load_benchmark("jmed", path)
  assert f"{path}:3: field '{field}'" in str(e.value) and words in str(e.value), str(e.value)
  skipped = benchmarks.load_benchmark("jmed", path, on_error="skip")
  assert len(skipped.items) == 1 and sum(skipped.report["skipped"].values()) == 1


def test_jmed_xlsx_header_and_dependency(tmp_path, monkeypatch):
  path = _xlsx(tmp_path / "nohead.xlsx", ROWS, header=HEADER[:4] + ["options"] + HEADER[5:])
  with pytest.raises(ValueError, match=rf"{path}:1: field 'final_options': missing column"):
    benchmarks.load_benchmark("jmed", path)
  not_xlsx = tmp_path / "fake.xlsx"
  not_xlsx.write_text("not a zip")
  with pytest.raises(ValueError, match="not a readable .xlsx workbook"):
    benchmarks.load_benchmark("jmed", str(not_xlsx))
  monkeypatch.setitem(sys.modules, "openpyxl", None)  # as if the extra were not installed
  with pytest.raises(ImportError, match=r"pip install 'citrus_jax\[xlsx\]'"):
    benchmarks.load_benchmark("jmed", path)


@pytest.mark.skipif(not os.path.isfile(os.path.join(SHARED, "unified", "jmed_sample20.jsonl")),
                    reason="the reference's converted JMED sample is not here")
def test_jmed_xlsx_matches_the_reference_conversion_of_real_items(tmp_path):
  """The 20 real JMED items the reference converted, written back as spreadsheet rows: our
  reader gives the same ids, questions, options and gold as the converter's JSONL."""
  import re
  rows = []
  with open(os.path.join(SHARED, "unified", "jmed_sample20.jsonl"), encoding="utf-8") as f:
    for line in f:
      d = json.loads(line)
      m = re.fullmatch(r"\n患者年龄：(.*)\n患者性别：(.*)\n患者病情摘要：(.*)\n\n根据上述患者的情况，请问最有可能的诊断是什么？\n",
                       d["Q"], re.S)
      diag, idx = d["id"].split("-")[:2]
      assert int(idx) == len(rows)
      rows.append([int(diag), *m.groups(), repr({o["op_idx"]: o["op_value"] for o in d["OP"]}),
                   repr(d["A"].split(",")), None])
  path = _xlsx(tmp_path / "jmed.xlsx", rows)
  ours = benchmarks.load_benchmark("jmed", path, shuffle_options=False).items
  theirs = benchmarks.load_benchmark(
      "jmed", os.path.join(SHARED, "unified", "jmed_sample20.jsonl"), shuffle_options=False).items
  assert len(ours) == 20
  for a, b in zip(ours, theirs):
    assert (a.id, a.question, a.options, a.gold) == (b.id, b.question, b.options, b.gold)
    assert prompts.reference_user_prompt(a) == prompts.reference_user_prompt(b)
