"""RL stage: preference optimisation (CPO+SimPO by default; DPO, IPO, ORPO) on chosen/rejected pairs.

Pairs become fixed-shape rows in a grain dataset (seeded shuffle, host sharding, exact resume).
Losses that need a reference model (DPO, IPO) get its log-prob sums precomputed once from the
initial params and cached in the run directory, so every step costs one policy forward.
"""
from __future__ import annotations

import os
import grain
import jax
import ml_collections
import numpy as np

from citrus_jax import runtime, sharding
from citrus_jax.data import preference as pref_data
from citrus_jax.data import records
from citrus_jax.train import engine, preference, steps
from citrus_jax.train.cpt import load_tokenizer


class _PairRow:
  """A pair -> one row of a batch (picklable, for grain workers)."""

  def __init__(self, seq_len: int):
    self.seq_len = seq_len

  def __call__(self, pair: pref_data.PreferencePair) -> dict[str, np.ndarray]:
    return {k: v[0] for k, v in pref_data.make_batch([pair], self.seq_len).items()}


def pair_dataset(pairs: list[pref_data.PreferencePair], seq_len: int, global_batch: int, *,
                 seed: int, shuffle: bool = True, num_epochs: int | None = None,
                 drop_remainder: bool = True) -> grain.IterDataset:
  pi, pc = jax.process_index(), jax.process_count()
  ds = grain.MapDataset.source(pairs)[pi::pc]
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  ds = ds.map(_PairRow(seq_len)).to_iter_dataset()
  return ds.batch(global_batch // pc, drop_remainder=drop_remainder)


def _with_reference(pairs, params, cfg, seq_len, batch, cache_path):
  """Attaches reference log-prob sums, computed once and cached next to the checkpoints."""
  if os.path.exists(cache_path):
    ref = np.load(cache_path)
  else:
    batches = pref_data.iterate_batches(pairs, batch, seq_len, shuffle=False)
    ref = np.asarray(preference.precompute_reference_logprobs(params, batches, cfg))
    if jax.process_index() == 0:
      np.save(cache_path, ref)
  return pref_data.attach_reference_logprobs(pairs, ref)


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
    raise runtime.ConfigError(f"config.data.train_paths={d.train_paths}: no usable pairs")
  eval_paths = records.split_paths(d.get("eval_paths"))
  eval_pairs = load(eval_paths)[0] if eval_paths else []

  init = runtime.init_params_fn(config, cfg, mesh)
  if rl.loss in preference.NEEDS_REFERENCE:
    params0 = init(sharding.param_shardings(cfg, mesh))
    init = lambda shardings: params0
    os.makedirs(workdir, exist_ok=True)
    pairs = _with_reference(pairs, params0, cfg, seq_len, d.global_batch_size,
                            os.path.join(workdir, "reference_logprobs.npy"))
    if eval_pairs:
      eval_pairs = _with_reference(eval_pairs, params0, cfg, seq_len, d.global_batch_size,
                                   os.path.join(workdir, "reference_logprobs_eval.npy"))

  num_steps, _ = steps.resolve(
      config, "rl", lambda epochs: epochs * len(pairs) // d.global_batch_size,
      f"{len(pairs)} pairs")
  train_iter = iter(pair_dataset(pairs, seq_len, d.global_batch_size, seed=config.seed,
                                 shuffle=d.get("shuffle", True)))
  eval_batches = None
  if eval_pairs:
    eval_batches = lambda: iter(pair_dataset(eval_pairs, seq_len, d.global_batch_size,
                                             seed=0, shuffle=False, num_epochs=1,
                                             drop_remainder=False))
  hparams = {k: rl.get(k) for k in preference.DEFAULTS[rl.loss]}
  stage = engine.Stage(
      name=f"rl/{rl.loss}", loss_fn=preference.make_loss_fn(cfg, rl.loss, **hparams),
      train_iter=train_iter, num_steps=num_steps, init_params=init,
      totals_fn=preference.preference_totals, eval_batches=eval_batches,
      tokens_in_batch=lambda b: int((np.asarray(b["chosen_segment_ids"]) > 0).sum()
                                    + (np.asarray(b["rejected_segment_ids"]) > 0).sum()))
  return engine.train(config, cfg, stage, mesh, workdir)
