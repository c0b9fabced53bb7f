"""The recipe's steps on resolved inputs: init, CPT, SFT stages, rejection sampling, CPO+SimPO,
GRPO, evaluation and HF export. Each calls the stage's own runner (train/, rollout/, eval/, hf)
with a stage config from configs/ (runner.stage_config) and returns JSON results for done.json.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
from etils import epath

from citrus_jax import hf, hf_cli, runtime, sharding, tokenizer
from citrus_jax.data import records as data_records
from citrus_jax.eval import benchmarks, harness, prompts
from citrus_jax.model import transformer
from citrus_jax.pipeline import clinic, runner
from citrus_jax.rollout import quality, rejection
from citrus_jax.runtime import ConfigError
from citrus_jax.train import checkpoint, cpt, grpo, rl, sft


class Preempted(Exception):
  """A training stage saved on SIGTERM and stopped: exit RESUMABLE_EXIT, a rerun resumes."""


def _train_result(result: Any, step_dir: str) -> dict[str, Any]:
  stopped = str(getattr(result, "stopped_early", None) or "")
  if stopped.startswith("preempted"):
    raise Preempted(f"{step_dir}: {stopped}")
  metrics = {k: float(v) for k, v in (result.last_metrics or {}).items()
             if isinstance(v, (int, float)) or hasattr(v, "item")}
  return {"workdir": step_dir, "steps": int(result.step), "loss": metrics.get("loss"),
          "metrics": metrics}


def init_from(result: dict[str, Any]) -> dict[str, str]:
  """Where the next stage starts: a finished stage's params, or the init step's HF/random."""
  if result.get("workdir"):
    return {"checkpoint": result["workdir"]}
  return {"hf_dir": result.get("hf_dir", "")}


def step_init(config: ml_collections.ConfigDict, step_dir: str, hf_dir: str,
              tok_path: str) -> dict[str, Any]:
  """Checks the starting point before any training: the HF checkpoint's config and tokenizer
  (or, without one, the random-init preset) and that the model's vocab covers the tokenizer's."""
  probe = config.copy_and_resolve_references()
  probe.init.hf_dir, probe.init.checkpoint = hf_dir, config.init.get("checkpoint", "")
  tok = tokenizer.load_tokenizer(tok_path)
  cfg = runtime.model_config_from(probe, vocab_size=tok.vocab_size)
  if cfg.vocab_size < tok.vocab_size:
    raise ConfigError(f"config.init.hf_dir={hf_dir}: model vocab {cfg.vocab_size} < tokenizer "
                      f"vocab {tok.vocab_size} ({tok_path})")
  out = {"hf_dir": hf_dir, "checkpoint": probe.init.checkpoint, "tokenizer": tok_path,
         "vocab_size": tok.vocab_size, "n_params": transformer.count_params(cfg),
         "model": {"family": cfg.family, "d_model": cfg.d_model, "n_layers": cfg.n_layers,
                   "vocab_size": cfg.vocab_size, "max_seq_len": cfg.max_seq_len},
         "preset": None if hf_dir or probe.init.checkpoint else config.model.preset}
  runner.save_config(out, step_dir)
  if out["checkpoint"]:
    out["workdir"] = out["checkpoint"]
  return out


def step_cpt(config, step_dir: str, tok: str, init: dict[str, str], paths: str) -> dict:
  from configs import cpt as cpt_config  # lazy: run_job makes `configs` importable first
  c = runner.stage_config(cpt_config, "cpt.py", config, "cpt", step_dir, tok, init,
                          data={"train_paths": paths})
  runner.save_config(c, step_dir)
  return _train_result(cpt.run(c, step_dir), step_dir)


def step_sft(config, name: str, step_dir: str, tok: str, init: dict[str, str], paths: str,
             eval_paths: str = "") -> dict:
  """One SFT stage in <workdir>/sft/<name> (sft.run writes its resolved config there)."""
  from configs import sft as sft_config  # lazy: run_job makes `configs` importable first
  parent = os.path.dirname(step_dir)
  c = runner.stage_config(sft_config, "sft.py", config, name, parent, tok, init,
                          sft={"stages": (sft_config.stage(name, train_paths=paths,
                                                           eval_paths=eval_paths),)})
  results = sft.run(c, parent)
  result = results.get(name)
  if result is None:  # finished before this step was recorded
    return {"workdir": step_dir, "steps": None, "loss": None, "metrics": {}}
  return _train_result(result, step_dir)


def step_rejection(config, step_dir: str, tok_path: str, start: dict[str, str], questions: str
                   ) -> dict[str, Any]:
  """Samples the SFT model on the MCQ bank, verifies, pairs (rollout/rejection.py); tops up
  with reference-chain pairs (`min_pairs`) where the bank carries one (a `target` field)."""
  r = config.steps.rejection
  model = start.get("checkpoint") or start.get("hf_dir")
  runner.save_config({"rejection": r.to_dict(), "model": model, "questions": questions,
                      "tokenizer": tok_path}, step_dir)
  tok = tokenizer.load_tokenizer(tok_path)
  mesh = sharding.make_mesh(tuple(config.mesh.shape))
  if start.get("checkpoint"):
    cfg = checkpoint.read_model_config(model)
    params = checkpoint.load_params(model, cfg, sharding.param_shardings(cfg, mesh))
  else:  # no stage ran before: the HF checkpoint itself
    cfg, params = hf.load(model, mesh=mesh)
  qs = rejection.load_questions(questions, r.limit)  # file:line errors for bad records
  records = _raw_records(questions, r.limit)  # for the reference-chain top-up
  styles = {**rejection.PROMPT_STYLES, "citrus": prompts.citrus_messages}
  if r.prompt not in styles:
    raise ConfigError(f"config.steps.rejection.prompt={r.prompt!r}: expected one of "
                      f"{sorted(styles)}")
  samples: list[dict] = []
  pairs, stats = rejection.sample_pairs(
      params, cfg, tok, qs, n_samples=r.n_samples, temperature=r.temperature,
      top_p=r.top_p, max_new_tokens=r.max_new_tokens, seed=config.seed, batch_size=r.batch_size,
      min_think_chars=r.min_think_chars, max_pairs_per_question=r.max_pairs_per_question,
      max_chars=r.max_chars, unverified_as_wrong=r.unverified_as_wrong,
      scorer=quality.SCORERS[r.scorer](None) if r.scorer else None, prompt_fn=styles[r.prompt], mesh=mesh,
      progress=config.progress, samples_out=samples)
  n_sampled = len(pairs)
  if n_sampled < r.min_pairs and records and all("target" in q for q in records):
    extra = clinic.gold_fallback_pairs(records, samples, r.min_pairs - n_sampled,
                                       prompt_fn=styles[r.prompt])
    print(f"[rejection] only {n_sampled} pairs from samples; added {len(extra)} reference-chain "
          f"fallback pairs (chosen = the record's own target)", flush=True)
    pairs = pairs + extra
  out = os.path.join(step_dir, "pairs.jsonl")
  rejection.write_pairs(out, pairs)
  if not pairs:
    raise RuntimeError(f"rejection sampling kept no pairs from {questions}; stats: "
                       f"{json.dumps(runner.jsonable(stats))[:2000]}")
  return {"pairs": out, "n_pairs": len(pairs), "n_sampled_pairs": n_sampled,
          "n_fallback_pairs": len(pairs) - n_sampled, "stats": runner.jsonable(stats)}


def _raw_records(path: str, limit: int = 0) -> list[dict[str, Any]]:
  """The question records as read (ids defaulted as rejection.load_questions does)."""
  found = [rec for f in data_records.split_paths(path)
           for _, rec in data_records.read_records(f)]
  found = found[:limit] if limit > 0 else found
  return [{**rec, "id": str(rec.get("id", f"q{i}"))} for i, rec in enumerate(found)]


def step_rl(config, step_dir: str, tok: str, init: dict[str, str], pairs: str) -> dict:
  from configs import rl as rl_config  # lazy: run_job makes `configs` importable first
  c = runner.stage_config(rl_config, "rl.py", config, "rl", step_dir, tok, init,
                          data={"train_paths": pairs})
  runner.save_config(c, step_dir)
  return _train_result(rl.run(c, step_dir), step_dir)


def step_grpo(config, step_dir: str, tok: str, init: dict[str, str], questions: str,
              init_name: str) -> dict:
  """Online RL with verified rewards (configs/grpo.py) on the MCQ bank."""
  from configs import grpo as grpo_config  # lazy: run_job makes `configs` importable first
  c = runner.stage_config(grpo_config, "grpo.py", config, "grpo", step_dir, tok, init,
                          data={"train_paths": questions})
  g = c.grpo
  c.data.global_batch_size = g.prompts_per_step * g.num_generations
  c.data.seq_len = g.max_prompt_length + g.max_new_tokens
  runner.save_config(c, step_dir)
  return {**_train_result(grpo.run(c, step_dir), step_dir), "init": init_name}


def by_group(records: list[dict], items: list[Any]) -> dict[str, dict[str, float]]:
  """Generation accuracy per item group (the clinic world's unique_finding / shared_only /
  cpt_only), for benchmarks whose items carry a `group`."""
  groups: dict[str, list[bool]] = {}
  by_id = {str(it.id): it for it in items}
  for rec in records:
    item = by_id.get(str(rec.get("id")))
    if item is not None and "group" in item.meta:
      groups.setdefault(item.meta["group"], []).append(bool(rec.get("correct")))
  return {g: {"acc": sum(v) / len(v), "n": len(v)} for g, v in sorted(groups.items())}


def eval_one(config, name: str, out_dir: str, tok: str, init: dict[str, str], ev: dict
             ) -> dict[str, Any]:
  """One checkpoint on the benchmarks through eval/harness.run (configs/eval.py preset plus
  the eval step's overrides); returns its summary flattened for the report."""
  from configs import eval as eval_config  # lazy: run_job makes `configs` importable first
  s = config.steps.eval
  c = runner.stage_config(eval_config, "eval.py", config, "eval", out_dir, tok, init,
                          eval={"benchmarks": ev["benchmarks"], "data_paths": ev["data_paths"],
                                "data_dir": ev["data_dir"], "timestamped": False})
  if name in runner_list(s.baselines):
    c.eval.mode = s.baseline_mode
  runner.save_config(c, out_dir)
  harness.run(c, out_dir)
  if jax.process_index() != 0:  # process 0 alone wrote the outputs (and writes the records)
    return {"n": None, "benchmarks": {}, "by_group": {}, "mode": c.eval.mode}
  summary = json.loads((epath.Path(out_dir) / "summary.json").read_text())
  per = summary["benchmarks"]
  rows, all_records = {}, []
  for key, b in per.items():
    recs = [json.loads(line) for line in (epath.Path(out_dir) / b["file"]).read_text()
            .splitlines() if line.strip()]
    all_records += recs
    bench = benchmarks.load_benchmark(key if key in benchmarks.BENCHMARKS else
                                      benchmarks.detect_benchmark(b["path"]) or key, b["path"])
    rows[key] = {**b, "by_group": by_group(recs, bench.items) if "acc" in b else {}}
  first = next(iter(rows.values())) if len(rows) == 1 else {
      **summary.get("macro_avg", {}), "n": sum(r["n"] for r in rows.values()),
      **({"n_no_answer": sum(r["n_no_answer"] for r in rows.values())}
         if all("n_no_answer" in r for r in rows.values()) else {})}
  (epath.Path(os.path.dirname(out_dir)) / f"{name}_items.jsonl").write_text(
      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in all_records))
  result = {**{k: v for k, v in first.items() if k not in ("file", "path")},
            "by_group": first.get("by_group", {}), "benchmarks": rows, "mode": c.eval.mode}
  runner.write_json(os.path.join(os.path.dirname(out_dir), f"{name}.json"), result)
  return result


def runner_list(value: Any) -> list[str]:
  return runtime.split_paths(value)


def step_eval(config, step_dir: str, tok: str, checkpoints: dict[str, dict[str, str]],
              ev: dict[str, str]) -> dict[str, Any]:
  """Every checkpoint named in `steps.eval.checkpoints` on the benchmarks; one finished
  checkpoint's results are kept when the step is interrupted."""
  results = {}
  for name, init in checkpoints.items():
    done = epath.Path(step_dir) / f"{name}.json"
    if done.exists():
      results[name] = json.loads(done.read_text())
      continue
    print(f"[eval] {name} ...", flush=True)
    results[name] = eval_one(config, name, os.path.join(step_dir, name), tok, init, ev)
  return {"results": results}


def step_export(config, step_dir: str, tok: str, params_dir: str, stage: str) -> dict[str, Any]:
  """The final params as a transformers-loadable directory (hf_cli.export_hf)."""
  e = config.steps.export
  out = os.path.join(step_dir, "hf")
  runner.save_config({"export": e.to_dict(), "checkpoint": params_dir, "stage": stage,
                      "tokenizer": tok}, step_dir)
  hf_cli.export_hf(params_dir, out, tokenizer=tok, dtype=e.dtype or None, overwrite=True,
                   mesh_shape=tuple(config.mesh.shape))
  return {"hf_export": out, "stage": stage, "source_checkpoint": params_dir}
