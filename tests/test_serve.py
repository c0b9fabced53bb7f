"""The OpenAI-compatible server, live on loopback, driven by the official `openai` client; bad
requests; the CLI; and the synthesis job end to end over HTTP and in process."""
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time

import jax
import pytest

openai = pytest.importorskip("openai")

from citrus_jax.infer import serve
from citrus_jax import tokenizer as tk
from citrus_jax.demo import clinic_world as cw
from citrus_jax.infer import sampler
from citrus_jax.model import transformer
from citrus_jax.model.config import get_preset
from citrus_jax.synth import pathway
from citrus_jax.infer.local import SamplerBackend
from citrus_jax.train import checkpoint
from configs import synth as synth_config

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "synth")
NAME = "tiny-citrus"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
  root = tmp_path_factory.mktemp("serve")
  tok = tk.load_tokenizer(tk.train_sentencepiece([os.path.join(FIXTURES, "corpus.txt")],
                                                 str(root / "sp"), 320))
  cfg = get_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=1024)
  params = transformer.init_params(cfg, jax.random.key(0))
  params = jax.tree.map(lambda x: 8 * x if x.ndim > 2 else x, params)
  backend = SamplerBackend(params, cfg, tok, name=NAME, max_batch=8, batch_window_s=0.05)
  server = serve.make_server(backend, NAME, default_max_tokens=8)
  thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
  thread.start()
  url = f"http://127.0.0.1:{server.server_address[1]}/v1"
  client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
  yield dict(cfg=cfg, params=params, tok=tok, backend=backend, server=server, url=url,
             client=client, root=root)
  server.shutdown()
  server.server_close()
  backend.close()


def expected(live, messages, want):
  """Greedy text straight from the sampler, cut to `want` tokens."""
  ids = live["backend"].chat_prompt(messages)
  (ref,) = sampler.generate_text(live["params"], live["cfg"], live["tok"], [ids],
                                 max_new_tokens=16, stop_ids=live["tok"].stop_ids,
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
                                       stream=True))
  assert sorted((s.choices[0].index, s.choices[0].text) for s in streamed) == \
      [(x.index, x.text) for x in out.choices]
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


def _raw(live, method, path, body=None, headers=None):
  host, port = live["server"].server_address[:2]
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
  host, port = live["server"].server_address[:2]
  with socket.create_connection((host, port), timeout=30) as sock:  # no Content-Length
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 411")
  assert _raw(live, "GET", "/v1/engines")[0] == 404
  assert _raw(live, "GET", "/v1/chat/completions")[0] == 405
  assert _raw(live, "GET", "/health") == (200, {"status": "ok"})
  out = c.chat.completions.create(model=NAME, messages=user("still there?"), temperature=0,
                                  max_tokens=4)
  assert out.choices[0].message.content == expected(live, user("still there?"), 4)


def test_api_key(live, monkeypatch):
  server = serve.make_server(live["backend"], NAME, api_key="s3cret")
  threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
  url = f"http://127.0.0.1:{server.server_address[1]}/v1"
  try:
    with pytest.raises(openai.AuthenticationError):
      openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
    ok = openai.OpenAI(base_url=url, api_key="s3cret", max_retries=0).models.list()
    assert ok.data[0].id == NAME
  finally:
    server.shutdown()
    server.server_close()


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
  finally:
    proc.terminate()
    proc.wait(timeout=30)
