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

Parts: eval/generation.py (prompts, sampling, records), eval/summaries.py (summaries, intervals,
table), eval/predictions.py (outputs made elsewhere), eval/files.py (benchmark files in, result
files out); this module checks the config and runs them. Their public names import from here too.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Sequence

import jax
import ml_collections

from citrus_jax import run_dirs, runtime, sharding, tiny_data
from citrus_jax.config_types import EVAL_MODES
from citrus_jax.eval import extract, loglik, scaling  # noqa: F401  (harness.extract is used)
# The harness's parts; their names stay importable from here.
from citrus_jax.eval.files import (_write_jsonl, load_all, output_dir,  # noqa: F401
                                   resolve_benchmarks)
from citrus_jax.eval.generation import (PROMPTS, evaluate_items, generate_outputs,  # noqa: F401
                                        item_messages, output_record)
from citrus_jax.eval.predictions import read_predictions, score_predictions  # noqa: F401
from citrus_jax.eval.summaries import (CI_BOOT, CI_LEVEL, CI_SEED, format_table,  # noqa: F401
                                       macro_average, sample_count, summarize)
from citrus_jax.model.config import ModelConfig
from citrus_jax.train.cpt import load_tokenizer

MODES = EVAL_MODES


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
  cfg = runtime.model_config_from(config, vocab_size=tok.vocab_size)
  if cfg.vocab_size < tok.vocab_size:
    raise runtime.ConfigError(f"model vocab {cfg.vocab_size} < tokenizer vocab {tok.vocab_size}")
  if not config.init.get("checkpoint") and not config.init.get("hf_dir"):
    print("[eval] WARNING: no config.init.checkpoint or config.init.hf_dir: evaluating a "
          "randomly initialised model", flush=True)
  params = runtime.init_params_fn(config, cfg, mesh)(sharding.param_shardings(cfg, mesh))
  return cfg, params


def _sampling_for_k(ev: ml_collections.ConfigDict) -> None:
  """k > 1 answers per item only make sense sampled: a greedy preset asked for samples=k draws
  them at eval.sampling_temperature (default 0.7, the paper's) and says so."""
  if ev.get("samples", 1) > 1 and ev.temperature <= 0:
    t = float(ev.get("sampling_temperature", 0.7))
    if t <= 0:
      raise runtime.ConfigError(f"config.eval.samples={ev.samples} needs sampling; set "
                                "config.eval.temperature (or sampling_temperature) > 0")
    print(f"[eval] samples={ev.samples} at temperature 0 would repeat one answer: sampling at "
          f"{t} (config.eval.sampling_temperature)", flush=True)
    with ev.unlocked():
      ev.temperature = t


def _tiny_inputs(config: ml_collections.ConfigDict, workdir: str) -> None:
  """configs/eval.py:tiny with no data and no model: generated benchmark files (MedQA JSONL,
  MMLU CSV) and a tiny random HF model with its tokenizer, so the preset runs as it is."""
  ev = config.eval
  given = (ev.benchmarks, ev.data_paths, ev.data_dir, ev.predictions, config.init.get("checkpoint"),
           config.init.get("hf_dir"))
  if not ev.get("generate_tiny_inputs", False) or any(given):
    return
  out = os.path.join(workdir, "tiny_inputs")
  done = os.path.join(out, "hf_model", "config.json")
  paths = tiny_data.write_files(out, seed=config.seed)
  model = {"hf_dir": os.path.join(out, "hf_model")} if os.path.exists(done) else \
      tiny_data.write_model(out, [paths[k] for k in ("cpt", "sft1", "sft2", "sft3")],
                            seed=config.seed)
  with config.unlocked():
    ev.data_dir = paths["eval_dir"]
    config.init.hf_dir = model["hf_dir"]
  print(f"[eval] no data or model given (tiny preset): generated {paths['eval_dir']} and a "
        f"random model {model['hf_dir']}", flush=True)


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Evaluates the configured benchmarks; returns the output directory (main prints it last)."""
  ev = config.eval
  _tiny_inputs(config, workdir)
  _sampling_for_k(ev)
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
    run_dirs.apply_to_init(config)  # a run, stage, params or HF dir; prints which
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
