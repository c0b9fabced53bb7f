"""Where a pipeline's data comes from (`config.pipeline.source`), and the steps' inputs.

  files         the user's files, named in the config (configs/citrus.py's paper presets)
  tiny          small generated stand-ins and a tiny random HF model (configs/citrus.py:tiny)
  clinic_world  the shipped clinical world and a tokenizer trained on it (configs/demo.py)

A source's data step may produce files; `inputs` then maps them to the steps' roles, and a path
set in the config for a step always wins over the source's.
"""
from __future__ import annotations

import os
from typing import Any

import ml_collections

from citrus_jax import runtime, tiny_data, tokenizer
from citrus_jax.pipeline import clinic, runner
from citrus_jax.runtime import ConfigError

SOURCES = ("files", "tiny", "clinic_world")
# role -> the config field a user sets for it
ROLE_FIELDS = {"cpt": "steps.cpt.train_paths", "sft1": "steps.sft1.train_paths",
               "sft2": "steps.sft2.train_paths", "sft3": "steps.sft3.train_paths",
               "questions": "steps.rejection.questions", "hf_dir": "init.hf_dir",
               "tokenizer": "tokenizer.path"}


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
  node = config
  for part in dotted.split("."):
    node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
  return node


def prepare(config: ml_collections.ConfigDict, step_dir: str) -> dict[str, Any]:
  """The data step: generates the source's files (tiny, clinic_world) or records the user's."""
  source = config.pipeline.source
  runner.save_config({"pipeline": config.pipeline.to_dict(), "seed": config.seed,
                      "given": {role: _get(config, f) for role, f in ROLE_FIELDS.items()}},
                     step_dir)
  if source == "clinic_world":
    return clinic.step_data(config, step_dir)
  if source == "tiny":
    paths = tiny_data.write_files(step_dir, seed=config.seed)
    paths.update(tiny_data.write_model(step_dir, [paths[k] for k in ("cpt", "sft1", "sft2",
                                                                     "sft3")], seed=config.seed))
    return {"paths": paths}
  if source != "files":
    raise ConfigError(f"config.pipeline.source={source!r}: expected one of {SOURCES}")
  return {"paths": {}}


def inputs(config: ml_collections.ConfigDict, data: dict[str, Any]) -> dict[str, Any]:
  """Paths per role: the config's, else the source's. Missing inputs of steps that will run
  and local paths that do not exist are one ConfigError listing each field."""
  if config.pipeline.source == "clinic_world":
    given = clinic.inputs(config, data)
  elif config.pipeline.source == "tiny":
    p = data["paths"]
    given = {"cpt": p["cpt"], "sft1": p["sft1"], "sft2": p["sft2"], "sft3": p["sft3"],
             "questions": p["questions"], "eval_dir": p["eval_dir"], "hf_dir": p["hf_dir"]}
  else:
    given = {}
  out = dict(given)
  for role, field in ROLE_FIELDS.items():
    if _get(config, field):
      out[role] = _get(config, field)
  ev = config.steps.eval
  if ev.get("data_paths") or ev.get("data_dir"):
    out.update(eval_paths=ev.get("data_paths", ""), eval_dir=ev.get("data_dir", ""),
               eval_benchmarks=ev.get("benchmarks", ""))
  elif ev.get("benchmarks"):
    out["eval_benchmarks"] = ev.benchmarks
  problems = []
  needs = {"cpt": ("cpt",), "sft1": ("sft1",), "sft2": ("sft2",), "sft3": ("sft3",),
           "rejection": ("questions",)}
  for step, roles in needs.items():
    if config.steps[step].skip:
      continue
    for role in roles:
      if not out.get(role):
        problems.append(f"config.{ROLE_FIELDS[role]}: empty, and step {step!r} needs it (or "
                        f"--config.steps.{step}.skip=True)")
  if config.steps.grpo.skip is False and not (config.steps.grpo.get("train_paths")
                                              or out.get("questions")):
    problems.append("config.steps.grpo.train_paths: empty, and so is "
                    "config.steps.rejection.questions")
  if not config.steps.eval.skip and not (out.get("eval_paths") or out.get("eval_dir")):
    problems.append("config.steps.eval.data_paths: empty, and so is config.steps.eval.data_dir "
                    "(or --config.steps.eval.skip=True)")
  for role, value in out.items():
    field = ROLE_FIELDS.get(role, f"steps.eval.{'data_dir' if role == 'eval_dir' else 'data_paths'}")
    if role == "eval_benchmarks" or not value:
      continue
    for path in runtime.split_paths(value):
      if "://" not in path and not any(c in path for c in "*?[") and not os.path.exists(path):
        problems.append(f"config.{field}: {path} does not exist")
  if problems:
    raise ConfigError("\n".join(problems))
  return out


def tokenizer_step(config: ml_collections.ConfigDict, step_dir: str, data: dict[str, Any],
                   found: dict[str, Any]) -> dict[str, Any]:
  """The tokenizer every step uses: trained on the world (clinic_world), else config.tokenizer.path
  or the starting HF checkpoint's."""
  if config.pipeline.source == "clinic_world":
    return clinic.step_tokenizer(config, step_dir, data["paths"])
  path = found.get("tokenizer") or found.get("hf_dir")
  if not path:
    raise ConfigError("config.tokenizer.path: empty, and so is config.init.hf_dir (whose "
                      "tokenizer the steps would use)")
  runner.save_config({"tokenizer": path}, step_dir)
  return {"model": path, "vocab_size": tokenizer.load_tokenizer(path).vocab_size}
