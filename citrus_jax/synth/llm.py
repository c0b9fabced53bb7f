"""One small chat interface for data synthesis, an OpenAI-compatible HTTP client, and a disk cache.

`LLM.complete(ChatRequest) -> ChatResponse`: chat messages in, `n` texts out. Backends:
  * `OpenAIBackend`: any OpenAI-compatible server (vLLM, `python -m citrus_jax.infer.serve`, hosted
    APIs) through the standard library. The API key is read from an environment variable at call
    time; it is never logged, cached or written anywhere, and goes only to the host it is for
    (OPENAI_API_KEY to https://api.openai.com only; see `key_env_for`). 429 and 5xx answers and
    network errors are retried with exponential backoff (honouring Retry-After); a semaphore
    bounds the requests in flight.
  * `citrus_jax.infer.local.SamplerBackend`: the in-process citrus_jax sampler.
  * `FunctionLLM`: a Python function (scripted roles in tests, quick experiments).
`CachedLLM` wraps any of them with an append-only JSONL cache keyed by the request, so rerunning a
synthesis job costs nothing for the calls already answered.
"""
from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Mapping, Sequence

from absl import logging

from citrus_jax.data import records

Messages = list[dict[str, str]]


class LLMError(RuntimeError):
  """A call failed (after retries). Synthesis leaves the item uncommitted so a rerun retries it."""


class RequestError(LLMError):
  """The request itself is bad (a 4xx answer); retrying cannot help."""


class PromptTooLongError(RequestError):
  """The prompt (plus max_tokens) does not fit the model's context."""


@dataclasses.dataclass(frozen=True)
class ChatRequest:
  """What is asked. `tag` names the asker (a synthesis role) for stats and scripted backends; it
  is not sent to the model and not part of the cache key."""

  messages: Sequence[Mapping[str, str]]
  n: int = 1
  temperature: float = 0.0
  max_tokens: int = 256
  seed: int | None = None
  stop: tuple[str, ...] = ()
  top_p: float = 1.0
  tag: str = ""

  def validate(self) -> "ChatRequest":
    if not self.messages:
      raise RequestError("ChatRequest: messages is empty")
    for i, m in enumerate(self.messages):
      if not isinstance(m, Mapping) or not isinstance(m.get("content"), str) \
          or m.get("role") not in ("system", "user", "assistant"):
        raise RequestError(f"ChatRequest: message {i} needs a role (system/user/assistant) and "
                           "a string content")
    if self.n < 1 or self.max_tokens < 1:
      raise RequestError(f"ChatRequest: need n >= 1 and max_tokens >= 1, got n={self.n}, "
                         f"max_tokens={self.max_tokens}")
    if self.temperature < 0 or not 0 < self.top_p <= 1:
      raise RequestError(f"ChatRequest: need temperature >= 0 and 0 < top_p <= 1, got "
                         f"{self.temperature}, {self.top_p}")
    return self

  def key_fields(self) -> dict[str, Any]:
    """Everything that determines the answer (not the tag)."""
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in self.messages],
            "n": self.n, "temperature": self.temperature, "max_tokens": self.max_tokens,
            "seed": self.seed, "stop": list(self.stop), "top_p": self.top_p}


@dataclasses.dataclass
class ChatResponse:
  texts: list[str]
  finish_reasons: list[str]
  prompt_tokens: int = 0
  completion_tokens: int = 0
  cached: bool = False

  def to_json(self) -> dict[str, Any]:
    return {"texts": self.texts, "finish_reasons": self.finish_reasons,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> "ChatResponse":
    return cls(list(d["texts"]), list(d["finish_reasons"]), int(d.get("prompt_tokens", 0)),
               int(d.get("completion_tokens", 0)))


class LLM(abc.ABC):
  """Chat messages in, text out. Implementations must be safe to call from several threads."""

  name: str = "llm"  # identifies the model in cache keys

  @abc.abstractmethod
  def complete(self, request: ChatRequest) -> ChatResponse:
    """Answers `request` with exactly `request.n` texts, or raises LLMError."""

  def chat(self, messages: Sequence[Mapping[str, str]], **kw: Any) -> ChatResponse:
    return self.complete(ChatRequest(messages, **kw))

  def close(self) -> None:
    pass


class FunctionLLM(LLM):
  """Wraps `fn(request) -> str | list[str] | ChatResponse`; token counts are whitespace words."""

  def __init__(self, fn: Callable[[ChatRequest], Any], name: str = "function"):
    self.fn, self.name = fn, name
    self.calls = 0
    self._lock = threading.Lock()

  def complete(self, request: ChatRequest) -> ChatResponse:
    request.validate()
    with self._lock:
      self.calls += 1
    out = self.fn(request)
    if isinstance(out, ChatResponse):
      return out
    texts = [out] * request.n if isinstance(out, str) else list(out)
    if len(texts) != request.n:
      raise LLMError(f"{self.name}: returned {len(texts)} texts for n={request.n}")
    words = lambda s: len(s.split())
    return ChatResponse(texts, ["stop"] * len(texts),
                        sum(words(m["content"]) for m in request.messages),
                        sum(words(t) for t in texts))


# ------------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP client (standard library only).


OPENAI_KEY_ENV = "OPENAI_API_KEY"
OPENAI_HOSTS = ("api.openai.com",)  # where OPENAI_API_KEY is documented to go
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def key_env_for(base_url: str, api_key_env: str | None) -> str | None:
  """The environment variable whose key may go to `base_url`, or None (send no key).

  API keys go only to the host they were configured for: OPENAI_API_KEY (the default) is sent
  to https://api.openai.com and nowhere else, so pointing base_url at a local server, a proxy or
  another provider never leaks it; such endpoints get a key only from a variable named for them
  in api_key_env (e.g. VLLM_API_KEY).
  """
  if not api_key_env:
    return None
  url = urllib.parse.urlsplit(base_url)
  if api_key_env == OPENAI_KEY_ENV and not (url.scheme == "https"
                                            and url.hostname in OPENAI_HOSTS):
    if os.environ.get(OPENAI_KEY_ENV):
      logging.warning("OpenAIBackend: not sending %s to %s://%s (it only goes to https://%s); "
                      "name the variable holding that server's key in api_key_env",
                      OPENAI_KEY_ENV, url.scheme, url.netloc, OPENAI_HOSTS[0])
    return None
  if url.scheme == "http" and url.hostname not in _LOOPBACK:
    logging.warning("OpenAIBackend: the key in %s goes over plain http to %s", api_key_env,
                    url.netloc)
  return api_key_env


class _NoRedirect(urllib.request.HTTPRedirectHandler):
  """A redirect is an error: the key (and the request) go to the configured host only."""

  def redirect_request(self, req, fp, code, msg, headers, newurl):
    del req, fp, code, msg, headers, newurl
    return None


class OpenAIBackend(LLM):
  """POST {base_url}/chat/completions. base_url ends in /v1 (e.g. http://127.0.0.1:8000/v1).

  The key: see `key_env_for` (OPENAI_API_KEY only to https://api.openai.com; any other endpoint
  only from a variable named in api_key_env). Redirects are not followed.
  """

  def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY",
               timeout_s: float = 120.0, max_retries: int = 5, backoff_s: float = 1.0,
               max_backoff_s: float = 60.0, concurrency: int = 8,
               max_tokens_field: str = "max_tokens", extra_body: Mapping[str, Any] | None = None):
    if not base_url.startswith(("http://", "https://")):
      raise ValueError(f"OpenAIBackend: base_url {base_url!r} must start with http:// or https://")
    if not model:
      raise ValueError("OpenAIBackend: model is empty")
    if concurrency < 1 or max_retries < 0:
      raise ValueError(f"OpenAIBackend: need concurrency >= 1 and max_retries >= 0, got "
                       f"{concurrency}, {max_retries}")
    self.base_url = base_url.rstrip("/")
    self.model = model
    self.name = f"openai:{model}"
    self.api_key_env = key_env_for(self.base_url, api_key_env)  # None: no key is sent
    self._opener = urllib.request.build_opener(_NoRedirect)
    self.timeout_s, self.max_retries = timeout_s, max_retries
    self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
    self.max_tokens_field = max_tokens_field
    self.extra_body = dict(extra_body or {})
    self._slots = threading.BoundedSemaphore(concurrency)
    self._rng = random.Random(0)  # jitter only; results do not depend on it

  def __repr__(self) -> str:  # never shows the key
    return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r})"

  def _headers(self) -> dict[str, str]:
    return {"Content-Type": "application/json", "Accept": "application/json"}

  def _body(self, request: ChatRequest) -> dict[str, Any]:
    body = {"model": self.model, "messages": request.key_fields()["messages"], "n": request.n,
            "temperature": request.temperature, self.max_tokens_field: request.max_tokens}
    if request.top_p < 1.0:
      body["top_p"] = request.top_p
    if request.seed is not None:
      body["seed"] = request.seed
    if request.stop:
      body["stop"] = list(request.stop)
    body.update(self.extra_body)
    return body

  def _delay(self, attempt: int, retry_after: str | None) -> float:
    try:
      if retry_after is not None:
        return min(float(retry_after), self.max_backoff_s)
    except ValueError:
      pass
    base = min(self.backoff_s * 2 ** attempt, self.max_backoff_s)
    return base * (0.5 + 0.5 * self._rng.random())

  def complete(self, request: ChatRequest) -> ChatResponse:
    request.validate()
    data = json.dumps(self._body(request)).encode()
    url = f"{self.base_url}/chat/completions"
    last = ""
    for attempt in range(self.max_retries + 1):
      retry_after = None
      with self._slots:
        try:
          req = urllib.request.Request(url, data=data, headers=self._headers(), method="POST")
          key = os.environ.get(self.api_key_env) if self.api_key_env else None
          if key:  # read at call time; never copied onto a redirect
            req.add_unredirected_header("Authorization", f"Bearer {key}")
          with self._opener.open(req, timeout=self.timeout_s) as resp:
            payload = json.loads(resp.read().decode("utf-8"))
          return _parse_chat(payload, request.n, url)
        except urllib.error.HTTPError as e:
          detail = _error_detail(e)
          if e.code != 429 and e.code < 500:
            kind = PromptTooLongError if "context_length" in detail else RequestError
            raise kind(f"{url}: HTTP {e.code}: {detail}") from None
          retry_after = e.headers.get("Retry-After") if e.headers else None
          last = f"HTTP {e.code}: {detail}"
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
          last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
          last = f"unreadable response: {e}"
      if attempt < self.max_retries:
        delay = self._delay(attempt, retry_after)
        logging.warning("%s: %s; retry %d/%d in %.1fs", url, last, attempt + 1,
                        self.max_retries, delay)
        time.sleep(delay)
    raise LLMError(f"{url}: failed after {self.max_retries + 1} attempts; last: {last}")


def _error_detail(e: urllib.error.HTTPError) -> str:
  try:
    body = e.read().decode("utf-8", "replace")
  except Exception:  # the body is a courtesy; the status code is what matters
    return str(e.reason)
  try:
    err = json.loads(body).get("error")
    if isinstance(err, dict):
      return f"{err.get('message', '')} (code={err.get('code')})"[:500]
  except (json.JSONDecodeError, AttributeError):
    pass
  return body[:500]


def _parse_chat(payload: Any, n: int, url: str) -> ChatResponse:
  choices = payload.get("choices") if isinstance(payload, dict) else None
  if not isinstance(choices, list) or len(choices) != n:
    raise LLMError(f"{url}: expected {n} choices, got "
                   f"{len(choices) if isinstance(choices, list) else type(choices).__name__}")
  choices = sorted(choices, key=lambda c: c.get("index", 0))
  texts = [((c.get("message") or {}).get("content") or "") for c in choices]
  reasons = [c.get("finish_reason") or "stop" for c in choices]
  usage = payload.get("usage") or {}
  return ChatResponse(texts, reasons, int(usage.get("prompt_tokens") or 0),
                      int(usage.get("completion_tokens") or 0))


# ------------------------------------------------------------------------------------------------
# Disk cache.


class CachedLLM(LLM):
  """An append-only JSONL cache of request -> response in front of `backend`.

  The key hashes the backend's name, `namespace` and every field of the request that determines
  the answer. A torn last line (a killed job) is ignored and cut off when the cache is reopened.
  """

  def __init__(self, backend: LLM, path: str, namespace: str = ""):
    self.backend, self.path, self.namespace = backend, path, namespace
    self.name = backend.name
    self.hits = self.misses = 0
    self._lock = threading.Lock()
    self._table: dict[str, dict[str, Any]] = {}
    if os.path.dirname(path):
      os.makedirs(os.path.dirname(path), exist_ok=True)
    self._load()
    self._file = open(path, "a", encoding="utf-8")

  def _load(self) -> None:
    try:
      entries = records.read_log(self.path, required=("key", "response"))
    except records.RecordError as e:
      raise records.RecordError(f"{e}: corrupt cache entry; delete the file to start a fresh "
                                "cache", path=e.path, line=e.line, field=e.field,
                                reason=e.reason) from None
    for entry in entries:
      self._table[entry["key"]] = entry["response"]

  def __len__(self) -> int:
    return len(self._table)

  def key(self, request: ChatRequest) -> str:
    fields = {"model": self.backend.name, "namespace": self.namespace, **request.key_fields()}
    blob = json.dumps(fields, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()

  def complete(self, request: ChatRequest) -> ChatResponse:
    key = self.key(request.validate())
    with self._lock:
      hit = self._table.get(key)
      if hit is not None:
        self.hits += 1
    if hit is not None:
      return dataclasses.replace(ChatResponse.from_json(hit), cached=True)
    response = self.backend.complete(request)
    entry = response.to_json()
    with self._lock:
      self.misses += 1
      self._table[key] = entry
      self._file.write(json.dumps({"key": key, "response": entry}, ensure_ascii=False) + "\n")
      self._file.flush()
    return response

  def close(self) -> None:
    with self._lock:
      if not self._file.closed:
        self._file.close()
    self.backend.close()
