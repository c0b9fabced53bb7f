"""Generation for MCQ evaluation: chat prompts, batched sampling, per-item output records
(split out of eval/harness.py; harness re-exports these names).
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

import jax
from tqdm.auto import tqdm

from citrus_jax import chat, sharding
from citrus_jax.eval import extract, loglik, prompts, scaling
from citrus_jax.infer import sampler
from citrus_jax.eval.summaries import summarize
from citrus_jax.model.config import ModelConfig

PROMPTS = prompts.EVAL_PROMPTS


def item_messages(item: Any, prompt: str = prompts.DEFAULT_EVAL_PROMPT) -> list[dict[str, str]]:
  """The chat messages of one item for a prompt variant (eval/prompts.py says what each is)."""
  if prompt not in PROMPTS:
    raise ValueError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
  return prompts.eval_messages(item, prompt)


def _progress(total: int, desc: str, enabled: bool):
  return tqdm(total=total, desc=desc, disable=not enabled or jax.process_index() != 0,
              dynamic_ncols=True, file=sys.stderr)


def _base_record(item: Any, benchmark: str) -> dict:
  return {"id": item.id, "benchmark": benchmark, "source": item.source, "gold": item.gold,
          "options": item.options}


def output_record(item: Any, output: str | None, benchmark: str = "", **extra: Any) -> dict:
  """A generation record: the raw output, its extracted span, predicted letter, correctness."""
  s = extract.score(output, item)
  return {**_base_record(item, benchmark), "output": output, "span": s["span"],
          "pred": s["pred"], "correct": bool(s["correct"]), **extra}


def _seed(seed: int, batch: int) -> int:
  return (seed * 1_000_003 + batch) % (2**31 - 1)


def generate_outputs(params: Any, cfg: ModelConfig, tok: Any, prompt_ids: Sequence[list[int]], *,
                     max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
                     top_k: int = 0, seed: int = 0, batch_size: int = 8,
                     mesh: jax.sharding.Mesh | None = None,
                     on_batch: Callable[[int], None] | None = None) -> list[dict]:
  """[{"output", "n_new_tokens", "finish_reason", "truncated"}] in the order of `prompt_ids`.

  Prompts are sorted by length (longest first) into batches of `batch_size` to limit padding;
  batch k samples with a seed derived from (seed, k), so a run is reproducible for the same items,
  batch size and seed. A prompt longer than cfg.max_seq_len - max_new_tokens keeps its last
  tokens (counted as truncated).
  """
  room = cfg.max_seq_len - max_new_tokens
  if room < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in "
                     f"cfg.max_seq_len={cfg.max_seq_len}")
  ids = [list(p)[-room:] for p in prompt_ids]
  truncated = [len(p) > room for p in prompt_ids]
  stop = tuple(tok.stop_ids) or None
  pad = tok.pad_id if tok.pad_id is not None else (tok.eos_id or 0)
  if mesh is not None:
    params = jax.device_put(params, sharding.param_shardings(cfg, mesh))
  order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
  out: list[dict | None] = [None] * len(ids)
  for k, b in enumerate(range(0, len(order), batch_size)):
    idx = order[b:b + batch_size]
    res = sampler.generate(params, cfg, [ids[i] for i in idx], max_new_tokens=max_new_tokens,
                           temperature=temperature, top_p=top_p, top_k=top_k,
                           seed=_seed(seed, k), stop_ids=stop, pad_id=pad, mesh=mesh)
    for r, i in enumerate(idx):
      toks = res.tokens[r]
      out[i] = {"output": tok.decode([t for t in toks if t not in (stop or ())]),
                "n_prompt_tokens": len(ids[i]), "n_new_tokens": len(toks),
                "finish_reason": res.finish_reason[r], "truncated": truncated[i]}
    if on_batch is not None:
      on_batch(len(idx))
  return out  # type: ignore[return-value]


def evaluate_items(params: Any, cfg: ModelConfig, tok: Any, items: Sequence[Any], *,
                   prompt: str = "citrus", mode: str = "generate", max_new_tokens: int = 512,
                   temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: int = 0,
                   batch_size: int = 8, mesh: jax.sharding.Mesh | None = None,
                   loglik_form: str = "text", chat_format: str | None = None,
                   benchmark: str = "", progress: bool = False, samples: int = 1,
                   think_budget: int = 0, answer_tokens: int = 32) -> tuple[list[dict], dict]:
  """(one record per item, summary) for MCQItems; mode: generate | loglik | both.

  samples=k > 1 draws k outputs per item (each prompt repeated k times in the same sampler
  batch, so batch_size items = batch_size * k rows per call); the record's output/pred/correct
  are the first sample's, "samples" holds all k, plus maj_pred/maj_correct/pass_correct.
  think_budget > 0: budget forcing (scaling.budget_forced_outputs), answer_tokens after it.
  """
  if mode not in ("generate", "loglik", "both"):
    raise ValueError(f"mode must be generate, loglik or both, got {mode!r}")
  if samples < 1 or (samples > 1 and temperature <= 0):
    raise ValueError(f"samples={samples} needs samples >= 1, and temperature > 0 when > 1 "
                     f"(got temperature={temperature}: greedy samples would all be equal)")
  if tok.vocab_size > cfg.vocab_size:
    raise ValueError(f"tokenizer vocab {tok.vocab_size} > model vocab {cfg.vocab_size}")
  records = [_base_record(item, benchmark) for item in items]
  if mode in ("generate", "both"):
    rendered = [chat.render(item_messages(item, prompt), tok, add_generation_prompt=True,
                            fmt=chat_format or None) for item in items]
    k = samples
    with _progress(len(items), f"{benchmark or 'eval'} generate", progress) as bar:
      def gen(ids: list[list[int]], n_new: int) -> list[dict]:
        return generate_outputs(params, cfg, tok, ids, max_new_tokens=n_new,
                                temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                                batch_size=batch_size * k, mesh=mesh,
                                on_batch=lambda m: bar.update(min(m / k, bar.total - bar.n)))
      ids = [r.tokens for r in rendered for _ in range(k)]
      if think_budget > 0:
        gens = scaling.budget_forced_outputs(gen, tok, ids, budget=think_budget,
                                             answer_tokens=answer_tokens)
      else:
        gens = gen(ids, max_new_tokens)
    for i, (rec, item, r) in enumerate(zip(records, items, rendered)):
      group = gens[i * k:(i + 1) * k]
      rec.update(output_record(item, group[0]["output"], benchmark, prompt=r.text,
                               **{n: v for n, v in group[0].items() if n != "output"}))
      if k > 1:
        scored = [extract.score(g["output"], item) for g in group]
        rec["samples"] = [{"output": g["output"], "pred": s["pred"], "correct": bool(s["correct"]),
                           **{n: g[n] for n in ("n_new_tokens", "finish_reason", "forced")
                              if n in g}} for g, s in zip(group, scored)]
        rec.update(scaling.vote_record([s["pred"] for s in scored], item.gold))
  if mode in ("loglik", "both"):
    n_pairs = sum(len(item.options) for item in items)
    with _progress(n_pairs, f"{benchmark or 'eval'} loglik", progress) as bar:
      ll = loglik.score_items(params, cfg, tok, items, form=loglik_form,
                              batch_size=batch_size, mesh=mesh, on_batch=bar.update)
    for rec, r in zip(records, ll):
      rec["loglik"] = r
  return records, summarize(records)
