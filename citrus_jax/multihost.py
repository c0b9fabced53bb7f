"""Several processes (hosts): logical data shards, and host arrays <-> global arrays.

Logical data shards: the global batch does not depend on how many hosts read it.

The documents are split into `num_shards` shards (`source[s::num_shards]`), each packed and
batched on its own into `global_batch // num_shards` rows. Process p reads the contiguous block
of shards `[p*k, (p+1)*k)`, k = num_shards // process_count, and hands the engine their batches
concatenated in shard order, so global row r always comes from the same shard:

    2 hosts, num_shards=2:  host 0 -> shard 0 rows | host 1 -> shard 1 rows
    1 host,  num_shards=2:  host 0 -> shard 0 rows + shard 1 rows      (same global batch)

With `num_shards` left at 0 (one shard per process) this is exactly the per-process pipeline.
Fixing it (e.g. to the largest process count you will use) makes a 1-host debug run see the
same batches as the pod run, which is how tests/test_multihost.py checks multi-host training
against a single process. Each process checkpoints the iterator states of its own shards.

Generation and evaluation hold the SAME small host arrays (prompts, option pairs) on every
process: `global_array` turns one into a global array on a mesh spanning all processes, each
process filling only its own devices' shards, and `to_host` brings a result back whole to every
process. On one process both are plain `device_put` / `device_get`. `process_sum` is the tiny
all-gather by which processes agree on when to stop (SIGTERM, a host out of data).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import grain
import jax
from jax.experimental import multihost_utils
import numpy as np

MakeShard = Callable[[int, int], grain.IterDataset]


def shard_block(num_shards: int, process_index: int, process_count: int) -> range:
  """The logical shards process `process_index` reads (0 shards: one per process)."""
  num_shards = num_shards or process_count
  if num_shards % process_count:
    raise ValueError(f"config.data.num_shards={num_shards} is not a multiple of the "
                     f"{process_count} processes")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  k = num_shards // process_count
  return range(process_index * k, (process_index + 1) * k)


def shard_records(source: Any, shard: int, num_shards: int, *, seed: int = 0,
                  shuffle: bool = True, num_epochs: int | None = None) -> grain.MapDataset:
  """Records `source[shard::num_shards]`, shuffled with `seed` (re-seeded each epoch by the
  repeat) and repeated `num_epochs` times (None: forever): the record order a shard's rows are
  made from (preference pairs here; CPT/SFT packing does the same in data/pipeline.py)."""
  if not 0 <= shard < num_shards:
    raise ValueError(f"shard {shard} not in [0, {num_shards})")
  ds = grain.MapDataset.source(source)[shard::num_shards]
  if len(ds) == 0:
    raise ValueError(f"shard {shard} of {num_shards} got no records ({len(source)} in total); "
                     "lower config.data.num_shards or add data")
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  return ds


class ConcatRows:
  """A tuple of batch dicts -> one batch dict, rows in tuple order (picklable)."""

  def __call__(self, batches: tuple[dict[str, np.ndarray], ...]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def sharded_dataset(make_shard: MakeShard, num_shards: int = 0, *, worker_count: int = 0,
                    process_index: int | None = None,
                    process_count: int | None = None) -> grain.IterDataset:
  """This process's batches: `make_shard(shard, num_shards)` per shard, zipped and concatenated.

  `make_shard(i, n)` must build the shard's batches with `process_index=i, process_count=n`
  (its local batch is then global // n rows) and without worker processes; `worker_count`
  worker processes are added here, once, around the whole thing. The zip stops at the shortest
  shard, so a finite epoch ends at the same step on every shard.
  """
  if process_index is None or process_count is None:
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  block = shard_block(num_shards, process_index, process_count)
  n = num_shards or process_count
  shards = [make_shard(s, n) for s in block]
  ds = shards[0] if len(shards) == 1 else (
      grain.experimental.ZipIterDataset(shards, strict=False).map(ConcatRows()))
  if worker_count > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                     per_worker_buffer_size=2))
  return ds


def global_array(x: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """A host array that every process holds identically -> a global array laid out by `sharding`.

  Each process copies only the slices its own devices hold (no cross-process check or
  transfer); on one process this is `jax.device_put`."""
  if sharding.is_fully_addressable:
    return jax.device_put(x, sharding)
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_host(tree: Any) -> Any:
  """numpy values of a pytree of (possibly multi-process) arrays, whole on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)

  def fetch(x: Any) -> Any:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return multihost_utils.process_allgather(x, tiled=True)  # the global value
    return jax.device_get(x)
  return jax.tree.map(fetch, tree)


def process_sum(values: Sequence[float]) -> np.ndarray:
  """Element-wise sum of a small vector over all processes (bools count as 0/1), the same on
  every process, so all take the same branch before the next collective. Values travel as
  float32 (exact for counts below 2**24 per process). One tiny all-gather; none on one process."""
  x = np.asarray(values, np.float64)
  if jax.process_count() == 1:
    return x
  return multihost_utils.process_allgather(x.astype(np.float32)).astype(np.float64).sum(axis=0)
