"""Medical MCQ evaluation (citrus_jax/eval/harness.py).

  python -m citrus_jax.main --config=configs/eval.py:paper --config.init.hf_dir=/ckpt/model \
      --config.eval.benchmarks=medqa,pubmedqa \
      --config.eval.data_paths=/data/medqa/phrases_no_exclude_test.jsonl,/data/pubmedqa/ori_pqal.json
or every benchmark file found under a directory (train/dev/val files are skipped):
  ... --config.eval.data_dir=/data/benchmarks [--config.eval.benchmarks=mmlu,medqa]
Scoring outputs generated elsewhere (no model; lines {"id", "output"}):
  ... --config.eval.predictions=preds.jsonl
Presets: tiny (tests), demo (laptop CPU), greedy (paper length, greedy), paper (temperature 0.7,
4096 new tokens, as the Citrus paper), paper_70b (the same on a mesh with 8-way tensor parallel),
paper_qwen3_8b and paper_qwen3_32b (the paper protocol on Qwen3; 32B with 8-way tensor parallel).
The model comes from config.init.checkpoint (a citrus_jax params or run dir) or config.init.hf_dir
(the tokenizer then defaults to that directory's).
"""
from typing import NamedTuple

import ml_collections

from configs import base



class Preset(NamedTuple):
  model: str  # model preset, only used for a random model; checkpoints carry their own config
  mesh: tuple
  max_new_tokens: int
  temperature: float  # 0 = greedy
  batch: int
  dtype: str


_PAPER = Preset(model="llama3_1_8b", mesh=(1, -1, 1), max_new_tokens=4096, temperature=0.7,
                batch=64, dtype="bfloat16")
_PRESETS = {
    "tiny": Preset(model="tiny", mesh=(1, -1, 1), max_new_tokens=16, temperature=0.0, batch=8,
                   dtype="float32"),
    "demo": Preset(model="demo", mesh=(1, -1, 1), max_new_tokens=256, temperature=0.0,
                   batch=16, dtype="float32"),
    "greedy": _PAPER._replace(temperature=0.0),
    "paper": _PAPER,
    "paper_70b": _PAPER._replace(model="llama3_1_70b", mesh=(1, -1, 8)),
    "paper_qwen3_8b": _PAPER._replace(model="qwen3_8b"),
    "paper_qwen3_32b": _PAPER._replace(model="qwen3_32b", mesh=(1, -1, 8)),
}


def get_config(preset: str = "tiny"):
  preset = preset or "tiny"
  base.check_preset("eval.py", _PRESETS, preset)
  model, mesh, max_new, temperature, batch, dtype = _PRESETS[preset]
  c = base.get_config()
  c.stage = "eval"
  c.workdir = f"runs/eval_{preset}"
  c.model.preset = model  # only used for a random model; checkpoints carry their own config
  c.model.param_dtype = dtype
  c.model.compute_dtype = dtype
  c.mesh.shape = mesh
  c.eval = ml_collections.ConfigDict(dict(
      benchmarks="",  # comma-separated registry names (medqa, pubmedqa, mmlu_anatomy, jmed, ...)
      data_paths="",  # comma-separated files, one per benchmark ("auto" names detect the file)
      data_dir="",  # or: scan a directory for benchmark files (filtered by `benchmarks` if set)
      predictions="",  # score these JSONL outputs instead of running a model
      mode="generate",  # generate | loglik | both | prompts (write the chat messages only)
      # citrus (default: the SFT-3 training prompt, persona + <think>/<answer>) | reference (the
      # released evaluation's prompt byte for byte) | letter | reference_letter (answer with a
      # letter; the reference's for non-Citrus models). eval/prompts.py documents each.
      prompt="citrus",
      chat_format="",  # "" = the tokenizer's template; or llama3 | chatml | qwen3 | plain
      max_new_tokens=max_new,
      temperature=temperature,  # 0 = greedy; the paper samples once at 0.7
      samples=1,  # k > 1: k answers per item in one batched call; maj@k, pass@k
      sampling_temperature=0.7,  # what samples=k > 1 samples at when temperature is 0 (greedy)
      seeds="",  # e.g. "[0,1,2]": one run per sampling seed; acc mean/std/min/max over them
      think_budget="",  # e.g. "256" or "[128,256,512]": force the answer after N thinking tokens
      answer_tokens=32,  # new tokens for the forced answer block after the think budget
      top_p=1.0,
      top_k=0,
      batch_size=batch,  # prompts per generate call (sorted by length); option pairs for loglik
      loglik_form="text",  # text: " <option text>" after "Answer:"; letter: " <letter>"
      shuffle_options="default",  # default (JMED only) | on | off; seeded by item id
      shuffle_seed=0,
      limit=0,  # > 0: the first `limit` items of each benchmark (quick checks)
      on_error="raise",  # raise | skip: bad benchmark rows / prediction lines are counted
      timestamped=True,  # write to <workdir>/eval_<time>; False: into workdir itself
      # tiny only: with no data and no model given, generate benchmark files and a random model
      generate_tiny_inputs=preset == "tiny",
  ))
  return c
