"""Continual pre-training (CPT) on domain text.

  python -m citrus_jax.main --config=configs/cpt.py:tiny --config.data.train_paths=corpus.jsonl \
      --config.tokenizer.path=tok.model
Presets: tiny (tests), demo (laptop CPU), llama3_1_8b, llama3_1_70b, qwen2_5_7b, qwen2_5_72b,
qwen3_8b, qwen3_32b.
"""
from configs import base

# preset -> (model preset, mesh, seq_len, global batch, lr, steps, remat, dtype)
_PRESETS = {
    "tiny": ("tiny", (1, -1, 1), 64, 8, 1e-3, 20, "none", "float32"),
    "demo": ("demo", (1, -1, 1), 256, 16, 1e-3, 400, "none", "float32"),
    "llama3_2_1b": ("llama3_2_1b", (1, -1, 1), 4096, 256, 3e-5, 10000, "dots", "bfloat16"),
    "llama3_1_8b": ("llama3_1_8b", (1, -1, 1), 8192, 512, 3e-5, 50000, "full", "bfloat16"),
    "llama3_1_70b": ("llama3_1_70b", (1, -1, 8), 8192, 512, 1.5e-5, 50000, "full", "bfloat16"),
    "qwen2_5_7b": ("qwen2_5_7b", (1, -1, 1), 8192, 512, 3e-5, 50000, "full", "bfloat16"),
    "qwen2_5_72b": ("qwen2_5_72b", (1, -1, 8), 8192, 512, 1.5e-5, 50000, "full", "bfloat16"),
    "qwen3_8b": ("qwen3_8b", (1, -1, 1), 8192, 512, 3e-5, 50000, "full", "bfloat16"),
    "qwen3_32b": ("qwen3_32b", (1, -1, 8), 8192, 512, 1.5e-5, 50000, "full", "bfloat16"),
}


def get_config(preset: str = "tiny"):
  preset = preset or "tiny"
  model, mesh, seq, batch, lr, steps, remat, dtype = _PRESETS.get(preset, (None,) * 8)
  c = base.stage_config("cpt.py", _PRESETS, preset, "cpt", model=model, mesh=mesh, remat=remat,
                        dtype=dtype)
  c.data.seq_len = seq
  c.data.global_batch_size = batch
  c.optim.lr = lr
  c.optim.warmup_frac = 0.01
  c.train.num_steps = steps
  c.checkpoint.every = max(steps // 10, 10)
  return c
