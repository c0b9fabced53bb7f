"""SFT record layouts -> chat messages: the one place that knows each layout's fields.

  citrus:   {"input": user prompt, "target": assistant reply} (the reference's SFT layout;
            "output" is read as "target" when there is neither "target" nor "instruction")
  messages: {"messages": [{"role", "content"}, ...]}
  alpaca:   {"instruction", "input" (optional), "output", "history" (optional)}
  sharegpt: {"conversations": [{"from": "human" | "gpt" | "system", "value"}, ...]}
plus an optional top-level "system" prompt (citrus_jax/data/sft.py's docstring has the details).
A bad record raises `_Bad(reason, message)`; the reader adds file:line.
"""
from __future__ import annotations

from typing import Any

from citrus_jax import chat

Messages = list[dict[str, str]]


class _Bad(Exception):
  """A per-record problem: a skip reason and a message (without the location)."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


def _text(obj: dict[str, Any], field: str, reason: str) -> str:
  value = obj[field]
  if not isinstance(value, str):
    raise _Bad("bad_field", f"field {field!r} is {type(value).__name__}, expected a string")
  if not value.strip():
    raise _Bad(reason, f"field {field!r} is empty")
  return value


LAYOUTS = ("messages", "sharegpt", "alpaca", "citrus")
# ShareGPT speaker names -> chat roles (FastChat / LLaMA-Factory tags, and the OpenAI names).
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}


def layout_of(record: dict[str, Any]) -> str | None:
  """Which of `LAYOUTS` a record is in (by its fields), or None."""
  if "messages" in record:
    return "messages"
  if "conversations" in record:
    return "sharegpt"
  if "instruction" in record:
    return "alpaca"
  if "input" in record or "target" in record or "output" in record:
    return "citrus"
  return None


def _turns(raw: Any, field: str, role_key: str, content_key: str,
           roles: dict[str, str]) -> Messages:
  if not isinstance(raw, list) or not raw:
    raise _Bad("bad_field", f"field {field!r} must be a non-empty list of "
               f"{{{role_key!r}, {content_key!r}}} objects")
  messages = []
  for i, m in enumerate(raw):
    if not isinstance(m, dict):
      raise _Bad("bad_field", f"field {field!r}[{i}]: expected an object, got "
                 f"{type(m).__name__}")
    if role_key not in m and "role" in m:  # role/content entries under "conversations"
      rk, ck = "role", "content"
    else:
      rk, ck = role_key, content_key
    role = roles.get(m.get(rk)) if isinstance(m.get(rk), str) else None
    if role is None:
      raise _Bad("bad_field", f"field {field!r}[{i}]: {rk} {m.get(rk)!r} is not one of "
                 f"{sorted(roles)}")
    if not isinstance(m.get(ck), str):
      raise _Bad("bad_field", f"field {field!r}[{i}] ({m.get(rk)}): {ck!r} must be a string")
    if role == "assistant" and not m[ck].strip():
      raise _Bad("empty_target", f"field {field!r}[{i}]: empty assistant content")
    messages.append({"role": role, "content": m[ck]})
  if not any(m["role"] == "assistant" for m in messages):
    raise _Bad("no_assistant", f"field {field!r} has no assistant turn, so nothing would be "
               "trained")
  return messages


def _alpaca(record: dict[str, Any]) -> Messages:
  for field in ("instruction", "output"):
    if field not in record:
      raise _Bad("missing_field", f"missing field {field!r} (an Alpaca record has instruction, "
                 f"input, output; keys: {sorted(record)[:8]})")
  instruction = _text(record, "instruction", "empty_input")
  extra = record.get("input", "")
  if not isinstance(extra, str):
    raise _Bad("bad_field", f"field 'input' is {type(extra).__name__}, expected a string")
  user = "\n".join(x for x in (instruction, extra) if x.strip())
  messages: Messages = []
  history = record.get("history") or []
  if not isinstance(history, list):
    raise _Bad("bad_field", "field 'history' must be a list of [user, assistant] pairs")
  for i, pair in enumerate(history):
    if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and
            all(isinstance(x, str) for x in pair)):
      raise _Bad("bad_field", f"field 'history'[{i}]: expected [user, assistant] strings")
    messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
  return messages + [{"role": "user", "content": user},
                     {"role": "assistant", "content": _text(record, "output", "empty_target")}]


def _citrus(record: dict[str, Any]) -> Messages:
  target = "target" if "target" in record else "output" if "output" in record else "target"
  for field in ("input", target):
    if field not in record:
      raise _Bad("missing_field", f"missing field {field!r} (keys: {sorted(record)[:8]})")
  return [{"role": "user", "content": _text(record, "input", "empty_input")},
          {"role": "assistant", "content": _text(record, target, "empty_target")}]


def to_messages(record: Any) -> Messages:
  """A record in any of `LAYOUTS` -> validated messages (raises `_Bad` with a skip reason)."""
  if not isinstance(record, dict):
    raise _Bad("bad_json", f"expected a JSON object, got {type(record).__name__}")
  record = {k: v for k, v in record.items() if v is not None}  # absent in a table's row
  system = record.get("system")
  if system is not None and not isinstance(system, str):
    raise _Bad("bad_field", f"field 'system' is {type(system).__name__}, expected a string")
  layout = layout_of(record)
  if layout == "messages":
    messages = _turns(record["messages"], "messages", "role", "content",
                      {r: r for r in chat.ROLES})
  elif layout == "sharegpt":
    messages = _turns(record["conversations"], "conversations", "from", "value", SHAREGPT_ROLES)
  elif layout == "alpaca":
    messages = _alpaca(record)
  elif layout == "citrus":
    messages = _citrus(record)
  else:
    raise _Bad("missing_field", "expected field 'messages', 'conversations' (ShareGPT), "
               "'instruction' + 'output' (Alpaca), or 'input' + 'target' (Citrus) "
               f"(keys: {sorted(record)[:8]})")
  if system and system.strip() and messages[0]["role"] != "system":
    messages.insert(0, {"role": "system", "content": system})
  return messages
