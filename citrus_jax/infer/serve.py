"""An OpenAI-compatible HTTP server over the citrus_jax sampler (FastAPI on uvicorn, as vLLM).

  python -m citrus_jax.infer.serve --checkpoint runs/demo --port 8000

--checkpoint takes a run dir (its last finished stage), a stage dir, a params dir or a Hugging
Face dir; the tokenizer defaults to the one the checkpoint was trained with (run_dirs.py).

Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models[/<id>], GET /health,
and the OpenAPI schema at /openapi.json (docs at /docs). Requests are batched by `SamplerBackend`
(what arrives within --batch-window-ms shares one jitted `generate` call, run on its own thread so
the event loop keeps serving). `stream: true` sends server-sent events as tokens are decoded.
A client that disconnects cancels its generation. Binds to 127.0.0.1 unless --host says otherwise;
--api-key-env NAME makes every request present `Authorization: Bearer <$NAME>`, checked from the
headers before any body byte is read. Bodies over --max-body-mb get 413, bodies (and request heads)
slower than --read-timeout-s get 408. Every error is OpenAI-style JSON ({"error": {"message",
"type", "param", "code"}}), 404/405/malformed HTTP included; invalid fields are 400 (as OpenAI and
vLLM answer, not FastAPI's 422). Not supported (400): tools, logprobs.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, AsyncIterator, Sequence

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from citrus_jax import run_dirs, sharding
from citrus_jax.infer import protocol as P
from citrus_jax.infer.http_guard import H11, Guard, ServeConfig, json_bytes
from citrus_jax.infer.local import SamplerBackend, load_model
from citrus_jax.infer.streaming import TextStream
from citrus_jax.synth.llm import PromptTooLongError, RequestError

log = logging.getLogger(__name__)
ApiError = P.ApiError


# ------------------------------------------------------------------------------------------------
# The app.


def _sampling(req: P.ChatCompletionRequest | P.CompletionRequest, cfg: ServeConfig,
              backend: SamplerBackend) -> dict[str, Any]:
  if req.model != cfg.model_name:
    raise ApiError(404, f"The model '{req.model}' does not exist; this server serves "
                   f"'{cfg.model_name}'", param="model", code="model_not_found")
  if req.n > cfg.max_n:
    raise ApiError(400, f"'n' must be an integer in [1, {cfg.max_n}], got {req.n}", param="n")
  if req.logprobs:
    raise ApiError(400, "'logprobs' is not supported by this server", param="logprobs")
  stop = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
  return dict(n=req.n, temperature=1.0 if req.temperature is None else req.temperature,
              top_p=1.0 if req.top_p is None else req.top_p, seed=req.seed,
              stop=tuple(s for s in stop if s))


def _max_tokens(value: int | None, prompt: Sequence[int], default: int,
                backend: SamplerBackend) -> int:
  if value is not None:
    return value
  room = backend.room(prompt)
  if room < 1:
    raise ApiError(400, f"This model's maximum context length is {backend.cfg.max_seq_len} "
                   f"tokens; the prompt has {len(prompt)}.", param="messages",
                   code="context_length_exceeded")
  return min(default, room)


def _submit(backend: SamplerBackend, prompts: list[list[int]], max_tokens: list[int],
            p: dict[str, Any], listeners: list[Any] | None = None) -> list[Any]:
  """Submits every prompt first (so they share a batch); a refusal withdraws the others."""
  futures = []
  try:
    for k, (ids, m) in enumerate(zip(prompts, max_tokens)):
      futures.append(backend.submit(ids, max_tokens=m, on_token=listeners[k] if listeners
                                    else None, **p))
  except (PromptTooLongError, RequestError) as e:
    for f in futures:
      f.cancel()
    code = "context_length_exceeded" if isinstance(e, PromptTooLongError) else None
    raise ApiError(400, str(e), param="max_tokens" if code else None, code=code) from None
  return futures


def _gather(futures: list[Any]) -> asyncio.Future:
  """One asyncio future for the backend's futures; its outcome counts as seen even when nobody
  waits for it any more (a cancelled request), so asyncio logs no 'never retrieved' error."""
  done = asyncio.gather(*map(asyncio.wrap_future, futures))
  done.add_done_callback(lambda f: f.cancelled() or f.exception())
  return done


async def _until_disconnect(request: Request) -> None:
  while (await request.receive())["type"] != "http.disconnect":
    pass


async def _results(request: Request, futures: list[Any]) -> list[Any] | None:
  """The futures' results, or None (generation cancelled) if the client goes away first."""
  done = _gather(futures)
  gone = asyncio.ensure_future(_until_disconnect(request))
  try:
    await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
  finally:
    gone.cancel()
    if not done.done():
      for f in futures:
        f.cancel()
      done.cancel()
  if not done.done() or done.cancelled():
    log.info("client went away; generation cancelled")
    return None
  return done.result()


def _usage(prompt_tokens: int, outs: list[list[Any]]) -> dict[str, int]:
  completion = sum(o.completion_tokens for row in outs for o in row)
  return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
          "total_tokens": prompt_tokens + completion}


def _sse(obj: Any) -> bytes:
  return b"data: " + json_bytes(obj) + b"\n\n"


async def _stream(backend: SamplerBackend, prompts: list[list[int]], max_tokens: list[int],
                  p: dict[str, Any], chunk: Any, first: list[str | None], prompt_tokens: int,
                  include_usage: bool, usage_head: dict[str, Any]) -> Any:
  """Submits, then returns the SSE body: `chunk(choice, text, finish_reason)` per decoded delta.

  Tokens come from the sampler thread through the loop's queue; their texts are cut with
  `TextStream`, and the final texts (the same as without streaming) close each choice."""
  loop, queue = asyncio.get_running_loop(), asyncio.Queue()
  n = p["n"]
  listeners = [lambda row, tok, k=k: loop.call_soon_threadsafe(queue.put_nowait, (k * n + row,
                                                                                  tok))
               for k in range(len(prompts))]
  futures = _submit(backend, prompts, max_tokens, p, listeners)
  done = _gather(futures)
  done.add_done_callback(lambda _: queue.put_nowait(None))
  skip = set(backend.stop_ids)
  streams = [TextStream(backend.tokenizer.decode, skip, p["stop"]) for _ in range(len(first))]

  async def events() -> AsyncIterator[bytes]:
    try:
      for i, text in enumerate(first):  # None: nothing to send before the first token
        if text is not None:
          yield _sse(chunk(i, text, None))
      while (item := await queue.get()) is not None:
        delta = streams[item[0]].push(item[1])
        if delta:
          yield _sse(chunk(item[0], delta, None))
      try:
        outs = done.result()
      except Exception as e:  # a failed batch: an error event, as vLLM sends
        log.exception("generation failed")
        yield _sse(ApiError(500, f"generation failed: {type(e).__name__}: {e}").body())
        yield b"data: [DONE]\n\n"
        return
      rows = [o for row in outs for o in row]
      for i, o in enumerate(rows):
        tail = streams[i].finish(o.text)
        if tail:
          yield _sse(chunk(i, tail, None))
        yield _sse(chunk(i, None, o.finish_reason))
      if include_usage:
        yield _sse({**usage_head, "choices": [], "usage": _usage(prompt_tokens, outs)})
      yield b"data: [DONE]\n\n"
    finally:
      if not done.done():  # the client went away mid-stream
        log.info("client went away; streaming generation cancelled")
        for f in futures:
          f.cancel()

  return StreamingResponse(events(), media_type="text/event-stream",
                           headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def make_app(backend: SamplerBackend, cfg: ServeConfig) -> Any:
  """The ASGI app: FastAPI routes behind `Guard`."""
  app = FastAPI(title="citrus_jax OpenAI-compatible server", version="1",
                strict_content_type=False)
  created = int(time.time())
  errors = {status: {"model": P.ErrorResponse} for status in (400, 404)}
  build_schema = app.openapi

  def openapi() -> dict[str, Any]:
    """FastAPI's schema, less the 422 answers it documents but this server never sends."""
    if app.openapi_schema is None:
      schema = build_schema()
      for item in schema.get("paths", {}).values():
        for op in item.values():
          op.get("responses", {}).pop("422", None)
      for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)
      app.openapi_schema = schema
    return app.openapi_schema

  app.openapi = openapi

  @app.exception_handler(ApiError)
  async def _api_error(_request: Request, e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)

  @app.exception_handler(RequestValidationError)
  async def _invalid(_request: Request, e: RequestValidationError) -> JSONResponse:
    err = P.validation_error(e.errors())
    return JSONResponse(err.body(), status_code=err.status)

  @app.exception_handler(HTTPException)
  async def _http(request: Request, e: HTTPException) -> JSONResponse:
    path = request.url.path
    err = {404: ApiError(404, f"no route {request.method} {path}", code="not_found"),
           405: ApiError(405, f"method {request.method} not allowed on {path}")}.get(
               e.status_code, ApiError(e.status_code, str(e.detail)))
    return JSONResponse(err.body(), status_code=err.status, headers=e.headers)

  @app.exception_handler(Exception)
  async def _internal(request: Request, e: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path)
    err = ApiError(500, f"internal error: {type(e).__name__}: {e}")
    return JSONResponse(err.body(), status_code=500)

  def card() -> dict[str, Any]:
    return {"id": cfg.model_name, "object": "model", "created": created,
            "owned_by": "citrus_jax", "max_model_len": backend.cfg.max_seq_len}

  @app.get("/health")
  async def health() -> dict[str, str]:
    return {"status": "ok"}

  @app.get("/v1/models")
  async def models() -> dict[str, Any]:
    return {"object": "list", "data": [card()]}

  @app.get("/v1/models/{model_id:path}", responses={404: errors[404]})
  async def model(model_id: str) -> dict[str, Any]:
    if model_id != cfg.model_name:
      raise ApiError(404, f"The model '{model_id}' does not exist", param="model",
                     code="model_not_found")
    return card()

  @app.post("/v1/chat/completions", responses=errors)
  async def chat(req: P.ChatCompletionRequest, request: Request) -> Any:
    for name in ("tools", "functions"):
      if getattr(req, name):
        raise ApiError(400, f"'{name}' is not supported by this server", param=name)
    p = _sampling(req, cfg, backend)
    try:
      prompt = backend.chat_prompt([{"role": "system" if m.role == "developer" else m.role,
                                     "content": m.text()} for m in req.messages])
    except RequestError as e:
      raise ApiError(400, str(e), param="messages") from None
    limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    max_tokens = [_max_tokens(limit, prompt, cfg.default_max_tokens, backend)]
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()),
            "model": cfg.model_name}
    if req.stream:
      usage = req.stream_options is not None and req.stream_options.include_usage
      chead = {**head, "object": "chat.completion.chunk", **({"usage": None} if usage else {})}

      def chunk(i: int, text: str | None, reason: str | None) -> dict[str, Any]:
        delta = {"role": "assistant", "content": ""} if text == "" else (
            {} if text is None else {"content": text})
        return {**chead, "choices": [{"index": i, "delta": delta, "logprobs": None,
                                      "finish_reason": reason}]}
      return await _stream(backend, [prompt], max_tokens, p, chunk, [""] * p["n"], len(prompt),
                           usage, {**head, "object": "chat.completion.chunk"})
    outs = await _results(request, _submit(backend, [prompt], max_tokens, p))
    if outs is None:
      return Response(status_code=499)
    return {**head, "object": "chat.completion",
            "choices": [{"index": i, "message": {"role": "assistant", "content": o.text},
                         "logprobs": None, "finish_reason": o.finish_reason}
                        for i, o in enumerate(outs[0])], "usage": _usage(len(prompt), outs)}

  @app.post("/v1/completions", responses=errors)
  async def completions(req: P.CompletionRequest, request: Request) -> Any:
    p = _sampling(req, cfg, backend)
    raw = req.prompt
    items = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else list(raw)
    texts = [x if isinstance(x, str) else None for x in items]
    prompts = [backend.text_prompt(x) if isinstance(x, str) else list(x) for x in items]
    for ids in prompts:
      if not ids or min(ids) < 0 or max(ids) >= backend.cfg.vocab_size:
        raise ApiError(400, f"'prompt' token ids must lie in [0, {backend.cfg.vocab_size})",
                       param="prompt")
    max_tokens = [_max_tokens(req.max_tokens, ids, 16, backend) for ids in prompts]
    prefixes = [(t if t is not None else backend.tokenizer.decode(ids)) if req.echo else ""
                for t, ids in zip(texts, prompts)]
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
            "created": int(time.time()), "model": cfg.model_name}
    n_tokens = sum(len(x) for x in prompts)
    if req.stream:
      usage = req.stream_options is not None and req.stream_options.include_usage
      chead = {**head, **({"usage": None} if usage else {})}

      def chunk(i: int, text: str | None, reason: str | None) -> dict[str, Any]:
        return {**chead, "choices": [{"index": i, "text": text or "", "logprobs": None,
                                      "finish_reason": reason}]}
      first = [prefixes[i // p["n"]] or None for i in range(len(prompts) * p["n"])]
      return await _stream(backend, prompts, max_tokens, p, chunk, first, n_tokens, usage, head)
    outs = await _results(request, _submit(backend, prompts, max_tokens, p))
    if outs is None:
      return Response(status_code=499)
    choices = [{"index": k * p["n"] + j, "text": prefixes[k] + o.text, "logprobs": None,
                "finish_reason": o.finish_reason}
               for k, row in enumerate(outs) for j, o in enumerate(row)]
    return {**head, "choices": choices, "usage": _usage(n_tokens, outs)}

  return Guard(app, cfg)


# ------------------------------------------------------------------------------------------------
# Running it.


def bind(host: str, port: int) -> socket.socket:
  """A listening socket (port 0 picks a free one), so the address is known before serving."""
  family = socket.AF_INET6 if ":" in host else socket.AF_INET
  return socket.create_server((host, port), family=family, backlog=2048)


def uvicorn_config(app: Any, cfg: ServeConfig, **kw: Any) -> uvicorn.Config:
  """uvicorn on h11 with the head deadline of `H11` and keep-alive; kw overrides (logging)."""
  protocol = type("H11", (H11,), {"head_timeout_s": cfg.read_timeout_s})
  kw = {"timeout_keep_alive": 5, "lifespan": "off", "h11_max_incomplete_event_size": 64 << 10,
        **kw}
  return uvicorn.Config(app, http=protocol, **kw)


class Server:
  """uvicorn serving an app on a background thread (tests, benchmarks, notebooks)."""

  def __init__(self, backend: SamplerBackend, cfg: ServeConfig, host: str = "127.0.0.1",
               port: int = 0, **uvicorn_kw: Any):
    self.sock = bind(host, port)
    self.host, self.port = self.sock.getsockname()[:2]
    uvicorn_kw.setdefault("log_config", None)
    self.server = uvicorn.Server(uvicorn_config(make_app(backend, cfg), cfg, **uvicorn_kw))
    self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                   name="openai-server", daemon=True)

  @property
  def url(self) -> str:
    return f"http://{self.host}:{self.port}/v1"

  def start(self, timeout_s: float = 30.0) -> "Server":
    self.thread.start()
    deadline = time.monotonic() + timeout_s
    while not self.server.started:
      if not self.thread.is_alive() or time.monotonic() > deadline:
        raise RuntimeError("the server did not start")
      time.sleep(0.01)
    return self

  def stop(self) -> None:
    self.server.should_exit = True
    self.thread.join(timeout=30)
    self.sock.close()


# ------------------------------------------------------------------------------------------------
# Command line.


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m citrus_jax.infer.serve",
                              description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", required=True,
                 help="a run dir (its last finished stage), a stage dir, a citrus_jax params dir "
                 "or a Hugging Face dir (citrus_jax/run_dirs.py)")
  p.add_argument("--tokenizer", default="",
                 help="tokenizer path (default: the checkpoint's, or its stage's tokenizer)")
  p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
  p.add_argument("--port", type=int, default=8000)
  p.add_argument("--served-model-name", default="", help="model id (default: checkpoint name)")
  p.add_argument("--max-batch", type=int, default=32,
                 help="rows per generate call (1 turns batching off)")
  p.add_argument("--batch-window-ms", type=float, default=10.0,
                 help="how long the batcher waits for more requests")
  p.add_argument("--stream-every", type=int, default=1,
                 help="decode steps per host call in batches that stream (1: token by token)")
  p.add_argument("--check-every", type=int, default=8,
                 help="decode steps per host call otherwise (cancellation, max_tokens)")
  p.add_argument("--max-tokens", type=int, default=256,
                 help="chat max_tokens when a request does not say")
  p.add_argument("--max-n", type=int, default=16)
  p.add_argument("--max-body-mb", type=float, default=8.0, help="request body limit (413)")
  p.add_argument("--read-timeout-s", type=float, default=30.0,
                 help="deadline for a request's head and body (408)")
  p.add_argument("--mesh", default="", help="data,fsdp,tensor, e.g. 1,1,8 (default one device)")
  p.add_argument("--dtype", default=None, help="param dtype override, e.g. bfloat16")
  p.add_argument("--api-key-env", default="",
                 help="name of an environment variable holding the key clients must send")
  p.add_argument("--no-warmup", action="store_true", help="skip compiling before serving")
  p.add_argument("--log-level", default="info", help="uvicorn's log level")
  return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
  args = _parse_args(argv)
  mesh = sharding.make_mesh(tuple(int(x) for x in args.mesh.split(","))) if args.mesh else None
  try:
    cfg, params, tok = load_model(args.checkpoint, args.tokenizer, mesh=mesh, dtype=args.dtype)
  except (run_dirs.CheckpointPathError, FileNotFoundError) as e:
    raise SystemExit(f"serve: --checkpoint {args.checkpoint}: {e}") from None
  name = args.served_model_name or os.path.basename(os.path.normpath(args.checkpoint))
  api_key = None
  if args.api_key_env:
    api_key = os.environ.get(args.api_key_env)
    if not api_key:
      raise SystemExit(f"--api-key-env {args.api_key_env}: that environment variable is empty")
  backend = SamplerBackend(params, cfg, tok, name=name, mesh=mesh, max_batch=args.max_batch,
                           batch_window_s=args.batch_window_ms / 1000,
                           stream_every=args.stream_every, check_every=args.check_every)
  if not args.no_warmup:
    backend.submit(backend.chat_prompt([{"role": "user", "content": "Hello"}]),
                   max_tokens=16).result()
  serve_cfg = ServeConfig(name, api_key=api_key, default_max_tokens=args.max_tokens,
                          max_n=args.max_n, max_body_bytes=int(args.max_body_mb * (1 << 20)),
                          read_timeout_s=args.read_timeout_s)
  sock = bind(args.host, args.port)
  host, port = sock.getsockname()[:2]
  if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
    log.warning("listening on %s without --api-key-env: anyone who can reach it can use it",
                args.host)
  server = uvicorn.Server(uvicorn_config(make_app(backend, serve_cfg), serve_cfg,
                                         log_level=args.log_level))
  print(f"serving {name!r} at http://{host}:{port}/v1", flush=True)
  try:
    server.run(sockets=[sock])
  finally:
    sock.close()
    backend.close()


if __name__ == "__main__":
  main()
