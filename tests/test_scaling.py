"""Test-time scaling helpers on fixed fake outputs: majority vote (ties, no-answer samples),
pass@k / maj@k summaries with intervals, seed spread, config lists, and budget forcing."""
import math

import pytest

from citrus_jax.eval import harness, scaling
from citrus_jax.eval.benchmarks import MCQItem

UTI = {"A": "Ampicillin", "B": "Ceftriaxone", "C": "Doxycycline", "D": "Nitrofurantoin"}


def test_majority_vote_ties_and_abstentions():
  assert scaling.majority_vote(["B", "C", "C", "B"]) == "B"  # tie: first seen wins
  assert scaling.majority_vote(["C", "B", "B", "C"]) == "C"
  assert scaling.majority_vote([None, None, "D", "A", "D"]) == "D"
  assert scaling.majority_vote([None, None, None, "A"]) == "A"  # no-answer samples do not vote
  assert scaling.majority_vote([None, None]) is None and scaling.majority_vote([]) is None
  assert scaling.vote_record(["A", "D", "A"], "D") == {
      "maj_pred": "A", "maj_correct": False, "pass_correct": True}
  assert scaling.vote_record([None, None], "D") == {
      "maj_pred": None, "maj_correct": False, "pass_correct": False}


def _record(item, outputs):
  """A k-samples record built the way evaluate_items builds one, from fixed outputs."""
  rec = harness.output_record(item, outputs[0], "fake")
  scored = [harness.extract.score(o, item) for o in outputs]
  rec["samples"] = [{"output": o, "pred": s["pred"], "correct": s["correct"]}
                    for o, s in zip(outputs, scored)]
  rec.update(scaling.vote_record([s["pred"] for s in scored], item.gold))
  return rec


def test_maj_and_pass_from_fake_outputs():
  items = [MCQItem(id=str(i), question="q", options=UTI, gold="D") for i in range(4)]
  outs = [
      ["<answer>D</answer>", "<answer>A</answer>", "<answer>D</answer>", "no idea"],  # acc, maj, pass
      ["<answer>A</answer>", "<answer>D</answer>", "<answer>D</answer>", "<answer>A</answer>"],
      ["<answer>B</answer>", "<answer>B</answer>", "<answer>D</answer>", "<answer>C</answer>"],
      ["???", "<answer>I am not sure</answer>", "", "<answer>E</answer>"],  # nothing votes
  ]
  recs = [_record(it, o) for it, o in zip(items, outs)]
  assert [r["maj_pred"] for r in recs] == ["D", "A", "B", None]
  s = harness.summarize(recs)
  assert s["samples"] == 4
  assert s["acc"] == pytest.approx(1 / 4)
  assert s["maj@4"] == pytest.approx(1 / 4) and s["pass@4"] == pytest.approx(3 / 4)
  for name in ("acc", "maj@4", "pass@4"):
    lo, hi = s[f"{name}_ci95"]
    assert 0 <= lo <= s[name] <= hi <= 1
  m = harness.macro_average({"x": s, "y": s}, {"x": recs, "y": recs})
  assert m["pass@4"] == pytest.approx(3 / 4) and len(m["pass@4_ci95"]) == 2
  assert "maj@4" in harness.format_table({"benchmarks": {"x": s}, "macro_avg": m})
  with pytest.raises(ValueError, match="mix sample counts"):
    harness.summarize(recs + [harness.output_record(items[0], "D", "fake")])


def test_spread_and_int_lists():
  s = scaling.spread([0.5, 0.7, 0.6])
  assert s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(0.1)
  assert (s["min"], s["max"], s["n"]) == (0.5, 0.7, 3)
  assert scaling.spread([0.4])["std"] == 0.0 and scaling.spread([])["mean"] is None
  assert scaling.parse_int_list("", "f") == [] and scaling.parse_int_list("256", "f") == [256]
  assert scaling.parse_int_list("[0, 1,2]", "f") == [0, 1, 2]
  assert scaling.parse_int_list((3, 4), "f") == [3, 4] and scaling.parse_int_list(5, "f") == [5]
  with pytest.raises(ValueError, match="config.eval.seeds: 'x'"):
    scaling.parse_int_list("1,x", "eval.seeds")


class _Tok:
  def encode(self, text):
    return [ord(c) for c in text]


def test_budget_forcing_with_a_fake_generator():
  calls = []

  def generate(ids, n_new):
    calls.append((ids, n_new))
    if n_new == 6:  # the think budget: row 0 ends by itself, row 1 and 2 run out
      return [{"output": "<answer>B</answer>", "n_new_tokens": 4, "finish_reason": "stop"},
              {"output": "<think>long thoughts", "n_new_tokens": 6, "finish_reason": "length"},
              {"output": "<think>ok</think> <ans", "n_new_tokens": 6, "finish_reason": "length"}]
    return [{"output": "C</answer>", "n_new_tokens": 2, "finish_reason": "stop"},
            {"output": "D", "n_new_tokens": 3, "finish_reason": "length"}]

  out = scaling.budget_forced_outputs(generate, _Tok(), [[1], [2], [3]], budget=6,
                                      answer_tokens=3)
  assert [n for _, n in calls] == [6, 3]
  assert calls[1][0] == [[2] + [ord(c) for c in "<think>long thoughts" + scaling.FORCE_ANSWER],
                         [3] + [ord(c) for c in "<think>ok" + scaling.FORCE_ANSWER]]
  assert out[0]["output"] == "<answer>B</answer>" and not out[0]["forced"]
  assert out[1]["output"] == "<think>long thoughts\n</think>\n<answer>\nC</answer>"
  assert out[1]["forced"] and out[1]["n_new_tokens"] == 8 and out[1]["n_think_tokens"] == 6
  assert out[2]["output"].endswith("<answer>\nD") and out[2]["finish_reason"] == "length"
  item = MCQItem(id="1", question="q", options=UTI, gold="C")
  assert harness.extract.score(out[1]["output"], item)["pred"] == "C"


def test_plot_budgets(tmp_path):
  path = scaling.plot_budgets(str(tmp_path / "b.png"), [8, 64], {"x": [0.2, 0.5], "y": [None, 1]})
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert math.isfinite(scaling.spread([1, 1])["std"])
