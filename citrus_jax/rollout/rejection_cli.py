"""Command line of rejection sampling (rollout/rejection.py): a model, questions -> pairs JSONL.

  python -m citrus_jax.rollout.rejection_cli --checkpoint runs/sft/sft3 --tokenizer tok.model \
      --questions rl_questions.jsonl --out pairs.jsonl [--samples_out samples.jsonl] [--mesh 1,-1,1]

Writes the pairs, <out>.stats.json and the
optional samples. On several hosts start one process per host with the same arguments plus
--coordinator_address/--num_processes/--process_id (not needed under SLURM or on a TPU pod) and a
--mesh over all devices: every process samples the same questions, and process 0 writes.
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Sequence

import jax

from citrus_jax import run_dirs, sharding
from citrus_jax.rollout import quality, rejection
from citrus_jax.synth import llm
from citrus_jax.tokenizer import load_tokenizer


def _load_model(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
  """A run, stage, params or HF dir (run_dirs says which, in one line); its tokenizer unless
  --tokenizer names one."""
  mesh = sharding.make_mesh(tuple(int(x) for x in args.mesh.split(","))) if args.mesh else None
  r = run_dirs.resolve(args.checkpoint or args.hf_dir)
  print(r.describe(), flush=True)
  tok = load_tokenizer(args.tokenizer or r.tokenizer or args.hf_dir or r.load_dir)
  cfg, params = run_dirs.load(r, mesh=mesh, dtype=args.dtype or None)
  if cfg.vocab_size < tok.vocab_size:
    raise ValueError(f"model vocab {cfg.vocab_size} < tokenizer vocab {tok.vocab_size}")
  return params, cfg, tok, mesh


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m citrus_jax.rollout.rejection_cli",
                              description=rejection.__doc__.split("\n\n")[0])
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--checkpoint", help="a run, stage or params directory (or an HF one)")
  src.add_argument("--hf_dir", help="transformers checkpoint directory")
  p.add_argument("--tokenizer", default="", help="tokenizer (.model / dir); default: --hf_dir")
  p.add_argument("--questions", required=True, help="JSONL/JSON question records")
  p.add_argument("--out", required=True, help="pairs JSONL; stats go to <out>.stats.json")
  p.add_argument("--samples_out", default="", help="optional JSONL of every sample and verdict")
  p.add_argument("--prompt", default="open", choices=sorted(rejection.PROMPT_STYLES))
  p.add_argument("--n_samples", type=int, default=10)
  p.add_argument("--temperature", type=float, default=0.7)
  p.add_argument("--top_p", type=float, default=1.0)
  p.add_argument("--top_k", type=int, default=0)
  p.add_argument("--max_new_tokens", type=int, default=4096,
                 help="long expert chains need it (1024 cuts them and drops them as unfinished)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--batch_size", type=int, default=64, help="sequences per generate call")
  p.add_argument("--min_think_chars", type=int, default=200)
  p.add_argument("--max_pairs_per_question", type=int, default=3)
  p.add_argument("--max_chars", type=int, default=8192, help="prompt + response bound")
  p.add_argument("--scorer", default="rule", choices=sorted(quality.SCORERS),
                 help="0-100 quality score ordering correct responses (llm: needs --judge_*)")
  p.add_argument("--judge_base_url", default="",
                 help="OpenAI-compatible /v1 URL of an LLM judge: verifies answers the rules "
                      "cannot map to an option, and scores with --scorer llm")
  p.add_argument("--judge_model", default="")
  p.add_argument("--judge_api_key_env", default="",
                 help="env variable holding the judge's API key (none sent otherwise)")
  p.add_argument("--unverified_as_wrong", action="store_true")
  p.add_argument("--limit", type=int, default=0, help="> 0: only the first questions")
  p.add_argument("--mesh", default="", help="e.g. 1,-1,1 (data, fsdp, tensor); default 1 device")
  p.add_argument("--dtype", default="", help="param/compute dtype override, e.g. bfloat16")
  p.add_argument("--no_progress", action="store_true")
  p.add_argument("--coordinator_address", default="",
                 help="several processes: host:port of process 0 (or set JAX_COORDINATOR_ADDRESS;"
                      " SLURM and TPU pods need none of these)")
  p.add_argument("--num_processes", type=int, default=0)
  p.add_argument("--process_id", type=int, default=-1)
  args = p.parse_args(argv)
  if args.checkpoint and not args.tokenizer:
    p.error("--checkpoint needs --tokenizer")
  if bool(args.judge_base_url) != bool(args.judge_model):
    p.error("--judge_base_url and --judge_model go together")
  if args.scorer == "llm" and not args.judge_base_url:
    p.error("--scorer llm needs --judge_base_url and --judge_model")
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  sharding.initialize_distributed(args.coordinator_address or None, args.num_processes or None,
                                  None if args.process_id < 0 else args.process_id)
  questions = rejection.load_questions(args.questions, args.limit)
  params, cfg, tok, mesh = _load_model(args)
  backend = judge = None
  if args.judge_base_url:
    key = {"api_key_env": args.judge_api_key_env} if args.judge_api_key_env else {}
    backend = llm.OpenAIBackend(args.judge_base_url, args.judge_model, **key)
    judge = quality.llm_judge(backend)
  samples: list = []
  pairs, stats = rejection.sample_pairs(
      params, cfg, tok, questions, n_samples=args.n_samples, temperature=args.temperature,
      top_p=args.top_p, top_k=args.top_k, max_new_tokens=args.max_new_tokens, seed=args.seed,
      batch_size=args.batch_size, min_think_chars=args.min_think_chars,
      max_pairs_per_question=args.max_pairs_per_question, max_chars=args.max_chars,
      unverified_as_wrong=args.unverified_as_wrong, prompt_fn=rejection.PROMPT_STYLES[args.prompt],
      judge=judge, scorer=quality.SCORERS[args.scorer](backend),
      mesh=mesh, progress=not args.no_progress,
      samples_out=samples if args.samples_out else None)
  rejection.write_pairs(args.out, pairs)  # these writes: process 0 only
  stats["settings"].update(questions=args.questions, prompt=args.prompt,
                           model=args.checkpoint or args.hf_dir, scorer=args.scorer,
                           judge=args.judge_model or None)
  if args.samples_out:
    rejection.write_pairs(args.samples_out, samples)
  if jax.process_index() == 0:
    with open(args.out + ".stats.json", "w", encoding="utf-8") as f:
      json.dump(stats, f, indent=2, ensure_ascii=False)
    print(f"[rejection] wrote {len(pairs)} pairs to {args.out}", flush=True)
  return stats


if __name__ == "__main__":
  main()
