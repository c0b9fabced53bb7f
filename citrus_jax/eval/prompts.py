"""The Citrus prompts (system persona, SFT/eval user prompt, open-ended variant) as chat messages.

Wording follows the released Citrus code and README so that scores are comparable with the paper;
for evaluation the options go inside `<Question>` as "A. text" lines (CITRUS.md, evaluation).
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
