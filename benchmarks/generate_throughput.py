"""New tokens/s of `citrus_jax.infer.sampler.generate` against transformers' `generate()`.

Both run the same model (a preset, random weights drawn in torch and converted with
`citrus_jax.hf`), the same left-padded batch of prompts, greedy, with EOS stopping disabled so
every row produces exactly --new_tokens tokens. Ours is timed after a warm-up call (its compile
time is reported separately); HF uses its KV cache and as many torch threads as there are cores.
Runs alternate and the best and median of --repeats are reported, since shared machines are
noisy; transformers also runs with one torch thread, which suffers less when other processes
take the cores.

  python benchmarks/generate_throughput.py [--preset demo --batch 8 --new_tokens 128]

Group rollouts as GRPO makes them (`citrus_jax.rollout.group`: each prompt repeated G times in one
sampler call, sampled at a temperature) against `generate(do_sample=True,
num_return_sequences=G)` on the same prompts:

  python benchmarks/generate_throughput.py --batch 32 --samples_per_prompt 8 --new_tokens 256 \
      --temperature 1.0 --repeats 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np
import torch
import transformers

from citrus_jax import hf
from citrus_jax.infer import sampler
from citrus_jax.model.config import get_preset


def _hf_model(cfg):
  hf_cfg = hf.config_to_hf(cfg)
  config_cls, model_cls = ((transformers.LlamaConfig, transformers.LlamaForCausalLM)
                           if cfg.family == "llama" else
                           (transformers.Qwen2Config, transformers.Qwen2ForCausalLM))
  torch.manual_seed(0)
  return model_cls(config_cls(**hf_cfg)).eval()


_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--preset", default="demo")
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--new_tokens", type=int, default=128)
  ap.add_argument("--min_prompt", type=int, default=16)
  ap.add_argument("--max_prompt", type=int, default=48)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--dtype", default="float32", help="weights and compute, both sides")
  ap.add_argument("--samples_per_prompt", type=int, default=1,
                  help="G > 1: group rollouts, each prompt sampled G times (GRPO's shape)")
  ap.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
  args = ap.parse_args()

  threads = len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  cfg = get_preset(args.preset, compute_dtype=args.dtype)
  model = _hf_model(cfg)
  params = hf.params_from_state_dict(
      {k: v.detach().numpy() for k, v in model.state_dict().items()}, cfg)
  params = jax.tree.map(lambda x: x.astype(args.dtype), params)
  model = model.to(_DEVICE, dtype=getattr(torch, args.dtype))
  rng = np.random.default_rng(0)
  lengths = rng.integers(args.min_prompt, args.max_prompt + 1, size=args.batch)
  prompts = [[cfg.bos_token_id or 1] + rng.integers(3, cfg.vocab_size, n - 1).tolist()
             for n in lengths]
  group = args.samples_per_prompt
  n_new = args.new_tokens * args.batch * group
  sampled = args.temperature > 0
  rows = [p for p in prompts for _ in range(group)]  # as rollout.group lays out a step's rows

  def ours():
    return sampler.generate(params, cfg, rows, max_new_tokens=args.new_tokens, stop_ids=(),
                            temperature=args.temperature)

  width = max(lengths)
  ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=_DEVICE)
  mask = (ids != 0).long()  # no prompt token is 0

  def theirs(n_threads: int = threads):
    torch.set_num_threads(n_threads)
    with torch.inference_mode():
      sampling = (dict(do_sample=True, temperature=args.temperature, top_k=0, top_p=1.0)
                  if sampled else dict(do_sample=False, top_k=None, top_p=None, temperature=None))
      out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new_tokens,
                           min_new_tokens=args.new_tokens, pad_token_id=0,
                           num_return_sequences=group, **sampling)
      return out.cpu()

  load_before = os.getloadavg()[0]
  start = time.perf_counter()
  first = ours()
  first_s = time.perf_counter() - start
  hf_out = theirs()  # warm-up
  # transformers with one thread too: on a shared machine torch's pool suffers most from load.
  runs = {"citrus_jax": ours, "transformers": theirs}
  if _DEVICE == "cpu":
    runs["transformers_1thr"] = lambda: theirs(1)
  times: dict[str, list[float]] = {name: [] for name in runs}
  for _ in range(args.repeats):
    for name, fn in runs.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  assert all(len(t) == args.new_tokens for t in first.tokens)
  assert hf_out.shape == (args.batch * group, width + args.new_tokens)
  # Random weights give near-tied logits; agreement is informative, not a check (and only
  # meaningful for greedy decoding).
  agree = np.mean([a == b for row, t in zip(hf_out[:, width:].tolist(), first.tokens)
                   for a, b in zip(row, t)])

  best = {k: min(v) for k, v in times.items()}
  print(f"preset={args.preset} batch={args.batch} x {group} samples, temperature "
        f"{args.temperature}, new_tokens={args.new_tokens} prompt lengths "
        f"{args.min_prompt}-{args.max_prompt} {args.dtype}, {jax.devices()[0].device_kind}, "
        f"torch on {_DEVICE}, {threads} CPU threads, jax "
        f"{jax.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
  print(f"{'':18}{'tok/s (best)':>14}{'tok/s (median)':>16}{'ms/step (best)':>16}")
  for name, ts in times.items():
    print(f"{name:18}{n_new / min(ts):14.0f}{n_new / statistics.median(ts):16.0f}"
          f"{1e3 * min(ts) / args.new_tokens:16.2f}")
  med = {k: statistics.median(v) for k, v in times.items()}
  for name in [n for n in runs if n != "citrus_jax"]:
    print(f"speed-up over {name}: best {best[name] / best['citrus_jax']:.2f}x, "
          f"median {med[name] / med['citrus_jax']:.2f}x")
  print(f"citrus_jax compile (first call minus a warm call): {first_s - best['citrus_jax']:.2f} s; "
        + (f"greedy token agreement with transformers: {agree:.1%}" if not sampled else
           "sampled (no token agreement expected)"))
  print(f"1-min load average before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f} on {threads} "
        "cores (torch's thread pool slows down sharply when cores are oversubscribed)")


if __name__ == "__main__":
  main()
