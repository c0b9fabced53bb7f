"""Chat rendering through the model's Jinja template, with an exact assistant-token mask.

The text is what `transformers` `apply_chat_template(..., tokenize=False)` gives for the same
template: we render with the same Jinja set-up (sandbox, trim_blocks, lstrip_blocks, loopcontrols,
`raise_exception`, `strftime_now`, `tojson`, the special tokens as variables).

The mask comes from rendering twice: once as is, once with every assistant content wrapped in two
private-use sentinel characters. Deleting the sentinels must give back the plain text (we also try
wrapping the stripped content, for templates that `| trim` it), so their positions are the exact
character spans of the assistant contents, whatever the template does around them. Each span must
be followed by the end-of-turn token (`<|eot_id|>`, `<|im_end|>`, or EOS for "plain").

Tokens are encoded piece by piece, split at the start and end of each assistant content, so the
mask is exact. Ends are at the end-of-turn token, which tokenizers keep atomic, and starts follow
the generation header (which ends in a newline), so the pieces give the same ids as encoding the
whole text, except in one case: with a byte-level BPE (Qwen) and ChatML, an assistant content that
begins with a newline merges with the header's newline when the whole text is encoded. We keep the
piecewise ids there: they are what the model sees at generation time (prompt ids, then sampled ids).

As in transformers by default, special-token strings inside message contents (e.g. a user writing
"<|eot_id|>") are encoded as those special tokens.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import re
from typing import Any, Mapping, Protocol, Sequence

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROLES = ("system", "user", "assistant")
FORMATS = ("llama3", "chatml", "plain")

# Llama-3 instruct (as Meta-Llama-3-*-Instruct; no "Cutting Knowledge Date" system header).
LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{- message['content'] | trim }}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Qwen2.5 instruct ChatML without tool calls: a default system turn when none is given.
CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + QWEN_DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (loop.first and message['role'] == 'system') %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

# For tokenizers without chat tokens: "<s>User:\n...\n\nAssistant:\n...</s>\n\n". The role line
# ends in a newline so the assistant content starts a fresh piece for every tokenizer.
PLAIN_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- message['role'] | capitalize + ':\\n' + message['content'] }}"
    "{%- if message['role'] == 'assistant' %}{{- eos_token }}{%- endif %}"
    "{{- '\\n\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- 'Assistant:\\n' }}"
    "{%- endif %}"
)

TEMPLATES = {"llama3": LLAMA3_TEMPLATE, "chatml": CHATML_TEMPLATE, "plain": PLAIN_TEMPLATE}
# The chat tokens each format needs in the vocabulary (trained as SentencePiece user symbols).
CHAT_TOKENS = {
    "llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "plain": (),
}
# The token that closes an assistant turn (trained); "plain" uses the tokenizer's EOS.
END_OF_TURN = {"llama3": "<|eot_id|>", "chatml": "<|im_end|>"}


class ChatTokenizer(Protocol):
  """What rendering needs from a tokenizer (citrus_jax.tokenizer.Tokenizer provides it)."""

  chat_format: str
  chat_template: str
  special_tokens: dict[str, str]

  def encode(self, text: str) -> list[int]: ...

  def token_to_id(self, token: str) -> int | None: ...


@dataclasses.dataclass(frozen=True)
class RenderedChat:
  text: str
  tokens: list[int]
  assistant_mask: list[bool]  # True for assistant content tokens and their end-of-turn token


def infer_chat_format(template: str | None, has_token: Any = lambda t: False) -> str:
  """Guesses the format from the template text, else from the chat tokens in the vocabulary.

  A template of another kind (e.g. Mistral's) gives "plain": it is still used as is, and EOS is
  taken to close assistant turns.
  """
  if template:
    if "<|start_header_id|>" in template:
      return "llama3"
    if "<|im_start|>" in template:
      return "chatml"
    return "plain"
  for fmt in ("llama3", "chatml"):
    if all(has_token(t) for t in CHAT_TOKENS[fmt]):
      return fmt
  return "plain"


class _GenerationTag(jinja2.ext.Extension):
  """Parses transformers' `{% generation %}` block (renders its body unchanged)."""

  tags = {"generation"}

  def parse(self, parser: Any) -> jinja2.nodes.Node:
    lineno = next(parser.stream).lineno
    body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
    return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

  def _body(self, caller: Any) -> str:
    return caller()


def _raise_exception(message: str) -> None:
  raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:
  return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                    sort_keys=sort_keys)


@functools.lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                      extensions=[_GenerationTag, jinja2.ext.loopcontrols])
  env.filters["tojson"] = _tojson
  env.globals["raise_exception"] = _raise_exception
  env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
  return env.from_string(template)


def validate_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
  """Checks roles and string contents; returns plain dicts without None values (as HF does)."""
  if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
    raise ValueError(f"messages must be a list of dicts, got {type(messages).__name__}")
  if not messages:
    raise ValueError("messages is empty")
  out = []
  for i, m in enumerate(messages):
    if not isinstance(m, Mapping):
      raise ValueError(f"message {i}: expected a dict with 'role' and 'content', "
                       f"got {type(m).__name__}")
    role = m.get("role")
    if role not in ROLES:
      raise ValueError(f"message {i}: unknown role {role!r}; expected one of {ROLES}")
    if not isinstance(m.get("content"), str):
      raise ValueError(f"message {i} ({role}): content must be a string, got "
                       f"{type(m.get('content')).__name__}")
    out.append({k: v for k, v in m.items() if v is not None})
  return out


def render_text(messages: Sequence[Mapping[str, Any]], template: str,
                special_tokens: Mapping[str, str], *, add_generation_prompt: bool = False) -> str:
  """The chat as text, as transformers' apply_chat_template(tokenize=False) renders it."""
  return _render(validate_messages(messages), template, special_tokens, add_generation_prompt)


def _render(messages: list[dict[str, str]], template: str, special_tokens: Mapping[str, str],
            add_generation_prompt: bool) -> str:
  kwargs = {k: v for k, v in special_tokens.items() if v is not None}
  try:
    return _compile(template).render(messages=messages, tools=None, documents=None,
                                     add_generation_prompt=add_generation_prompt, **kwargs)
  except jinja2.exceptions.TemplateError as e:
    raise ValueError(f"chat template failed: {e}") from e


def _sentinels(messages: list[dict[str, str]], template: str) -> tuple[str, str]:
  used = template + "".join(m["content"] for m in messages)
  for cp in range(0xE000, 0xF8FF, 2):  # Unicode private-use area
    s, e = chr(cp), chr(cp + 1)
    if s not in used and e not in used:
      return s, e
  raise ValueError("no free private-use characters to mark assistant contents with")


def assistant_spans(messages: list[dict[str, str]], template: str,
                    special_tokens: Mapping[str, str], text: str,
                    add_generation_prompt: bool = False) -> list[tuple[int, int]]:
  """Character spans [start, end) of each assistant content inside `text` (see module doc)."""
  n = sum(m["role"] == "assistant" for m in messages)
  if n == 0:
    return []
  s, e = _sentinels(messages, template)
  pair = re.compile(re.escape(s) + "(.*?)" + re.escape(e), re.DOTALL)
  for strip in (False, True):
    marked = [dict(m, content=s + (m["content"].strip() if strip else m["content"]) + e)
              if m["role"] == "assistant" else m for m in messages]
    mtext = _render(marked, template, special_tokens, add_generation_prompt)
    if mtext.replace(s, "").replace(e, "") != text:
      continue
    spans = []
    for k, m in enumerate(pair.finditer(mtext)):
      start = m.start() - 2 * k  # each earlier pair added two characters
      spans.append((start, start + len(m.group(1))))
    if len(spans) != n or mtext.count(s) != n or mtext.count(e) != n:
      raise ValueError(f"the chat template renders {mtext.count(s)} assistant contents for {n} "
                       "assistant messages; cannot build the loss mask")
    return spans
  raise ValueError("the chat template changes assistant contents beyond strip(); cannot locate "
                   "them in the rendered text for the loss mask")


def end_of_turn(fmt: str, tokenizer: ChatTokenizer) -> tuple[str, int]:
  """The string and id that close an assistant turn in `fmt`, checked against the vocabulary."""
  if fmt not in FORMATS:
    raise ValueError(f"unknown chat format {fmt!r}; expected one of {FORMATS}")
  tok = END_OF_TURN.get(fmt) or tokenizer.special_tokens.get("eos_token")
  if tok is None:
    raise ValueError("chat format 'plain' needs an EOS token to close assistant turns")
  tid = tokenizer.token_to_id(tok)
  if tid is None or tokenizer.encode(tok) != [tid]:
    raise ValueError(f"chat format {fmt!r} needs {tok!r} as one token, but the tokenizer "
                     f"(chat_format={tokenizer.chat_format!r}) does not have it")
  return tok, tid


def render(messages: Sequence[Mapping[str, Any]], tokenizer: ChatTokenizer, *,
           add_generation_prompt: bool = False, fmt: str | None = None,
           require_assistant: bool = False) -> RenderedChat:
  """Renders and tokenizes a chat; the mask marks what SFT trains on.

  fmt=None uses the tokenizer's own template (a checkpoint's, or ours for its chat_format); a
  named format uses our template for it. No BOS/EOS is added beyond what the template writes.
  Raises ValueError for bad messages, or with require_assistant=True when nothing is trainable.
  """
  msgs = validate_messages(messages)
  if fmt is None or fmt == tokenizer.chat_format:
    fmt, template = tokenizer.chat_format, tokenizer.chat_template
  elif fmt in TEMPLATES:
    template = TEMPLATES[fmt]
  else:
    raise ValueError(f"unknown chat format {fmt!r}; expected one of {FORMATS}")
  if require_assistant and not any(m["role"] == "assistant" for m in msgs):
    raise ValueError("conversation has no assistant message, so the loss mask would be all zeros")
  special = tokenizer.special_tokens
  text = _render(msgs, template, special, add_generation_prompt)
  spans = assistant_spans(msgs, template, special, text, add_generation_prompt)
  tokens: list[int] = []
  mask: list[bool] = []
  pos = 0
  if spans:
    eot, eot_id = end_of_turn(fmt, tokenizer)
  for start, end in spans:
    for piece, train in ((text[pos:start], False), (text[start:end], True)):
      ids = tokenizer.encode(piece)
      tokens += ids
      mask += [train] * len(ids)
    if not text.startswith(eot, end):
      raise ValueError(f"the chat template does not close an assistant turn with {eot!r} right "
                       f"after its content (found {text[end:end + 20]!r})")
    tokens.append(eot_id)
    mask.append(True)
    pos = end + len(eot)
  rest = tokenizer.encode(text[pos:])
  tokens += rest
  mask += [False] * len(rest)
  return RenderedChat(text=text, tokens=tokens, assistant_mask=mask)
