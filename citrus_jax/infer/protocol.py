"""The OpenAI request bodies the server accepts, as pydantic models (they are its OpenAPI schema),
and the OpenAI error body every error answer uses.

Models are strict (no "1" for 1, no true for 1, no 2.0 for an integer field) and ignore unknown
fields, as vLLM does. What pydantic cannot say (n against the server's --max-n, a model name, the
context length) the server checks itself.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
  model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(_Strict):
  type: Literal["text"]
  text: str


class Message(_Strict):
  role: Literal["system", "developer", "user", "assistant"] = Field(
      description="'developer' is treated as 'system'")
  content: str | list[TextPart] = Field(description="text, or a list of text parts")
  name: str | None = None

  def text(self) -> str:
    return self.content if isinstance(self.content, str) else "".join(p.text for p in
                                                                       self.content)


class StreamOptions(_Strict):
  include_usage: bool = False


StopList = Annotated[list[str], Field(max_length=4)]


class _Sampling(_Strict):
  model: str = Field(min_length=1, description="the served model id (GET /v1/models)")
  n: int = Field(1, ge=1, description="completions per prompt (at most the server's --max-n)")
  temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy; default 1")
  top_p: float | None = Field(None, gt=0, le=1)
  seed: int | None = None
  stop: str | StopList | None = Field(None, description="up to 4 stop strings")
  stream: bool = False
  stream_options: StreamOptions | None = None
  max_tokens: int | None = Field(None, ge=1, le=1 << 31)


class ChatCompletionRequest(_Sampling):
  messages: list[Message] = Field(min_length=1)
  max_completion_tokens: int | None = Field(None, ge=1, le=1 << 31)
  logprobs: bool | None = Field(None, description="not supported: must be false or absent")
  tools: list[dict[str, Any]] | None = Field(None, description="not supported")
  functions: list[dict[str, Any]] | None = Field(None, description="not supported")


TokenIds = Annotated[list[int], Field(min_length=1)]


class CompletionRequest(_Sampling):
  prompt: str | Annotated[list[str], Field(min_length=1)] | TokenIds | \
      Annotated[list[TokenIds], Field(min_length=1)] = Field(
          description="a string, a list of strings, token ids, or a list of token id lists")
  echo: bool = False
  logprobs: int | None = Field(None, description="not supported: must be 0 or absent")


class ErrorDetail(BaseModel):
  message: str
  type: str
  param: str | None = None
  code: str | None = None


class ErrorResponse(BaseModel):
  error: ErrorDetail


class ApiError(Exception):
  """An error answer: HTTP status plus the OpenAI error fields."""

  def __init__(self, status: int, message: str, *, param: str | None = None,
               code: str | None = None, kind: str | None = None):
    super().__init__(message)
    self.status, self.message, self.param, self.code = status, message, param, code
    self.kind = kind or ("server_error" if status >= 500 else "invalid_request_error")

  def body(self) -> dict[str, Any]:
    return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                      "code": self.code}}


def _where(loc: Sequence[Any]) -> str:
  """'messages[0].role' from pydantic's ('messages', 0, 'role'), without union member tags."""
  out = ""
  for part in loc:
    if isinstance(part, int):
      out += f"[{part}]"
    elif "[" in part or part in ("str", "int", "float", "bool") or "-" in part:
      continue  # e.g. 'list[str]': which union member was tried
    else:
      out += ("." if out else "") + part
  return out


def validation_error(errors: Sequence[dict[str, Any]]) -> ApiError:
  """One 400 naming the first bad field, from FastAPI's RequestValidationError.errors()."""
  if not errors:
    return ApiError(400, "invalid request")
  first = errors[0]
  loc = list(first.get("loc", ()))
  if loc[:1] == ["body"]:
    loc = loc[1:]
  if first.get("type") == "json_invalid":
    return ApiError(400, "request body is not valid JSON: "
                    f"{(first.get('ctx') or {}).get('error', first.get('msg'))}")
  if not loc or isinstance(loc[0], int):
    if first.get("type") == "missing":
      return ApiError(400, "a JSON request body is required")
    return ApiError(400, "request body must be a JSON object (Content-Type: application/json)")
  param = str(loc[0])
  where = _where(loc)
  msgs = []
  for e in errors:  # every alternative pydantic tried for this same field (unions)
    e_loc = list(e.get("loc", ()))
    e_loc = e_loc[1:] if e_loc[:1] == ["body"] else e_loc
    if e_loc[:1] == [loc[0]] and e.get("msg") not in msgs:
      msgs.append(e.get("msg"))
  return ApiError(400, f"'{where}': " + "; or ".join(msgs), param=param)
