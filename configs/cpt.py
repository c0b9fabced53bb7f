"""Continual pre-training (CPT) on domain text.

  python -m citrus_jax.main --config=configs/cpt.py:tiny --config.data.train_paths=corpus.jsonl \
      --config.tokenizer.path=tok.model
Presets: tiny (tests), demo (laptop CPU), llama3_1_8b, llama3_1_70b, qwen2_5_7b, qwen2_5_72b,
qwen3_8b, qwen3_32b.
"""
from typing import NamedTuple

from configs import base



class Preset(NamedTuple):
  model: str  # model preset (citrus_jax/model/config.py)
  mesh: tuple
  seq_len: int
  batch: int  # global batch, in packed rows
  lr: float
  steps: int
  remat: str
  dtype: str


_PAPER_8B = Preset(model="llama3_1_8b", mesh=(1, -1, 1), seq_len=8192, batch=512, lr=3e-5,
                   steps=50000, remat="full", dtype="bfloat16")
_PAPER_70B = _PAPER_8B._replace(model="llama3_1_70b", mesh=(1, -1, 8), lr=1.5e-5)
_PRESETS = {
    "tiny": Preset(model="tiny", mesh=(1, -1, 1), seq_len=64, batch=8, lr=1e-3, steps=20,
                   remat="none", dtype="float32"),
    "demo": Preset(model="demo", mesh=(1, -1, 1), seq_len=256, batch=16, lr=1e-3, steps=400,
                   remat="none", dtype="float32"),
    "llama3_2_1b": _PAPER_8B._replace(model="llama3_2_1b", seq_len=4096, batch=256,
                                      steps=10000, remat="dots"),
    "llama3_1_8b": _PAPER_8B,
    "llama3_1_70b": _PAPER_70B,
    "qwen2_5_7b": _PAPER_8B._replace(model="qwen2_5_7b"),
    "qwen2_5_72b": _PAPER_70B._replace(model="qwen2_5_72b"),
    "qwen3_8b": _PAPER_8B._replace(model="qwen3_8b"),
    "qwen3_32b": _PAPER_70B._replace(model="qwen3_32b"),
}


def get_config(preset: str = "tiny"):
  preset = preset or "tiny"
  base.check_preset("cpt.py", _PRESETS, preset)
  p = _PRESETS[preset]
  c = base.stage_config("cpt.py", _PRESETS, preset, "cpt", model=p.model, mesh=p.mesh,
                        remat=p.remat, dtype=p.dtype)
  c.data.seq_len = p.seq_len
  c.data.global_batch_size = p.batch
  c.optim.lr = p.lr
  c.optim.warmup_frac = 0.01
  c.train.num_steps = p.steps
  c.checkpoint.every = max(p.steps // 10, 10)
  return c
