"""JMED-style benchmark construction with a scripted backend on the shipped invented dialogues:
what is kept and dropped (leak, duplicate, ambiguous, unparsed, too few options), the unified
file the eval readers read and the eval CLI scores, provenance, resume after failed calls, bad
input, and the quality checks on their own."""
import json
import os
import subprocess
import sys

import pytest

from citrus_jax.eval import bench_quality as q
from citrus_jax.eval import benchmarks, harness
from citrus_jax.eval import build_benchmark as bb
from citrus_jax.synth.llm import FunctionLLM, LLMError
from configs import benchmark_build as build_config
from configs import eval as eval_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "benchmark_build")
DIALOGUES = os.path.join(FIX, "dialogues.jsonl")
LOOKALIKES = os.path.join(FIX, "lookalikes.json")

PROPOSED = {  # what the scripted "distractors" role proposes (incl. look-alikes of the gold)
    "Acute otitis media": "1. Otitis media\n2. Otitis externa\n3. Acute mastoiditis\n"
                          "4. Acute otitis media with effusion (glue ear)\n5. Dental abscess",
    "Herpes zoster": "- Contact dermatitis\n- Herpes simplex\n- Costochondritis - chest wall\n"
                     "- herpes zoster",
    "急性阑尾炎": "急性胃肠炎\n肠系膜淋巴结炎\n阑尾炎",
}


class Script:
  """Plays the roles by rule: the case writer copies the consultation (so a doctor naming the
  diagnosis leaks it) and fails on migraine; the checker answers the gold's letter, and two
  letters for the hyperthyroidism case; `fail` makes calls of a role raise LLMError."""

  def __init__(self, fail=None):
    self.sources = {s.id: s for s in bb.read_sources(DIALOGUES)[0]}
    self.fail = fail or set()
    self.requests = []

  def __call__(self, request):
    self.requests.append(request)
    text = request.messages[-1]["content"]
    if request.tag == "case":
      body = text.split(":\n", 1)[1].split("\n\nWrite a concise", 1)[0]
      if any(s.id in self.fail and s.text == body for s in self.sources.values()):
        raise LLMError("scripted failure")
      if "throbbing" in body:
        return "I am unable to summarise this consultation."
      lines = [ln.split(": ", 1)[1] for ln in body.splitlines()]
      return f"**Summary:** {' '.join(lines)}\nQuestion: What is the most likely diagnosis?"
    if request.tag == "distractors":
      gold = text.split("Correct diagnosis: ", 1)[1].split("\n", 1)[0]
      return PROPOSED.get(gold, "")
    if request.tag == "check":
      src = next(s for s in self.sources.values()
                 if s.text.splitlines()[0].split(": ", 1)[1] in text)
      letters = [ln[0] for ln in text.splitlines() if ln[1:3] == ". " and
                 ln[3:] == src.diagnosis]
      other = "B" if letters[0] == "A" else "A"
      return f"Answer: {letters[0]}, {other}" if src.diagnosis == "Hyperthyroidism" else letters[0]
    raise AssertionError(request.tag)


def _config(tmp_path, **kw):
  c = build_config.get_config("openai")
  c.out_dir = str(tmp_path / "build")
  c.workers = 1
  c.input.paths = DIALOGUES
  c.input.lookalikes = LOOKALIKES
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def _read(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_build_keeps_drops_and_writes_unified(tmp_path, capsys):
  script = Script()
  stats = bb.run(_config(tmp_path), FunctionLLM(script))
  assert "benchmark: 9 kept of 13 sources" in capsys.readouterr().out
  assert stats["dropped_reasons"] == {"leak": 1, "duplicate": 1, "unparsed_case": 1,
                                      "ambiguous": 1}
  per = stats["per_source"]
  assert per["dlg-03"] == {"status": "dropped", "reason": "leak"}  # "... most likely gout"
  assert per["dlg-12"]["reason"] == "duplicate" and per["dlg-13"]["reason"] == "unparsed_case"
  assert per["dlg-06"]["reason"] == "ambiguous"
  out = tmp_path / "build"
  items = _read(out / "benchmark.jsonl")
  assert [it["id"] for it in items] == ["dlg-01", "dlg-02", "dlg-04", "dlg-05", "dlg-07",
                                        "dlg-08", "dlg-09", "dlg-10", "dlg-11"]
  src = {s.id: s for s in bb.read_sources(DIALOGUES)[0]}
  for it in items:
    ops = {o["op_idx"]: o["op_value"] for o in it["OP"]}
    assert list(ops) == list("ABCDE") and ops[it["A"]] == src[it["id"]].diagnosis  # gold kept
    assert len({q.norm(v) for v in ops.values()}) == 5
    assert not any(q.overlapping(v, ops[it["A"]]) for k, v in ops.items() if k != it["A"])
    assert not q.leaks(it["Q"], ops[it["A"]])
  assert sum(stats["gold_letters"].values()) == 9 and len(stats["gold_letters"]) >= 3
  # The readers read it: the unified benchmark, sources named by exam_name.
  bench = benchmarks.load_benchmark("unified", str(out / "benchmark.jsonl"))
  assert [i.id for i in bench.items] == [it["id"] for it in items]
  assert {i.source for i in bench.items} == {"built_mcq"}
  assert benchmarks.detect_benchmark(str(out / "benchmark.jsonl")) == "unified"
  # Provenance: every source once, where each option came from, what the roles said.
  prov = {r["id"]: r for r in _read(out / "provenance.jsonl")}
  assert set(prov) == set(src) and prov["dlg-01"]["source"] == f"{DIALOGUES}:1"
  otitis = prov["dlg-07"]
  assert otitis["set_aside"]["like_gold"] == 2  # "Otitis media", "... with effusion"
  # Order of look-alikes: the record's, the role's, the table's, the department's, the pool's.
  assert sorted(otitis["origins"].values()) == ["department", "gold", "llm", "llm", "llm"]
  assert sorted(prov["dlg-01"]["origins"].values()) == ["department", "gold", "pool", "record",
                                                         "record"]
  assert sorted(prov["dlg-04"]["origins"].values()) == ["department", "gold", "table", "table",
                                                         "table"]
  assert json.load(open(out / "stats.json"))["kept"] == 9


def test_eval_cli_scores_the_built_benchmark(tmp_path):
  bb.run(_config(tmp_path), FunctionLLM(Script()))
  path = str(tmp_path / "build" / "benchmark.jsonl")
  items = _read(path)
  preds = tmp_path / "preds.jsonl"
  with open(preds, "w", encoding="utf-8") as f:  # gold text for the first 6, letter "A" after
    for k, it in enumerate(items):
      gold = next(o["op_value"] for o in it["OP"] if o["op_idx"] == it["A"])
      out = f"<answer>{gold}</answer>" if k < 6 else "<answer>A</answer>"
      f.write(json.dumps({"id": it["id"], "output": out}, ensure_ascii=False) + "\n")
  want = 6 + sum(it["A"] == "A" for it in items[6:])
  cmd = [sys.executable, "-m", "citrus_jax.main", "--config=configs/eval.py:tiny",
         f"--config.workdir={tmp_path / 'eval'}", "--config.eval.benchmarks=unified",
         f"--config.eval.data_paths={path}", f"--config.eval.predictions={preds}",
         "--config.progress=False"]
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  summary = json.load(open(os.path.join(res.stdout.strip().splitlines()[-1], "summary.json")))
  s = summary["benchmarks"]["built_mcq"]
  assert (s["n"], s["n_correct"]) == (9, want) and len(s["acc_ci95"]) == 2


def test_resume_after_failed_calls(tmp_path):
  c = _config(tmp_path)
  first = bb.run(c, FunctionLLM(Script(fail={"dlg-02", "dlg-09"})))
  assert first["errors"] == 2 and "dlg-02" not in first["per_source"]
  again = Script()
  second = bb.run(c, FunctionLLM(again))
  assert second["errors"] == 0 and second["run"]["resumed"] == 11
  assert sum(r.tag == "case" for r in again.requests) == 2  # only the two uncommitted sources
  fresh = bb.run(_config(tmp_path / "fresh"), FunctionLLM(Script()))
  resumed_items = _read(tmp_path / "build" / "benchmark.jsonl")
  assert resumed_items == _read(tmp_path / "fresh" / "build" / "benchmark.jsonl")
  assert second["dropped_reasons"] == fresh["dropped_reasons"]


def test_too_few_options_and_no_check(tmp_path):
  c = _config(tmp_path, n_options=10)
  c.input.limit = 4  # a pool of 3 other diagnoses cannot fill 9 distractors
  c.input.lookalikes = ""
  c.quality.llm_check = False
  stats = bb.run(c, FunctionLLM(Script()))
  assert stats["kept"] == 0
  assert stats["dropped_reasons"] == {"leak": 1, "too_few_options": 3}


def test_bad_input_names_file_line_and_field(tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"id": "a", "diagnosis": "Flu", "record": "Fever."}\n'
                 '{"id": "b", "record": "Cough."}\n'
                 '{"id": "c", "diagnosis": "Gout", "dialogue": [{"role": "patient"}]}\n'
                 '{"id": "a", "diagnosis": "Flu", "record": "Again."}\n')
  with pytest.raises(ValueError, match=r"bad\.jsonl:2: field 'diagnosis': missing"):
    bb.read_sources(str(bad))
  with pytest.raises(ValueError, match="duplicate source ids"):
    bb.read_sources(str(bad), on_error="skip")
  bad.write_text("\n".join(bad.read_text().splitlines()[:3]) + "\n")
  sources, skipped = bb.read_sources(str(bad), on_error="skip")
  assert [s.id for s in sources] == ["a"] and skipped == {"missing_field": 1, "bad_field": 1}
  with pytest.raises(ValueError, match="n_options"):
    bb.BuildOptions(n_options=1).validate()
  res = subprocess.run([sys.executable, "-m", "citrus_jax.eval.build_benchmark",
                        "--config=configs/benchmark_build.py",
                        "--config.input.paths=/nonexistent.jsonl",
                        f"--config.out_dir={tmp_path / 'o'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert res.returncode == 2 and "/nonexistent.jsonl does not exist" in res.stderr


def test_quality_checks():
  assert q.leaks("Chest radiograph: right lower lobe pneumonia, community-acquired.",
                 "Community-acquired pneumonia") is False
  assert q.leaks("Findings fit acquired pneumonia.", "Community-acquired pneumonia")
  assert q.leaks("考虑急性阑尾炎可能", "急性阑尾炎") and q.leaks("阑尾炎待排", "急性阑尾炎")
  assert not q.leaks("右下腹压痛，反跳痛", "急性阑尾炎")
  assert q.overlapping("Otitis media", "Acute otitis media") and not q.overlapping("Otitis externa",
                                                                                 "Otitis media")
  chosen, aside = q.select_distractors("Gout", [("gout", "llm"), ("Pseudogout", "llm"),
                                                ("Septic arthritis", "record"),
                                                ("septic arthritis.", "llm"), ("", "llm"),
                                                ("Cellulitis", "pool")], 3)
  assert chosen == [("Pseudogout", "llm"), ("Septic arthritis", "record"), ("Cellulitis", "pool")]
  assert aside == {"like_gold": 1, "overlap": 1, "empty": 1}
  cases = [("1", "a b c d e f g h"), ("2", "x a b c d e f g h y"), ("3", "totally other words here ok")]
  assert q.find_duplicates(cases, n=5, threshold=0.5) == {"2": "1"}
  assert bb.parse_case("Summary: A 30-year-old.\nQuestion: Diagnosis?") == ("A 30-year-old.",
                                                                            "Diagnosis?")
  assert bb.parse_case("no labels") is None
  assert bb.parse_list("1. Otitis externa (ear canal)\n- Mastoiditis - rare\n\nB) Sinusitis") == [
      "Otitis externa", "Mastoiditis", "Sinusitis"]
  assert bb.parse_letters("Answer: B, D", "ABCDE") == {"B", "D"}
  assert bb.parse_letters("None are correct", "ABCDE") is None
