"""Splash attention (the Pallas TPU kernel jax ships) for training and prefill on TPU.

Why: the einsum path materialises fp32 [B, H, T, S] scores (and their gradient), which at 8192
tokens is what forces full remat and deep gradient accumulation on 70B; splash streams K/V
blocks through VMEM with an online softmax, skips fully masked blocks (causal, and the block
pairs two packed documents never share) and has a blocked backward (dq and dk/dv kernels).

It is `jax.experimental.pallas.ops.tpu.splash_attention` (jax 0.10.2): a per-example
[H, T, E] kernel with causal masking, `SegmentIds` for packed rows and GQA (query head h uses
kv head h // (H // K), the HF `repeat_kv` order), vmapped over the batch and, under a mesh,
run per shard inside `jax.shard_map` (batch over data x fsdp, heads over tensor), since
GSPMD cannot partition a Pallas call. Not tokamax: tokamax 0.0.13+ needs Python >= 3.12 (this
project is 3.11) and is a 0.0.x API; the kernel shipped inside jax moves with jax itself.

Semantics vs the einsum path (`transformer._attention`): identical on every real token (same
causal-by-slot, same-segment, never-padding mask; q is scaled by E**-0.5 before the kernel
instead of the fp32 scores after it). A padding query (segment 0) attends the padding before
it here, where the einsum path gives it a uniform softmax over all keys; padding outputs never
reach a real token (nothing attends padding keys) nor the loss (loss_mask is 0 there).

Off TPU (tests, CPU) the kernel runs in Pallas interpret mode: correct but slow, for checks.
The target platform is read from the active mesh (so a TPU ahead-of-time compile from a CPU
host, as plan mode does, lowers the real Mosaic kernel), else from `jax.default_backend()`.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as sa
from jax.sharding import PartitionSpec as P

LANES = 128  # the kernel's q and kv blocks are multiples of the TPU lane width
_BLOCKS = (512, 256, 128)  # largest that divides T is used (MaxText trains with 512)


def supported(q_len: int, kv_len: int) -> bool:
  """Whether splash can run this self-attention (no cache offset, T a multiple of 128)."""
  return q_len == kv_len and q_len % LANES == 0


def target_platform() -> str:
  """The platform the traced computation is for: the active mesh's, else the default backend."""
  mesh = jax.sharding.get_abstract_mesh()
  device = None if mesh.empty else getattr(mesh, "abstract_device", None)
  return getattr(device, "platform", None) or jax.default_backend()


def _block(seq_len: int) -> int:
  return next(b for b in _BLOCKS if seq_len % b == 0)


def _kernel(n_heads: int, seq_len: int, block: int, interpret: bool) -> sa.SplashAttentionKernel:
  """The kernel for (heads, length, block). Built at each trace, not cached: its mask-info
  arrays become constants of the trace that made them (a cached one would leak them into the
  next trace, and evaluating them eagerly fails under an ahead-of-time TPU mesh)."""
  sizes = sa.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                        block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                        block_q_dq=block, block_kv_dq=block)
  mask = sa.MultiHeadMask([sa.CausalMask((seq_len, seq_len)) for _ in range(n_heads)])
  return sa.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                            interpret=interpret)


def _local(q_BTHE: jax.Array, k_BSKE: jax.Array, v_BSKE: jax.Array, seg_BT: jax.Array,
           interpret: bool) -> jax.Array:
  """Splash on one shard's (or the whole) batch: [B, T, H, E] out."""
  B, T, H, E = q_BTHE.shape
  kernel = _kernel(H, T, _block(T), interpret)
  q_BHTE = jnp.swapaxes(q_BTHE * jnp.asarray(E ** -0.5, q_BTHE.dtype), 1, 2)
  k_BKSE, v_BKSE = jnp.swapaxes(k_BSKE, 1, 2), jnp.swapaxes(v_BSKE, 1, 2)

  def one(q, k, v, seg):
    return kernel(q, k, v, segment_ids=sa.SegmentIds(q=seg, kv=seg))

  out_BHTE = jax.vmap(one)(q_BHTE, k_BKSE, v_BKSE, seg_BT.astype(jnp.int32))
  return jnp.swapaxes(out_BHTE, 1, 2).astype(q_BTHE.dtype)


def _mesh_specs(mesh: Any, batch: int, kv_heads: int) -> tuple[Any, Any]:
  """Batch over whichever of data/fsdp divide it, heads over tensor when it divides K."""
  size = dict(mesh.shape)
  batch_axes = tuple(a for a in ("data", "fsdp") if size.get(a, 1) > 1)
  n = 1
  for a in batch_axes:
    n *= size[a]
  if batch_axes and batch % n:
    batch_axes = ()
  heads = "tensor" if size.get("tensor", 1) > 1 and kv_heads % size["tensor"] == 0 else None
  b = (batch_axes[0] if len(batch_axes) == 1 else batch_axes) if batch_axes else None
  return P(b, None, heads, None), P(b, None)


def attention(q_BTHE: jax.Array, k_BSKE: jax.Array, v_BSKE: jax.Array, segment_ids_BT: jax.Array,
              cfg: Any = None, *, interpret: bool | None = None) -> jax.Array:
  """Causal, segment-masked attention [B*T, H*E] (the layout `transformer._attention` returns).

  q [B, T, H, E], k/v [B, T, K, E] (K divides H), segment ids [B, T] (0 = padding; tokens attend
  earlier tokens of their own segment). `interpret` None: interpret mode unless compiling for
  TPU. `cfg` is unused (kept for the `_attention` calling convention).
  """
  del cfg
  B, T, H, E = q_BTHE.shape
  S, K = k_BSKE.shape[1], k_BSKE.shape[2]
  if not supported(T, S):
    raise ValueError(f"model.attention='splash' needs query length == key length and a multiple "
                     f"of {LANES}; got T={T}, S={S} (use 'einsum' for decode or odd lengths)")
  if H % K:
    raise ValueError(f"splash attention: n_heads={H} is not a multiple of n_kv_heads={K}")
  if interpret is None:
    interpret = target_platform() != "tpu"
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    out = _local(q_BTHE, k_BSKE, v_BSKE, segment_ids_BT, interpret)
  else:
    qkv_spec, seg_spec = _mesh_specs(mesh, B, K)
    fn = jax.shard_map(functools.partial(_local, interpret=interpret), mesh=mesh,
                       in_specs=(qkv_spec, qkv_spec, qkv_spec, seg_spec), out_specs=qkv_spec,
                       check_vma=False)
    out = fn(q_BTHE, k_BSKE, v_BSKE, segment_ids_BT)
  return out.reshape(B * T, H * E)


def segment_ids_from_mask(mask_BTS: jax.Array) -> jax.Array:
  """Canonical segment ids [B, T] from the self-attention mask `transformer.forward` builds.

  Row t of that mask is {s <= t : seg[s] == seg[t] != 0}, so its first True slot is the first
  occurrence of t's segment: first slot + 1 names the segment exactly (for any layout, packed or
  not), and an empty row (its own slot masked) is padding, id 0.
  """
  first = jnp.argmax(mask_BTS, axis=-1).astype(jnp.int32)
  own = jnp.diagonal(mask_BTS, axis1=1, axis2=2)
  return jnp.where(own, first + 1, 0)


def attention_from_mask(q_BTHE: jax.Array, k_BSKE: jax.Array, v_BSKE: jax.Array,
                        mask_BTS: jax.Array, cfg: Any = None, *,
                        interpret: bool | None = None) -> jax.Array:
  """Drop-in for `transformer._attention(q, k, v, mask_BTS, cfg)` on self-attention (T == S).

  Reads the segments back from the dense mask (`segment_ids_from_mask`), so the call site
  needs no new argument; the [B, T, T] bool mask still exists once (B x 64 MiB at 8192), the
  [B, H, T, T] fp32 scores do not.
  """
  return attention(q_BTHE, k_BSKE, v_BSKE, segment_ids_from_mask(mask_BTS), cfg,
                   interpret=interpret)
