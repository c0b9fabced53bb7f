"""LoRA adapters as params leaves: y = x W + scale * dropout(x) A B, on any projection.

An adapted projection kernel is the dict leaf `{"w", "lora_a", "lora_b", "lora_scale"}` in
place of its [L, in, out] array (`w` is the frozen base kernel, itself an array or a quantised
`{"q", "scale"}` dict, see `quant.py`; A is [L, in, r], B is [L, r, out], lora_scale is [L]).
`transformer._dense` dispatches on it, so forward, the sampler and every stage's loss run base +
adapters unchanged and without merging. Training splits the tree with `split` into the
trainable adapters (`lora_a`, `lora_b` only) and the frozen rest, differentiates w.r.t. the
adapters only and joins them back with `combine` inside the loss; the optimizer state exists
for the adapters alone.

Init as PEFT: A ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), B = 0, so the
adapted model starts as the base. scale = alpha / r, or alpha / sqrt(r) with rsLoRA. Dropout
(PEFT's lora_dropout on the adapter's input) only where `combine` is given a key (training);
evaluation and sampling see none.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from citrus_jax import sharding
from citrus_jax.model import quant, transformer
from citrus_jax.model.config import ModelConfig
from citrus_jax.model.transformer import lora_delta  # noqa: F401 (the adapter matmul; public here)
from citrus_jax.train import optim, step as step_lib

Params = dict[str, Any]

# Short target names -> (params key, HF module name) of the decoder's projections.
TARGETS = {
    "q": ("wq", "self_attn.q_proj"), "k": ("wk", "self_attn.k_proj"),
    "v": ("wv", "self_attn.v_proj"), "o": ("wo", "self_attn.o_proj"),
    "gate": ("w_gate", "mlp.gate_proj"), "up": ("w_up", "mlp.up_proj"),
    "down": ("w_down", "mlp.down_proj"),
}
PROJECTIONS = tuple(key for key, _ in TARGETS.values())
ADAPTER_KEYS = ("lora_a", "lora_b")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """What `config.model.lora` holds (see configs/sft.py for the fields' defaults)."""
  rank: int = 8
  alpha: float = 16.0
  targets: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")
  dropout: float = 0.0
  rslora: bool = False
  quant: str = "none"  # none | int8 | nf4: how the frozen base is stored (QLoRA)
  quant_block: int = 64
  dtype: str = "float32"  # the adapters' dtype (PEFT keeps them float32 under bf16 autocast)

  def __post_init__(self):
    # One order (TARGETS') for equal configs, whatever order they were given in.
    known = [t for t in TARGETS if t in self.targets]
    object.__setattr__(self, "targets", tuple(known + [t for t in self.targets if t not in TARGETS]))

  @property
  def scale(self) -> float:
    return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

  @property
  def keys(self) -> tuple[str, ...]:
    return tuple(TARGETS[t][0] for t in self.targets)

  def validate(self, where: str = "config.model.lora") -> "LoraConfig":
    if self.rank < 1:
      raise ValueError(f"{where}.rank={self.rank}: must be >= 1")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"{where}.dropout={self.dropout}: must be in [0, 1)")
    bad = [t for t in self.targets if t not in TARGETS]
    if bad or not self.targets:
      raise ValueError(f"{where}.targets={self.targets!r}: unknown {bad or 'empty'}; choose "
                       f"from {sorted(TARGETS)} (HF names q_proj.. are accepted too)")
    if self.quant not in ("none",) + quant.KINDS:
      raise ValueError(f"{where}.quant={self.quant!r}; expected 'none', 'int8' or 'nf4'")
    if self.quant_block < 2:
      raise ValueError(f"{where}.quant_block={self.quant_block}: must be >= 2")
    return self


def _target_name(t: str) -> str:
  t = str(t).strip()
  for short, (key, hf) in TARGETS.items():
    if t in (short, key, hf, hf.split(".")[-1]):
      return short
  return t  # validate() names it


def config_from(section: Any) -> LoraConfig | None:
  """The LoraConfig of a `config.model.lora` section, or None when it is absent or disabled."""
  if section is None or not section.get("enabled", False):
    return None
  targets = section.get("targets", LoraConfig.targets)
  if isinstance(targets, str):
    targets = [t for t in targets.split(",") if t.strip()]
  fields = {f.name for f in dataclasses.fields(LoraConfig)}
  unknown = sorted(set(section.keys()) - fields - {"enabled", "targets"})
  if unknown:
    raise ValueError(f"config.model.lora: unknown fields {unknown}; expected "
                     f"{sorted(fields | {'enabled'})}")
  kw = {k: section[k] for k in fields if k in section and k != "targets"}
  return LoraConfig(targets=tuple(_target_name(t) for t in targets), **kw).validate()


# --------------------------------------------------------------------------- shapes and init


def _kernel_shapes(cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], tuple]]:
  layers = transformer.param_shapes(cfg)["layers"]
  return {k: layers[k] for k in PROJECTIONS}


def adapter_shapes(cfg: ModelConfig, lcfg: LoraConfig) -> Params:
  """Shape and logical axis names of every adapter (the rank axis is replicated)."""
  out = {}
  for key in lcfg.keys:
    (L, d_in, d_out), (l_name, in_name, out_name) = _kernel_shapes(cfg)[key]
    out[key] = {"lora_a": ((L, d_in, lcfg.rank), (l_name, in_name, "lora_rank")),
                "lora_b": ((L, lcfg.rank, d_out), (l_name, "lora_rank", out_name))}
  return {"layers": out}


def _is_shape_leaf(x: Any) -> bool:
  return isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], tuple)


def init_adapters(cfg: ModelConfig, lcfg: LoraConfig, rng: jax.Array) -> Params:
  """PEFT's init: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform, a=sqrt(5)), B = 0."""
  dtype = jnp.dtype(lcfg.dtype)
  out = {}
  keys = jax.random.split(rng, len(lcfg.keys))
  for k, (key, shapes) in zip(keys, adapter_shapes(cfg, lcfg)["layers"].items()):
    (shape_a, _), (shape_b, _) = shapes["lora_a"], shapes["lora_b"]
    bound = 1.0 / math.sqrt(shape_a[1])
    out[key] = {"lora_a": jax.random.uniform(k, shape_a, jnp.float32, -bound, bound).astype(dtype),
                "lora_b": jnp.zeros(shape_b, dtype)}
  return {"layers": out}


# --------------------------------------------------------------------------- split / combine


def is_adapted(w: Any) -> bool:
  return isinstance(w, dict) and "lora_a" in w


def has_adapters(params: Params) -> bool:
  return any(is_adapted(v) for v in params.get("layers", {}).values())


def quantize_base(params: Params, lcfg: LoraConfig, shardings: Any = None,
                  donate: bool = False) -> Params:
  """The projection kernels quantised as `lcfg.quant` says (norms, embeddings and the output
  layer stay as they are, as in QLoRA); one jitted call per kernel, placed on `shardings`.
  With `donate` each float kernel is freed once quantised (peak: float model + one kernel's
  quantised copy, not two models); the caller's `params` is unusable afterwards."""
  if lcfg.quant == "none":
    return params
  layers = dict(params["layers"])
  for key in PROJECTIONS:
    sh = None if shardings is None else shardings["layers"][key]
    fn = jax.jit(lambda w: quant.quantize_layers(w, lcfg.quant, lcfg.quant_block),
                 out_shardings=sh, donate_argnums=(0,) if donate else ())
    layers[key] = fn(layers[key])
  return dict(params, layers=layers)


def combine(adapters: Params, base: Params, lcfg: LoraConfig,
            dropout_key: jax.Array | None = None) -> Params:
  """The params forward runs: each targeted kernel of `base` wrapped with its adapters.

  With `dropout_key` (training) and lcfg.dropout > 0 each adapter also gets its own per-layer
  dropout keys, so q, k and v (one input) draw independent masks, as PEFT's modules do."""
  layers = dict(base["layers"])
  names = sorted(adapters["layers"])
  keys = (jax.random.split(dropout_key, len(names))
          if dropout_key is not None and lcfg.dropout > 0 else None)
  for i, key in enumerate(names):
    ad = adapters["layers"][key]
    L = ad["lora_a"].shape[0]
    leaf = {"w": layers[key], "lora_a": ad["lora_a"], "lora_b": ad["lora_b"],
            "lora_scale": jnp.full((L,), lcfg.scale, jnp.float32)}
    if keys is not None:
      leaf["lora_dropout"] = {"key": jax.random.key_data(jax.random.split(keys[i], L)),
                              "rate": jnp.full((L,), lcfg.dropout, jnp.float32)}
    layers[key] = leaf
  return dict(base, layers=layers)


def split(params: Params) -> tuple[Params, Params]:
  """(adapters, base): the inverse of `combine` (dropout keys and scales dropped)."""
  layers, adapters = dict(params["layers"]), {}
  for key, w in params["layers"].items():
    if is_adapted(w):
      adapters[key] = {"lora_a": w["lora_a"], "lora_b": w["lora_b"]}
      layers[key] = w["w"]
  return {"layers": adapters}, dict(params, layers=layers)


def base_kernel(w: Any, dtype: Any = None) -> jax.Array:
  """The full-precision [.., in, out] kernel of a leaf (dequantised; adapters not added)."""
  if is_adapted(w):
    w = w["w"]
  if quant.is_quantized(w):
    return quant.dequantize(w, dtype or jnp.float32)
  return w if dtype is None else w.astype(dtype)


def merge(params: Params, dtype: Any = None) -> Params:
  """Plain params (what `hf.save` and a non-LoRA run take): W + scale A B per adapted kernel
  and quantised kernels dequantised, in `dtype` (default: the base's float dtype)."""
  layers = dict(params["layers"])
  for key, w in params["layers"].items():
    if not isinstance(w, dict):
      continue
    out_dtype = dtype or (jnp.float32 if quant.is_quantized(w.get("w", w))
                          else (w["w"] if is_adapted(w) else w).dtype)
    kernel = base_kernel(w, jnp.float32)
    if is_adapted(w):
      delta = jnp.einsum("lir,lro->lio", w["lora_a"].astype(jnp.float32),
                         w["lora_b"].astype(jnp.float32))
      kernel = kernel + delta * w["lora_scale"].astype(jnp.float32)[:, None, None]
    layers[key] = kernel.astype(out_dtype)
  return dict(params, layers=layers)


# --------------------------------------------------------------------------- training


def train_step(loss_fn: Any, optimizer: Any, lcfg: LoraConfig, totals_fn: Any = None,
               grad_accum: int = 1, schedule: Any = None) -> Any:
  """step(state, batch, base) -> (state, metrics): the shared train step (train/step.py, with
  the non-finite guard) where `state.params` are the adapters and `base` the frozen rest, a
  jit argument (arrays closed over by jit would be embedded as constants). Gradients and AdamW
  moments exist for the adapters only. Dropout keys come from (state.rng, state.step), so a
  resumed run draws the same masks."""
  totals_fn = totals_fn or step_lib.token_totals

  def step(state: Any, batch: Any, base: Params) -> Any:
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def adapted_loss(adapters: Params, b: Any, totals: Any) -> Any:
      return loss_fn(combine(adapters, base, lcfg, dropout_key=key), b, totals)

    inner = optim.guard_step(step_lib.make_train_step(adapted_loss, optimizer, totals_fn,
                                                      grad_accum, schedule))
    return inner(state, batch)
  return step


# --------------------------------------------------------------------------- sharding


def logical_axes_like(params: Params, cfg: ModelConfig) -> Any:
  """Logical axis names for any params tree of `cfg` (plain, adapted, quantised, or adapters
  alone), so `sharding.RULES` apply to adapters and quantised kernels too."""
  names = transformer.logical_axes(cfg)

  def leaf_axes(key: str, w: Any) -> Any:
    kernel = names["layers"][key]
    if quant.is_quantized(w):
      return quant.quantized_axes(kernel)
    if not isinstance(w, dict):
      return kernel
    l_name, in_name, out_name = kernel
    out = {}
    if "w" in w:
      out["w"] = leaf_axes(key, w["w"])
    out["lora_a"] = (l_name, in_name, "lora_rank")
    out["lora_b"] = (l_name, "lora_rank", out_name)
    if "lora_scale" in w:
      out["lora_scale"] = (l_name,)
    if "lora_dropout" in w:
      out["lora_dropout"] = {"key": (l_name, None), "rate": (l_name,)}
    return out

  result = {k: names[k] for k in params if k != "layers"}
  result["layers"] = {k: leaf_axes(k, w) for k, w in params["layers"].items()}
  return result


def shardings_like(params: Any, cfg: ModelConfig, mesh: Any) -> Any:
  """NamedShardings for `params` (arrays or ShapeDtypeStructs) by the logical-axis rules."""
  return sharding.tree_shardings(logical_axes_like(params, cfg), params, mesh)


def abstract_params(cfg: ModelConfig, lcfg: LoraConfig | None) -> tuple[Params, Params]:
  """(abstract adapters, abstract base) with nothing allocated (base quantised if asked)."""
  base = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  if lcfg is None:
    return {"layers": {}}, base
  if lcfg.quant != "none":
    layers = dict(base["layers"])
    for key in PROJECTIONS:
      layers[key] = jax.eval_shape(
          lambda w: quant.quantize_layers(w, lcfg.quant, lcfg.quant_block), layers[key])
    base = dict(base, layers=layers)
  adapters = jax.eval_shape(lambda: init_adapters(cfg, lcfg, jax.random.key(0)))
  return adapters, base


def count(tree: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
