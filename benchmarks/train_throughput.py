"""Train-step throughput: citrus_jax vs a PyTorch transformers reference, same model, same run.

  python benchmarks/train_throughput.py                      # demo model, fp32, batch 8, seq 256
  python benchmarks/train_throughput.py --compute_dtype=bfloat16 --torch_autocast_bf16
  python benchmarks/train_throughput.py --preset=llama3_2_1b --seq_len=4096 --batch=4 \
      --compute_dtype=bfloat16 --remat=dots --skip_torch      # on a GPU: prints MFU

Both sides do forward + backward + AdamW on identical shapes; times are medians over
`--steps` steps after `--warmup` steps (compile excluded and reported separately).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np

from citrus_jax import sharding
from citrus_jax.model import config as mc, transformer
from citrus_jax.train import losses, metrics_log, optim
from citrus_jax.train.step import TrainState, init_state, make_train_step
import ml_collections


def _batch(b: int, t: int, vocab: int, seed: int = 0, trained: float = 1.0
           ) -> dict[str, np.ndarray]:
  """Random tokens; the last `trained` fraction of each row is trained (SFT's answer tokens)."""
  rng = np.random.RandomState(seed)
  row = rng.randint(0, vocab, size=(b, t + 1)).astype(np.int32)
  mask = np.zeros((b, t), np.float32)
  mask[:, t - int(round(trained * t)):] = 1.0
  return {"inputs": row[:, :-1], "targets": row[:, 1:],
          "positions": np.tile(np.arange(t, dtype=np.int32), (b, 1)),
          "segment_ids": np.ones((b, t), np.int32), "loss_mask": mask}


def bench_jax(cfg: mc.ModelConfig, b: int, t: int, steps: int, warmup: int,
              trained: float = 1.0, logits_fraction: float = 1.0) -> dict[str, float]:
  mesh = sharding.make_mesh((1, -1, 1))
  ocfg = ml_collections.ConfigDict(dict(lr=1e-4, warmup_steps=0, weight_decay=0.1, grad_clip=1.0))
  optimizer, _ = optim.make_optimizer(ocfg, 1000)
  param_sh = sharding.param_shardings(cfg, mesh)
  params = jax.jit(lambda: transformer.init_params(cfg, jax.random.key(0)),
                   out_shardings=param_sh)()
  state = init_state(params, optimizer, 0)
  step = jax.jit(make_train_step(losses.lm_loss_fn(cfg, logits_fraction=logits_fraction),
                                 optimizer), donate_argnums=0)
  batch = {k: jax.device_put(v, sharding.batch_sharding(mesh)) for k, v in
           _batch(b, t, cfg.vocab_size, trained=trained).items()}
  t0 = time.perf_counter()
  state, m = step(state, batch)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    state, m = step(state, batch)
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  dt = statistics.median(times)
  stats = jax.devices()[0].memory_stats() or {}
  return {"step_s": dt, "tokens_per_s": b * t / dt, "compile_s": compile_s,
          "loss": float(m["loss"]), "peak_gib": stats.get("peak_bytes_in_use", 0) / 2**30}


def bench_torch(cfg: mc.ModelConfig, b: int, t: int, steps: int, warmup: int,
                autocast_bf16: bool, trained: float = 1.0) -> dict[str, float]:
  import torch
  import transformers
  torch.manual_seed(0)
  hf_cfg = transformers.LlamaConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
      num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim,
      intermediate_size=cfg.d_ff, rope_theta=cfg.rope_theta, rms_norm_eps=cfg.norm_eps,
      tie_word_embeddings=cfg.tie_embeddings, max_position_embeddings=cfg.max_seq_len)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  model = transformers.LlamaForCausalLM(hf_cfg).to(device)
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
  data = _batch(b, t, cfg.vocab_size, trained=trained)
  data["targets"] = np.where(data["loss_mask"] > 0, data["targets"], -100)  # ignore_index
  inputs = torch.tensor(data["inputs"], dtype=torch.long, device=device)
  labels = torch.tensor(data["targets"], dtype=torch.long, device=device)

  def one():
    with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast_bf16):
      logits = model(input_ids=inputs).logits
      loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.shape[-1]),
                                               labels.view(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()  # waits for the GPU

  for _ in range(warmup):
    one()
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    loss = one()
    times.append(time.perf_counter() - t0)
  dt = statistics.median(times)
  note = (f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB peak" if device == "cuda"
          else f"{torch.get_num_threads()} threads")
  del model, opt
  if device == "cuda":
    torch.cuda.empty_cache()
  return {"step_s": dt, "tokens_per_s": b * t / dt, "loss": loss, "note": note}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--preset", default="demo")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq_len", type=int, default=256)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--compute_dtype", default="float32")
  p.add_argument("--remat", default="none")
  p.add_argument("--attention", default="einsum", help="einsum | xla | cudnn (GPU, bf16)")
  p.add_argument("--torch_autocast_bf16", action="store_true")
  p.add_argument("--skip_torch", action="store_true")
  p.add_argument("--trained_fraction", type=float, default=1.0,
                 help="share of each row with a loss (SFT: the answer tokens)")
  p.add_argument("--logits_fraction", type=float, default=1.0,
                 help="< 1: also time the output layer on trained positions only")
  args = p.parse_args()
  cfg = mc.get_preset(args.preset, compute_dtype=args.compute_dtype, remat=args.remat,
                      attention=args.attention)
  n = transformer.count_params(cfg)
  print(f"model {args.preset} ({n:,} params), batch {args.batch} x seq {args.seq_len}, "
        f"{jax.device_count()} x {jax.devices()[0].device_kind}, jax compute {args.compute_dtype}, "
        f"remat {args.remat}, attention {args.attention}", flush=True)
  ref = None
  if not args.skip_torch:  # first: JAX's allocator keeps what it took, torch's can give it back
    ref = bench_torch(cfg, args.batch, args.seq_len, args.steps, args.warmup,
                      args.torch_autocast_bf16, args.trained_fraction)
  rows = []
  for fraction in sorted({1.0, args.logits_fraction}, reverse=True):
    ours = bench_jax(cfg, args.batch, args.seq_len, args.steps, args.warmup,
                     args.trained_fraction, fraction)
    note = f"compile {ours['compile_s']:.1f}s"
    if ours["peak_gib"]:
      note += f", {ours['peak_gib']:.1f} GiB peak"
    name = "citrus_jax" + (f" (logits_fraction {fraction:g})" if fraction < 1 else "")
    rows.append((name, ours["tokens_per_s"], ours["step_s"], note))
  if ref:
    label = "torch+transformers" + (" (bf16 autocast)" if args.torch_autocast_bf16 else "")
    rows.append((label, ref["tokens_per_s"], ref["step_s"], ref["note"]))
  print(f"{'implementation':36s} {'tokens/s':>10s} {'step s':>8s}  note")
  for name, tps, dt, note in rows:
    print(f"{name:36s} {tps:10.0f} {dt:8.3f}  {note}")
  if ref:
    for name, tps, _, _ in rows[:-1]:
      print(f"ratio {name} / torch: {tps / rows[-1][1]:.2f}x")
  peak = metrics_log.peak_flops()
  if peak:
    flops = metrics_log.train_flops_per_token(n, cfg.n_layers, args.seq_len, cfg.q_dim)
    for name, tps, _, _ in rows:
      print(f"MFU {name}: {tps * flops / (peak * jax.device_count()):.1%}")


if __name__ == "__main__":
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  main()
