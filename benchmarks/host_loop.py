"""Host loop: steps/s of the whole training loop (engine.train) with the asynchronous host loop
(metrics read every `log_every` steps, the next step dispatched first) against the per-step read
it replaced (`train.async_host=False`), same model and batches, in the same run.

  python benchmarks/host_loop.py                          # demo's "clinic" model, batch 8 x 256
  python benchmarks/host_loop.py --model=tiny --seq_len=32  # a small, fast step: host cost shows

Each variant runs --repeats times (alternating, after one warm-up run that pays compilation);
the table shows the median steps/s and the ratio. Checkpointing and TensorBoard are off in both,
so what differs is only when the host waits for the device.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import grain
import jax
import numpy as np

from citrus_jax import sharding
from citrus_jax.model import config as mc
from citrus_jax.train import engine, losses
from citrus_jax.configs import base


def _batches(n: int, b: int, t: int, vocab: int) -> list[dict[str, np.ndarray]]:
  rng = np.random.RandomState(0)
  out = []
  for _ in range(n):
    row = rng.randint(0, vocab, size=(b, t + 1)).astype(np.int32)
    out.append({"inputs": row[:, :-1], "targets": row[:, 1:],
                "positions": np.tile(np.arange(t, dtype=np.int32), (b, 1)),
                "segment_ids": np.ones((b, t), np.int32), "loss_mask": np.ones((b, t), np.float32)})
  return out


def run_once(cfg: mc.ModelConfig, data, steps: int, async_host: bool, log_every: int) -> float:
  config = base.get_config()
  config.train.num_steps = steps
  config.train.log_every = log_every
  config.train.async_host = async_host
  config.checkpoint.every = 10 ** 9
  config.tensorboard = False
  config.progress = False
  mesh = sharding.make_mesh((1, -1, 1))
  stage = engine.Stage(name="bench", loss_fn=losses.lm_loss_fn(cfg),
                       train_iter=iter(grain.MapDataset.source(data).to_iter_dataset()),
                       num_steps=steps, init_params=engine.random_init(cfg, 0))
  with tempfile.TemporaryDirectory() as workdir:
    t0 = time.perf_counter()
    engine.train(config, cfg, stage, mesh, os.path.join(workdir, "run"))
    return steps / (time.perf_counter() - t0)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="clinic")
  p.add_argument("--vocab", type=int, default=4096)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq_len", type=int, default=256)
  p.add_argument("--steps", type=int, default=60)
  p.add_argument("--log_every", type=int, default=10)
  p.add_argument("--repeats", type=int, default=3)
  a = p.parse_args()
  cfg = mc.get_preset(a.model, vocab_size=a.vocab)
  data = _batches(a.steps, a.batch, a.seq_len, a.vocab)
  run_once(cfg, data, min(a.steps, 5), True, a.log_every)  # compile + caches, not timed
  runs: dict[bool, list[float]] = {True: [], False: []}
  for _ in range(a.repeats):
    for async_host in (False, True):
      runs[async_host].append(run_once(cfg, data, a.steps, async_host, a.log_every))
  sync, asyn = statistics.median(runs[False]), statistics.median(runs[True])
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, model={a.model} "
        f"batch={a.batch} seq={a.seq_len} steps={a.steps} log_every={a.log_every} "
        f"(whole engine.train loop incl. checkpoint-free save logic; median of {a.repeats})")
  print("| host loop | steps/s (median) | runs |")
  print("|---|---|---|")
  print(f"| per-step metrics read (async_host=False) | {sync:.2f} | "
        f"{', '.join(f'{r:.2f}' for r in runs[False])} |")
  print(f"| asynchronous (read every {a.log_every}) | {asyn:.2f} | "
        f"{', '.join(f'{r:.2f}' for r in runs[True])} |")
  print(f"| ratio | {asyn / sync:.2f}x | |")


if __name__ == "__main__":
  main()
