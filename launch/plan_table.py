"""What fits on which TPU slice: plan mode (AOT compile) over presets x slices, as a table.

  python -m launch.plan_table --presets=llama3_1_8b,llama3_1_70b \\
      --slices=v5p-64,v5p-256,v6e-256 --out=plan_table.json
  python -m launch.plan_table --presets=qwen3_8b,qwen3_32b --out=plan_table.json  # rows added

Needs libtpu (`pip install 'jax[tpu]'`, or `pip install libtpu==<the version for your jax>` in a
venv); runs on a CPU host. For each CPT preset (its mesh, seq_len, global batch, remat and
dtypes) and slice it finds the fewest gradient-accumulation microbatches whose train step
compiles within the chip's HBM, by bisection over powers of two, and reports the compiled
per-chip peak. A step that does not fit fails to compile with RESOURCE_EXHAUSTED, which is
recorded with the bytes it asked for. With --out, rows already in the file are kept, so new
presets are added by running only them. If another process holds libtpu's /tmp/libtpu_lockfile,
AOT compiles still work with ALLOW_MULTIPLE_LIBTPU_LOAD=1 (nothing runs on a chip).

--attention=splash compiles the same step with the Pallas splash kernel (citrus_jax/model/
splash.py) in place of the einsum attention. Until `model.attention="splash"` is wired into
transformer.py, that is done by swapping `transformer._attention` for the compile
(`plan.attention_override` with `plan.splash_or_einsum`; the row says "attention_wiring":
"patched"); once ModelConfig accepts "splash" the config field is used instead ("config").
--max-accum bounds the bisection (e.g. by the einsum row's count: splash never needs more);
--remat overrides the presets' model.remat; --loss-chunk sets train.loss_chunk (chunked loss).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Any

GIB = 2 ** 30
# slice -> (plan.topology, HBM GiB per chip)
SLICES = {"v5p-64": ("v5p:2x4x4", 95), "v5p-128": ("v5p:4x4x4", 95),
          "v5p-256": ("v5p:4x4x8", 95), "v5p-512": ("v5p:4x8x8", 95),
          "v6e-64": ("v6e:8x8", 32), "v6e-256": ("v6e:16x16", 32)}


def _needed(message: str) -> str:
  m = re.search(r"(?:required for HLO temporaries|hbm requirement) \(?([\d.]+[KMGT]?)", message,
                re.IGNORECASE)
  return m.group(1) if m else "?"


def _attention_setup(cfg: Any, attention: str) -> tuple[Any, Any, str]:
  """(model config, attention_fn for plan.plan, how the kernel got in) for one --attention."""
  from citrus_jax.train import plan
  if attention == "einsum":
    return cfg.replace(attention="einsum"), None, "config"
  if attention != "splash":
    raise SystemExit(f"--attention: unknown {attention!r}; known: einsum, splash")
  try:  # transformer.py wired: the config names the kernel
    return cfg.replace(attention="splash").validate(), None, "config"
  except ValueError:  # not yet: swap the attention call for this compile
    return cfg.replace(attention="einsum"), plan.splash_or_einsum, "patched"


def plan_one(preset: str, slice_name: str, grad_accum: int, devices: list[Any],
             attention: str = "einsum", remat: str = "", loss_chunk: int = 0) -> dict[str, Any]:
  from citrus_jax import runtime
  from citrus_jax.train import plan
  from configs import cpt
  config = cpt.get_config(preset)
  config.optim.grad_accum = grad_accum
  if remat:
    config.model.remat = remat
  config.train.loss_chunk = loss_chunk
  cfg, attention_fn, wiring = _attention_setup(runtime.model_config_from(config), attention)
  t0 = time.time()
  row = {"preset": preset, "slice": slice_name, "grad_accum": grad_accum,
         "seq_len": config.data.seq_len, "global_batch": config.data.global_batch_size,
         "remat": cfg.remat, "compute_dtype": cfg.compute_dtype, "attention": attention,
         "attention_wiring": wiring, "loss_chunk": loss_chunk}
  try:
    row.update(plan.plan(config, cfg, devices, attention_fn=attention_fn), fits=True)
  except Exception as e:  # pylint: disable=broad-except
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    row.update(fits=False, temp_needed=_needed(str(e)), n_devices=len(devices),
               error=str(e)[:400])
  row["compile_s"] = round(time.time() - t0, 1)
  return row


def fewest_microbatches(preset: str, slice_name: str, log=print, attention: str = "einsum",
                        max_accum: int = 0, remat: str = "", loss_chunk: int = 0
                        ) -> dict[str, Any]:
  """Bisection over grad_accum in 1, 2, 4, ... (1 sequence per data-parallel shard at most)."""
  from citrus_jax import sharding
  from citrus_jax.train import plan
  from configs import cpt
  config = cpt.get_config(preset)
  devices = plan.topology_devices(SLICES[slice_name][0])
  mesh_shape = sharding.infer_mesh_shape(config.mesh.shape, len(devices))
  per_shard = config.data.global_batch_size // (mesh_shape[0] * mesh_shape[1])
  options = [2 ** i for i in range(per_shard.bit_length()) if per_shard % 2 ** i == 0
             and (not max_accum or 2 ** i <= max_accum)]
  lo, hi, best, worst = 0, len(options) - 1, None, None
  while lo <= hi:
    mid = (lo + hi) // 2
    row = plan_one(preset, slice_name, options[mid], devices, attention, remat, loss_chunk)
    row.setdefault("mesh", dict(zip(sharding.MESH_AXES, mesh_shape)))
    log(json.dumps(row))
    if row["fits"]:
      best, hi = row, mid - 1
    else:
      worst, lo = row, mid + 1
  return best or worst


def _gib(size: str) -> str:
  """XLA's '36.97G' (binary units) -> '36.97 GiB'."""
  return f"{size[:-1]} {size[-1]}iB" if size[-1:] in "KMGT" and size[:-1] else size


def _kernel(r: dict[str, Any]) -> str:
  """The attention, remat and loss-chunk cells of a row (older rows: einsum, full logits)."""
  return (f"{r.get('attention', 'einsum')} | {r.get('remat', '?')} | "
          f"{r.get('loss_chunk', 0) or 'off'}")


def markdown(rows: list[dict[str, Any]]) -> str:
  out = ["| preset | attention | remat | loss chunk | slice (chips) | mesh (data, fsdp, tensor) "
         "| grad accum | seqs / shard / microbatch | params + opt state / chip | compiled peak / chip "
         "| HBM / chip | fits |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    hbm, mesh = SLICES[r["slice"]][1], r["mesh"]
    micro = r["global_batch"] // (mesh["data"] * mesh["fsdp"]) // r["grad_accum"]
    if r["fits"]:
      state = (r["params_bytes_per_device"] + r["opt_state_bytes_per_device"]) / GIB
      out.append(f"| {r['preset']} | {_kernel(r)} | {r['slice']} "
                 f"({r['n_devices']}) | "
                 f"({mesh['data']}, {mesh['fsdp']}, {mesh['tensor']}) | {r['grad_accum']} | "
                 f"{micro} | {state:.1f} GiB | {r['peak_bytes_per_device'] / GIB:.1f} GiB | "
                 f"{hbm} GiB | yes |")
    else:
      out.append(f"| {r['preset']} | {_kernel(r)} | {r['slice']} "
                 f"({r['n_devices']}) | "
                 f"({mesh['data']}, {mesh['fsdp']}, {mesh['tensor']}) | {r['grad_accum']} | "
                 f"{micro} | - | needs {_gib(r['temp_needed'])} of temporaries | {hbm} GiB | no |")
  return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--presets", default="llama3_1_8b,llama3_1_70b,qwen2_5_72b,qwen3_8b,qwen3_32b")
  p.add_argument("--slices", default=",".join(SLICES))
  p.add_argument("--attention", default="einsum", help="einsum, splash, or both: einsum,splash")
  p.add_argument("--max-accum", type=int, default=0,
                 help="largest grad_accum the bisection tries (0: up to 1 sequence per shard)")
  p.add_argument("--remat", default="", help="override the presets' model.remat (none, dots, full)")
  p.add_argument("--loss-chunk", type=int, default=0,
                 help="train.loss_chunk for the step (0: full [B, T, V] logits)")
  p.add_argument("--out", default="", help="also write the rows as JSON here (and resume)")
  a = p.parse_args(argv)
  rows = []
  if a.out and os.path.exists(a.out):  # resume: keep the rows already computed
    with open(a.out) as f:
      rows = json.load(f)
  done = {(r["preset"], r["slice"], r.get("attention", "einsum")) for r in rows}
  for preset in a.presets.split(","):
    for slice_name in a.slices.split(","):
      if slice_name not in SLICES:
        raise SystemExit(f"--slices: unknown {slice_name!r}; known: {sorted(SLICES)}")
      for attention in a.attention.split(","):
        if (preset, slice_name, attention) in done:
          continue
        rows.append(fewest_microbatches(preset, slice_name, log=lambda s: print(s, flush=True),
                                        attention=attention, max_accum=a.max_accum,
                                        remat=a.remat, loss_chunk=a.loss_chunk))
        if a.out:
          with open(a.out, "w") as f:
            json.dump(rows, f, indent=2)
  print(markdown(rows))
  return 0


if __name__ == "__main__":
  sys.exit(main())
