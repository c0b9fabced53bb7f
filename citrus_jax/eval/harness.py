"""Medical MCQ evaluation: generate and extract, score option log-likelihoods, or score
predictions made elsewhere; per-item JSONL files, summary.json and a printed table.

  python -m citrus_jax.main --config=configs/eval.py --config.eval.benchmarks=medqa \
      --config.eval.data_paths=phrases_no_exclude_test.jsonl --config.init.hf_dir=/ckpt/model

Modes (config.eval.mode): "generate" (Citrus or letter prompt through the chat template, greedy or
seeded sampling, answer extracted by eval/extract.py), "loglik" (eval/loglik.py, for base/CPT
models), "both", and "prompts" (write each item's chat messages for an external generator, no
model). With config.eval.predictions the outputs come from a JSONL file instead of a model.
Options are shuffled exactly as benchmarks.load_benchmark does (JMED by default, seeded by item
id), so ids match between a "prompts" export, an external run, and the scoring of its outputs.

Output directory: <workdir>/eval_<YYYYmmdd-HHMMSS> (fresh per run), or workdir itself with
config.eval.timestamped=False. It holds <benchmark>.jsonl (one record per item), summary.json and
config.json. Summary per benchmark: n, n_correct, n_answered, n_no_answer, acc = correct / n,
valid_acc = correct / answered (unmapped answers count as no answer), and under "loglik": acc and
acc_norm; "macro_avg" averages them over benchmarks. Each accuracy X has X_ci95 = [lo, hi], a
seeded 95% bootstrap interval over the items (eval/stats.py); `python -m citrus_jax.eval.compare
DIR_A DIR_B` tests two runs on the same items (exact McNemar, paired bootstrap difference).
Test-time scaling (eval/scaling.py): eval.samples=k adds maj@k and pass@k (acc stays the first
sample's), eval.seeds one run per seed ("seeds": acc mean/std/min/max), eval.think_budget budget
forcing ("think_budget": the summaries per budget and think_budget.png when there are several).
On several processes (one per host, a mesh over all devices) every process reads the same items
and gets every result; process 0 writes.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any, Callable, Sequence

import jax
import ml_collections

from citrus_jax import chat, runtime
from citrus_jax.data import records
from citrus_jax.eval import benchmarks, extract, loglik, prompts, scaling, stats
from citrus_jax.model.config import ModelConfig

PROMPTS = ("citrus", "letter")
CI_LEVEL, CI_BOOT, CI_SEED = 0.95, 1000, 0  # the *_ci95 bootstrap intervals in summaries
MODES = ("generate", "loglik", "both", "prompts")
_SPLIT_WORDS = {"train", "dev", "val", "validation"}  # data_dir scans skip these files


# ------------------------------------------------------------------------------------------------
# Prompts, scoring and summaries


def item_messages(item: Any, prompt: str = "citrus") -> list[dict[str, str]]:
  """Citrus: persona + Citrus user prompt with options; letter: question, options, instruction."""
  if prompt == "citrus":
    return prompts.citrus_messages(item)
  if prompt == "letter":
    return prompts.letter_messages(item)
  raise ValueError(f"prompt must be one of {PROMPTS}, got {prompt!r}")


def _progress(total: int, desc: str, enabled: bool):
  from tqdm.auto import tqdm
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


def _ci(correct: Sequence[bool]) -> list[float] | None:
  """[lo, hi]: the 95% percentile bootstrap interval of an accuracy; None without items."""
  if not len(correct):
    return None
  return list(stats.bootstrap_interval(correct, n_boot=CI_BOOT, seed=CI_SEED, level=CI_LEVEL))


def _macro_ci(groups: Sequence[Sequence[bool]]) -> list[float] | None:
  if not groups or not all(len(g) for g in groups):
    return None
  return list(stats.macro_bootstrap_interval(groups, n_boot=CI_BOOT, seed=CI_SEED,
                                             level=CI_LEVEL))


def _correctness(records: Sequence[dict]) -> dict[str, list[bool]]:
  """Per-item 0/1 lists behind each accuracy: acc, valid_acc (answered items), loglik ones."""
  gen = [r for r in records if "output" in r]
  ll = [r["loglik"] for r in records if "loglik" in r]
  out: dict[str, list[bool]] = {}
  if gen:
    out["acc"] = [bool(r["correct"]) for r in gen]
    out["valid_acc"] = [bool(r["correct"]) for r in gen if r["pred"] is not None]
    k = sample_count(gen)
    if k > 1:
      out[f"maj@{k}"] = [bool(r["maj_correct"]) for r in gen]
      out[f"pass@{k}"] = [bool(r["pass_correct"]) for r in gen]
  if ll:
    out["loglik/acc"] = [bool(r["correct"]) for r in ll]
    out["loglik/acc_norm"] = [bool(r["correct_norm"]) for r in ll]
  return out


def sample_count(gen: Sequence[dict]) -> int:
  """k of a k-samples run (records with "samples"), else 1; mixed k is an error."""
  ks = {len(r["samples"]) if "samples" in r else 1 for r in gen}
  if len(ks) > 1:
    raise ValueError(f"records mix sample counts {sorted(ks)}")
  return ks.pop() if ks else 1


def summarize(records: Sequence[dict]) -> dict:
  """Per-benchmark numbers from its records (the same numbers a recount of the JSONL gives).

  Every accuracy X comes with X_ci95 = [lo, hi], its 95% bootstrap interval over the items
  (eval/stats.py; seeded, so reruns give the same interval; None when it has no items)."""
  out: dict[str, Any] = {"n": len(records)}
  gen = [r for r in records if "output" in r]
  per_item = _correctness(records)
  if gen:
    s = extract.summarize(gen)
    out.update(n_correct=s["correct"], n_answered=s["answered"], n_no_answer=s["no_answer"],
               acc=s["acc"], valid_acc=s["valid_acc"],
               n_truncated=sum(bool(r.get("truncated")) for r in gen),
               n_length=sum(r.get("finish_reason") == "length" for r in gen))
    if any("missing" in r for r in gen):
      out["n_missing"] = sum(bool(r.get("missing")) for r in gen)
    out.update(acc_ci95=_ci(per_item["acc"]), valid_acc_ci95=_ci(per_item["valid_acc"]))
    if any("forced" in r for r in gen):
      out["n_forced"] = sum(bool(r.get("forced")) for r in gen)
    k = sample_count(gen)
    if k > 1:  # acc above is the first sample's; maj@k / pass@k use all k
      out["samples"] = k
      for name in (f"maj@{k}", f"pass@{k}"):
        out[name] = sum(per_item[name]) / len(per_item[name])
        out[f"{name}_ci95"] = _ci(per_item[name])
  ll = [r["loglik"] for r in records if "loglik" in r]
  if ll:
    out["loglik"] = loglik.summarize(ll)
    out["loglik"].update(acc_ci95=_ci(per_item["loglik/acc"]),
                         acc_norm_ci95=_ci(per_item["loglik/acc_norm"]))
  return out


def macro_average(per_benchmark: dict[str, dict],
                  records: dict[str, Sequence[dict]] | None = None) -> dict:
  """Means over benchmarks; with their `records`, also X_ci95 for each mean (each benchmark's
  items resampled on their own; None when a benchmark has no items for that accuracy)."""
  def mean(values):
    values = list(values)
    return sum(values) / len(values) if values else None
  gen = [s for s in per_benchmark.values() if "acc" in s]
  ll = [s["loglik"] for s in per_benchmark.values() if "loglik" in s]
  out = {"n_benchmarks": len(per_benchmark)}
  scaled = [n for n in gen[0] if n.startswith(("maj@", "pass@")) and not n.endswith("_ci95")
            and all(n in s for s in gen)] if gen else []
  if gen:
    out.update(acc=mean(s["acc"] for s in gen), valid_acc=mean(s["valid_acc"] for s in gen))
    out.update({n: mean(s[n] for s in gen) for n in scaled})
  if ll:
    out["loglik"] = {"acc": mean(s["acc"] for s in ll), "acc_norm": mean(s["acc_norm"] for s in ll)}
  if records is not None:
    per_item = [_correctness(records[k]) for k in per_benchmark]
    def groups(name):
      return [c[name] for c in per_item if name in c]
    if gen:
      out.update(acc_ci95=_macro_ci(groups("acc")), valid_acc_ci95=_macro_ci(groups("valid_acc")))
      out.update({f"{n}_ci95": _macro_ci(groups(n)) for n in scaled})
    if ll:
      out["loglik"].update(acc_ci95=_macro_ci(groups("loglik/acc")),
                           acc_norm_ci95=_macro_ci(groups("loglik/acc_norm")))
  return out


# ------------------------------------------------------------------------------------------------
# Generation


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
  from citrus_jax.infer import sampler
  room = cfg.max_seq_len - max_new_tokens
  if room < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in "
                     f"cfg.max_seq_len={cfg.max_seq_len}")
  ids = [list(p)[-room:] for p in prompt_ids]
  truncated = [len(p) > room for p in prompt_ids]
  stop = tuple(tok.stop_ids) or None
  pad = tok.pad_id if tok.pad_id is not None else (tok.eos_id or 0)
  if mesh is not None:
    from citrus_jax import sharding
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


# ------------------------------------------------------------------------------------------------
# Predictions made elsewhere


def read_predictions(paths: Sequence[str], keys: Sequence[str], on_error: str = "raise"
                     ) -> tuple[dict[str, dict[str, tuple[str, str | None]]], dict[str, int]]:
  """{benchmark key: {item id: (where, output)}} and counts of skipped lines per reason.

  A line is {"id", "output", optional "benchmark"}. Without "benchmark", a line belongs to the
  only benchmark, or to the benchmark at the same position as its file when there are as many
  files as benchmarks. Duplicates and bad lines raise a ValueError naming file:line, or with
  on_error="skip" are counted (the first of duplicates is kept).
  """
  preds: dict[str, dict[str, tuple[str, str | None]]] = {k: {} for k in keys}
  on_error = "skip" if on_error == "skip" else "raise"
  skips = records.Skips()

  def bad(field: str, reason: str, msg: str) -> None:  # about line `line_no` of `path`
    records.handle(records.RecordError.at(path, line_no, field, msg, reason), on_error, skips)

  for f_idx, path in enumerate(paths):
    default = keys[0] if len(keys) == 1 else keys[f_idx] if len(paths) == len(keys) else None
    for line_no, obj in records.read_jsonl(path, on_error=on_error, skips=skips):
      where = f"{path}:{line_no}"
      key = obj.get("benchmark", default)
      if key is None:
        bad("benchmark", "no_benchmark", f"needed when scoring several benchmarks "
            f"({', '.join(keys)}) from {len(paths)} file(s)")
        continue
      if key not in preds:
        bad("benchmark", "unknown_benchmark",
            f"{key!r} is not among the evaluated benchmarks ({', '.join(keys)})")
        continue
      item_id, output = obj.get("id"), obj.get("output")
      if not isinstance(item_id, (str, int)) or isinstance(item_id, bool) or item_id == "":
        bad("id", "bad_id", f"missing or not a string: {item_id!r}")
        continue
      if output is not None and not isinstance(output, str):
        bad("output", "bad_output", f"must be a string or null, got "
            f"{type(output).__name__}")
        continue
      item_id = str(item_id)
      if item_id in preds[key]:
        bad("id", "duplicate_id", f"duplicate id {item_id!r} for {key} (first at "
            f"{preds[key][item_id][0]})")
        continue
      preds[key][item_id] = (where, output)
  return preds, skips.as_dict()


def score_predictions(data: dict[str, Any], paths: Sequence[str], on_error: str = "raise"
                      ) -> tuple[dict[str, list[dict]], dict]:
  """Records per benchmark from predictions files, matched to the items by id.

  Unknown ids raise (file:line), as do items without a prediction, unless on_error="skip": then
  unknown ids are counted and missing items are scored as no answer (record "missing": true).
  """
  preds, skipped = read_predictions(paths, list(data), on_error)
  out, unknown = {}, 0
  for key, bench in data.items():
    items = {it.id: it for it in bench.items}
    for item_id, (where, _) in preds[key].items():
      if item_id not in items:
        if on_error != "skip":
          raise ValueError(f"{where}: field 'id': unknown id {item_id!r} for benchmark {key} "
                           f"({bench.path}, {len(items)} items)")
        unknown += 1
    missing = [i for i in items if i not in preds[key]]
    if missing and on_error != "skip":
      raise ValueError(f"{', '.join(paths)}: no prediction for {len(missing)} of {len(items)} "
                       f"{key} items (first ids: {', '.join(missing[:5])}); set "
                       "config.eval.on_error=skip to score them as no answer")
    out[key] = [output_record(it, preds[key].get(it.id, (None, None))[1], key,
                              missing=it.id not in preds[key],
                              where=preds[key].get(it.id, (None,))[0])
                for it in bench.items]
  return out, {"skipped_lines": skipped, "unknown_ids": unknown}


# ------------------------------------------------------------------------------------------------
# Benchmark files


def _is_split_file(path: str) -> bool:
  return bool(_SPLIT_WORDS & set(re.split(r"[^a-z0-9]+", os.path.basename(path).lower())))


def _matches(requested: str, detected: str) -> bool:
  if requested == detected:
    return True
  if requested == "mmlu":
    return detected.startswith("mmlu_") and not detected.startswith("mmlu_pro")
  return requested == "medbullets" and detected.startswith("medbullets_")


def resolve_benchmarks(ev: ml_collections.ConfigDict) -> list[tuple[str, str]]:
  """(registry name, file) pairs from eval.benchmarks with eval.data_paths or eval.data_dir."""
  names = runtime.split_paths(ev.benchmarks)
  paths = runtime.split_paths(ev.data_paths)
  if paths and ev.data_dir:
    raise runtime.ConfigError("set config.eval.data_paths or config.eval.data_dir, not both")
  if paths:
    names = names or ["auto"]
    if names == ["auto"]:
      names = names * len(paths)
    if len(names) != len(paths):
      raise runtime.ConfigError(f"config.eval.benchmarks names {len(names)} benchmarks but "
                                f"config.eval.data_paths {len(paths)} files; give one per file")
    pairs = []
    for name, path in zip(names, paths):
      if not os.path.exists(path):
        raise runtime.ConfigError(f"config.eval.data_paths: {path} does not exist")
      if name == "auto":
        name = benchmarks.detect_benchmark(path)
        if name is None:
          raise runtime.ConfigError(f"config.eval.data_paths: cannot tell which benchmark {path} "
                                    "holds; name it in config.eval.benchmarks")
      elif name not in benchmarks.BENCHMARKS:
        raise runtime.ConfigError(f"config.eval.benchmarks: unknown {name!r}; known: "
                                  f"{', '.join(sorted(benchmarks.BENCHMARKS))}")
      pairs.append((name, path))
    return pairs
  if not ev.data_dir:
    raise runtime.ConfigError("set config.eval.data_paths (with config.eval.benchmarks) or "
                              "config.eval.data_dir")
  if not os.path.isdir(ev.data_dir):
    raise runtime.ConfigError(f"config.eval.data_dir: {ev.data_dir} is not a directory")
  found = []
  for root, dirs, files in os.walk(ev.data_dir):
    dirs.sort()
    for fname in sorted(files):
      path = os.path.join(root, fname)
      detected = benchmarks.detect_benchmark(path)
      if detected is None or _is_split_file(path):
        continue
      found.append((detected, path))
      if detected == "pubmedqa" and os.path.exists(os.path.join(root, "test_ground_truth.json")):
        found.append(("pubmedqa_test", path))
  if not names:
    return [(n, p) for n, p in found if n != "pubmedqa_test"]
  pairs = []
  for name in names:
    hits = [(d if name != "unified" else name, p) for d, p in found if _matches(name, d)]
    if not hits:
      raise runtime.ConfigError(f"config.eval.benchmarks: no {name} file found under "
                                f"{ev.data_dir} (detected: "
                                f"{', '.join(sorted({d for d, _ in found})) or 'nothing'})")
    pairs += hits
  return pairs


def load_all(pairs: Sequence[tuple[str, str]], ev: ml_collections.ConfigDict
             ) -> dict[str, Any]:
  """BenchmarkData per unique key (the benchmark name, or its single source for mmlu/unified)."""
  shuffle = {"default": None, "on": True, "off": False}[ev.shuffle_options]
  data: dict[str, Any] = {}
  for name, path in pairs:
    bench = benchmarks.load_benchmark(name, path, shuffle_options=shuffle, seed=ev.shuffle_seed,
                                      on_error=ev.on_error)
    if ev.limit > 0:
      bench.items = bench.items[:ev.limit]
    sources = {it.source for it in bench.items}
    key = sources.pop() if name in ("mmlu", "unified") and len(sources) == 1 else name
    base, k = key, 2
    while key in data:
      key, k = f"{base}_{k}", k + 1
    data[key] = bench
  return data


# ------------------------------------------------------------------------------------------------
# Files and table


def _write_jsonl(path: str, rows: Sequence[dict]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for r in rows:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")


def output_dir(workdir: str, timestamped: bool = True) -> str:
  if not timestamped:
    os.makedirs(workdir, exist_ok=True)
    return workdir
  base = os.path.join(workdir, time.strftime("eval_%Y%m%d-%H%M%S"))
  path, k = base, 2
  while os.path.exists(path):
    path, k = f"{base}-{k}", k + 1
  os.makedirs(path)
  return path


def format_table(summary: dict) -> str:
  def pct(x):
    return "-" if x is None else f"{100 * x:.2f}"
  rows = [("benchmark", "n", "acc%", "valid_acc%", "no_answer", "ll_acc%", "ll_acc_norm%")]
  for key, s in summary["benchmarks"].items():
    ll = s.get("loglik", {})
    rows.append((key, str(s["n"]), pct(s.get("acc")), pct(s.get("valid_acc")),
                 str(s.get("n_no_answer", "-")), pct(ll.get("acc")), pct(ll.get("acc_norm"))))
  m = summary["macro_avg"]
  rows.append(("macro_avg", "", pct(m.get("acc")), pct(m.get("valid_acc")), "",
               pct(m.get("loglik", {}).get("acc")), pct(m.get("loglik", {}).get("acc_norm"))))
  scaled = sorted({n for s in summary["benchmarks"].values() for n in s
                   if n.startswith(("maj@", "pass@")) and not n.endswith("_ci95")})
  if scaled:  # test-time scaling columns (k samples per item)
    rows[0] += tuple(f"{n}%" for n in scaled)
    for i, s in enumerate(summary["benchmarks"].values(), start=1):
      rows[i] += tuple(pct(s.get(n)) for n in scaled)
    rows[-1] += tuple(pct(m.get(n)) for n in scaled)
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                     enumerate(zip(r, widths))) for r in rows]
  lines.insert(1, "  ".join("-" * w for w in widths))
  lines.insert(len(lines) - 1, lines[1])
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Entry point


def check_eval_config(ev: ml_collections.ConfigDict) -> None:
  choices = {"prompt": PROMPTS, "mode": MODES, "loglik_form": loglik.FORMS,
             "shuffle_options": ("default", "on", "off"), "on_error": ("raise", "skip")}
  for field, allowed in choices.items():
    if ev[field] not in allowed:
      raise runtime.ConfigError(f"config.eval.{field}={ev[field]!r}; expected one of {allowed}")
  if ev.temperature < 0 or not 0 < ev.top_p <= 1 or ev.top_k < 0:
    raise runtime.ConfigError("config.eval: need temperature >= 0, 0 < top_p <= 1, top_k >= 0")
  if ev.max_new_tokens < 1 or ev.batch_size < 1:
    raise runtime.ConfigError("config.eval.max_new_tokens and config.eval.batch_size must be >= 1")
  for path in runtime.split_paths(ev.predictions):
    if not os.path.isfile(path):
      raise runtime.ConfigError(f"config.eval.predictions: {path} does not exist")
  seeds, budgets = scaling_settings(ev)
  samples = ev.get("samples", 1)
  if not isinstance(samples, int) or samples < 1:
    raise runtime.ConfigError(f"config.eval.samples={samples!r}; expected an integer >= 1")
  if samples > 1 and ev.temperature <= 0:
    raise runtime.ConfigError(
        f"config.eval.samples={samples} draws several answers per item but "
        f"config.eval.temperature={ev.temperature} is greedy, so all {samples} would be equal; "
        "set --config.eval.temperature=0.7 (the paper's), or samples=1")
  if len(seeds) > 1 and ev.temperature <= 0:
    raise runtime.ConfigError(f"config.eval.seeds={seeds} with config.eval.temperature="
                              f"{ev.temperature}: greedy runs do not depend on the seed; set "
                              "--config.eval.temperature=0.7")
  if any(b < 1 for b in budgets) or ev.get("answer_tokens", 32) < 1:
    raise runtime.ConfigError(f"config.eval.think_budget={budgets} and config.eval."
                              "answer_tokens must be >= 1")
  scaled = samples > 1 or len(seeds) > 1 or budgets
  if scaled and (ev.predictions or ev.mode not in ("generate", "both")):
    raise runtime.ConfigError("config.eval.samples/seeds/think_budget need generation by a model "
                              f"(mode generate or both, no predictions); got mode={ev.mode!r}"
                              f"{', predictions=' + repr(ev.predictions) if ev.predictions else ''}")


def scaling_settings(ev: ml_collections.ConfigDict) -> tuple[list[int], list[int]]:
  """(sampling seeds, think budgets) from config.eval.seeds / think_budget ("", "N", "[a,b]")."""
  try:
    seeds = scaling.parse_int_list(ev.get("seeds", ""), "eval.seeds")
    budgets = scaling.parse_int_list(ev.get("think_budget", ""), "eval.think_budget")
  except ValueError as e:
    raise runtime.ConfigError(str(e)) from None
  if len(set(seeds)) != len(seeds) or len(set(budgets)) != len(budgets):
    raise runtime.ConfigError(f"config.eval.seeds={seeds} / think_budget={budgets}: repeated value")
  return seeds, budgets


def _load_model(config: ml_collections.ConfigDict, tok: Any, mesh: Any) -> tuple[ModelConfig, Any]:
  from citrus_jax import sharding
  cfg = runtime.model_config_from(config, vocab_size=tok.vocab_size)
  if cfg.vocab_size < tok.vocab_size:
    raise runtime.ConfigError(f"model vocab {cfg.vocab_size} < tokenizer vocab {tok.vocab_size}")
  if not config.init.get("checkpoint") and not config.init.get("hf_dir"):
    print("[eval] WARNING: no config.init.checkpoint or config.init.hf_dir: evaluating a "
          "randomly initialised model", flush=True)
  params = runtime.init_params_fn(config, cfg, mesh)(sharding.param_shardings(cfg, mesh))
  return cfg, params


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Evaluates the configured benchmarks; returns the output directory (main prints it last)."""
  ev = config.eval
  check_eval_config(ev)
  data = load_all(resolve_benchmarks(ev), ev)
  for key, bench in data.items():
    r = bench.report
    extra = f", shuffled {r['shuffled']}" if r["shuffled"] else ""
    skipped = sum(r["skipped"].values()) + sum(r["dropped"].values())
    print(f"[eval] {key}: {len(bench.items)} items from {bench.path}"
          f"{f', skipped/dropped {skipped}' if skipped else ''}{extra}", flush=True)
  main = jax.process_index() == 0
  outdir = output_dir(workdir, ev.timestamped) if main else workdir
  if main and outdir != workdir:
    runtime.save_resolved_config(config, outdir)
  settings = {k: ev[k] for k in ("mode", "prompt", "max_new_tokens", "temperature", "top_p",
                                 "top_k", "loglik_form", "shuffle_options", "shuffle_seed")}
  settings.update(seed=config.seed, init=config.init.to_dict(), predictions=ev.predictions)
  seeds, budgets = scaling_settings(ev)
  samples = ev.get("samples", 1)
  settings.update(samples=samples, seeds=seeds, think_budget=budgets,
                  answer_tokens=ev.get("answer_tokens", 32))
  if ev.mode == "prompts":
    if main:
      for key, bench in data.items():
        _write_jsonl(os.path.join(outdir, f"{key}.prompts.jsonl"),
                     [{"id": it.id, "benchmark": key, "messages": item_messages(it, ev.prompt)}
                      for it in bench.items])
      with open(os.path.join(outdir, "summary.json"), "w") as f:
        json.dump({"settings": settings, "benchmarks": {k: {"n": len(b.items)}
                                                        for k, b in data.items()}}, f, indent=2)
    print(f"[eval] wrote prompts for {len(data)} benchmark(s)", flush=True)
    return outdir
  extra: dict[str, Any] = {}
  # (think budget, seed) -> records per benchmark; the primary run is (last budget, first seed).
  runs: dict[tuple[int, int], dict[str, list[dict]]] = {}
  if ev.predictions:
    records, extra = score_predictions(data, runtime.split_paths(ev.predictions), ev.on_error)
    settings["mode"] = "predictions"
  else:
    from citrus_jax.train.cpt import load_tokenizer
    tok = load_tokenizer(config)
    mesh = runtime.make_mesh(config)
    cfg, params = _load_model(config, tok, mesh)
    for budget in budgets or [0]:
      for seed in seeds or [config.seed]:
        recs_by_key = runs[(budget, seed)] = {}
        for key, bench in data.items():
          t0 = time.time()
          recs_by_key[key], _ = evaluate_items(
              params, cfg, tok, bench.items, prompt=ev.prompt, mode=ev.mode,
              max_new_tokens=ev.max_new_tokens, temperature=ev.temperature, top_p=ev.top_p,
              top_k=ev.top_k, seed=seed, batch_size=ev.batch_size, mesh=mesh,
              loglik_form=ev.loglik_form, chat_format=ev.chat_format or None, benchmark=key,
              progress=config.get("progress", True), samples=samples, think_budget=budget,
              answer_tokens=ev.get("answer_tokens", 32))
          tag = f" (budget {budget})" * bool(budget) + f" (seed {seed})" * bool(seeds)
          print(f"[eval] {key}{tag}: {len(bench.items)} items in {time.time() - t0:.1f}s",
                flush=True)
    records = runs[((budgets or [0])[-1], (seeds or [config.seed])[0])]
  per = {}
  for key, recs in records.items():
    per[key] = {**summarize(recs), "path": data[key].path, "file": f"{key}.jsonl",
                "load_report": {k: data[key].report[k] for k in
                                ("items", "skipped", "dropped", "shuffled", "expected")}}
  summary = {"benchmarks": per, "macro_avg": macro_average(per, records), "settings": settings, **extra}
  if len(runs) > 1:
    _scaling_summary(summary, runs, budgets, seeds)
  if main:
    for key, recs in records.items():
      _write_jsonl(os.path.join(outdir, f"{key}.jsonl"), recs)
    for (budget, seed), recs_by_key in runs.items() if len(runs) > 1 else ():
      for key, recs in recs_by_key.items():
        _write_jsonl(os.path.join(outdir, _run_file(key, budget, seed, bool(seeds))), recs)
    if len(budgets) > 1:
      curves = {k: [b[k]["acc"] for b in summary["think_budget"]["benchmarks"]]
                for k in data}
      if len(data) > 1:
        curves["macro_avg"] = [m["acc"] for m in summary["think_budget"]["macro_avg"]]
      scaling.plot_budgets(os.path.join(outdir, "think_budget.png"), budgets, curves)
      summary["think_budget"]["plot"] = "think_budget.png"
    with open(os.path.join(outdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2, ensure_ascii=False)
    print(format_table(summary), flush=True)
  return outdir


def _run_file(key: str, budget: int, seed: int, by_seed: bool) -> str:
  return f"{key}{f'.budget{budget}' if budget else ''}{f'.seed{seed}' if by_seed else ''}.jsonl"


def _scaling_summary(summary: dict, runs: dict[tuple[int, int], dict[str, list[dict]]],
                     budgets: Sequence[int], seeds: Sequence[int]) -> None:
  """Adds "seeds" (acc mean/std/min/max over seeds, per benchmark and macro) and
  "think_budget" (per budget: each benchmark's summary and the macro average, first seed)."""
  budgets, seeds = list(budgets) or [0], list(seeds)
  if len(seeds) > 1:
    b = budgets[-1]
    for key, s in summary["benchmarks"].items():
      accs = [summarize(runs[(b, sd)][key])["acc"] for sd in seeds]
      s["seeds"] = {"seeds": seeds, "acc": accs, **scaling.spread(accs)}
    macro = [macro_average({k: summarize(r) for k, r in runs[(b, sd)].items()})["acc"]
             for sd in seeds]
    summary["macro_avg"]["seeds"] = {"seeds": seeds, "acc": macro, **scaling.spread(macro)}
  if len(budgets) > 1:
    first = seeds[0] if seeds else next(iter(runs))[1]
    per_budget, macro_by_budget = [], []
    for b in budgets:
      recs = runs[(b, first)]
      per = {k: {**summarize(r), "file": _run_file(k, b, first, bool(seeds))}
             for k, r in recs.items()}
      per_budget.append(per)
      macro_by_budget.append(macro_average(per, recs))
    summary["think_budget"] = {"budgets": budgets, "seed": first, "benchmarks": per_budget,
                               "macro_avg": macro_by_budget}
