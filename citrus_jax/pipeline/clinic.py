"""The clinical world as a pipeline data source (configs/demo.py): the world's splits,
decontaminated, and a BPE tokenizer trained on them.

The world (citrus_jax/demo/clinic_world.py) stands in for a user's files: its CPT corpus, three
SFT sets, RL questions and held-out test split feed the same steps that a real run's files feed.
"""
from __future__ import annotations

import json
import os
import random
from typing import Any

from citrus_jax import tokenizer
from citrus_jax.demo import clinic_world
from citrus_jax.eval import benchmarks, prompts
from citrus_jax.rollout import rejection
from citrus_jax.synth import decontam


def _world_sizes(scale: float, sft3_cases: int = 0, eval_items: int = 0) -> dict[str, int]:
  """The world's default split sizes times `scale`; `sft3_cases` > 0 sets SFT-3's outright, and
  the test split holds at least the `eval_items` evaluated."""
  sizes = {k: max(8, int(round(v * scale))) for k, v in clinic_world.DEFAULT_SIZES.items()}
  sizes["test"] = max(sizes["test"], eval_items)
  if sft3_cases:
    sizes["sft3"] = int(sft3_cases)
  return sizes


def restyle_sft3(src: str, dst: str, seed: int, with_options_fraction: float = 0.75) -> str:
  """SFT-3 chats in the two prompt styles: the evaluation prompt (persona + question with its
  options, in the record's candidate order; also the prompt of rejection sampling), or, for the
  other records, Citrus's open question (no options)."""
  rng = random.Random(seed)
  with open(src) as f_in, open(dst, "w") as f_out:
    for line in f_in:
      rec = json.loads(line)
      if rng.random() < with_options_fraction:
        options = dict(zip("ABCDEFGHIJ", rec["candidates"]))
        question = rec["question"] + "\n" + prompts.format_options(options)
        messages = [{"role": "system", "content": prompts.SYSTEM_PROMPT},
                    {"role": "user", "content": prompts.citrus_user_prompt(question)}]
      else:
        messages = prompts.open_question_messages(rec["question"])
      messages.append({"role": "assistant", "content": rec["target"]})
      f_out.write(json.dumps({"id": rec["id"], "messages": messages}) + "\n")
  return dst


def step_data(config, step_dir):
  paths = clinic_world.build_world(step_dir, seed=config.demo.world_seed,
                                   sizes=_world_sizes(config.demo.world_scale,
                                                      config.demo.get("sft3_cases", 0),
                                                      config.demo.eval_items),
                                   conditions=tuple(config.demo.get("world_conditions", ())),
                                   cpt_only=config.demo.get("world_cpt_only", None),
                                   prompt_fn=prompts.citrus_user_prompt,
                                   teacher_misread=config.demo.get("teacher_misread", 0.0),
                                   teacher_error_rate=config.demo.get("teacher_error_rate", 0.0))
  paths["sft3_chat"] = restyle_sft3(paths["sft3"], os.path.join(step_dir, "sft3_chat.jsonl"),
                                    config.demo.world_seed,
                                    config.demo.sft3_options_fraction)
  # Decontamination against the held-out splits. The world is templated, so plain 13-gram overlap
  # flags shared phrasing; near-copies (half of an item's n-grams in one example) are dropped.
  train_keys = ("cpt", "sft1", "sft2", "sft3_chat", "rl_questions")
  held_out = {k: benchmarks.load_benchmark("medqa", paths[k]).items for k in ("test", "dev")}
  n = config.demo.decontam_n
  plain = decontam.decontaminate([paths[k] for k in train_keys], held_out, n=n, examples=2)
  clean_dir = os.path.join(step_dir, "clean")
  near = decontam.decontaminate([paths[k] for k in train_keys], held_out, n=n,
                                min_overlap=0.5, drop_to=clean_dir, examples=2)
  print(decontam.format_report(plain), flush=True)
  print(f"dropped as near-copies (min_overlap 0.5):\n{decontam.format_report(near)}", flush=True)
  for k in train_keys:
    paths[k] = near["train"][paths[k]]["written"]
  summary = {f"{label}": {"benchmarks": {b: {kk: r["benchmarks"][b][kk] for kk in
                                             ("items", "items_hit")}
                                         for b in r["benchmarks"]},
                          "train_contaminated": sum(t["contaminated"]
                                                    for t in r["train"].values())}
             for label, r in ((f"{n}-gram", plain), ("near-copy, dropped", near))}
  return {"paths": paths, "decontamination": summary}


def step_tokenizer(config, step_dir, paths):
  """A BPE tokenizer on the world's text, chats included (so the prompts' fixed wording and the
  persona are cheap). With `tokenizer_phrases` pieces may span words: frequent phrases (the
  template, findings, condition names) become single ids, about 1.7x fewer tokens per example."""
  corpus = os.path.join(step_dir, "corpus.txt")
  with open(corpus, "w") as out:
    for key, fields in (("cpt", ("text",)), ("sft1", ("input", "target")),
                        ("sft2", ("input", "target"))):
      with open(paths[key]) as f:
        for line in f:
          rec = json.loads(line)
          out.write("\n".join(rec[k] for k in fields) + "\n")
    with open(paths["sft3_chat"]) as f:
      for line in f:
        out.write("\n".join(m["content"] for m in json.loads(line)["messages"]) + "\n")
  d = config.demo
  model = tokenizer.train_sentencepiece([corpus], os.path.join(step_dir, "sp"), d.tokenizer_vocab,
                                        split_by_whitespace=not d.tokenizer_phrases,
                                        max_piece_length=64 if d.tokenizer_phrases else 16)
  return {"model": model, "vocab_size": tokenizer.load_tokenizer(model).vocab_size}


def gold_fallback_pairs(questions: list[dict], samples: list[dict], limit: int,
                        prompt_fn: Any = None) -> list[dict]:
  """Pairs for questions where no sample was correct: the world's own expert-pathway chain as
  chosen, one of the model's wrong or unusable samples as rejected. Used only to top up a weak
  model's pairs (counted separately in the report), so the RL stage always has data."""
  by_id = {q["id"]: q for q in questions}
  out = []
  for rec in samples:
    q = by_id.get(rec["id"])
    if q is None or any(s["verdict"] == "correct" for s in rec["samples"]):
      continue
    rejected = next((s["text"] for s in rec["samples"] if s["text"].strip()
                     and s["text"].strip() != q["target"].strip()), None)
    if rejected is None:
      continue
    prompt = (prompt_fn or prompts.citrus_messages)(
        rejection.question_from_record(q, q["id"], q["id"]))
    out.append({"chosen": prompt + [{"role": "assistant", "content": q["target"]}],
                "rejected": prompt + [{"role": "assistant", "content": rejected}],
                "source": "gold_fallback", "id": q["id"]})
    if len(out) >= limit:
      break
  return out


def inputs(config, data: dict[str, Any]) -> dict[str, Any]:
  """The world's files as the steps' inputs (what a user names in configs/citrus.py)."""
  paths = data["paths"]
  d = config.demo
  return {"cpt": paths["cpt"], "sft1": paths["sft1"], "sft2": paths["sft2"],
          "sft3": paths["sft3_chat"] if d.sft3_source == "template" else d.sft3_path,
          "questions": paths["rl_questions"], "eval_paths": paths["test"],
          "eval_benchmarks": "medqa"}


def apply_knobs(config) -> None:
  """The demo's knobs (config.demo, configs/demo.py) -> the steps' overrides, so the demo runs
  the same steps as configs/citrus.py. Called by configs/demo.py and again at the start of a
  run (after command-line overrides); the knobs own the fields they set."""
  d, S = config.demo, config.steps
  seq, batch = config.data.seq_len, config.data.global_batch_size
  every, log = config.checkpoint.every, config.train.log_every

  def train(step, steps, lr, seq_len, gbs):
    o = S[step].overrides
    o.train.num_steps, o.train.log_every, o.optim.lr = int(steps), log, float(lr)
    o.data.seq_len, o.data.global_batch_size, o.checkpoint.every = seq_len, gbs, every

  with config.unlocked():
    train("cpt", d.cpt_steps, d.cpt_lr, d.cpt_seq_len, batch)
    sizes = tuple(d.get("sft_batch_sizes") or (batch,) * 3)
    for i, name in enumerate(("sft1", "sft2", "sft3")):
      train(name, d.sft_steps[i], d.sft_lr, seq, sizes[i])
    train("rl", 0, d.rl_lr, seq, d.get("rl_batch_size", 0) or min(batch, 8))
    rl = S.rl.overrides
    rl.data.num_epochs = d.rl_epochs
    rl.rl.max_length, rl.rl.max_prompt_length = d.rl_max_length, d.rl_max_prompt_length
    rl.rl.beta, rl.rl.gamma, rl.rl.cpo_alpha = d.rl_beta, d.rl_gamma, d.rl_cpo_alpha
    g = S.grpo.overrides
    S.grpo.skip = not d.get("grpo_steps", 0)
    S.grpo.init_from = d.get("grpo_from", "sft3")
    g.optim.lr, g.train.num_steps = float(d.grpo_lr), int(d.grpo_steps)
    g.checkpoint.every = max(int(d.grpo_steps) // 2, 1)
    g.grpo.update(prompts_per_step=d.grpo_prompts, num_generations=d.grpo_generations,
                  max_new_tokens=d.rs_max_new_tokens, temperature=d.grpo_temperature,
                  loss_type=d.grpo_loss, max_prompt_length=d.rl_max_prompt_length,
                  sampled_prompts=d.get("grpo_sampled", 0),
                  length_bucket=d.get("grpo_length_bucket", 0))
    r = S.rejection
    r.update(n_samples=d.rs_samples, temperature=d.rs_temperature,
             max_new_tokens=d.rs_max_new_tokens, batch_size=d.eval_batch_size,
             min_think_chars=d.rs_min_think_chars, unverified_as_wrong=d.rs_unverified_as_wrong,
             limit=d.rs_questions, min_pairs=d.rs_min_pairs)
    e = S.eval
    e.baselines = "" if d.get("eval_generate_baselines", False) else "random,cpt"
    e.overrides.eval.update(max_new_tokens=d.eval_max_new_tokens, batch_size=d.eval_batch_size,
                            limit=d.eval_items)
