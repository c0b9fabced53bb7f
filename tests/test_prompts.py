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


# ------------------------------------------------------------------------------------------------
# Prompt variants against strings kept as fixtures (tests/fixtures/prompts/): the reference
# strings were made by filling the reference's own template files (citrus_pro_inference.prompt,
# llm_inference.prompt, kept verbatim beside them) the way its converter and evaluator do, from
# the invented banks in tests/fixtures/formats/.

import json  # noqa: E402
import os  # noqa: E402

import pytest  # noqa: E402

from citrus_jax.eval import benchmarks  # noqa: E402

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
SHARED = os.environ.get("CITRUS_SHARED_DATA", "/work/shared/data/benchmarks")


def _fixture(name):
  with open(os.path.join(FIX, "prompts", name), encoding="utf-8") as f:
    return f.read()


def _bank(name, file, **kw):
  return benchmarks.load_benchmark(name, os.path.join(FIX, "formats", file), **kw).items


def test_reference_template_is_the_released_file():
  assert prompts.REFERENCE_TEMPLATE.format(question="{Q}", options="{OPS}") == \
      _fixture("citrus_pro_inference.prompt")
  assert prompts.REFERENCE_LETTER_TEMPLATE.format(question="{Q}", options="{OPS}") == \
      _fixture("llm_inference.prompt")


@pytest.mark.parametrize("name,file,index,expected", [
    ("medqa", "bank_medqa.jsonl", 0, "reference_medqa_0.txt"),  # question keeps its last space
    ("medqa", "bank_medqa.jsonl", 1, "reference_medqa_1.txt"),  # option " Reticulocyte count"
    ("mmlu_pro_health", "bank_mmlu_pro.jsonl", 0, "reference_mmlu_pro_0.txt"),  # "A.text"
    ("mmlu_anatomy", "anatomy_test.csv", 0, "reference_mmlu_0.txt"),
    ("careqa", "bank_careqa.jsonl", 0, "reference_careqa_0.txt"),  # own letters, not all "A."
    ("unified", "bank_unified.jsonl", 0, "reference_unified_medbullets_0.txt"),
])
def test_reference_prompt_is_byte_identical(name, file, index, expected):
  item = _bank(name, file)[index]
  msgs = prompts.eval_messages(item, "reference")
  assert [m["role"] for m in msgs] == ["system", "user"] and msgs[0]["content"] == PERSONA
  assert msgs[1]["content"] == _fixture(expected)


def test_variants_differ_where_documented_and_default_is_citrus():
  item = _bank("medqa", "bank_medqa.jsonl")[1]
  assert prompts.DEFAULT_EVAL_PROMPT == "citrus"
  citrus = prompts.eval_messages(item)[1]["content"]
  assert citrus == _fixture("citrus_medqa_1.txt")  # the SFT data's spacing, stripped options
  assert "final answer.\n\nHere is the question:" in citrus
  assert "final answer.\nHere is the question:" in prompts.eval_messages(item, "reference")[1][
      "content"]
  letter = prompts.eval_messages(_bank("medqa", "bank_medqa.jsonl")[0], "reference_letter")
  assert [m["role"] for m in letter] == ["user"]
  assert letter[0]["content"] == _fixture("reference_letter_medqa_0.txt")
  with pytest.raises(ValueError, match="prompt must be one of"):
    prompts.eval_messages(item, "chatml")


def test_reference_prompt_after_shuffling_keeps_texts_with_their_letters():
  item = _bank("medqa", "bank_medqa.jsonl", shuffle_options=True, seed=3)[1]
  block = prompts.reference_user_prompt(item).split("<Question>\n")[1].split("\n</Question>")[0]
  lines = block.split("\n")[-4:]
  assert [ln[:3] for ln in lines] == ["A. ", "B. ", "C. ", "D. "]
  for ln in lines:  # each line shows its own (shuffled) option, the raw spacing kept
    assert ln[3:].strip() == item.options[ln[0]]
  assert any(ln == f"{k}.  Reticulocyte count" for ln in lines for k in "ABCD")


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, "unified")),
                    reason="the reference's converted benchmark files are not here")
@pytest.mark.parametrize("file", ["medqa.jsonl", "pubmedqa.jsonl", "mmlu-anatomy.jsonl",
                                  "mmlu-pro_health.jsonl", "medbullets_op5.jsonl",
                                  "mmlu-college_medicine.jsonl", "jmed_sample20.jsonl"])
def test_reference_prompt_on_the_reference_converted_files(file):
  """Every item of the reference converter's own output, filled as its evaluator fills it."""
  path = os.path.join(SHARED, "unified", file)
  items = {it.id: it for it in benchmarks.load_benchmark("unified", path,
                                                        shuffle_options=False).items}
  template = _fixture("citrus_pro_inference.prompt")
  with open(path, encoding="utf-8") as f:
    for line in f:
      d = json.loads(line)
      want = template.format(Q=d["Q"], OPS="\n".join(o["op_text"] for o in d["OP"]))
      assert prompts.reference_user_prompt(items[str(d["id"])]) == want, d["id"]


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, "original")),
                    reason="the original benchmark files are not here")
@pytest.mark.parametrize("name,original,unified", [
    ("medqa", "medqa/phrases_no_exclude_test.jsonl", "medqa.jsonl"),
    ("mmlu_pro_health", "mmlu-pro/mmlu-pro_health.jsonl", "mmlu-pro_health.jsonl"),
    ("mmlu_pro_biology", "mmlu-pro/mmlu-pro_biology.jsonl", "mmlu-pro_biology.jsonl"),
    ("medbullets_op4", "medbullets/medbullets_op4.json", "medbullets_op4.jsonl"),
    ("mmlu_professional_medicine", "mmlu/professional_medicine_test.csv",
     "mmlu-professional_medicine.jsonl"),
    ("pubmedqa", "pubmedqa/ori_pqal.json", "pubmedqa.jsonl"),
])
def test_reference_prompt_from_original_files_equals_the_converted(name, original, unified):
  """Read from the distribution's own file, the prompt is the one the reference sent."""
  ours = benchmarks.load_benchmark(name, os.path.join(SHARED, "original", original)).items
  theirs = benchmarks.load_benchmark("unified", os.path.join(SHARED, "unified", unified),
                                     source=ours[0].source).items
  assert len(ours) == len(theirs)
  for a, b in zip(ours, theirs):
    assert prompts.reference_user_prompt(a) == prompts.reference_user_prompt(b), a.id
