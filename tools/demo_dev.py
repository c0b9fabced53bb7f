"""Dev-split numbers for choosing the demo's budget (the test split is never used for choices).

  python tools/demo_dev.py eval runs/demo                      # SFT-3 and RL of a finished run
  python tools/demo_dev.py sweep runs/demo 4:1700:3e-3 8:850:3e-3   # SFT-3 variants (batch:steps:lr)
  python tools/demo_dev.py rl runs/demo 3:1e-4:0.05:8:dpo:0.1     # RL (epochs:lr:alpha:batch[:loss[:beta[:gamma]]])
  python tools/demo_dev.py grpo runs/demo 12:1e-5:8:8:rl:0.7:16   # GRPO (steps:lr:prompts:gens:from[:temp[:sampled]])

`eval` scores a finished demo run's SFT-3 and RL checkpoints on its dev split; `sweep` trains
SFT-3 again from the run's SFT-2 checkpoint for each variant (in $SWEEP_DIR, default
/tmp/demo_sweep/<variant>) and scores each; `rl` trains the RL stage again from the run's SFT-3
checkpoint on its rejection-sampled pairs ($PAIRS overrides the pair file) for each variant. Both print generation accuracy, per-group accuracy
and how often the impression line names the right diagnosis. README (The demo) lists the runs.
"""
from __future__ import annotations

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/

from citrus_jax import pipeline, tokenizer  # noqa: E402
from citrus_jax.eval import benchmarks, harness  # noqa: E402
from citrus_jax.train import sft  # noqa: E402
from citrus_jax.train import rl  # noqa: E402
from configs import demo as demo_config, rl as rl_config, sft as sft_config  # noqa: E402

_IMPRESSION = re.compile(r"The findings point to (.+?)\.\n")


def _score(run: str, params_dir: str, label: str) -> None:
  tok = tokenizer.load_tokenizer(os.path.join(run, "tokenizer", "sp.model"))
  items = benchmarks.load_benchmark("medqa", os.path.join(run, "data", "dev.jsonl")).items
  cfg, params = pipeline._load(params_dir)
  records, summary = harness.evaluate_items(params, cfg, tok, items, prompt="citrus",
                                            mode="generate", max_new_tokens=160, batch_size=50)
  impression = 0
  for rec, item in zip(records, items):
    m = _IMPRESSION.search(rec["output"])
    impression += bool(m) and m.group(1).lower() == item.options[item.gold].lower()
  print(f"DEV {label}: acc {summary['acc']:.3f} (n={summary['n']}), impression right "
        f"{impression}, by group {pipeline.by_group(records, items)}", flush=True)


def sweep(run: str, variants: list[str]) -> None:
  c = demo_config.get_config("default")
  c.progress = False
  data = pipeline._run_step(run, "data", lambda d: pipeline.step_data(c, d))
  tok = pipeline._run_step(run, "tokenizer",
                           lambda d: pipeline.step_tokenizer(c, d, data["paths"]))
  for variant in variants:
    batch, steps, lr = variant.split(":")
    out = os.path.join(os.environ.get("SWEEP_DIR", "/tmp/demo_sweep"), variant.replace(":", "_"))
    s = pipeline._stage_config(sft_config, "demo", c, out, tok["model"])
    s.init.checkpoint = os.environ.get("INIT", os.path.join(run, "sft", "sft2"))
    s.optim.lr, s.data.num_epochs, s.checkpoint.every = float(lr), 0, 100_000
    s.sft.stages = (sft_config.stage("sft3", train_paths=os.environ.get("SFT3", data["paths"]["sft3_chat"]),
                                     num_steps=int(steps), batch_size=int(batch)),)
    start = time.perf_counter()
    sft.run(s, out)
    print(f"[sweep] {variant}: trained in {time.perf_counter() - start:.0f}s", flush=True)
    _score(run, os.path.join(out, "sft3"), variant)


def rl_sweep(run: str, variants: list[str]) -> None:
  c = demo_config.get_config("default")
  c.progress = False
  pairs = os.environ.get("PAIRS", os.path.join(run, "rejection", "pairs.jsonl"))
  tok = os.path.join(run, "tokenizer", "sp.model")
  for variant in variants:
    epochs, lr, alpha, batch, *rest = variant.split(":")  # [:loss[:beta[:gamma]]]
    out = os.path.join(os.environ.get("SWEEP_DIR", "/tmp/demo_sweep"), "rl_" + variant.replace(":", "_"))
    c.demo.rl_epochs = int(epochs)  # the rl step's overrides set data.num_epochs from it
    r = pipeline._stage_config(rl_config, "demo", c, out, tok, train_paths=pairs)
    r.init.checkpoint = os.environ.get("INIT", os.path.join(run, "sft", "sft3"))
    r.optim.lr, r.rl.cpo_alpha, r.data.global_batch_size = float(lr), float(alpha), int(batch)
    r.rl.max_length, r.rl.max_prompt_length = c.demo.rl_max_length, c.demo.rl_max_prompt_length
    r.train.num_steps, r.checkpoint.every = 0, 100_000
    for key, value in zip(("loss", "beta", "gamma"), rest):
      r.rl[key] = value if key == "loss" else float(value)
    start = time.perf_counter()
    rl.run(r, out)
    print(f"[rl sweep] {variant}: trained in {time.perf_counter() - start:.0f}s", flush=True)
    _score(run, out, "rl " + variant)


def grpo_sweep(run: str, variants: list[str]) -> None:
  """GRPO variants from the run's `rl` (or `sft/sft3`) params on its RL questions."""
  c = demo_config.get_config("default")
  c.progress = False
  tok = os.path.join(run, "tokenizer", "sp.model")
  questions = os.path.join(run, "data", "clean", "rl_questions.jsonl")
  for variant in variants:
    steps, lr, prompts_, gens, start_from, *rest = variant.split(":")
    c.demo.grpo_temperature = float(rest[0]) if rest else 1.0
    c.demo.grpo_sampled = int(rest[1]) if len(rest) > 1 else 0
    out = os.path.join(os.environ.get("SWEEP_DIR", "/tmp/demo_sweep"),
                       "grpo_" + variant.replace(":", "_").replace("/", "-"))
    c.demo.update(grpo_steps=int(steps), grpo_lr=float(lr), grpo_prompts=int(prompts_),
                  grpo_generations=int(gens))
    start = time.perf_counter()
    pipeline.step_grpo(c, out, questions, tok, os.path.join(run, start_from))
    print(f"[grpo sweep] {variant}: trained in {time.perf_counter() - start:.0f}s", flush=True)
    _score(run, out, "grpo " + variant)


def main(argv: list[str]) -> None:
  if len(argv) < 3 or argv[1] not in ("eval", "sweep", "rl", "grpo"):
    sys.exit(__doc__)
  if argv[1] == "eval":
    for stage in ("sft/sft3", "rl"):
      _score(argv[2], os.path.join(argv[2], stage), f"{argv[2]} {stage}")
  elif argv[1] == "rl":
    rl_sweep(argv[2], argv[3:])
  elif argv[1] == "grpo":
    grpo_sweep(argv[2], argv[3:])
  else:
    sweep(argv[2], argv[3:])


if __name__ == "__main__":
  main(sys.argv)
