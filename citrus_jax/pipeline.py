"""The whole Citrus lifecycle as one resumable run (configs/demo.py).

Each step writes `<workdir>/<step>/done.json` (its results and wall time) when it finishes; a
rerun skips finished steps and the training steps resume from their checkpoints, so the run can
be interrupted at any moment. Stage configs are the ordinary CPT/SFT/RL configs with the demo's
sizes, so what the demo runs is what a user runs on real data.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from citrus_jax import runtime

def _done_path(workdir: str, step: str) -> str:
  return os.path.join(workdir, step, "done.json")


def _run_step(workdir: str, step: str, fn: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
  """Runs `fn(step_dir)` unless it already finished; records its wall time."""
  path = _done_path(workdir, step)
  if os.path.exists(path):
    with open(path) as f:
      result = json.load(f)
    print(f"[pipeline] {step}: done earlier ({result['wall_s']:.0f}s), skipping", flush=True)
    return result
  step_dir = os.path.join(workdir, step)
  os.makedirs(step_dir, exist_ok=True)
  print(f"[pipeline] {step} ...", flush=True)
  t0 = time.perf_counter()
  result = fn(step_dir)
  result["wall_s"] = time.perf_counter() - t0
  if jax.process_index() == 0:
    with open(path + ".tmp", "w") as f:
      json.dump(result, f, indent=2)
    os.replace(path + ".tmp", path)
  print(f"[pipeline] {step}: {result['wall_s']:.0f}s", flush=True)
  return result


def _stage_config(module: Any, preset: str, config: ml_collections.ConfigDict, workdir: str,
                  tokenizer_path: str, **data: Any) -> ml_collections.ConfigDict:
  c = module.get_config(preset)
  c.workdir = workdir
  c.seed = config.seed
  c.progress = config.progress
  c.model = config.model.copy_and_resolve_references()
  c.mesh.shape = tuple(config.mesh.shape)
  c.tokenizer.path = tokenizer_path
  c.data.seq_len = config.data.seq_len
  c.data.global_batch_size = config.data.global_batch_size
  c.checkpoint.every = config.checkpoint.every
  c.train.log_every = config.train.log_every
  c.data.update(data)
  return c


def _world_sizes(scale: float, sft3_cases: int = 0, eval_items: int = 0) -> dict[str, int]:
  """The world's default split sizes times `scale`; `sft3_cases` > 0 sets SFT-3's outright, and
  the test split holds at least the `eval_items` evaluated."""
  from citrus_jax.demo import clinic_world
  sizes = {k: max(8, int(round(v * scale))) for k, v in clinic_world.DEFAULT_SIZES.items()}
  sizes["test"] = max(sizes["test"], eval_items)
  if sft3_cases:
    sizes["sft3"] = int(sft3_cases)
  return sizes


def restyle_sft3(src: str, dst: str, seed: int, with_options_fraction: float = 0.75) -> str:
  """SFT-3 chats in the two prompt styles: the evaluation prompt (persona + question with its
  options, in the record's candidate order; also the prompt of rejection sampling), or, for the
  other records, Citrus's open question (no options)."""
  import random
  from citrus_jax.eval import prompts
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
  from citrus_jax.demo import clinic_world
  from citrus_jax.eval import benchmarks, prompts
  from citrus_jax.synth import decontam
  paths = clinic_world.build_world(step_dir, seed=config.demo.world_seed,
                                   sizes=_world_sizes(config.demo.world_scale,
                                                      config.demo.get("sft3_cases", 0),
                                                      config.demo.eval_items),
                                   conditions=tuple(config.demo.get("world_conditions", ())),
                                   cpt_only=config.demo.get("world_cpt_only", None),
                                   prompt_fn=prompts.citrus_user_prompt)
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
  from citrus_jax import tokenizer
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


def step_cpt(config, step_dir, paths, tok_path):
  from configs import cpt as cpt_config
  from citrus_jax.train import cpt
  c = _stage_config(cpt_config, "demo", config, step_dir, tok_path, train_paths=paths["cpt"])
  c.data.seq_len = config.demo.cpt_seq_len
  c.train.num_steps = config.demo.cpt_steps
  c.optim.lr = config.demo.cpt_lr
  runtime.save_resolved_config(c, step_dir)
  result = cpt.run(c, step_dir)
  return {"workdir": step_dir, "steps": result.step, "loss": result.last_metrics.get("loss")}


def step_sft(config, step_dir, paths, tok_path, cpt_dir):
  from configs import sft as sft_config
  from citrus_jax.train import sft
  c = _stage_config(sft_config, "demo", config, step_dir, tok_path)
  c.init.checkpoint = cpt_dir
  c.optim.lr = config.demo.sft_lr
  c.data.num_epochs = 0
  sft3 = paths["sft3_chat"] if config.demo.sft3_source == "template" else config.demo.sft3_path
  batches = config.demo.get("sft_batch_sizes") or (config.data.global_batch_size,) * 3
  c.sft.stages = tuple(
      sft_config.stage(name, train_paths=p, num_steps=n, batch_size=b) for name, p, n, b in zip(
          ("sft1", "sft2", "sft3"), (paths["sft1"], paths["sft2"], sft3), config.demo.sft_steps,
          batches))
  sft.run(c, step_dir)
  return {"workdirs": {n: os.path.join(step_dir, n) for n in ("sft1", "sft2", "sft3")}}


def _load(params_dir: str, mesh: Any = None):
  from citrus_jax import sharding
  from citrus_jax.train import checkpoint
  cfg = checkpoint.read_model_config(params_dir)
  shardings = sharding.param_shardings(cfg, mesh) if mesh is not None else None
  return cfg, checkpoint.load_params(params_dir, cfg, shardings)


def gold_fallback_pairs(questions: list[dict], samples: list[dict], limit: int) -> list[dict]:
  """Pairs for questions where no sample was correct: the world's own expert-pathway chain as
  chosen, one of the model's wrong or unusable samples as rejected. Used only to top up a weak
  model's pairs (counted separately in the report), so the RL stage always has data."""
  from citrus_jax.eval import prompts
  from citrus_jax.rollout import rejection
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
    prompt = prompts.citrus_messages(rejection.question_from_record(q, q["id"], q["id"]))
    out.append({"chosen": prompt + [{"role": "assistant", "content": q["target"]}],
                "rejected": prompt + [{"role": "assistant", "content": rejected}],
                "source": "gold_fallback", "id": q["id"]})
    if len(out) >= limit:
      break
  return out


def step_rejection(config, step_dir, paths, tok_path, sft3_dir):
  from citrus_jax import tokenizer
  from citrus_jax.eval import prompts
  from citrus_jax.rollout import rejection
  tok = tokenizer.load_tokenizer(tok_path)
  cfg, params = _load(sft3_dir)
  with open(paths["rl_questions"]) as f:
    questions = [json.loads(line) for line in f][:config.demo.rs_questions]
  d = config.demo
  samples: list[dict] = []
  pairs, stats = rejection.sample_pairs(
      params, cfg, tok, questions, n_samples=d.rs_samples, temperature=d.rs_temperature,
      max_new_tokens=d.rs_max_new_tokens, seed=config.seed, batch_size=d.eval_batch_size,
      min_think_chars=d.rs_min_think_chars, unverified_as_wrong=d.rs_unverified_as_wrong,
      progress=config.progress, samples_out=samples, prompt_fn=prompts.citrus_messages)
  n_sampled = len(pairs)
  if n_sampled < d.rs_min_pairs:
    extra = gold_fallback_pairs(questions, samples, d.rs_min_pairs - n_sampled)
    print(f"[rejection] only {n_sampled} pairs from samples; added {len(extra)} gold-chain "
          f"fallback pairs (chosen = the world's reference chain)", flush=True)
    pairs = pairs + extra
  out = os.path.join(step_dir, "pairs.jsonl")
  rejection.write_pairs(out, pairs)
  return {"pairs": out, "n_pairs": len(pairs), "n_sampled_pairs": n_sampled,
          "n_fallback_pairs": len(pairs) - n_sampled, "stats": _jsonable(stats)}


def step_rl(config, step_dir, pairs_path, tok_path, sft3_dir):
  from configs import rl as rl_config
  from citrus_jax.train import rl
  c = _stage_config(rl_config, "demo", config, step_dir, tok_path, train_paths=pairs_path,
                    num_epochs=config.demo.rl_epochs)
  c.init.checkpoint = sft3_dir
  c.optim.lr = config.demo.rl_lr
  c.rl.max_length = config.demo.rl_max_length
  c.rl.max_prompt_length = config.demo.rl_max_prompt_length
  d = config.demo
  c.data.global_batch_size = d.get("rl_batch_size", 0) or min(config.data.global_batch_size, 8)
  for key in ("beta", "gamma", "cpo_alpha"):  # unset: the loss's own default (Citrus values)
    if d.get(f"rl_{key}") is not None:
      c.rl[key] = float(d.get(f"rl_{key}"))
  c.train.num_steps = 0
  runtime.save_resolved_config(c, step_dir)
  result = rl.run(c, step_dir)
  return {"workdir": step_dir, "steps": result.step,
          "metrics": {k: v for k, v in result.last_metrics.items()}}


def step_grpo(config, step_dir, questions_path, tok_path, init_dir):
  """Online RL with verified rewards (configs/grpo.py "demo") on the world's RL questions."""
  from configs import grpo as grpo_config
  from citrus_jax.train import grpo
  d = config.demo
  c = _stage_config(grpo_config, "demo", config, step_dir, tok_path, train_paths=questions_path)
  c.init.checkpoint = init_dir
  c.optim.lr = d.grpo_lr
  c.grpo.update(prompts_per_step=d.grpo_prompts, num_generations=d.grpo_generations,
                max_new_tokens=d.rs_max_new_tokens, temperature=d.grpo_temperature,
                loss_type=d.grpo_loss, max_prompt_length=d.rl_max_prompt_length)
  c.train.num_steps = d.grpo_steps
  c.train.log_every = 1
  c.checkpoint.every = max(d.grpo_steps // 2, 1)
  c.data.global_batch_size = d.grpo_prompts * d.grpo_generations
  c.data.seq_len = d.rl_max_prompt_length + d.rs_max_new_tokens
  runtime.save_resolved_config(c, step_dir)
  result = grpo.run(c, step_dir)
  return {"workdir": step_dir, "steps": result.step, "metrics": dict(result.last_metrics),
          "init": os.path.basename(os.path.normpath(init_dir))}


def step_eval(config, step_dir, paths, tok_path, checkpoints):
  """Every stage's params on the held-out test split: generation and log-likelihood."""
  from citrus_jax import tokenizer
  from citrus_jax.eval import benchmarks, harness
  from citrus_jax.model import transformer
  tok = tokenizer.load_tokenizer(tok_path)
  items = benchmarks.load_benchmark("medqa", paths["test"]).items[:config.demo.eval_items]
  results = {}
  for name, params_dir in checkpoints.items():
    out = os.path.join(step_dir, f"{name}.json")
    if os.path.exists(out):
      with open(out) as f:
        results[name] = json.load(f)
      continue
    if params_dir is None:  # the random-init baseline: the CPT stage's starting point
      cfg, _ = _load(checkpoints["cpt"])
      params = transformer.init_params(cfg, jax.random.key(config.seed))
    else:
      cfg, params = _load(params_dir)
    t0 = time.perf_counter()
    # A random or CPT-only model does not follow the answer format (0.0% and 0.5% measured by
    # generation, README), so by default the baselines are scored by log-likelihood only.
    baseline = name in ("random", "cpt") and not config.demo.get("eval_generate_baselines", False)
    records, summary = harness.evaluate_items(
        params, cfg, tok, items, prompt="citrus", mode="loglik" if baseline else "both",
        max_new_tokens=config.demo.eval_max_new_tokens, batch_size=config.demo.eval_batch_size,
        seed=config.seed, benchmark=f"test/{name}", progress=config.progress)
    summary["by_group"] = by_group(records, items) if "acc" in summary else {}
    summary["wall_s"] = time.perf_counter() - t0
    with open(os.path.join(step_dir, f"{name}_items.jsonl"), "w") as f:
      for r in records:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(out, "w") as f:
      json.dump(_jsonable(summary), f, indent=2)
    results[name] = _jsonable(summary)
    print(f"[eval] {name}: acc {summary.get('acc', float('nan')):.3f} (n={summary['n']}), loglik acc "
          f"{summary.get('loglik', {}).get('acc', float('nan')):.3f}", flush=True)
  return {"results": results}


def by_group(records: list[dict], items: list[Any]) -> dict[str, dict[str, float]]:
  """Generation accuracy per world group (unique_finding / shared_only / cpt_only)."""
  groups: dict[str, list[bool]] = {}
  for rec, item in zip(records, items):
    groups.setdefault(item.meta.get("group", "all"), []).append(bool(rec.get("correct")))
  return {g: {"acc": float(np.mean(v)), "n": len(v)} for g, v in sorted(groups.items())}


def step_export(config, step_dir, tok_path, final_dir, stage="rl"):
  from citrus_jax import hf, tokenizer
  cfg, params = _load(final_dir)
  out = os.path.join(step_dir, "hf")
  hf.save(out, params, cfg, tokenizer=tokenizer.load_tokenizer(tok_path),
          provenance={"source_checkpoint": final_dir, "stage": stage}, overwrite=True)
  return {"hf_export": out, "stage": stage}


def _jsonable(x: Any) -> Any:
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  return x


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Runs every step that has not finished yet; returns the run directory."""
  from citrus_jax import shipped_configs
  from citrus_jax.demo import report
  shipped_configs.ensure_importable()  # the stage configs, also from an installed package
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  runtime.save_resolved_config(config, workdir)
  data = _run_step(workdir, "data", lambda d: step_data(config, d))
  paths = data["paths"]
  tok = _run_step(workdir, "tokenizer", lambda d: step_tokenizer(config, d, paths))
  tok_path = tok["model"]
  cpt = _run_step(workdir, "cpt", lambda d: step_cpt(config, d, paths, tok_path))
  sft = _run_step(workdir, "sft", lambda d: step_sft(config, d, paths, tok_path, cpt["workdir"]))
  sft3 = sft["workdirs"]["sft3"]
  rej = _run_step(workdir, "rejection",
                  lambda d: step_rejection(config, d, paths, tok_path, sft3))
  if rej["n_pairs"] == 0:
    raise RuntimeError("rejection sampling kept no pairs; see rejection/done.json stats")
  rl = _run_step(workdir, "rl", lambda d: step_rl(config, d, rej["pairs"], tok_path, sft3))
  checkpoints = {"random": None, "cpt": cpt["workdir"], "sft3": sft3, "rl": rl["workdir"]}
  steps = {"data": data, "tokenizer": tok, "cpt": cpt, "sft": sft, "rejection": rej, "rl": rl}
  if config.demo.get("grpo_steps", 0):
    start = {"rl": rl["workdir"], "sft3": sft3}[config.demo.get("grpo_from", "rl")]
    steps["grpo"] = _run_step(workdir, "grpo", lambda d: step_grpo(
        config, d, paths["rl_questions"], tok_path, start))
    checkpoints["grpo"] = steps["grpo"]["workdir"]
  final = list(checkpoints)[-1]
  steps["eval"] = _run_step(workdir, "eval",
                            lambda d: step_eval(config, d, paths, tok_path, checkpoints))
  steps["export"] = _run_step(workdir, "export", lambda d: step_export(
      config, d, tok_path, checkpoints[final], final))
  report.write(workdir, steps)
  return workdir
