"""CPT stage: packed domain text, next-token loss on every non-padding token."""
from __future__ import annotations

from typing import Any

import ml_collections

from citrus_jax import multihost, runtime, tokenizer
from citrus_jax.data import pipeline, sources
from citrus_jax.train import engine, losses, steps


def load_tokenizer(config: ml_collections.ConfigDict) -> Any:
  path = config.tokenizer.get("path") or config.init.get("hf_dir")
  if not path:
    raise runtime.ConfigError("config.tokenizer.path is empty (a .model file or an HF tokenizer "
                              "directory), and there is no config.init.hf_dir to take it from")
  return tokenizer.load_tokenizer(path)


def source_kwargs(config: ml_collections.ConfigDict, skips: sources.SkipCounter) -> dict[str, Any]:
  d = config.data
  return {"kind": d.get("format", "auto"), "text_field": d.get("text_field", "text"),
          "on_error": d.get("on_error", "raise"), "skips": skips}


def build_stage(config: ml_collections.ConfigDict, cfg: Any, mesh: Any, tok: Any,
                skips: sources.SkipCounter) -> engine.Stage:
  d = config.data
  common = dict(seed=config.seed, worker_count=d.get("worker_count", 0),
                add_bos=d.get("add_bos", True), source_kwargs=source_kwargs(config, skips))
  train_common = {**common, "worker_count": 0}

  def batches(num_epochs, worker_count=0):
    return multihost.sharded_dataset(
        lambda shard, n_shards: pipeline.make_text_dataset(
            runtime.split_paths(d.train_paths), tok, d.seq_len, d.global_batch_size,
            shuffle=d.get("shuffle", True), num_epochs=num_epochs,
            process_index=shard, process_count=n_shards, **train_common),
        d.get("num_shards", 0), worker_count=worker_count)

  # Epochs -> steps: one pass over the corpus counts its packed batches (exact for 1 epoch;
  # later epochs pack a reshuffled order, and the engine stops cleanly if they run out first).
  count = lambda epochs: epochs * sum(1 for _ in batches(1))
  what = f"{d.train_paths} (packed rows of {d.seq_len})"
  num_steps, epochs = steps.resolve(config, "cpt", count, what)
  if epochs is None:  # steps given: num_epochs, when set, still caps the data (as before)
    epochs = d.get("num_epochs", 0) or None
    steps.check_capped(config, "cpt", epochs,
                       lambda: next(iter(batches(epochs)), None) is not None, what)
  train_iter = iter(batches(epochs, d.get("worker_count", 0)))
  n_eval = config.train.get("eval_batches", 4)

  def held_out_batches():
    it = pipeline.make_text_pipeline(runtime.split_paths(d.eval_paths), tok, d.seq_len,
                                     d.global_batch_size, shuffle=False, num_epochs=1,
                                     final_batch="pad", **common)
    for i, batch in enumerate(it):
      if i >= n_eval:
        break
      yield batch

  return engine.Stage(name="cpt", loss_fn=losses.lm_loss_fn(
      cfg, config.train.get("z_loss", 0.0), loss_chunk=config.train.get("loss_chunk", 0)),
                      train_iter=train_iter, num_steps=num_steps,
                      init_params=runtime.init_params_fn(config, cfg, mesh),
                      eval_batches=held_out_batches if d.get("eval_paths") else None)


def run(config: ml_collections.ConfigDict, workdir: str) -> engine.TrainResult:
  tok = load_tokenizer(config)
  cfg = runtime.model_config_from(config, vocab_size=tok.vocab_size)
  if cfg.vocab_size < tok.vocab_size:
    raise runtime.ConfigError(f"model vocab {cfg.vocab_size} < tokenizer vocab {tok.vocab_size}")
  mesh = runtime.make_mesh(config)
  skips = sources.SkipCounter()
  result = engine.train(config, cfg, build_stage(config, cfg, mesh, tok, skips), mesh, workdir)
  if skips.total():
    print(f"[cpt] skipped input records: {skips}", flush=True)
  return result
