"""What every entry point does first: check the config, build mesh and model config, pick init."""
from __future__ import annotations

import os
from typing import Any, Callable

import jax
import ml_collections
from etils import epath

from citrus_jax import config_check, hf, sharding
from citrus_jax.config_types import MODES, STAGES, ConfigError, split_paths
from citrus_jax.model.config import ModelConfig
from citrus_jax.model_source import model_config_from
from citrus_jax.train import checkpoint, engine

# Re-exported: entry points (and the pipeline) read these as runtime.<name>.
__all__ = ["MODES", "STAGES", "ConfigError", "split_paths", "check_config", "make_mesh",
           "model_config_from", "init_params_fn", "save_resolved_config"]


def check_config(config: ml_collections.ConfigDict, n_devices: int | None = None) -> None:
  """One clear message per mistake, before anything expensive happens (the rules are the table
  in citrus_jax/config_check.py; this entry also checks the mesh against the devices)."""
  config_check.validate(config, jax.device_count() if n_devices is None else n_devices)


def make_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  return sharding.make_mesh(tuple(config.mesh.shape))


def init_params_fn(config: ml_collections.ConfigDict, cfg: ModelConfig,
                   mesh: jax.sharding.Mesh) -> Callable[[Any], Any]:
  """shardings -> params, from an HF directory, a citrus_jax checkpoint, or at random."""
  if config.init.get("hf_dir"):
    def from_hf(shardings: Any) -> Any:
      del shardings
      return hf.load(config.init.hf_dir, mesh=mesh, dtype=cfg.param_dtype)[1]
    return from_hf
  if config.init.get("checkpoint"):
    return lambda shardings: checkpoint.load_params(config.init.checkpoint, cfg, shardings)
  return engine.random_init(cfg, config.seed)


def save_resolved_config(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Every run records exactly what it ran with, next to its checkpoints (local or gs://)."""
  path = epath.Path(workdir) / "config.json"
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config.to_json_best_effort(indent=2))
  return os.fspath(path)
