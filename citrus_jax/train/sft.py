"""SFT: chat data, loss on assistant tokens only, run as a chain of stages on the shared engine.

Stage i (an entry of `config.sft.stages`) runs in `<workdir>/<name>` and starts from stage
i-1's exported params (the first from `config.init`). A stage whose params export exists is
skipped, so a rerun resumes at the first unfinished stage, and that stage resumes from its own
checkpoints. Before each stage the loss-mask audit of its data is printed.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
from etils import epath

from citrus_jax import multihost, peft_io, runtime
from citrus_jax.data import sft as sft_data
from citrus_jax.train import cpt, engine, losses, steps

STAGE_FIELDS = ("name", "train_paths", "eval_paths", "lr", "num_epochs", "num_steps",
                "batch_size")


def stage_configs(config: ml_collections.ConfigDict, workdir: str
                  ) -> list[tuple[str, ml_collections.ConfigDict]]:
  """(name, full config) per stage to run: stage overrides applied, workdir and init chained."""
  stages = list(config.sft.stages)
  if not stages:
    raise runtime.ConfigError("config.sft.stages is empty; give at least one stage")
  names = [s.get("name") for s in stages]
  for i, s in enumerate(stages):
    unknown = sorted(set(s.keys()) - set(STAGE_FIELDS))
    if unknown:
      raise runtime.ConfigError(f"config.sft.stages[{i}]: unknown fields {unknown}; "
                                f"expected {STAGE_FIELDS}")
    if not names[i] or "/" in names[i] or names.count(names[i]) > 1:
      raise runtime.ConfigError(f"config.sft.stages[{i}].name={names[i]!r}: stage names must "
                                "be unique, non-empty and without '/'")
  select = runtime.split_paths(config.sft.get("select", ""))
  missing = [n for n in select if n not in names]
  if missing:
    raise runtime.ConfigError(f"config.sft.select names unknown stages {missing}; stages: {names}")
  out, prev = [], None
  for i, s in enumerate(stages):
    if select and s.name not in select:
      continue
    c = config.copy_and_resolve_references()
    c.workdir = os.path.join(workdir, s.name)
    c.data.train_paths = s.train_paths or config.data.train_paths
    c.data.eval_paths = s.eval_paths or config.data.eval_paths
    if not c.data.train_paths:
      raise runtime.ConfigError(f"config.sft.stages[{i}].train_paths ({s.name}) is empty, and "
                                "so is config.data.train_paths")
    if s.lr is not None:
      c.optim.lr = s.lr
    if s.num_epochs is not None:
      c.data.num_epochs = s.num_epochs
    if s.num_steps is not None:
      c.train.num_steps = s.num_steps
    if s.get("batch_size") is not None:
      c.data.global_batch_size = s.batch_size
    if prev is not None:
      c.init.checkpoint, c.init.hf_dir = prev, ""
    prev = c.workdir
    out.append((s.name, c))
  return out


def is_complete(stage_dir: str) -> bool:
  """A stage is done once the engine has exported its params (the next stage's start)."""
  path = epath.Path(stage_dir)  # local or gs://
  return (path / "model_config.json").exists() and (path / "params").exists()


def load_data(config: ml_collections.ConfigDict, tok: Any, paths: Any, label: str
              ) -> sft_data.SftData:
  """Reads and tokenizes a stage's data and prints its loss-mask audit."""
  d = config.data
  if d.get("format", "auto") not in sft_data.KINDS:
    raise runtime.ConfigError(f"config.data.format={d.format!r} is not an SFT format; expected "
                              f"one of {sft_data.KINDS}")
  data = sft_data.load_sft(runtime.split_paths(paths), tok, d.seq_len, kind=d.get("format", "auto"),
                           split=config.sft.get("split", "train"),
                           chat_format=config.sft.get("chat_format") or None,
                           on_error=d.get("on_error", "raise"))
  audit = data.audit.format().replace("\n", f"\n[{label}]   ")
  print(f"[{label}] loss-mask audit of {paths}:\n[{label}]   {audit}", flush=True)
  return data


def resolve_steps(config: ml_collections.ConfigDict, data: sft_data.SftData, name: str
                  ) -> tuple[int, int | None]:
  """(num_steps, pipeline epochs) by the shared rule (`train.steps.resolve`)."""
  d = config.data
  layout = "packed rows" if config.sft.get("pack", True) else "one example per row"
  count = lambda epochs: sft_data.count_batches(
      data, d.seq_len, d.global_batch_size, epochs, pack=config.sft.get("pack", True),
      seed=config.seed, shuffle=d.get("shuffle", True),
      process_count=d.get("num_shards", 0) or jax.process_count())
  return steps.resolve(
      config, name, count, f"{data.audit.examples} examples ({layout} of {d.seq_len} tokens)")


def build_stage(config: ml_collections.ConfigDict, cfg: Any, mesh: Any, tok: Any, name: str,
                data: sft_data.SftData, num_steps: int, epochs: int | None,
                eval_data: sft_data.SftData | None = None) -> engine.Stage:
  d = config.data
  common = dict(chat_format=config.sft.get("chat_format") or None,
                pack=config.sft.get("pack", True), seed=config.seed,
                worker_count=d.get("worker_count", 0))
  train_iter = iter(multihost.sharded_dataset(
      lambda shard, n_shards: sft_data.make_sft_dataset(
          data, tok, d.seq_len, d.global_batch_size, shuffle=d.get("shuffle", True),
          num_epochs=epochs, check_name=name, process_index=shard, process_count=n_shards,
          **{**common, "worker_count": 0}),
      d.get("num_shards", 0), worker_count=d.get("worker_count", 0)))
  n_eval = config.train.get("eval_batches", 4)

  def held_out_batches():
    it = sft_data.make_sft_dataset(eval_data, tok, d.seq_len, d.global_batch_size,
                                   shuffle=False, num_epochs=1, final_batch="pad",
                                   check_name=None, **common)
    for i, batch in enumerate(it):
      if i >= n_eval:
        break
      yield batch

  return engine.Stage(name=name, loss_fn=losses.lm_loss_fn(
      cfg, config.train.get("z_loss", 0.0), config.train.get("logits_fraction", 1.0),
      loss_chunk=config.train.get("loss_chunk", 0)),
                      train_iter=train_iter, num_steps=num_steps,
                      init_params=runtime.init_params_fn(config, cfg, mesh),
                      eval_batches=held_out_batches if eval_data is not None else None)


def run_stage(config: ml_collections.ConfigDict, name: str, tok: Any) -> engine.TrainResult:
  """One stage, from its resolved config (see `stage_configs`)."""
  runtime.check_config(config)
  data = load_data(config, tok, config.data.train_paths, name)
  eval_data = (load_data(config, tok, config.data.eval_paths, f"{name} eval")
               if config.data.get("eval_paths") else None)
  num_steps, epochs = resolve_steps(config, data, name)
  config.train.num_steps = num_steps  # recorded in the stage's config.json
  init = config.init
  print(f"[{name}] starts from "
        + (f"the params in {init.checkpoint}" if init.get("checkpoint") else
           f"the HF checkpoint {init.hf_dir}" if init.get("hf_dir") else "random init")
        + f" (unless resuming in {config.workdir})", flush=True)
  cfg = runtime.model_config_from(config, vocab_size=tok.vocab_size)
  if cfg.vocab_size < tok.vocab_size:
    raise runtime.ConfigError(f"model vocab {cfg.vocab_size} < tokenizer vocab {tok.vocab_size}")
  mesh = runtime.make_mesh(config)
  runtime.save_resolved_config(config, config.workdir)
  if jax.process_index() == 0:
    (epath.Path(config.workdir) / "data_audit.json").write_text(
        json.dumps(data.audit.as_dict(), indent=2))
  stage = build_stage(config, cfg, mesh, tok, name, data, num_steps, epochs, eval_data)
  return engine.train(config, cfg, stage, mesh, config.workdir)


def inspect(stages: list[tuple[str, ml_collections.ConfigDict]], tok: Any) -> None:
  """Rendered examples with trained spans marked, the audit and the step count; no training."""
  for name, c in stages:
    data = load_data(c, tok, c.data.train_paths, name)
    n = int(c.sft.get("inspect_examples", 3))
    print(f"[{name}] first {min(n, data.audit.examples)} examples as trained (trained spans "
          "marked):", flush=True)
    print(sft_data.show_examples(data, tok, c.data.seq_len, n,
                                 chat_format=c.sft.get("chat_format") or None), flush=True)
    if c.train.num_steps > 0 or c.data.get("num_epochs", 0) > 0:
      resolve_steps(c, data, name)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, engine.TrainResult | None]:
  """Runs (or inspects) the SFT stages in order; returns each stage's result (None: skipped)."""
  tok = cpt.load_tokenizer(config)
  stages = stage_configs(config, workdir)
  if config.get("mode", "train") == "inspect":
    inspect(stages, tok)
    return {}
  results: dict[str, engine.TrainResult | None] = {}
  for name, c in stages:
    if is_complete(c.workdir):
      print(f"[{name}] already complete ({c.workdir}/params), skipping", flush=True)
      results[name] = None
      continue
    result = run_stage(c, name, tok)
    results[name] = result
    if result.stopped_early not in (None, "data exhausted"):
      print(f"[{name}] stopped early ({result.stopped_early}); later stages not run", flush=True)
      break
  if jax.process_index() == 0:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    done = [{"name": n, "workdir": c.workdir, "complete": is_complete(c.workdir)}
            for n, c in stages]
    (epath.Path(workdir) / "sft_stages.json").write_text(
        json.dumps({"stages": done, "final": stages[-1][1].workdir}, indent=2))
  final = stages[-1][1].workdir
  export = os.path.join(workdir, "export")  # LoRA: export/{peft,base,merged} of the last stage
  if (engine.lora_config(config) is not None and is_complete(final)
      and (any(results.values()) or not os.path.exists(os.path.join(export, "merged")))):
    paths = peft_io.export_stage(final, export, tokenizer=tok, mesh=runtime.make_mesh(config))
    print(f"[sft] LoRA export: PEFT adapter {paths['peft']}, HF base {paths['base']}, merged HF "
          f"{paths['merged']}", flush=True)
  return results
