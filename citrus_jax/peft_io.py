"""PEFT interop: LoRA adapters <-> `adapter_config.json` + `adapter_model.safetensors`, and the
base and merged HF checkpoints a LoRA run leaves in `export/`.

Tensor names are PEFT's for a causal LM (`PeftModelForCausalLM` wraps the HF model as
`base_model.model`): `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` [r, in]
and `...lora_B.weight` [out, r] (torch Linear layout, the transpose of our [in, r] / [r, out]).
A PEFT adapter imports when it is plain LoRA on some of q/k/v/o/gate/up/down of every layer
with one rank and alpha (no DoRA, bias, rank/alpha patterns, layers_to_transform or
modules_to_save); anything else is an error naming the file and field.

A LoRA stage directory (written by train/engine.py) holds `lora/lora.json` (the LoRA config and
where the base came from) and `lora/adapters` (Orbax); `export_stage` turns it into
`export/peft/` (the adapter), `export/base/` (the HF base it was trained on: dequantised when the
base was stored quantised, since that is the model the adapters saw) and `export/merged/`
(base + scale A B as one HF checkpoint).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import uuid
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from citrus_jax import hf
from citrus_jax.model import lora
from citrus_jax.model.config import ModelConfig
from citrus_jax.train import checkpoint

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model.model.layers.{i}."
_HF_TO_SHORT = {hf_name.split(".")[-1]: short for short, (_, hf_name) in lora.TARGETS.items()}
_TENSOR_RE = re.compile(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(self_attn|mlp)\."
                        r"(\w+)\.lora_([AB])(?:\.default)?\.weight$")


def adapter_config(lcfg: lora.LoraConfig, base_model_name_or_path: str = "") -> dict[str, Any]:
  """The adapter_config.json PEFT (0.21) writes for this LoRA (fields it reads; others default)."""
  return {
      "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lcfg.rank, "lora_alpha": lcfg.alpha,
      "lora_dropout": lcfg.dropout, "use_rslora": lcfg.rslora, "use_dora": False,
      "target_modules": sorted(lora.TARGETS[t][1].split(".")[-1] for t in lcfg.targets),
      "bias": "none", "fan_in_fan_out": False, "init_lora_weights": True,
      "inference_mode": True, "modules_to_save": None, "layers_to_transform": None,
      "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {},
      "base_model_name_or_path": base_model_name_or_path or None, "revision": None,
  }


def _host(x: Any) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def adapter_state_dict(adapters: lora.Params, cfg: ModelConfig) -> dict[str, np.ndarray]:
  """PEFT-named float tensors of the adapters (per layer, torch layout)."""
  out = {}
  for key, ad in sorted(adapters["layers"].items()):
    hf_name = next(h for k, h in lora.TARGETS.values() if k == key)
    a, b = _host(ad["lora_a"]), _host(ad["lora_b"])
    for i in range(cfg.n_layers):
      prefix = _PREFIX.format(i=i) + hf_name
      out[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(a[i].T)
      out[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(b[i].T)
  return out


def export_adapter(out_dir: str, adapters: lora.Params, cfg: ModelConfig, lcfg: lora.LoraConfig,
                   base_model_name_or_path: str = "", overwrite: bool = True) -> str:
  """Writes a PEFT adapter directory (atomically: a temp dir renamed into place). All
  processes call it (the gathers are collective); process 0 writes. Returns out_dir."""
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir) and os.listdir(out_dir) and not overwrite:
    raise FileExistsError(f"{out_dir}: exists and is not empty (pass overwrite=True)")
  tensors = adapter_state_dict(adapters, cfg)
  if jax.process_index() != 0:
    return out_dir
  parent, name = os.path.split(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
  os.makedirs(tmp)
  try:
    save_file(tensors, os.path.join(tmp, ADAPTER_WEIGHTS), metadata={"format": "pt"})
    os.chmod(os.path.join(tmp, ADAPTER_WEIGHTS), 0o644)
    with open(os.path.join(tmp, ADAPTER_CONFIG), "w") as f:
      json.dump(adapter_config(lcfg, base_model_name_or_path), f, indent=2, sort_keys=True)
      f.write("\n")
    hf._swap_into_place(tmp, out_dir)  # pylint: disable=protected-access
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out_dir


def _config_error(path: str, field: str, why: str) -> ValueError:
  return ValueError(f"{path}: field {field!r} {why}")


def read_adapter_config(peft_dir: str) -> tuple[dict[str, Any], lora.LoraConfig]:
  """(raw json, LoraConfig) of a PEFT adapter; unsupported features are errors."""
  path = os.path.join(peft_dir, ADAPTER_CONFIG)
  raw = hf._read_json(path)  # pylint: disable=protected-access
  if not isinstance(raw, dict):
    raise ValueError(f"{path}: expected a JSON object")
  if raw.get("peft_type", "LORA") != "LORA":
    raise _config_error(path, "peft_type", f"is {raw.get('peft_type')!r}; only LORA imports")
  for field, ok in (("use_dora", lambda v: not v), ("bias", lambda v: v in (None, "none")),
                    ("fan_in_fan_out", lambda v: not v), ("modules_to_save", lambda v: not v),
                    ("layers_to_transform", lambda v: v is None),
                    ("rank_pattern", lambda v: not v), ("alpha_pattern", lambda v: not v),
                    ("lora_bias", lambda v: not v), ("use_qalora", lambda v: not v)):
    if field in raw and not ok(raw[field]):
      raise _config_error(path, field, f"is {raw[field]!r}, which citrus_jax does not support "
                          "(plain LoRA on every layer, one rank and alpha)")
  for field in ("r", "lora_alpha"):
    if not isinstance(raw.get(field), (int, float)) or raw[field] <= 0:
      raise _config_error(path, field, f"is {raw.get(field)!r}; expected a positive number")
  targets = raw.get("target_modules")
  if isinstance(targets, str):
    targets = None  # a regex: the tensors present decide
  elif not isinstance(targets, list) or not targets:
    raise _config_error(path, "target_modules", f"is {targets!r}; expected a list of names")
  else:
    bad = [t for t in targets if t not in _HF_TO_SHORT]
    if bad:
      raise _config_error(path, "target_modules", f"names {bad}; citrus_jax adapts "
                          f"{sorted(_HF_TO_SHORT)}")
  lcfg = lora.LoraConfig(rank=int(raw["r"]), alpha=float(raw["lora_alpha"]),
                         targets=tuple(sorted(_HF_TO_SHORT[t] for t in targets)) if targets
                         else ("q",),
                         dropout=float(raw.get("lora_dropout") or 0.0),
                         rslora=bool(raw.get("use_rslora", False)))
  return raw, lcfg


def import_adapter(peft_dir: str, cfg: ModelConfig, shardings: Any = None
                   ) -> tuple[lora.LoraConfig, lora.Params]:
  """(LoraConfig, adapters) from a PEFT adapter directory for the model `cfg`."""
  raw, lcfg = read_adapter_config(peft_dir)
  path = os.path.join(peft_dir, ADAPTER_WEIGHTS)
  if not os.path.exists(path):
    bin_only = os.path.exists(os.path.join(peft_dir, "adapter_model.bin"))
    raise FileNotFoundError(f"{path}: not found" + (" (the adapter is a PyTorch .bin; re-save "
                                                    "it with safe_serialization=True)"
                                                    if bin_only else ""))
  found: dict[tuple[str, str], dict[int, np.ndarray]] = {}
  with safe_open(path, framework="numpy") as f:
    for name in f.keys():
      m = _TENSOR_RE.match(name)
      if m is None or m.group(3) not in _HF_TO_SHORT:
        raise ValueError(f"{path}: unexpected tensor {name!r}; expected PEFT LoRA tensors like "
                         "'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'")
      layer, module, ab = int(m.group(1)), m.group(3), m.group(4)
      if layer >= cfg.n_layers:
        raise ValueError(f"{path}: tensor {name!r} is for layer {layer}, but the model has "
                         f"{cfg.n_layers} layers")
      found.setdefault((_HF_TO_SHORT[module], ab), {})[layer] = f.get_tensor(name)
  shorts = sorted({s for s, _ in found})
  if isinstance(raw.get("target_modules"), list) and shorts != sorted(lcfg.targets):
    raise ValueError(f"{path}: holds adapters for {shorts}, but {ADAPTER_CONFIG} "
                     f"target_modules says {sorted(lcfg.targets)}")
  lcfg = dataclasses.replace(lcfg, targets=tuple(shorts)).validate(
      f"{os.path.join(peft_dir, ADAPTER_CONFIG)}")
  expected = lora.adapter_shapes(cfg, lcfg)["layers"]
  adapters: dict[str, Any] = {}
  for short in shorts:
    key = lora.TARGETS[short][0]
    parts = {}
    for ab, part in (("A", "lora_a"), ("B", "lora_b")):
      layers = found.get((short, ab), {})
      missing = [i for i in range(cfg.n_layers) if i not in layers]
      if missing:
        raise ValueError(f"{path}: no lora_{ab} tensor for {lora.TARGETS[short][1]} in layers "
                         f"{missing}")
      want = expected[key][part][0][1:]
      for i in range(cfg.n_layers):
        if layers[i].T.shape != want:
          raise ValueError(f"{path}: lora_{ab} of {lora.TARGETS[short][1]} has shape "
                           f"{layers[i].shape} in layer {i}, expected {want[::-1]} for "
                           f"r={lcfg.rank} and this model")
      parts[part] = np.stack([layers[i].T for i in range(cfg.n_layers)]).astype(lcfg.dtype)
    adapters[key] = parts
  tree = {"layers": adapters}
  if shardings is not None:
    tree = jax.device_put(tree, shardings)
  return lcfg, jax.tree.map(jax.numpy.asarray, tree)


# --------------------------------------------------------------------------- a run's export


def export_all(out_dir: str, adapters: lora.Params, base: lora.Params, cfg: ModelConfig,
               lcfg: lora.LoraConfig, tokenizer: Any = None,
               provenance: dict | None = None) -> dict[str, str]:
  """`out_dir/{peft,base,merged}`: the PEFT adapter (its base_model_name_or_path is
  `out_dir/base`), the HF base (dequantised if quantised) and base + adapters merged."""
  out_dir = os.path.abspath(out_dir)
  paths = {k: os.path.join(out_dir, k) for k in ("peft", "base", "merged")}
  prov = dict(provenance or {})
  plain_base = lora.merge(base)  # dequantises a quantised base; plain params pass through
  hf.save(paths["base"], plain_base, cfg, tokenizer=tokenizer, overwrite=True,
          provenance={**prov, "lora_base": True, "base_quantization": lcfg.quant})
  export_adapter(paths["peft"], adapters, cfg, lcfg, base_model_name_or_path=paths["base"])
  merged = lora.merge(lora.combine(adapters, base, lcfg))
  hf.save(paths["merged"], merged, cfg, tokenizer=tokenizer, overwrite=True,
          provenance={**prov, "lora_merged": adapter_config(lcfg)})
  return paths


def export_stage(stage_dir: str, out_dir: str, tokenizer: Any = None, mesh: Any = None
                 ) -> dict[str, str]:
  """The `export/` of a finished LoRA stage directory (see the module docstring)."""
  cfg, lcfg, base_ref = checkpoint.read_lora_meta(stage_dir)
  base = checkpoint.load_lora_base(base_ref, cfg, lcfg, mesh)
  adapters = checkpoint.load_adapters(stage_dir, cfg, lcfg, mesh)
  return export_all(out_dir, adapters, base, cfg, lcfg, tokenizer,
                    provenance={"stage_dir": os.path.abspath(stage_dir), "base": base_ref})
