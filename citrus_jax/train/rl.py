"""RL stage: preference optimisation (CPO+SimPO by default; DPO, IPO, ORPO) on chosen/rejected pairs.

Pairs become fixed-shape rows in the grain dataset of data/preference.py (logical shards as CPT
and SFT, `config.data.num_shards`: the global batch does not depend on the host count; seeded
shuffle; exact resume; held-out batches padded to the global batch with `row_mask`).
Losses that need a reference model (DPO, IPO) get its log-prob sums precomputed once from the
initial params and cached in the run directory, keyed by the pair files' content, the pairs'
tokens and the initial params' origin, so every step costs one policy forward and a cache made
for other pairs or another start point is recomputed, never reused.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from citrus_jax import multihost, runtime, sharding
from citrus_jax.data import preference as pref_data
from citrus_jax.data import records
from citrus_jax.train import engine, preference, steps
from citrus_jax.train.cpt import load_tokenizer


def reference_key(config: ml_collections.ConfigDict, paths: Sequence[str],
                  pairs: Sequence[pref_data.PreferencePair]) -> dict[str, Any]:
  """What a reference cache was computed from; a cache whose key differs is stale."""
  init = config.init
  origin = {"checkpoint": init.get("checkpoint", ""), "hf_dir": init.get("hf_dir", ""),
            "seed": config.seed, "preset": config.model.get("preset", "")}
  return {"files_sha256": pref_data.files_digest(paths), "pairs_sha256": pref_data.pairs_digest(
      pairs), "pairs": len(pairs), "init": origin}


def _atomic_write(path: str, write: Any) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    write(f)
  os.replace(tmp, path)


def load_reference_cache(cache_path: str, key: dict[str, Any]) -> np.ndarray | None:
  """The cached [pairs, 2] sums if `cache_path` holds them for exactly `key`, else None."""
  meta = cache_path[:-len(".npy")] + ".json"
  try:
    with open(meta) as f:
      stored = json.load(f)
    ref = np.load(cache_path)
  except (OSError, ValueError):
    return None
  if stored != key or ref.shape != (key["pairs"], 2):
    return None
  return ref


def with_reference(pairs: list[pref_data.PreferencePair], key: dict[str, Any], params: Any,
                   cfg: Any, seq_len: int, batch: int, cache_path: str, chunk: int = 0
                   ) -> list[pref_data.PreferencePair]:
  """Attaches reference log-prob sums, from the cache when it was made for these pairs and this
  start (every process must agree: the forward is a collective), else computed and cached.
  `chunk` (`train.loss_chunk`) changes the forward's memory, not the sums (beyond rounding)."""
  ref = load_reference_cache(cache_path, key)
  if multihost.process_sum([ref is None])[0]:
    ref = np.asarray(preference.precompute_reference_logprobs(
        params, pref_data.iterate_batches(pairs, batch, seq_len, shuffle=False), cfg, chunk))
    ref = ref[:len(pairs)]
    if jax.process_index() == 0:
      meta = cache_path[:-len(".npy")] + ".json"
      _atomic_write(cache_path, lambda f: np.save(f, ref))
      _atomic_write(meta, lambda f: f.write(json.dumps(key, indent=1).encode()))
    print(f"[rl] reference log-probs of {len(pairs)} pairs computed -> {cache_path}", flush=True)
  else:
    print(f"[rl] reference log-probs of {len(pairs)} pairs from {cache_path}", flush=True)
  return pref_data.attach_reference_logprobs(pairs, ref)


def _tokens_in_batch(b: dict[str, np.ndarray]) -> int:
  return int((np.asarray(b["chosen_segment_ids"]) > 0).sum()
             + (np.asarray(b["rejected_segment_ids"]) > 0).sum())


def run(config: ml_collections.ConfigDict, workdir: str) -> engine.TrainResult:
  tok = load_tokenizer(config)
  cfg = runtime.model_config_from(config, vocab_size=tok.vocab_size)
  mesh = runtime.make_mesh(config)
  rl, d = config.rl, config.data
  seq_len = rl.max_length
  load = lambda path: pref_data.load_pairs(path, tok, max_length=rl.max_length,
                                           max_prompt_length=rl.max_prompt_length,
                                           on_error=d.get("on_error", "raise"))
  train_paths = records.split_paths(d.train_paths)  # "a.jsonl,b.jsonl" or a list
  if not train_paths:
    raise runtime.ConfigError("config.data.train_paths: no preference pair files")
  pairs, stats = load(train_paths)
  print(f"[rl] {pref_data.summarize(stats)}", flush=True)
  if not pairs:
    raise runtime.ConfigError(f"config.data.train_paths: {d.train_paths}: no usable pairs")
  eval_paths = records.split_paths(d.get("eval_paths"))
  eval_pairs = load(eval_paths)[0] if eval_paths else []
  num_shards = int(d.get("num_shards", 0) or 0)
  n_shards = num_shards or jax.process_count()
  if len(pairs) < n_shards:
    raise runtime.ConfigError(f"config.data.num_shards: {n_shards} shards but only "
                              f"{len(pairs)} pairs in {d.train_paths}")

  loss_chunk = int(config.train.get("loss_chunk", 0))
  init = runtime.init_params_fn(config, cfg, mesh)
  if rl.loss in preference.NEEDS_REFERENCE:
    params0 = init(sharding.param_shardings(cfg, mesh))
    init = lambda shardings: params0
    os.makedirs(workdir, exist_ok=True)
    pairs = with_reference(pairs, reference_key(config, train_paths, pairs), params0, cfg,
                           seq_len, d.global_batch_size,
                           os.path.join(workdir, "reference_logprobs.npy"), loss_chunk)
    if eval_pairs:
      eval_pairs = with_reference(eval_pairs, reference_key(config, eval_paths, eval_pairs),
                                  params0, cfg, seq_len, d.global_batch_size,
                                  os.path.join(workdir, "reference_logprobs_eval.npy"),
                                  loss_chunk)

  num_steps, epochs = steps.resolve(
      config, "rl", lambda e: pref_data.count_batches(len(pairs), d.global_batch_size, e,
                                                      n_shards),
      f"{len(pairs)} pairs" + (f" in {n_shards} shards" if n_shards > 1 else ""))
  common = dict(seq_len=seq_len, global_batch_size=d.global_batch_size, num_shards=num_shards)
  train_iter = iter(pref_data.make_pair_dataset(pairs, seed=config.seed,
                                                shuffle=d.get("shuffle", True),
                                                num_epochs=epochs, **common))
  eval_batches = None
  if eval_pairs:
    eval_batches = lambda: iter(pref_data.make_pair_dataset(
        eval_pairs, shuffle=False, num_epochs=1, final_batch="pad", **common))
  hparams = {k: rl.get(k) for k in preference.DEFAULTS[rl.loss]}
  stage = engine.Stage(
      name=f"rl/{rl.loss}", loss_fn=preference.make_loss_fn(cfg, rl.loss, loss_chunk=loss_chunk,
                                                              **hparams),
      train_iter=train_iter, num_steps=num_steps, init_params=init,
      totals_fn=preference.preference_totals, eval_batches=eval_batches,
      tokens_in_batch=_tokens_in_batch)
  return engine.train(config, cfg, stage, mesh, workdir)
