"""Log-likelihood scoring of multiple-choice options (lm-eval style), for base and CPT models.

For each item and option the model scores `continuation` after `context`; the prediction is the
option with the highest summed log-prob (`acc`), or the highest log-prob per character of the
option (`acc_norm`, as lm-eval's acc_norm: character length of the choice, not token count).

Two forms (`form`):
  * "text" (default, cloze): context "Question: <q>\\nAnswer:" (options NOT listed), continuation
    " <option text>". acc_norm matters here: long options collect more negative log-prob.
  * "letter": context lists the options ("A. text" lines) and ends in "Answer:", continuation
    " <letter>" (lm-eval's MedQA/MMLU set-up; acc_norm equals acc since every choice is 1 char).
An item context (PubMedQA abstract) is put first as "Context: ...".

Context and continuation are encoded separately (ids = [BOS] + enc(context) + enc(continuation)),
so every option is scored after exactly the same context tokens. For Llama-3/Qwen byte-level BPE
this equals encoding the whole text (their pre-tokenizer splits before " word").
Each (context, continuation) pair is one forward pass: pairs are sorted by length and LEFT-padded
into batches, so every continuation ends at the last slot and only its last K positions go
through the output projection.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from citrus_jax import multihost, sharding
from citrus_jax.infer.sampler import bucket_batch, bucket_length
from citrus_jax.model import transformer
from citrus_jax.model.config import ModelConfig
from citrus_jax.train.losses import token_logprobs

FORMS = ("text", "letter")


def context_text(item: Any, form: str = "text") -> str:
  if form not in FORMS:
    raise ValueError(f"loglik form must be one of {FORMS}, got {form!r}")
  parts = [f"Context: {item.context}"] if getattr(item, "context", None) else []
  parts.append(f"Question: {item.question.strip()}")
  if form == "letter":
    parts += [f"{k}. {v}" for k, v in item.options.items()]
  parts.append("Answer:")
  return "\n".join(parts)


def continuations(item: Any, form: str = "text") -> dict[str, str]:
  """letter -> continuation string (with its leading space)."""
  return {k: f" {k if form == 'letter' else v}" for k, v in item.options.items()}


def encode_pair(tok: Any, context: str, continuation: str, add_bos: bool = True
                ) -> tuple[list[int], list[int]]:
  ctx = list(tok.encode(context))
  bos = getattr(tok, "bos_id", None)
  if add_bos and bos is not None:
    ctx = [bos] + ctx
  cont = list(tok.encode(continuation))
  if not ctx or not cont:
    raise ValueError(f"loglik: empty context or continuation ({context[:40]!r}, {continuation!r})")
  return ctx, cont


@functools.partial(jax.jit, static_argnames=("cfg", "K"))
def _score_batch(params, tokens_BT, lengths_B, cont_lens_B, *, cfg: ModelConfig, K: int):
  """Summed log-prob of the last cont_lens_B tokens of each left-padded row, and whether each of
  them is the argmax (lm-eval's is_greedy)."""
  B, T = tokens_BT.shape
  slots_T = jnp.arange(T, dtype=jnp.int32)
  start_B = T - lengths_B
  segments_BT = (slots_T[None] >= start_B[:, None]).astype(jnp.int32)
  positions_BT = jnp.maximum(slots_T[None] - start_B[:, None], 0)
  h_BTD, _ = transformer.forward(params, tokens_BT, cfg, positions_BT=positions_BT,
                                 segment_ids_BT=segments_BT, return_hidden=True)
  logits_BKV = transformer.logits_from_hidden(params, h_BTD[:, T - 1 - K:T - 1], cfg)
  targets_BK = tokens_BT[:, T - K:]
  lp_BK = token_logprobs(logits_BKV, targets_BK)
  mask_BK = jnp.arange(K)[None] >= (K - cont_lens_B)[:, None]
  greedy_BK = jnp.argmax(logits_BKV, axis=-1) == targets_BK
  return (jnp.sum(jnp.where(mask_BK, lp_BK, 0.0), axis=-1),
          jnp.all(greedy_BK | ~mask_BK, axis=-1))


def score_pairs(params: Any, cfg: ModelConfig, pairs: Sequence[tuple[list[int], list[int]]], *,
                batch_size: int = 16, pad_id: int = 0, mesh: jax.sharding.Mesh | None = None,
                on_batch: Callable[[int], None] | None = None) -> list[dict]:
  """[{"loglik", "n_tokens", "is_greedy", "truncated"}] per (context ids, continuation ids).

  A pair longer than cfg.max_seq_len loses context tokens from the left (counted as truncated);
  a continuation that alone does not fit is an error. `on_batch(n)` reports progress.
  """
  seqs, conts, truncated = [], [], []
  for i, (ctx, cont) in enumerate(pairs):
    if len(cont) >= cfg.max_seq_len:
      raise ValueError(f"loglik: continuation {i} has {len(cont)} tokens, cfg.max_seq_len is "
                       f"{cfg.max_seq_len}")
    seq = list(ctx) + list(cont)
    truncated.append(len(seq) > cfg.max_seq_len)
    seqs.append(seq[-cfg.max_seq_len:])
    conts.append(len(cont))
  if mesh is not None:
    params = jax.device_put(params, sharding.param_shardings(cfg, mesh))
  dp = sharding.data_parallel_size(mesh) if mesh is not None else 1
  order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
  out: list[dict | None] = [None] * len(seqs)
  K_all = bucket_length(max(conts, default=1), minimum=8)  # one K for all: fewer compiles
  for b in range(0, len(order), batch_size):
    idx = order[b:b + batch_size]
    T = min(bucket_length(max(len(seqs[i]) for i in idx)), cfg.max_seq_len)
    K = min(K_all, T - 1)
    B = bucket_batch(batch_size if len(order) > batch_size else len(idx), dp)
    tokens = np.full((B, T), pad_id, np.int32)
    lengths = np.zeros((B,), np.int32)
    cont_lens = np.zeros((B,), np.int32)
    for r, i in enumerate(idx):
      tokens[r, T - len(seqs[i]):] = seqs[i]
      lengths[r], cont_lens[r] = len(seqs[i]), conts[i]
    if mesh is not None:  # every process holds the same pairs: see multihost.global_array
      tokens = multihost.global_array(tokens, sharding.batch_sharding(mesh, 2))
      lengths = multihost.global_array(lengths, sharding.batch_sharding(mesh, 1))
      cont_lens = multihost.global_array(cont_lens, sharding.batch_sharding(mesh, 1))
    ll, greedy = multihost.to_host(_score_batch(params, tokens, lengths, cont_lens, cfg=cfg, K=K))
    for r, i in enumerate(idx):
      out[i] = {"loglik": float(ll[r]), "n_tokens": conts[i], "is_greedy": bool(greedy[r]),
                "truncated": truncated[i]}
    if on_batch is not None:
      on_batch(len(idx))
  return out  # type: ignore[return-value]


def choose(option_scores: dict[str, dict]) -> tuple[str, str]:
  """(pred by summed log-prob, pred by log-prob per character); ties go to the earlier option."""
  letters = list(option_scores)
  ll = np.array([option_scores[k]["loglik"] for k in letters])
  chars = np.array([max(option_scores[k]["n_chars"], 1) for k in letters], np.float64)
  return letters[int(np.argmax(ll))], letters[int(np.argmax(ll / chars))]


def item_record(item: Any, option_scores: dict[str, dict]) -> dict:
  """The loglik part of one item's record; option_scores: letter -> {loglik, n_chars, ...}."""
  pred, pred_norm = choose(option_scores)
  return {"options": option_scores, "pred": pred, "pred_norm": pred_norm,
          "correct": pred == item.gold, "correct_norm": pred_norm == item.gold,
          "truncated": any(s.get("truncated", False) for s in option_scores.values())}


def score_items(params: Any, cfg: ModelConfig, tok: Any, items: Sequence[Any], *,
                form: str = "text", batch_size: int = 16, mesh: jax.sharding.Mesh | None = None,
                on_batch: Callable[[int], None] | None = None) -> list[dict]:
  """One loglik record per item (see `item_record`), plus the context text it was scored after."""
  keys, pairs = [], []
  for n, item in enumerate(items):
    ctx = context_text(item, form)
    for letter, cont in continuations(item, form).items():
      keys.append((n, letter, cont))
      pairs.append(encode_pair(tok, ctx, cont))
  pad = getattr(tok, "pad_id", None)
  scores = score_pairs(params, cfg, pairs, batch_size=batch_size,
                       pad_id=0 if pad is None else pad, mesh=mesh, on_batch=on_batch)
  per_item: list[dict[str, dict]] = [{} for _ in items]
  for (n, letter, cont), s in zip(keys, scores):
    # acc_norm divides by the choice's characters (lm-eval: len(choice), no leading space).
    per_item[n][letter] = {**s, "n_chars": len(cont) - 1}
  return [{"context": context_text(item, form), **item_record(item, opts)}
          for item, opts in zip(items, per_item)]


def summarize(records: Sequence[dict]) -> dict:
  """acc / acc_norm over loglik records (each has correct, correct_norm, truncated)."""
  n = len(records)
  c = sum(r["correct"] for r in records)
  cn = sum(r["correct_norm"] for r in records)
  return {"n": n, "n_correct": c, "n_correct_norm": cn, "acc": c / n if n else 0.0,
          "acc_norm": cn / n if n else 0.0, "n_truncated": sum(r["truncated"] for r in records)}
