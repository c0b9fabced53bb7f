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
remat); LoRA: lora_tiny (tests, CPU), citrus_lora_llama3_1_70b (70B on a few chips). Any preset
trains LoRA adapters with --config.model.lora.enabled=True (config.model.lora, below).
"""
import os
from typing import NamedTuple

import ml_collections
from ml_collections import config_dict

from configs import base


class Preset(NamedTuple):
  model: str  # model preset (citrus_jax/model/config.py)
  mesh: tuple
  seq_len: int
  batch: int  # global batch (data.batch_unit: examples for citrus_*, packed rows otherwise)
  lr: float
  steps: int  # 0: derived from epochs
  epochs: int
  remat: str
  dtype: str
  stages: tuple  # stage names, each run in <workdir>/<name>


# The Citrus SFT recipe (three chained stages), on Llama-3.1-8B.
_CITRUS_8B = Preset(model="llama3_1_8b", mesh=(1, -1, 1), seq_len=8192, batch=512, lr=5e-6,
                    steps=0, epochs=3, remat="full", dtype="bfloat16",
                    stages=("sft1", "sft2", "sft3"))
_TINY = Preset(model="tiny", mesh=(1, -1, 1), seq_len=128, batch=8, lr=1e-3, steps=20, epochs=0,
               remat="none", dtype="float32", stages=("sft",))
_PRESETS = {
    "tiny": _TINY,
    "demo": Preset(model="demo", mesh=(1, -1, 1), seq_len=512, batch=16, lr=3e-4, steps=0,
                   epochs=3, remat="none", dtype="float32", stages=("sft",)),
    "citrus_llama3_1_8b": _CITRUS_8B,
    "citrus_llama3_1_70b": _CITRUS_8B._replace(model="llama3_1_70b", mesh=(1, -1, 8)),
    "citrus_qwen2_5_72b": _CITRUS_8B._replace(model="qwen2_5_72b", mesh=(1, -1, 8)),
    # Qwen3 dense (the Citrus SFT recipe on Qwen3; chat format qwen3, see citrus_jax/chat.py).
    "citrus_qwen3_8b": _CITRUS_8B._replace(model="qwen3_8b"),
    "citrus_qwen3_32b": _CITRUS_8B._replace(model="qwen3_32b", mesh=(1, -1, 8)),
    # LoRA (config.model.lora, see below). lora_tiny: the tiny random model on the shipped
    # fixture (tests/fixtures/lora), < 1 minute on CPU; leaves <workdir>/export/{peft,base,merged}.
    "lora_tiny": _TINY._replace(seq_len=256, lr=3e-3, steps=12),
    # Citrus SFT of Llama-3.1-70B with LoRA r=16 on every projection, on a few chips: the frozen
    # base in bf16 (no optimizer state), FSDP over all chips (v5p-8 = 4 chips, v6e-8 = 8 chips;
    # --config.model.lora.quant=nf4 for QLoRA), LoRA learning rate 2e-4.
    "citrus_lora_llama3_1_70b": _CITRUS_8B._replace(model="llama3_1_70b", lr=2e-4),
}

_FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                        "lora")


lora_section = base.lora_section  # noqa: E305  (kept for callers of configs.sft)


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


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
  preset = preset or "tiny"
  base.check_preset("sft.py", _PRESETS, preset)
  p = _PRESETS[preset]
  c = base.stage_config("sft.py", _PRESETS, preset, "sft", model=p.model, mesh=p.mesh,
                        remat=p.remat, dtype=p.dtype)
  c.data.seq_len = p.seq_len  # max_seq_len: rows of seq_len inputs; longer examples keep the end
  c.data.global_batch_size = p.batch
  c.data.num_epochs = p.epochs
  c.data.format = "auto"  # auto | jsonl | json | hf
  c.optim.lr = p.lr
  c.optim.schedule = "cosine"
  c.optim.warmup_frac = 0.05
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
  c.optim.weight_decay = 0.1
  paper = preset.startswith("citrus_")
  # As the reference SFT loop decays (model_train/supervised_finetune.py: no_decay = ["bias",
  # "LayerNorm.weight"], which matches no Llama/Qwen norm name): RMSNorm weights decayed,
  # biases not (train/optim.decay_mask). tiny/demo keep HF Trainer's rule (neither decayed).
  c.optim.decay_norms = paper
  c.optim.decay_biases = False
  # "examples": global_batch_size counts whole examples and 3 epochs train 3 x floor(N / 512)
  # steps, as the reference (supervised_finetune.py: 2 per GPU x 8 accumulation x 32 GPUs, one
  # example per sequence, drop_last); packed rows per step are chosen to fill them
  # (data/sft.plan_example_batches). "rows": packed rows per step.
  c.data.batch_unit = "examples" if paper else "rows"
  c.train.num_steps = p.steps
  c.checkpoint.every = 10 if preset == "tiny" else 100 if preset == "demo" else 200
  c.sft = ml_collections.ConfigDict(dict(
      stages=tuple(stage(n) for n in p.stages),
      select="",  # comma-separated stage names to run (empty: all); the first starts from init
      pack=True,  # several examples per row (False: one example per row, padded)
      chat_format="",  # "" = the tokenizer's template; or llama3 | chatml | qwen3 | plain
      split="train",  # for `datasets` directories
      inspect_examples=3,  # --config.mode=inspect shows this many rendered examples per stage
  ))
  c.model.lora = lora_section()  # off unless a LoRA preset or --config.model.lora.enabled=True
  if preset == "lora_tiny":
    c.model.lora = lora_section(True, rank=4, alpha=8.0, dropout=0.05)
    c.data.train_paths = os.path.normpath(os.path.join(_FIXTURE, "sft.jsonl"))
    c.tokenizer.path = os.path.normpath(os.path.join(_FIXTURE, "tok.model"))
    c.optim.warmup_frac = 0.0
    c.train.log_every = 2
    c.checkpoint.every = 6
    c.tensorboard = False
  elif preset == "citrus_lora_llama3_1_70b":
    c.model.lora = lora_section(True, rank=16, alpha=32.0, dropout=0.05)
    c.model.param_dtype = "bfloat16"  # the frozen base; adapters and their AdamW state fp32
    c.optim.weight_decay = 0.0
    c.optim.grad_accum = 128  # 1 sequence per chip per microbatch on 4 chips (v5p-8)
  return c
