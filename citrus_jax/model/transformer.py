"""The decoder as pure functions over a params pytree (Llama-3.x, Qwen2.5 and Qwen3).

Params use the Hugging Face layout, so conversion is renaming and transposing only: projection
kernels are stored [in, out] (HF stores [out, in]), per-layer tensors are stacked on a leading
`layers` axis, and RoPE is the split-half variant. Activations are flattened to 2-D around every
projection, which is markedly faster on XLA:CPU and no slower on accelerators.

Shape suffixes: B batch, T query tokens, S key slots, D d_model, F d_ff, V vocab, H query heads,
K kv heads, G query heads per kv head, E head_dim, L layers, N = B*T.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from citrus_jax.model import quant, splash
from citrus_jax.model.config import ModelConfig
from citrus_jax.model.rope import apply_rope, rope_tables

Params = dict[str, Any]
Cache = dict[str, jax.Array]

_MASKED = -1e30  # finite, so a fully masked (padding) row gives a uniform softmax, not NaN


def param_shapes(cfg: ModelConfig) -> dict[str, Any]:
  """Shape and logical axis names of every parameter; the single source of the layout."""
  L, D, F, V = cfg.n_layers, cfg.d_model, cfg.d_ff, cfg.vocab_size
  layers = {
      "attn_norm": ((L, D), ("layers", "norm")),
      "wq": ((L, D, cfg.q_dim), ("layers", "embed", "q_heads")),
      "wk": ((L, D, cfg.kv_dim), ("layers", "embed", "kv_heads")),
      "wv": ((L, D, cfg.kv_dim), ("layers", "embed", "kv_heads")),
      "wo": ((L, cfg.q_dim, D), ("layers", "q_heads", "embed")),
      "mlp_norm": ((L, D), ("layers", "norm")),
      "w_gate": ((L, D, F), ("layers", "embed", "mlp")),
      "w_up": ((L, D, F), ("layers", "embed", "mlp")),
      "w_down": ((L, F, D), ("layers", "mlp", "embed")),
  }
  if cfg.qkv_bias:
    layers["bq"] = ((L, cfg.q_dim), ("layers", "q_heads"))
    layers["bk"] = ((L, cfg.kv_dim), ("layers", "kv_heads"))
    layers["bv"] = ((L, cfg.kv_dim), ("layers", "kv_heads"))
  if cfg.qk_norm:  # one [head_dim] weight shared by every head (Qwen3)
    layers["q_norm"] = ((L, cfg.head_dim), ("layers", "norm"))
    layers["k_norm"] = ((L, cfg.head_dim), ("layers", "norm"))
  shapes = {
      "embed": ((V, D), ("vocab", "embed")),
      "layers": layers,
      "final_norm": ((D,), ("norm",)),
  }
  if not cfg.tie_embeddings:
    shapes["lm_head"] = ((D, V), ("embed", "vocab"))
  return shapes


def _is_leaf(x: Any) -> bool:
  return isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], tuple)


def logical_axes(cfg: ModelConfig) -> Params:
  """Pytree (like params) of logical axis-name tuples, for `sharding.param_shardings`."""
  return jax.tree.map(lambda leaf: leaf[1], param_shapes(cfg), is_leaf=_is_leaf)


def init_params(cfg: ModelConfig, rng: jax.Array) -> Params:
  """Random init as transformers does it: normal(0.02) weights, unit norms, zero biases."""
  shapes = param_shapes(cfg)
  flat, treedef = jax.tree.flatten_with_path(shapes, is_leaf=_is_leaf)
  keys = jax.random.split(rng, len(flat))
  dtype = jnp.dtype(cfg.param_dtype)
  leaves = []
  for key, (path, (shape, _)) in zip(keys, flat):
    name = jax.tree_util.keystr(path[-1:])
    if "norm" in name:
      leaves.append(jnp.ones(shape, dtype))
    elif name.strip("[]'").startswith("b"):
      leaves.append(jnp.zeros(shape, dtype))
    else:
      leaves.append((0.02 * jax.random.normal(key, shape, jnp.float32)).astype(dtype))
  return jax.tree.unflatten(treedef, leaves)


def count_params(cfg: ModelConfig) -> int:
  """Parameter count from shapes only (jax.eval_shape: nothing is allocated)."""
  abstract = jax.eval_shape(functools.partial(init_params, cfg), jax.random.key(0))
  return sum(int(x.size) for x in jax.tree.leaves(abstract))


def init_cache(cfg: ModelConfig, batch: int, max_len: int) -> Cache:
  """An empty KV cache; slot segment id 0 marks an empty (never attended) slot."""
  shape = (cfg.n_layers, batch, max_len, cfg.n_kv_heads, cfg.head_dim)
  dtype = jnp.dtype(cfg.compute_dtype)
  return {
      "k": jnp.zeros(shape, dtype),
      "v": jnp.zeros(shape, dtype),
      "segment_ids": jnp.zeros((batch, max_len), jnp.int32),
      "index": jnp.zeros((), jnp.int32),
  }


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
  """RMSNorm in float32, cast back, then scaled (the transformers order of operations)."""
  x32 = x.astype(jnp.float32)
  normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return weight.astype(x.dtype) * normed.astype(x.dtype)


def lora_delta(x_ND: jax.Array, w: dict) -> jax.Array:
  """scale * dropout(x) A B, in x's dtype (the adapter part of `_dense`; dropout only when
  model/lora.combine gave the leaf keys)."""
  h = x_ND
  if "lora_dropout" in w:
    d = w["lora_dropout"]
    keep = 1.0 - d["rate"]
    mask = jax.random.bernoulli(jax.random.wrap_key_data(d["key"]), keep, h.shape)
    h = jnp.where(mask, h / keep.astype(h.dtype), jnp.zeros((), h.dtype))
  y = (h @ w["lora_a"].astype(h.dtype)) @ w["lora_b"].astype(h.dtype)
  return y * w["lora_scale"].astype(y.dtype)


def _dense(x_ND: jax.Array, w: Any, b: jax.Array | None = None) -> jax.Array:
  """x @ w (+ b). `w` is a kernel array, or a dict leaf: a quantised kernel {"q", "scale"}
  (dequantised here, inside the matmul; see model/quant.py) or a LoRA-adapted kernel
  {"w", "lora_a", "lora_b", "lora_scale"} (base + adapters, never merged; model/lora.py)."""
  if isinstance(w, dict):
    if "lora_a" in w:
      y = _dense(x_ND, w["w"]) + lora_delta(x_ND, w)
    else:
      y = x_ND @ quant.dequantize(w, x_ND.dtype)
  else:
    y = x_ND @ w.astype(x_ND.dtype)
  return y if b is None else y + b.astype(y.dtype)


def attention_kernel(cfg: ModelConfig, dtype: Any) -> str:
  """The kernel `cfg.attention` means here ("auto": splash on a TPU, cudnn on a GPU in 16-bit,
  else einsum; the platform is the active mesh's, so a TPU AOT compile from a CPU gets splash)."""
  if cfg.attention != "auto":
    return cfg.attention
  platform = splash.target_platform()
  if platform == "tpu":
    return "splash"
  on_gpu = platform == "gpu"
  return "cudnn" if on_gpu and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) else "einsum"


def _attention(q_BTHE, k_BSKE, v_BSKE, mask_BTS, cfg: ModelConfig) -> jax.Array:
  B, T, H, E = q_BTHE.shape
  kernel = attention_kernel(cfg, q_BTHE.dtype)
  if kernel == "splash":  # causal + segments read back from the mask; decode/odd T: einsum
    if splash.supported(T, k_BSKE.shape[1]):
      return splash.attention_from_mask(q_BTHE, k_BSKE, v_BSKE, mask_BTS, cfg)
    kernel = "einsum"
  if kernel != "einsum" and T == k_BSKE.shape[1]:
    # Padding queries attend to themselves, so no row is fully masked (fused kernels may give
    # NaN there); every other row already includes its diagonal.
    mask_BTS = mask_BTS | jnp.eye(T, dtype=bool)[None]
    out = jax.nn.dot_product_attention(q_BTHE, k_BSKE, v_BSKE, mask=mask_BTS[:, None],
                                       implementation=kernel)
    return out.reshape(B * T, H * E)
  K = cfg.n_kv_heads
  q_BTKGE = q_BTHE.reshape(B, T, K, H // K, E)  # HF repeat_kv: head h uses kv head h // G
  scores = jnp.einsum("btkge,bske->bkgts", q_BTKGE, k_BSKE, preferred_element_type=jnp.float32)
  scores = scores * (E ** -0.5)
  scores = jnp.where(mask_BTS[:, None, None], scores, _MASKED)
  probs = jax.nn.softmax(scores, axis=-1).astype(v_BSKE.dtype)
  out = jnp.einsum("bkgts,bske->btkge", probs, v_BSKE)
  return out.reshape(B * T, H * E)


class LayerInputs(NamedTuple):
  """What every layer of one forward pass reads alike (the params and cache slices differ)."""
  cos: jax.Array  # RoPE tables for the new tokens' positions
  sin: jax.Array
  mask_BTS: jax.Array  # new token t may attend to key slot s
  index: jax.Array  # cache slot of the first new token (0 without a cache)


def _layer(cfg: ModelConfig, x_BTD: jax.Array, lp: dict, shared: LayerInputs,
           k_cache: jax.Array | None, v_cache: jax.Array | None):
  """One pre-norm block. With a cache, new keys/values are written at `shared.index` first."""
  cos, sin, mask_BTS, index = shared
  B, T, D = x_BTD.shape
  h_ND = rms_norm(x_BTD, lp["attn_norm"], cfg.norm_eps).reshape(B * T, D)
  q = _dense(h_ND, lp["wq"], lp.get("bq")).reshape(B, T, cfg.n_heads, cfg.head_dim)
  k = _dense(h_ND, lp["wk"], lp.get("bk")).reshape(B, T, cfg.n_kv_heads, cfg.head_dim)
  v = _dense(h_ND, lp["wv"], lp.get("bv")).reshape(B, T, cfg.n_kv_heads, cfg.head_dim)
  if cfg.qk_norm:  # per head, over head_dim, before RoPE (Qwen3)
    q = rms_norm(q, lp["q_norm"], cfg.norm_eps)
    k = rms_norm(k, lp["k_norm"], cfg.norm_eps)
  q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
  if k_cache is not None:
    k = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), index, axis=1)
    v = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), index, axis=1)
  attn_ND = _attention(q, k, v, mask_BTS, cfg)
  x_BTD = x_BTD + _dense(attn_ND, lp["wo"]).reshape(B, T, D)
  h_ND = rms_norm(x_BTD, lp["mlp_norm"], cfg.norm_eps).reshape(B * T, D)
  gated = jax.nn.silu(_dense(h_ND, lp["w_gate"])) * _dense(h_ND, lp["w_up"])
  x_BTD = x_BTD + _dense(gated, lp["w_down"]).reshape(B, T, D)
  return x_BTD, k, v


def _remat(fn, policy: str):
  """fn rematerialised under cfg.remat: none | full (recompute all) | dots (keep matmuls)."""
  if policy == "none":
    return fn
  if policy == "full":
    return jax.checkpoint(fn)
  return jax.checkpoint(fn, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)


def forward(
    params: Params,
    tokens_BT: jax.Array,
    cfg: ModelConfig,
    *,
    positions_BT: jax.Array | None = None,
    segment_ids_BT: jax.Array | None = None,
    cache: Cache | None = None,
    return_hidden: bool = False,
) -> tuple[jax.Array, Cache | None]:
  """Logits [B, T, V] (float32) and the updated cache (None without one).

  Attention is causal by slot and restricted to equal, non-zero segment ids, so packed documents
  never see each other and padding (segment 0) is never attended. With `cache`, the T new tokens
  occupy slots [index, index + T) and attend to every filled slot before them: the same code
  serves prefill (T = prompt length) and one-token decode steps. With `return_hidden`, the final
  normed hidden states [B, T, D] are returned in place of logits (for chunked losses).
  """
  B, T = tokens_BT.shape
  cdt = jnp.dtype(cfg.compute_dtype)
  if segment_ids_BT is None:
    segment_ids_BT = jnp.ones((B, T), jnp.int32)
  if positions_BT is None:
    positions_BT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
  if cache is None:
    index = jnp.zeros((), jnp.int32)
    key_segments_BS = segment_ids_BT
  else:
    index = cache["index"]
    key_segments_BS = jax.lax.dynamic_update_slice_in_dim(
        cache["segment_ids"], segment_ids_BT.astype(jnp.int32), index, axis=1)
  q_slots_T = index + jnp.arange(T)
  k_slots_S = jnp.arange(key_segments_BS.shape[1])
  mask_BTS = ((q_slots_T[:, None] >= k_slots_S[None, :])[None]
              & (segment_ids_BT[:, :, None] == key_segments_BS[:, None, :])
              & (key_segments_BS[:, None, :] != 0))
  cos, sin = rope_tables(positions_BT, cfg)
  x_BTD = jnp.take(params["embed"], tokens_BT, axis=0).astype(cdt)

  layer_fn = _remat(functools.partial(_layer, cfg), cfg.remat)  # cfg closed over: static
  shared = LayerInputs(cos=cos, sin=sin, mask_BTS=mask_BTS, index=index)
  has_cache = cache is not None
  layers = params["layers"]
  if cfg.scan_layers:
    def body(x, xs):
      lp, kc, vc = xs
      x, k, v = layer_fn(x, lp, shared, kc, vc)
      return x, ((k, v) if has_cache else None)
    xs = (layers, cache["k"], cache["v"]) if has_cache else (layers, None, None)
    x_BTD, kv = jax.lax.scan(body, x_BTD, xs)
  else:
    ks, vs = [], []
    for i in range(cfg.n_layers):
      lp = jax.tree.map(lambda a, i=i: a[i], layers)
      kc = cache["k"][i] if has_cache else None
      vc = cache["v"][i] if has_cache else None
      x_BTD, k, v = layer_fn(x_BTD, lp, shared, kc, vc)
      ks.append(k)
      vs.append(v)
    kv = (jnp.stack(ks), jnp.stack(vs)) if has_cache else None

  new_cache = None
  if has_cache:
    new_cache = {"k": kv[0], "v": kv[1], "segment_ids": key_segments_BS, "index": index + T}
  h_BTD = rms_norm(x_BTD, params["final_norm"], cfg.norm_eps)
  if return_hidden:
    return h_BTD, new_cache
  return logits_from_hidden(params, h_BTD, cfg), new_cache


def unembed_matrix(params: Params, cfg: ModelConfig) -> jax.Array:
  """The [D, V] output projection (the transposed embedding when tied)."""
  return params["embed"].T if cfg.tie_embeddings else params["lm_head"]


def _batch_sharded(x: jax.Array) -> jax.Array:
  """Pins the leading (batch) axis to the data-parallel mesh axes when a mesh is set, so GSPMD
  all-gathers the FSDP-sharded weight instead of the batch (it otherwise may gather the
  [B*T, V] logits of the whole global batch on every device)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or not {"data", "fsdp"} <= set(mesh.axis_names):
    return x
  spec = jax.sharding.PartitionSpec(("data", "fsdp"), *([None] * (x.ndim - 1)))
  return jax.lax.with_sharding_constraint(x, spec)


def logits_from_hidden(params: Params, h_BTD: jax.Array, cfg: ModelConfig) -> jax.Array:
  h_BTD = _batch_sharded(h_BTD)
  B, T, D = h_BTD.shape
  w_DV = unembed_matrix(params, cfg)
  logits = _dense(h_BTD.reshape(B * T, D), w_DV)
  return _batch_sharded(logits.astype(jnp.float32).reshape(B, T, -1))
