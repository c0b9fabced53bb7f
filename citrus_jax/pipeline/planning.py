"""Plan mode for the whole recipe: each training step's train step compiled for the target
devices (a TPU slice via config.plan.topology, or the local ones), before paying for the pod.

  python -m citrus_jax.main --config=configs/citrus.py:llama3_1_70b --config.mode=plan \
      --config.plan.topology=v5p:4x4x8

Each step's stage config is built as the run would build it (preset, pipeline fields, the step's
overrides) and handed to train/plan.py, which compiles the LM train step at the step's batch and
sequence length. RL's preference step is planned as an LM step over chosen and rejected rows
together (2 x the pair batch at rl.max_length), GRPO's at prompts x generations rows of
max_prompt_length + max_new_tokens. Steps with identical shapes are compiled once. Without the
HF checkpoint on this host, the model preset (config.model.preset) gives the shapes.
"""
from __future__ import annotations

import importlib
import json
import os
from typing import Any

import ml_collections
from etils import epath

from citrus_jax import runtime, shipped_configs
from citrus_jax.pipeline import runner
from citrus_jax.train import plan

PLANNED = ("cpt", "sft1", "sft2", "sft3", "rl", "grpo")


def step_plan_config(config: ml_collections.ConfigDict, step: str) -> ml_collections.ConfigDict:
  """The step's stage config in plan mode, shaped like the step's real train step."""
  file = {"rl": "rl", "grpo": "grpo", "cpt": "cpt"}.get(step, "sft")
  init = {}
  hf_dir = config.init.get("hf_dir", "")
  if hf_dir and os.path.exists(os.path.join(hf_dir, "config.json")):
    init = {"hf_dir": hf_dir}
  c = runner.stage_config(importlib.import_module(f"configs.{file}"), f"{file}.py", config, step,
                          os.path.join(config.workdir, step), "", init)
  c.mode = "plan"
  c.plan = config.plan.copy_and_resolve_references()
  if step == "rl":
    c.data.seq_len = c.rl.max_length
    c.plan.batch_size = 2 * c.data.global_batch_size
  elif step == "grpo":
    c.data.global_batch_size = c.grpo.prompts_per_step * c.grpo.num_generations
    c.data.seq_len = c.grpo.max_prompt_length + c.grpo.max_new_tokens
  return c


def _shape_key(c: ml_collections.ConfigDict, cfg: Any) -> str:
  return json.dumps([str(cfg), list(c.mesh.shape), c.plan.get("batch_size") or
                     c.data.global_batch_size, c.data.seq_len, c.optim.get("grad_accum", 1),
                     c.optim.to_dict()], sort_keys=True, default=str)


def run(config: ml_collections.ConfigDict, workdir: str, devices: list[Any] | None) -> str:
  """Compiles every training step that will run; prints one block per step, writes plan.json."""
  shipped_configs.ensure_importable()
  results: dict[str, Any] = {}
  done: dict[str, str] = {}
  for step in PLANNED:
    if config.steps[step].skip:
      continue
    c = step_plan_config(config, step)
    runtime.check_config(c, len(devices) if devices else None)
    cfg = runtime.model_config_from(c)
    key = _shape_key(c, cfg)
    shape = {"batch": c.plan.get("batch_size") or c.data.global_batch_size,
             "seq_len": c.data.seq_len, "grad_accum": c.optim.get("grad_accum", 1),
             "preset": f"{step} <- configs/{'sft' if step.startswith('sft') else step}.py:"
                       f"{config.steps[step].preset}"}
    if key in done:
      results[step] = {**results[done[key]], **shape, "same_as": done[key]}
      print(f"[plan] {step}: same compiled step as {done[key]}", flush=True)
      continue
    print(f"[plan] {step}: {shape}", flush=True)
    results[step] = {**plan.checked_plan(c, cfg, devices), **shape}
    done[key] = step
    print(plan.format_plan(results[step], plan._available_bytes(devices or [], c)), flush=True)
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  (epath.Path(workdir) / "plan.json").write_text(json.dumps(results, indent=2))
  return workdir
