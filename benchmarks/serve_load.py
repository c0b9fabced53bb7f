"""Load test of the OpenAI-compatible server on loopback: batching on against batching off.

Saves a randomly initialised preset (and a small SentencePiece tokenizer trained on the test
fixture corpus) to a temporary checkpoint, then for each mode starts `python -m
citrus_jax.infer.serve` as its own process (so client and server do not share a GIL) and drives it
with the `openai` async client: untimed warm-up bursts of 1, 2, 4, ... requests (they compile the
batch shapes; the prompts all fall in one length bucket and max_tokens is fixed), then
--requests chat requests at --concurrency, greedy, --max-tokens each. Reports p50/p99 latency,
5xx count, requests/s and completion tokens/s per mode; with --stream also time to first token.

  python benchmarks/serve_load.py [--preset tiny --requests 200 --concurrency 16 --max-tokens 32]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ["What causes scurvy?", "Fever and rash in a child", "Jaundice after a long flight",
           "Chest pain and a raised troponin", "Bleeding gums", "Iron deficiency anaemia",
           "Sepsis in the elderly", "Sudden headache", "Cough for three weeks", "Ankle swelling"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _checkpoint(preset: str, out: str) -> tuple[str, str]:
  import jax
  from citrus_jax import tokenizer as tk
  from citrus_jax.model import transformer
  from citrus_jax.model.config import get_preset
  from citrus_jax.train import checkpoint
  sp = tk.train_sentencepiece([os.path.join(ROOT, "tests", "fixtures", "synth", "corpus.txt")],
                              os.path.join(out, "sp"), 320)
  tok = tk.load_tokenizer(sp)
  cfg = get_preset(preset, vocab_size=tok.vocab_size, max_seq_len=1024)
  params = transformer.init_params(cfg, jax.random.key(0))
  ckpt = os.path.join(out, "ckpt")
  checkpoint.save_params(ckpt, params, cfg)
  return ckpt, os.path.join(out, "sp.model")


@contextlib.contextmanager
def _server(ckpt: str, tok: str, max_batch: int, window_ms: float):
  port = _free_port()
  proc = subprocess.Popen(
      [sys.executable, "-m", "citrus_jax.infer.serve", "--checkpoint", ckpt, "--tokenizer", tok,
       "--port", str(port), "--served-model-name", "bench", "--max-batch", str(max_batch),
       "--batch-window-ms", str(window_ms), "--log-level", "warning"],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    lines = []
    for line in proc.stdout:
      lines.append(line)
      if line.startswith("serving"):
        break
    else:
      raise RuntimeError("server did not start:\n" + "".join(lines[-20:]))
    yield f"http://127.0.0.1:{port}/v1"
  finally:
    proc.terminate()
    proc.wait(timeout=60)


async def _load(url: str, n: int, concurrency: int, max_tokens: int, stream: bool) -> dict:
  import openai
  client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, timeout=600)
  gate = asyncio.Semaphore(concurrency)
  lat, ttft, tokens, codes = [], [], 0, {}

  async def one(i: int) -> None:
    nonlocal tokens
    kw = dict(model="bench", messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
              temperature=0, max_tokens=max_tokens)
    async with gate:
      t0 = time.perf_counter()
      try:
        if stream:
          first = None
          async for ch in await client.chat.completions.create(
              stream=True, stream_options={"include_usage": True}, **kw):
            if first is None and ch.choices and ch.choices[0].delta.content:
              first = time.perf_counter() - t0
            if ch.usage:
              tokens += ch.usage.completion_tokens
          ttft.append(first if first is not None else time.perf_counter() - t0)
        else:
          out = await client.chat.completions.create(**kw)
          tokens += out.usage.completion_tokens
        codes[200] = codes.get(200, 0) + 1
      except openai.APIStatusError as e:
        codes[e.status_code] = codes.get(e.status_code, 0) + 1
      lat.append(time.perf_counter() - t0)

  t0 = time.perf_counter()
  await asyncio.gather(*(one(i) for i in range(n)))
  wall = time.perf_counter() - t0
  await client.close()
  q = statistics.quantiles(lat, n=100) if len(lat) > 1 else lat * 99
  row = {"requests": n, "wall_s": wall, "p50_s": statistics.median(lat), "p99_s": q[98],
         "5xx": sum(v for k, v in codes.items() if k >= 500), "codes": codes,
         "req_per_s": n / wall, "tok_per_s": tokens / wall, "completion_tokens": tokens}
  if ttft:
    row["ttft_p50_s"] = statistics.median(ttft)
  return row


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--preset", default="tiny")
  ap.add_argument("--requests", type=int, default=200)
  ap.add_argument("--concurrency", type=int, default=16)
  ap.add_argument("--max-tokens", type=int, default=32)
  ap.add_argument("--max-batch", type=int, default=16, help="the batching mode's rows per call")
  ap.add_argument("--batch-window-ms", type=float, default=10.0)
  ap.add_argument("--warmup", type=int, default=3,
                  help="untimed passes of bursts of 1, 2, 4, ... concurrent requests first")
  ap.add_argument("--stream", action="store_true", help="stream answers, report TTFT too")
  ap.add_argument("--json", default="", help="also write the rows here")
  args = ap.parse_args()
  import fastapi, jax, openai, uvicorn  # noqa: E401 (versions for the report)
  rows = {}
  with tempfile.TemporaryDirectory() as tmp:
    ckpt, tok = _checkpoint(args.preset, tmp)
    for mode, max_batch in (("batched", args.max_batch), ("unbatched", 1)):
      with _server(ckpt, tok, max_batch, args.batch_window_ms) as url:
        for _ in range(args.warmup):  # bursts of each batch size, so the timed run compiles none
          for b in (1, 2, 4, 8, 16, 32, 64):
            if b <= max(max_batch, 1) * 2 and b <= args.concurrency:
              asyncio.run(_load(url, b, b, args.max_tokens, args.stream))
        rows[mode] = asyncio.run(_load(url, args.requests, args.concurrency, args.max_tokens,
                                       args.stream))
      print(mode, json.dumps(rows[mode]), flush=True)
  print(f"\n{time.strftime('%Y-%m-%d')}  python {platform.python_version()}  jax {jax.__version__}"
        f"  fastapi {fastapi.__version__}  uvicorn {uvicorn.__version__}  openai "
        f"{openai.__version__}  preset {args.preset}  {args.requests} requests at concurrency "
        f"{args.concurrency}, max_tokens {args.max_tokens}{', streamed' if args.stream else ''}")
  ttft = args.stream
  print("| mode | p50 s | p99 s | 5xx | requests/s | tokens/s |" + (" TTFT p50 s |" if ttft else ""))
  print("|---|---|---|---|---|---|" + ("---|" if ttft else ""))
  for mode, r in rows.items():
    what = f"batched (--max-batch {args.max_batch})" if mode == "batched" else \
        "unbatched (--max-batch 1)"
    print(f"| {what} | {r['p50_s']:.3f} | {r['p99_s']:.3f} | {r['5xx']} | {r['req_per_s']:.1f} "
          f"| {r['tok_per_s']:.0f} |" + (f" {r['ttft_p50_s']:.3f} |" if ttft else ""))
  b, u = rows["batched"], rows["unbatched"]
  print(f"\nbatched / unbatched: {b['req_per_s'] / u['req_per_s']:.2f}x requests/s, "
        f"{b['tok_per_s'] / u['tok_per_s']:.2f}x tokens/s")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"args": vars(args), "rows": rows}, f, indent=1)
  if b["5xx"] or u["5xx"]:
    raise SystemExit("server errors (5xx) under load")


if __name__ == "__main__":
  main()
