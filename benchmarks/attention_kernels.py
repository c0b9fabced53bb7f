"""Attention forward + backward for each `ModelConfig.attention` setting, against "einsum".

"einsum" (the default) computes attention with two einsums and a masked softmax, which XLA
compiles everywhere but which materialises the [T, S] scores; "xla" and "cudnn" go through
`jax.nn.dot_product_attention` (cudnn: fused flash attention, NVIDIA GPUs only). All run the
model's own `transformer._attention` on the same causal, packed (segment-masked) GQA batch with a
padded tail, and the table gives the largest difference of outputs and input gradients from
"einsum" over the real (non-padding) positions, and whether any NaN appeared.

  python benchmarks/attention_kernels.py                       # CPU: einsum vs xla
  python benchmarks/attention_kernels.py --seq 4096 --batch 4 --heads 32 --kv_heads 8   # GPU
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from citrus_jax.model import config as mc, transformer


def _inputs(b: int, t: int, h: int, k: int, e: int, dtype: str, n_docs: int):
  keys = jax.random.split(jax.random.key(0), 4)
  q = jax.random.normal(keys[0], (b, t, h, e), dtype)
  kk = jax.random.normal(keys[1], (b, t, k, e), dtype)
  v = jax.random.normal(keys[2], (b, t, k, e), dtype)
  seg = np.repeat(np.arange(1, n_docs + 1), -(-t // n_docs))[:t]  # n_docs packed documents
  seg[t - t // 8:] = 0  # a padded tail
  seg_BT = jnp.asarray(np.tile(seg, (b, 1)), jnp.int32)
  pos = jnp.arange(t)
  mask_BTS = ((pos[:, None] >= pos[None, :])[None]  # as transformer.forward builds it
              & (seg_BT[:, :, None] == seg_BT[:, None, :]) & (seg_BT[:, None, :] != 0))
  return q, kk, v, mask_BTS, (seg_BT != 0)[:, :, None, None]


def _attn(cfg):
  def attn(q, k, v, mask_BTS, real):
    b, t, h, e = q.shape
    out = transformer._attention(q, k, v, mask_BTS, cfg).reshape(b, t, h, e)
    return jnp.where(real, out, 0)
  return attn


def _fwd_bwd(attn):
  def loss(q, k, v, mask, real):
    return jnp.sum(attn(q, k, v, mask, real).astype(jnp.float32) ** 2)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def _time(fn, args, steps: int) -> tuple[float, float, object]:
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times), compile_s, out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--seq", type=int, default=512)
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--kv_heads", type=int, default=4)
  p.add_argument("--head_dim", type=int, default=64)
  p.add_argument("--docs", type=int, default=2, help="packed documents per row")
  p.add_argument("--dtype", default=None, help="default: bfloat16 on GPU, float32 elsewhere")
  p.add_argument("--steps", type=int, default=10)
  args = p.parse_args()
  on_gpu = jax.devices()[0].platform == "gpu"
  dtype = args.dtype or ("bfloat16" if on_gpu else "float32")
  cfg = mc.ModelConfig(n_heads=args.heads, n_kv_heads=args.kv_heads, head_dim=args.head_dim,
                       compute_dtype=dtype)
  inputs = _inputs(args.batch, args.seq, args.heads, args.kv_heads, args.head_dim, dtype,
                   args.docs)
  names = ("einsum", "xla", "cudnn") if on_gpu else ("einsum", "xla")
  impls = {name: _attn(cfg.replace(attention=name)) for name in names}
  # Attention FLOPs, forward + backward (2 matmuls forward, 4 backward; causal half skipped
  # by neither implementation's count here): 3 * 4 * B * H * T * S * E.
  flops = 12.0 * args.batch * args.heads * args.seq * args.seq * args.head_dim
  print(f"batch {args.batch} x seq {args.seq}, {args.heads} heads / {args.kv_heads} kv, head dim "
        f"{args.head_dim}, {args.docs} packed docs per row, {dtype}, "
        f"{jax.devices()[0].device_kind}")
  print(f"{'attention':18s} {'ms':>9s} {'TFLOP/s':>8s} {'compile s':>10s} "
        f"{'max |diff| out':>15s} {'max |diff| grad':>16s}  NaN")
  ref = None
  for name, attn in impls.items():
    try:
      dt, compile_s, (val, grads) = _time(_fwd_bwd(attn), inputs, args.steps)
    except Exception as e:  # an unsupported kernel/shape: say so and go on
      print(f"{name:18s} failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
      continue
    out = attn(*inputs)
    if ref is None:
      ref = (out, grads)
    d_out = float(jnp.max(jnp.abs(out.astype(jnp.float32) - ref[0].astype(jnp.float32))))
    d_grad = max(float(jnp.max(jnp.abs(g.astype(jnp.float32) - r.astype(jnp.float32))))
                 for g, r in zip(grads, ref[1]))
    nan = bool(jnp.isnan(val)) or any(bool(jnp.isnan(g).any()) for g in grads)
    print(f"{name:18s} {dt * 1e3:9.2f} {flops / dt / 1e12:8.1f} {compile_s:10.1f} "
          f"{d_out:15.2e} {d_grad:16.2e}  {'yes' if nan else 'no'}")


if __name__ == "__main__":
  main()
