"""What the server enforces before FastAPI sees a request: the API key from the headers alone
(before a byte of body is read), the body size (declared or counted), deadlines for the request
head and body (408), and JSON on the 400 uvicorn sends for malformed HTTP.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from citrus_jax.infer.protocol import ApiError


@dataclasses.dataclass(frozen=True)
class ServeConfig:
  """What the app enforces. Timeouts are per request: the whole body (and the request head, see
  `H11`) must arrive within read_timeout_s."""
  model_name: str
  api_key: str | None = None
  default_max_tokens: int = 256
  max_n: int = 16
  max_body_bytes: int = 8 << 20
  read_timeout_s: float = 30.0


def json_bytes(obj: Any) -> bytes:
  return json.dumps(obj, ensure_ascii=False).encode("utf-8")


async def _send_error(send: Any, err: ApiError, close: bool) -> None:
  data = json_bytes(err.body())
  headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
  if close:  # the rest of the body is never read: the connection cannot be reused
    headers.append((b"connection", b"close"))
  await send({"type": "http.response.start", "status": err.status, "headers": headers})
  await send({"type": "http.response.body", "body": data})


def _authorized(header: bytes, key: str) -> bool:
  given = header.decode("latin-1")
  token = given[7:].strip() if given.lower().startswith("bearer ") else ""
  return hmac.compare_digest(token.encode(), key.encode())


class Guard:
  """Checks the API key from the headers alone, refuses a declared Content-Length over the limit
  at once, then reads the body itself (counting chunked bytes, under one deadline) and hands it to
  the app from memory; later receive() calls (disconnect detection) go to the server."""

  def __init__(self, app: Any, cfg: ServeConfig):
    self.app, self.cfg = app, cfg

  async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
      return await self.app(scope, receive, send)
    headers = dict(scope["headers"])
    if self.cfg.api_key and not _authorized(headers.get(b"authorization", b""), self.cfg.api_key):
      return await _send_error(send, ApiError(401, "invalid or missing API key",
                                              code="invalid_api_key"), close=True)
    limit = self.cfg.max_body_bytes
    declared = headers.get(b"content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
      msg = (f"request body of {declared.decode()} bytes exceeds {limit}" if declared.isdigit()
             else "bad Content-Length header")
      return await _send_error(send, ApiError(413 if declared.isdigit() else 400, msg),
                               close=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + self.cfg.read_timeout_s
    chunks, size, more = [], 0, True
    while more:
      try:
        message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
      except asyncio.TimeoutError:
        return await _send_error(send, ApiError(408, f"request body not received within "
                                                f"{self.cfg.read_timeout_s:g} s"), close=True)
      if message["type"] == "http.disconnect":
        return
      chunk = message.get("body", b"")
      size += len(chunk)
      if size > limit:
        return await _send_error(send, ApiError(413, f"request body exceeds {limit} bytes"),
                                 close=True)
      chunks.append(chunk)
      more = message.get("more_body", False)
    body: list[bytes] | None = [b"".join(chunks)]

    async def replay() -> dict:
      nonlocal body
      if body is not None:
        data, body = body[0], None
        return {"type": "http.request", "body": data, "more_body": False}
      return await receive()

    await self.app(scope, replay, send)


class H11(H11Protocol):
  """uvicorn's h11 protocol, with a deadline for the request head (uvicorn times out only idle
  keep-alive connections, so a client trickling header bytes held a connection forever) and a
  JSON body on the 400 it sends for malformed HTTP, e.g. `Content-Length: -1`."""

  head_timeout_s = 30.0

  def connection_made(self, transport: Any) -> None:
    super().connection_made(transport)
    self._head_timer: Any = None
    self._arm_head_timer()

  def data_received(self, data: bytes) -> None:
    if self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
      self._arm_head_timer()  # bytes of a new request: its head must be complete in time
    super().data_received(data)

  def connection_lost(self, exc: Exception | None) -> None:
    if self._head_timer is not None:
      self._head_timer.cancel()
    super().connection_lost(exc)

  def _arm_head_timer(self) -> None:
    cycle = self.cycle

    def expire() -> None:
      self._head_timer = None
      if self.cycle is not cycle or self.transport.is_closing():
        return  # a request head arrived in time
      data = json_bytes(ApiError(408, "request head not received in time").body())
      self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                           b"connection: close\r\ncontent-length: " + str(len(data)).encode() +
                           b"\r\n\r\n" + data)
      self.transport.close()

    self._head_timer = self.loop.call_later(self.head_timeout_s, expire)

  def send_400_response(self, msg: str) -> None:
    data = json_bytes(ApiError(400, f"{msg.rstrip('.')}: malformed HTTP").body())
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data)),
               (b"connection", b"close")]
    for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                  h11.Data(data=data), h11.EndOfMessage()):
      self.transport.write(self.conn.send(event))
    self.transport.close()
