"""`python -m citrus_jax.hf_cli import|export`: HF checkpoints <-> citrus_jax params directories.

A params directory is what `train/checkpoint.save_params` writes and every stage reads:
`params/` (an Orbax StandardCheckpointer tree of the params pytree) and `model_config.json`
({"model": ModelConfig fields, ...extra}). Export also accepts a training run directory (the
params of its last finished stage), a stage dir (an unfinished one: its latest checkpoint) and an
HF dir (re-saved), and says which it found (citrus_jax/run_dirs.py).

  python -m citrus_jax.hf_cli import --hf_dir ~/Llama-3.2-1B --out ckpt/base
  python -m citrus_jax.hf_cli export --checkpoint ckpt/sft --out hf/citrus --tokenizer ~/Llama-3.2-1B
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from citrus_jax import hf, run_dirs
from citrus_jax import sharding as sharding_lib
from citrus_jax.tokenizer import load_tokenizer
from citrus_jax.train import checkpoint

# Kept from an imported model's generation_config.json when it is exported again.
_GEN_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id", "do_sample", "temperature", "top_p",
             "top_k", "max_length")


def import_hf(hf_dir: str, out: str, dtype: str | None = None,
              mesh_shape: Sequence[int] = (1, -1, 1)) -> str:
  """HF directory -> params directory; the source generation config is kept for export."""
  mesh = sharding_lib.make_mesh(mesh_shape)
  cfg, params = hf.load(hf_dir, mesh=mesh, dtype=dtype)
  extra = {"hf_source": os.path.abspath(hf_dir)}
  gen_path = os.path.join(hf_dir, "generation_config.json")
  if os.path.exists(gen_path):
    with open(gen_path) as f:
      extra["hf_generation_config"] = json.load(f)
  return checkpoint.save_params(out, params, cfg, extra=extra)


def export_hf(checkpoint_dir: str, out: str, tokenizer: str | None = None,
              dtype: str | None = None, max_shard_bytes: int = 2**31, overwrite: bool = False,
              mesh_shape: Sequence[int] = (1, -1, 1)) -> str:
  """Run dir, stage dir, params dir or HF dir (citrus_jax/run_dirs.py) -> transformers-loadable
  directory. One line says which layout was found; the tokenizer defaults to the checkpoint's."""
  r = run_dirs.resolve(checkpoint_dir)
  print(r.describe(), flush=True)
  if os.path.abspath(r.load_dir) == os.path.abspath(out):
    raise ValueError(f"--out {out} is the checkpoint being exported; pick another directory")
  mesh = sharding_lib.make_mesh(mesh_shape)
  cfg, params = run_dirs.load(r, mesh=mesh, dtype=dtype)
  meta = {}
  if r.fmt == "params":
    with open(os.path.join(r.load_dir, "model_config.json")) as f:
      meta = json.load(f)
  elif r.fmt == "hf" and os.path.exists(os.path.join(r.load_dir, "generation_config.json")):
    with open(os.path.join(r.load_dir, "generation_config.json")) as f:
      meta = {"hf_generation_config": json.load(f)}
  if r.fmt == "checkpoint":
    meta = {"stage": r.stage, "step": r.step, "unfinished_stage": True}
  gen = {k: v for k, v in (meta.get("hf_generation_config") or {}).items() if k in _GEN_KEYS}
  provenance = {"source_checkpoint": os.path.abspath(r.load_dir), "source_layout": r.kind,
                **{k: v for k, v in meta.items() if k not in ("model", "hf_generation_config")}}
  tokenizer = tokenizer or r.tokenizer
  tok = None
  if tokenizer is not None:  # a tokenizer directory, tokenizer.json or sentencepiece .model
    tok = load_tokenizer(tokenizer)
  return hf.save(out, params, cfg, tokenizer=tok, provenance=provenance,
                 max_shard_bytes=max_shard_bytes, generation_config=gen or None,
                 overwrite=overwrite)


def _mesh(text: str) -> tuple[int, ...]:
  return tuple(int(v) for v in text.split(","))


def run(argv: Sequence[str] | None = None) -> str:
  parser = argparse.ArgumentParser(prog="python -m citrus_jax.hf_cli", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  imp = sub.add_parser("import", help="HF checkpoint directory -> citrus_jax params directory")
  imp.add_argument("--hf_dir", required=True)
  imp.add_argument("--out", required=True)
  imp.add_argument("--dtype", default=None, help="param dtype (default: the checkpoint's)")
  imp.add_argument("--mesh", type=_mesh, default=(1, -1, 1), help="data,fsdp,tensor")
  exp = sub.add_parser("export", help="citrus_jax run/stage/params directory -> HF directory")
  exp.add_argument("--checkpoint", required=True,
                   help="a run dir, a stage dir, a params dir or a Hugging Face dir")
  exp.add_argument("--out", required=True)
  exp.add_argument("--tokenizer", default=None,
                   help="tokenizer directory, tokenizer.json or sentencepiece .model (default: "
                   "the checkpoint's, or the one its stage trained with)")
  exp.add_argument("--dtype", default=None, help="saved dtype, e.g. bfloat16 (default: as stored)")
  exp.add_argument("--max_shard_bytes", type=int, default=2**31)
  exp.add_argument("--overwrite", action="store_true")
  exp.add_argument("--mesh", type=_mesh, default=(1, -1, 1), help="data,fsdp,tensor")
  args = parser.parse_args(argv)
  if args.command == "import":
    out = import_hf(args.hf_dir, args.out, args.dtype, args.mesh)
  else:
    try:
      out = export_hf(args.checkpoint, args.out, args.tokenizer, args.dtype, args.max_shard_bytes,
                      args.overwrite, args.mesh)
    except (run_dirs.CheckpointPathError, FileNotFoundError) as e:
      raise SystemExit(f"export: --checkpoint {args.checkpoint}: {e}") from None
  print(out)
  return out


if __name__ == "__main__":
  run(sys.argv[1:])
