"""Online RL with verified rewards (GRPO, Dr. GRPO, DAPO, BNPO) on the shared training engine.

Each step: `prompts_per_step` questions -> `num_generations` completions each from the current
params (`rollout.group`) -> reward 1 for the gold option (`rollout.rewards`) -> group advantages
-> one clipped-surrogate update (`train.grpo_loss`, TRL-equal). One update per rollout batch, so
the old policy is the current one (TRL's num_iterations = 1: ratio 1 in value, its gradient the
policy gradient). The prompt order is a grain iterator saved with each checkpoint and the
sampling seed is a function of the step, so a resumed run continues the run it interrupted.

  python -m citrus_jax.main --config=configs/grpo.py:tiny     # self-contained smoke run
  python -m citrus_jax.main --config=configs/grpo.py:demo --config.data.train_paths=q.jsonl \
      --config.init.checkpoint=runs/sft3 --config.tokenizer.path=tok.model
"""
from __future__ import annotations

import json
import os
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from citrus_jax import chat, runtime, sharding, tokenizer
from citrus_jax.eval import prompts
from citrus_jax.rollout.rejection import decode_with_specials
from citrus_jax.rollout.questions import PROMPT_STYLES, Question, load_questions
from citrus_jax.model import transformer
from citrus_jax.rollout import group, toy_task
from citrus_jax.train import engine, grpo_loss, losses, steps


def mcq_prompt(q: Question) -> list[dict[str, str]]:
  """The evaluation prompt (persona, question and its options): train as the model is tested."""
  return prompts.citrus_messages(q)


PROMPTS = {"mcq": mcq_prompt, **PROMPT_STYLES}


def make_loss_fn(cfg: Any, *, loss_type: str = "dapo", epsilon_low: float = 0.2,
                 epsilon_high: float | None = None, beta: float = 0.0,
                 max_completion_length: int | None = None, grad_accum: int = 1,
                 loss_chunk: int = 0):
  """loss_fn(params, batch, totals) for engine.Stage; every metric is the microbatch's share.

  Rows with `completion_slots` (rollout.group) run the output layer on the completion's slots
  only; `loss_chunk` > 0 (`train.loss_chunk`) computes log-probs and entropy in sequence chunks
  (`chunked_ce`). Both give the full path's numbers."""
  loss_chunk = losses.check_loss_chunk(loss_chunk)

  def loss_fn(params, batch, totals):
    hidden, _ = transformer.forward(params, batch["inputs"], cfg, positions_BT=batch["positions"],
                                    segment_ids_BT=batch["segment_ids"], return_hidden=True)
    targets, mask = batch["targets"], batch["loss_mask"]
    if "completion_slots" in batch:
      slots = batch["completion_slots"]
      hidden = jnp.take_along_axis(hidden, slots[..., None], axis=1)
      targets, mask = jnp.take_along_axis(targets, slots, axis=1), batch["completion_mask"]
    logp, entropy = grpo_loss.logprobs_and_entropy(params, hidden, targets, cfg, loss_chunk)
    loss, metrics = grpo_loss.grpo_loss(
        logp, None, batch.get("ref_logp"), batch["advantages"], mask,
        loss_type=loss_type, epsilon_low=epsilon_low, epsilon_high=epsilon_high, beta=beta,
        max_completion_length=max_completion_length, num_items_in_batch=totals["n_tokens"],
        gradient_accumulation_steps=grad_accum, steps_per_generation=grad_accum)
    metrics = {k: v / grad_accum for k, v in metrics.items()}
    mask = mask.astype(jnp.float32)
    metrics["entropy"] = (entropy * mask).sum() / totals["n_tokens"]
    metrics["logp"] = jax.lax.stop_gradient((logp * mask).sum() / totals["n_tokens"])
    return loss, metrics
  return loss_fn


def _questions_and_tokenizer(config: ml_collections.ConfigDict, workdir: str
                             ) -> tuple[list[Question], Any]:
  g, d = config.grpo, config.data
  paths, tok_path = d.train_paths, config.tokenizer.path
  if g.get("toy_questions", 0) and not paths:
    paths, toy_tok = toy_task.write_task(os.path.join(workdir, "toy_task"), g.toy_questions,
                                         seed=config.seed)
    tok_path = tok_path or toy_tok
  if not paths:
    raise runtime.ConfigError("config.data.train_paths: no question files (JSONL with question, "
                              "options, answer_idx), and config.grpo.toy_questions is 0")
  if not tok_path and not config.init.get("hf_dir"):
    raise runtime.ConfigError("config.tokenizer.path is empty and there is no config.init.hf_dir")
  tok = tokenizer.load_tokenizer(tok_path or config.init.hf_dir)
  questions = []
  for path in [p.strip() for p in str(paths).split(",") if p.strip()]:
    if not os.path.exists(path):
      raise runtime.ConfigError(f"config.data.train_paths: {path} does not exist")
    questions += load_questions(path, limit=g.get("max_questions", 0))
  if not questions:
    raise runtime.ConfigError(f"config.data.train_paths={paths}: no questions")
  return questions, tok


def prompt_dataset(n: int, prompts_per_step: int, seed: int, shuffle: bool = True
                   ) -> grain.IterDataset:
  """Question indices, `prompts_per_step` at a time, the same on every process (all sample all
  prompts on the global mesh and train on their slice of the rows)."""
  ds = grain.MapDataset.source(np.arange(n, dtype=np.int32))
  if shuffle:
    ds = ds.shuffle(seed=seed)
  return ds.repeat(None).to_iter_dataset().batch(prompts_per_step, drop_remainder=True)


class _SampleLog:
  """Appends each step's completions to rollouts.jsonl (process 0), for reading what RL rewards."""

  def __init__(self, path: str, every: int):
    self.path, self.every = path, every

  def __call__(self, step: int, records: list[dict]) -> None:
    if self.every and (step + 1) % self.every == 0:
      with open(self.path, "a") as f:
        f.writelines(json.dumps({"step": step + 1, **r}) + "\n" for r in records)


def run(config: ml_collections.ConfigDict, workdir: str) -> engine.TrainResult:
  g, d = config.grpo, config.data
  os.makedirs(workdir, exist_ok=True)
  questions, tok = _questions_and_tokenizer(config, workdir)
  cfg = runtime.model_config_from(config, vocab_size=tok.vocab_size)
  mesh = runtime.make_mesh(config)
  if g.prompt not in PROMPTS:
    raise runtime.ConfigError(f"config.grpo.prompt={g.prompt!r}: expected one of {sorted(PROMPTS)}")
  G, P = int(g.num_generations), int(g.prompts_per_step)
  sampled = int(g.get("sampled_prompts", 0)) or P  # prompts sampled per step (>= P)
  if sampled < P:
    raise runtime.ConfigError(f"config.grpo.sampled_prompts={sampled} must be 0 or >= "
                              f"prompts_per_step={P}")
  rows = G * P
  dp, accum = sharding.data_parallel_size(mesh), int(config.optim.get("grad_accum", 1))
  if G < 2 or P < 1 or rows % (dp * accum * jax.process_count()):
    raise runtime.ConfigError(
        f"config.grpo: num_generations={G} (>= 2) x prompts_per_step={P} = {rows} rows must "
        f"split over {dp} data-parallel devices x grad_accum {accum} x {jax.process_count()} "
        "processes")
  seq_len = int(g.max_prompt_length) + int(g.max_new_tokens) - 1
  if seq_len + 1 > cfg.max_seq_len:
    raise runtime.ConfigError(f"config.grpo: max_prompt_length + max_new_tokens = {seq_len + 1} "
                              f"exceeds the model's max_seq_len {cfg.max_seq_len}")
  prompt_fn = PROMPTS[g.prompt]
  kept, ids = [], []
  for q in questions:
    p = chat.render(prompt_fn(q), tok, add_generation_prompt=True).tokens
    if len(p) <= g.max_prompt_length:
      kept.append(q)
      ids.append(p)
  print(f"[grpo] {len(kept)} questions ({len(questions) - len(kept)} with prompts over "
        f"max_prompt_length={g.max_prompt_length} tokens left out); {P} prompts x {G} samples "
        f"per step" + (f" (the {P} most informative of {sampled} sampled)" if sampled > P else "")
        + f", loss {g.loss_type}", flush=True)
  if not kept:
    raise runtime.ConfigError("config.grpo.max_prompt_length: every prompt is longer")
  d.global_batch_size = rows  # what the resolved config records about a step's batch
  num_steps, _ = steps.resolve(
      config, "grpo", lambda epochs: epochs * len(kept) // sampled,
      f"{len(kept)} questions ({sampled} per step)", batch_size=sampled,
      fields=steps.Fields(batch="config.grpo.prompts_per_step"))

  init = runtime.init_params_fn(config, cfg, mesh)
  ref_params = None
  if g.beta:
    ref_params = init(sharding.param_shardings(cfg, mesh))
    init = lambda shardings: ref_params
  stop = tuple(tok.stop_ids) or (() if cfg.eos_token_id is None else (cfg.eos_token_id,))
  pad = tok.pad_id if tok.pad_id is not None else (tok.eos_id or 0)
  decode = lambda t: decode_with_specials(tok, t)
  rollout = group.make_rollout_fn(
      cfg, kept, ids, num_generations=G, max_new_tokens=g.max_new_tokens, seq_len=seq_len,
      stop_ids=stop, pad_id=pad, decode=decode, mesh=mesh, seed=config.seed,
      temperature=g.temperature, top_p=g.top_p, top_k=g.top_k, scale_rewards=g.scale_rewards,
      dynamic_sampling=g.dynamic_sampling, mask_truncated=g.mask_truncated,
      format_weight=g.format_weight, ref_params=ref_params,
      length_bucket=g.get("length_bucket", 0), train_groups=P if sampled > P else 0,
      ref_chunk=config.train.get("loss_chunk", 0),
      on_samples=_SampleLog(os.path.join(workdir, "rollouts.jsonl"), g.get("log_samples_every", 0)))
  stage = engine.Stage(
      name=f"grpo/{g.loss_type}",
      loss_fn=make_loss_fn(cfg, loss_type=g.loss_type, epsilon_low=g.epsilon_low,
                           epsilon_high=g.epsilon_high, beta=g.beta,
                           max_completion_length=g.max_new_tokens, grad_accum=accum,
                           loss_chunk=config.train.get("loss_chunk", 0)),
      train_iter=iter(prompt_dataset(len(kept), sampled, config.seed, d.get("shuffle", True))),
      num_steps=num_steps, init_params=init, rollout=rollout,
      tokens_in_batch=lambda b: int(np.asarray(b["loss_mask"]).sum()))
  return engine.train(config, cfg, stage, mesh, workdir)

