"""The in-process citrus_jax sampler as an LLM backend, batching concurrent requests.

Callers on any thread submit requests; one worker thread takes the first waiting request, gathers
whatever else arrives within `batch_window_s` (up to `max_batch` rows), groups the requests that
can share a `generate` call (same temperature, top_p, stop strings) and runs each group as one
batch. Rows of a group may ask for different max_tokens: the batch runs to the largest (rounded up
to a power of two, so few shapes are compiled) and each row is cut to its own limit afterwards,
which is exact because a row's first k tokens do not depend on what follows them.

Streaming and cancellation go through the sampler's host hook: decoded tokens are handed to
their request's `on_token(row, token_id)` listener as they come, and a request whose future was
cancelled (a client that went away) has its rows ended at the next call; a cancelled request
still waiting in the queue never reaches the sampler. The hook runs every `stream_every` steps
in batches that stream, every `check_every` in others. Rows also end at their own max_tokens, so
a batch stops when its longest request is done rather than at the rounded-up step count.

Seeds: the sampler draws one random stream per batch, so with temperature > 0 a row's sample
depends on its batch; the batch uses its first request's seed. Greedy decoding (temperature 0) is
batch-independent. The OpenAI server (citrus_jax/infer/serve.py) and local synthesis both use this.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import queue
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np
from absl import logging

from citrus_jax import chat, run_dirs
from citrus_jax.infer import sampler
from citrus_jax.model.config import ModelConfig
from citrus_jax.synth.llm import LLM, ChatRequest, ChatResponse, PromptTooLongError, RequestError
from citrus_jax.tokenizer import load_tokenizer


@dataclasses.dataclass
class Completion:
  """One generated text with its token counts."""
  text: str
  finish_reason: str
  completion_tokens: int


class JobFuture(concurrent.futures.Future):
  """A Future whose cancel() also works once the job runs: `abandoned` tells the sampler hook to
  end the job's rows at the next step (the result, if any, is then of no use)."""

  def __init__(self) -> None:
    super().__init__()
    self.abandoned = False

  def cancel(self) -> bool:
    self.abandoned = True
    return super().cancel()


TokenListener = Callable[[int, int], None]  # (row within the request, token id)


@dataclasses.dataclass
class _Job:
  prompt: list[int]
  n: int
  max_tokens: int
  temperature: float
  top_p: float
  seed: int
  stop: tuple[str, ...]
  future: JobFuture
  on_token: TokenListener | None = None

  @property
  def group(self) -> tuple:
    return (self.temperature, self.top_p if self.temperature > 0 else 1.0, self.stop)


class SamplerBackend(LLM):
  """Chat (or raw token) prompts through `sampler.generate_text`, batched across threads.

  clamp_max_tokens=True lowers a request's max_tokens to the room left in the context (synthesis);
  False refuses such requests with PromptTooLongError (the OpenAI server's behaviour).
  The sampler calls back to the host every `stream_every` decode steps in batches with a
  streaming request (1: token by token), every `check_every` otherwise (cancellation and
  max_tokens only); each callback costs ~0.1-1 ms on CPU, a large share of a tiny model's step.
  """

  def __init__(self, params: Any, cfg: ModelConfig, tokenizer: Any, *, name: str = "citrus_jax",
               mesh: Any = None, max_batch: int = 32, batch_window_s: float = 0.01,
               clamp_max_tokens: bool = False, top_k: int = 0, stream_every: int = 1,
               check_every: int = 8):
    if max_batch < 1:
      raise ValueError(f"SamplerBackend: max_batch={max_batch} must be >= 1")
    self.params, self.cfg, self.tokenizer = params, cfg, tokenizer
    self.name, self.mesh = name, mesh
    self.max_batch, self.batch_window_s = max_batch, batch_window_s
    self.clamp_max_tokens, self.top_k = clamp_max_tokens, top_k
    self.stream_every, self.check_every = stream_every, check_every
    self.pad_id = tokenizer.pad_id if getattr(tokenizer, "pad_id", None) is not None else 0
    self.stop_ids = tuple(getattr(tokenizer, "stop_ids", ()) or
                          (() if cfg.eos_token_id is None else (cfg.eos_token_id,)))
    self.batches: list[int] = []  # rows per generate call, for tests and monitoring
    self.batch_steps: list[int] = []  # decode steps each generate call ran
    self.cancelled_rows = 0  # rows ended early because their request was cancelled
    self._rows: list[list] = []  # the running batch: [job, row in job, tokens seen] per row
    self._queue: queue.Queue = queue.Queue()
    self._worker: threading.Thread | None = None
    self._lock = threading.Lock()
    self._closed = False

  # ---------------------------------------------------------------------------- prompts

  def chat_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
    """Token ids of the rendered chat with the assistant generation header."""
    try:
      return chat.render(messages, self.tokenizer, add_generation_prompt=True).tokens
    except ValueError as e:
      raise RequestError(f"bad messages: {e}") from None

  def text_prompt(self, text: str, add_bos: bool = True) -> list[int]:
    """Token ids of a raw completion prompt (BOS first when the model has one)."""
    ids = self.tokenizer.encode(text)
    bos = getattr(self.tokenizer, "bos_id", None)
    bos = self.cfg.bos_token_id if bos is None else bos
    if add_bos and bos is not None and ids[:1] != [bos]:
      ids = [bos] + ids
    return ids

  def room(self, prompt: Sequence[int]) -> int:
    return self.cfg.max_seq_len - len(prompt)

  def check_fits(self, prompt: Sequence[int], max_tokens: int) -> int:
    """The max_tokens that will be used, or PromptTooLongError (message as vLLM's)."""
    if not prompt:
      raise RequestError("the prompt is empty")
    room = self.room(prompt)
    if self.clamp_max_tokens and room >= 1:
      return min(max_tokens, room)
    if len(prompt) + max_tokens > self.cfg.max_seq_len:
      raise PromptTooLongError(
          f"This model's maximum context length is {self.cfg.max_seq_len} tokens. However, you "
          f"requested {len(prompt) + max_tokens} tokens ({len(prompt)} in the prompt, "
          f"{max_tokens} for the completion).")
    return max_tokens

  # ---------------------------------------------------------------------------- requests

  def submit(self, prompt: Sequence[int], *, n: int = 1, max_tokens: int = 256,
             temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
             stop: Sequence[str] = (), on_token: TokenListener | None = None) -> JobFuture:
    """Queues one prompt for n completions; the future yields a list of Completion.

    on_token(row, token_id) is called from the sampler thread for each token of each of the n
    rows as it is decoded (at most max_tokens per row; stop tokens included). cancel() on the
    future drops the request, or ends its rows at the next decode step if it is running."""
    if n < 1 or max_tokens < 1 or temperature < 0 or not 0 < top_p <= 1:
      raise RequestError(f"need n >= 1, max_tokens >= 1, temperature >= 0, 0 < top_p <= 1; got "
                         f"n={n}, max_tokens={max_tokens}, temperature={temperature}, "
                         f"top_p={top_p}")
    prompt = [int(t) for t in prompt]
    if prompt and (min(prompt) < 0 or max(prompt) >= self.cfg.vocab_size):
      raise RequestError(f"prompt token ids must lie in [0, {self.cfg.vocab_size})")
    max_tokens = self.check_fits(prompt, max_tokens)
    job = _Job(prompt, n, max_tokens, float(temperature), float(top_p),
               0 if seed is None else int(seed) % 2**31, tuple(s for s in stop if s),
               JobFuture(), on_token)
    with self._lock:
      if self._closed:
        raise RequestError("the backend is closed")
      if self._worker is None:
        self._worker = threading.Thread(target=self._loop, name="sampler-batcher", daemon=True)
        self._worker.start()
      self._queue.put(job)
    return job.future

  def complete(self, request: ChatRequest) -> ChatResponse:
    request.validate()
    prompt = self.chat_prompt(request.messages)
    outs = self.submit(prompt, n=request.n, max_tokens=request.max_tokens,
                       temperature=request.temperature, top_p=request.top_p, seed=request.seed,
                       stop=request.stop).result()
    return ChatResponse([o.text for o in outs], [o.finish_reason for o in outs], len(prompt),
                        sum(o.completion_tokens for o in outs))

  def close(self) -> None:
    with self._lock:
      self._closed = True
      worker = self._worker
      self._queue.put(None)
    if worker is not None:
      worker.join(timeout=60)

  # ---------------------------------------------------------------------------- the worker

  def _loop(self) -> None:
    while True:
      job = self._queue.get()
      if job is None:
        return
      jobs, rows = [job], job.n
      deadline = time.monotonic() + self.batch_window_s
      stop = False
      while rows < self.max_batch:
        try:
          nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
          break
        if nxt is None:
          stop = True
          break
        jobs.append(nxt)
        rows += nxt.n
      running = [j for j in jobs if j.future.set_running_or_notify_cancel()]
      self.cancelled_rows += sum(j.n for j in jobs) - sum(j.n for j in running)  # unsampled
      jobs = running
      for chunk in self._chunks(jobs):
        try:
          results = self._run(chunk)
        except Exception as e:  # a failed batch fails its requests, not the worker
          logging.exception("sampler batch of %d requests failed", len(chunk))
          for j in chunk:
            j.future.set_exception(e)
          continue
        for j, r in zip(chunk, results):
          j.future.set_result(r)
      if stop:
        return

  def _chunks(self, jobs: list[_Job]) -> list[list[_Job]]:
    groups: dict[tuple, list[list[_Job]]] = {}
    for j in jobs:
      chunks = groups.setdefault(j.group, [[]])
      if chunks[-1] and sum(x.n for x in chunks[-1]) + j.n > self.max_batch:
        chunks.append([])
      chunks[-1].append(j)
    return [c for chunks in groups.values() for c in chunks]

  def _run(self, jobs: list[_Job]) -> list[list[Completion]]:
    prompts = [j.prompt for j in jobs for _ in range(j.n)]
    want = max(j.max_tokens for j in jobs)
    room = self.cfg.max_seq_len - max(len(p) for p in prompts)
    steps = max(want, min(sampler.bucket_length(want), room))
    first = jobs[0]
    rows = self._rows = [[j, r, 0] for j in jobs for r in range(j.n)]
    self._steps = 0
    streaming = any(j.on_token is not None for j in jobs)
    try:
      outs = sampler.generate_text(
          self.params, self.cfg, self.tokenizer, prompts, max_new_tokens=steps,
          stop_strings=first.stop, temperature=first.temperature, top_p=first.top_p,
          top_k=self.top_k, seed=first.seed, stop_ids=self.stop_ids, pad_id=self.pad_id,
          mesh=self.mesh, on_step=self._on_step,  # static under jit: equal across calls
          on_step_every=self.stream_every if streaming else self.check_every)
    finally:
      self._rows = []
    for row, out in zip(rows, outs):  # the tokens after the hook's last call
      if not row[0].future.abandoned:
        self._deliver(row, out.tokens[row[2]:row[0].max_tokens])
    with self._lock:
      self.batches.append(len(prompts))
      self.batch_steps.append(self._steps)
    results, k = [], 0
    skip = set(self.stop_ids)
    for j in jobs:
      row = []
      for out in outs[k:k + j.n]:
        if len(out.tokens) > j.max_tokens:  # cut to this request's own limit
          toks = out.tokens[:j.max_tokens]
          row.append(Completion(self.tokenizer.decode([t for t in toks if t not in skip]),
                                "length", len(toks)))
        else:
          row.append(Completion(out.text, out.finish_reason, len(out.tokens)))
      results.append(row)
      k += j.n
    return results


  def _on_step(self, step: Any, start: Any, tokens_BK: Any, n_gen_B: Any,
               live_B: Any) -> np.ndarray:
    """The sampler's host hook (runs on the sampler thread): hands each row's new tokens to its
    listener and returns the rows to end now (cancelled, or at their request's max_tokens)."""
    window, n_gen, live = np.asarray(tokens_BK), np.asarray(n_gen_B), np.asarray(live_B)
    start = int(start)
    end = np.zeros(live.shape, bool)
    self._steps = int(step) + 1
    for i, row in enumerate(self._rows):
      job, _, seen = row
      if job.future.abandoned:
        end[i] = True
        if live[i]:
          self.cancelled_rows += 1
        continue
      upto = min(int(n_gen[i]), job.max_tokens)
      self._deliver(row, window[i, max(seen, start) - start:upto - start].tolist())
      end[i] = upto >= job.max_tokens
    return end

  def _deliver(self, row: list, tokens: list[int]) -> None:
    job, r, _ = row
    row[2] += len(tokens)
    if job.on_token is None:
      return
    try:
      for t in tokens:
        job.on_token(r, int(t))
    except Exception:  # a broken listener (its client gone) ends its rows, not the batch
      logging.warning("token listener failed; ending the request", exc_info=True)
      job.future.abandoned = True


# ------------------------------------------------------------------------------------------------
# Loading a model.


def load_model(checkpoint: str, tokenizer_path: str = "", *, mesh: Any = None,
               dtype: str | None = None) -> tuple[ModelConfig, Any, Any]:
  """(cfg, params, tokenizer) from a run dir, a stage dir, a params dir or a Hugging Face dir
  (citrus_jax/run_dirs.py; one line says which it found). The tokenizer comes from
  `tokenizer_path`, else from the checkpoint (its dir's tokenizer.json / tokenizer.model, or the
  tokenizer its stage was trained with)."""
  r = run_dirs.resolve(checkpoint)
  print(r.describe(), flush=True)
  cfg, params = run_dirs.load(r, mesh=mesh, dtype=dtype)
  if not tokenizer_path:
    if not r.tokenizer:
      raise ValueError(f"{checkpoint}: no tokenizer found with the checkpoint (no tokenizer.json "
                       "or tokenizer.model in it, none recorded in its stage config); pass the "
                       "tokenizer path")
    tokenizer_path = r.tokenizer
  tok = load_tokenizer(tokenizer_path)
  if tok.vocab_size > cfg.vocab_size:
    raise ValueError(f"{tokenizer_path}: tokenizer has {tok.vocab_size} ids but the model's "
                     f"vocabulary is {cfg.vocab_size}")
  return cfg, params, tok
