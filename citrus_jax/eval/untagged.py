"""Option mapping for outputs without `<answer>` tags: only where the output commits.

A tagged answer block is short and is the answer, so eval/extract.py searches all of it. An
untagged output is mostly reasoning, hedging or a refusal; searching it for option texts scores
"<think>I cannot decide between these.</think>" as option "Decide." and a think naming "I" as
option "I-." (iodide). Here an untagged output names an option only by:

1. being the answer as a whole (a letter, one option's text, "B. text"), thinking removed;
2. an explicit statement, the last one winning ("the answer is C", "Not A; it is B", "Both B
   and C are wrong, so D", "the most likely diagnosis is <option text>"), questions excepted;
3. its final line being the answer as a whole ("...\\n\\nD. Nitrofurantoin"), unless the output
   goes through the options as a list;
4. in a short output (at most MAX_SENTENCES sentences), the text of exactly one *distinctive*
   option (at least 8 letters or 4 CJK characters, not only common words) in a sentence that
   neither hedges, negates nor is still reasoning ("let me recall", "distinguish X from"), no
   other option or labelled letter named anywhere, and no refusal ("I cannot determine").

Thinking (`<think>...</think>`, an unclosed `<think>`, text before a lone `</think>`) is never
searched: an output that only thinks has no answer.
"""
from __future__ import annotations

import re

from citrus_jax.eval import option_match as x

_THINK_BLOCK = re.compile(r"<\s*think\s*>.*?(?:<\s*/\s*think\s*>|$)", re.I | re.S)
_THINK_CLOSE = re.compile(r"<\s*/\s*think\s*>", re.I)
_SENTENCE = re.compile(r"(?<![A-Z])[.!?;。；？！](?=\s|$)|\n+")
_HEDGE = re.compile(
    r"\b(?:could|might|may|would|maybe|perhaps|possibly|possible|either|whether|if|unless|"
    r"consider|considering|versus|vs|or|differential|unclear|uncertain|unsure|let\s+me|let's|"
    r"let\s+us|recall|review|reviewing|distinguish|differentiate|from\s+other)\b|\bfirst\s*,|[?？]|"
    r"可能|或|还是|是否|吗|鉴别|考察|区分",
    re.I)
_NEGATION = re.compile(
    r"\b(?:not|no|never|unlikely|rule[sd]?\s+out|ruling\s+out|exclude[sd]?|excluding|wrong|"
    r"incorrect|against|contraindicated|avoid|isn't|aren't|doesn't|don't|without|less\s+likely|"
    r"cannot|can't|except)\b|不是|排除|不考虑|不支持|错误|不正确", re.I)
_REFUSAL = re.compile(
    r"\b(?:cannot|can't|can\s+not|unable\s+to|not\s+able\s+to|impossible\s+to)\s+(?:\w+\s+){0,2}?"
    r"(?:decide|determine|tell|choose|answer|say|select|pick|know|be\s+sure|conclude|identify)|"
    r"\b(?:not|un)\s*sure\b|\bdon't\s+know\b|\bno\s+(?:way|answer|clear)\b|"
    r"\b(?:more|additional|further)\s+(?:information|data|details|history|testing)\s+(?:is|are)?\s*"
    r"(?:needed|required)|\binsufficient\b|\bI\s+need\s+(?:more|additional)\b|"
    r"无法|不能确定|不确定|信息不足", re.I)
_COMMON = {"none", "all", "both", "above", "below", "of", "these", "those", "other", "options",
           "answer", "answers", "correct", "incorrect", "true", "false", "yes", "no", "maybe",
           "normal", "increased", "decreased", "unchanged", "present", "absent", "not", "and",
           "or", "only", "neither", "nor", "either", "any", "given", "listed"}
_YES_NO = {"yes", "no"}
MAX_SENTENCES = 2  # rule 4 reads only short untagged answers


def strip_thinking(text: str) -> str:
  """The output without its thinking: think blocks (closed or not) and, when a `</think>` has no
  opening tag (the template opened it), everything before it."""
  text = _THINK_BLOCK.sub(" ", text)
  closes = list(_THINK_CLOSE.finditer(text))
  if closes:
    text = text[closes[-1].end():]
  return text.strip()


def distinctive(option: str) -> bool:
  """An option text that is not an ordinary word: 8+ letters (or 4+ CJK characters) and not only
  common words ("None of the above", "Decide", "I-." are not; "Nitrofurantoin" is)."""
  n = x._norm(option)
  if len(re.findall(rf"[{x._CJK}]", n)) >= 4:
    return True
  words = n.split()
  return len(n.replace(" ", "")) >= 8 and any(w not in _COMMON for w in words)


def _sentences(text: str) -> list[str]:
  return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


def _committed_mention(text: str, options: dict[str, str]) -> str | None:
  """Rule 4: one distinctive option, named without hedge or negation, nothing else named."""
  sentences = _sentences(text)
  if _REFUSAL.search(text) or len(sentences) > MAX_SENTENCES:
    return None  # a refusal, or reasoning too long to read as a plain answer
  named = x._contained(text, options) | set(x._abbreviated(text, options))
  if len(named) != 1 or x._weak_letters(text, options) - named:
    return None
  (letter,) = named
  if not distinctive(options[letter]):
    return None
  opt = x._norm(options[letter])
  for sent in sentences:
    if x._contains(x._norm(sent), opt) and not _HEDGE.search(sent) and not _NEGATION.search(sent):
      return letter
  return None


def _yes_no(text: str, options: dict[str, str]) -> str | None:
  """PubMedQA-style "Yes, ..." / "No, ..." opening an untagged answer."""
  m = re.match(r"\s*(yes|no)\b\s*[,.;:!—-]", text, re.I)
  if not m or _REFUSAL.search(_sentences(text)[0]):
    return None
  hits = [k for k, v in options.items() if x._norm(v) == m.group(1).lower()]
  if len(hits) != 1 or not {x._norm(v) for v in options.values()} >= _YES_NO:
    return None
  return hits[0]


def map_untagged(answer: str | None, options: dict[str, str]) -> str | None:
  """Option letter an untagged output commits to, or None (see the module docstring)."""
  if not answer or not options:
    return None
  text = x._clean(strip_thinking(answer))
  if not text:
    return None
  decided, letter = x.whole_answer(text, options)  # 1.
  if decided:
    return letter
  found: list[tuple[int, str | None]] = []
  stated = x._last_statement(text, options)  # 2.
  if stated is not None:
    end = re.compile(r"[.!?;\n。？]").search(text, stated[0] + 1)
    # "...the answer is C?" asks; it does not answer.
    if not (end and text[end.start()] in "?？"):
      found.append((stated[0], stated[1] if stated[1] in options else None))
  named = x._stated_text(text, options)
  if named is not None:
    found.append(named)
  lines = [ln for ln in text.splitlines() if ln.strip()]
  listing = len(set(x._LINE_LABEL.findall(text))) > 1  # the output goes through the options
  if len(lines) > 1 and not listing:  # 3.
    decided, letter = x.whole_answer(lines[-1].strip(), options)
    if decided:
      found.append((text.rfind(lines[-1]), letter))
  if found:
    return max(found, key=lambda f: f[0])[1]
  return _yes_no(text, options) or _committed_mention(text, options)  # 4.
