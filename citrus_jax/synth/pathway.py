"""Expert-pathway synthesis of SFT-3 chains: a search over reasoning steps judged by an LLM critic.

Per item (CITRUS.md, "Expert-pathway data synthesis"):
  1. an MCQ is rewritten as an open question (options removed); open items are used as they are;
  2. depth-first search over steps: the generator writes the next step (seeing the accepted steps
     with their feedback, the siblings already abandoned, and on a retry its rejected attempt with
     the critic's feedback); the critic, who knows the ground truth, rates it 0/1 with feedback; a
     rejected step is retried up to `retries` times; an accepted step extends the chain; up to
     `width` alternative steps are tried at each point, and a point whose alternatives all fail
     (or the depth limit) is a dead end, so the search backtracks to the previous point;
  3. after each accepted step (from `min_depth` on) the completeness judge may stop the chain;
  4. the rewriter turns the complete chain into a first-person monologue ending in <answer>;
  5. the verifier keeps it only if the answer matches the ground truth: by rule first
     (`map_to_option` for MCQs, normalised text for open items), else by the LLM verifier. A
     failed chain sends the search on to other branches, up to `max_complete` complete chains.
Every call has a seed derived from (seed, item id, role, call number), so a rerun asks exactly the
same requests and, behind `CachedLLM`, costs nothing for the work already done.

Job outputs in out_dir: `provenance.jsonl` (one committed record per item, kept or dropped, with
its counts, tokens and chain), `sft.jsonl` (kept items as {"id", "input", "target"}, the format
the SFT stage reads; rebuilt from provenance in input order), `stats.json`. A killed job restarts
without losing or duplicating items: provenance is the commit log (a torn last line is cut off),
items whose call failed (LLMError) are left uncommitted and retried by the next run.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import time
from typing import Any, Iterable, Mapping, Sequence

from absl import logging

from citrus_jax.data import records
from citrus_jax.eval.extract import map_to_option
from citrus_jax.eval.prompts import citrus_target, citrus_user_prompt
from citrus_jax.synth import roles
from citrus_jax.synth.items import SynthItem, read_items
from citrus_jax.synth.llm import (LLM, CachedLLM, ChatRequest, LLMError, OpenAIBackend,
                                  PromptTooLongError)


@dataclasses.dataclass(frozen=True)
class SearchOptions:
  width: int = 2  # alternative steps tried at each point before backtracking
  depth: int = 6  # longest chain (accepted steps)
  retries: int = 2  # re-generations of a rejected step with the critic's feedback
  min_depth: int = 1  # the judge is asked from this chain length on
  max_generations: int = 40  # generator calls per item (budget)
  max_complete: int = 2  # complete chains rewritten and verified before the item is dropped

  def validate(self) -> "SearchOptions":
    for f in dataclasses.fields(self):
      if getattr(self, f.name) < (0 if f.name == "retries" else 1):
        raise ValueError(f"search.{f.name}={getattr(self, f.name)} is out of range")
    if self.min_depth > self.depth:
      raise ValueError(f"search.min_depth={self.min_depth} > search.depth={self.depth}")
    return self


# role -> (temperature, max_tokens)
DEFAULT_SAMPLING = {"rewrite_question": (0.0, 512), "step": (0.7, 512), "critic": (0.0, 384),
                    "judge": (0.0, 128), "rewrite_chain": (0.3, 2048), "verify": (0.0, 64)}


@dataclasses.dataclass
class JobOptions:
  search: SearchOptions = dataclasses.field(default_factory=SearchOptions)
  sampling: Mapping[str, tuple[float, int]] = dataclasses.field(
      default_factory=lambda: dict(DEFAULT_SAMPLING))
  prompts_dir: str = ""
  seed: int = 0
  workers: int = 4  # items in flight (threads); the local backend batches their calls
  keep_input: bool = True  # keep an item's own "input" prompt; else the Citrus prompt is built


class _Stop(Exception):
  """Ends an item's search with a drop reason."""

  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason


def _seed(*parts: Any) -> int:
  return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:4], "big")


class _ItemRun:
  """The search for one item; counters and tokens go into its provenance record."""

  def __init__(self, item: SynthItem, llm: LLM, prompts: Mapping[str, roles.PromptTemplate],
               opts: JobOptions):
    self.item, self.llm, self.prompts, self.opts = item, llm, prompts, opts
    self.s = opts.search
    self.counts: collections.Counter[str] = collections.Counter()
    self.tokens: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    self.rejected: list[dict[str, Any]] = []
    self.deepest: list[dict[str, str]] = []
    self.failures: list[str] = []
    self.question = item.question

  def call(self, role: str, **values: Any) -> str:
    temperature, max_tokens = self.opts.sampling[role]
    n = self.tokens[role]["calls"]
    request = ChatRequest(self.prompts[role].render(**values), temperature=temperature,
                          max_tokens=max_tokens, seed=_seed(self.opts.seed, self.item.id, role, n),
                          tag=role)
    response = self.llm.complete(request)
    t = self.tokens[role]
    t["calls"] += 1
    t["cached"] += int(response.cached)
    t["prompt"] += response.prompt_tokens
    t["completion"] += response.completion_tokens
    return response.texts[0]

  # ------------------------------------------------------------------------------ roles

  def rewrite_question(self) -> str:
    self.counts["rewrite_question_calls"] += 1
    text = self.call("rewrite_question", question=self.item.question, options=self.item.options,
                     options_text=roles.options_text(self.item.options), answer=self.item.answer)
    text = text.strip()
    if not text:
      raise _Stop("rewrite_question_failed")
    self.counts["rewrite_question_ok"] += 1
    return text

  def next_step(self, chain: list[dict[str, str]], tried: list[str]) -> tuple[dict | None, str]:
    """An accepted {step, feedback} (or None) and the last attempt's text."""
    depth, retry, step = len(chain) + 1, None, ""
    for attempt in range(self.s.retries + 1):
      if self.counts["step_calls"] >= self.s.max_generations:
        raise _Stop("budget_exhausted")
      self.counts["step_calls"] += 1
      self.counts["retries"] += int(attempt > 0)
      step = roles.parse_step(self.call("step", question=self.question, chain=chain, depth=depth,
                                        retry=retry, tried=list(tried),
                                        attempt=attempt))
      if step:
        self.counts["critic_calls"] += 1
        rating, feedback = roles.parse_critic(self.call(
            "critic", question=self.question, ground_truth=self.item.answer, chain=chain,
            step=step, depth=depth))
        self.counts["critic_unparsed"] += int(rating is None)
      else:
        self.counts["empty_steps"] += 1
        rating, feedback = 0, "The step was empty; write one concrete reasoning step."
      if rating == 1:
        self.counts["accepted"] += 1
        return {"step": step, "feedback": feedback}, step
      self.counts["rejected"] += 1
      self.rejected.append({"depth": depth, "attempt": attempt, "step": step,
                            "feedback": feedback})
      retry = {"step": step, "feedback": feedback or "(no feedback)"}
    return None, step

  def judge(self, chain: list[dict[str, str]]) -> bool:
    self.counts["judge_calls"] += 1
    flag = roles.parse_flag(self.call("judge", question=self.question, chain=chain),
                            ("complete", "decision", "completeness"))
    self.counts["judge_unparsed"] += int(flag is None)
    self.counts["judge_complete"] += int(flag == 1)
    return flag == 1

  def verify(self, answer: str) -> dict[str, Any]:
    self.counts["verify_checks"] += 1
    item = self.item
    if item.is_mcq:
      pred = map_to_option(answer, item.options)
      if pred is not None:
        return {"match": pred == item.gold, "method": "rule", "pred": pred}
    elif roles.open_answers_match(answer, item.answer):
      return {"match": True, "method": "rule", "pred": None}
    self.counts["verify_llm_calls"] += 1
    flag = roles.parse_flag(self.call("verify", question=self.question,
                                      ground_truth=item.answer, answer=answer),
                            ("verdict", "same", "match"))
    return {"match": flag == 1, "method": "llm", "pred": None}

  def finish(self, chain: list[dict[str, str]]) -> dict[str, Any] | None:
    """Rewrite + verify a complete chain: the kept result, or None (reason in self.failures)."""
    self.counts["complete_chains"] += 1
    self.counts["rewriter_calls"] += 1
    parsed = roles.parse_final(self.call("rewrite_chain", question=self.question, chain=chain))
    if parsed is None:
      self.failures.append("rewriter_no_answer")
      return None
    self.counts["rewriter_parsed"] += 1
    think, answer = parsed
    verdict = self.verify(answer)
    if not verdict["match"]:
      self.counts["verify_failed"] += 1
      self.failures.append("verifier_mismatch")
      return None
    self.counts["verify_passed"] += 1
    return {"chain": chain, "think": think, "answer": answer, "verifier": verdict}

  # ------------------------------------------------------------------------------ search

  def search(self, chain: list[dict[str, str]]) -> dict[str, Any] | None:
    if len(chain) > len(self.deepest):
      self.deepest = chain
    if len(chain) >= self.s.depth:
      self.counts["dead_ends"] += 1
      return None
    tried: list[str] = []
    for _ in range(self.s.width):
      node, last = self.next_step(chain, tried)
      if node is None:
        tried.append(last)
        continue
      new = chain + [node]
      if len(new) >= self.s.min_depth and self.judge(new):
        result = self.finish(new)
        if result is not None:
          return result
        if self.counts["complete_chains"] >= self.s.max_complete:
          raise _Stop(self.failures[-1])
      else:
        result = self.search(new)
        if result is not None:
          return result
      tried.append(node["step"])
      self.counts["backtracks"] += 1
    self.counts["dead_ends"] += 1
    return None

  def run(self) -> dict[str, Any]:
    item, status, reason, result = self.item, "dropped", None, None
    try:
      if item.is_mcq:
        self.question = self.rewrite_question()
      result = self.search([])
      if result is None:
        reason = self.failures[-1] if self.failures else "search_exhausted"
      else:
        status = "kept"
    except _Stop as e:
      reason = e.reason
    except PromptTooLongError as e:
      reason = "prompt_too_long"
      logging.warning("%s: %s", item.id, e)
    record: dict[str, Any] = {
        "id": item.id, "status": status, "reason": reason, "where": item.where,
        "question": item.question, "open_question": self.question, "ground_truth": item.answer,
        "gold": item.gold, "counts": dict(self.counts),
        "tokens": {r: dict(t) for r, t in self.tokens.items()},
        "chain": (result or {}).get("chain", self.deepest), "rejected": self.rejected,
    }
    if result is not None:
      prompt = item.input if (self.opts.keep_input and item.input) else \
          citrus_user_prompt(self.question)
      record.update(answer=result["answer"], verifier=result["verifier"], sft={
          "id": item.id, "input": prompt, "target": citrus_target(result["think"],
                                                                    result["answer"])})
    return record


# ------------------------------------------------------------------------------------------------
# The job: resumable, concurrent over items.


def _read_committed(path: str) -> list[dict[str, Any]]:
  """Provenance records; a torn last line (killed while writing) is cut off the file, any other
  bad line is an error naming file:line (data/records.read_log)."""
  return records.read_log(path, required=("id",))


def _write_sft(path: str, records: Iterable[dict[str, Any]]) -> int:
  tmp, n = path + ".tmp", 0
  with open(tmp, "w", encoding="utf-8") as f:
    for r in records:
      if r.get("status") == "kept":
        f.write(json.dumps(r["sft"], ensure_ascii=False) + "\n")
        n += 1
  os.replace(tmp, path)
  return n


def run_job(items: Sequence[SynthItem], llm: LLM, out_dir: str,
            opts: JobOptions | None = None, input_report: dict | None = None) -> dict[str, Any]:
  """Synthesizes every item not yet committed in out_dir; returns (and writes) the statistics."""
  opts = opts or JobOptions()
  opts.search.validate()
  missing = set(roles.ROLES) - set(opts.sampling)
  if missing:
    raise ValueError(f"sampling has no (temperature, max_tokens) for roles {sorted(missing)}")
  prompts = roles.load_prompts(opts.prompts_dir)
  ids = [it.id for it in items]
  dup = [i for i, c in collections.Counter(ids).items() if c > 1]
  if dup:
    raise ValueError(f"duplicate item ids {dup[:3]}; ids must be unique across input files")
  os.makedirs(out_dir, exist_ok=True)
  prov_path = os.path.join(out_dir, "provenance.jsonl")
  sft_path = os.path.join(out_dir, "sft.jsonl")
  committed = {r["id"]: r for r in _read_committed(prov_path)}
  _write_sft(sft_path, committed.values())
  todo = [it for it in items if it.id not in committed]
  resumed = len(items) - len(todo)
  logging.info("synthesis: %d items, %d already committed, %d to do", len(items), resumed,
               len(todo))
  errors: dict[str, str] = {}
  start = time.time()
  pool = concurrent.futures.ThreadPoolExecutor(max(1, opts.workers), "synth")
  try:
    with open(prov_path, "a", encoding="utf-8") as prov, open(sft_path, "a",
                                                               encoding="utf-8") as sft:
      futures = {pool.submit(_ItemRun(it, llm, prompts, opts).run): it for it in todo}
      for fut in concurrent.futures.as_completed(futures):
        item = futures[fut]
        try:
          record = fut.result()
        except LLMError as e:
          errors[item.id] = str(e)
          logging.error("%s: not committed (rerun to retry): %s", item.id, e)
          continue
        prov.write(json.dumps(record, ensure_ascii=False) + "\n")
        prov.flush()
        committed[item.id] = record
        if record["status"] == "kept":
          sft.write(json.dumps(record["sft"], ensure_ascii=False) + "\n")
          sft.flush()
  finally:
    pool.shutdown(wait=False, cancel_futures=True)
  order = {i: k for k, i in enumerate(ids)}
  ordered = sorted(committed.values(), key=lambda r: order.get(r["id"], len(order)))
  _write_sft(sft_path, ordered)
  stats = summarize(ordered, errors=errors, input_report=input_report)
  stats["run"] = {"resumed_items": resumed, "new_items": len(todo) - len(errors),
                  "wall_s": round(time.time() - start, 3)}
  for attr in ("hits", "misses"):
    if hasattr(llm, attr):
      stats["run"][f"cache_{attr}"] = getattr(llm, attr)
  with open(os.path.join(out_dir, "stats.json"), "w", encoding="utf-8") as f:
    json.dump(stats, f, indent=2)
  return stats


def _rate(num: int, den: int) -> dict[str, Any]:
  return {"accepted": num, "calls": den, "rate": round(num / den, 4) if den else None}


def summarize(records: Sequence[dict[str, Any]], errors: Mapping[str, str] | None = None,
              input_report: dict | None = None) -> dict[str, Any]:
  """Acceptance per role, chain lengths, kept/dropped with reasons, tokens (from provenance)."""
  c: collections.Counter[str] = collections.Counter()
  tokens: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
  for r in records:
    c.update(r.get("counts", {}))
    for role, t in r.get("tokens", {}).items():
      tokens[role].update(t)
  kept = [r for r in records if r["status"] == "kept"]
  lengths = collections.Counter(len(r["chain"]) for r in kept)
  total = collections.Counter()
  for t in tokens.values():
    total.update(t)
  return {
      "items": {"committed": len(records), "kept": len(kept), "dropped": len(records) - len(kept),
                "errors": len(errors or {}),
                "skipped_input": (input_report or {}).get("skipped", {})},
      "kept_rate": round(len(kept) / len(records), 4) if records else None,
      "dropped_reasons": dict(collections.Counter(r["reason"] for r in records
                                                  if r["status"] != "kept")),
      "errors": dict(list((errors or {}).items())[:20]),
      "acceptance": {
          "rewrite_question": _rate(c["rewrite_question_ok"], c["rewrite_question_calls"]),
          "critic": _rate(c["accepted"], c["critic_calls"] + c["empty_steps"]),
          "judge": _rate(c["judge_complete"], c["judge_calls"]),
          "rewriter": _rate(c["rewriter_parsed"], c["rewriter_calls"]),
          "verifier": _rate(c["verify_passed"], c["verify_checks"]),
      },
      "unparsed": {"critic": c["critic_unparsed"], "judge": c["judge_unparsed"]},
      "search": {k: c[k] for k in ("step_calls", "retries", "backtracks", "dead_ends",
                                   "complete_chains", "verify_llm_calls")},
      "chain_length": {"kept": {str(k): v for k, v in sorted(lengths.items())},
                       "mean": round(sum(k * v for k, v in lengths.items()) / len(kept), 3)
                       if kept else None},
      "tokens": {"prompt": total["prompt"], "completion": total["completion"],
                 "total": total["prompt"] + total["completion"], "calls": total["calls"],
                 "cached_calls": total["cached"],
                 "by_role": {r: dict(t) for r, t in sorted(tokens.items())}},
  }


def format_stats(stats: Mapping[str, Any]) -> str:
  it = stats["items"]
  lines = [f"items: {it['committed']} committed, {it['kept']} kept, {it['dropped']} dropped, "
           f"{it['errors']} errors (uncommitted), skipped input {it['skipped_input']}",
           f"dropped reasons: {stats['dropped_reasons']}"]
  for role, a in stats["acceptance"].items():
    lines.append(f"  {role:<17} {a['accepted']}/{a['calls']} accepted"
                 + (f" ({a['rate']:.1%})" if a["rate"] is not None else ""))
  lines.append(f"chain length (kept): {stats['chain_length']['kept']} "
               f"mean {stats['chain_length']['mean']}")
  t = stats["tokens"]
  lines.append(f"tokens: {t['prompt']} prompt + {t['completion']} completion = {t['total']} in "
               f"{t['calls']} calls ({t['cached_calls']} from cache)")
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# From a config (configs/synth.py).


def make_llm(config: Any, out_dir: str) -> LLM:
  """The configured backend behind its cache (config.cache.path "none" disables the cache)."""
  b = config.backend
  if b.kind == "openai":
    llm: LLM = OpenAIBackend(b.base_url, b.model, api_key_env=b.api_key_env,
                             timeout_s=b.timeout_s, max_retries=b.max_retries,
                             backoff_s=b.backoff_s, concurrency=b.concurrency,
                             max_tokens_field=b.max_tokens_field)
  elif b.kind == "local":
    # Imported here: the local backend loads JAX and the model stack (~6 s an API run skips).
    from citrus_jax import sharding
    from citrus_jax.infer.local import SamplerBackend, load_model
    mesh = sharding.make_mesh(tuple(b.mesh)) if b.mesh else None
    cfg, params, tok = load_model(b.checkpoint, b.tokenizer, mesh=mesh)
    llm = SamplerBackend(params, cfg, tok, name=b.model or f"local:{os.path.abspath(b.checkpoint)}",
                         mesh=mesh, max_batch=b.max_batch, batch_window_s=b.batch_window_s,
                         clamp_max_tokens=True)
  else:
    raise ValueError(f"config.backend.kind={b.kind!r}; expected 'openai' or 'local'")
  path = config.cache.path or os.path.join(out_dir, "llm_cache.jsonl")
  return llm if path == "none" else CachedLLM(llm, path, config.cache.namespace)


def options_from_config(config: Any) -> JobOptions:
  s = config.search
  search = SearchOptions(width=s.width, depth=s.depth, retries=s.retries, min_depth=s.min_depth,
                         max_generations=s.max_generations, max_complete=s.max_complete)
  sampling = {role: (float(config.roles[role].temperature), int(config.roles[role].max_tokens))
              for role in roles.ROLES}
  return JobOptions(search=search, sampling=sampling, prompts_dir=config.prompts_dir,
                    seed=config.seed, workers=config.workers, keep_input=config.input.keep_input)


def run(config: Any, llm: LLM | None = None) -> dict[str, Any]:
  """Reads the inputs, runs (or resumes) the job in config.out_dir, prints the statistics."""
  items, report = read_items(config.input.paths, config.input.format, config.input.on_error)
  if config.input.limit:
    items = items[:config.input.limit]
  own = llm is None
  llm = make_llm(config, config.out_dir) if own else llm
  try:
    stats = run_job(items, llm, config.out_dir, options_from_config(config), report)
  finally:
    if own:
      llm.close()
  print(format_stats(stats))
  return stats
