"""An OpenAI-compatible HTTP server over the citrus_jax sampler (standard library only).

  python -m citrus_jax.infer.serve --checkpoint runs/demo/sft3 --tokenizer runs/demo/tok.model --port 8000

Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models[/<id>], GET /health.
Concurrent requests are batched by `SamplerBackend` (a queue and one worker thread that groups what
arrives within a short window into one `generate` call). `stream: true` is answered as
server-sent events; the text is generated first and then sent as one content chunk.
Binds to 127.0.0.1 unless --host says otherwise; --api-key-env NAME makes every request present
`Authorization: Bearer <$NAME>`. Bad requests get OpenAI-style 4xx JSON errors
({"error": {"message", "type", "param", "code"}}) and the server keeps serving.
Not supported (400): tools, logprobs. Other unknown fields are ignored, as vLLM does.
"""
from __future__ import annotations

import argparse
import hmac
import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from absl import logging

from citrus_jax.synth.llm import PromptTooLongError, RequestError
from citrus_jax.infer.local import SamplerBackend


class ApiError(Exception):
  def __init__(self, status: int, message: str, *, param: str | None = None,
               code: str | None = None, kind: str = "invalid_request_error"):
    super().__init__(message)
    self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

  def body(self) -> dict[str, Any]:
    return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                      "code": self.code}}


class OpenAIServer(ThreadingHTTPServer):
  daemon_threads = True

  def __init__(self, address: tuple[str, int], backend: SamplerBackend, model_name: str, *,
               api_key: str | None = None, default_max_tokens: int = 256, max_n: int = 16,
               max_body_bytes: int = 8 << 20):
    super().__init__(address, _Handler)
    self.backend, self.model_name = backend, model_name
    self.api_key, self.default_max_tokens = api_key, default_max_tokens
    self.max_n, self.max_body_bytes = max_n, max_body_bytes
    self.created = int(time.time())


def make_server(backend: SamplerBackend, model_name: str, host: str = "127.0.0.1", port: int = 0,
                **kw: Any) -> OpenAIServer:
  """A bound, not yet serving server (port 0 picks a free port: see server.server_address)."""
  return OpenAIServer((host, port), backend, model_name, **kw)


def serve_in_thread(server: OpenAIServer) -> threading.Thread:
  thread = threading.Thread(target=server.serve_forever, name="openai-server", daemon=True)
  thread.start()
  return thread


# ------------------------------------------------------------------------------------------------
# Request field checks.


def _number(body: dict, name: str, default: Any, lo: float, hi: float, kind: type = float) -> Any:
  value = body.get(name)
  if value is None:
    return default
  ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  if kind is int:
    ok = ok and float(value).is_integer()
  if not ok or not lo <= value <= hi:
    what = "an integer" if kind is int else "a number"
    raise ApiError(400, f"'{name}' must be {what} in [{lo}, {hi}], got {value!r}", param=name)
  return kind(value)


def _stop(body: dict) -> tuple[str, ...]:
  stop = body.get("stop")
  if stop is None:
    return ()
  stop = [stop] if isinstance(stop, str) else stop
  if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
    raise ApiError(400, "'stop' must be a string or a list of at most 4 strings", param="stop")
  return tuple(s for s in stop if s)


def _content(content: Any, i: int) -> str:
  if isinstance(content, str):
    return content
  if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
    parts = []
    for p in content:
      if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
        raise ApiError(400, f"messages[{i}].content: only text parts are supported",
                       param="messages")
      parts.append(p["text"])
    return "".join(parts)
  raise ApiError(400, f"messages[{i}].content must be a string or a list of text parts",
                 param="messages")


def _messages(body: dict) -> list[dict[str, str]]:
  messages = body.get("messages")
  if not isinstance(messages, list) or not messages:
    raise ApiError(400, "'messages' must be a non-empty list", param="messages")
  out = []
  for i, m in enumerate(messages):
    if not isinstance(m, dict):
      raise ApiError(400, f"messages[{i}] must be an object", param="messages")
    role = "system" if m.get("role") == "developer" else m.get("role")
    if role not in ("system", "user", "assistant"):
      raise ApiError(400, f"messages[{i}].role {m.get('role')!r} is not supported (system, "
                     "developer, user, assistant)", param="messages")
    out.append({"role": role, "content": _content(m.get("content"), i)})
  return out


# ------------------------------------------------------------------------------------------------
# The handler.


class _Handler(BaseHTTPRequestHandler):
  protocol_version = "HTTP/1.1"
  server_version = "citrus_jax"
  server: OpenAIServer

  def log_message(self, fmt: str, *args: Any) -> None:  # request line and status, no headers
    logging.info("%s %s", self.address_string(), fmt % args)

  def do_GET(self) -> None:
    self._dispatch("GET")

  def do_POST(self) -> None:
    self._dispatch("POST")

  # ---------------------------------------------------------------------------- plumbing

  def _send_json(self, status: int, obj: Any) -> None:
    data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    if self.close_connection:
      self.send_header("Connection", "close")
    self.end_headers()
    self.wfile.write(data)

  def _send_events(self, events: list[dict[str, Any]]) -> None:
    self.close_connection = True
    self.send_response(200)
    self.send_header("Content-Type", "text/event-stream")
    self.send_header("Cache-Control", "no-cache")
    self.send_header("Connection", "close")
    self.end_headers()
    for e in events:
      self.wfile.write(b"data: " + json.dumps(e, ensure_ascii=False).encode("utf-8") + b"\n\n")
    self.wfile.write(b"data: [DONE]\n\n")
    self.wfile.flush()

  def _read_body(self) -> bytes:
    length = self.headers.get("Content-Length")
    if length is None:
      self.close_connection = True
      raise ApiError(411, "a Content-Length header is required")
    try:
      n = int(length)
    except ValueError:
      self.close_connection = True
      raise ApiError(400, "bad Content-Length header") from None
    if n > self.server.max_body_bytes:
      self.close_connection = True
      raise ApiError(413, f"request body of {n} bytes exceeds {self.server.max_body_bytes}")
    return self.rfile.read(n)

  def _json(self, raw: bytes) -> dict[str, Any]:
    try:
      body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise ApiError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
      raise ApiError(400, "request body must be a JSON object")
    return body

  def _check_auth(self) -> None:
    key = self.server.api_key
    if not key:
      return
    given = self.headers.get("Authorization", "")
    token = given[7:].strip() if given.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(token.encode(), key.encode()):
      raise ApiError(401, "invalid or missing API key", code="invalid_api_key")

  def _dispatch(self, method: str) -> None:
    try:
      raw = self._read_body() if method == "POST" else b""
      self._check_auth()
      path = urlsplit(self.path).path.rstrip("/")
      routes = {("GET", "/v1/models"): self._models, ("GET", "/health"): self._health,
                ("POST", "/v1/chat/completions"): self._chat,
                ("POST", "/v1/completions"): self._completions}
      if (method, path) in routes:
        routes[(method, path)](raw)
      elif method == "GET" and path.startswith("/v1/models/"):
        self._model(path[len("/v1/models/"):])
      elif any(p == path for _, p in routes):
        raise ApiError(405, f"method {method} not allowed on {path}")
      else:
        raise ApiError(404, f"no route {method} {path}", code="not_found")
    except ApiError as e:
      self._send_json(e.status, e.body())
    except Exception as e:  # the server keeps serving; the client sees a 500
      logging.exception("internal error on %s %s", method, self.path)
      self._send_json(500, ApiError(500, f"internal error: {type(e).__name__}: {e}",
                                    kind="server_error").body())

  # ---------------------------------------------------------------------------- endpoints

  def _model_card(self) -> dict[str, Any]:
    return {"id": self.server.model_name, "object": "model", "created": self.server.created,
            "owned_by": "citrus_jax", "max_model_len": self.server.backend.cfg.max_seq_len}

  def _models(self, _raw: bytes) -> None:
    self._send_json(200, {"object": "list", "data": [self._model_card()]})

  def _model(self, name: str) -> None:
    if name != self.server.model_name:
      raise ApiError(404, f"The model '{name}' does not exist", param="model",
                     code="model_not_found")
    self._send_json(200, self._model_card())

  def _health(self, _raw: bytes) -> None:
    self._send_json(200, {"status": "ok"})

  def _common(self, body: dict) -> dict[str, Any]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
      raise ApiError(400, "'model' is required", param="model")
    if model != self.server.model_name:
      raise ApiError(404, f"The model '{model}' does not exist; this server serves "
                     f"'{self.server.model_name}'", param="model", code="model_not_found")
    for name in ("tools", "functions"):
      if body.get(name):
        raise ApiError(400, f"'{name}' is not supported by this server", param=name)
    if body.get("logprobs") not in (None, False, 0):
      raise ApiError(400, "'logprobs' is not supported by this server", param="logprobs")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
      raise ApiError(400, "'stream' must be a boolean", param="stream")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
      raise ApiError(400, "'seed' must be an integer", param="seed")
    return dict(n=_number(body, "n", 1, 1, self.server.max_n, int),
                temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
                top_p=_number(body, "top_p", 1.0, 1e-9, 1.0), seed=seed, stop=_stop(body),
                stream=stream, include_usage=bool((body.get("stream_options") or {})
                                                 .get("include_usage")))

  def _max_tokens(self, body: dict, prompt: list[int], default: int) -> int:
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None \
        else "max_tokens"
    room = self.server.backend.room(prompt)
    value = _number(body, name, None, 1, 1 << 31, int)
    if value is None:
      if room < 1:
        raise ApiError(400, f"This model's maximum context length is "
                       f"{self.server.backend.cfg.max_seq_len} tokens; the prompt has "
                       f"{len(prompt)}.", param="messages", code="context_length_exceeded")
      return min(default, room)
    return value

  def _generate(self, prompts: list[list[int]], max_tokens: list[int], p: dict) -> list[list]:
    """Submits every prompt first (so they can share a batch), then waits."""
    backend = self.server.backend
    try:
      futures = [backend.submit(ids, n=p["n"], max_tokens=m, temperature=p["temperature"],
                                top_p=p["top_p"], seed=p["seed"], stop=p["stop"])
                 for ids, m in zip(prompts, max_tokens)]
    except PromptTooLongError as e:
      raise ApiError(400, str(e), param="max_tokens", code="context_length_exceeded") from None
    except RequestError as e:
      raise ApiError(400, str(e)) from None
    return [f.result() for f in futures]

  def _chat(self, raw: bytes) -> None:
    body = self._json(raw)
    p = self._common(body)
    messages = _messages(body)
    try:
      prompt = self.server.backend.chat_prompt(messages)
    except RequestError as e:
      raise ApiError(400, str(e), param="messages") from None
    max_tokens = self._max_tokens(body, prompt, self.server.default_max_tokens)
    (outs,) = self._generate([prompt], [max_tokens], p)
    rid, created, name = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), self.server.model_name
    usage = {"prompt_tokens": len(prompt),
             "completion_tokens": sum(o.completion_tokens for o in outs)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if not p["stream"]:
      self._send_json(200, {
          "id": rid, "object": "chat.completion", "created": created, "model": name,
          "choices": [{"index": i, "message": {"role": "assistant", "content": o.text},
                       "logprobs": None, "finish_reason": o.finish_reason}
                      for i, o in enumerate(outs)], "usage": usage})
      return
    head = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name}
    events = []
    for i, o in enumerate(outs):
      for delta, reason in (({"role": "assistant", "content": ""}, None),
                            ({"content": o.text}, None), ({}, o.finish_reason)):
        events.append({**head, "choices": [{"index": i, "delta": delta, "logprobs": None,
                                            "finish_reason": reason}]})
    if p["include_usage"]:
      events.append({**head, "choices": [], "usage": usage})
    self._send_events(events)

  def _completions(self, raw: bytes) -> None:
    body = self._json(raw)
    p = self._common(body)
    prompt = body.get("prompt")
    backend = self.server.backend
    is_ids = lambda x: isinstance(x, list) and x and all(
        isinstance(t, int) and not isinstance(t, bool) for t in x)
    if isinstance(prompt, str):
      texts, prompts = [prompt], [backend.text_prompt(prompt)]
    elif is_ids(prompt):
      texts, prompts = [None], [list(prompt)]
    elif isinstance(prompt, list) and prompt and all(isinstance(x, str) or is_ids(x)
                                                     for x in prompt):
      texts = [x if isinstance(x, str) else None for x in prompt]
      prompts = [backend.text_prompt(x) if isinstance(x, str) else list(x) for x in prompt]
    else:
      raise ApiError(400, "'prompt' must be a string, a list of strings, or token id lists",
                     param="prompt")
    max_tokens = [self._max_tokens(body, ids, 16) for ids in prompts]
    outs = self._generate(prompts, max_tokens, p)
    echo = bool(body.get("echo"))
    choices = []
    for k, (text, row) in enumerate(zip(texts, outs)):
      for j, o in enumerate(row):
        prefix = (text if text is not None else backend.tokenizer.decode(prompts[k])) \
            if echo else ""
        choices.append({"index": k * p["n"] + j, "text": prefix + o.text, "logprobs": None,
                        "finish_reason": o.finish_reason})
    usage = {"prompt_tokens": sum(len(x) for x in prompts),
             "completion_tokens": sum(o.completion_tokens for row in outs for o in row)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    head = {"id": rid, "object": "text_completion", "created": created,
            "model": self.server.model_name}
    if not p["stream"]:
      self._send_json(200, {**head, "choices": choices, "usage": usage})
      return
    events = [{**head, "choices": [c]} for c in choices]
    if p["include_usage"]:
      events.append({**head, "choices": [], "usage": usage})
    self._send_events(events)


# ------------------------------------------------------------------------------------------------
# Command line.


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m citrus_jax.infer.serve", description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", required=True, help="citrus_jax params dir or Hugging Face dir")
  p.add_argument("--tokenizer", default="", help="tokenizer path (default: the checkpoint dir)")
  p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
  p.add_argument("--port", type=int, default=8000)
  p.add_argument("--served-model-name", default="", help="model id (default: checkpoint name)")
  p.add_argument("--max-batch", type=int, default=32, help="rows per generate call")
  p.add_argument("--batch-window-ms", type=float, default=10.0,
                 help="how long the batcher waits for more requests")
  p.add_argument("--max-tokens", type=int, default=256,
                 help="chat max_tokens when a request does not say")
  p.add_argument("--max-n", type=int, default=16)
  p.add_argument("--mesh", default="", help="data,fsdp,tensor, e.g. 1,1,8 (default one device)")
  p.add_argument("--dtype", default=None, help="param dtype override, e.g. bfloat16")
  p.add_argument("--api-key-env", default="",
                 help="name of an environment variable holding the key clients must send")
  p.add_argument("--no-warmup", action="store_true", help="skip compiling before serving")
  return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
  args = _parse_args(argv)
  from citrus_jax import sharding
  from citrus_jax.infer.local import load_model
  mesh = sharding.make_mesh(tuple(int(x) for x in args.mesh.split(","))) if args.mesh else None
  cfg, params, tok = load_model(args.checkpoint, args.tokenizer, mesh=mesh, dtype=args.dtype)
  name = args.served_model_name or os.path.basename(os.path.normpath(args.checkpoint))
  api_key = None
  if args.api_key_env:
    api_key = os.environ.get(args.api_key_env)
    if not api_key:
      raise SystemExit(f"--api-key-env {args.api_key_env}: that environment variable is empty")
  backend = SamplerBackend(params, cfg, tok, name=name, mesh=mesh, max_batch=args.max_batch,
                           batch_window_s=args.batch_window_ms / 1000)
  if not args.no_warmup:
    backend.submit(backend.chat_prompt([{"role": "user", "content": "Hello"}]),
                   max_tokens=16).result()
  server = make_server(backend, name, args.host, args.port, api_key=api_key,
                       default_max_tokens=args.max_tokens, max_n=args.max_n)
  host, port = server.server_address[:2]
  if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
    logging.warning("listening on %s without --api-key-env: anyone who can reach it can use it",
                    args.host)
  print(f"serving {name!r} at http://{host}:{port}/v1", flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()
    backend.close()


if __name__ == "__main__":
  main()
