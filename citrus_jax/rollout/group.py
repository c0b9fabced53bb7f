"""Group rollouts for GRPO-family RL: G completions per prompt from the CURRENT params, scored.

`make_rollout_fn` returns the `engine.Stage.rollout` hook: the prompt batch the stage's iterator
yields (question indices, the same on every process) -> G samples per prompt with the KV-cache
sampler on the training mesh (the live, sharded params: no weight copy, no second engine) ->
verified rewards -> group-normalised advantages -> fixed-shape training rows, of which each process
keeps its own contiguous slice. The sampling seed is a function of (seed, step), so a resumed run
draws the same completions it would have drawn.

Row layout (the LM batch plus two fields): `inputs`/`targets` = (prompt + completion) shifted by
one, `loss_mask` = 1 on completion targets (the stop token included: it is part of the action),
`positions`, `segment_ids`, `advantages` [R], `completion_slots` / `completion_mask` [R, C] (the
completion's slots, where the loss runs the output layer; C = max_new_tokens, or the step's
longest completion rounded up to `length_bucket`), and `ref_logp` [R, C] when a KL to the
initial params is asked for (beta > 0).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from citrus_jax import multihost
from citrus_jax.infer import sampler
from citrus_jax.model import transformer
from citrus_jax.rollout.rejection import _call_seed
from citrus_jax.rollout.rewards import Reward, answer_reward, group_stats
from citrus_jax.train import grpo_loss
from citrus_jax.train.engine import in_mesh, to_global
from citrus_jax.train.losses import token_logprobs_from_hidden


def completion_rows(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                    seq_len: int, pad_id: int = 0) -> dict[str, np.ndarray]:
  """Right-padded next-token rows of prompt + completion with the loss on the completion."""
  R = len(prompts)
  out = {k: np.zeros((R, seq_len), np.int32) for k in ("inputs", "targets", "positions",
                                                       "segment_ids")}
  out["inputs"][:] = pad_id
  out["targets"][:] = pad_id
  out["loss_mask"] = np.zeros((R, seq_len), np.float32)
  for i, (p, c) in enumerate(zip(prompts, completions)):
    seq = list(p) + list(c)
    if len(seq) - 1 > seq_len:
      raise ValueError(f"row {i}: prompt {len(p)} + completion {len(c)} tokens exceed "
                       f"seq_len + 1 = {seq_len + 1}")
    n = len(seq) - 1
    out["inputs"][i, :n] = seq[:-1]
    out["targets"][i, :n] = seq[1:]
    out["positions"][i, :n] = np.arange(n)
    out["segment_ids"][i, :n] = 1
    out["loss_mask"][i, len(p) - 1:n] = 1.0
  return out


def round_up(n: int, multiple: int) -> int:
  return -(-int(n) // int(multiple)) * int(multiple)


def completion_window(loss_mask_RT: np.ndarray, prompt_lens: Sequence[int],
                      completion_lens: Sequence[int], width: int) -> tuple[np.ndarray, np.ndarray]:
  """Each row's completion targets as a [R, width] window into its slots: `completion_slots`
  (slot indices, clipped to the row) and `completion_mask` (the row's loss mask there, 0 past
  the completion). The loss runs the output layer on these slots only: the prompt's logits are
  never trained and, for a short-answer task, the larger part of a row."""
  R, T = loss_mask_RT.shape
  k = np.arange(width)
  starts = np.asarray(prompt_lens, np.int64) - 1
  slots = np.minimum(starts[:, None] + k[None], T - 1).astype(np.int32)
  inside = k[None] < np.asarray(completion_lens, np.int64)[:, None]
  mask = np.take_along_axis(loss_mask_RT, slots, axis=1) * inside
  return slots, mask.astype(np.float32)


def select_groups(degenerate: np.ndarray, n: int) -> np.ndarray:
  """Indices of `n` groups to train on, in sampling order: those whose rewards differ first,
  then the degenerate ones (`grpo_loss.dynamic_sampling_mask`: no gradient) to keep the batch's
  shape."""
  degenerate = np.asarray(degenerate)
  order = np.concatenate([np.flatnonzero(~degenerate), np.flatnonzero(degenerate)])
  if len(order) < n:
    raise ValueError(f"{len(order)} groups sampled, {n} to train on")
  return order[:n]


def _ref_logprobs_fn(cfg: Any, chunk: int = 0) -> Callable:
  """Jitted (params, rows) -> per-token log-probs [R, T]; `chunk` > 0 (`train.loss_chunk`)
  through `chunked_ce`, so the reference forward never holds the [R, T, V] logits either."""

  @jax.jit
  def ref_logp(params, rows):
    hidden, _ = transformer.forward(params, rows["inputs"], cfg, positions_BT=rows["positions"],
                                    segment_ids_BT=rows["segment_ids"], return_hidden=True)
    return token_logprobs_from_hidden(params, hidden, rows["targets"], cfg, chunk)
  return ref_logp


def make_rollout_fn(cfg: Any, questions: Sequence[Any], prompt_ids: Sequence[Sequence[int]], *,
                    num_generations: int, max_new_tokens: int, seq_len: int, stop_ids: Sequence[int],
                    pad_id: int, decode: Callable[[Sequence[int]], str], mesh: Any, seed: int,
                    temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                    scale_rewards: str | bool = "group", dynamic_sampling: bool = False,
                    mask_truncated: bool = False, format_weight: float = 0.0,
                    judge: Any = None, ref_params: Any = None, ref_chunk: int = 0,
                    length_bucket: int = 0, train_groups: int = 0,
                    on_samples: Callable[[int, list[dict]], None] | None = None) -> Callable:
  """The Stage.rollout hook (module doc). `questions[i]` is scored against `prompt_ids[i]`'s
  completions; `on_samples(step, records)` (process 0) receives each step's texts and rewards.
  `length_bucket` > 0 trims the rows to the step's longest prompt + completion, rounded up to a
  multiple of it (one compile per bucket); 0 keeps every step at `seq_len` (one shape).
  `train_groups` > 0: the step samples more prompts than it trains on (the index batch holds
  more) and keeps this many groups, those with mixed rewards first (DAPO's dynamic sampling at a
  fixed cost: sampling is cheaper than a training row, and a group whose rewards are all equal
  has no gradient); 0 trains every sampled group. `ref_chunk` > 0 computes the reference
  log-probs in sequence chunks (`train.loss_chunk`)."""
  G = num_generations
  ref_fn = _ref_logprobs_fn(cfg, int(ref_chunk)) if ref_params is not None else None
  stop = set(stop_ids)

  def rollout(params: Any, index_batch: Any, step: int) -> tuple[dict[str, np.ndarray],
                                                                  dict[str, float]]:
    t0 = time.perf_counter()
    idx = [int(i) for i in np.asarray(index_batch).reshape(-1)]
    rows_prompts = [prompt_ids[i] for i in idx for _ in range(G)]
    res = sampler.generate(params, cfg, rows_prompts, max_new_tokens=max_new_tokens,
                           temperature=temperature, top_p=top_p, top_k=top_k,
                           seed=_call_seed(seed, step), stop_ids=tuple(stop),
                           pad_id=pad_id, mesh=mesh)
    t_gen = time.perf_counter() - t0
    texts = [decode([t for t in toks if t not in stop]) for toks in res.tokens]
    rewards: list[Reward] = [
        answer_reward(questions[idx[r // G]], text.strip(), reason, format_weight=format_weight,
                      judge=judge)
        for r, (text, reason) in enumerate(zip(texts, res.finish_reason))]
    values = np.asarray([rw.value for rw in rewards], np.float32)
    metrics = dict(group_stats(rewards, G))  # of everything sampled
    degenerate = np.asarray(grpo_loss.dynamic_sampling_mask(values, G))  # [groups]
    if train_groups:
      groups = select_groups(degenerate, train_groups)
      degenerate = degenerate[groups]
      metrics["groups/trained_mixed"] = float((~degenerate).mean())
      rows_kept = (groups[:, None] * G + np.arange(G)[None]).reshape(-1)
      idx = [idx[g] for g in groups]
      rows_prompts = [rows_prompts[r] for r in rows_kept]
      texts = [texts[r] for r in rows_kept]
      rewards = [rewards[r] for r in rows_kept]
      res = sampler.GenerationResult(**{f.name: [getattr(res, f.name)[r] for r in rows_kept]
                                        for f in dataclasses.fields(res)})
      values = values[rows_kept]
    adv = np.asarray(grpo_loss.group_advantages(values, G, scale_rewards))
    longest = max(len(p) + len(c) for p, c in zip(rows_prompts, res.tokens)) - 1
    row_len = min(seq_len, round_up(longest, length_bucket)) if length_bucket else seq_len
    rows = completion_rows(rows_prompts, res.tokens, row_len, pad_id)
    keep = np.ones(len(values), bool)
    if dynamic_sampling:  # groups with one reward for all carry no signal: out of the loss
      keep &= ~np.repeat(degenerate, G)
    truncated = np.asarray([reason != "stop" for reason in res.finish_reason])
    if mask_truncated:
      keep &= ~truncated
    rows["loss_mask"] *= keep[:, None].astype(np.float32)
    rows["advantages"] = adv.astype(np.float32)
    width = max_new_tokens
    if length_bucket:
      width = min(width, round_up(max(len(c) for c in res.tokens), length_bucket))
    rows["completion_slots"], rows["completion_mask"] = completion_window(
        rows["loss_mask"], [len(p) for p in rows_prompts], [len(c) for c in res.tokens], width)
    lengths = np.asarray([len(t) for t in res.tokens], np.float32)
    metrics.update({"completion_length/mean": float(lengths.mean()),
                    "completion_length/max": float(lengths.max()),
                    "truncated_rate": float(truncated.mean()),
                    "rows_trained": float(keep.mean()),
                    "time/rollout_s": t_gen})
    if on_samples is not None and jax.process_index() == 0:
      on_samples(step, [{"question": questions[idx[r // G]].id, "row": r,
                         "text": texts[r],
                         "finish_reason": res.finish_reason[r], "reward": rw.value,
                         "correct": rw.correct, "pred": rw.pred, "advantage": float(adv[r])}
                        for r, rw in enumerate(rewards)])
    pi, pc = jax.process_index(), jax.process_count()
    n = len(values) // pc
    local = {k: v[pi * n:(pi + 1) * n] for k, v in rows.items()}
    if ref_fn is not None:  # log-probs of the frozen initial params, for the k3 KL
      fields = ("inputs", "targets", "positions", "segment_ids")
      ref = multihost.to_host(in_mesh(mesh, ref_fn)(
          ref_params, to_global({k: local[k] for k in fields}, mesh)))
      ref = np.asarray(ref, np.float32)[pi * n:(pi + 1) * n]
      local["ref_logp"] = np.take_along_axis(ref, local["completion_slots"], axis=1)
    return local, metrics

  return rollout
