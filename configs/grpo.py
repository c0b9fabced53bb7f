"""Online RL with verified rewards: GRPO / Dr. GRPO / DAPO / BNPO (citrus_jax/train/grpo.py).

  python -m citrus_jax.main --config=configs/grpo.py:tiny      # self-contained smoke run
  python -m citrus_jax.main --config=configs/grpo.py:llama3_1_8b \
      --config.init.hf_dir=/ckpt/citrus-sft3-hf --config.data.train_paths=medqa_train.jsonl
  --config.grpo.loss_type=grpo|dr_grpo|dapo|bnpo; --config.grpo.beta=0.04 adds the k3 KL to the
  initial params (a second copy of the weights in memory).

Defaults follow DAPO (clip-higher 0.2/0.28, token-level loss, dynamic sampling, no KL); questions
are MedQA-layout JSONL (question, options, answer_idx), prompted as evaluation prompts them.
"""
from typing import NamedTuple

from ml_collections import config_dict

from configs import base



class Preset(NamedTuple):
  model: str  # model preset (citrus_jax/model/config.py)
  prompts_per_step: int
  generations: int  # completions per prompt (the group)
  max_prompt: int
  max_new: int
  lr: float
  mesh: tuple
  remat: str
  dtype: str


# Pod presets (plan mode compiles them: --config.mode=plan --config.plan.topology=v5p:...).
_POD_8B = Preset(model="llama3_1_8b", prompts_per_step=64, generations=8, max_prompt=1024,
                 max_new=4096, lr=1e-6, mesh=(1, -1, 1), remat="full", dtype="bfloat16")
_PRESETS = {
    "tiny": Preset(model="tiny", prompts_per_step=4, generations=4, max_prompt=64, max_new=16,
                   lr=1e-4, mesh=(1, -1, 1), remat="none", dtype="float32"),
    "demo": Preset(model="clinic", prompts_per_step=8, generations=8, max_prompt=192,
                   max_new=160, lr=1e-5, mesh=(1, -1, 1), remat="none", dtype="float32"),
    "llama3_1_8b": _POD_8B,
    "llama3_1_70b": _POD_8B._replace(model="llama3_1_70b", mesh=(1, -1, 8)),
    "qwen3_8b": _POD_8B._replace(model="qwen3_8b"),
    "qwen3_32b": _POD_8B._replace(model="qwen3_32b", mesh=(1, -1, 8)),
}


def get_config(preset: str = "tiny"):
  preset = preset or "tiny"
  base.check_preset("grpo.py", _PRESETS, preset)
  p = _PRESETS[preset]
  c = base.stage_config("grpo.py", _PRESETS, preset, "grpo", model=p.model, mesh=p.mesh,
                        remat=p.remat, dtype=p.dtype)
  P, G, max_prompt, max_new = p.prompts_per_step, p.generations, p.max_prompt, p.max_new
  c.grpo = config_dict.ConfigDict(dict(
      loss_type="dapo", prompts_per_step=P, num_generations=G,
      max_prompt_length=max_prompt, max_new_tokens=max_new,
      temperature=1.0, top_p=1.0, top_k=0,
      epsilon_low=0.2, epsilon_high=0.28,  # DAPO's clip-higher
      beta=0.0,  # k3 KL weight to the initial params (0: none, as DAPO and Dr. GRPO)
      scale_rewards="group",  # group | batch | none (Dr. GRPO: none)
      dynamic_sampling=True,  # groups whose rewards are all equal leave the loss
      sampled_prompts=0,  # > prompts_per_step: sample this many, train the most informative
      length_bucket=0,  # > 0: rows trimmed to the step's longest, a multiple of this (recompiles)
      mask_truncated=False,  # completions that hit max_new_tokens leave the loss
      format_weight=0.0,  # reward added for <think>...</think><answer>...</answer>
      prompt="input" if preset == "tiny" else "mcq",  # mcq (evaluation prompt, options listed) | open | open_system | input
      max_questions=0,  # per file; 0: all
      toy_questions=256 if preset == "tiny" else 0,  # >0 and no train_paths: the toy task
      log_samples_every=1 if preset == "tiny" else 10,  # steps between rollouts.jsonl dumps
  ))
  # One step's rows (prompts x generations); grpo.run sets it from the grpo fields.
  c.data.global_batch_size = P * G
  c.data.seq_len = max_prompt + max_new  # plan mode compiles a step of this shape
  c.data.num_epochs = 1
  c.optim.lr = p.lr
  c.optim.warmup_frac = 0.0
  c.optim.schedule = "constant"
  c.optim.weight_decay = 0.0
  c.optim.grad_clip = 1.0
  c.train.num_steps = 8 if preset == "tiny" else 0  # 0: num_epochs passes over the questions
  c.train.log_every = 1
  c.checkpoint.every = 4 if preset == "tiny" else 50
  return c
