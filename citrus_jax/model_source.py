"""The ModelConfig a run starts from: an HF directory's, a checkpoint's, or a preset's.

Its own module so the config checker (which needs the model's max_seq_len) and the entry points
(runtime) both use it without importing each other.
"""
from __future__ import annotations

import dataclasses
import json
import os

import ml_collections

from citrus_jax import hf
from citrus_jax.model import config as model_config
from citrus_jax.model.config import ModelConfig
from citrus_jax.train import checkpoint


def model_config_from(config: ml_collections.ConfigDict, vocab_size: int | None = None
                      ) -> ModelConfig:
  """The preset (or the HF/checkpoint config being started from) with numerics overrides."""
  m = config.model
  numerics = dict(param_dtype=m.param_dtype, compute_dtype=m.compute_dtype,
                  scan_layers=m.scan_layers, remat=m.remat,
                  attention=m.get("attention", "einsum"))
  if config.init.get("hf_dir"):
    path = os.path.join(config.init.hf_dir, "config.json")
    with open(path) as f:
      base = hf.config_from_hf(json.load(f), path)
  elif config.init.get("checkpoint"):
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
