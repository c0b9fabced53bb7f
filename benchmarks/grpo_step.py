"""GRPO train step: full rows against the completion window and the trimmed rows, same batch,
same model, in the same run.

  python benchmarks/grpo_step.py                 # the demo's "clinic" model, 8 prompts x 8 samples
  python benchmarks/grpo_step.py --repeats 10 --prompt_len 110 --max_new 160

The batch imitates the demo's rollouts (rollout.group): 64 rows of a ~110-token prompt and a
completion of 60-140 tokens (measured mean ~80), padded to max_prompt + max_new - 1 slots.
Variants: *full* (every slot through the output layer, the layout before the window), *window*
(`completion_slots`: the output layer on the completion's slots only, `length_bucket` 0: one
shape for the run) and *window + trim* (rows cut to the batch's longest, rounded up to
--bucket). All three give the same loss (checked here to 1e-5) and gradients (tests/test_grpo.py).
The table shows the median ms per step over --repeats after a warm-up call that compiles.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from citrus_jax.model import config as mc, transformer
from citrus_jax.rollout import group
from citrus_jax.train import grpo, step as step_lib


def rollout_batch(rows: int, prompt_len: int, max_prompt: int, max_new: int, vocab: int,
                  seed: int = 0) -> tuple[dict, list[int], list[int]]:
  rng = np.random.RandomState(seed)
  prompts = [list(rng.randint(3, vocab, size=prompt_len + rng.randint(-10, 11)))
             for _ in range(rows)]
  comps = [list(rng.randint(3, vocab, size=rng.randint(60, 141))) for _ in range(rows)]
  batch = group.completion_rows(prompts, comps, max_prompt + max_new - 1)
  batch["advantages"] = rng.randn(rows).astype(np.float32)
  return batch, [len(p) for p in prompts], [len(c) for c in comps]


def with_window(batch: dict, prompt_lens: list[int], comp_lens: list[int], width: int,
                trim_to: int = 0) -> dict:
  out = dict(batch)
  if trim_to:
    out = {k: (v[:, :trim_to] if v.ndim == 2 else v) for k, v in out.items()}
  out["completion_slots"], out["completion_mask"] = group.completion_window(
      out["loss_mask"], prompt_lens, comp_lens, width)
  return out


def time_step(cfg, batch: dict, repeats: int) -> tuple[float, float]:
  params = transformer.init_params(cfg, jax.random.key(0))
  opt = optax.adam(1e-4)
  train = jax.jit(step_lib.make_train_step(grpo.make_loss_fn(cfg, loss_type="dapo"), opt))
  state = step_lib.init_state(params, opt, 0)
  batch = jax.tree.map(jnp.asarray, batch)
  _, metrics = train(state, batch)  # compile
  loss = float(metrics["loss"])
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = train(state, batch)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t0)
  return 1000 * statistics.median(times), loss


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="clinic")
  p.add_argument("--rows", type=int, default=64)
  p.add_argument("--prompt_len", type=int, default=110)
  p.add_argument("--max_prompt", type=int, default=170)
  p.add_argument("--max_new", type=int, default=160)
  p.add_argument("--bucket", type=int, default=64)
  p.add_argument("--repeats", type=int, default=5)
  a = p.parse_args()
  cfg = mc.get_preset(a.model)
  batch, plens, clens = rollout_batch(a.rows, a.prompt_len, a.max_prompt, a.max_new,
                                      cfg.vocab_size)
  longest = max(pl + cl for pl, cl in zip(plens, clens)) - 1
  trim = min(batch["inputs"].shape[1], group.round_up(longest, a.bucket))
  width_trim = min(a.max_new, group.round_up(max(clens), a.bucket))
  variants = [("full rows", batch),
              ("window", with_window(batch, plens, clens, a.max_new)),
              (f"window + trim (bucket {a.bucket})",
               with_window(batch, plens, clens, width_trim, trim_to=trim))]
  print(f"{a.model}: {a.rows} rows, {batch['inputs'].shape[1]} slots "
        f"(trimmed: {trim}), completions {min(clens)}-{max(clens)} tokens "
        f"(mean {np.mean(clens):.0f}); jax {jax.__version__}, {jax.devices()[0].platform}")
  results = [(name, *time_step(cfg, b, a.repeats)) for name, b in variants]
  base_ms, base_loss = results[0][1], results[0][2]
  print("| layout | ms/step (median) | speed-up | loss |")
  print("|---|---|---|---|")
  for name, ms, loss in results:
    print(f"| {name} | {ms:.0f} | {base_ms / ms:.2f}x | {loss:.6f} |")
    if abs(loss - base_loss) > 1e-5 * max(1.0, abs(base_loss)):
      raise SystemExit(f"{name}: loss {loss} differs from the full rows' {base_loss}")


if __name__ == "__main__":
  main()
