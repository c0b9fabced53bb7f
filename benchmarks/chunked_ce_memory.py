"""Peak memory of the output layer + loss (loss and grads): full logits vs chunked.

  python benchmarks/chunked_ce_memory.py                       # 128k vocab, d 4096, bf16
  python benchmarks/chunked_ce_memory.py --seq_lens=2048,8192 --chunks=0,512,2048 --batch=2
  python benchmarks/chunked_ce_memory.py --losses=ce,pairs,grpo --batch=4  # every stage's loss
  python benchmarks/chunked_ce_memory.py --time --seq_lens=1024 --d_model=512  # + CPU timing

--losses: `ce` is the CPT/SFT token-mean cross-entropy; `pairs` the RL stage's CPO-SimPO loss
on `--batch` chosen/rejected pairs (2 x batch rows: the one forward `preference.
pair_forward_logprobs` runs; DPO/IPO/ORPO read the same log-probs); `grpo` the DAPO loss with the
k3 KL and the entropy metric (`grpo_loss.logprobs_and_entropy`, as `train.grpo` runs it).
What is compiled is value_and_grad of the loss w.r.t. the [D, V] output projection (fp32, as
the params are kept) and the [rows, T, D] final hidden states, i.e. the part of the train step
that `train.loss_chunk` changes; nothing else of the model. Numbers come from the compiled
executable's memory analysis: `temp_size_in_bytes` (the step's scratch buffers, where the
[B, T, V] logits live) and temp + arguments + outputs (everything the step holds; XLA:CPU reports
no peak of its own). Nothing of that size is allocated: it runs on any CPU host in a minute.
With --time, each compiled function is also run (median of --steps): the recompute cost.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from citrus_jax.model import config as mc, transformer
from citrus_jax.train import chunked_ce, grpo_loss, losses, preference

GIB = 2 ** 30


LOSSES = ("ce", "pairs", "grpo")


def rows_of(loss: str, batch: int) -> int:
  """Rows the output layer sees: a pair is two (chosen and rejected)."""
  return 2 * batch if loss == "pairs" else batch


def _loss(cfg: mc.ModelConfig, chunk: int, loss: str) -> Callable:
  """The loss from final hidden states, as the stage computes it after the trunk."""
  def ce(params, hidden, targets, mask, extra):
    if chunk:
      return chunked_ce.cross_entropy(params, hidden, targets, mask, cfg, chunk)[0], {}
    logits = transformer.logits_from_hidden(params, hidden, cfg)
    return losses.cross_entropy(logits, targets, mask)[0], {}

  def pairs(params, hidden, targets, mask, extra):
    logps = losses.token_logprobs_from_hidden(params, hidden, targets, cfg, chunk)
    stats = preference.pair_stats(logps, extra)
    return preference.preference_loss("cpo_simpo", stats, preference.preference_totals(extra))

  def grpo(params, hidden, targets, mask, extra):
    logp, entropy = grpo_loss.logprobs_and_entropy(params, hidden, targets, cfg, chunk)
    loss, metrics = grpo_loss.grpo_loss(logp, None, extra["ref_logp"], extra["advantages"], mask,
                                        loss_type="dapo", beta=0.04)
    metrics["entropy"] = (entropy * mask).sum() / jnp.maximum(mask.sum(), 1.0)
    return loss, metrics

  return {"ce": ce, "pairs": pairs, "grpo": grpo}[loss]


def _extra(loss: str, batch: int, seq: int, make: Callable) -> dict:
  """The loss's other inputs: the pair batch's masks, or GRPO's reference and advantages."""
  if loss == "pairs":
    return {f"{side}_{f}": make((batch, seq), dtype) for side in ("chosen", "rejected")
            for f, dtype in (("inputs", jnp.int32), ("loss_mask", jnp.float32),
                             ("segment_ids", jnp.int32))}
  if loss == "grpo":
    return {"ref_logp": make((batch, seq), jnp.float32), "advantages": make((batch,), jnp.float32)}
  return {}


def measure(cfg: mc.ModelConfig, batch: int, seq: int, chunk: int, dtype: str,
            time_steps: int = 0, loss: str = "ce") -> dict:
  rows = rows_of(loss, batch)
  fn = jax.value_and_grad(_loss(cfg, chunk, loss), argnums=(0, 1), has_aux=True)
  params = {"lm_head": jax.ShapeDtypeStruct((cfg.d_model, cfg.vocab_size), jnp.float32)}
  args = (params, jax.ShapeDtypeStruct((rows, seq, cfg.d_model), jnp.dtype(dtype)),
          jax.ShapeDtypeStruct((rows, seq), jnp.int32),
          jax.ShapeDtypeStruct((rows, seq), jnp.float32),
          _extra(loss, batch, seq, jax.ShapeDtypeStruct))
  t0 = time.time()
  compiled = jax.jit(fn).lower(*args).compile()
  mem = compiled.memory_analysis()
  row = {"seq": seq, "chunk": chunk, "compile_s": time.time() - t0,
         "temp": mem.temp_size_in_bytes,
         "total": mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes}
  if time_steps:
    rng = np.random.default_rng(0)

    def make(shape, dt):
      if dt == jnp.int32:
        return jnp.ones(shape, dt)  # segment ids 1, inputs a valid token
      return jnp.asarray(-rng.random(shape), dt)  # ref log-probs / advantages; masks below
    extra = _extra(loss, batch, seq, make)
    extra.update({k: jnp.ones_like(v) for k, v in extra.items() if k.endswith("loss_mask")})
    real = ({"lm_head": jnp.asarray(0.02 * rng.standard_normal((cfg.d_model, cfg.vocab_size)),
                                    jnp.float32)},
            jnp.asarray(rng.standard_normal((rows, seq, cfg.d_model)), jnp.dtype(dtype)),
            jnp.asarray(rng.integers(0, cfg.vocab_size, (rows, seq)), jnp.int32),
            jnp.ones((rows, seq), jnp.float32), extra)
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
  p.add_argument("--losses", default="ce", help=f"comma list of {', '.join(LOSSES)}")
  a = p.parse_args(argv)
  names = [x.strip() for x in a.losses.split(",") if x.strip()]
  if not names or set(names) - set(LOSSES):
    p.error(f"--losses={a.losses}: expected a comma list of {', '.join(LOSSES)}")
  cfg = mc.ModelConfig(vocab_size=a.vocab, d_model=a.d_model, tie_embeddings=False)
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, vocab {a.vocab:,}, "
        f"d_model {a.d_model}, batch {a.batch}, hidden {a.dtype}, params fp32; "
        f"value_and_grad of the loss w.r.t. (lm_head, hidden)")
  chunks = [int(c) for c in a.chunks.split(",")]
  head = "| loss | batch x seq (rows) | full logits [rows,T,V] fp32 | " + " | ".join(
      "full: temp / total" if c == 0 else f"chunk {c}: temp / total" for c in chunks) + " |"
  if a.time:
    head += " step s (" + ", ".join("full" if c == 0 else str(c) for c in chunks) + ") |"
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for loss in names:
    for seq in [int(s) for s in a.seq_lens.split(",")]:
      rows = [measure(cfg, a.batch, seq, c, a.dtype, a.steps if a.time else 0, loss)
              for c in chunks]
      n = rows_of(loss, a.batch)
      cells = [f"{r['temp'] / GIB:.2f} / {r['total'] / GIB:.2f} GiB" for r in rows]
      line = (f"| {loss} | {a.batch} x {seq} ({n}) | {n * seq * a.vocab * 4 / GIB:.2f} GiB | "
              + " | ".join(cells) + " |")
      if a.time:
        line += " " + ", ".join(f"{r['step_s']:.3f}" for r in rows) + " |"
      lines.append(line)
      print(line, flush=True)
  print("\n".join(lines))


if __name__ == "__main__":
  main()
