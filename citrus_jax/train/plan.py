"""Plan mode: will this model and batch fit, per device, before paying for the hardware?

The train step is lowered and compiled on abstract inputs (nothing is allocated) for the local
devices, or ahead-of-time for a TPU topology such as `v5p:4x4x8` when libtpu is installed; the
compiled executable's memory analysis gives per-device bytes.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from citrus_jax import sharding
from citrus_jax.model import transformer
from citrus_jax.model.config import ModelConfig
from citrus_jax.train import losses, optim
from citrus_jax.train.step import init_state, make_train_step, state_shardings

GIB = 2 ** 30

# name -> (platform topology name, chip_config_name, chips_per_host_bounds); see ENVIRONMENT notes.
_TPU_KINDS = {"v5p": ("v5", "megacore", (2, 2, 1)), "v4": ("v4", "megacore", (2, 2, 1)),
              "v6e": ("v6e", "default", (2, 2, 1)), "v5e": ("v5e", "default", (2, 2, 1))}


def topology_devices(topology: str) -> list[Any]:
  """Devices of a TPU slice described as '<kind>:<AxBxC>' (AOT compile from a CPU host)."""
  kind, _, shape = topology.partition(":")
  if kind not in _TPU_KINDS or not shape:
    raise ValueError(f"plan.topology={topology!r}: expected e.g. 'v5p:4x4x8' with kind in "
                     f"{sorted(_TPU_KINDS)}")
  from jax.experimental import topologies
  name, chip_config, host_bounds = _TPU_KINDS[kind]
  try:  # 2-D slices (v5e, v6e: '8x8') take the same 3-D host bounds and wrap
    topo = topologies.get_topology_desc(
        platform="tpu", topology_name=f"{name}:{shape}", chip_config_name=chip_config,
        chips_per_host_bounds=host_bounds, num_slices=1, wrap=(False, False, False))
  except Exception as e:  # libtpu missing or unknown shape
    raise RuntimeError(f"plan.topology={topology!r}: no TPU topology (AOT compile needs libtpu: "
                       f"pip install 'jax[tpu]'): {e}") from e
  return list(topo.devices)


def plan(config: Any, model_cfg: ModelConfig, devices: list[Any] | None = None) -> dict[str, Any]:
  """Per-device bytes of params, optimizer state and step temporaries from the compiled step."""
  devices = devices or list(jax.devices())
  mesh = sharding.make_mesh(tuple(config.mesh.shape), devices=devices)
  optimizer, _ = optim.make_optimizer(config.optim, max(config.train.num_steps, 1))
  abstract_params = jax.eval_shape(lambda: transformer.init_params(model_cfg, jax.random.key(0)))
  abstract_state = jax.eval_shape(lambda p: init_state(p, optimizer, 0), abstract_params)
  param_sh = sharding.param_shardings(model_cfg, mesh)
  state_sh = state_shardings(abstract_state, param_sh, mesh)
  batch = config.plan.get("batch_size", 0) or config.data.global_batch_size
  seq = config.data.seq_len
  batch_shapes = {k: jax.ShapeDtypeStruct((batch, seq), jnp.float32 if k == "loss_mask"
                                          else jnp.int32, sharding=sharding.batch_sharding(mesh))
                  for k in ("inputs", "targets", "positions", "segment_ids", "loss_mask")}
  step = make_train_step(losses.lm_loss_fn(model_cfg), optimizer,
                         grad_accum=config.optim.get("grad_accum", 1))
  state_shapes = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                              abstract_state, state_sh)
  with jax.set_mesh(mesh):  # activates the model's sharding constraints, as in training
    compiled = jax.jit(step, in_shardings=(state_sh, None), out_shardings=(state_sh, None),
                       donate_argnums=0).lower(state_shapes, batch_shapes).compile()
  mem = compiled.memory_analysis()

  def per_device(tree: Any, shardings: Any) -> int:
    total = 0
    for a, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
      shard = s.shard_shape(a.shape)
      total += int(np.prod(shard)) * jnp.dtype(a.dtype).itemsize
    return total

  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_params))
  out = {
      "n_params": n_params,
      "n_devices": len(devices),
      "device_kind": getattr(devices[0], "device_kind", "?"),
      "mesh": dict(mesh.shape),
      "params_bytes_per_device": per_device(abstract_params, param_sh),
      "opt_state_bytes_per_device": per_device(abstract_state.opt_state, state_sh.opt_state),
  }
  if mem is not None:
    out.update(argument_bytes=int(mem.argument_size_in_bytes),
               output_bytes=int(mem.output_size_in_bytes),
               temp_bytes=int(mem.temp_size_in_bytes),
               # The compiler's own peak (live buffers at the worst point); arguments + temps
               # overstates it by up to ~30% on TPU. Older jaxlibs lack the field.
               peak_bytes_per_device=int(getattr(mem, "peak_memory_in_bytes", 0)
                                         or mem.argument_size_in_bytes + mem.temp_size_in_bytes))
  return out


def format_plan(p: dict[str, Any], hbm_bytes: float | None = None) -> str:
  lines = [f"parameters            {p['n_params']:,}",
           f"devices               {p['n_devices']} x {p['device_kind']}  mesh {p['mesh']}",
           f"params / device       {p['params_bytes_per_device'] / GIB:.3f} GiB",
           f"opt state / device    {p['opt_state_bytes_per_device'] / GIB:.3f} GiB"]
  if "temp_bytes" in p:
    lines += [f"step temporaries      {p['temp_bytes'] / GIB:.3f} GiB",
              f"peak / device         {p['peak_bytes_per_device'] / GIB:.3f} GiB"]
    if hbm_bytes:
      fits = p["peak_bytes_per_device"] <= hbm_bytes
      lines.append(f"fits in {hbm_bytes / GIB:.0f} GiB HBM   {'yes' if fits else 'NO'}")
  return "\n".join(lines)
