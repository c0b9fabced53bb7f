"""The Citrus 0-100 quality score of a verified response, and the LLM judge for answers the rules
cannot map: the two judgements rejection sampling may ask for beyond "right or wrong".

CITRUS.md: a correct response scores 60 plus up to 30 for fit to the patient's facts, thoroughness
and self-correction; a wrong one at most 30. Chosen responses need >= 60, so the score only orders
correct responses among themselves and never lifts a wrong one into "chosen".

  * `rule_score` (the default): three measurable parts, 10 points each for a correct response
    (60 + 10 * (fit + thoroughness + self_correction)), 10 points each for a wrong one (<= 30):
      fit             share of the question's content words (findings, history, tests) that the
                      reasoning uses, reaching full marks at half of them;
      thoroughness    candidates weighed and set aside ("does not fit", "less likely", "rule out",
                      "against", ...), full marks at 3;
      self_correction a reconsidering move ("wait", "however", "on reflection", "re-examine", ...).
  * `llm_scorer(backend)`: asks an LLM (any synthesis backend, e.g. an OpenAI-compatible server)
    for the same rubric and clamps its number into the band the verdict allows ([60, 90] correct,
    [0, 30] wrong); an unparsable reply falls back to `rule_score`.
  * `llm_judge(backend)`: the verifier role (synth/prompts/verify.txt) as a rejection `Judge`, asked
    only where the rule-based mapping found no option.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from citrus_jax.rollout.rejection import Judge, Scorer, split_response
from citrus_jax.synth import roles

_WORD = re.compile(r"[A-Za-z][A-Za-z\-]{3,}")
_STOP = frozenset("""
which following most likely diagnosis patient comes because with along there what that this
from have been were their about into after before during presents history examination shows
investigations relevant includes include clinic years year old woman man girl boy child today
other than over under also when where your them they then these those would could should
""".split())
_SET_ASIDE = re.compile(r"\b(?:does not fit|doesn't fit|do not fit|less likely|unlikely|rule[sd]? "
                        r"out|ruled out|argues? against|against|excluded?|not consistent|"
                        r"inconsistent)\b", re.I)
_RECONSIDER = re.compile(r"\b(?:wait|however|on reflection|on second thought|reconsider\w*|"
                         r"re-?examin\w*|re-?evaluat\w*|let me check|looking again|actually)\b",
                         re.I)


def _content_words(text: str) -> set[str]:
  return {w.lower() for w in _WORD.findall(text)} - _STOP


def score_parts(question: str, response: str) -> dict[str, float]:
  """fit, thoroughness and self_correction in [0, 1], from the response's reasoning."""
  parts = split_response(response)
  think = parts[0] if parts else response
  facts = _content_words(question)
  used = facts & _content_words(think)
  fit = min(1.0, 2 * len(used) / len(facts)) if facts else 0.0
  thorough = min(1.0, len(_SET_ASIDE.findall(think)) / 3)
  corrects = 1.0 if _RECONSIDER.search(think) else 0.0
  return {"fit": fit, "thoroughness": thorough, "self_correction": corrects}


def rule_score(question: str, response: str, gold_text: str, correct: bool) -> float:
  """The rubric by rule: 60 + 10 per part when correct, 10 per part (<= 30) when wrong."""
  del gold_text  # the verdict already used it
  total = 10.0 * sum(score_parts(question, response).values())
  return round((60.0 if correct else 0.0) + total, 2)


_SCORE_PROMPT = """You grade a clinician's reasoning about a medical question. The final answer \
has already been checked: it is {verdict}.
Score the reasoning from 0 to 100 with this rubric: a correct answer gets 60 plus up to 30 for \
(a) fit to the patient's facts, (b) thoroughness in weighing the differential, (c) \
self-correction; a wrong answer gets at most 30 for the same qualities.

Question:
{question}

Reference answer: {gold}

Response:
{response}

Reply with one line: Score: <number>"""
_SCORE_LINE = re.compile(r"(?i)\bscore\b[\s*_`]*[:=][\s*_`]*(\d{1,3}(?:\.\d+)?)")


def parse_score(text: str) -> float | None:
  """The number of the last "Score: N" line, or None."""
  hits = _SCORE_LINE.findall(text or "")
  return float(hits[-1]) if hits else None


def llm_scorer(backend: Any, max_tokens: int = 64) -> Scorer:
  """A Scorer asking `backend` (a synth.llm.LLM) for the rubric, clamped to the verdict's band."""
  def score(question: str, response: str, gold_text: str, correct: bool) -> float:
    prompt = _SCORE_PROMPT.format(verdict="correct" if correct else "wrong", question=question,
                                  gold=gold_text, response=response)
    reply = backend.chat([{"role": "user", "content": prompt}], max_tokens=max_tokens,
                         temperature=0.0).texts[0]
    value = parse_score(reply)
    if value is None:
      return rule_score(question, response, gold_text, correct)
    lo, hi = (60.0, 90.0) if correct else (0.0, 30.0)
    return min(hi, max(lo, value))
  return score


def llm_judge(backend: Any, prompts_dir: str = "", max_tokens: int = 32) -> Judge:
  """A Judge: the synthesis verifier role asked whether the response's answer means the gold."""
  template = roles.load_prompts(prompts_dir)["verify"]

  def judge(question: str, response: str, gold_text: str) -> bool | None:
    parts = split_response(response)
    answer = parts[1] if parts else response[-2000:]
    messages = template.render(question=question, ground_truth=gold_text, answer=answer)
    reply = backend.chat(messages, max_tokens=max_tokens, temperature=0.0).texts[0]
    flag = roles.parse_flag(reply, ("verdict", "same", "match"))
    return None if flag is None else bool(flag)
  return judge


SCORERS: dict[str, Callable[..., Scorer | None]] = {
    "none": lambda backend=None: None,
    "rule": lambda backend=None: rule_score,
    "llm": lambda backend=None: llm_scorer(backend),
}
