"""Benchmark readers on hand-written fixtures in each distribution format, shuffling, bad input."""
import collections
import json
import os
import pathlib
import subprocess
import sys

import pytest

from citrus_jax.eval import validate
from citrus_jax.eval.benchmarks import (BENCHMARKS, MCQItem, detect_benchmark, load_benchmark,
                                        shuffle_item)

FIX = pathlib.Path(__file__).parent / "fixtures" / "benchmarks"


def _jsonl(path):
  return [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]


# ------------------------------------------------------------------------------------------------
# Readers


def test_medqa():
  path = FIX / "medqa" / "medqa_fixture_test.jsonl"
  data = load_benchmark("medqa", str(path))
  rows = _jsonl(path)
  assert len(data) == len(rows) == 3
  assert [it.id for it in data] == ["00000", "00001", "00002"]
  for it, row in zip(data, rows):
    assert it.options == row["options"]
    assert it.gold == row["answer_idx"] and it.gold_text == row["answer"]
    assert it.language == "en" and it.source == "medqa" and it.context is None
    assert it.meta["meta_info"] == row["meta_info"]
  assert data.items[2].question.startswith("A child's temperature is 39.5°C")
  assert data.report["items"] == 3 and data.report["skipped"] == {}


def test_pubmedqa_all_test_and_context():
  path = FIX / "pubmedqa" / "ori_pqal.json"
  raw = json.load(open(path))
  data = load_benchmark("pubmedqa", str(path))
  assert [it.id for it in data] == list(raw)
  for it in data:
    assert it.options == {"A": "yes", "B": "no", "C": "maybe"}
    assert it.gold_text == raw[it.id]["final_decision"]
    assert it.question == raw[it.id]["QUESTION"] and it.context is None
  # Line numbers point at the PMID key of the pretty-printed file.
  lines = open(path).read().splitlines()
  assert all(f'"{it.id}"' in lines[it.meta["line"] - 1] for it in data)
  test = load_benchmark("pubmedqa_test", str(path))
  truth = json.load(open(FIX / "pubmedqa" / "test_ground_truth.json"))
  assert {it.id: it.gold_text for it in test} == truth
  assert all(it.source == "pubmedqa_test" for it in test)
  ctx = load_benchmark("pubmedqa", str(path), with_context=True)
  assert ctx.items[0].context == "\n".join(raw["1001"]["CONTEXTS"])


def test_mmlu_csv_quotes_commas_newlines():
  data = load_benchmark("mmlu_anatomy", str(FIX / "mmlu" / "anatomy_test.csv"))
  assert len(data) == 4
  q = data.items
  assert q[1].question == 'A "dished face" profile is often associated with'
  assert q[1].options["B"] == "a recessive maxilla, due to failure of elongation"
  assert q[2].question == "Which of the following statements is true?\n(Consider adult anatomy.)"
  assert q[2].options["B"] == "The liver has four lobes."  # trailing space removed
  assert q[2].options["C"].startswith('The lungs have "five" lobes')
  assert q[2].gold == "C"  # lower-case "c" in the file
  assert [it.meta["line"] for it in q] == [1, 2, 3, 5]  # the 3rd record spans lines 3-4
  assert [it.gold for it in q] == ["A", "B", "C", "D"]
  assert all(it.source == "mmlu_anatomy" for it in q)
  # Generic "mmlu" takes the subject from the file name; a UTF-8 BOM does not leak in.
  gen = load_benchmark("mmlu", str(FIX / "mmlu" / "medical_genetics_test.csv"))
  assert gen.items[0].source == "mmlu_medical_genetics"
  assert gen.items[0].question == "Which chromosome is the X?"
  assert gen.items[1].gold_text == "21"


def test_mmlu_pro_ten_options():
  path = FIX / "mmlu-pro" / "mmlu-pro_health.jsonl"
  data = load_benchmark("mmlu_pro_health", str(path))
  rows = [r for r in _jsonl(path) if r["category"] == "health"]
  assert len(data) == len(rows) == 3
  assert data.report["filtered"] == 1  # the biology row of the file
  for it, row in zip(data, rows):
    assert it.id == str(row["question_id"])
    assert list(it.options) == list("ABCDEFGHIJ"[:len(row["options"])])
    assert it.gold_text == row["options"][row["answer_index"]]
  assert [it.gold for it in data] == ["I", "C", "J"]
  bio = load_benchmark("mmlu_pro_biology", str(path))
  assert [it.id for it in bio] == ["7004"] and bio.items[0].gold_text == "Mitochondrion"


def test_medbullets_column_dict():
  path = FIX / "medbullets" / "medbullets_op4.json"
  cols = json.load(open(path))
  data = load_benchmark("medbullets_op4", str(path))
  assert [it.id for it in data] == ["00000", "00002", "00010"]  # numeric, not string, order
  for it in data:
    row = str(int(it.id))
    assert it.question == cols["question"][row]
    assert it.gold_text == cols["answer"][row]
    assert list(it.options) == ["A", "B", "C", "D"]
  op5 = load_benchmark("medbullets_op5", str(FIX / "medbullets" / "medbullets_op5.json"))
  assert [len(it.options) for it in op5] == [5, 5]
  assert op5.items[1].gold == "E" and op5.items[1].gold_text == "Furosemide"


def test_careqa_drops_empty_rows_and_reads_float_cop():
  path = FIX / "care_qa" / "care_qa_fixture.jsonl"
  data = load_benchmark("careqa", str(path))
  assert len(data) == 3
  assert data.report["dropped"] == {"empty_row": 2}
  assert data.report["rows"] == 5
  assert [it.id for it in data] == ["u-1", "u-2", "u-3"]
  assert [it.gold_text for it in data] == ["Calcium.", "Pulmonary vein.", "60-100/min."]
  assert data.items[0].meta["year"] == 2023 and data.items[0].meta["exam_id"] == 1
  for it in data:  # no stray "A." label in option texts
    assert not any(t[:2] in ("A.", "B.", "C.", "D.") for t in it.options.values())


def test_unified_layout():
  path = FIX / "unified" / "medqa_unified.jsonl"
  data = load_benchmark("unified", str(path))
  assert [it.source for it in data] == ["medqa", "medqa"]
  assert data.items[0].options["D"] == "Andexanet alfa"  # from op_text, display label removed
  assert data.items[0].gold_text == "Protamine sulfate"
  assert data.items[1].context is None
  ctx = load_benchmark("unified", str(path), with_context=True)
  assert ctx.items[1].context == "Rayleigh scattering.\nObserved daily."


def test_jmed_shuffled_by_default_and_gold_follows_text():
  path = str(FIX / "unified" / "jmed_fixture.jsonl")
  plain = load_benchmark("jmed", path, shuffle_options=False)
  assert all(it.gold == "A" for it in plain)  # as distributed
  assert all(it.language == "zh" and it.source == "jmed" for it in plain)
  assert plain.items[0].question.startswith("患者")  # surrounding newlines stripped
  data = load_benchmark("jmed", path)
  assert data.report["shuffled"] == len(data) == 6
  assert collections.Counter(it.gold for it in data)["A"] < len(data)
  for p, s in zip(plain, data):
    assert s.gold_text == p.gold_text
    assert sorted(s.options.values()) == sorted(p.options.values())
    assert list(s.options) == list("ABCDE")
    assert s.meta["orig_gold"] == "A"
  # Read through the generic name, JMED is still shuffled, identically.
  assert load_benchmark("unified", path).items == data.items
  # Deterministic per seed; another seed moves at least one item.
  assert load_benchmark("jmed", path).items == data.items
  other = load_benchmark("jmed", path, seed=1)
  assert [it.options for it in other] != [it.options for it in data]


def test_shuffle_off_by_default_except_jmed_and_on_request():
  path = str(FIX / "medqa" / "medqa_fixture_test.jsonl")
  assert load_benchmark("medqa", path).report["shuffled"] == 0
  on = load_benchmark("medqa", path, shuffle_options=True, seed=3)
  off = load_benchmark("medqa", path)
  assert on.report["shuffled"] == 3
  for a, b in zip(on, off):
    assert a.gold_text == b.gold_text and sorted(a.options.values()) == sorted(b.options.values())
  assert [a.options for a in on] != [b.options for b in off]
  assert {k for k, spec in BENCHMARKS.items() if spec.shuffle} == {"jmed"}


def test_shuffle_item_does_not_depend_on_python_hash_seed():
  item = MCQItem(id="q-17", question="q", options={k: f"text {k}" for k in "ABCDEFGHIJ"}, gold="C")
  code = ("from citrus_jax.eval.benchmarks import MCQItem, shuffle_item\n"
          "it = MCQItem(id='q-17', question='q', options={k: f'text {k}' for k in 'ABCDEFGHIJ'},"
          " gold='C')\n"
          "s = shuffle_item(it, 5); print(''.join(v[-1] for v in s.options.values()), s.gold)")
  outs = set()
  for hash_seed in ("1", "2"):
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    outs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, check=True).stdout.strip())
  assert len(outs) == 1
  order, gold = outs.pop().split()
  s = shuffle_item(item, 5)
  assert "".join(v[-1] for v in s.options.values()) == order and s.gold == gold
  assert s.options[s.gold] == "text C"
  assert sorted(order) == list("ABCDEFGHIJ") and order != "ABCDEFGHIJ"


def test_labels_stripped_only_when_every_option_has_its_own(tmp_path):
  ops = lambda texts: [{"op_idx": k, "op_value": v, "op_text": f"{k}. {v}"}
                       for k, v in zip("ABCD", texts)]
  rows = [{"exam_name": "x", "id": "1", "Q": "q1", "A": "B",
           "OP": ops(["A. one", "B. two", "C) three", "(D) four"])},
          {"exam_name": "x", "id": "2", "Q": "q2", "A": "A",
           "OP": ops(["A. fumigatus", "Candida albicans", "B. anthracis", "C. difficile"])}]
  path = tmp_path / "u.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in rows))
  data = load_benchmark("unified", str(path))
  assert data.items[0].options == {"A": "one", "B": "two", "C": "three", "D": "four"}
  assert data.items[1].options["A"] == "A. fumigatus"
  assert data.report["labels_stripped"] == 1


# ------------------------------------------------------------------------------------------------
# Bad input


def _write(tmp_path, name, lines):
  path = tmp_path / name
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return str(path)


def _medqa_row(**kw):
  row = {"question": "q?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"},
         "answer_idx": "A", "answer": "a", "meta_info": "step1"}
  row.update(kw)
  return json.dumps(row)


def test_errors_name_file_line_and_field(tmp_path):
  path = _write(tmp_path, "bad.jsonl", [_medqa_row(), _medqa_row(options={})])
  with pytest.raises(ValueError, match=r"bad\.jsonl:2: field 'options'"):
    load_benchmark("medqa", path)
  path = _write(tmp_path, "bad2.jsonl", [_medqa_row(answer_idx="E")])
  with pytest.raises(ValueError, match=r"bad2\.jsonl:1: field 'answer_idx'.*'E'"):
    load_benchmark("medqa", path)
  ops = [{"op_idx": k, "op_value": k.lower(), "op_text": k} for k in "AB"]
  u = lambda i: json.dumps({"exam_name": "x", "id": i, "Q": "q", "A": "A", "OP": ops})
  path = _write(tmp_path, "dup.jsonl", [u("7"), "", u("8"), u("7")])
  with pytest.raises(ValueError, match=r"dup\.jsonl:4: field 'id'.*'7'.*first at line 1"):
    load_benchmark("unified", path)
  path = _write(tmp_path, "gap.jsonl", [json.dumps(
      {"exam_name": "x", "id": 1, "Q": "q", "A": "A", "OP": [ops[0], dict(ops[1], op_idx="C")]})])
  with pytest.raises(ValueError, match=r"gap\.jsonl:1: field 'OP'.*consecutive"):
    load_benchmark("unified", path)


def test_csv_error_reports_record_start_line(tmp_path):
  path = _write(tmp_path, "anatomy_test.csv",
                ["q1,a,b,c,d,A", '"multi', 'line question",a,b,c,A'])
  with pytest.raises(ValueError, match=r"anatomy_test\.csv:2: field '<row>'.*got 5"):
    load_benchmark("mmlu_anatomy", path)


def test_careqa_bad_cop(tmp_path):
  row = lambda cop: json.dumps({"question": "q", "op1": "a", "op2": "b", "op3": "c", "op4": "d",
                                "cop": cop, "unique_id": str(cop)})
  with pytest.raises(ValueError, match=r"c\.jsonl:1: field 'cop'.*5"):
    load_benchmark("careqa", _write(tmp_path, "c.jsonl", [row(5.0)]))
  with pytest.raises(ValueError, match=r"d\.jsonl:1: field 'cop'.*2\.5"):
    load_benchmark("careqa", _write(tmp_path, "d.jsonl", [row(2.5)]))


def test_json_formats_report_the_line_of_the_row(tmp_path):
  raw = json.load(open(FIX / "pubmedqa" / "ori_pqal.json"))
  raw["1003"]["final_decision"] = "perhaps"
  path = tmp_path / "ori_pqal.json"
  path.write_text(json.dumps(raw, indent=2))
  line = next(i for i, l in enumerate(path.read_text().splitlines(), 1) if '"1003"' in l)
  with pytest.raises(ValueError, match=rf"ori_pqal\.json:{line}: field 'final_decision'"):
    load_benchmark("pubmedqa", str(path))
  cols = json.load(open(FIX / "medbullets" / "medbullets_op4.json"))
  cols["answer_idx"]["2"] = "F"
  path = tmp_path / "medbullets_op4.json"
  path.write_text(json.dumps(cols))
  with pytest.raises(ValueError, match=r"medbullets_op4\.json:1: field 'answer_idx'.*'F'"):
    load_benchmark("medbullets_op4", str(path))


def test_skip_counts_per_reason(tmp_path):
  path = _write(tmp_path, "mixed.jsonl", [
      _medqa_row(), "{not json", _medqa_row(options={}), _medqa_row(answer_idx="Z"),
      _medqa_row(question="  "), _medqa_row(question="last")])
  data = load_benchmark("medqa", path, on_error="skip")
  assert len(data) == 2
  assert data.report["skipped"] == {"bad_json": 1, "no_options": 1, "gold_not_in_options": 1,
                                    "empty_question": 1}
  assert data.report["rows"] == 6
  assert any("mixed.jsonl:4: field 'answer_idx'" in m for m in data.report["messages"])
  ops = [{"op_idx": "A", "op_value": "x"}, {"op_idx": "B", "op_value": "y"}]
  u = lambda i: json.dumps({"exam_name": "x", "id": i, "Q": "q", "A": "B", "OP": ops})
  dup = load_benchmark("unified", _write(tmp_path, "d.jsonl", [u(1), u(1), u(2)]),
                       on_error="skip")
  assert [it.id for it in dup] == ["1", "2"] and dup.report["skipped"] == {"duplicate_id": 1}
  with pytest.raises(ValueError, match="on_error"):
    load_benchmark("medqa", path, on_error="ignore")
  with pytest.raises(ValueError, match="unknown benchmark"):
    load_benchmark("medqa2", path)


# ------------------------------------------------------------------------------------------------
# Registry, detection, validation script


def test_registry_names():
  subjects = ["anatomy", "clinical_knowledge", "college_biology", "college_medicine",
              "medical_genetics", "professional_medicine"]
  names = {"medqa", "pubmedqa", "pubmedqa_test", "mmlu_pro_health", "mmlu_pro_biology",
           "medbullets_op4", "medbullets_op5", "careqa", "jmed", "unified"}
  assert names | {f"mmlu_{s}" for s in subjects} <= set(BENCHMARKS)
  assert BENCHMARKS["careqa"].expected == 5621 and BENCHMARKS["medqa"].expected == 1273


def test_detect_benchmark():
  expected = {
      "medqa/medqa_fixture_test.jsonl": "medqa",
      "pubmedqa/ori_pqal.json": "pubmedqa",
      "pubmedqa/test_ground_truth.json": None,
      "mmlu/anatomy_test.csv": "mmlu_anatomy",
      "mmlu/medical_genetics_test.csv": "mmlu_medical_genetics",
      "mmlu-pro/mmlu-pro_health.jsonl": "mmlu_pro_health",
      "medbullets/medbullets_op4.json": "medbullets_op4",
      "medbullets/medbullets_op5.json": "medbullets_op5",
      "care_qa/care_qa_fixture.jsonl": "careqa",
      "unified/jmed_fixture.jsonl": "jmed",
      "unified/medqa_unified.jsonl": "unified",
  }
  for rel, name in expected.items():
    assert detect_benchmark(str(FIX / rel)) == name, rel
  data = load_benchmark("auto", str(FIX / "care_qa" / "care_qa_fixture.jsonl"))
  assert data.name == "careqa" and len(data) == 3


def test_validate_script(capsys):
  assert validate.main(["--data_dir", str(FIX), "--no_expected"]) == 0
  out = capsys.readouterr().out
  table = {}
  for line in out.splitlines()[2:]:
    parts = line.split()
    if len(parts) > 3 and parts[2].isdigit():
      table[(parts[0], parts[1])] = int(parts[2])
  assert table[("care_qa/care_qa_fixture.jsonl", "careqa")] == 3
  assert table[("pubmedqa/ori_pqal.json", "pubmedqa")] == 4
  assert table[("pubmedqa/ori_pqal.json", "pubmedqa_test")] == 2
  assert table[("mmlu-pro/mmlu-pro_health.jsonl", "mmlu_pro_health")] == 3
  assert table[("unified/medqa_unified.jsonl", "unified:medqa")] == 2
  assert len(table) == 11
  assert "empty_row=2" in out
  # Against the paper's counts the small fixtures are flagged.
  assert validate.main(["--data_dir", str(FIX)]) == 1
  assert "MISMATCH" in capsys.readouterr().out
