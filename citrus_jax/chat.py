"""Chat rendering through the model's Jinja template, with an exact assistant-token mask.

The text is what `transformers` `apply_chat_template(..., tokenize=False)` gives for the same
template: we render with the same Jinja set-up (sandbox, trim_blocks, lstrip_blocks, loopcontrols,
`raise_exception`, `strftime_now`, `tojson`, the special tokens as variables, `enable_thinking`
when given).

The mask comes from rendering twice: once as is, once with every assistant content wrapped in two
private-use sentinel characters. Deleting the sentinels must give back the plain text, so their
positions are the exact character spans of the assistant contents, whatever the template does
around them. Where the template edits contents, the sentinels go around what it keeps: the
stripped content (templates that `| trim` it), or the answer after the last `</think>` (templates
that split the think block off, as Qwen3's); if no one way fits every turn, each turn is marked
alone. Each span must be followed by the end-of-turn token (`<|eot_id|>`, `<|im_end|>`, or EOS for
"plain").

Qwen3 ("qwen3": a ChatML template that handles `</think>`; QWEN3_TEMPLATE is the Hub's) writes a
reply after the last user turn as `<think>\n{reasoning}\n</think>\n\n{answer}`, with an empty
block when the reply has no reasoning, and drops the reasoning of earlier replies. The rule for
what SFT trains, so a think block is never doubled or cut out of a target:
  * a think block the reply carries (`<think>...</think>` in its content, even an empty one, or
    a non-empty `reasoning_content`) is trained with the answer, as the template writes it (its
    newlines normalised); no second, empty block is added;
  * the empty `<think>\n\n</think>\n\n` the template adds to a reply without reasoning is
    prompt, exactly as the generation prompt with enable_thinking=False ends, so prompt ids then
    trained ids are what the sampler feeds and samples;
  * an earlier reply whose reasoning the template drops is trained on its answer only (what the
    model sees of it in a later turn); an answer's leading newlines, which the template drops
    from the last reply, are not trained in any reply;
  * a reply the template would garble (an unclosed `<think>`, two blocks, text before `<think>`,
    `reasoning_content` next to a block) is refused with its message index.

Tokens are encoded piece by piece, split at the start and end of each trained span, so the
mask is exact. Ends are at the end-of-turn token, which tokenizers keep atomic, and starts follow
the generation header (which ends in a newline) or an empty think block (ends in newlines), or are
the atomic `<think>`, so the pieces give the same ids as encoding the whole text, except in one
case: with a byte-level BPE (Qwen) and ChatML, an assistant content that begins with a newline
merges with the header's newline when the whole text is encoded. We keep the piecewise ids there:
they are what the model sees at generation time (prompt ids, then sampled ids).

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
FORMATS = ("llama3", "chatml", "qwen3", "plain")

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

# Qwen3 (Qwen/Qwen3-0.6B .. Qwen3-32B, hybrid thinking): the Hub tokenizer_config.json
# chat_template byte for byte (the same text as TRL 1.16's chat_templates/qwen3.jinja, which
# TRL checks weekly against the Qwen repos). Kept as is, tool calls included.
QWEN3_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""

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

TEMPLATES = {"llama3": LLAMA3_TEMPLATE, "chatml": CHATML_TEMPLATE, "qwen3": QWEN3_TEMPLATE,
             "plain": PLAIN_TEMPLATE}
# The chat tokens each format needs in the vocabulary (trained as SentencePiece user symbols).
CHAT_TOKENS = {
    "llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    "chatml": ("<|im_start|>", "<|im_end|>"),
    # <think> and </think> are content, not chat tokens (Qwen3's vocabulary marks them
    # special=False, so decoding keeps them); Qwen3 is inferred from its template, not its vocab.
    "qwen3": ("<|im_start|>", "<|im_end|>"),
    "plain": (),
}
# The token that closes an assistant turn (trained); "plain" uses the tokenizer's EOS.
END_OF_TURN = {"llama3": "<|eot_id|>", "chatml": "<|im_end|>", "qwen3": "<|im_end|>"}
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


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
      return "qwen3" if THINK_CLOSE in template else "chatml"
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
    for key in ("content", "reasoning_content"):
      if (key == "content" or m.get(key) is not None) and not isinstance(m.get(key), str):
        raise ValueError(f"message {i} ({role}): {key} must be a string, got "
                         f"{type(m.get(key)).__name__}")
    out.append({k: v for k, v in m.items() if v is not None})
  return out


def check_think_blocks(messages: Sequence[Mapping[str, Any]]) -> None:
  """Refuses Qwen3 replies whose think block the template would drop or double (module doc).

  The template takes the text before the first </think> (after its <think>) as the reasoning and
  the text after the last </think> as the answer: a second block or text before <think> would
  vanish, an unclosed <think> would follow the template's own empty block, and reasoning_content
  next to a block in the content would be written twice.
  """
  for i, m in enumerate(messages):
    content = m["content"]
    n_open, n_close = content.count(THINK_OPEN), content.count(THINK_CLOSE)
    if m["role"] != "assistant" or not n_open + n_close:
      continue
    where = f"message {i} (assistant)"
    if isinstance(m.get("reasoning_content"), str):
      raise ValueError(f"{where}: has reasoning_content and a think block in its content; "
                       "Qwen3's template would write both")
    head, _, tail = content.partition(THINK_CLOSE)
    before = head.partition(THINK_OPEN)[0].strip() if THINK_OPEN in head else ""
    if n_close != 1 or n_open > 1 or THINK_OPEN in tail or before:
      raise ValueError(
          f"{where}: a Qwen3 reply holds at most one think block, at its start "
          f"('<think>reasoning</think>answer'); found {n_open} {THINK_OPEN} and {n_close} "
          f"{THINK_CLOSE}" + (f" after the text {before[:30]!r}" if before else "") +
          ", which the template would drop or double")


def render_text(messages: Sequence[Mapping[str, Any]], template: str,
                special_tokens: Mapping[str, str], *, add_generation_prompt: bool = False,
                enable_thinking: bool | None = None) -> str:
  """The chat as text, as transformers' apply_chat_template(tokenize=False) renders it."""
  return _render(validate_messages(messages), template, special_tokens, add_generation_prompt,
                 enable_thinking)


def _render(messages: list[dict[str, str]], template: str, special_tokens: Mapping[str, str],
            add_generation_prompt: bool, enable_thinking: bool | None = None) -> str:
  kwargs = {k: v for k, v in special_tokens.items() if v is not None}
  if enable_thinking is not None:  # None leaves it undefined: the template's default
    kwargs["enable_thinking"] = enable_thinking
  try:
    return _compile(template).render(messages=messages, tools=None, documents=None,
                                     add_generation_prompt=add_generation_prompt, **kwargs)
  except jinja2.exceptions.TemplateError as e:
    raise ValueError(f"chat template failed: {e}") from e


def _sentinels(messages: list[dict[str, str]], template: str) -> tuple[str, str]:
  used = template + "".join(m["content"] + m.get("reasoning_content", "") for m in messages)
  for cp in range(0xE000, 0xF8FF, 2):  # Unicode private-use area
    s, e = chr(cp), chr(cp + 1)
    if s not in used and e not in used:
      return s, e
  raise ValueError("no free private-use characters to mark assistant contents with")


def _mark(content: str, s: str, e: str, how: str) -> str:
  """The content wrapped in sentinels: as is, stripped (templates that `| trim`), or around the
  answer, after the last </think> and the newlines after it (templates that split the think
  block off and lstrip('\n') the rest, as Qwen3's)."""
  if how == "raw":
    return s + content + e
  if how == "strip":
    return s + content.strip() + e
  k = content.rfind(THINK_CLOSE)
  k = 0 if k < 0 else k + len(THINK_CLOSE)
  k += len(content[k:]) - len(content[k:].lstrip("\n"))
  return content[:k] + s + content[k:] + e


_CHANGES = ("the chat template changes assistant contents beyond strip(); cannot locate them in "
            "the rendered text for the loss mask")


def _find_spans(messages: list[dict[str, str]], which: Sequence[int], render_fn: Any, text: str,
                s: str, e: str, ways: Sequence[str]) -> tuple[list[tuple[int, int]] | None, str]:
  """Spans of the contents of messages `which`, marked in the first way the template keeps."""
  pair = re.compile(re.escape(s) + "(.*?)" + re.escape(e), re.DOTALL)
  why, tried = _CHANGES, []
  for how in ways:
    marked = [dict(m, content=_mark(m["content"], s, e, how)) if i in which else m
              for i, m in enumerate(messages)]
    if marked in tried:
      continue
    tried.append(marked)
    mtext = render_fn(marked)
    if mtext.replace(s, "").replace(e, "") != text:
      continue
    spans = []
    for k, m in enumerate(pair.finditer(mtext)):
      start = m.start() - 2 * k  # each earlier pair added two characters
      spans.append((start, start + len(m.group(1))))
    if len(spans) == mtext.count(s) == mtext.count(e) == len(which):
      return spans, ""
    why = (f"the chat template renders {mtext.count(s)} assistant contents for {len(which)} "
           "assistant messages; cannot build the loss mask")
  return None, why


def _own_think_start(text: str, start: int, floor: int) -> int:
  """Where the think block written right before an answer starts (else `start`)."""
  before = text[floor:start]
  if not before.rstrip().endswith(THINK_CLOSE):
    return start
  j = before.rfind(THINK_OPEN)
  return start if j < 0 else floor + j


def assistant_spans(messages: list[dict[str, str]], template: str,
                    special_tokens: Mapping[str, str], text: str,
                    add_generation_prompt: bool = False,
                    enable_thinking: bool | None = None) -> list[tuple[int, int]]:
  """Character spans [start, end) of what SFT trains in each assistant turn (see module doc)."""
  idx = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
  if not idx:
    return []
  s, e = _sentinels(messages, template)
  render_fn = lambda msgs: _render(msgs, template, special_tokens, add_generation_prompt,
                                   enable_thinking)
  # Templates that handle </think> (Qwen3) train the answer without its leading newlines, which
  # Qwen3 drops from the last reply, so every reply is trained alike.
  ways = ("answer", "raw", "strip") if THINK_CLOSE in template else ("raw", "strip", "answer")
  spans, why = _find_spans(messages, idx, render_fn, text, s, e, ways)
  if spans is None:  # no one way fits every turn (e.g. the template lstrips only the last)
    spans = []
    for i in idx:
      one, why = _find_spans(messages, [i], render_fn, text, s, e, ways)
      if one is None:
        raise ValueError(why)
      spans += one
    if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
      raise ValueError(_CHANGES)
  out, floor = [], 0
  for i, (start, end) in zip(idx, spans):
    m = messages[i]
    if THINK_CLOSE in m["content"] or m.get("reasoning_content", "").strip():
      start = _own_think_start(text, start, floor)  # the reply's own think block is trained
    out.append((start, end))
    floor = end
  return out


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
           require_assistant: bool = False, enable_thinking: bool | None = None) -> RenderedChat:
  """Renders and tokenizes a chat; the mask marks what SFT trains on.

  fmt=None uses the tokenizer's own template (a checkpoint's, or ours for its chat_format); a
  named format uses our template for it. No BOS/EOS is added beyond what the template writes.
  enable_thinking is passed to the template as transformers passes it (None: not defined; Qwen3
  then thinks; False: its generation prompt ends in an empty think block).
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
  if fmt == "qwen3":
    check_think_blocks(msgs)
  special = tokenizer.special_tokens
  text = _render(msgs, template, special, add_generation_prompt, enable_thinking)
  spans = assistant_spans(msgs, template, special, text, add_generation_prompt, enable_thinking)
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
