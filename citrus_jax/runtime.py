"""What every entry point does first: check the config, build mesh and model config, pick init."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import ml_collections

from citrus_jax import sharding
from citrus_jax.model import config as model_config
from citrus_jax.model.config import ModelConfig

STAGES = ("cpt", "sft", "rl", "grpo", "eval", "pipeline", "info")
MODES = ("train", "plan", "inspect")


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field and the fix."""


def split_paths(value: Any) -> list[str]:
  if not value:
    return []
  if isinstance(value, (list, tuple)):
    return [str(v) for v in value]
  return [p for p in str(value).split(",") if p]


def check_config(config: ml_collections.ConfigDict, n_devices: int | None = None) -> None:
  """One clear message per mistake, before anything expensive happens (the rules are the table
  in citrus_jax/config_check.py; this entry also checks the mesh against the devices)."""
  from citrus_jax import config_check
  config_check.validate(config, jax.device_count() if n_devices is None else n_devices)


def make_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  return sharding.make_mesh(tuple(config.mesh.shape))


def model_config_from(config: ml_collections.ConfigDict, vocab_size: int | None = None
                      ) -> ModelConfig:
  """The preset (or the HF/checkpoint config being started from) with numerics overrides."""
  m = config.model
  numerics = dict(param_dtype=m.param_dtype, compute_dtype=m.compute_dtype,
                  scan_layers=m.scan_layers, remat=m.remat,
                  attention=m.get("attention", "einsum"))
  if config.init.get("hf_dir"):
    from citrus_jax import hf
    import json
    path = os.path.join(config.init.hf_dir, "config.json")
    with open(path) as f:
      base = hf.config_from_hf(json.load(f), path)
  elif config.init.get("checkpoint"):
    from citrus_jax.train import checkpoint
    base = checkpoint.read_model_config(config.init.checkpoint)
  else:
    base = model_config.get_preset(m.preset)
    vocab = m.get("vocab_size", 0) or vocab_size
    if vocab:
      base = base.replace(vocab_size=int(vocab))
    # Shape fields set in config.model (e.g. config.model.n_layers = 4) override the preset.
    shape = {f.name: m[f.name] for f in dataclasses.fields(ModelConfig)
             if f.name in m and f.name not in numerics and f.name != "vocab_size"
             and m[f.name] not in (None, 0, "")}
    base = base.replace(**shape)
  return base.replace(**numerics).validate()


def init_params_fn(config: ml_collections.ConfigDict, cfg: ModelConfig,
                   mesh: jax.sharding.Mesh) -> Callable[[Any], Any]:
  """shardings -> params, from an HF directory, a citrus_jax checkpoint, or at random."""
  if config.init.get("hf_dir"):
    from citrus_jax import hf

    def from_hf(shardings: Any) -> Any:
      del shardings
      return hf.load(config.init.hf_dir, mesh=mesh, dtype=cfg.param_dtype)[1]
    return from_hf
  if config.init.get("checkpoint"):
    from citrus_jax.train import checkpoint
    return lambda shardings: checkpoint.load_params(config.init.checkpoint, cfg, shardings)
  from citrus_jax.train import engine
  return engine.random_init(cfg, config.seed)


def save_resolved_config(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Every run records exactly what it ran with, next to its checkpoints (local or gs://)."""
  from etils import epath
  path = epath.Path(workdir) / "config.json"
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config.to_json_best_effort(indent=2))
  return os.fspath(path)
