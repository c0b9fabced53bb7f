"""RL stage: preference optimisation on chosen/rejected pairs (Citrus: CPO + SimPO).

  python -m citrus_jax.main --config=configs/rl.py:tiny --config.data.train_paths=pairs.jsonl \
      --config.init.checkpoint=runs/sft3 --config.tokenizer.path=tok.model
  --config.rl.loss=dpo|ipo|orpo switches the loss; beta/gamma/cpo_alpha/label_smoothing left
  unset take each loss's default (Citrus values for cpo_simpo: beta 10, gamma 5.4, alpha 0.05).
"""
from typing import NamedTuple

from ml_collections import config_dict

from configs import base



class Preset(NamedTuple):
  model: str  # model preset (citrus_jax/model/config.py)
  max_length: int  # prompt + response tokens
  max_prompt_length: int
  batch: int  # global batch, in pairs
  lr: float
  mesh: tuple
  remat: str
  dtype: str


# The Citrus recipe (Llama-3.1-70B SFT model): lr 1e-6 cosine, warmup 10%, 1 epoch, wd 0, and a
# global batch of 512 pairs as the reference ran it (issue 15; its 32-GPU accelerate config is in
# the Citrus repo, the CPO training yaml run_cpo.sh names is not).
_CITRUS_70B = Preset(model="llama3_1_70b", max_length=2048, max_prompt_length=1800, batch=512,
                     lr=1e-6, mesh=(1, -1, 8), remat="full", dtype="bfloat16")
_PRESETS = {
    "tiny": Preset(model="tiny", max_length=128, max_prompt_length=96, batch=8, lr=1e-3,
                   mesh=(1, -1, 1), remat="none", dtype="float32"),
    "demo": Preset(model="demo", max_length=512, max_prompt_length=384, batch=16, lr=2e-5,
                   mesh=(1, -1, 1), remat="none", dtype="float32"),
    "citrus_70b": _CITRUS_70B,
    "citrus_8b": _CITRUS_70B._replace(model="llama3_1_8b", mesh=(1, -1, 1)),
    # The same recipe on Qwen3 dense (from a Qwen3 SFT model).
    "citrus_qwen3_8b": _CITRUS_70B._replace(model="qwen3_8b", mesh=(1, -1, 1)),
    "citrus_qwen3_32b": _CITRUS_70B._replace(model="qwen3_32b"),
}


def get_config(preset: str = "tiny"):
  preset = preset or "tiny"
  base.check_preset("rl.py", _PRESETS, preset)
  p = _PRESETS[preset]
  c = base.stage_config("rl.py", _PRESETS, preset, "rl", model=p.model, mesh=p.mesh,
                        remat=p.remat, dtype=p.dtype)
  c.rl = config_dict.ConfigDict(dict(
      loss="cpo_simpo", max_length=p.max_length, max_prompt_length=p.max_prompt_length,
      beta=config_dict.placeholder(float), gamma=config_dict.placeholder(float),
      cpo_alpha=config_dict.placeholder(float), label_smoothing=config_dict.placeholder(float)))
  c.data.global_batch_size = p.batch
  c.data.num_epochs = 1
  c.optim.lr = p.lr
  c.optim.warmup_frac = 0.1
  c.optim.weight_decay = 0.0
  c.optim.grad_clip = 1.0
  c.train.num_steps = 0  # derived: num_epochs * pairs / batch
  c.checkpoint.every = 50
  return c
