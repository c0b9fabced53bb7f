"""Hugging Face config.json <-> ModelConfig for Llama-3.x, Qwen2.5 and Qwen3 dense (transformers 4
and 5).

Anything we cannot run faithfully (other architectures, rope types, activations, biases) is an
error that names the file and the field, rather than a silently different model.
"""
from __future__ import annotations

from typing import Any, Mapping

from citrus_jax.model.config import ModelConfig

_ARCHS = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
          "Qwen3ForCausalLM": "qwen3"}
_ARCH_OF = {family: arch for arch, family in _ARCHS.items()}
# transformers 5.24 class defaults for the optional fields (LlamaConfig / Qwen2Config /
# Qwen3Config; Qwen3's head_dim defaults to 128, not hidden_size // num_attention_heads).
_DEFAULTS = {
    "llama": dict(rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=2048,
                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
    "qwen2": dict(rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=32768,
                  tie_word_embeddings=False, bos_token_id=None, eos_token_id=None),
    "qwen3": dict(rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=32768,
                  tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, head_dim=128),
}
# Fields that would change the model and that we do not implement, per family.
_UNSUPPORTED = {"llama": ("attention_bias", "mlp_bias"), "qwen2": ("use_sliding_window",),
                "qwen3": ("attention_bias", "use_sliding_window")}
_DTYPES = ("float32", "bfloat16", "float16")
_REQUIRED = object()
_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


# --------------------------------------------------------------------------- config.json


def _field(d: Mapping[str, Any], key: str, kind: type, path: str, default: Any = _REQUIRED,
           prefix: str = "") -> Any:
  """d[key] checked against `kind` (ints pass as floats); errors name the file and field."""
  value = d.get(key, default)
  if value is _REQUIRED or (value is None and default is _REQUIRED):
    raise ValueError(f"{path}: missing field {prefix + key!r}")
  if value is None:
    return None
  kinds = (int, float) if kind is float else (kind,)
  if not isinstance(value, kinds) or (isinstance(value, bool) and kind is not bool):
    raise ValueError(f"{path}: field {prefix + key!r} = {value!r} is not {_KIND_NAMES[kind]}")
  return kind(value)


def _family(hf: Mapping[str, Any], path: str) -> str:
  archs = hf.get("architectures") or []
  model_type = hf.get("model_type")
  if archs:
    if len(archs) != 1 or archs[0] not in _ARCHS:
      raise ValueError(f"{path}: field 'architectures' = {archs!r} is not supported; "
                       f"expected one of {sorted(_ARCHS)}")
    family = _ARCHS[archs[0]]
    if model_type is not None and model_type != family:
      raise ValueError(f"{path}: field 'model_type' = {model_type!r} contradicts "
                       f"'architectures' = {archs!r}")
    return family
  if model_type not in _DEFAULTS:
    raise ValueError(f"{path}: field 'model_type' = {model_type!r} is not supported (and no "
                     f"'architectures'); expected one of {sorted(_DEFAULTS)}")
  return model_type


def _rope(hf: Mapping[str, Any], defaults: Mapping[str, Any], path: str):
  """(rope_theta, rope_scaling tuple or None) from either the transformers-4 keys (`rope_theta`,
  `rope_scaling`) or the transformers-5 `rope_parameters` dict (which also holds the theta)."""
  if hf.get("rope_parameters") is not None:
    params, key = hf["rope_parameters"], "rope_parameters"
  else:
    params, key = hf.get("rope_scaling") or {}, "rope_scaling"
  if not isinstance(params, Mapping):
    raise ValueError(f"{path}: field {key!r} = {params!r} is not an object")
  theta = params.get("rope_theta", hf.get("rope_theta", defaults["rope_theta"]))
  theta = _field({"rope_theta": theta}, "rope_theta", float, path)
  rope_type = params.get("rope_type", params.get("type", "default"))
  if rope_type == "default":
    return theta, None
  if rope_type != "llama3":
    raise ValueError(f"{path}: field '{key}.rope_type' = {rope_type!r} is not supported; "
                     "expected 'default' or 'llama3'")
  p = key + "."
  scaling = (_field(params, "factor", float, path, prefix=p),
             _field(params, "low_freq_factor", float, path, prefix=p),
             _field(params, "high_freq_factor", float, path, prefix=p),
             _field(params, "original_max_position_embeddings", int, path, prefix=p))
  return theta, scaling


def config_from_hf(hf_config: dict, path: str = "config.json") -> ModelConfig:
  """A ModelConfig from a transformers config.json dict; anything we cannot run is an error.

  `param_dtype` is the checkpoint's `dtype`/`torch_dtype` (float32 if absent), so an imported
  bf16 model stays bf16 unless the caller asks otherwise. A list `eos_token_id` gives its first
  id (the full list belongs in generation_config.json).
  """
  if not isinstance(hf_config, Mapping):
    raise ValueError(f"{path}: expected a JSON object, got {type(hf_config).__name__}")
  family = _family(hf_config, path)
  defaults = _DEFAULTS[family]
  get = lambda key, kind, default=_REQUIRED: _field(hf_config, key, kind, path, default)
  if get("hidden_act", str, "silu") != "silu":
    raise ValueError(f"{path}: field 'hidden_act' = {hf_config['hidden_act']!r}; only 'silu'")
  for key in _UNSUPPORTED[family]:
    if hf_config.get(key):
      raise ValueError(f"{path}: field {key!r} = {hf_config[key]!r} is not supported for {family}")
  d_model, n_heads = get("hidden_size", int), get("num_attention_heads", int)
  theta, scaling = _rope(hf_config, defaults, path)
  eos = hf_config.get("eos_token_id", defaults["eos_token_id"])
  if isinstance(eos, list):
    eos = eos[0] if eos else None
  dtype = hf_config.get("dtype", hf_config.get("torch_dtype")) or "float32"
  cfg = ModelConfig(
      family=family,
      vocab_size=get("vocab_size", int),
      d_model=d_model,
      n_layers=get("num_hidden_layers", int),
      n_heads=n_heads,
      n_kv_heads=get("num_key_value_heads", int, n_heads) or n_heads,
      head_dim=get("head_dim", int, None) or defaults.get("head_dim", d_model // n_heads),
      d_ff=get("intermediate_size", int),
      rope_theta=theta,
      rope_scaling=scaling,
      norm_eps=get("rms_norm_eps", float, defaults["rms_norm_eps"]),
      tie_embeddings=bool(get("tie_word_embeddings", bool, defaults["tie_word_embeddings"])),
      qkv_bias=family == "qwen2",
      qk_norm=family == "qwen3",
      max_seq_len=get("max_position_embeddings", int, defaults["max_position_embeddings"]),
      bos_token_id=get("bos_token_id", int, defaults["bos_token_id"]),
      eos_token_id=_field({"eos_token_id": eos}, "eos_token_id", int, path, None),
      param_dtype=dtype if dtype in _DTYPES else "float32",
  )
  try:
    return cfg.validate()
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from None


def config_to_hf(cfg: ModelConfig) -> dict:
  """config.json in the Hub's own format (`rope_theta` + `rope_scaling`), which transformers 4
  and 5 (and vLLM) all read; transformers 5 turns it into `rope_parameters` on load."""
  # The q/k norm exists in Qwen3 only, which has no q/k/v bias: anything else has no config.json.
  if cfg.qk_norm != (cfg.family == "qwen3") or (cfg.family == "qwen3" and cfg.qkv_bias):
    raise ValueError(f"family={cfg.family!r} with qk_norm={cfg.qk_norm}, qkv_bias={cfg.qkv_bias} "
                     "is no Hugging Face architecture (qwen3 means qk_norm and no qkv_bias; "
                     "llama and qwen2 have no qk_norm)")
  scaling = None
  if cfg.rope_scaling is not None:
    factor, low, high, original = cfg.rope_scaling
    scaling = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
               "high_freq_factor": high, "original_max_position_embeddings": original}
  hf = {
      "architectures": [_ARCH_OF[cfg.family]],
      "model_type": cfg.family,
      "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.d_model,
      "intermediate_size": cfg.d_ff,
      "num_hidden_layers": cfg.n_layers,
      "num_attention_heads": cfg.n_heads,
      "num_key_value_heads": cfg.n_kv_heads,
      "head_dim": cfg.head_dim,
      "hidden_act": "silu",
      "max_position_embeddings": cfg.max_seq_len,
      "rms_norm_eps": cfg.norm_eps,
      "rope_theta": cfg.rope_theta,
      "rope_scaling": scaling,
      "tie_word_embeddings": cfg.tie_embeddings,
      "bos_token_id": cfg.bos_token_id,
      "eos_token_id": cfg.eos_token_id,
      "attention_dropout": 0.0,
      "initializer_range": 0.02,
      "use_cache": True,
      "dtype": cfg.param_dtype,
  }
  if cfg.family == "llama":
    hf.update(attention_bias=False, mlp_bias=False, pretraining_tp=1)
  else:
    hf.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.n_layers)
    if cfg.family == "qwen3":
      hf.update(attention_bias=False)
  return hf
