"""The OpenAI-compatible server, live on loopback, driven by the official `openai` client and
raw sockets: greedy parity with the sampler, token-by-token streaming, batching, bad requests,
body limits, auth before the body, read timeouts, client disconnects, the OpenAPI schema under a
schemathesis fuzz; the CLI; and the synthesis job end to end over HTTP and in process."""
import http.client
import json
import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from citrus_jax.infer import serve
from citrus_jax import tokenizer as tk
from citrus_jax.demo import clinic_world as cw
from citrus_jax.infer import sampler
from citrus_jax.model import transformer
from citrus_jax.model.config import get_preset
from citrus_jax.synth import pathway
from citrus_jax.infer.local import Completion, SamplerBackend
from citrus_jax.train import checkpoint
from configs import synth as synth_config

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "synth")
NAME = "tiny-citrus"
LIMIT = 1 << 20  # the live server's body limit
TIMEOUT_S = 1.0  # and its read timeout


class SlowBackend(SamplerBackend):
  """The real backend; `step_delay_s` stretches each decode step so a test can act mid-run."""
  step_delay_s = 0.0

  def _on_step(self, *args):
    time.sleep(self.step_delay_s)
    return super()._on_step(*args)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
  root = tmp_path_factory.mktemp("serve")
  tok = tk.load_tokenizer(tk.train_sentencepiece([os.path.join(FIXTURES, "corpus.txt")],
                                                 str(root / "sp"), 320))
  cfg = get_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=1024)
  params = transformer.init_params(cfg, jax.random.key(0))
  params = jax.tree.map(lambda x: 8 * x if x.ndim > 2 else x, params)
  # check_every=1: streaming and plain batches share compiled shapes (fewer compiles); the CLI
  # test runs the defaults (a host call every 8 steps when nothing streams).
  backend = SlowBackend(params, cfg, tok, name=NAME, max_batch=8, batch_window_s=0.05,
                        check_every=1)
  server = serve.Server(backend, serve.ServeConfig(NAME, default_max_tokens=8,
                                                   max_body_bytes=LIMIT,
                                                   read_timeout_s=TIMEOUT_S)).start()
  client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
  yield dict(cfg=cfg, params=params, tok=tok, backend=backend, server=server, url=server.url,
             client=client, root=root)
  server.stop()
  backend.close()


def expected(live, messages, want):
  """Greedy text straight from the sampler, cut to `want` (<= 32) tokens."""
  ids = live["backend"].chat_prompt(messages)
  (ref,) = sampler.generate_text(live["params"], live["cfg"], live["tok"], [ids],
                                 max_new_tokens=32, stop_ids=live["tok"].stop_ids,
                                 pad_id=live["tok"].pad_id)
  if len(ref.tokens) > want:
    return live["tok"].decode([t for t in ref.tokens[:want] if t not in live["tok"].stop_ids])
  return ref.text


def user(text):
  return [{"role": "user", "content": text}]


def test_models_and_greedy_chat_match_the_sampler(live):
  c = live["client"]
  assert [m.id for m in c.models.list().data] == [NAME]
  assert c.models.retrieve(NAME).id == NAME
  out = c.chat.completions.create(model=NAME, messages=user("What causes scurvy?"),
                                  temperature=0, max_tokens=8)
  assert out.choices[0].message.content == expected(live, user("What causes scurvy?"), 8)
  assert out.choices[0].message.role == "assistant"
  assert out.usage.prompt_tokens == len(live["backend"].chat_prompt(user("What causes scurvy?")))
  assert 1 <= out.usage.completion_tokens <= 8
  assert out.choices[0].finish_reason in ("stop", "length")


def test_n_seed_completions_and_streaming(live):
  c = live["client"]
  kw = dict(model=NAME, messages=user("Fever and rash"), temperature=1.0, max_tokens=8, seed=3)
  a, b = c.chat.completions.create(n=2, **kw), c.chat.completions.create(n=2, **kw)
  assert len(a.choices) == 2 and [x.index for x in a.choices] == [0, 1]
  assert [x.message.content for x in a.choices] == [x.message.content for x in b.choices]
  prompts = ["Fever and", "Cough"]  # every completions call below has the same shape
  out = c.completions.create(model=NAME, prompt=prompts, max_tokens=5, temperature=0)
  assert [x.index for x in out.choices] == [0, 1] and out.usage.completion_tokens <= 10
  echo = c.completions.create(model=NAME, prompt=prompts, max_tokens=5, temperature=0, echo=True)
  assert [x.text for x in echo.choices] == [p + x.text for p, x in zip(prompts, out.choices)]
  streamed = list(c.completions.create(model=NAME, prompt=prompts, max_tokens=5, temperature=0,
                                       stream=True, echo=True))
  texts = {}
  for s in streamed:
    texts[s.choices[0].index] = texts.get(s.choices[0].index, "") + s.choices[0].text
  assert texts == {x.index: x.text for x in echo.choices}
  assert [s.choices[0].finish_reason for s in streamed if s.choices[0].finish_reason] == \
      [x.finish_reason for x in out.choices]
  plain = c.chat.completions.create(model=NAME, messages=user("Jaundice"), temperature=0,
                                    max_tokens=8)
  chunks = list(c.chat.completions.create(model=NAME, messages=user("Jaundice"), temperature=0,
                                          max_tokens=8, stream=True,
                                          stream_options={"include_usage": True}))
  text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
  assert text == plain.choices[0].message.content
  assert chunks[-1].usage.total_tokens == plain.usage.total_tokens


def test_concurrent_requests_are_batched_and_match_sequential(live):
  c, backend = live["client"], live["backend"]
  prompts = ["Headache", "Chest pain and troponin", "Bleeding gums", "Anaemia"]
  before = len(backend.batches)
  got = [None] * len(prompts)

  def ask(i):
    got[i] = c.chat.completions.create(model=NAME, messages=user(prompts[i]), temperature=0,
                                       max_tokens=8).choices[0].message.content
  threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert max(backend.batches[before:]) > 1
  assert got == [expected(live, user(p), 8) for p in prompts]


def test_streaming_is_token_by_token(live):
  c = live["client"]
  kw = dict(model=NAME, messages=user("Jaundice"), temperature=0, max_tokens=32)
  plain = c.chat.completions.create(**kw).choices[0].message.content
  assert plain == expected(live, user("Jaundice"), 32) and plain
  chunks = list(c.chat.completions.create(stream=True, **kw))
  assert chunks[0].choices[0].delta.role == "assistant"
  content = [ch.choices[0].delta.content for ch in chunks if ch.choices[0].delta.content]
  assert len(content) >= 8  # one chunk per token or so, not the whole text at the end
  assert "".join(content) == plain
  assert chunks[-1].choices[0].finish_reason == "length"
  assert [ch.choices[0].finish_reason for ch in chunks[:-1]] == [None] * (len(chunks) - 1)


def test_backend_hands_tokens_out_before_the_batch_ends(live):
  backend = live["backend"]
  prompt = backend.chat_prompt(user("Jaundice"))
  seen, done_at_first = [], []
  fut = backend.submit(prompt, max_tokens=16, on_token=lambda row, tok: (
      done_at_first.append(fut.done()) if not seen else None, seen.append((row, tok))))
  (out,) = fut.result()
  assert done_at_first == [False] and len(seen) == out.completion_tokens == 16
  assert live["tok"].decode([t for _, t in seen]) == out.text
  queued = backend.submit(prompt, max_tokens=16)  # cancelled before it runs: never sampled
  before = (len(backend.batches), backend.cancelled_rows)
  assert queued.cancel()
  backend.submit(prompt, max_tokens=4).result()
  assert (len(backend.batches), backend.cancelled_rows) == (before[0] + 1, before[1] + 1)


def _raw(live, method, path, body=None, headers=None):
  host, port = live["server"].host, live["server"].port
  conn = http.client.HTTPConnection(host, port, timeout=60)
  conn.request(method, path, body=body, headers=headers or {})
  resp = conn.getresponse()
  data = json.loads(resp.read() or b"null")
  conn.close()
  return resp.status, data


def test_bad_requests_get_4xx_json_and_the_server_keeps_serving(live):
  c = live["client"]
  with pytest.raises(openai.NotFoundError) as e:
    c.chat.completions.create(model="gpt-4o", messages=user("hi"))
  assert e.value.status_code == 404 and e.value.code == "model_not_found"
  with pytest.raises(openai.BadRequestError, match="max_tokens"):
    c.chat.completions.create(model=NAME, messages=user("hi"), max_tokens=-3)
  with pytest.raises(openai.BadRequestError) as e:
    c.chat.completions.create(model=NAME, messages=user("fever " * 400), max_tokens=8)
  assert e.value.code == "context_length_exceeded"
  with pytest.raises(openai.BadRequestError) as e:
    c.completions.create(model=NAME, prompt="x", max_tokens=2000)
  assert e.value.code == "context_length_exceeded"
  bad_bodies = {
      b"{not json": "not valid JSON", b"[1, 2]": "JSON object",
      json.dumps({"model": NAME}).encode(): "messages",
      json.dumps({"model": NAME, "messages": [{"role": "tool", "content": "x"}]}).encode():
          "role",
      json.dumps({"model": NAME, "messages": user("x"), "temperature": 5}).encode():
          "temperature",
      json.dumps({"model": NAME, "messages": user("x"), "n": 0}).encode(): "'n'",
      json.dumps({"model": NAME, "messages": user("x"), "stop": 3}).encode(): "stop",
      json.dumps({"model": NAME, "messages": user("x"), "max_tokens": 2.5}).encode():
          "max_tokens",
      json.dumps({"model": NAME, "messages": user("x"), "tools": [{"type": "function"}]})
      .encode(): "tools",
      json.dumps({"model": NAME, "prompt": {"a": 1}}).encode(): "prompt",
  }
  for body, needle in bad_bodies.items():
    path = "/v1/completions" if b'"prompt"' in body else "/v1/chat/completions"
    status, data = _raw(live, "POST", path, body, {"Content-Type": "application/json"})
    assert status == 400, (body, data)
    assert needle in data["error"]["message"] and data["error"]["type"] == \
        "invalid_request_error", (body, data)
  status, data = _exchange(live, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n")
  assert status == 400 and "body is required" in data["error"]["message"]  # no body at all
  status, data = _exchange(live, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: -1\r\n\r\n")
  assert status == 400 and "malformed HTTP" in data["error"]["message"]
  assert _raw(live, "GET", "/v1/engines")[0] == 404
  for method, path in (("GET", "/v1/chat/completions"), ("PUT", "/v1/models"),
                       ("DELETE", "/v1/completions")):
    status, data = _raw(live, method, path)
    assert status == 405 and method in data["error"]["message"], (method, path, data)
  assert _raw(live, "DELETE", "/nowhere")[1]["error"]["code"] == "not_found"
  assert _raw(live, "GET", "/health") == (200, {"status": "ok"})
  out = c.chat.completions.create(model=NAME, messages=user("still there?"), temperature=0,
                                  max_tokens=4)
  assert out.choices[0].message.content == expected(live, user("still there?"), 4)


def _exchange(live, request, port=None, timeout=10):
  """Sends raw bytes, reads one response to the end; (status, JSON body) and the server must
  answer with JSON whatever the status."""
  with socket.create_connection(("127.0.0.1", port or live["server"].port), timeout=timeout) as s:
    s.sendall(request)
    return _read_response(s)


def _read_response(sock):
  data = b""
  while b"\r\n\r\n" not in data:
    part = sock.recv(65536)
    assert part, data
    data += part
  head, body = data.split(b"\r\n\r\n", 1)
  lines = head.decode("latin-1").split("\r\n")
  headers = dict(line.lower().split(": ", 1) for line in lines[1:])
  assert headers["content-type"] == "application/json", head
  while len(body) < int(headers["content-length"]):
    part = sock.recv(65536)
    assert part, body
    body += part
  return int(lines[0].split()[1]), json.loads(body)


def _closed(sock, timeout=5):
  """Whether the server closes the connection (after its answer) within `timeout`."""
  sock.settimeout(timeout)
  try:
    return sock.recv(65536) == b""
  except ConnectionResetError:
    return True


def _post_head(path, length, *extra):
  return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
          f"Content-Length: {length}\r\n" + "".join(f"{h}\r\n" for h in extra) +
          "\r\n").encode()


def test_body_limit_with_and_without_content_length(live):
  t0 = time.monotonic()
  status, data = _exchange(live, _post_head("/v1/completions", 12 << 20))  # no body sent
  assert status == 413 and "exceeds" in data["error"]["message"]
  assert time.monotonic() - t0 < TIMEOUT_S  # answered from the header, not after a timeout
  with socket.create_connection(("127.0.0.1", live["server"].port), timeout=10) as s:
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
              b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (64 << 10, b" " * (64 << 10))
    try:
      for _ in range(LIMIT // (64 << 10) + 4):  # chunked: no Content-Length to check up front
        s.sendall(chunk)
    except OSError:
      pass  # the server answered and closed mid-body
    status, data = _read_response(s)
  assert status == 413 and f"exceeds {LIMIT}" in data["error"]["message"]


def test_read_timeouts_for_head_and_body(live):
  for request, what in ((b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n", "head"),
                        (_post_head("/v1/completions", 100) + b'{"model"', "body")):
    with socket.create_connection(("127.0.0.1", live["server"].port), timeout=10) as s:
      t0 = time.monotonic()
      s.sendall(request)
      status, data = _read_response(s)
      assert status == 408 and what in data["error"]["message"]
      assert TIMEOUT_S * 0.9 < time.monotonic() - t0 < TIMEOUT_S + 3
      assert _closed(s)


def test_api_key_is_checked_before_the_body_is_read(live):
  server = serve.Server(live["backend"], serve.ServeConfig(NAME, api_key="s3cret")).start()
  try:
    with pytest.raises(openai.AuthenticationError):
      openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0).models.list()
    ok = openai.OpenAI(base_url=server.url, api_key="s3cret", max_retries=0).models.list()
    assert ok.data[0].id == NAME
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
      t0 = time.monotonic()  # 12 MB announced, none sent: the 401 comes from the headers alone
      s.sendall(_post_head("/v1/chat/completions", 12 << 20, "Authorization: Bearer nope"))
      status, data = _read_response(s)
      assert status == 401 and data["error"]["code"] == "invalid_api_key"
      assert time.monotonic() - t0 < 5 and _closed(s)  # and it will not read the rest
    status, _ = _exchange(live, _post_head("/v1/models", 0, "Authorization: Bearer s3cret"),
                          port=server.port)
    assert status == 405  # the right key gets through to routing
  finally:
    server.stop()


def _errors(caplog):
  return [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_client_disconnect_cancels_generation(live, caplog):
  backend = live["backend"]
  body = json.dumps({"model": NAME, "messages": user("Sepsis"), "temperature": 0,
                     "max_tokens": 32, "stream": True}).encode()
  backend.step_delay_s = 0.3  # per host call: seconds for the whole answer if not cancelled
  try:
    before = (len(backend.batches), backend.cancelled_rows)
    with socket.create_connection(("127.0.0.1", live["server"].port), timeout=30) as s:
      s.sendall(_post_head("/v1/chat/completions", len(body)) + body)
      seen = b""
      while b'"content": "' not in seen.replace(b'"content": ""', b""):  # a first token
        part = s.recv(65536)
        assert part, seen
        seen += part
      assert seen.startswith(b"HTTP/1.1 200")
    while len(backend.batches) == before[0]:
      time.sleep(0.02)
    assert backend.cancelled_rows == before[1] + 1
    assert backend.batch_steps[-1] < 16  # of 32: ended at the next step, not run out
    body = json.dumps({"model": NAME, "messages": user("Sepsis"), "temperature": 0,
                       "max_tokens": 32}).encode()
    with socket.create_connection(("127.0.0.1", live["server"].port), timeout=30) as s:
      s.sendall(_post_head("/v1/chat/completions", len(body)) + body)
      time.sleep(0.2)  # non-streaming: the server is waiting on the sampler when we leave
    deadline = time.monotonic() + 3
    while backend.cancelled_rows == before[1] + 1 and time.monotonic() < deadline:
      time.sleep(0.02)
    assert backend.cancelled_rows == before[1] + 2
  finally:
    backend.step_delay_s = 0.0
  time.sleep(0.2)
  assert not _errors(caplog), [r.getMessage() for r in _errors(caplog)]
  out = live["client"].chat.completions.create(model=NAME, messages=user("still there?"),
                                               temperature=0, max_tokens=4)
  assert out.choices[0].message.content == expected(live, user("still there?"), 4)


class EchoBackend(SamplerBackend):
  """The real request path (queue, batching, token listeners, cancellation, max_tokens) with the
  jitted sampler swapped for echoing each prompt's tokens: a fuzz run then compiles nothing."""

  def _run(self, jobs):
    self._rows = [[j, r, 0] for j in jobs for r in range(j.n)]
    tokens, live = [[] for _ in self._rows], np.ones(len(self._rows), bool)
    for step in range(4):
      tok = np.array([j.prompt[(step + r) % len(j.prompt)] for j, r, _ in self._rows])
      for i in np.flatnonzero(live):
        tokens[i].append(int(tok[i]))
      n_gen = np.array([len(t) for t in tokens])
      live &= ~self._on_step(step, step, tok[:, None], n_gen, live.copy())
    outs, k = [], 0
    for j in jobs:
      outs.append([Completion(self.tokenizer.decode(tokens[k + r]), "length",
                              len(tokens[k + r])) for r in range(j.n)])
      k += j.n
    self.batches.append(len(self._rows))
    return outs


def test_openapi_schema_and_a_bounded_fuzz_find_no_server_error(live, caplog):
  schemathesis = pytest.importorskip("schemathesis")
  from hypothesis import HealthCheck, given, settings
  from schemathesis import GenerationMode

  status, schema = _raw(live, "GET", "/openapi.json")
  assert status == 200 and {"/v1/chat/completions", "/v1/completions", "/v1/models",
                            "/health"} <= set(schema["paths"])
  chat = schema["paths"]["/v1/chat/completions"]["post"]
  assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
      "ChatCompletionRequest")
  assert "422" not in chat["responses"] and "400" in chat["responses"]
  assert "temperature" in schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]

  backend = EchoBackend(live["params"], live["cfg"], live["tok"], name=NAME, max_batch=8,
                        batch_window_s=0.0)
  server = serve.Server(backend, serve.ServeConfig(NAME, max_n=4)).start()
  api = schemathesis.openapi.from_dict(schema)
  cases = (api.as_strategy(generation_mode=GenerationMode.POSITIVE) |
           api.as_strategy(generation_mode=GenerationMode.NEGATIVE))
  seen = []

  @settings(max_examples=60, deadline=None, derandomize=True, database=None,
            suppress_health_check=list(HealthCheck))
  @given(case=cases)
  def fuzz(case):
    response = case.call(base_url=f"http://127.0.0.1:{server.port}", timeout=30)
    seen.append((case.method, case.path, response.status_code))
    assert response.status_code < 500, (case.method, case.path, case.body, response.text)
    if (response.headers.get("content-type") or [""])[0].startswith("application/json"):
      assert response.status_code < 400 or "error" in response.json()

  try:
    fuzz()
  finally:
    server.stop()
    backend.close()
  assert len(seen) >= 30 and {s for _, _, s in seen} >= {200, 400}
  assert not _errors(caplog)


def _synth_config(out_dir, inputs, **backend):
  c = synth_config.get_config("demo")
  c.out_dir = str(out_dir)
  c.input.paths = str(inputs)
  c.prompts_dir = os.path.join(FIXTURES, "prompts")
  c.workers = 1
  c.search.update(dict(width=1, depth=2, retries=0, max_generations=2, max_complete=1))
  for role in c.roles:
    c.roles[role].temperature, c.roles[role].max_tokens = 0.0, 8
  c.backend.update(backend)
  return c


def test_synthesis_over_http_equals_in_process_on_the_demo_world(live, tmp_path):
  world, rng = cw.make_world(), random.Random(1)
  records = [cw.open_item(world, cw.draw_case(world, rng, name, "unique", train=True), rng,
                          cw.citrus_prompt, item_id=f"sft3-{j}")
             for j, name in enumerate(world.trainable()[:2])]
  mcq = json.loads(open(os.path.join(FIXTURES, "items.jsonl")).readline())
  inputs = tmp_path / "in.jsonl"
  inputs.write_text("".join(json.dumps(r) + "\n" for r in records + [mcq]))
  ckpt = tmp_path / "ckpt"
  checkpoint.save_params(str(ckpt), live["params"], live["cfg"])

  http_cfg = _synth_config(tmp_path / "http", inputs, kind="openai", base_url=live["url"],
                           model=NAME, max_retries=0)
  local_cfg = _synth_config(tmp_path / "local", inputs, kind="local", checkpoint=str(ckpt),
                            tokenizer=str(live["root"] / "sp.model"))
  s_http = pathway.run(http_cfg)
  s_local = pathway.run(local_cfg)
  assert s_http["items"]["committed"] == 3 and s_http["items"]["errors"] == 0
  assert s_http["tokens"]["calls"] >= 3 * 2 + 1  # a step and a critic per item, one rewrite
  assert s_http["acceptance"]["rewrite_question"]["calls"] == 1
  for key in ("items", "acceptance", "tokens", "dropped_reasons", "search"):
    assert s_http[key] == s_local[key], key
  prov = [open(tmp_path / d / "provenance.jsonl").read() for d in ("http", "local")]
  assert prov[0] == prov[1]  # greedy: the same texts over HTTP and in process

  again = _synth_config(tmp_path / "again", inputs, kind="openai", base_url=live["url"],
                        model=NAME, max_retries=0)
  again.cache.path = str(tmp_path / "http" / "llm_cache.jsonl")
  s_again = pathway.run(again)
  assert s_again["run"]["cache_misses"] == 0 and s_again["run"]["cache_hits"] == \
      s_http["tokens"]["calls"]
  strip = lambda text: [{**r, "tokens": {k: {**t, "cached": 0} for k, t in r["tokens"].items()}}
                        for r in map(json.loads, text.splitlines())]
  assert strip(open(tmp_path / "again" / "provenance.jsonl").read()) == strip(prov[0])


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_cli_serves_a_checkpoint(live, tmp_path):
  ckpt = tmp_path / "ckpt"
  checkpoint.save_params(str(ckpt), live["params"], live["cfg"])
  port = _free_port()
  proc = subprocess.Popen(
      [sys.executable, "-m", "citrus_jax.infer.serve", "--checkpoint", str(ckpt), "--tokenizer",
       str(live["root"] / "sp.model"), "--port", str(port), "--served-model-name", "cli-model",
       "--max-tokens", "8"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      cwd=os.path.dirname(os.path.dirname(__file__)))
  try:
    deadline, lines = time.time() + 150, []
    while time.time() < deadline:
      line = proc.stdout.readline()
      if not line:
        break
      lines.append(line)
      if line.startswith("serving"):
        break
    assert lines and lines[-1].startswith(f"serving 'cli-model' at http://127.0.0.1:{port}/v1"), \
        "".join(lines[-20:])
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
    out = client.chat.completions.create(model="cli-model", messages=user("What causes scurvy?"),
                                         temperature=0)
    assert out.choices[0].message.content == expected(live, user("What causes scurvy?"), 8)
    streamed = client.chat.completions.create(model="cli-model", temperature=0, stream=True,
                                              messages=user("What causes scurvy?"))
    assert "".join(ch.choices[0].delta.content or "" for ch in streamed) == \
        out.choices[0].message.content
  finally:
    proc.terminate()
    proc.wait(timeout=30)
