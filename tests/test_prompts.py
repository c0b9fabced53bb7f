"""Citrus prompts: persona, question block with options, open-ended and letter variants."""
import re

from citrus_jax.eval import prompts
from citrus_jax.eval.benchmarks import MCQItem

ITEM = MCQItem(id="1", question="  Which drug reverses heparin?\n", gold="B",
               options={"A": "Vitamin K", "B": "Protamine sulfate", "C": "Idarucizumab"})

PERSONA = ("You are an expert with extensive experience in medical research and clinical practice, "
           "and you are needed to assist users in answering questions related to medical issues. "
           "Let's think step by step.")
OPENING = ("You are tasked with addressing a medical examination question. Please carefully read "
           "the question, provide a detailed thought process, and then present your final answer.")


def _question_block(text):
  m = re.search(r"<Question>\n(.*)\n</Question>", text, re.S)
  assert m, text
  return m.group(1)


def test_citrus_messages_eval_prompt():
  msgs = prompts.citrus_messages(ITEM)
  assert [m["role"] for m in msgs] == ["system", "user"]
  assert msgs[0]["content"] == PERSONA
  user = msgs[1]["content"]
  assert user.startswith(OPENING)
  assert _question_block(user) == ("Which drug reverses heparin?\nA. Vitamin K\n"
                                   "B. Protamine sulfate\nC. Idarucizumab")
  # The answer format comes after the question and asks for both tags, in order.
  tail = user.split("</Question>")[1]
  assert tail.index("<think>") < tail.index("</think>") < tail.index("<answer>") < \
      tail.index("</answer>")


def test_citrus_messages_variants():
  no_sys = prompts.citrus_messages(ITEM, system=False)
  assert [m["role"] for m in no_sys] == ["user"]
  bare = prompts.citrus_messages(ITEM, with_options=False)[1]["content"]
  assert _question_block(bare) == "Which drug reverses heparin?"
  assert "Vitamin K" not in bare
  ctx_item = MCQItem(id="2", question="Is it safe?", options={"A": "yes", "B": "no"}, gold="A",
                     context="Trial of 100 patients.")
  block = _question_block(prompts.citrus_messages(ctx_item)[1]["content"])
  assert block.index("Trial of 100 patients.") < block.index("Is it safe?") < block.index("A. yes")


def test_open_question_and_letter_prompts():
  open_msgs = prompts.open_question_messages("What reverses heparin?")
  assert [m["role"] for m in open_msgs] == ["user"]
  assert _question_block(open_msgs[0]["content"]) == "What reverses heparin?"
  assert open_msgs[0]["content"].startswith(OPENING)
  assert prompts.open_question_messages("q", system=True)[0]["content"] == PERSONA
  letter = prompts.letter_messages(ITEM)
  assert [m["role"] for m in letter] == ["user"]
  content = letter[0]["content"]
  assert content.endswith("Answer with the letter of the correct option.")
  assert "A. Vitamin K\nB. Protamine sulfate\nC. Idarucizumab" in content
  assert "<Question>" not in content


def test_options_keep_item_order_beyond_e():
  item = MCQItem(id="3", question="q", options={k: f"t{k}" for k in "ABCDEFGHIJ"}, gold="J")
  block = _question_block(prompts.citrus_messages(item)[1]["content"])
  assert block.splitlines()[1:] == [f"{k}. t{k}" for k in "ABCDEFGHIJ"]


def test_citrus_target():
  assert prompts.citrus_target(" reasoning \n", "B") == \
      "<think>\nreasoning\n</think>\n<answer>\nB\n</answer>"
