"""LLM backends: request checks, the disk cache, the HTTP client (retries, errors, concurrency
limit, API key handling) against a local fake server, and the in-process sampler backend."""
import json
import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jax
import numpy as np
import pytest

from citrus_jax import tokenizer as tk
from citrus_jax.infer import sampler
from citrus_jax.model import transformer
from citrus_jax.model.config import get_preset
from citrus_jax.synth import llm as llm_lib
from citrus_jax.synth.llm import CachedLLM, ChatRequest, FunctionLLM, OpenAIBackend
from citrus_jax.infer.local import SamplerBackend, load_model

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "synth")
MSG = [{"role": "user", "content": "What causes scurvy?"}]


# ------------------------------------------------------------------------------------------------
# Interface and cache.


def test_request_validation_and_function_backend():
  with pytest.raises(llm_lib.RequestError, match="messages is empty"):
    ChatRequest([]).validate()
  with pytest.raises(llm_lib.RequestError, match="max_tokens"):
    ChatRequest(MSG, max_tokens=-1).validate()
  with pytest.raises(llm_lib.RequestError, match="role"):
    ChatRequest([{"role": "robot", "content": "x"}]).validate()
  f = FunctionLLM(lambda r: ["a b", "c"][:r.n])
  out = f.chat(MSG, n=2)
  assert out.texts == ["a b", "c"] and out.completion_tokens == 3 and out.prompt_tokens == 3
  with pytest.raises(llm_lib.LLMError, match="returned 2 texts for n=1"):
    FunctionLLM(lambda r: ["a", "b"]).chat(MSG)


def test_cache_answers_repeated_requests_from_disk(tmp_path):
  path = str(tmp_path / "c" / "cache.jsonl")
  calls = []
  backend = FunctionLLM(lambda r: (calls.append(r), f"answer {len(calls)}")[1], name="m1")
  cache = CachedLLM(backend, path)
  a = cache.complete(ChatRequest(MSG, seed=1, tag="critic"))
  b = cache.complete(ChatRequest(MSG, seed=1, tag="judge"))  # the tag is not part of the key
  c = cache.complete(ChatRequest(MSG, seed=2))
  assert (a.texts, b.texts, c.texts) == (["answer 1"], ["answer 1"], ["answer 2"])
  assert not a.cached and b.cached and len(calls) == 2 and (cache.hits, cache.misses) == (1, 2)
  cache.close()
  reopened = CachedLLM(FunctionLLM(lambda r: pytest.fail("should be cached"), name="m1"), path)
  assert reopened.complete(ChatRequest(MSG, seed=2)).texts == ["answer 2"]
  reopened.close()
  other = CachedLLM(FunctionLLM(lambda r: "fresh", name="m2"), path)  # another model: a miss
  assert other.complete(ChatRequest(MSG, seed=2)).texts == ["fresh"]
  other.close()
  assert len(CachedLLM(FunctionLLM(str), path)) == 3


def test_cache_cuts_a_torn_tail_and_refuses_corruption(tmp_path):
  path = tmp_path / "cache.jsonl"
  cache = CachedLLM(FunctionLLM(lambda r: "x"), str(path))
  cache.complete(ChatRequest(MSG))
  cache.close()
  good = path.read_bytes()
  path.write_bytes(good + b'{"key": "k", "resp')
  cache = CachedLLM(FunctionLLM(lambda r: "y"), str(path))
  assert len(cache) == 1 and path.read_bytes() == good
  cache.complete(ChatRequest(MSG, seed=5))
  cache.close()
  assert len(path.read_bytes().splitlines()) == 2
  path.write_bytes(b"not json\n" + good)
  with pytest.raises(ValueError, match="corrupt cache entry"):
    CachedLLM(FunctionLLM(lambda r: "z"), str(path))


# ------------------------------------------------------------------------------------------------
# HTTP client against a fake OpenAI server.


class FakeOpenAI:
  """Answers with the statuses in `plan` (then 200); records headers and peak concurrency."""

  def __init__(self, plan=(), delay=0.0):
    self.plan, self.delay = list(plan), delay
    self.redirect_to = ""  # Location of a 30x in the plan
    self.lock = threading.Lock()
    self.requests, self.inflight, self.peak = [], 0, 0
    fake = self

    class Handler(BaseHTTPRequestHandler):
      def log_message(self, *a):
        pass

      def do_GET(self):  # what a followed redirect of a POST becomes
        with fake.lock:
          fake.requests.append((dict(self.headers), None))
        self.send_error(404)

      def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with fake.lock:
          fake.requests.append((dict(self.headers), body))
          status = fake.plan.pop(0) if fake.plan else 200
          fake.inflight += 1
          fake.peak = max(fake.peak, fake.inflight)
        time.sleep(fake.delay)
        with fake.lock:
          fake.inflight -= 1
        if status in (301, 302, 303, 307, 308):
          self.send_response(status)
          self.send_header("Location", fake.redirect_to)
          self.send_header("Content-Length", "0")
          self.end_headers()
          return
        if status == 200:
          out = {"choices": [{"index": i, "message": {"role": "assistant",
                                                      "content": f"reply {i} to "
                                                      f"{body['messages'][-1]['content']}"},
                              "finish_reason": "stop"} for i in range(body["n"])],
                 "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
        else:
          out = {"error": {"message": f"status {status}", "code": "context_length_exceeded"
                           if status == 400 else None}}
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 429:
          self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(data)

    self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
    threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

  def close(self):
    self.server.shutdown()
    self.server.server_close()


@pytest.fixture
def fake():
  servers = []
  yield lambda **kw: servers.append(FakeOpenAI(**kw)) or servers[-1]
  for s in servers:
    s.close()


def test_http_retries_429_and_5xx_then_succeeds(fake, caplog):
  server = fake(plan=[429, 503, 500])
  backend = OpenAIBackend(server.url, "gpt-x", backoff_s=0.01, max_retries=3)
  out = backend.complete(ChatRequest(MSG, n=2, seed=4, max_tokens=9, stop=("END",)))
  assert out.texts == ["reply 0 to What causes scurvy?", "reply 1 to What causes scurvy?"]
  assert (out.prompt_tokens, out.completion_tokens) == (7, 3)
  assert len(server.requests) == 4
  body = server.requests[-1][1]
  assert body == {"model": "gpt-x", "messages": MSG, "n": 2, "temperature": 0.0, "max_tokens": 9,
                  "seed": 4, "stop": ["END"]}
  server.plan = [503] * 5
  with pytest.raises(llm_lib.LLMError, match="failed after 2 attempts; last: HTTP 503"):
    OpenAIBackend(server.url, "gpt-x", backoff_s=0.01, max_retries=1).complete(ChatRequest(MSG))


def test_http_4xx_is_not_retried(fake):
  server = fake(plan=[400])
  backend = OpenAIBackend(server.url, "gpt-x", backoff_s=0.01,
                          max_tokens_field="max_completion_tokens")
  with pytest.raises(llm_lib.PromptTooLongError, match="HTTP 400"):
    backend.complete(ChatRequest(MSG))
  assert len(server.requests) == 1 and "max_completion_tokens" in server.requests[0][1]
  with pytest.raises(llm_lib.LLMError, match="failed after 1 attempts"):  # nothing listening
    OpenAIBackend("http://127.0.0.1:9/v1", "m", max_retries=0, timeout_s=2).complete(
        ChatRequest(MSG))


def test_http_concurrency_limit(fake):
  server = fake(delay=0.1)
  backend = OpenAIBackend(server.url, "gpt-x", concurrency=2)
  threads = [threading.Thread(target=backend.complete, args=(ChatRequest(MSG, seed=i),))
             for i in range(6)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert len(server.requests) == 6 and server.peak == 2


def test_api_key_is_sent_but_never_logged_or_saved(fake, tmp_path, monkeypatch, caplog):
  secret = "sk-test-0123456789-secret"
  monkeypatch.setenv("CITRUS_TEST_KEY", secret)
  server = fake(plan=[429])
  backend = OpenAIBackend(server.url, "gpt-x", api_key_env="CITRUS_TEST_KEY", backoff_s=0.01)
  cache = CachedLLM(backend, str(tmp_path / "cache.jsonl"))
  with caplog.at_level(logging.DEBUG):
    cache.complete(ChatRequest(MSG))
  assert server.requests[0][0]["Authorization"] == f"Bearer {secret}"
  assert secret not in (tmp_path / "cache.jsonl").read_text()
  assert secret not in repr(backend) and secret not in caplog.text
  assert "retry 1/" in caplog.text  # the retry was logged, without the key
  monkeypatch.delenv("CITRUS_TEST_KEY")
  backend.complete(ChatRequest(MSG, seed=9))
  assert "Authorization" not in server.requests[-1][0]


def test_key_env_goes_only_to_its_host():
  ok = "https://api.openai.com/v1"
  assert llm_lib.key_env_for(ok, "OPENAI_API_KEY") == "OPENAI_API_KEY"
  for url in ("http://api.openai.com/v1", "https://api.openai.com.evil.example/v1",
              "https://api.openai.com@evil.example/v1", "http://127.0.0.1:8000/v1",
              "https://llm.example.org/v1"):
    assert llm_lib.key_env_for(url, "OPENAI_API_KEY") is None, url
  assert llm_lib.key_env_for("https://llm.example.org/v1", "MY_KEY") == "MY_KEY"
  assert llm_lib.key_env_for(ok, "") is None
  assert OpenAIBackend(ok, "gpt-x").api_key_env == "OPENAI_API_KEY"  # the default


def test_openai_key_is_not_sent_to_other_endpoints(fake, monkeypatch, caplog):
  """A local (plain-http, loopback) server captures the Authorization header it is sent."""
  secret = "sk-openai-0123456789-secret"
  monkeypatch.setenv("OPENAI_API_KEY", secret)
  monkeypatch.setenv("LOCAL_KEY", "local-key")
  server = fake()
  with caplog.at_level(logging.WARNING):
    OpenAIBackend(server.url, "m").complete(ChatRequest(MSG))  # the default api_key_env
    OpenAIBackend(server.url, "m", api_key_env="OPENAI_API_KEY").complete(ChatRequest(MSG))
  assert [h.get("Authorization") for h, _ in server.requests] == [None, None]
  assert "not sending OPENAI_API_KEY" in caplog.text and secret not in caplog.text
  # A variable named for this endpoint is sent to it.
  OpenAIBackend(server.url, "m", api_key_env="LOCAL_KEY").complete(ChatRequest(MSG))
  assert server.requests[-1][0]["Authorization"] == "Bearer local-key"


def test_a_redirect_carries_no_key_elsewhere(fake, monkeypatch):
  monkeypatch.setenv("LOCAL_KEY", "local-key")
  elsewhere = fake()
  for code in (302, 307):
    server = fake(plan=[code])
    server.redirect_to = elsewhere.url + "/chat/completions"
    backend = OpenAIBackend(server.url, "m", api_key_env="LOCAL_KEY", max_retries=0)
    with pytest.raises(llm_lib.RequestError, match=f"HTTP {code}"):
      backend.complete(ChatRequest(MSG))
    assert server.requests[0][0]["Authorization"] == "Bearer local-key"
  assert elsewhere.requests == []  # not followed, so nothing (and no key) went there


# ------------------------------------------------------------------------------------------------
# The in-process sampler backend.


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  root = tmp_path_factory.mktemp("tok")
  tok = tk.load_tokenizer(tk.train_sentencepiece([os.path.join(FIXTURES, "corpus.txt")],
                                                 str(root / "sp"), 320))
  cfg = get_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=1024)
  params = transformer.init_params(cfg, jax.random.key(0))
  params = jax.tree.map(lambda x: 8 * x if x.ndim > 2 else x, params)  # spread the logits
  return cfg, params, tok, root


def test_sampler_backend_matches_generate_and_batches_concurrent_requests(tiny):
  cfg, params, tok, _ = tiny
  backend = SamplerBackend(params, cfg, tok, max_batch=8, batch_window_s=0.3)
  questions = ["What causes scurvy?", "Fever and cough, what is it?", "Which vitamin?",
               "Rash and jaundice"]
  wants = [8, 3, 8, 5]
  results = [None] * 4

  def ask(i):
    results[i] = backend.chat([{"role": "user", "content": questions[i]}], max_tokens=wants[i])
  threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert max(backend.batches) > 1  # at least two requests shared a generate call
  prompts = [backend.chat_prompt([{"role": "user", "content": q}]) for q in questions]
  refs = sampler.generate_text(params, cfg, tok, prompts, max_new_tokens=16,
                               stop_ids=tok.stop_ids, pad_id=tok.pad_id)
  for ids, want, got, ref in zip(prompts, wants, results, refs):
    if len(ref.tokens) > want:  # greedy: the first `want` tokens of the longer generation
      text = tok.decode([t for t in ref.tokens[:want] if t not in tok.stop_ids])
      assert got.texts == [text] and got.finish_reasons == ["length"]
    else:
      assert got.texts == [ref.text] and got.finish_reasons == [ref.finish_reason]
    assert got.prompt_tokens == len(ids) and got.completion_tokens == min(want, len(ref.tokens))
  assert any(len(r.tokens) > w for r, w in zip(refs, wants))  # some row was cut
  backend.close()


def test_sampler_backend_context_limits(tiny):
  cfg, params, tok, _ = tiny
  strict = SamplerBackend(params, cfg, tok)
  text = "fever " * 100
  while len(strict.chat_prompt([{"role": "user", "content": text + "fever "}])) < 1017:
    text += "fever "
  while len(strict.chat_prompt([{"role": "user", "content": text}])) < 1017:
    text += "a"
  long = [{"role": "user", "content": text}]
  with pytest.raises(llm_lib.PromptTooLongError, match="maximum context length is 1024"):
    strict.chat(long, max_tokens=8)
  with pytest.raises(llm_lib.RequestError, match="max_tokens >= 1"):
    strict.submit([1, 5], max_tokens=0)
  clamped = SamplerBackend(params, cfg, tok, clamp_max_tokens=True)
  ids = clamped.chat_prompt(long)
  assert 1016 <= len(ids) < 1024  # leaves room for a few tokens only
  assert clamped.check_fits(ids, 100) == 1024 - len(ids)
  assert clamped.check_fits(ids[:100], 100) == 100
  strict.close()
  clamped.close()
  with pytest.raises(llm_lib.RequestError, match="closed"):
    clamped.submit([1, 5], max_tokens=2)


def test_load_model_from_params_dir_and_hf_dir(tiny, tmp_path):
  from citrus_jax import hf
  from citrus_jax.train import checkpoint
  cfg, params, tok, root = tiny
  checkpoint.save_params(str(tmp_path / "ours"), params, cfg)
  with pytest.raises(ValueError, match="no tokenizer.json or tokenizer.model"):
    load_model(str(tmp_path / "ours"))
  cfg2, params2, tok2 = load_model(str(tmp_path / "ours"), str(root / "sp.model"))
  hf.save(str(tmp_path / "hf"), params, cfg, tokenizer=tok)
  cfg3, params3, tok3 = load_model(str(tmp_path / "hf"))  # tokenizer files saved alongside
  assert cfg2 == cfg and (cfg3.vocab_size, cfg3.d_model) == (cfg.vocab_size, cfg.d_model)
  for p in (params2, params3):
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 params, p)
  for t in (tok2, tok3):
    assert t.encode("Fever and cough.") == tok.encode("Fever and cough.")
    assert t.stop_ids == tok.stop_ids
  # The parent folder holds a params dir, so it resolves as a run dir (run_dirs.py) whose stage
  # recorded no tokenizer: a clear error naming the fix.
  with pytest.raises(ValueError, match="no tokenizer found with the checkpoint"):
    load_model(str(tmp_path))
