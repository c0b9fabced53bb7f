"""Peak memory of the output layer + cross-entropy (loss and grads): full logits vs chunked.

  python benchmarks/chunked_ce_memory.py                       # 128k vocab, d 4096, bf16
  python benchmarks/chunked_ce_memory.py --seq_lens=2048,8192 --chunks=0,512,2048 --batch=2
  python benchmarks/chunked_ce_memory.py --time --seq_lens=1024 --d_model=512  # + CPU timing

What is compiled is value_and_grad of the loss w.r.t. the [D, V] output projection (fp32, as
the params are kept) and the [B, T, D] final hidden states, i.e. the part of the train step that
`train.loss_chunk` changes; nothing else of the model. Numbers come from the compiled
executable's memory analysis: `temp_size_in_bytes` (the step's scratch buffers, where the
[B, T, V] logits live) and temp + arguments + outputs (everything the step holds; XLA:CPU reports
no peak of its own). Nothing of that size is allocated: it runs on any CPU host in a minute.
With --time, each compiled function is also run (median of --steps): the recompute cost.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from citrus_jax.model import config as mc, transformer
from citrus_jax.train import chunked_ce, losses

GIB = 2 ** 30


def _fn(cfg: mc.ModelConfig, chunk: int):
  def loss(params, hidden, targets, mask):
    if chunk:
      return chunked_ce.cross_entropy(params, hidden, targets, mask, cfg, chunk)[0]
    logits = transformer.logits_from_hidden(params, hidden, cfg)
    return losses.cross_entropy(logits, targets, mask)[0]
  return jax.value_and_grad(loss, argnums=(0, 1))


def measure(cfg: mc.ModelConfig, batch: int, seq: int, chunk: int, dtype: str,
            time_steps: int = 0) -> dict:
  params = {"lm_head": jax.ShapeDtypeStruct((cfg.d_model, cfg.vocab_size), jnp.float32)}
  args = (params, jax.ShapeDtypeStruct((batch, seq, cfg.d_model), jnp.dtype(dtype)),
          jax.ShapeDtypeStruct((batch, seq), jnp.int32),
          jax.ShapeDtypeStruct((batch, seq), jnp.float32))
  t0 = time.time()
  compiled = jax.jit(_fn(cfg, chunk)).lower(*args).compile()
  mem = compiled.memory_analysis()
  row = {"seq": seq, "chunk": chunk, "compile_s": time.time() - t0,
         "temp": mem.temp_size_in_bytes,
         "total": mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes}
  if time_steps:
    rng = np.random.default_rng(0)
    real = ({"lm_head": jnp.asarray(0.02 * rng.standard_normal((cfg.d_model, cfg.vocab_size)),
                                    jnp.float32)},
            jnp.asarray(rng.standard_normal((batch, seq, cfg.d_model)), jnp.dtype(dtype)),
            jnp.asarray(rng.integers(0, cfg.vocab_size, (batch, seq)), jnp.int32),
            jnp.ones((batch, seq), jnp.float32))
    jax.block_until_ready(compiled(*real))
    times = []
    for _ in range(time_steps):
      t = time.perf_counter()
      jax.block_until_ready(compiled(*real))
      times.append(time.perf_counter() - t)
    row["step_s"] = statistics.median(times)
  return row


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--vocab", type=int, default=128256)
  p.add_argument("--d_model", type=int, default=4096)
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--seq_lens", default="2048,8192")
  p.add_argument("--chunks", default="0,256,1024", help="0 is the full-logits path")
  p.add_argument("--dtype", default="bfloat16", help="hidden-state (compute) dtype")
  p.add_argument("--time", action="store_true", help="also run each and time it")
  p.add_argument("--steps", type=int, default=3)
  a = p.parse_args(argv)
  cfg = mc.ModelConfig(vocab_size=a.vocab, d_model=a.d_model, tie_embeddings=False)
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, vocab {a.vocab:,}, "
        f"d_model {a.d_model}, batch {a.batch}, hidden {a.dtype}, params fp32; "
        f"value_and_grad of the loss w.r.t. (lm_head, hidden)")
  chunks = [int(c) for c in a.chunks.split(",")]
  head = "| seq | full logits [B,T,V] fp32 | " + " | ".join(
      "full: temp / total" if c == 0 else f"chunk {c}: temp / total" for c in chunks) + " |"
  if a.time:
    head += " step s (" + ", ".join("full" if c == 0 else str(c) for c in chunks) + ") |"
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for seq in [int(s) for s in a.seq_lens.split(",")]:
    rows = [measure(cfg, a.batch, seq, c, a.dtype, a.steps if a.time else 0) for c in chunks]
    cells = [f"{r['temp'] / GIB:.2f} / {r['total'] / GIB:.2f} GiB" for r in rows]
    line = (f"| {seq} | {a.batch * seq * a.vocab * 4 / GIB:.2f} GiB | " + " | ".join(cells)
            + " |")
    if a.time:
      line += " " + ", ".join(f"{r['step_s']:.3f}" for r in rows) + " |"
    lines.append(line)
  print("\n".join(lines))


if __name__ == "__main__":
  main()
