"""LoRA vs full fine-tuning: train-step time and memory, and plan-mode memory for big models.

  python benchmarks/lora_step.py                  # demo model on this CPU: full / LoRA / QLoRA
  python benchmarks/lora_step.py --preset=clinic --batch=8 --seq_len=256 --rank=8
  python benchmarks/lora_step.py --plan --preset=llama3_1_70b --seq_len=8192 --batch=4 \
      --grad_accum=4 --topology=v5p:2x2x1 --param_dtype=bfloat16   # needs libtpu
  python benchmarks/lora_step.py --plan --preset=llama3_1_70b ... --devices=8   # CPU compile

Every variant is the engine's own step (forward + backward + AdamW + the non-finite guard):
full fine-tuning = `train.step.make_train_step` on all params; LoRA / QLoRA = `lora.train_step`
(gradients and AdamW moments for the adapters only; the base a frozen jit argument, bf16/fp32
as --param_dtype or quantised int8/NF4). Times are medians over --steps after --warmup (compile
excluded, reported apart). Memory: bytes of what the step keeps between steps (params + AdamW
state, base + adapters + their state), and the compiled step's temporaries and peak from XLA's
memory analysis (per device). --plan compiles only, on abstract inputs: nothing is allocated.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from citrus_jax import sharding
from citrus_jax.model import config as mc, lora, quant, transformer
from citrus_jax.train import losses, optim
from citrus_jax.train.step import init_state, make_train_step, state_shardings

GIB = 2 ** 30
MIB = 2 ** 20


def _batch_shapes(b: int, t: int, mesh: Any) -> dict[str, jax.ShapeDtypeStruct]:
  sh = sharding.batch_sharding(mesh)
  return {k: jax.ShapeDtypeStruct((b, t), jnp.float32 if k == "loss_mask" else jnp.int32,
                                  sharding=sh)
          for k in ("inputs", "targets", "positions", "segment_ids", "loss_mask")}


def _batch(b: int, t: int, vocab: int) -> dict[str, np.ndarray]:
  rng = np.random.RandomState(0)
  row = rng.randint(0, vocab, size=(b, t + 1)).astype(np.int32)
  return {"inputs": row[:, :-1], "targets": row[:, 1:],
          "positions": np.tile(np.arange(t, dtype=np.int32), (b, 1)),
          "segment_ids": np.ones((b, t), np.int32), "loss_mask": np.ones((b, t), np.float32)}


def _bytes(tree: Any, shardings: Any = None) -> int:
  """Per-device bytes of a tree (all of it without shardings)."""
  leaves = jax.tree.leaves(tree)
  shs = jax.tree.leaves(shardings) if shardings is not None else [None] * len(leaves)
  total = 0
  for a, s in zip(leaves, shs):
    shape = s.shard_shape(a.shape) if s is not None else a.shape
    total += int(np.prod(shape)) * jnp.dtype(a.dtype).itemsize
  return total


def build(variant: str, cfg: mc.ModelConfig, mesh: Any, args: argparse.Namespace):
  """(jitted step, abstract args, their shardings, bytes kept between steps per device)."""
  ocfg = ml_collections.ConfigDict(dict(lr=1e-4, schedule="constant", warmup_frac=0.0,
                                        weight_decay=0.0, grad_clip=1.0))
  optimizer, _ = optim.make_optimizer(ocfg, 100)
  loss_fn = losses.lm_loss_fn(cfg)
  if variant == "full":
    abstract = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
    state = jax.eval_shape(lambda p: init_state(p, optimizer, 0), abstract)
    st_sh = state_shardings(state, sharding.param_shardings(cfg, mesh), mesh)
    step = optim.guard_step(make_train_step(loss_fn, optimizer, grad_accum=args.grad_accum))
    fn = jax.jit(step, in_shardings=(st_sh, None), out_shardings=(st_sh, None),
                 donate_argnums=0)
    return fn, (state,), (st_sh,), _bytes(state, st_sh)
  lcfg = lora.LoraConfig(rank=args.rank, alpha=2.0 * args.rank,
                         quant="none" if variant == "lora" else variant.split("-")[1])
  ad, base = lora.abstract_params(cfg, lcfg)
  state = jax.eval_shape(lambda p: init_state(p, optimizer, 0), ad)
  st_sh = state_shardings(state, lora.shardings_like(ad, cfg, mesh), mesh)
  base_sh = lora.shardings_like(base, cfg, mesh)
  step = lora.train_step(loss_fn, optimizer, lcfg, grad_accum=args.grad_accum)
  fn = jax.jit(step, in_shardings=(st_sh, None, base_sh), out_shardings=(st_sh, None),
               donate_argnums=0)
  return fn, (state, base), (st_sh, base_sh), _bytes(state, st_sh) + _bytes(base, base_sh)


def _random_like(abstract: Any, shardings: Any, seed: int = 0) -> Any:
  """Random arrays of an abstract params tree made on device in their final (quantised)
  form: a 70B QLoRA base on one GPU without ever holding its bf16 weights. Norms are ones,
  quantised kernels random codes with a block absmax of 0.05 (NF4) / 0.05/127 (int8 step), other
  floats normal(0.02): the numbers are meaningless, the shapes and the work are the real ones."""
  def make(path, a, key):
    name = jax.tree_util.keystr(path)
    if jnp.issubdtype(a.dtype, jnp.integer):
      return jax.random.bits(key, a.shape, jnp.uint8).astype(a.dtype)
    if name.endswith("['scale']"):
      return jnp.full(a.shape, 0.05, a.dtype)
    if "norm" in name:
      return jnp.ones(a.shape, a.dtype)
    return (0.02 * jax.random.normal(key, a.shape, jnp.float32)).astype(a.dtype)

  def build():
    flat, treedef = jax.tree.flatten_with_path(abstract)
    keys = jax.random.split(jax.random.key(seed), len(flat))
    return jax.tree.unflatten(treedef, [make(p, a, k) for (p, a), k in zip(flat, keys)])
  return jax.jit(build, out_shardings=shardings)()


def _concrete(abstract: Any, shardings: Any, cfg: mc.ModelConfig, variant: str, rank: int,
              random_base: bool = False):
  """Real arrays for a timing run (random init, base quantised as the variant says)."""
  ocfg = ml_collections.ConfigDict(dict(lr=1e-4, schedule="constant", warmup_frac=0.0,
                                        weight_decay=0.0, grad_clip=1.0))
  optimizer, _ = optim.make_optimizer(ocfg, 100)
  if random_base and variant != "full":
    ad = jax.jit(lambda: lora.init_adapters(cfg, lora.LoraConfig(rank=rank, alpha=2.0 * rank),
                                            jax.random.key(1)), out_shardings=shardings[0].params)()
    state = jax.jit(lambda p: init_state(p, optimizer, 0), out_shardings=shardings[0])(ad)
    return state, _random_like(abstract[1], shardings[1])
  params = transformer.init_params(cfg, jax.random.key(0))
  if variant == "full":
    return (jax.device_put(init_state(params, optimizer, 0), shardings[0]),)
  lcfg = lora.LoraConfig(rank=rank, alpha=2.0 * rank,
                         quant="none" if variant == "lora" else variant.split("-")[1])
  base = lora.quantize_base(params, lcfg)
  ad = lora.init_adapters(cfg, lcfg, jax.random.key(1))
  return (jax.device_put(init_state(ad, optimizer, 0), shardings[0]),
          jax.device_put(base, shardings[1]))


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
  cfg = mc.get_preset(args.preset, param_dtype=args.param_dtype,
                      compute_dtype=args.compute_dtype, remat=args.remat,
                      attention=args.attention)
  devices = jax.devices()[:args.devices] if args.devices else jax.devices()
  if args.topology:
    from citrus_jax.train import plan
    devices = plan.topology_devices(args.topology)
  mesh = sharding.make_mesh(tuple(args.mesh), devices=devices)
  rows = []
  for variant in args.variants.split(","):
    fn, abstract, shardings, kept = build(variant, cfg, mesh, args)
    batch_abs = _batch_shapes(args.batch, args.seq_len, mesh)
    t0 = time.perf_counter()
    from citrus_jax.train import plan
    attention_fn = plan.splash_or_einsum if args.splash else None
    try:
      with jax.set_mesh(mesh), plan.attention_override(attention_fn):
        compiled = fn.lower(*abstract[:1], batch_abs, *abstract[1:]).compile()
    except Exception as e:  # pylint: disable=broad-except  # RESOURCE_EXHAUSTED: a row too
      if "RESOURCE_EXHAUSTED" not in str(e):
        raise
      print(f"| {variant} | - | {kept / GIB:.2f} GiB | does not fit: "
            f"{str(e).splitlines()[0][:160]} | - | {time.perf_counter() - t0:.1f} s |", flush=True)
      continue
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    row = {"variant": variant, "kept_bytes": kept, "compile_s": compile_s,
           "temp_bytes": int(mem.temp_size_in_bytes) if mem else None,
           # XLA:CPU's peak_memory_in_bytes counts the arguments only; there (and where the
           # field is missing) the peak is taken as arguments + temporaries, as plan.py does.
           "peak_bytes": (int((devices[0].platform != "cpu"
                               and getattr(mem, "peak_memory_in_bytes", 0))
                              or mem.argument_size_in_bytes + mem.temp_size_in_bytes)
                          if mem else None),
           "trainable": lora.count(abstract[0].params), "devices": len(devices),
           "device_kind": getattr(devices[0], "device_kind", "?")}
    if not args.plan:
      state_and_base = _concrete(abstract, shardings, cfg, variant, args.rank,
                                 args.random_base)
      batch = jax.device_put(_batch(args.batch, args.seq_len, cfg.vocab_size),
                             sharding.batch_sharding(mesh))
      state, rest = state_and_base[0], state_and_base[1:]
      times = []
      with jax.set_mesh(mesh):
        for i in range(args.warmup + args.steps):
          t = time.perf_counter()
          state, metrics = compiled(state, batch, *rest)
          jax.block_until_ready(metrics["loss"])
          if i >= args.warmup:
            times.append(time.perf_counter() - t)
      row["step_s"] = statistics.median(times)
      row["tokens_per_s"] = args.batch * args.seq_len / row["step_s"]
      row["loss"] = float(metrics["loss"])
    rows.append(row)
    print(_fmt(row, args.plan), flush=True)
  return rows


def _fmt(r: dict[str, Any], plan_only: bool) -> str:
  unit, name = (GIB, "GiB") if plan_only else (MIB, "MiB")
  s = (f"| {r['variant']} | {r['trainable']:,} | {r['kept_bytes'] / unit:.2f} {name} | "
       f"{(r['temp_bytes'] or 0) / unit:.2f} {name} | {(r['peak_bytes'] or 0) / unit:.2f} {name} | "
       f"{r['compile_s']:.1f} s |")
  if not plan_only:
    s += f" {r['step_s'] * 1e3:.1f} ms | {r['tokens_per_s']:,.0f} |"
  return s


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--preset", default="demo")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq_len", type=int, default=256)
  p.add_argument("--rank", type=int, default=8)
  p.add_argument("--grad_accum", type=int, default=1)
  p.add_argument("--param_dtype", default="float32")
  p.add_argument("--compute_dtype", default="float32")
  p.add_argument("--remat", default="none")
  p.add_argument("--attention", default="einsum", help="einsum | xla | cudnn | auto")
  p.add_argument("--mesh", type=int, nargs=3, default=(1, -1, 1))
  p.add_argument("--devices", type=int, default=0, help="use the first N local devices")
  p.add_argument("--topology", default="", help="a TPU slice for an AOT compile (libtpu)")
  p.add_argument("--variants", default="full,lora,lora-int8,lora-nf4")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--plan", action="store_true", help="compile only (abstract inputs)")
  p.add_argument("--splash", action="store_true",
                 help="TPU: the Pallas splash kernel in place of einsum attention "
                      "(plan.splash_or_einsum, as launch/plan_table.py --attention=splash)")
  p.add_argument("--random_base", action="store_true",
                 help="LoRA variants: make the (quantised) base directly at random on device "
                      "(big models: no float copy; meaningless numbers, real work)")
  args = p.parse_args(argv)
  print(f"# {args.preset}, batch {args.batch} x {args.seq_len} tokens, rank {args.rank}, "
        f"params {args.param_dtype}, compute {args.compute_dtype}, remat {args.remat}, "
        f"attention {'splash' if args.splash else args.attention}, "
        f"grad_accum {args.grad_accum}, mesh {tuple(args.mesh)}, "
        f"{args.topology or jax.default_backend()}; jax {jax.__version__}")
  head = "| variant | trainable params | params + opt state kept | step temporaries | peak | compile |"
  if not args.plan:
    head += " step | tokens/s |"
  print(head)
  print("|" + "---|" * (head.count("|") - 1))
  run(args)


if __name__ == "__main__":
  main()
