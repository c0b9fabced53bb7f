"""Rejection sampling (Citrus "XPO"): an SFT model's own answers -> preference pairs for RL.

For each training question the model writes `n_samples` responses (temperature 0.7) to the OPEN
question: the prompt shows no options, but the record keeps them to verify answers. A response's
final answer (`extract.extract_answer_span`) is mapped to an option letter by the rule-based
`extract.map_to_option` and compared with the gold letter; an optional judge
`(question, response, gold_text) -> bool | None` is asked only when the rule finds no letter.
Without options (gold given as text only) the answer is correct when it names the whole gold text
(case, punctuation and spacing folded); otherwise the judge decides, else it counts as wrong.
Responses nobody could verify ("unverified") are never chosen, and are rejected only with
`unverified_as_wrong=True`.

Pairs (CITRUS.md): chosen = the best correct response that passes the checks below: highest
quality score when a scorer is given (and >= `min_chosen_score`), ties and the unscored case go to
the FIRST sample in sampling order (no length bias). Rejected = wrong responses (score <
`min_chosen_score` when scored) and low-scoring correct ones, each passing the same checks and
giving a different answer; at most `max_pairs_per_question`, taken round-robin over distinct
answers (one per wrong option before a second of any), lowest score then sampling order first.
Checks, in order, each counted by name: `unfinished` (hit max_new_tokens), `format` (not exactly
`<think>...</think><answer>...</answer>` with a non-empty answer and nothing around),
`stray_tags` (template tokens like <|eot_id|> / <|im_start|>, <s>, [INST], role lines, pseudo tags
like <Question> / <step>, placeholders like {Q} or "[Insert Your Detailed ...]"), `short_think` (think part < min_think_chars),
`language` (the response's CJK ratio class differs from the question's), `too_long` (prompt +
response > max_chars characters); for pairs also `same_answer` and `duplicate` (the same text
as a rejected response already taken).

Output: the Citrus RL format read by `citrus_jax.data.preference.load_pairs`:
`{"chosen": [prompt turns..., assistant], "rejected": [same prompt turns..., assistant], "meta"}`;
the prompt turns hold the REAL question (the reference code saved a literal "{Q}").

  python -m citrus_jax.rollout.rejection_cli --checkpoint runs/sft/final --tokenizer tok.model \
      --questions rl_questions.jsonl --out pairs.jsonl [--samples_out samples.jsonl]
(the command line lives in rejection_cli.py). On several processes every process samples the
same questions on a mesh spanning them all (`--mesh`), and only process 0 writes.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import sys
from typing import Any, Callable, Iterable, Sequence

import jax
from tqdm.auto import tqdm

from citrus_jax import chat, sharding
from citrus_jax.eval import extract
from citrus_jax.infer import sampler
# Questions and prompt styles live in rollout/questions.py; these names are part of this API.
from citrus_jax.rollout.questions import (PROMPT_STYLES, Messages, Question,  # noqa: F401
                                                 QuestionError, as_questions, input_prompt,
                                                 load_questions, open_prompt,
                                                 open_prompt_with_system, question_from_record)
from citrus_jax.rollout.questions import fold_text as _fold

Judge = Callable[[str, str, str], "bool | None"]  # (question, response, gold_text)
Scorer = Callable[[str, str, str, bool], "float | None"]  # (question, response, gold, correct)
GenerateFn = Callable[[list[list[int]], int], list[tuple[str, str]]]  # (prompts, seed) -> (text,
# finish_reason "stop" | "length") per prompt row

REASONS = ("unfinished", "format", "stray_tags", "short_think", "language", "too_long",
           "same_answer", "duplicate")
RESPONSE_REASONS = REASONS[:6]  # checked on every response; the rest only for pairs


# ------------------------------------------------------------------------------------------------
# Verification and response checks

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
_TAG = re.compile(r"<\s*(/?)\s*(think|answer)\s*>", re.I)
_STRAY = re.compile("|".join([
    r"<\|[^<>|\n]{1,40}\|>",  # <|eot_id|>, <|im_start|>, <|end_of_text|>
    r"</?s>", r"<(?:unk|pad)>", r"\[/?INST\]", r"<</?SYS>>",
    r"<\s*/?\s*(?:question|options?|step|feedback|critique|rating|response|output|input|user|"
    r"assistant|system|reasoning|final_answer)\s*>",
    r"\{\s*(?:Q|question|answer|options?|input|output|response|context|gold)\s*\}",
    r"\[\s*Insert\b[^\]\n]{0,80}\]",  # the SFT prompt's own placeholders, copied

    r"^\s*(?:user|assistant|human)\s*:",  # a role line (chat format "plain")
]), re.I | re.M)
_BARE_LETTER = re.compile(r"^\W*[A-Za-z]\W*$")


def cjk_ratio(text: str) -> float:
  """CJK characters / (CJK characters + Latin letters); 0 for text with neither."""
  n_cjk, n_latin = len(_CJK.findall(text)), len(_LATIN.findall(text))
  return n_cjk / (n_cjk + n_latin) if n_cjk + n_latin else 0.0


def language_of(text: str, threshold: float = 0.3) -> str:
  """"cjk" or "latin": enough for "is this reply in the question's language"."""
  return "cjk" if cjk_ratio(text) >= threshold else "latin"


def open_match(answer: str, gold_text: str) -> bool:
  """An open answer names the whole gold text (a bare letter never does)."""
  if _BARE_LETTER.match(answer):
    return False
  a, g = _fold(answer), _fold(gold_text)
  return bool(g) and f" {g} " in f" {a} "


def split_response(text: str) -> tuple[str, str] | None:
  """(think, answer) of exactly `<think>...</think><answer>...</answer>`, else None."""
  tags = list(_TAG.finditer(text))
  kinds = [(m.group(1), m.group(2).lower()) for m in tags]
  if kinds != [("", "think"), ("/", "think"), ("", "answer"), ("/", "answer")]:
    return None
  o_t, c_t, o_a, c_a = tags
  if text[:o_t.start()].strip() or text[c_t.end():o_a.start()].strip() or text[c_a.end():].strip():
    return None
  think, answer = text[o_t.end():c_t.start()].strip(), text[o_a.end():c_a.start()].strip()
  return (think, answer) if answer else None


@dataclasses.dataclass
class Sample:
  """One sampled response and what was found out about it."""

  index: int  # position among the question's samples (sampling order)
  text: str
  finish_reason: str = "stop"  # "stop" or "length" (hit max_new_tokens)
  answer: str | None = None  # extracted final-answer span
  pred: str | None = None  # option letter the rule mapped it to
  verdict: str = "unverified"  # correct | wrong | unverified
  method: str = "none"  # rule | judge | none
  score: float | None = None
  problem: str | None = None  # first failed check (REASONS), None when usable

  def key(self) -> str:
    """What "the same answer" means: the letter, else the folded answer text."""
    if self.pred is not None:
      return self.pred
    parts = split_response(self.text)
    return _fold(parts[1] if parts else (self.answer or ""))


def verify(q: Question, text: str, judge: Judge | None = None
           ) -> tuple[str | None, str | None, str, str]:
  """(answer span, letter, verdict, method): rule first, the judge only where the rule is silent."""
  span = extract.extract_answer_span(text)
  pred = None
  if q.options:
    pred = extract.map_output(text, q.options)  # untagged text only where it commits (as eval)
    if pred is not None:
      return span, pred, "correct" if pred == q.gold else "wrong", "rule"
  elif span and open_match(span, q.gold_text):
    return span, None, "correct", "rule"
  if judge is not None:
    ok = judge(q.text, text, q.gold_text)
    if ok is not None:
      return span, None, "correct" if ok else "wrong", "judge"
  if not q.options and span:
    return span, None, "wrong", "rule"  # the only acceptable answer is not named
  return span, None, "unverified", "none"


def response_problem(s: Sample, prompt_chars: int, question_lang: str, *, min_think_chars: int,
                     max_chars: int) -> str | None:
  """The first check (REASONS order) a response fails, or None."""
  if s.finish_reason != "stop":
    return "unfinished"
  parts = split_response(s.text)
  if parts is None:
    return "format"
  if _STRAY.search(s.text):
    return "stray_tags"
  if len(parts[0]) < min_think_chars:
    return "short_think"
  if language_of(s.text) != question_lang:
    return "language"
  if prompt_chars + len(s.text) > max_chars:
    return "too_long"
  return None


# ------------------------------------------------------------------------------------------------
# Pairs


def _round_robin(samples: Sequence[Sample]) -> list[Sample]:
  """One response per distinct answer before a second of any (first-seen answer order)."""
  groups: dict[str, list[Sample]] = {}
  for s in samples:
    groups.setdefault(s.key(), []).append(s)
  out, depth = [], 0
  while len(out) < len(samples):
    out += [g[depth] for g in groups.values() if depth < len(g)]
    depth += 1
  return out


def pair_record(q: Question, prompt: Messages, chosen: Sample, rejected: Sample) -> dict:
  side = lambda s: [dict(m) for m in prompt] + [{"role": "assistant", "content": s.text}]
  meta = {"id": q.id, "gold": q.gold, "gold_text": q.gold_text}
  for name, s in (("chosen", chosen), ("rejected", rejected)):
    meta.update({f"{name}_sample": s.index, f"{name}_answer": s.answer, f"{name}_pred": s.pred,
                 f"{name}_verdict": s.verdict, f"{name}_score": s.score})
  return {"chosen": side(chosen), "rejected": side(rejected), "meta": meta}


def build_pairs(q: Question, samples: Sequence[Sample], prompt: Messages, *,
                min_think_chars: int = 200, max_pairs_per_question: int = 3,
                max_chars: int = 8192, min_chosen_score: float = 60.0,
                unverified_as_wrong: bool = False) -> tuple[list[dict], collections.Counter]:
  """Pairs of one question from its verified (and optionally scored) samples, and counts.

  Sets each sample's `problem`. Counts: candidates, kept, over_limit, filtered_<reason>, and
  at most one of no_correct / no_valid_chosen / no_rejected for the question."""
  counts: collections.Counter = collections.Counter()
  prompt_chars = sum(len(m["content"]) for m in prompt)
  lang = language_of(q.text)
  for s in samples:
    s.problem = response_problem(s, prompt_chars, lang, min_think_chars=min_think_chars,
                                 max_chars=max_chars)
  low = lambda s: s.score is not None and s.score < min_chosen_score
  correct = [s for s in samples if s.verdict == "correct"]
  if not correct:
    counts["no_correct"] += 1
    return [], counts
  eligible = [s for s in correct if s.problem is None and not low(s)]
  eligible.sort(key=lambda s: (-(s.score if s.score is not None else 0.0), s.index))
  if not eligible:
    counts["no_valid_chosen"] += 1
    return [], counts
  chosen = eligible[0]
  bad = {"wrong", "unverified"} if unverified_as_wrong else {"wrong"}
  candidates = [s for s in samples if s is not chosen and (
      (s.verdict in bad and (s.score is None or s.score < min_chosen_score))
      or (s.verdict == "correct" and low(s)))]
  candidates.sort(key=lambda s: (s.score if s.score is not None else 0.0, s.index))
  counts["candidates"] += len(candidates)
  valid, texts = [], set()
  for s in candidates:
    reason = s.problem or ("same_answer" if s.key() == chosen.key() else None) or (
        "duplicate" if s.text in texts else None)
    if reason:
      counts[f"filtered_{reason}"] += 1
    else:
      valid.append(s)
      texts.add(s.text)
  ordered = _round_robin(valid)
  kept = ordered[:max_pairs_per_question]
  counts["over_limit"] += len(ordered) - len(kept)
  counts["kept"] += len(kept)
  if not candidates:
    counts["no_rejected"] += 1
  return [pair_record(q, prompt, chosen, r) for r in kept], counts


def make_pairs(questions: Sequence[Question], samples: Sequence[Sequence[Sample] | None], *,
               prompt_fn: Callable[[Question], Messages] = open_prompt,
               min_think_chars: int = 200, max_pairs_per_question: int = 3,
               max_chars: int = 8192, min_chosen_score: float = 60.0,
               unverified_as_wrong: bool = False, skipped: dict[str, int] | None = None
               ) -> tuple[list[dict], dict[str, Any]]:
  """Pairs and stats of all questions; `samples[i]` None = question i was not sampled."""
  pairs: list[dict] = []
  total: collections.Counter = collections.Counter()
  verdicts: collections.Counter = collections.Counter()
  problems: collections.Counter = collections.Counter()
  methods: collections.Counter = collections.Counter()
  per_q = collections.Counter()
  for q, ss in zip(questions, samples):
    if ss is None:
      continue
    got, counts = build_pairs(q, ss, prompt_fn(q), min_think_chars=min_think_chars,
                              max_pairs_per_question=max_pairs_per_question, max_chars=max_chars,
                              min_chosen_score=min_chosen_score,
                              unverified_as_wrong=unverified_as_wrong)
    pairs += got
    total.update(counts)
    verdicts.update(s.verdict for s in ss)
    methods.update(s.method for s in ss)
    problems.update(s.problem or "ok" for s in ss)
    n_correct = sum(s.verdict == "correct" for s in ss)
    per_q["sampled"] += 1
    per_q["with_correct"] += n_correct > 0
    per_q["all_correct"] += bool(ss) and n_correct == len(ss)
    per_q["with_pairs"] += bool(got)
  n_samples = sum(verdicts.values())
  stats = {
      "questions": len(questions), "questions_sampled": per_q["sampled"],
      "questions_skipped": dict(skipped or {}),
      "samples": n_samples, "correct": verdicts["correct"], "wrong": verdicts["wrong"],
      "unverified": verdicts["unverified"],
      "correct_rate": verdicts["correct"] / n_samples if n_samples else 0.0,
      "verified_by": {k: methods[k] for k in ("rule", "judge", "none")},
      "questions_with_correct": per_q["with_correct"],
      "questions_all_correct": per_q["all_correct"],
      "questions_no_valid_chosen": total["no_valid_chosen"],
      "questions_no_rejected": total["no_rejected"],
      "questions_with_pairs": per_q["with_pairs"],
      "candidate_pairs": total["candidates"], "pairs": len(pairs),
      "filtered": {r: total[f"filtered_{r}"] for r in REASONS},
      "over_limit": total["over_limit"],
      "response_checks": {r: problems[r] for r in ("ok",) + RESPONSE_REASONS},
  }
  return pairs, stats


def format_stats(stats: dict[str, Any]) -> str:
  """A short printed report of `make_pairs` / `sample_pairs` stats."""
  skipped = sum(stats["questions_skipped"].values())
  filt = ", ".join(f"{k} {v}" for k, v in stats["filtered"].items() if v) or "none"
  checks = ", ".join(f"{k} {v}" for k, v in stats["response_checks"].items() if v)
  return "\n".join([
      f"[rejection] questions {stats['questions']} (sampled {stats['questions_sampled']}, "
      f"skipped {skipped} {stats['questions_skipped'] or ''}), samples {stats['samples']}",
      f"[rejection] correct {stats['correct']} ({100 * stats['correct_rate']:.1f}%), wrong "
      f"{stats['wrong']}, unverified {stats['unverified']}; verified by {stats['verified_by']}",
      f"[rejection] questions with a correct sample {stats['questions_with_correct']}, all "
      f"correct {stats['questions_all_correct']}, no valid chosen "
      f"{stats['questions_no_valid_chosen']}, with pairs {stats['questions_with_pairs']}",
      f"[rejection] response checks: {checks}",
      f"[rejection] pairs kept {stats['pairs']} of {stats['candidate_pairs']} candidates; "
      f"filtered: {filt}; over the per-question limit {stats['over_limit']}"])


def _is_main_process() -> bool:
  return jax.process_index() == 0


def write_pairs(path: str, pairs: Iterable[dict]) -> int:
  """Writes JSONL (one pair per line, UTF-8); returns the number of pairs. On several processes
  (which all hold the same pairs) only process 0 writes."""
  pairs = list(pairs)
  if not _is_main_process():
    return len(pairs)
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for p in pairs:
      f.write(json.dumps(p, ensure_ascii=False) + "\n")
  return len(pairs)


# ------------------------------------------------------------------------------------------------
# Sampling


def _call_seed(seed: int, call: int) -> int:
  return (seed * 1_000_003 + call) % (2**31 - 1)


def decode_with_specials(tok: Any, ids: Sequence[int]) -> str:
  """Special tokens are KEPT as text, so the stray-tag check sees a generated <|im_start|>."""
  try:
    return tok.decode(list(ids), skip_special=False)
  except TypeError:
    return tok.decode(list(ids))


def make_generate_fn(params: Any, cfg: Any, tok: Any, *, max_new_tokens: int,
                     temperature: float = 0.7, top_p: float = 1.0, top_k: int = 0,
                     mesh: Any = None) -> GenerateFn:
  """(prompt ids, seed) -> [(text, finish_reason)] with `infer.sampler.generate`. The stop token
  is not part of the text."""

  stop = tuple(tok.stop_ids) or (() if cfg.eos_token_id is None else (cfg.eos_token_id,))
  pad = tok.pad_id if tok.pad_id is not None else (tok.eos_id or 0)
  if mesh is not None:
    params = jax.device_put(params, sharding.param_shardings(cfg, mesh))

  def generate(prompt_ids: list[list[int]], seed: int) -> list[tuple[str, str]]:
    res = sampler.generate(params, cfg, prompt_ids, max_new_tokens=max_new_tokens,
                           temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                           stop_ids=stop, pad_id=pad, mesh=mesh)
    return [(decode_with_specials(tok, [t for t in toks if t not in stop]).strip(), reason)
            for toks, reason in zip(res.tokens, res.finish_reason)]

  return generate


def sample_responses(questions: Sequence[Question], tok: Any, generate_fn: GenerateFn, *,
                     n_samples: int = 10, seed: int = 0, batch_size: int = 64,
                     prompt_fn: Callable[[Question], Messages] = open_prompt,
                     max_prompt_tokens: int | None = None, judge: Judge | None = None,
                     scorer: Scorer | None = None, progress: bool = True
                     ) -> tuple[list[list[Sample] | None], dict[str, int]]:
  """Verified (and scored) samples per question (None where skipped) and skip counts.

  One generate call holds max(1, batch_size // n_samples) questions, each prompt repeated
  n_samples times (rows sample independently); call k uses a seed derived from (seed, k), so a
  run is reproducible for the same questions, order, batch_size and seed. A prompt longer than
  max_prompt_tokens is skipped (a cut question would make a wrong pair)."""
  if n_samples < 1 or batch_size < 1:
    raise ValueError(f"need n_samples >= 1 and batch_size >= 1, got {n_samples}, {batch_size}")
  ids: list[list[int] | None] = []
  skipped: collections.Counter = collections.Counter()
  for q in questions:
    p = chat.render(prompt_fn(q), tok, add_generation_prompt=True).tokens
    if max_prompt_tokens is not None and len(p) > max_prompt_tokens:
      skipped["prompt_too_long"] += 1
      ids.append(None)
    else:
      ids.append(p)
  todo = [i for i, p in enumerate(ids) if p is not None]
  per_call = max(1, batch_size // n_samples)
  out: list[list[Sample] | None] = [None] * len(questions)
  with tqdm(total=len(questions), desc="rejection sampling",
            disable=not progress or not _is_main_process(),
            dynamic_ncols=True, file=sys.stderr) as bar:
    bar.update(len(questions) - len(todo))
    for k, start in enumerate(range(0, len(todo), per_call)):
      chunk = todo[start:start + per_call]
      rows = [ids[i] for i in chunk for _ in range(n_samples)]
      gens = generate_fn(rows, _call_seed(seed, k))
      if len(gens) != len(rows):
        raise ValueError(f"generate_fn returned {len(gens)} outputs for {len(rows)} prompts")
      for j, i in enumerate(chunk):
        q, ss = questions[i], []
        for n, (text, reason) in enumerate(gens[j * n_samples:(j + 1) * n_samples]):
          answer, pred, verdict, method = verify(q, text, judge)
          s = Sample(n, text, reason, answer, pred, verdict, method)
          if scorer is not None and verdict != "unverified":
            s.score = scorer(q.text, text, q.gold_text, verdict == "correct")
          ss.append(s)
        out[i] = ss
      bar.update(len(chunk))
  return out, dict(skipped)


def sample_pairs(params: Any, cfg: Any, tok: Any, questions: Any, *, n_samples: int = 10,
                 temperature: float = 0.7, top_p: float = 1.0, top_k: int = 0,
                 max_new_tokens: int = 1024, seed: int = 0, batch_size: int = 64,
                 min_think_chars: int = 200, max_pairs_per_question: int = 3,
                 max_chars: int = 8192, min_chosen_score: float = 60.0,
                 unverified_as_wrong: bool = False, judge: Judge | None = None,
                 scorer: Scorer | None = None, prompt_fn: Callable[[Question], Messages] | None = None,
                 mesh: Any = None, generate_fn: GenerateFn | None = None, progress: bool = True,
                 verbose: bool = True, samples_out: list | None = None
                 ) -> tuple[list[dict], dict[str, Any]]:
  """Samples, verifies and pairs (module doc); returns (pairs, stats) and prints the stats.

  `questions`: a JSONL/JSON path, records, MCQItems or Questions. `generate_fn` replaces the model
  (tests, external servers). `samples_out`, a list, receives one record per sampled question."""
  qs = as_questions(questions)
  prompt_fn = prompt_fn or open_prompt
  generate_fn = generate_fn or make_generate_fn(params, cfg, tok, max_new_tokens=max_new_tokens,
                                                temperature=temperature, top_p=top_p,
                                                top_k=top_k, mesh=mesh)
  room = cfg.max_seq_len - max_new_tokens if cfg is not None else None
  if room is not None and room < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in "
                     f"cfg.max_seq_len={cfg.max_seq_len}")
  samples, skipped = sample_responses(qs, tok, generate_fn, n_samples=n_samples, seed=seed,
                                      batch_size=batch_size, prompt_fn=prompt_fn,
                                      max_prompt_tokens=room, judge=judge, scorer=scorer,
                                      progress=progress)
  pairs, stats = make_pairs(qs, samples, prompt_fn=prompt_fn, min_think_chars=min_think_chars,
                            max_pairs_per_question=max_pairs_per_question, max_chars=max_chars,
                            min_chosen_score=min_chosen_score,
                            unverified_as_wrong=unverified_as_wrong, skipped=skipped)
  stats["settings"] = dict(n_samples=n_samples, temperature=temperature, top_p=top_p,
                           top_k=top_k, max_new_tokens=max_new_tokens, seed=seed,
                           batch_size=batch_size, min_think_chars=min_think_chars,
                           max_pairs_per_question=max_pairs_per_question, max_chars=max_chars,
                           min_chosen_score=min_chosen_score,
                           unverified_as_wrong=unverified_as_wrong, judge=judge is not None,
                           scorer=scorer is not None)
  if samples_out is not None:
    for q, ss in zip(qs, samples):
      if ss is not None:
        samples_out.append({"id": q.id, "gold": q.gold, "gold_text": q.gold_text,
                            "samples": [dataclasses.asdict(s) for s in ss]})
  if verbose and _is_main_process():
    print(format_stats(stats), flush=True)
  return pairs, stats
