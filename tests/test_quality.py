"""The 0-100 quality score (rule and LLM) and the LLM judge of rejection sampling."""
import pytest

from citrus_jax.rollout import quality, rejection, rejection_cli
from citrus_jax.rollout.questions import Question
from citrus_jax.synth.llm import FunctionLLM

QUESTION = ("A 60-year-old man has crushing chest pain radiating to the left arm, sweating and "
            "ST elevation on the ECG. Troponin is raised. What is the most likely diagnosis?")
THOROUGH = ("<think>\nCrushing chest pain radiating to the left arm with sweating, ST elevation "
            "and raised troponin. Stable angina does not fit raised troponin. Pericarditis is "
            "less likely without a rub. Aortic dissection is unlikely with this ECG. Wait, check "
            "the troponin again: raised, so myocardial injury.\n</think>\n<answer>\nAcute "
            "myocardial infarction\n</answer>")
BARE = "<think>\nIt is a heart problem of some kind here.\n</think>\n<answer>\nAcute myocardial infarction\n</answer>"


def test_rule_score_bands_and_ordering():
  good = quality.rule_score(QUESTION, THOROUGH, "Acute myocardial infarction", True)
  bare = quality.rule_score(QUESTION, BARE, "Acute myocardial infarction", True)
  wrong_good = quality.rule_score(QUESTION, THOROUGH, "Aortic dissection", False)
  wrong_bare = quality.rule_score(QUESTION, BARE, "Aortic dissection", False)
  assert 60 <= bare < good <= 90  # correct: 60 + up to 30, reasoning quality orders them
  assert 0 <= wrong_bare < wrong_good <= 30  # wrong: at most 30, below every correct one
  parts = quality.score_parts(QUESTION, THOROUGH)
  assert parts["thoroughness"] == 1.0 and parts["self_correction"] == 1.0 and parts["fit"] > 0.5
  assert quality.score_parts(QUESTION, BARE) == {"fit": 0.0, "thoroughness": 0.0,
                                                 "self_correction": 0.0}


@pytest.mark.parametrize("reply,correct,want", [
    ("Score: 75", True, 75.0), ("**Score:** 99", True, 90.0), ("Score: 10", True, 60.0),
    ("Score: 80", False, 30.0), ("score = 12.5", False, 12.5)])
def test_llm_scorer_is_clamped_to_the_verdict_band(reply, correct, want):
  seen = []
  backend = FunctionLLM(lambda req: seen.append(req.messages[-1]["content"]) or reply)
  assert quality.llm_scorer(backend)(QUESTION, THOROUGH, "x", correct) == want
  assert ("correct" if correct else "wrong") in seen[0] and QUESTION in seen[0]


def test_llm_scorer_falls_back_to_the_rule_on_an_unparsable_reply():
  backend = FunctionLLM(lambda req: "I think it is good.")
  assert quality.llm_scorer(backend)(QUESTION, THOROUGH, "x", True) == quality.rule_score(
      QUESTION, THOROUGH, "x", True)


def test_llm_judge_decides_only_where_the_rule_cannot():
  q = Question(id="q1", question=QUESTION, options={"A": "Acute myocardial infarction",
                                                    "B": "Aortic dissection"}, gold="A",
               gold_text="Acute myocardial infarction")
  asked = []

  def fn(req):
    asked.append(req.messages[-1]["content"])
    return "Verdict: 1" if "heart attack" in req.messages[-1]["content"] else "Verdict: 0"
  judge = quality.llm_judge(FunctionLLM(fn))
  synonym = "<think>\n" + "x" * 30 + "\n</think>\n<answer>\nA heart attack (STEMI)\n</answer>"
  assert rejection.verify(q, THOROUGH, judge)[2:] == ("correct", "rule") and not asked
  assert rejection.verify(q, synonym, judge)[2:] == ("correct", "judge")
  assert "Acute myocardial infarction" in asked[0] and "heart attack" in asked[0]
  assert judge(QUESTION, BARE.replace("Acute myocardial infarction", "Gastritis"), "x") is False
  assert quality.llm_judge(FunctionLLM(lambda r: "no idea"))(QUESTION, BARE, "x") is None


def test_template_placeholder_is_filtered():
  s = rejection.Sample(index=0, text=("<think>\n[Insert Your Detailed Thought Process here]\n"
                                      + "y" * 300 + "\n</think>\n<answer>\nA\n</answer>"))
  assert rejection.response_problem(s, 10, "latin", min_think_chars=10,
                                    max_chars=8192) == "stray_tags"


def test_cli_defaults_and_judge_flags():
  base = ["--checkpoint", "c", "--tokenizer", "t", "--questions", "q", "--out", "o"]
  args = rejection_cli.parse_args(base)
  assert (args.max_new_tokens, args.max_chars, args.scorer) == (4096, 8192, "rule")
  for bad in (["--judge_base_url", "http://127.0.0.1:1/v1"], ["--scorer", "llm"]):
    with pytest.raises(SystemExit):
      rejection_cli.parse_args(base + bad)
