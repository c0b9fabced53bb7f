"""The whole Citrus recipe on your data, as one resumable run (citrus_jax/pipeline/).

  python -m citrus_jax.main --config=configs/citrus.py:tiny        # every step, ~1-2 min on CPU
  python -m citrus_jax.main --config=configs/citrus.py:llama3_1_8b \
      --config.init.hf_dir=/ckpt/Llama-3.1-8B \
      --config.steps.cpt.train_paths='/data/medical_corpus/*.jsonl' \
      --config.steps.sft1.train_paths=/data/sft/general.jsonl \
      --config.steps.sft2.train_paths=/data/sft/complex.jsonl \
      --config.steps.sft3.train_paths=/data/sft/citrus_s3.jsonl \
      --config.steps.rejection.questions=/data/rl/mcq_bank.jsonl \
      --config.steps.eval.data_dir=/data/benchmarks --config.workdir=gs://bucket/runs/citrus_8b

init (HF checkpoint) -> CPT -> SFT-1 -> SFT-2 -> SFT-3 -> rejection sampling on the MCQ bank ->
CPO+SimPO [-> GRPO] -> evaluation on the benchmarks -> HF export -> report. Rerunning the same
command resumes at the first unfinished step. Per step (config.steps.<step>):
  skip=True                 run without it (the next stage starts from the previous one that ran)
  train_paths / questions / data_paths / data_dir   its data
  preset                    the stage file's preset it starts from (configs/cpt.py, sft.py, ...)
  overrides.<field>=...     a field of that stage config (e.g. overrides.optim.lr)
  set='a.b=v;c.d=w'         any other field of it
config.pipeline.stop_after=<step> ends the run after that step (a rerun continues).
--config.mode=plan --config.plan.topology=v5p:4x4x8 compiles the CPT, SFT and RL train steps
for a slice instead (citrus_jax/pipeline/planning.py). Presets: tiny (generated data, tiny random
Llama-shaped model), llama3_1_8b, llama3_1_70b, qwen2_5_72b, qwen3_8b, qwen3_32b.
"""
from __future__ import annotations

import ml_collections

from configs import base


def step(preset: str, skip: bool = False, overrides: dict | None = None, **fields
         ) -> ml_collections.ConfigDict:
  """One step's section: its stage preset, skip flag, overrides (a nested section) and `set`."""
  return ml_collections.ConfigDict(dict(skip=skip, preset=preset, overrides=overrides or {},
                                        set="", **fields))


def rejection_step(**kw) -> ml_collections.ConfigDict:
  """Rejection sampling (rollout/rejection.py) with the Citrus settings unless given: 10
  samples at temperature 0.7 on the open question, 4096 new tokens, think parts >= 200 chars,
  <= 3 pairs per question, 8192 characters, the rule-based 0-100 quality score."""
  d = dict(skip=False, questions="", prompt="open", n_samples=10, temperature=0.7, top_p=1.0,
           max_new_tokens=4096, batch_size=64, min_think_chars=200, max_pairs_per_question=3,
           max_chars=8192, unverified_as_wrong=False, scorer="rule", limit=0,
           min_pairs=0)  # > 0: top up with reference-chain pairs (records with a `target`)
  d.update(kw)
  return ml_collections.ConfigDict(d)


def recipe(*, source: str, model: str, mesh: tuple, cpt: ml_collections.ConfigDict,
           sft: tuple, rl: ml_collections.ConfigDict, grpo: ml_collections.ConfigDict,
           rejection: ml_collections.ConfigDict, eval_step: ml_collections.ConfigDict,
           workdir: str) -> ml_collections.ConfigDict:
  """The pipeline config shared by configs/citrus.py and configs/demo.py."""
  c = base.get_config()
  c.stage = "pipeline"
  c.workdir = workdir
  c.model.preset = model  # the shapes for a random init and for plan mode without the checkpoint
  c.mesh.shape = mesh
  c.pipeline = ml_collections.ConfigDict(dict(
      source=source,  # files | tiny | clinic_world
      stop_after="",  # a step name: end the run after it (a rerun continues)
  ))
  c.steps = ml_collections.ConfigDict(dict(
      cpt=cpt, sft1=sft[0], sft2=sft[1], sft3=sft[2], rejection=rejection, rl=rl, grpo=grpo,
      eval=eval_step,
      export=ml_collections.ConfigDict(dict(skip=False, dtype="")),  # dtype "": the params'
      report=ml_collections.ConfigDict(dict(skip=False)),
  ))
  return c


def eval_step(preset: str, checkpoints: str = "final", baselines: str = "random",
              baseline_mode: str = "loglik", **kw) -> ml_collections.ConfigDict:
  """Evaluation (eval/harness.py, configs/eval.py preset) of each checkpoint in `checkpoints`
  (step names, 'final' = the last stage that ran, 'init', 'random'); `baselines` are scored in
  `baseline_mode`."""
  return step(preset, benchmarks="", data_paths="", data_dir="", checkpoints=checkpoints,
              baselines=baselines, baseline_mode=baseline_mode, **kw)


# preset -> model preset, mesh, configs/ presets (cpt, sft, rl, grpo, eval), grad_accum for
# CPT/SFT (512 x 8192 tokens a step) and for RL on v5p-256: CPT/SFT the fewest that fit in
# docs/scaling.md's plan table (8B 2, 70B/72B 8), RL 70B's 4 planned in docs/recipe.md; 8B's RL
# 1 and qwen3_32b's 4/2 are not planned. They change memory, not the math.
_PAPER = {
    "llama3_1_8b": ("llama3_1_8b", (1, -1, 1), "llama3_1_8b", "citrus_llama3_1_8b", "citrus_8b",
                    "llama3_1_8b", "paper", 2, 1),
    "llama3_1_70b": ("llama3_1_70b", (1, -1, 8), "llama3_1_70b", "citrus_llama3_1_70b",
                     "citrus_70b", "llama3_1_70b", "paper_70b", 8, 4),
    "qwen2_5_72b": ("qwen2_5_72b", (1, -1, 8), "qwen2_5_72b", "citrus_qwen2_5_72b", "citrus_70b",
                    "llama3_1_70b", "paper_70b", 8, 4),
    "qwen3_8b": ("qwen3_8b", (1, -1, 1), "qwen3_8b", "citrus_qwen3_8b", "citrus_qwen3_8b",
                 "qwen3_8b", "paper_qwen3_8b", 2, 1),
    "qwen3_32b": ("qwen3_32b", (1, -1, 8), "qwen3_32b", "citrus_qwen3_32b", "citrus_qwen3_32b",
                  "qwen3_32b", "paper_qwen3_32b", 4, 2),
}


def _paper(name: str) -> ml_collections.ConfigDict:
  model, mesh, cpt, sft, rl, grpo, ev, accum, rl_accum = _PAPER[name]
  # SFT (configs/sft.py citrus_*): lr 5e-6 cosine, 5% warmup, 3 epochs, 8192 tokens, batch 512.
  sft_step = lambda: step(sft, train_paths="", eval_paths="",
                          overrides={"optim": {"grad_accum": accum}})
  # RL (configs/rl.py citrus_*): CPO+SimPO beta 10, gamma 5.4, alpha 0.05 (the loss's defaults),
  # lr 1e-6, 10% warmup, 1 epoch, wd 0, clip 1.0, 2048 / 1800 tokens; batch 512 as the reference.
  rl_step = step(rl, train_paths="", overrides={
      "data": {"global_batch_size": 512}, "optim": {"grad_accum": rl_accum},
      "rl": {"beta": 10.0, "gamma": 5.4, "cpo_alpha": 0.05}})
  return recipe(
      source="files", model=model, mesh=mesh,
      cpt=step(cpt, train_paths="", overrides={"optim": {"grad_accum": accum}}),
      sft=(sft_step(), sft_step(), sft_step()), rl=rl_step,
      grpo=step(grpo, skip=True, train_paths="", init_from="rl"),
      rejection=rejection_step(), eval_step=eval_step(ev, checkpoints="sft3,final"),
      workdir=f"runs/citrus_{name}")


def _tiny() -> ml_collections.ConfigDict:
  """Every step on generated data in about a minute or two of CPU."""
  few = lambda n, seq, batch=8: {"train": {"num_steps": n, "log_every": 1},
                                 "data": {"seq_len": seq, "global_batch_size": batch},
                                 "checkpoint": {"every": 2}}
  c = recipe(
      source="tiny", model="tiny", mesh=(1, -1, 1),
      cpt=step("tiny", overrides=few(4, 64)),
      sft=tuple(step("tiny", train_paths="", eval_paths="", overrides=few(3, 256))
                for _ in range(3)),
      rl=step("tiny", train_paths="", overrides={
          "train": {"log_every": 1}, "data": {"global_batch_size": 4, "num_epochs": 1},
          "rl": {"max_length": 320, "max_prompt_length": 256}, "checkpoint": {"every": 2}}),
      grpo=step("tiny", skip=True, train_paths="", init_from="rl", overrides={
          "grpo": {"prompt": "mcq", "toy_questions": 0, "max_prompt_length": 192,
                   "max_new_tokens": 16, "prompts_per_step": 2, "num_generations": 2},
          "train": {"num_steps": 2}}),
      rejection=rejection_step(prompt="citrus", n_samples=2, max_new_tokens=24, batch_size=16,
                               min_think_chars=0, limit=6, min_pairs=4),
      eval_step=eval_step("tiny", checkpoints="init,final", baselines="init",
                          overrides={"eval": {"max_new_tokens": 12}}),
      workdir="runs/citrus_tiny")
  c.model.max_seq_len = 1024  # the generated HF model's (plan mode has only the preset)
  return c


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
  preset = preset or "tiny"
  if preset == "tiny":
    return _tiny()
  if preset not in _PAPER:
    raise ValueError(f"configs/citrus.py: unknown preset {preset!r}; known: "
                     f"{sorted(['tiny', *_PAPER])}")
  return _paper(preset)
