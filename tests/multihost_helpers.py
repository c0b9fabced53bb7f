"""Shared by the multi-host tests: launch N JAX processes (8 // N CPU devices each, gloo on
loopback), and a small engine worker run as such a process.

  launch(args, processes, logdir)                    # python -m citrus_jax.main *args
  launch(args, processes, logdir, script=__file__)   # python tests/multihost_helpers.py *args

The CLI gets the coordinator as --config.distributed.* flags; a script gets the JAX_* variables
that `sharding.initialize_distributed` reads.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(args, processes, logdir, timeout=240, script=None):
  """Runs the CLI (or `script`) as `processes` JAX processes (8 // processes CPU devices each) on
  loopback; returns (returncode, stdout) per process."""
  # A compilation cache shared by the runs of one test: a resume reuses the crashed run's
  # executables (same programs, so the same numbers), which halves its start-up on 2 cores.
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={8 // processes}",
         "JAX_COMPILATION_CACHE_DIR": os.path.join(os.path.dirname(logdir), "jax_cache"),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
         "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
  for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(k, None)
  address = f"127.0.0.1:{free_port()}"
  procs, logs = [], []
  os.makedirs(logdir, exist_ok=True)
  for i in range(processes):
    out = open(os.path.join(logdir, f"process_{i}.out"), "w")
    err = open(os.path.join(logdir, f"process_{i}.err"), "w")
    penv = dict(env)
    if script is None:
      cmd = [sys.executable, "-m", "citrus_jax.main", *map(str, args)]
      if processes > 1:
        cmd += [f"--config.distributed.coordinator_address={address}",
                f"--config.distributed.num_processes={processes}",
                f"--config.distributed.process_id={i}"]
    else:
      cmd = [sys.executable, str(script), *map(str, args)]
      if processes > 1:
        penv.update(JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES=str(processes),
                    JAX_PROCESS_ID=str(i))
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=penv, stdout=out, stderr=err))
    logs.append((out, err))
  try:
    for p in procs:
      p.wait(timeout=timeout)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    for out, err in logs:
      out.close()
      err.close()
  return [(p.returncode, pathlib.Path(o.name).read_text()) for p, (o, _) in zip(procs, logs)]


def stderr_tail(logdir):
  return "\n".join(pathlib.Path(logdir, f).read_text()[-2000:]
                   for f in sorted(os.listdir(logdir)) if f.endswith(".err"))


# --- the engine worker: uneven train and held-out data across processes -----------------------

SEQ, ROWS = 32, 8


def _global_batches(n, seed):
  """n global batches of ROWS learnable rows with a different amount of padding per row, so
  the processes' halves of a batch hold different numbers of tokens."""
  import numpy as np
  rng = np.random.RandomState(seed)
  out = []
  for _ in range(n):
    start = rng.randint(0, 64, size=(ROWS, 1))
    stride = rng.randint(1, 4, size=(ROWS, 1))
    row = (start + stride * np.arange(SEQ + 1)) % 64
    seg = (np.arange(SEQ)[None] < rng.randint(4, SEQ + 1, size=(ROWS, 1))).astype(np.int32)
    out.append({"inputs": row[:, :-1].astype(np.int32), "targets": row[:, 1:].astype(np.int32),
                "positions": np.tile(np.arange(SEQ, dtype=np.int32), (ROWS, 1)),
                "segment_ids": seg, "loss_mask": seg.astype(np.float32)})
  return out


def local_batches(batches, counts, process, processes):
  """This process's rows of the first counts[process] global batches. One process reading for
  `len(counts)` gets the concatenated rows, with zero (padding) rows where a process has none."""
  import numpy as np
  if processes > 1:
    k = ROWS // processes
    return [{n: v[process * k:(process + 1) * k] for n, v in b.items()}
            for b in batches[:counts[process]]]
  k = ROWS // len(counts)
  out = []
  for i, b in enumerate(batches[:max(counts)]):
    out.append({n: np.concatenate([v[p * k:(p + 1) * k] if i < counts[p] else
                                   np.zeros_like(v[p * k:(p + 1) * k])
                                   for p in range(len(counts))]) for n, v in b.items()})
  return out


def engine_worker(workdir, train_counts, eval_counts):
  """Trains the tiny model for up to 10 steps on uneven per-process data (counts per process,
  e.g. "5,3"), with held-out loss every step; prints this process's result as JSON."""
  from citrus_jax import sharding
  sharding.initialize_distributed()
  import grain
  import jax

  from citrus_jax.model import config as mc
  from citrus_jax.train import engine, losses
  from configs import base
  train_counts = [int(x) for x in train_counts.split(",")]
  eval_counts = [int(x) for x in eval_counts.split(",")]
  p, n = jax.process_index(), jax.process_count()
  if n == 1:  # the reference reads what the processes read together, up to the shortest
    train_counts = [min(train_counts)] * len(train_counts)
  cfg = mc.get_preset("tiny", vocab_size=64)
  train = local_batches(_global_batches(max(train_counts), 0), train_counts, p, n)
  held_out = local_batches(_global_batches(max(eval_counts), 1), eval_counts, p, n)
  c = base.get_config()
  c.optim.lr, c.optim.warmup_steps = 3e-3, 2
  c.train.num_steps, c.train.log_every, c.train.eval_every = 10, 1, 1
  c.checkpoint.every, c.progress, c.tensorboard = 2, False, False
  stage = engine.Stage(name="uneven", loss_fn=losses.lm_loss_fn(cfg),
                       train_iter=iter(grain.MapDataset.source(train).to_iter_dataset()),
                       num_steps=10, init_params=engine.random_init(cfg, 0),
                       eval_batches=lambda: iter(held_out))
  result = engine.train(c, cfg, stage, sharding.make_mesh((1, -1, 1)), workdir)
  print(json.dumps({"process": p, "step": result.step, "stopped": result.stopped_early}),
        flush=True)


if __name__ == "__main__":
  if sys.argv[1] == "engine":
    sys.path.insert(0, str(ROOT))  # configs/
    engine_worker(*sys.argv[2:])
  else:
    raise SystemExit(f"unknown worker {sys.argv[1]!r}")
