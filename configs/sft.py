"""Supervised fine-tuning (SFT): chat data, loss on assistant tokens only, in chained stages.

One stage (data from config.data):
  python -m citrus_jax.main --config=configs/sft.py:tiny --config.data.train_paths=sft.jsonl \
      --config.tokenizer.path=tok.model
Citrus's three stages, each in <workdir>/<name>, each starting from the previous stage's params:
  python -m citrus_jax.main --config=configs/sft.py:citrus_llama3_1_70b \
      --config.init.hf_dir=/ckpt/Llama-3.1-70B-cpt \
      '--config.sft.stages[0].train_paths=general.jsonl' \
      '--config.sft.stages[1].train_paths=complex.jsonl' \
      '--config.sft.stages[2].train_paths=citrus_s3.jsonl'
A stage field left None (lr, num_epochs, num_steps, batch_size) or "" (paths) takes the
top-level value (optim.lr, data.num_epochs, train.num_steps, data.global_batch_size,
data.train_paths / eval_paths). train.num_steps <= 0
derives the steps from data.num_epochs. --config.mode=inspect prints rendered examples with their
trained spans and the loss-mask audit, then exits.
Presets: tiny (tests), demo (laptop CPU), citrus_llama3_1_8b, citrus_llama3_1_70b,
citrus_qwen2_5_72b, citrus_qwen3_8b, citrus_qwen3_32b (Citrus SFT defaults: lr 5e-6 cosine,
5% warmup, 3 epochs, AdamW wd 0.1, 8192 tokens, 512 sequences per batch, bf16 compute, full
remat).
"""
import ml_collections
from ml_collections import config_dict

from configs import base

# preset -> (model preset, mesh, seq_len, global batch, lr, steps, epochs, remat, dtype, stages)
_PRESETS = {
    "tiny": ("tiny", (1, -1, 1), 128, 8, 1e-3, 20, 0, "none", "float32", ("sft",)),
    "demo": ("demo", (1, -1, 1), 512, 16, 3e-4, 0, 3, "none", "float32", ("sft",)),
    "citrus_llama3_1_8b": ("llama3_1_8b", (1, -1, 1), 8192, 512, 5e-6, 0, 3, "full", "bfloat16",
                           ("sft1", "sft2", "sft3")),
    "citrus_llama3_1_70b": ("llama3_1_70b", (1, -1, 8), 8192, 512, 5e-6, 0, 3, "full",
                            "bfloat16", ("sft1", "sft2", "sft3")),
    "citrus_qwen2_5_72b": ("qwen2_5_72b", (1, -1, 8), 8192, 512, 5e-6, 0, 3, "full", "bfloat16",
                           ("sft1", "sft2", "sft3")),
    # Qwen3 dense (the Citrus SFT recipe on Qwen3; chat format qwen3, see citrus_jax/chat.py).
    "citrus_qwen3_8b": ("qwen3_8b", (1, -1, 1), 8192, 512, 5e-6, 0, 3, "full", "bfloat16",
                        ("sft1", "sft2", "sft3")),
    "citrus_qwen3_32b": ("qwen3_32b", (1, -1, 8), 8192, 512, 5e-6, 0, 3, "full", "bfloat16",
                         ("sft1", "sft2", "sft3")),
}


def stage(name: str, train_paths: str = "", eval_paths: str = "", lr: float | None = None,
          num_epochs: int | None = None, num_steps: int | None = None,
          batch_size: int | None = None) -> ml_collections.ConfigDict:
  """One SFT stage; unset fields fall back to the top-level config."""
  def typed(value, kind):
    return config_dict.placeholder(kind) if value is None else value
  return ml_collections.ConfigDict(dict(
      name=name, train_paths=train_paths, eval_paths=eval_paths, lr=typed(lr, float),
      num_epochs=typed(num_epochs, int), num_steps=typed(num_steps, int),
      batch_size=typed(batch_size, int)))


def get_config(preset: str = "tiny"):
  preset = preset or "tiny"
  model, mesh, seq, batch, lr, steps, epochs, remat, dtype, names = _PRESETS.get(preset,
                                                                                 (None,) * 10)
  c = base.stage_config("sft.py", _PRESETS, preset, "sft", model=model, mesh=mesh, remat=remat,
                        dtype=dtype)
  c.data.seq_len = seq  # max_seq_len: rows of seq_len inputs; longer examples keep their end
  c.data.global_batch_size = batch
  c.data.num_epochs = epochs
  c.data.format = "auto"  # auto | jsonl | json | hf
  c.optim.lr = lr
  c.optim.schedule = "cosine"
  c.optim.warmup_frac = 0.05
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
  c.optim.weight_decay = 0.1
  c.train.num_steps = steps
  c.checkpoint.every = 10 if preset == "tiny" else 100 if preset == "demo" else 200
  c.sft = ml_collections.ConfigDict(dict(
      stages=tuple(stage(n) for n in names),
      select="",  # comma-separated stage names to run (empty: all); the first starts from init
      pack=True,  # several examples per row (False: one example per row, padded)
      chat_format="",  # "" = the tokenizer's template; or llama3 | chatml | qwen3 | plain
      split="train",  # for `datasets` directories
      inspect_examples=3,  # --config.mode=inspect shows this many rendered examples per stage
  ))
  return c
