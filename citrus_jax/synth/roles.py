"""The expert-pathway roles: editable prompt templates and the parsers of their replies.

Each role's prompt is a Jinja2 text file (`citrus_jax/synth/prompts/<role>.txt`; a file of the
same name in a user's `prompts_dir` replaces it) with a `[system]` and a `[user]` section. Unknown
variables are errors (StrictUndefined), checked when the templates are loaded, so a typo fails
before any model is called. The ground truth is passed to the critic and the verifier only: a
step, judge or rewriter template that mentions it fails to load.

Replies are parsed leniently ("Rating: 1", "**Rating:** 1", "Rating: yes"); the last labelled
value wins. A reply that cannot be parsed counts as a rejection and is reported per role.
"""
from __future__ import annotations

import dataclasses
import os
import re
import unicodedata
from typing import Any, Mapping

import jinja2
from jinja2.sandbox import SandboxedEnvironment

ROLES = ("rewrite_question", "step", "critic", "judge", "rewrite_chain", "verify")
PROMPTS_DIR = os.path.join(os.path.dirname(__file__), "prompts")

_CHAIN = [{"step": "Step text.", "feedback": "Feedback text."}]
# Variables each role's template receives (sample values, used to check templates at load time).
ROLE_VARS: dict[str, list[dict[str, Any]]] = {
    "rewrite_question": [dict(question="Q?", options={"A": "x", "B": "y"},
                              options_text="A. x\nB. y", answer="x")],
    "step": [dict(question="Q?", chain=[], depth=1, retry=None, tried=[], attempt=0),
             dict(question="Q?", chain=_CHAIN, depth=2,
                  retry={"step": "s", "feedback": "f"}, tried=["t"], attempt=1)],
    "critic": [dict(question="Q?", ground_truth="x", chain=[], step="s", depth=1),
               dict(question="Q?", ground_truth="x", chain=_CHAIN, step="s", depth=2)],
    "judge": [dict(question="Q?", chain=_CHAIN)],
    "rewrite_chain": [dict(question="Q?", chain=_CHAIN)],
    "verify": [dict(question="Q?", ground_truth="x", answer="y")],
}
_SECTION = re.compile(r"^\[(system|user)\]\s*$")
_ENV = SandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
                            autoescape=False)


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
  role: str
  path: str
  sections: tuple[tuple[str, jinja2.Template, int], ...]  # (chat role, template, first line)

  def render(self, **values: Any) -> list[dict[str, str]]:
    """Chat messages; runs of blank lines are collapsed."""
    messages = []
    for chat_role, template, line in self.sections:
      try:
        text = template.render(**values)
      except jinja2.TemplateError as e:
        raise ValueError(f"{self.path}: [{chat_role}] section (line {line}): {e}") from None
      text = re.sub(r"\n[ \t]*\n(?:[ \t]*\n)+", "\n\n", text).strip()
      if text:
        messages.append({"role": chat_role, "content": text})
    return messages


def load_template(role: str, path: str) -> PromptTemplate:
  """Parses and checks one template file (errors name the file and line)."""
  if role not in ROLES:
    raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  starts = [(i, _SECTION.match(l).group(1)) for i, l in enumerate(lines) if _SECTION.match(l)]
  if not starts or starts[-1][1] != "user":
    raise ValueError(f"{path}: needs a [user] section (and optionally a [system] one before it)")
  names = [n for _, n in starts]
  if len(set(names)) != len(names) or names not in (["user"], ["system", "user"]):
    raise ValueError(f"{path}: sections must be [system] then [user], each once; found {names}")
  preamble = "\n".join(lines[:starts[0][0]])
  sections = []
  bounds = [s for s, _ in starts] + [len(lines)]
  for (start, name), end in zip(starts, bounds[1:]):
    body = "\n".join(lines[start + 1:end])
    try:
      sections.append((name, _ENV.from_string(body), start + 2))
    except jinja2.TemplateSyntaxError as e:
      raise ValueError(f"{path}:{start + 1 + (e.lineno or 1)}: template syntax error: "
                       f"{e.message}") from None
  try:
    if _ENV.from_string(preamble).render().strip():
      raise ValueError(f"{path}: text before the first section; only {{# comments #}} may "
                       "precede [system]/[user]")
  except jinja2.TemplateSyntaxError as e:
    raise ValueError(f"{path}:{e.lineno}: template syntax error: {e.message}") from None
  template = PromptTemplate(role, path, tuple(sections))
  for values in ROLE_VARS[role]:
    messages = template.render(**values)
    if not any(m["role"] == "user" for m in messages):
      raise ValueError(f"{path}: the [user] section renders empty")
  return template


def load_prompts(prompts_dir: str = "") -> dict[str, PromptTemplate]:
  """All role templates: `prompts_dir/<role>.txt` where present, else the packaged default."""
  if prompts_dir and not os.path.isdir(prompts_dir):
    raise FileNotFoundError(f"{prompts_dir}: prompts directory not found")
  out = {}
  for role in ROLES:
    custom = os.path.join(prompts_dir, f"{role}.txt") if prompts_dir else ""
    path = custom if custom and os.path.isfile(custom) else os.path.join(PROMPTS_DIR, f"{role}.txt")
    out[role] = load_template(role, path)
  return out


# ------------------------------------------------------------------------------------------------
# Reply parsers.

_FLAG_VALUE = r"[\s*_`\"'\[(]*(1|0|yes|no|true|false|accept(?:ed)?|reject(?:ed)?)\b"
_POSITIVE = {"1", "yes", "true", "accept", "accepted"}


def parse_flag(text: str, labels: tuple[str, ...]) -> int | None:
  """0/1 from the last "<label>: value" in `text`; a bare "0"/"1" reply also counts."""
  if not text:
    return None
  label = "|".join(re.escape(l) for l in labels)
  hits = re.findall(rf"(?i)\b(?:{label})\b[\s*_`]*[:=：][\s*_`]*{_FLAG_VALUE}", text)
  if hits:
    return int(hits[-1].lower() in _POSITIVE)
  bare = text.strip().strip("*`.").lower()
  return int(bare in _POSITIVE) if bare in _POSITIVE | {"0", "no", "false"} else None


def parse_critic(text: str) -> tuple[int | None, str]:
  """(rating or None, feedback). The feedback is the text after "Feedback:", up to the rating."""
  rating = parse_flag(text, ("rating", "score", "accept", "decision"))
  body = re.split(r"(?im)^[\s*_`]*(?:rating|score|decision)\b.*$", text or "")[0]
  m = re.search(r"(?is)feedback[\s*_`]*[:：][\s*_`]*(.*)", body)
  feedback = (m.group(1) if m else body).strip()
  return rating, feedback


def parse_step(text: str) -> str:
  """The step text without a leading "Step 3:" label."""
  text = (text or "").strip()
  return re.sub(r"(?i)^[\s*_#]*step\s*\d+\s*[:.)-]?[\s*_]*", "", text).strip()


_ANSWER = re.compile(r"(?is)<\s*answer\s*>(.*?)(?:<\s*/\s*answer\s*>|$)")
_THINK_TAG = re.compile(r"(?i)<\s*/?\s*think\s*>")


def parse_final(text: str) -> tuple[str, str] | None:
  """(think, answer) from the rewriter's monologue ending in <answer>...</answer>, else None."""
  if not text:
    return None
  matches = [m for m in _ANSWER.finditer(text) if m.group(1).strip()]
  if not matches:
    return None
  first = _ANSWER.search(text)
  think = _THINK_TAG.sub("", text[:first.start()]).strip()
  answer = matches[-1].group(1).strip()
  if not think:
    return None
  return think, answer


def normalize_answer(text: str) -> str:
  """Case, punctuation, articles and a leading "the answer is" folded away (for open answers)."""
  text = unicodedata.normalize("NFKC", text or "").lower().strip()
  text = re.sub(r"^(?:so|thus|hence|therefore)?[\s,]*(?:the\s+)?(?:most\s+likely\s+|final\s+|"
                r"correct\s+)?(?:diagnosis|answer)\s*(?:is|:)\s*", "", text)
  text = re.sub(r"[^\w\s]|_", " ", text)
  text = re.sub(r"\b(?:a|an|the)\b", " ", text)
  return " ".join(text.split())


def open_answers_match(answer: str, truth: str) -> bool:
  return bool(normalize_answer(truth)) and normalize_answer(answer) == normalize_answer(truth)


def options_text(options: Mapping[str, str]) -> str:
  return "\n".join(f"{k}. {v}" for k, v in options.items())
