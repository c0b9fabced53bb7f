"""What a checkpoint path points at: a run dir, a stage dir, a params dir or an HF dir.

Every tool that takes a model (serve, synth's local backend, eval, `hf_cli export`, rejection
sampling) resolves its path here, so all of them accept the same four layouts and say in one line
which they found:

  hf      a transformers checkpoint: config.json WITH model_type/architectures + safetensors.
  params  `params/` + `model_config.json` (train/checkpoint.save_params, `hf_cli import`).
  stage   a training stage's workdir: its resolved config.json (an ml_collections dump, NOT an HF
          config: the file name is why `serve --checkpoint <run>` used to fail with "field
          'model_type' = None is not supported"), checkpoints/<step>/, and, once finished,
          params/ + model_config.json. An unfinished stage is read from its latest checkpoint,
          its model config rebuilt from the stage's config.json.
  run     a directory of stages (the pipeline's run dir, an SFT run with sft1..sft3): its last
          finished stage in recipe order (cpt < sft1 < sft2 < sft3 < rl < grpo), found up to two
          levels down; an HF export inside it is used only when it holds no stage.
Local paths only (object-store run dirs: copy the stage's params dir first).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import ml_collections

from citrus_jax import hf, model_source, sharding
from citrus_jax.tokenizer import load_tokenizer
from citrus_jax.train import checkpoint as ckpt

# Recipe order of stage directory names (lowercase, non-alphanumerics removed).
STAGE_ORDER = ("init", "base", "import", "cpt", "sft1", "sft2", "sft3", "sft", "rl", "cpo",
               "simpo", "cposimpo", "dpo", "grpo")
_SKIP = {"checkpoints", "params", "tensorboard", "logs", "eval", "tokenizer", "data"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


class CheckpointPathError(ValueError):
  """A path that is none of the four layouts (the message says what it holds instead)."""


@dataclasses.dataclass(frozen=True)
class Resolved:
  """A resolved checkpoint path.

  kind: what `path` is (hf | params | stage | run); fmt: how to load `load_dir` (hf: safetensors;
  params: params/ + model_config.json; checkpoint: an unfinished stage's latest checkpoint).
  """
  path: str
  kind: str
  load_dir: str
  fmt: str
  stage: str = ""
  step: int | None = None
  tokenizer: str | None = None  # a tokenizer path found next to the weights, if any

  def describe(self) -> str:
    """The one log line every loader prints."""
    what = {"hf": "a Hugging Face checkpoint dir", "params": "a citrus_jax params dir",
            "stage": "a training stage dir", "run": "a run dir"}[self.kind]
    how = {"hf": "HF safetensors", "params": "params/ + model_config.json",
           "checkpoint": f"its latest checkpoint (step {self.step}; the stage has not finished)"
           }[self.fmt]
    step = f", step {self.step}" if self.step is not None and self.fmt != "checkpoint" else ""
    if self.kind == "run":
      last = "its HF export" if self.fmt == "hf" else "its last finished stage" if \
          self.fmt == "params" else "its last stage (unfinished)"
      where, stage = f", using {last} {self.stage} ({self.load_dir}{step})", ""
    else:
      where = "" if self.load_dir == self.path else f", using {self.load_dir}"
      stage = f" (stage {self.stage}{step})" if self.stage else ""
    tok = f"; tokenizer {self.tokenizer}" if self.tokenizer else ""
    return f"[checkpoint] {self.path}: {what}{where}{stage}, loading {how}{tok}"


def _read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return None


def _is_hf_config(obj: Any) -> bool:
  return isinstance(obj, dict) and ("model_type" in obj or "architectures" in obj)


def _has_hf_weights(d: str) -> bool:
  return (os.path.isfile(os.path.join(d, "model.safetensors")) or
          os.path.isfile(os.path.join(d, "model.safetensors.index.json")))


def is_hf_dir(d: str) -> bool:
  return _is_hf_config(_read_json(os.path.join(d, "config.json"))) and _has_hf_weights(d)


def is_params_dir(d: str) -> bool:
  return (os.path.isfile(os.path.join(d, "model_config.json")) and
          os.path.isdir(os.path.join(d, "params")))


def checkpoint_steps(d: str) -> list[int]:
  """Saved steps under `d/checkpoints` (Orbax step dirs, names that are integers)."""
  ckpt = os.path.join(d, "checkpoints")
  if not os.path.isdir(ckpt):
    return []
  return sorted(int(n) for n in os.listdir(ckpt)
                if n.isdigit() and os.path.isdir(os.path.join(ckpt, n)))


def _stage_config(d: str) -> dict | None:
  """A stage's resolved ml_collections config (config.json that is not an HF config)."""
  obj = _read_json(os.path.join(d, "config.json"))
  return obj if isinstance(obj, dict) and not _is_hf_config(obj) else None


def is_stage_dir(d: str) -> bool:
  return bool(checkpoint_steps(d)) or (is_params_dir(d) and _stage_config(d) is not None)


def _norm(name: str) -> str:
  return re.sub(r"[^a-z0-9]", "", name.lower())


def _existing(path: Any) -> str | None:
  return path if isinstance(path, str) and path and os.path.exists(path) else None


def _has_tokenizer(d: str) -> bool:
  return any(os.path.isfile(os.path.join(d, f)) for f in _TOKENIZER_FILES)


def _tokenizer_of(d: str, *parents: str) -> str | None:
  """A tokenizer recorded with (or stored in) a checkpoint dir, its stage config or its run."""
  if _has_tokenizer(d):
    return d
  meta = _read_json(os.path.join(d, "model_config.json"))
  if isinstance(meta, dict):
    src = _existing(meta.get("hf_source"))
    if src and _has_tokenizer(src):
      return src
  for where in (d, *parents):
    c = _stage_config(where)
    if c is None:
      continue
    for path in ((c.get("tokenizer") or {}).get("path"), (c.get("init") or {}).get("hf_dir")):
      if _existing(path) and (os.path.isfile(path) or _has_tokenizer(path)):
        return path
  return None


def _step_of(d: str) -> int | None:
  meta = _read_json(os.path.join(d, "model_config.json"))
  step = meta.get("step") if isinstance(meta, dict) else None
  return step if isinstance(step, int) else None


def _resolve_dir(d: str, kind: str, *parents: str) -> Resolved | None:
  """A leaf layout (hf, params, stage) or None."""
  if is_hf_dir(d):
    return Resolved(d, "hf", d, "hf", tokenizer=d if _has_tokenizer(d) else None)
  stage = is_stage_dir(d)
  name = os.path.basename(os.path.normpath(d))
  tok = _tokenizer_of(d, *parents)
  if is_params_dir(d):
    meta = _read_json(os.path.join(d, "model_config.json"))
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
      raise CheckpointPathError(f"{d}/model_config.json: field 'model': missing or not an object")
    return Resolved(d, "stage" if stage else "params", d, "params",
                    stage=(meta.get("stage") or name) if stage else "", step=_step_of(d),
                    tokenizer=tok)
  if stage:
    return Resolved(d, "stage", d, "checkpoint", stage=name, step=checkpoint_steps(d)[-1],
                    tokenizer=tok)
  return None


def _candidates(run: str) -> list[tuple[str, Resolved]]:
  """(relative name, resolved) of every leaf layout one or two levels below `run`."""
  found = []
  for name in sorted(os.listdir(run)):
    sub = os.path.join(run, name)
    if name in _SKIP or name.startswith(".") or not os.path.isdir(sub):
      continue
    r = _resolve_dir(sub, "stage", run)
    if r is not None:
      found.append((name, r))
      continue
    for name2 in sorted(os.listdir(sub)):
      sub2 = os.path.join(sub, name2)
      if name2 in _SKIP or name2.startswith(".") or not os.path.isdir(sub2):
        continue
      r = _resolve_dir(sub2, "stage", sub, run)
      if r is not None:
        found.append((f"{name}/{name2}", r))
  return found


def _rank(rel: str) -> int | None:
  name = _norm(os.path.basename(rel))
  return STAGE_ORDER.index(name) if name in STAGE_ORDER else None


def _pick(run: str, found: list[tuple[str, Resolved]]) -> tuple[str, Resolved]:
  stages = [(rel, r) for rel, r in found if r.kind != "hf"]
  pool = stages or found  # an HF export only when the run holds no stage
  finished = [(rel, r) for rel, r in pool if r.fmt != "checkpoint"] or pool
  if len(finished) == 1:
    return finished[0]
  unknown = [rel for rel, _ in finished if _rank(rel) is None]
  listing = ", ".join(f"{rel} ({r.kind}{', unfinished' if r.fmt == 'checkpoint' else ''})"
                      for rel, r in finished)
  if unknown:
    raise CheckpointPathError(
        f"{run}: a run dir with several stages ({listing}), and {unknown} is not a stage name "
        f"this tool can order ({', '.join(STAGE_ORDER)}); pass the stage dir itself")
  return max(finished, key=lambda x: (_rank(x[0]), x[0]))


def resolve(path: str) -> Resolved:
  """The layout of `path` (see the module docstring); CheckpointPathError when it is none."""
  if not path:
    raise CheckpointPathError("empty checkpoint path")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: checkpoint directory not found")
  if not os.path.isdir(path):
    raise CheckpointPathError(f"{path}: not a directory; expected a run dir, a stage dir, a "
                              "params dir (params/ + model_config.json) or a Hugging Face dir")
  path = os.path.normpath(path)
  r = _resolve_dir(path, "stage")
  if r is not None:
    return r
  found = _candidates(path)
  if found:
    rel, r = _pick(path, found)
    return dataclasses.replace(r, path=path, kind="run", stage=r.stage or rel,
                               tokenizer=r.tokenizer or _tokenizer_of(path))
  cfg = _read_json(os.path.join(path, "config.json"))
  if _is_hf_config(cfg):
    raise CheckpointPathError(f"{path}: a Hugging Face config.json but no model.safetensors or "
                              "model.safetensors.index.json (PyTorch .bin weights: re-save them "
                              "as safetensors)")
  if isinstance(cfg, dict):
    raise CheckpointPathError(
        f"{path}/config.json is a citrus_jax run's resolved config (no model_type), not a "
        "Hugging Face config, and the directory holds no params/ + model_config.json, no "
        "checkpoints/ and no finished stage below it: the run has not saved a model yet")
  raise CheckpointPathError(
      f"{path}: holds none of: a Hugging Face checkpoint (config.json with model_type + "
      "safetensors), a citrus_jax params dir (params/ + model_config.json), a stage dir "
      "(checkpoints/<step>/), or a run dir with such stages below it")


def _stage_model_config(stage_dir: str) -> Any:
  """The ModelConfig of an unfinished stage, rebuilt from its resolved config.json."""
  c = _stage_config(stage_dir)
  if c is None:
    raise CheckpointPathError(f"{stage_dir}: an unfinished stage (no model_config.json) without "
                              "the resolved config.json that would give its model config")
  config = ml_collections.ConfigDict(c)
  vocab = None
  if not config.init.get("hf_dir") and not config.init.get("checkpoint") and \
      not config.model.get("vocab_size"):
    tok = _tokenizer_of(stage_dir)
    if tok:
      vocab = load_tokenizer(tok).vocab_size
  if config.init.get("checkpoint"):  # chained stages: the params dir it started from
    config.init.checkpoint = resolve(config.init.checkpoint).load_dir
  return model_source.model_config_from(config, vocab_size=vocab)


def load(r: Resolved, *, mesh: Any = None, dtype: str | None = None) -> tuple[Any, Any]:
  """(ModelConfig, params) of a resolved path; with a mesh the params land on its shardings."""
  if r.fmt == "hf":
    return hf.load(r.load_dir, mesh=mesh, dtype=dtype)
  cfg = ckpt.read_model_config(r.load_dir) if r.fmt == "params" else \
      _stage_model_config(r.load_dir)
  if dtype:
    cfg = cfg.replace(param_dtype=dtype).validate()
  shardings = sharding.param_shardings(cfg, mesh) if mesh is not None else None
  return cfg, ckpt.load_params(r.load_dir, cfg, shardings)


def apply_to_init(config: Any) -> Resolved | None:
  """Points `config.init` at what `config.init.checkpoint` resolves to (HF dirs move to
  init.hf_dir, run and stage dirs to their params dir) and fills an empty tokenizer.path from
  it; prints the one line. For the eval stage, whose runtime reads config.init directly."""
  path = config.init.get("checkpoint")
  if not path:
    return None
  r = resolve(path)
  if r.fmt == "checkpoint":
    raise CheckpointPathError(f"{path}: stage {r.stage} has not finished (latest checkpoint step "
                              f"{r.step}, no params/); evaluate a finished stage")
  with config.unlocked():
    if r.fmt == "hf":
      config.init.checkpoint, config.init.hf_dir = "", r.load_dir
    else:
      config.init.checkpoint = r.load_dir
    if not config.tokenizer.get("path") and r.tokenizer:
      config.tokenizer.path = r.tokenizer
  print(r.describe(), flush=True)
  return r

