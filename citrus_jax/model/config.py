"""Decoder hyper-parameters and the named presets (tiny, demo, Llama-3.x, Qwen2.5, Qwen3)."""
from __future__ import annotations

import dataclasses
from typing import Any

Family = str  # "llama", "qwen2" or "qwen3"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """One decoder config for the Llama-3.x, Qwen2.5 and Qwen3 (dense) families (HF field names in
  comments)."""

  family: Family = "llama"
  vocab_size: int = 256  # vocab_size
  d_model: int = 64  # hidden_size
  n_layers: int = 2  # num_hidden_layers
  n_heads: int = 4  # num_attention_heads
  n_kv_heads: int = 2  # num_key_value_heads
  head_dim: int = 16  # head_dim (hidden_size // num_attention_heads by default)
  d_ff: int = 128  # intermediate_size
  rope_theta: float = 500000.0
  # Llama-3.1/3.2 "llama3" rope scaling: (factor, low_freq_factor, high_freq_factor,
  # original_max_position_embeddings); None means plain RoPE.
  rope_scaling: tuple[float, float, float, int] | None = None
  norm_eps: float = 1e-5  # rms_norm_eps
  tie_embeddings: bool = False  # tie_word_embeddings
  qkv_bias: bool = False  # Qwen2: bias on q/k/v projections
  qk_norm: bool = False  # Qwen3: RMSNorm over head_dim on every q and k head, before RoPE
  max_seq_len: int = 2048  # max_position_embeddings
  bos_token_id: int | None = 1
  eos_token_id: int | None = 2
  # Numerics and memory, not architecture.
  param_dtype: str = "float32"
  compute_dtype: str = "float32"
  scan_layers: bool = True
  remat: str = "none"  # "none" | "full" | "dots"
  # Attention kernel for training and prefill (q and kv of one length): "einsum" (our two
  # einsums; every backend), "xla" or "cudnn" (jax.nn.dot_product_attention; cudnn is fused
  # flash attention on NVIDIA GPUs, bf16/fp16 only; 3x the train step of a 1B model at 4k
  # tokens on an H200), "splash" (Pallas splash attention, model/splash.py: the TPU kernel,
  # Pallas interpret mode elsewhere, for tests), "auto" (splash on a TPU, cudnn on a GPU in
  # bf16/fp16, else einsum). Cached decode, and splash at a length that is not a multiple of
  # 128, use "einsum".
  attention: str = "einsum"

  def replace(self, **kw: Any) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  @property
  def q_dim(self) -> int:
    return self.n_heads * self.head_dim

  @property
  def kv_dim(self) -> int:
    return self.n_kv_heads * self.head_dim

  def validate(self) -> "ModelConfig":
    if self.family not in ("llama", "qwen2", "qwen3"):
      raise ValueError(f"unknown model family {self.family!r}; expected 'llama', 'qwen2' or "
                       "'qwen3'")
    if self.n_heads % self.n_kv_heads:
      raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")
    if self.remat not in ("none", "full", "dots"):
      raise ValueError(f"remat={self.remat!r}; expected 'none', 'full' or 'dots'")
    if self.attention not in ("einsum", "xla", "cudnn", "splash", "auto"):
      raise ValueError(f"attention={self.attention!r}; expected 'einsum', 'xla', 'cudnn', "
                       "'splash' or 'auto'")
    if self.attention == "cudnn" and self.compute_dtype not in ("bfloat16", "float16"):
      raise ValueError(f"attention='cudnn' needs compute_dtype bfloat16 or float16, "
                       f"not {self.compute_dtype!r}")
    return self


_LLAMA31_SCALING = (8.0, 1.0, 4.0, 8192)
_LLAMA32_SCALING = (32.0, 1.0, 4.0, 8192)


def _qwen3(d_model: int, n_layers: int, n_heads: int, d_ff: int, *, tied: bool) -> ModelConfig:
  """A Qwen3 dense size: what varies with size; the rest is shared by every Hub checkpoint."""
  return ModelConfig(family="qwen3", vocab_size=151936, d_model=d_model, n_layers=n_layers,
                     n_heads=n_heads, n_kv_heads=8, head_dim=128, d_ff=d_ff, rope_theta=1e6,
                     norm_eps=1e-6, qk_norm=True, tie_embeddings=tied, max_seq_len=40960,
                     bos_token_id=151643, eos_token_id=151645)

PRESETS: dict[str, ModelConfig] = {
    # Unit tests: a few thousand parameters.
    "tiny": ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                        head_dim=16, d_ff=128, max_seq_len=256),
    "tiny_qwen": ModelConfig(family="qwen2", vocab_size=256, d_model=64, n_layers=2, n_heads=4,
                             n_kv_heads=2, head_dim=16, d_ff=128, rope_theta=1e6, norm_eps=1e-6,
                             qkv_bias=True, tie_embeddings=True, max_seq_len=256),
    "tiny_qwen3": ModelConfig(family="qwen3", vocab_size=256, d_model=64, n_layers=2, n_heads=4,
                              n_kv_heads=2, head_dim=32, d_ff=128, rope_theta=1e6, norm_eps=1e-6,
                              qk_norm=True, tie_embeddings=True, max_seq_len=256),
    # The laptop demo: ~8M parameters with a 4k vocabulary.
    "demo": ModelConfig(vocab_size=4096, d_model=256, n_layers=6, n_heads=8, n_kv_heads=4,
                        head_dim=32, d_ff=768, rope_theta=10000.0, tie_embeddings=True,
                        max_seq_len=1024),
    # The clinic-world demo (configs/demo.py): 2.4M parameters, ~5k training tokens/s on 2 CPU
    # cores, so a 10-minute run takes ~1,000 optimizer steps.
    "clinic": ModelConfig(vocab_size=4096, d_model=192, n_layers=4, n_heads=6, n_kv_heads=3,
                          head_dim=32, d_ff=512, rope_theta=10000.0, tie_embeddings=True,
                          max_seq_len=512),
    "llama3_2_1b": ModelConfig(vocab_size=128256, d_model=2048, n_layers=16, n_heads=32,
                               n_kv_heads=8, head_dim=64, d_ff=8192, rope_theta=500000.0,
                               rope_scaling=_LLAMA32_SCALING, tie_embeddings=True,
                               max_seq_len=131072, bos_token_id=128000, eos_token_id=128009),
    "llama3_1_8b": ModelConfig(vocab_size=128256, d_model=4096, n_layers=32, n_heads=32,
                               n_kv_heads=8, head_dim=128, d_ff=14336, rope_theta=500000.0,
                               rope_scaling=_LLAMA31_SCALING, max_seq_len=131072,
                               bos_token_id=128000, eos_token_id=128009),
    "llama3_1_70b": ModelConfig(vocab_size=128256, d_model=8192, n_layers=80, n_heads=64,
                                n_kv_heads=8, head_dim=128, d_ff=28672, rope_theta=500000.0,
                                rope_scaling=_LLAMA31_SCALING, max_seq_len=131072,
                                bos_token_id=128000, eos_token_id=128009),
    "qwen2_5_7b": ModelConfig(family="qwen2", vocab_size=152064, d_model=3584, n_layers=28,
                              n_heads=28, n_kv_heads=4, head_dim=128, d_ff=18944,
                              rope_theta=1e6, norm_eps=1e-6, qkv_bias=True, max_seq_len=131072,
                              bos_token_id=151643, eos_token_id=151645),
    "qwen2_5_72b": ModelConfig(family="qwen2", vocab_size=152064, d_model=8192, n_layers=80,
                               n_heads=64, n_kv_heads=8, head_dim=128, d_ff=29568,
                               rope_theta=1e6, norm_eps=1e-6, qkv_bias=True, max_seq_len=131072,
                               bos_token_id=151643, eos_token_id=151645),
    # Qwen3 dense (the Hub config.json values; head_dim 128 at every size, so q_dim != d_model
    # for 0.6B, 4B and 32B).
    "qwen3_0_6b": _qwen3(1024, 28, 16, 3072, tied=True),
    "qwen3_1_7b": _qwen3(2048, 28, 16, 6144, tied=True),
    "qwen3_4b": _qwen3(2560, 36, 32, 9728, tied=True),
    "qwen3_8b": _qwen3(4096, 36, 32, 12288, tied=False),
    "qwen3_14b": _qwen3(5120, 40, 40, 17408, tied=False),
    "qwen3_32b": _qwen3(5120, 64, 64, 25600, tied=False),
}


def get_preset(name: str, **overrides: Any) -> ModelConfig:
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; known: {', '.join(sorted(PRESETS))}")
  return PRESETS[name].replace(**overrides).validate()
