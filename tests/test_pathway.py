"""Expert-pathway search with a deterministic scripted backend playing every role by rule:
retry with feedback, backtracking, judge stop, verifier drop, resume after a crash, bad input."""
import json
import os

import pytest

from citrus_jax.data import sft as sft_data
from citrus_jax.synth import items as items_lib
from citrus_jax.synth import pathway, roles
from citrus_jax.synth.items import SynthItem
from citrus_jax.synth.llm import CachedLLM, FunctionLLM, LLMError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "synth")
PROMPTS = os.path.join(FIXTURES, "prompts")


def fields(request) -> dict:
  """KEY=value lines of the fixture prompts."""
  text = request.messages[-1]["content"]
  return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


class Script:
  """Plays the roles by rule. The generator's output at a point is looked up in
  tree[(chain so far, alternatives tried, attempt)] ("BAD" when absent). The critic rejects steps
  containing BAD (feedback "fix <step>"); the judge stops after a step containing DONE; the
  rewriter answers what follows "ANSWER:" in the last step (no tags if a step says NOANSWER); the
  LLM verifier says 1 iff the truth is inside the answer."""

  def __init__(self, tree=None, crash_after=None):
    self.tree = tree or {}
    self.crash_after = crash_after
    self.requests = []

  def __call__(self, request):
    if self.crash_after is not None and len(self.requests) >= self.crash_after:
      raise KeyboardInterrupt("simulated crash")
    self.requests.append(request)
    f = fields(request)
    role = f["ROLE"]
    assert role == request.tag
    if role == "rewrite_question":
      return f"OPEN {f['Q']}"
    if role == "step":
      tried = len(f["TRIED"].split(" || ")) if f["TRIED"] else 0
      return self.tree.get((f["Q"], f["CHAIN"], tried, int(f["ATTEMPT"])), "BAD default")
    if role == "critic":
      return (f"Feedback: fix {f['STEP']}\nRating: 0" if "BAD" in f["STEP"]
              else "Feedback: good\nRating: 1")
    if role == "judge":
      last = f["CHAIN"].split(" || ")[-1]
      return f"Reason: ...\nComplete: {int('DONE' in last)}"
    if role == "rewrite_chain":
      last = f["CHAIN"].split(" || ")[-1]
      if "NOANSWER" in f["CHAIN"]:
        return "I thought about it but gave no answer."
      answer = last.split("ANSWER:")[1].split(" DONE")[0].strip() if "ANSWER:" in last else "?"
      return f"Let me think. {f['CHAIN']}\n<answer>{answer}</answer>"
    if role == "verify":
      return f"Verdict: {int(f['TRUTH'].lower() in f['ANSWER'].lower())}"
    raise AssertionError(role)

  def by_role(self, role):
    return [r for r in self.requests if r.tag == role]


def opts(**search):
  return pathway.JobOptions(search=pathway.SearchOptions(**search), prompts_dir=PROMPTS, workers=1)


def open_item(i="q1", question="Q1", answer="Flu"):
  return SynthItem(id=i, question=question, answer=answer)


def run(tmp_path, items, script, **search):
  llm = FunctionLLM(script)
  stats = pathway.run_job(items, llm, str(tmp_path / "out"), opts(**search))
  records = [json.loads(l) for l in open(tmp_path / "out" / "provenance.jsonl")]
  return stats, {r["id"]: r for r in records}


# ------------------------------------------------------------------------------------------------
# Templates and parsers.


def test_default_templates_render_and_ground_truth_reaches_only_critic_and_verifier():
  prompts = roles.load_prompts()
  truth = "Zebra fever"
  chain = [{"step": "Facts: fever.", "feedback": "Consider travel."}]
  values = {
      "rewrite_question": dict(question="Q? Which of the following", options={"A": truth},
                               options_text=f"A. {truth}", answer=truth),
      "step": dict(question="Case text", chain=chain, depth=2, retry=None, tried=[], attempt=0),
      "critic": dict(question="Case text", ground_truth=truth, chain=chain, step="S", depth=2),
      "judge": dict(question="Case text", chain=chain),
      "rewrite_chain": dict(question="Case text", chain=chain),
      "verify": dict(question="Case text", ground_truth=truth, answer="zebra"),
  }
  for role, v in values.items():
    messages = prompts[role].render(**v)
    assert messages[-1]["role"] == "user" and messages[0]["role"] == "system"
    text = "\n".join(m["content"] for m in messages)
    assert "Case text" in text or role == "rewrite_question"
    assert (truth in text) == (role in ("rewrite_question", "critic", "verify")), role
    assert "{{" not in text and "{%" not in text
  step = prompts["step"].render(**values["step"])[-1]["content"]
  assert "Consider travel." in step  # the generator sees the accepted feedback


def test_template_that_leaks_the_truth_or_is_malformed_fails_at_load(tmp_path):
  leak = tmp_path / "step.txt"
  leak.write_text("[user]\n{{ question }} {{ ground_truth }}\n")
  with pytest.raises(ValueError, match=r"step\.txt.*ground_truth"):
    roles.load_prompts(str(tmp_path))
  leak.write_text("[system]\nok\n[user]\nline\n{% if chain %}\n")
  with pytest.raises(ValueError, match=r"step\.txt:5: template syntax error"):
    roles.load_prompts(str(tmp_path))
  leak.write_text("no sections\n")
  with pytest.raises(ValueError, match=r"step\.txt: needs a \[user\] section"):
    roles.load_prompts(str(tmp_path))
  leak.write_text("[user]\nCase {{ question }}; step {{ depth }} try {{ attempt }}\n")
  p = roles.load_prompts(str(tmp_path))  # a valid override is used, the rest stay default
  assert p["step"].path == str(leak) and p["critic"].path.startswith(roles.PROMPTS_DIR)


@pytest.mark.parametrize("text,want", [
    ("Feedback: fine\nRating: 1", 1), ("**Rating:** 0", 0), ("Rating: yes", 1),
    ("rating = 1\n... rating: 0", 0), ("1", 1), ("Score: 1", 1), ("I like it", None),
    ("", None), ("Rating: maybe", None)])
def test_parse_flag(text, want):
  assert roles.parse_flag(text, ("rating", "score")) == want


def test_parse_critic_step_and_final():
  assert roles.parse_critic("Feedback: think about the\nx-ray.\nRating: 1") == \
      (1, "think about the\nx-ray.")
  assert roles.parse_critic("Consider the rash.\nRating: 0") == (0, "Consider the rash.")
  assert roles.parse_step("**Step 2:** Could it be X?") == "Could it be X?"
  assert roles.parse_final("<think>Wait, hmm.</think>\n<answer>Flu</answer>") == ("Wait, hmm.",
                                                                                 "Flu")
  assert roles.parse_final("Hmm.\n<answer>A</answer> later <answer>B</answer>") == ("Hmm.", "B")
  assert roles.parse_final("no tags here") is None
  assert roles.parse_final("<answer>Flu</answer>") is None  # no monologue
  assert roles.open_answers_match("The most likely diagnosis is influenza.", "Influenza")
  assert not roles.open_answers_match("Not influenza", "Influenza")


# ------------------------------------------------------------------------------------------------
# Search behaviour.


def test_rejected_step_is_retried_with_the_critics_feedback(tmp_path):
  script = Script({("Q1", "", 0, 0): "BAD guess", ("Q1", "", 0, 1): "facts ANSWER: Flu DONE"})
  stats, rec = run(tmp_path, [open_item()], script, retries=2)
  r = rec["q1"]
  assert r["status"] == "kept"
  assert [s["step"] for s in r["chain"]] == ["facts ANSWER: Flu DONE"]
  steps = script.by_role("step")
  assert len(steps) == 2 and fields(steps[1])["RETRY"] == "fix BAD guess"
  assert r["counts"]["retries"] == 1 and r["counts"]["rejected"] == 1
  assert r["rejected"][0]["step"] == "BAD guess"
  assert stats["acceptance"]["critic"] == {"accepted": 1, "calls": 2, "rate": 0.5}
  assert stats["kept_rate"] == 1.0


def test_dead_end_backtracks_to_a_sibling(tmp_path):
  tree = {("Q1", "", 0, 0): "A1",  # A1 is accepted, but nothing after it is
          ("Q1", "", 1, 0): "B1",
          ("Q1", "B1", 0, 0): "B2 ANSWER: Flu DONE"}
  script = Script(tree)
  stats, rec = run(tmp_path, [open_item()], script, width=2, retries=1, depth=4)
  r = rec["q1"]
  assert r["status"] == "kept" and [s["step"] for s in r["chain"]] == ["B1", "B2 ANSWER: Flu DONE"]
  # After A1 dead-ended, the root's next generation was told A1 was tried.
  root_second = [f for f in map(fields, script.by_role("step")) if f["CHAIN"] == "" and f["TRIED"]]
  assert root_second and root_second[0]["TRIED"] == "A1"
  # Under A1: 2 siblings x 2 attempts, all rejected.
  assert sum(fields(q)["CHAIN"] == "A1" for q in script.by_role("step")) == 4
  assert r["counts"]["backtracks"] >= 1 and r["counts"]["dead_ends"] >= 1
  assert stats["search"]["backtracks"] == r["counts"]["backtracks"]


def test_judge_stops_the_chain_and_min_depth_delays_it(tmp_path):
  tree = {("Q1", "", 0, 0): "s1 DONE ANSWER: Flu", ("Q1", "s1 DONE ANSWER: Flu", 0, 0):
          "s2 ANSWER: Flu DONE", ("Q1", "s1 DONE ANSWER: Flu || s2 ANSWER: Flu DONE", 0, 0): "s3"}
  _, rec = run(tmp_path / "a", [open_item()], Script(tree), depth=5)
  assert len(rec["q1"]["chain"]) == 1 and rec["q1"]["counts"]["judge_calls"] == 1
  script = Script(tree)
  _, rec = run(tmp_path / "b", [open_item()], script, depth=5, min_depth=2)
  assert len(rec["q1"]["chain"]) == 2 and rec["q1"]["counts"]["judge_calls"] == 1
  assert len(script.by_role("step")) == 2  # stopped: no third step generated


def test_verifier_drops_a_wrong_answer_and_search_can_find_another(tmp_path):
  tree = {("Q1", "", 0, 0): "wrong ANSWER: Measles DONE",
          ("Q1", "", 1, 0): "right ANSWER: Flu DONE"}
  stats, rec = run(tmp_path / "a", [open_item()], Script(tree), max_complete=1)
  assert rec["q1"]["status"] == "dropped" and rec["q1"]["reason"] == "verifier_mismatch"
  assert stats["dropped_reasons"] == {"verifier_mismatch": 1}
  assert stats["acceptance"]["verifier"]["rate"] == 0.0
  assert not open(tmp_path / "a" / "out" / "sft.jsonl").read()
  stats, rec = run(tmp_path / "b", [open_item()], Script(tree), max_complete=2)
  assert rec["q1"]["status"] == "kept" and rec["q1"]["answer"] == "Flu"
  assert rec["q1"]["counts"]["complete_chains"] == 2
  assert stats["acceptance"]["verifier"] == {"accepted": 1, "calls": 2, "rate": 0.5}


def test_mcq_is_rewritten_and_verified_by_rule(tmp_path):
  item = SynthItem("m1", "Fever and lobar consolidation. Which of the following?",
                   "Lobar pneumonia", {"A": "Asthma", "B": "Lobar pneumonia", "C": "Sarcoidosis"},
                   "B")
  q = "OPEN Fever and lobar consolidation. Which of the following?"
  tree = {(q, "", 0, 0): "wrong ANSWER: asthma DONE", (q, "", 1, 0): "ok ANSWER: (B) DONE"}
  script = Script(tree)
  stats, rec = run(tmp_path, [item], script, max_complete=2)
  r = rec["m1"]
  assert r["status"] == "kept" and r["open_question"] == q
  assert r["verifier"] == {"match": True, "method": "rule", "pred": "B"}
  assert not script.by_role("verify")  # both answers were mapped to letters by rule
  for req in script.by_role("step") + script.by_role("judge"):  # options never shown
    assert "Asthma" not in req.messages[-1]["content"]
  assert stats["acceptance"]["rewrite_question"]["rate"] == 1.0
  (line,) = open(tmp_path / "out" / "sft.jsonl").read().splitlines()
  sft = json.loads(line)
  assert q in sft["input"] and "<Question>" in sft["input"]
  assert sft["target"].startswith("<think>\n")
  assert sft["target"].endswith("\n</think>\n<answer>\n(B)\n</answer>")
  msgs = sft_data.to_messages(sft)  # what the SFT stage reads
  assert [m["role"] for m in msgs] == ["user", "assistant"]


def test_other_drop_reasons(tmp_path):
  items = [open_item("noans", "Q2"), open_item("exhaust", "Q3"), open_item("budget", "Q4"),
           open_item("llmver", "Q5", "Influenza A")]
  tree = {("Q2", "", 0, 0): "NOANSWER DONE",
          ("Q5", "", 0, 0): "ANSWER: influenza A virus infection DONE"}
  script = Script(tree)
  stats, rec = run(tmp_path, items[:2] + items[3:], script, max_complete=1, width=2, depth=2)
  assert rec["noans"]["reason"] == "rewriter_no_answer"
  assert rec["exhaust"]["reason"] == "search_exhausted"
  assert rec["llmver"]["status"] == "kept" and rec["llmver"]["verifier"]["method"] == "llm"
  _, rec = run(tmp_path / "b", [items[2]], Script(), max_generations=3, retries=5)
  assert rec["budget"]["reason"] == "budget_exhausted"
  assert rec["budget"]["counts"]["step_calls"] == 3


# ------------------------------------------------------------------------------------------------
# The job: resume, concurrency, statistics.


def _items(k):
  return [open_item(f"i{j}", f"Q{j}", "Flu") for j in range(k)]


def _tree(k):
  tree = {}
  for j in range(k):  # item j: a retry, then (for odd j) a dead end and a sibling
    tree[(f"Q{j}", "", 0, 1)] = f"a{j}" + ("" if j % 2 else " ANSWER: Flu DONE")
    tree[(f"Q{j}", "", 1, 0)] = f"b{j} ANSWER: Flu DONE"
  return tree


def test_resume_after_crash_loses_and_duplicates_nothing(tmp_path):
  k = 6
  clean = Script(_tree(k))
  stats_clean, _ = run(tmp_path / "clean", _items(k), clean, retries=1)
  total_calls = len(clean.requests)
  out = tmp_path / "crash" / "out"

  crashing = Script(_tree(k), crash_after=total_calls // 2)
  llm = CachedLLM(FunctionLLM(crashing), str(out / "llm_cache.jsonl"))
  with pytest.raises(KeyboardInterrupt):
    pathway.run_job(_items(k), llm, str(out), opts(retries=1))
  llm.close()
  done_before = len(open(out / "provenance.jsonl").readlines())
  assert 0 < done_before < k
  with open(out / "provenance.jsonl", "a") as f:
    f.write('{"id": "i5", "status": "ke')  # torn line of a kill during a write
  with open(out / "llm_cache.jsonl", "a") as f:
    f.write('{"key": "abc", "resp')

  resumed = Script(_tree(k))
  llm = CachedLLM(FunctionLLM(resumed), str(out / "llm_cache.jsonl"))
  stats = pathway.run_job(_items(k), llm, str(out), opts(retries=1))
  llm.close()
  # No call was paid twice: first run + second run == one clean run.
  assert len(crashing.requests) + len(resumed.requests) == total_calls
  assert stats["run"]["resumed_items"] == done_before
  assert stats["run"]["cache_hits"] > 0
  ids = [json.loads(l)["id"] for l in open(out / "provenance.jsonl")]
  assert sorted(ids) == sorted(f"i{j}" for j in range(k))
  assert open(out / "sft.jsonl").read() == open(tmp_path / "clean" / "out" / "sft.jsonl").read()
  for key in ("items", "acceptance", "chain_length", "dropped_reasons", "search"):
    assert stats[key] == stats_clean[key], key
  assert stats["tokens"]["total"] == stats_clean["tokens"]["total"]


def test_workers_do_not_change_the_output(tmp_path):
  k = 8
  outs = []
  for workers in (1, 4):
    o = opts(retries=1)
    o.workers = workers
    d = tmp_path / f"w{workers}"
    stats = pathway.run_job(_items(k), FunctionLLM(Script(_tree(k))), str(d), o)
    outs.append((open(d / "sft.jsonl").read(), stats["acceptance"], stats["chain_length"]))
  assert outs[0] == outs[1]
  assert outs[0][2]["kept"] == {"1": k}
  ids = [json.loads(l)["id"] for l in outs[0][0].splitlines()]
  assert ids == [f"i{j}" for j in range(k)]  # input order, whatever finished first


def test_llm_errors_leave_items_uncommitted(tmp_path):
  def flaky(request):
    if "Q1" in request.messages[-1]["content"]:
      raise LLMError("server down")
    return Script(_tree(2))(request)
  stats = pathway.run_job(_items(2), FunctionLLM(flaky), str(tmp_path), opts(retries=1))
  assert stats["items"]["errors"] == 1 and "i1" in stats["errors"]
  assert [json.loads(l)["id"] for l in open(tmp_path / "provenance.jsonl")] == ["i0"]
  stats = pathway.run_job(_items(2), FunctionLLM(Script(_tree(2))), str(tmp_path),
                          opts(retries=1))
  assert stats["items"]["committed"] == 2 and stats["items"]["errors"] == 0


# ------------------------------------------------------------------------------------------------
# Input.


def test_read_items_formats():
  items, report = items_lib.read_items(os.path.join(FIXTURES, "items.jsonl"))
  by_id = {it.id: it for it in items}
  assert list(by_id) == ["items/mcq1", "items/open1", "items/mcq2"]
  assert by_id["items/mcq1"].gold == "B" and by_id["items/mcq1"].answer == "Lobar pneumonia"
  assert "Asthma" not in by_id["items/mcq1"].question
  assert not by_id["items/open1"].is_mcq and by_id["items/open1"].answer == \
      "Streptococcal pharyngitis"
  assert by_id["items/mcq2"].gold == "B"  # list options, answer given as the option's text
  assert report["items"] == 3 and report["skipped"] == {}


def test_bad_input_raises_with_location_or_is_skipped_and_counted(tmp_path):
  path = os.path.join(FIXTURES, "bad_items.jsonl")
  with pytest.raises(ValueError, match=r"bad_items\.jsonl:2: field '<json>': invalid JSON"):
    items_lib.read_items(path)
  items, report = items_lib.read_items(path, on_error="skip")
  assert [it.id for it in items] == ["bad_items/ok"]
  assert report["skipped"] == {"bad_json": 1, "missing_ground_truth": 1,
                               "gold_not_in_options": 1, "missing_question": 1,
                               "duplicate_id": 1}
  assert any("bad_items.jsonl:3: field 'answer'" in m for m in report["messages"])
  stats = pathway.run_job(items, FunctionLLM(Script()), str(tmp_path), opts(retries=0),
                          input_report=report)
  assert stats["items"]["skipped_input"]["missing_ground_truth"] == 1
  with pytest.raises(ValueError, match="duplicate item ids"):
    pathway.run_job(items * 2, FunctionLLM(Script()), str(tmp_path), opts())
  with pytest.raises(ValueError, match="search.width=0"):
    pathway.run_job(items, FunctionLLM(Script()), str(tmp_path), opts(width=0))


def test_demo_world_records_are_open_items(tmp_path):
  import random
  from citrus_jax.demo import clinic_world as cw
  world = cw.make_world()
  rng = random.Random(0)
  records = []
  for j, name in enumerate(world.trainable()[:3]):
    case = cw.draw_case(world, rng, name, "unique", train=True)
    records.append(cw.open_item(world, case, rng, cw.citrus_prompt, item_id=f"sft3-{j}"))
  path = tmp_path / "sft3.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  items, _ = items_lib.read_items(str(path))
  assert [it.answer for it in items] == [r["answer"] for r in records]
  assert all(it.input == r["input"] for it, r in zip(items, records))

  def solve(request):  # a perfect scripted expert for the demo world
    f = fields(request)
    if f["ROLE"] == "step":
      truth = next(r["answer"] for r in records if r["question"] == f["Q"])
      return f"Findings point to ANSWER: {truth} DONE"
    return Script()(request)
  stats = pathway.run_job(items, FunctionLLM(solve), str(tmp_path / "out"), opts())
  assert stats["items"]["kept"] == 3
  rows = [json.loads(l) for l in open(tmp_path / "out" / "sft.jsonl")]
  assert [r["input"] for r in rows] == [r["input"] for r in records]  # keep_input
