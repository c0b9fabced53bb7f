"""Online RL with verified rewards: GRPO / Dr. GRPO / DAPO / BNPO (citrus_jax/train/grpo.py).

  python -m citrus_jax.main --config=configs/grpo.py:tiny      # self-contained smoke run
  python -m citrus_jax.main --config=configs/grpo.py:llama3_1_8b \
      --config.init.hf_dir=/ckpt/citrus-sft3-hf --config.data.train_paths=medqa_train.jsonl
  --config.grpo.loss_type=grpo|dr_grpo|dapo|bnpo; --config.grpo.beta=0.04 adds the k3 KL to the
  initial params (a second copy of the weights in memory).

Defaults follow DAPO (clip-higher 0.2/0.28, token-level loss, dynamic sampling, no KL); questions
are MedQA-layout JSONL (question, options, answer_idx), prompted as evaluation prompts them.
"""
from ml_collections import config_dict

from configs import base

# preset -> (model, prompts/step, generations, max prompt, max new tokens, lr, mesh, remat, dtype)
_PRESETS = {
    "tiny": ("tiny", 4, 4, 64, 16, 1e-4, (1, -1, 1), "none", "float32"),
    "demo": ("clinic", 8, 8, 192, 160, 1e-5, (1, -1, 1), "none", "float32"),
    # Pod presets (plan mode compiles them: --config.mode=plan --config.plan.topology=v5p:...).
    "llama3_1_8b": ("llama3_1_8b", 64, 8, 1024, 4096, 1e-6, (1, -1, 1), "full", "bfloat16"),
    "llama3_1_70b": ("llama3_1_70b", 64, 8, 1024, 4096, 1e-6, (1, -1, 8), "full", "bfloat16"),
    "qwen3_8b": ("qwen3_8b", 64, 8, 1024, 4096, 1e-6, (1, -1, 1), "full", "bfloat16"),
    "qwen3_32b": ("qwen3_32b", 64, 8, 1024, 4096, 1e-6, (1, -1, 8), "full", "bfloat16"),
}


def get_config(preset: str = "tiny"):
  preset = preset or "tiny"
  model, P, G, max_prompt, max_new, lr, mesh, remat, dtype = _PRESETS.get(preset, (None,) * 9)
  c = base.stage_config("grpo.py", _PRESETS, preset, "grpo", model=model, mesh=mesh, remat=remat,
                        dtype=dtype)
  c.grpo = config_dict.ConfigDict(dict(
      loss_type="dapo", prompts_per_step=P, num_generations=G,
      max_prompt_length=max_prompt, max_new_tokens=max_new,
      temperature=1.0, top_p=1.0, top_k=0,
      epsilon_low=0.2, epsilon_high=0.28,  # DAPO's clip-higher
      beta=0.0,  # k3 KL weight to the initial params (0: none, as DAPO and Dr. GRPO)
      scale_rewards="group",  # group | batch | none (Dr. GRPO: none)
      dynamic_sampling=True,  # groups whose rewards are all equal leave the loss
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
  c.optim.lr = lr
  c.optim.warmup_frac = 0.0
  c.optim.schedule = "constant"
  c.optim.weight_decay = 0.0
  c.optim.grad_clip = 1.0
  c.train.num_steps = 8 if preset == "tiny" else 0  # 0: num_epochs passes over the questions
  c.train.log_every = 1
  c.checkpoint.every = 4 if preset == "tiny" else 50
  return c
