"""The Citrus prompts (system persona, SFT/eval user prompt, open-ended variant) as chat messages.

Two evaluation prompt variants (`EVAL_PROMPTS`), both with the persona as system message:
  citrus     (default) the SFT-3 training prompt: the user prompt exactly as the released SFT data
             writes it (Citrus model_train/example_data_for_train/sft_data.jsonl: a blank line
             before "Here is the question:"), the stripped question (after "Context:" when the
             item carries one) and "A. text" option lines. What a model trained on Citrus_S3-
             style data saw, and what this project's numbers use unless told otherwise.
  reference  byte for byte what the released evaluation sends (src/config/prompt/
             citrus_pro_inference.prompt, filled by single_task_evaluation.py with
             Q = the question as the file has it, unstripped, and OPS = "\n".join(op_text)):
             no blank line before "Here is the question:", no context (PubMedQA is
             question-only), and each benchmark's option form as the reference converter wrote
             op_text: "A. text" (MedQA, MMLU, PubMedQA, JMED) or "A.text" (MMLU-Pro,
             MedBullets, CareQA). One deliberate difference: the converter labels every CareQA
             option "A." (a defect, CITRUS.md); here each gets its own letter.
Use "reference" to compare with the paper's numbers; `letter` / `reference_letter` are the
matching prompts for base/instruct baselines (reference: llm_inference.prompt).
"""
from __future__ import annotations

from typing import Any, Mapping

SYSTEM_PROMPT = (
    "You are an expert with extensive experience in medical research and clinical practice, and "
    "you are needed to assist users in answering questions related to medical issues. "
    "Let's think step by step.")

CITRUS_TEMPLATE = """You are tasked with addressing a medical examination question. \
Please carefully read the question, provide a detailed thought process, and then present your \
final answer.

Here is the question:
<Question>
{question}
</Question>

Please begin your response.

The formatted output should be as follows:
<think>
[Insert Your Detailed Thought Process here]
</think>
<answer>
[Insert Your Final Answer here]
</answer>"""

LETTER_INSTRUCTION = "Answer with the letter of the correct option."

# src/config/prompt/citrus_pro_inference.prompt (the file has no trailing newline).
REFERENCE_TEMPLATE = """You are tasked with addressing a medical examination question. \
Please carefully read the question, provide a detailed thought process, and then present your \
final answer.
Here is the question:
<Question>
{question}
{options}
</Question>

Please begin your response.

The formatted output should be as follows:
<think>
[Insert Your Detailed Thought Process here]
</think>
<answer>
[Insert Your Final Answer here]
</answer>"""

# src/config/prompt/llm_inference.prompt: the reference's prompt for models other than Citrus.
REFERENCE_LETTER_TEMPLATE = """You are tasked with addressing a medical examination question. \
Please carefully read the question and present your final answer.
<Question>
{question}
{options}
</Question>

The formatted output should be as follows:
<answer>
[Insert Your Final Choice (only one uppercase letter) here]
</answer>
Final answer:"""

# Benchmarks whose reference op_text has no space after the letter ("A.text").
_NO_SPACE_SOURCES = ("mmlu_pro", "medbullets", "careqa", "care_qa")
EVAL_PROMPTS = ("citrus", "reference", "letter", "reference_letter")
DEFAULT_EVAL_PROMPT = "citrus"

Messages = list[dict[str, str]]


def format_options(options: Mapping[str, str]) -> str:
  return "\n".join(f"{letter}. {text}" for letter, text in options.items())


def format_question(item: Any, with_options: bool = True) -> str:
  """Question text (after its context, when the item carries one), then "A. text" lines."""
  parts = []
  if getattr(item, "context", None):
    parts.append(f"Context:\n{item.context}\n\nQuestion:")
  parts.append(item.question.strip())
  text = "\n".join(parts)
  if with_options:
    text += "\n" + format_options(item.options)
  return text


def citrus_user_prompt(question_text: str) -> str:
  return CITRUS_TEMPLATE.format(question=question_text.strip())


def citrus_target(think: str, answer: str) -> str:
  """The assistant target of SFT-3: `<think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>`."""
  return f"<think>\n{think.strip()}\n</think>\n<answer>\n{answer.strip()}\n</answer>"


def _with_system(user: str, system: bool) -> Messages:
  msgs = [{"role": "system", "content": SYSTEM_PROMPT}] if system else []
  return msgs + [{"role": "user", "content": user}]


def citrus_messages(item: Any, with_options: bool = True, system: bool = True) -> Messages:
  """Evaluation prompt: persona + Citrus user prompt with the question and its options."""
  return _with_system(citrus_user_prompt(format_question(item, with_options)), system)


def letter_messages(item: Any, system: bool = False) -> Messages:
  """Plain prompt for base/instruct baselines that should reply with a letter only."""
  return _with_system(f"{format_question(item)}\n\n{LETTER_INSTRUCTION}", system)


def open_question_messages(question: str, system: bool = False) -> Messages:
  """Open-ended Citrus prompt (no options), as used for SFT targets and rejection sampling."""
  return _with_system(citrus_user_prompt(question), system)


# ------------------------------------------------------------------------------------------------
# The reference evaluation's prompt, byte for byte.


def option_separator(source: str) -> str:
  """What follows the letter in the reference's op_text for this benchmark: "." or ". "."""
  return "." if source.startswith(_NO_SPACE_SOURCES) else ". "


def _reference_parts(item: Any) -> tuple[str, str]:
  """(Q, OPS) as the reference fills its template: the file's own question and option texts
  (unstripped, from the readers' meta) when they still match the item, else the item's."""
  meta = getattr(item, "meta", None) or {}
  question = meta.get("raw_question")
  if not isinstance(question, str) or question.strip() != item.question:
    question = item.question
  raw = meta.get("raw_options") or {}
  orig = meta.get("orig_letters")  # shuffled: new letter i holds original option orig[i]
  sep = option_separator(getattr(item, "source", "") or "")
  lines = []
  for i, (letter, text) in enumerate(item.options.items()):
    src = orig[i] if isinstance(orig, str) and i < len(orig) else letter
    r = raw.get(src)
    lines.append(f"{letter}{sep}{r if isinstance(r, str) and r.strip() == text else text}")
  return question, "\n".join(lines)


def reference_user_prompt(item: Any) -> str:
  question, options = _reference_parts(item)
  return REFERENCE_TEMPLATE.format(question=question, options=options)


def reference_messages(item: Any, system: bool = True) -> Messages:
  """The released Citrus evaluation's messages for this item (persona + citrus_pro_inference)."""
  return _with_system(reference_user_prompt(item), system)


def reference_letter_messages(item: Any) -> Messages:
  """The released evaluation's prompt for non-Citrus models (llm_inference.prompt, no system)."""
  question, options = _reference_parts(item)
  return _with_system(REFERENCE_LETTER_TEMPLATE.format(question=question, options=options), False)


def eval_messages(item: Any, prompt: str = DEFAULT_EVAL_PROMPT) -> Messages:
  """The evaluation messages of one item for a prompt variant of `EVAL_PROMPTS`."""
  if prompt == "citrus":
    return citrus_messages(item)
  if prompt == "reference":
    return reference_messages(item)
  if prompt == "letter":
    return letter_messages(item)
  if prompt == "reference_letter":
    return reference_letter_messages(item)
  raise ValueError(f"prompt must be one of {EVAL_PROMPTS}, got {prompt!r}")
