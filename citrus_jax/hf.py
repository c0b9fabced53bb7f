"""Hugging Face interop: config.json <-> ModelConfig, safetensors <-> params (Llama, Qwen2, Qwen3).

Params already use the HF layout (see `model/transformer.py`), so conversion is renaming,
transposing [out, in] -> [in, out] and stacking per-layer tensors on a leading axis. Loading reads
one tensor slice at a time (`safe_open`) straight into each device's shard, so a model is never
held twice on the host; saving gathers one HF tensor at a time and writes into a temp directory
that is renamed into place, so a failed export leaves nothing behind.

CLI (`python -m citrus_jax.hf_cli import|export ...`): see `citrus_jax/hf_cli.py`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from typing import Any, Callable, Iterator, Mapping

import jax
from jax.experimental import multihost_utils
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from citrus_jax import sharding as sharding_lib
from citrus_jax.hf_config import config_from_hf, config_to_hf  # noqa: F401 (public API)
from citrus_jax.model import transformer
from citrus_jax.model.config import ModelConfig

Params = dict[str, Any]

PROVENANCE_FILE = "citrus_provenance.json"


# --------------------------------------------------------------------------- tensor names

# (params path, HF name, transposed): kernels are [in, out] here and [out, in] in HF.
_LAYER_TENSORS = (
    ("attn_norm", "input_layernorm.weight", False),
    ("wq", "self_attn.q_proj.weight", True),
    ("wk", "self_attn.k_proj.weight", True),
    ("wv", "self_attn.v_proj.weight", True),
    ("wo", "self_attn.o_proj.weight", True),
    ("mlp_norm", "post_attention_layernorm.weight", False),
    ("w_gate", "mlp.gate_proj.weight", True),
    ("w_up", "mlp.up_proj.weight", True),
    ("w_down", "mlp.down_proj.weight", True),
)
_BIASES = (("bq", "self_attn.q_proj.bias", False), ("bk", "self_attn.k_proj.bias", False),
           ("bv", "self_attn.v_proj.bias", False))
_QK_NORMS = (("q_norm", "self_attn.q_norm.weight", False),
             ("k_norm", "self_attn.k_norm.weight", False))


@dataclasses.dataclass(frozen=True)
class _Entry:
  path: tuple[str, ...]  # ("layers", "wq") or ("embed",)
  hf_name: str  # with "{i}" for the layer index when layered
  transposed: bool

  @property
  def layered(self) -> bool:
    return self.path[0] == "layers"

  def names(self, cfg: ModelConfig) -> list[str]:
    return [self.hf_name.format(i=i) for i in range(cfg.n_layers)] if self.layered \
        else [self.hf_name]


def _entries(cfg: ModelConfig) -> list[_Entry]:
  layer = (_LAYER_TENSORS + (_BIASES if cfg.qkv_bias else ())
           + (_QK_NORMS if cfg.qk_norm else ()))
  out = [_Entry(("embed",), "model.embed_tokens.weight", False)]
  out += [_Entry(("layers", k), "model.layers.{i}." + name, t) for k, name, t in layer]
  out.append(_Entry(("final_norm",), "model.norm.weight", False))
  if not cfg.tie_embeddings:
    out.append(_Entry(("lm_head",), "lm_head.weight", True))
  return out


def _our_shape(entry: _Entry, cfg: ModelConfig) -> tuple[int, ...]:
  return tuple(_leaf(transformer.param_shapes(cfg), entry)[0])


def _hf_shape(entry: _Entry, cfg: ModelConfig) -> tuple[int, ...]:
  shape = _our_shape(entry, cfg)[1 if entry.layered else 0:]
  return shape[::-1] if entry.transposed else shape


def _ignorable(name: str, cfg: ModelConfig) -> bool:
  return name.endswith("rotary_emb.inv_freq") or (cfg.tie_embeddings and name == "lm_head.weight")


# --------------------------------------------------------------------------- reading


class _Source:
  """HF tensors by name, sliced lazily: a state dict or a set of open safetensors files."""

  def __init__(self, where: Callable[[str], str], shape: Callable[[str], Any],
               read: Callable[[str, tuple], np.ndarray], names: list[str]):
    self.where, self.shape, self.read, self.names = where, shape, read, names

  def check(self, cfg: ModelConfig, label: str) -> None:
    expected = set()
    for entry in _entries(cfg):
      want = _hf_shape(entry, cfg)
      for name in entry.names(cfg):
        expected.add(name)
        got = self.shape(name)
        if got is None:
          raise ValueError(f"{self.where(name)}: missing tensor {name!r} (config: {label})")
        if tuple(got) != want:
          raise ValueError(f"{self.where(name)}: tensor {name!r} has shape {tuple(got)}, "
                           f"expected {want} from {label}")
    extra = [n for n in self.names if n not in expected and not _ignorable(n, cfg)]
    if extra:
      raise ValueError(f"{self.where(extra[0])}: unexpected tensor {extra[0]!r} "
                       f"({len(extra)} in all); do the weights match {label}?")

  def block(self, entry: _Entry, cfg: ModelConfig, index: tuple, dtype: Any) -> np.ndarray:
    """The [index] block of a params leaf, read from the HF tensors it is made of."""
    def one(name: str, idx: tuple) -> np.ndarray:
      x = self.read(name, tuple(idx[::-1]) if entry.transposed else tuple(idx))
      return x.T if entry.transposed else x
    if entry.layered:
      layers = range(cfg.n_layers)[index[0]]
      return np.stack([one(entry.hf_name.format(i=i), index[1:]) for i in layers]).astype(dtype)
    return one(entry.hf_name, index).astype(dtype)


def _state_dict_source(state_dict: Mapping[str, Any]) -> _Source:
  shape = lambda n: np.shape(state_dict[n]) if n in state_dict else None
  read = lambda n, idx: np.asarray(state_dict[n])[idx]
  return _Source(lambda n: "state_dict", shape, read, list(state_dict))


@contextlib.contextmanager
def _files_source(hf_dir: str) -> Iterator[_Source]:
  """The open safetensors files of a checkpoint (one, or the shards its index lists)."""
  index_path = os.path.join(hf_dir, "model.safetensors.index.json")
  single = os.path.join(hf_dir, "model.safetensors")
  if os.path.exists(index_path):
    weight_map = _read_json(index_path)
    weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
    if not isinstance(weight_map, dict):
      raise ValueError(f"{index_path}: missing field 'weight_map'")
    files, fallback = sorted(set(weight_map.values())), index_path
  elif os.path.exists(single):
    weight_map, files, fallback = {}, ["model.safetensors"], single
  else:
    bin_only = any(f.endswith(".bin") for f in os.listdir(hf_dir))
    raise FileNotFoundError(
        f"{hf_dir}: no model.safetensors or model.safetensors.index.json" +
        (": it holds PyTorch .bin weights only; re-save them as safetensors (transformers "
         "`save_pretrained` does so by default)" if bin_only else ""))
  with contextlib.ExitStack() as stack:
    tensors = {}  # name -> (open file, its path)
    for f in files:
      fpath = os.path.join(hf_dir, f)
      if not os.path.exists(fpath):
        raise FileNotFoundError(f"{index_path}: lists {f!r}, which does not exist")
      handle = stack.enter_context(safe_open(fpath, framework="numpy"))
      tensors.update({name: (handle, fpath) for name in handle.keys()})
    where = lambda n: tensors[n][1] if n in tensors else (
        os.path.join(hf_dir, weight_map[n]) if n in weight_map else fallback)
    shape = lambda n: tuple(tensors[n][0].get_slice(n).get_shape()) if n in tensors else None
    read = lambda n, idx: tensors[n][0].get_slice(n)[idx]
    yield _Source(where, shape, read, list(tensors))


def _read_json(path: str) -> Any:
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: not found")
  with open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None


def _assemble(source: _Source, cfg: ModelConfig, shardings: Any) -> Params:
  """Every params leaf built shard by shard on its sharding (never the whole model on host)."""
  dtype = np.dtype(jax.numpy.dtype(cfg.param_dtype))
  params: Params = {"layers": {}}
  for entry in _entries(cfg):
    sharding = _leaf(shardings, entry) if isinstance(shardings, dict) else shardings
    cb = functools.partial(source.block, entry, cfg, dtype=dtype)
    arr = jax.make_array_from_callback(_our_shape(entry, cfg), sharding, cb)
    (params["layers"] if entry.layered else params)[entry.path[-1]] = arr
  return params


def params_from_state_dict(state_dict: Mapping[str, np.ndarray], cfg: ModelConfig,
                           shardings: Any = None) -> Params:
  """Params (cfg.param_dtype) from HF-named tensors; optional `shardings` like param_shardings."""
  source = _state_dict_source(state_dict)
  source.check(cfg, "cfg")
  return _assemble(source, cfg, shardings or jax.sharding.SingleDeviceSharding(jax.devices()[0]))


def load(hf_dir: str, mesh: Any = None, dtype: str | None = None,
         cfg_overrides: dict | None = None) -> tuple[ModelConfig, Params]:
  """(cfg, params) from a transformers checkpoint directory (safetensors, single or sharded).

  With a mesh, each tensor lands on `sharding.param_shardings(cfg, mesh)` directly; each device
  reads just its own slice from the memory-mapped files. `dtype` sets cfg.param_dtype (default:
  the checkpoint's dtype); `cfg_overrides` sets any other ModelConfig field (scan, remat, ...).
  """
  config_path = os.path.join(hf_dir, "config.json")
  raw = _read_json(config_path)
  if isinstance(raw, dict) and "model_type" not in raw and "architectures" not in raw:
    raise ValueError(f"{config_path}: not a Hugging Face config (no 'model_type' or "
                     "'architectures'); a citrus_jax run or stage dir keeps its resolved config "
                     "under this name: load such a dir through citrus_jax.run_dirs (serve, "
                     "hf_cli export and eval do)")
  cfg = config_from_hf(raw, config_path)
  overrides = dict(cfg_overrides or {})
  if dtype is not None:
    overrides["param_dtype"] = dtype
  if overrides:
    cfg = cfg.replace(**overrides).validate()
  if mesh is None:
    shardings: Any = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  else:
    shardings = sharding_lib.param_shardings(cfg, mesh)
  with _files_source(hf_dir) as source:
    source.check(cfg, config_path)
    params = _assemble(source, cfg, shardings)
    jax.block_until_ready(params)  # the files close when this block ends
  return cfg, params


# --------------------------------------------------------------------------- writing


@functools.partial(jax.jit, static_argnames="transposed")
def _device_hf_tensor(x: jax.Array, layer: jax.Array | None, transposed: bool) -> jax.Array:
  y = x if layer is None else jax.lax.dynamic_index_in_dim(x, layer, 0, keepdims=False)
  return y.T if transposed else y  # on device, shard-parallel; not a host-side numpy copy


def _hf_tensor(params: Params, entry: _Entry, layer: int | None) -> np.ndarray:
  """One HF tensor on the host; sharded arrays are gathered one tensor at a time."""
  x = _leaf(params, entry)
  if not isinstance(x, jax.Array):
    x = np.asarray(x) if layer is None else np.asarray(x)[layer]
    return np.ascontiguousarray(x.T) if entry.transposed else x
  x = _device_hf_tensor(x, None if layer is None else np.int32(layer), entry.transposed)
  if not x.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def _hf_tensors(params: Params, cfg: ModelConfig) -> Iterator[tuple[str, _Entry, int | None]]:
  for entry in _entries(cfg):
    for i, name in enumerate(entry.names(cfg)):
      yield name, entry, (i if entry.layered else None)


def _leaf(tree: Any, entry: _Entry) -> Any:
  return tree["layers"][entry.path[1]] if entry.layered else tree[entry.path[0]]


def params_to_state_dict(params: Params, cfg: ModelConfig) -> dict[str, np.ndarray]:
  """HF-named numpy tensors (params' dtype); lm_head is omitted when tied, as transformers does."""
  return {name: _hf_tensor(params, e, i) for name, e, i in _hf_tensors(params, cfg)}


def _git_revision() -> str | None:
  try:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(__file__),
                         capture_output=True, text=True, timeout=10)
    return (out.stdout.strip() or None) if out.returncode == 0 else None
  except (OSError, subprocess.SubprocessError):
    return None


def _write_json(path: str, obj: Any) -> None:
  with open(path, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")


def _write_weights(tmp: str, params: Params, cfg: ModelConfig, max_shard_bytes: int) -> int:
  """Greedy shards in HF tensor order; only one shard is held on the host at a time."""
  sizes = {name: int(np.prod(_hf_shape(e, cfg))) * np.dtype(_leaf(params, e).dtype).itemsize
           for name, e, _ in _hf_tensors(params, cfg)}
  shards: list[list[tuple[str, _Entry, int | None]]] = [[]]
  used = 0
  for item in _hf_tensors(params, cfg):
    if shards[-1] and used + sizes[item[0]] > max_shard_bytes:
      shards.append([])
      used = 0
    shards[-1].append(item)
    used += sizes[item[0]]
  n = len(shards)
  weight_map = {}
  for k, shard in enumerate(shards):
    fname = "model.safetensors" if n == 1 else f"model-{k + 1:05d}-of-{n:05d}.safetensors"
    tensors = {name: _hf_tensor(params, e, i) for name, e, i in shard}
    if jax.process_index() == 0:
      save_file(tensors, os.path.join(tmp, fname), metadata={"format": "pt"})
      os.chmod(os.path.join(tmp, fname), 0o644)  # safetensors creates files owner-only
    weight_map.update({name: fname for name in tensors})
    del tensors
  if n > 1 and jax.process_index() == 0:
    _write_json(os.path.join(tmp, "model.safetensors.index.json"),
                {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map})
  return sum(sizes.values())


def save(out_dir: str, params: Params, cfg: ModelConfig, *, tokenizer: Any = None,
         provenance: dict | None = None, max_shard_bytes: int = 2**31,
         generation_config: dict | None = None, overwrite: bool = False) -> str:
  """Writes a transformers-loadable directory (config, safetensors, generation config,
  provenance, tokenizer) atomically: built in a temp dir beside out_dir, then renamed.

  Tensors keep the params' dtype (bf16 stays bf16). `generation_config` entries override the
  bos/eos/pad written from cfg (e.g. a list of eos ids); a tokenizer's `stop_ids` join the eos
  ids and its `pad_id` is the pad. An existing non-empty out_dir is an
  error unless `overwrite`. All processes must call this (gathers are collective); only
  process 0 writes. Returns out_dir.
  """
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir) and os.listdir(out_dir) and not overwrite:
    raise FileExistsError(f"{out_dir}: exists and is not empty (pass overwrite=True)")
  parent, base = os.path.split(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".{base}.tmp-{uuid.uuid4().hex[:8]}")
  os.makedirs(tmp)
  try:
    saved_dtype = str(np.dtype(_leaf(params, _entries(cfg)[0]).dtype))
    hf_cfg = config_to_hf(cfg)
    hf_cfg["dtype"] = saved_dtype
    total = _write_weights(tmp, params, cfg, max_shard_bytes)
    if jax.process_index() == 0:
      _write_json(os.path.join(tmp, "config.json"), hf_cfg)
      _write_json(os.path.join(tmp, "generation_config.json"),
                  _generation_config(cfg, tokenizer, generation_config))
      cfg_json = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
      record = {
          "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
          "git_revision": _git_revision(),
          "model_config": dataclasses.asdict(cfg),
          "config_sha256": hashlib.sha256(cfg_json.encode()).hexdigest(),
          "saved_dtype": saved_dtype,
          "total_bytes": total,
          **(provenance or {}),
      }
      _write_json(os.path.join(tmp, PROVENANCE_FILE), record)
      if tokenizer is not None:
        tokenizer.save_hf(tmp)
      _swap_into_place(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  if jax.process_index() != 0:
    shutil.rmtree(tmp, ignore_errors=True)
  return out_dir


def _generation_config(cfg: ModelConfig, tokenizer: Any, overrides: dict | None) -> dict:
  """bos/eos/pad from cfg, then `overrides`; a tokenizer adds its stop ids (so a chat model
  also stops at its end-of-turn token) and sets the pad id."""
  gen = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
         "pad_token_id": cfg.eos_token_id, **(overrides or {})}
  eos = gen["eos_token_id"]
  eos = list(eos) if isinstance(eos, (list, tuple)) else [] if eos is None else [eos]
  eos += [i for i in getattr(tokenizer, "stop_ids", None) or () if i not in eos]
  gen["eos_token_id"] = eos[0] if len(eos) == 1 else (eos or None)
  if getattr(tokenizer, "pad_id", None) is not None:
    gen["pad_token_id"] = tokenizer.pad_id
  return gen


def _swap_into_place(tmp: str, out_dir: str) -> None:
  """rename(2) is atomic; an existing out_dir is moved aside first and restored on failure."""
  old = None
  if os.path.exists(out_dir):
    old = f"{tmp}.old"
    os.rename(out_dir, old)
  try:
    os.rename(tmp, out_dir)
  except BaseException:
    if old is not None:
      os.rename(old, out_dir)
    raise
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)

