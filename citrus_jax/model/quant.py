"""Weight-only quantisation of the frozen base for QLoRA: int8 and 4-bit NF4, block-wise absmax.

A quantised projection kernel is a dict leaf `{"q", "scale"}` in place of the [.., in, out]
array, so the params tree stays self-describing: `transformer._dense` sees the dict and
dequantises inside the matmul (per layer, inside the layer scan, so a full-precision copy of
the model never exists), and Orbax, sharding and `jax.tree` treat it like any other subtree.

Blocks are `block` consecutive entries of the INPUT dimension for one output column, which are
the blocks bitsandbytes uses (it flattens the torch [out, in] weight row-major into blocks of 64):
  w [.., D, O] -> [.., D/bs, bs, O]; scale = absmax over bs -> [.., D/bs, 1, O] (float32).
- int8: q = round(w / scale * 127) as int8 [.., D/bs, bs, O] (1 byte + 4/bs per weight).
- nf4: the index of the nearest of the 16 NormalFloat levels of w / scale (the bitsandbytes
  table), two indices per byte along bs: uint8 [.., D/bs, bs/2, O] (0.5 + 4/bs bytes per weight).
The kind is told by the dtype (int8 vs uint8); shapes give D, bs and O. Double quantisation of
the scales (QLoRA's 0.127 -> 0.5 bits per weight saving on the scales) is not done: 4/64 byte per
weight is 12% on top of the 4 bits.

Why own code and not qwix (0.1.8): qwix quantises by intercepting the dot_generals of Flax Linen/
NNX modules (its LoRA/QLoRA mode wraps module parameters); citrus_jax's decoder is pure functions
over a params dict, and quantised weights here must be plain pytree leaves that Orbax saves,
the logical-axis rules shard and the PEFT exporter reads. The numerics are ~60 lines.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("int8", "nf4")

# bitsandbytes' NF4 levels (functional.py, get_4bit_type('nf4')), ascending.
NF4_LEVELS = np.asarray([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], np.float32)
_NF4_MIDPOINTS = (NF4_LEVELS[1:] + NF4_LEVELS[:-1]) / 2


def is_quantized(w: Any) -> bool:
  """Whether a params leaf is a quantised kernel (`{"q", "scale"}`)."""
  return isinstance(w, dict) and "q" in w and "scale" in w


def kind_of(w: dict) -> str:
  return "int8" if jnp.dtype(w["q"].dtype) == jnp.int8 else "nf4"


def _blocked(w: jax.Array, block: int) -> jax.Array:
  *lead, d, o = w.shape
  if d % block:
    raise ValueError(f"quantise: the input dimension {d} of a {tuple(w.shape)} kernel is not a "
                     f"multiple of the block size {block} (config.model.lora.quant_block)")
  return w.reshape(*lead, d // block, block, o)


def quantize(w: jax.Array, kind: str, block: int = 64) -> dict[str, jax.Array]:
  """A [.., in, out] kernel as {"q", "scale"} (see the module docstring for the layout)."""
  if kind not in KINDS:
    raise ValueError(f"quantise: kind {kind!r}; expected one of {KINDS}")
  if kind == "nf4" and block % 2:
    raise ValueError(f"quantise: nf4 needs an even block size, got {block}")
  wb = _blocked(w.astype(jnp.float32), block)
  absmax = jnp.max(jnp.abs(wb), axis=-2, keepdims=True)
  scale = jnp.where(absmax > 0, absmax, 1.0)
  x = wb / scale
  if kind == "int8":
    return {"q": jnp.clip(jnp.round(x * 127.0), -127, 127).astype(jnp.int8),
            "scale": (scale / 127.0).astype(jnp.float32)}
  codes = jnp.searchsorted(jnp.asarray(_NF4_MIDPOINTS), x, side="left").astype(jnp.uint8)
  *lead, nb, bs, o = codes.shape
  pairs = codes.reshape(*lead, nb, bs // 2, 2, o)
  packed = (pairs[..., 0, :] << 4) | pairs[..., 1, :]
  return {"q": packed.astype(jnp.uint8), "scale": scale.astype(jnp.float32)}


def dequantize(w: dict[str, jax.Array], dtype: Any = jnp.float32) -> jax.Array:
  """The [.., in, out] kernel a quantised leaf stands for, in `dtype` (fused by XLA into the
  consumer; no float32 copy is materialised when dtype is bfloat16)."""
  q, scale = w["q"], w["scale"]
  if kind_of(w) == "int8":
    x = q.astype(jnp.float32) * scale
  else:
    hi, lo = (q >> 4) & 0xF, q & 0xF
    codes = jnp.stack([hi, lo], axis=-2)  # [.., nb, bs/2, 2, O]
    *lead, nb, half, _, o = codes.shape
    codes = codes.reshape(*lead, nb, 2 * half, o)
    x = jnp.take(jnp.asarray(NF4_LEVELS), codes.astype(jnp.int32), axis=0) * scale
  *lead, nb, bs, o = x.shape
  return x.reshape(*lead, nb * bs, o).astype(dtype)


def quantize_layers(w: jax.Array, kind: str, block: int = 64) -> dict[str, jax.Array]:
  """`quantize` one layer at a time over the leading [L] axis (bounded scratch memory: the
  float32 copy and the NF4 search of one layer, not of all of them)."""
  return jax.lax.map(lambda x: quantize(x, kind, block), w)


def quantized_axes(names: tuple) -> dict[str, tuple]:
  """Logical axis names of a quantised kernel's parts, from the kernel's (layers, in, out)
  names: the block axis takes the input axis's rule, the within-block axis is replicated."""
  *lead, d_name, o_name = names
  return {"q": (*lead, d_name, None, o_name), "scale": (*lead, d_name, None, o_name)}


def nbytes(tree: Any) -> int:
  """Bytes a params tree (quantised or not) takes."""
  return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))
