"""Rotary position embeddings in the HF split-half layout, with Llama-3.1 "llama3" scaling."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from citrus_jax.model.config import ModelConfig


def inverse_frequencies(cfg: ModelConfig) -> np.ndarray:
  """Per-pair rotation frequencies, float32, computed as transformers does (bit-for-bit)."""
  dim = cfg.head_dim
  inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))
  inv_freq = inv_freq.astype(np.float32)
  if cfg.rope_scaling is None:
    return inv_freq
  factor, low_freq_factor, high_freq_factor, old_context_len = cfg.rope_scaling
  low_freq_wavelen = old_context_len / low_freq_factor
  high_freq_wavelen = old_context_len / high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  # Long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
  scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
  smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
  return np.where(is_medium, smoothed, scaled).astype(np.float32)


def rope_tables(positions_BT: jax.Array, cfg: ModelConfig) -> tuple[jax.Array, jax.Array]:
  """cos and sin tables [B, T, E] (E = head_dim, F = E / 2 frequencies; the letters of
  model/transformer.py) for integer positions."""
  inv_freq_F = jnp.asarray(inverse_frequencies(cfg))
  angles_BTF = positions_BT.astype(jnp.float32)[..., None] * inv_freq_F
  angles_BTE = jnp.concatenate([angles_BTF, angles_BTF], axis=-1)
  return jnp.cos(angles_BTE), jnp.sin(angles_BTE)


def apply_rope(x_BTHE: jax.Array, cos_BTE: jax.Array, sin_BTE: jax.Array) -> jax.Array:
  """Rotates the two halves of each head (HF `rotate_half`), in float32; x is [B, T, heads, E]
  (query heads H, or the K kv heads: the same tables serve both)."""
  x = x_BTHE.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  cos, sin = cos_BTE[:, :, None, :], sin_BTE[:, :, None, :]
  return (x * cos + rotated * sin).astype(x_BTHE.dtype)
