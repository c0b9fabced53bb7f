"""Plan mode: will this model and batch fit, per device, before paying for the hardware?

The train step is lowered and compiled on abstract inputs (nothing is allocated) for the local
devices, or ahead-of-time for a TPU topology such as `v5p:4x4x8` when libtpu is installed; the
compiled executable's memory analysis gives per-device bytes.
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from citrus_jax import sharding
from citrus_jax.model import splash, transformer
from citrus_jax.model.config import ModelConfig
from citrus_jax.train import losses, optim
from citrus_jax.train.step import init_state, make_train_step, state_shardings

GIB = 2 ** 30

# name -> (platform topology name, chip_config_name, chips_per_host_bounds); see ENVIRONMENT notes.
_TPU_KINDS = {"v5p": ("v5", "megacore", (2, 2, 1)), "v4": ("v4", "megacore", (2, 2, 1)),
              "v6e": ("v6e", "default", (2, 2, 1)), "v5e": ("v5e", "default", (2, 2, 1))}


# HBM per chip (GiB) of each kind, for the "needs X of Y" line when XLA's message lacks Y.
_HBM_GIB = {"v5p": 95, "v4": 32, "v6e": 32, "v5e": 16}


class PlanError(RuntimeError):
  """Plan mode could not answer (no libtpu, the step does not fit): `field` and the fix."""

  def __init__(self, field: str, why: str):
    super().__init__(f"{field}: {why}")
    self.field, self.why = field, why


def parse_topology(topology: str) -> tuple[str, str]:
  """'v5p:4x4x8' -> ('v5p', '4x4x8'); a ValueError names the accepted forms."""
  kind, _, shape = str(topology).partition(":")
  dims = shape.split("x")
  if kind not in _TPU_KINDS or len(dims) not in (2, 3) or not all(d.isdigit() and int(d) > 0
                                                                  for d in dims):
    raise ValueError(f"{topology!r} is not a TPU slice: expected '<kind>:<AxBxC>' (or AxB) with "
                     f"kind in {sorted(_TPU_KINDS)}, e.g. 'v5p:4x4x8'")
  return kind, shape


def topology_devices(topology: str) -> list[Any]:
  """Devices of a TPU slice described as '<kind>:<AxBxC>' (AOT compile from a CPU host)."""
  try:
    kind, shape = parse_topology(topology)
  except ValueError as e:
    raise PlanError("config.plan.topology", str(e)) from None
  from jax.experimental import topologies  # TPU-only AOT bits: loaded only for a --plan.topology
  name, chip_config, host_bounds = _TPU_KINDS[kind]
  try:  # 2-D slices (v5e, v6e: '8x8') take the same 3-D host bounds and wrap
    topo = topologies.get_topology_desc(
        platform="tpu", topology_name=f"{name}:{shape}", chip_config_name=chip_config,
        chips_per_host_bounds=host_bounds, num_slices=1, wrap=(False, False, False))
  except Exception as e:  # libtpu missing or unknown shape
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise PlanError("config.plan.topology", (
        f"no devices for {topology!r}: an ahead-of-time compile for a TPU slice needs libtpu "
        f"(pip install 'jax[tpu]' or libtpu for jax {jax.__version__}); without "
        f"config.plan.topology, plan mode compiles for the local devices. XLA said: {first}"
    )) from None
  return list(topo.devices)


_SIZE = r"\(?([\d.]+)\s*([KMGTP]?)i?B?\)?"
# XLA's phrasings of a step that does not fit -> (needed, available); the memory space if named.
_NEEDED = (re.compile(rf"required for HLO temporaries {_SIZE}", re.I),  # libtpu 0.0.4x compile
           re.compile(rf"Used {_SIZE} of", re.I),  # older libtpu compile
           re.compile(rf"hbm requirement {_SIZE}", re.I),
           re.compile(r"allocate (\d+)()\s*bytes", re.I))  # GPU/CPU runtime allocation
_AVAILABLE = (re.compile(rf"exceeds available (\w+) {_SIZE}", re.I),
              re.compile(rf"Used {_SIZE} of {_SIZE} (\w+)", re.I))


def _bytes(number: str, unit: str = "") -> float:
  return float(number) * 1024 ** "_KMGTP".index(unit.upper() or "_")


def _gib(n: float) -> str:
  return f"{n / GIB:.2f} GiB"


def _available_bytes(devices: list[Any], config: Any) -> float | None:
  kind = str(config.plan.get("topology", "")).partition(":")[0]
  if kind in _HBM_GIB:
    return _HBM_GIB[kind] * GIB
  try:
    return float(devices[0].memory_stats()["bytes_limit"])
  except Exception:  # pylint: disable=broad-except  # CPU devices and AOT devices have none
    return None


def _sizes(text: str) -> tuple[float | None, float | None, str]:
  needed = available = None
  space = "device memory"
  for pattern in _NEEDED:
    m = pattern.search(text)
    if m:
      needed = _bytes(*m.groups()[:2])
      break
  m = _AVAILABLE[0].search(text)
  if m:
    space, available = m.group(1), _bytes(m.group(2), m.group(3))
  else:
    m = _AVAILABLE[1].search(text)
    if m:
      available, space = _bytes(m.group(3), m.group(4)), m.group(5)
  return needed, available, space


def out_of_memory(error: Exception, config: Any, devices: list[Any]) -> PlanError | None:
  """RESOURCE_EXHAUSTED from the compiler -> bytes needed vs available and what to change;
  None for any other error."""
  text = str(error)
  if "RESOURCE_EXHAUSTED" not in text and "out of memory" not in text.lower():
    return None
  needed, available, space = _sizes(text)
  if available is None:
    available = _available_bytes(devices, config)
  batch = config.plan.get("batch_size", 0) or config.data.global_batch_size
  accum = int(config.optim.get("grad_accum", 1))
  try:
    shape = sharding.infer_mesh_shape(config.mesh.shape, len(devices))
  except ValueError:
    shape = tuple(config.mesh.shape)
  per_shard = max(batch // max(shape[0] * shape[1], 1), 1)
  size = (f"needs {_gib(needed)} of {space} per device" if needed is not None else
          f"does not fit in {space}")
  if available is not None:
    size += f", {_gib(available)} available"
  fixes = [f"more chips (now {len(devices)}: a larger config.plan.topology, or mesh)"]
  remat = config.model.get("remat", "none")
  if remat != "full":
    fixes.append(f"config.model.remat=full (now {remat!r}: recompute activations in the "
                 "backward pass)")
  # Step temporaries shrink about in proportion to the microbatch: the smallest power-of-two
  # accumulation that divides the per-shard batch and covers needed / available.
  ratio = needed / available if needed and available else 2.0
  options = [k for k in (2 ** i for i in range(1, 16))
             if per_shard % (accum * k) == 0 and accum * k <= per_shard]
  enough = [k for k in options if k >= ratio]
  if options:
    k = enough[0] if enough else options[-1]
    fixes.append(f"config.optim.grad_accum={accum * k} (now {accum}: {per_shard // accum} "
                 f"sequences per device per microbatch -> {per_shard // (accum * k)})")
  fixes.append(f"a smaller batch (config.data.global_batch_size={batch}, "
               f"{per_shard} per data-parallel shard) or config.data.seq_len "
               f"(now {config.data.seq_len})")
  return PlanError("memory", f"the train step {size} (mesh {tuple(shape)}, batch {batch}, "
                             f"seq_len {config.data.seq_len}, grad_accum {accum}). "
                             f"Fixes: " + "; ".join(fixes) + ".")


def checked_plan(config: Any, model_cfg: ModelConfig, devices: list[Any] | None = None
                 ) -> dict[str, Any]:
  """`plan`, with a step that does not fit turned into a PlanError that says what to change
  (launch/plan_table.py calls `plan` itself and records the raw RESOURCE_EXHAUSTED)."""
  devices = devices or list(jax.devices())
  try:
    return plan(config, model_cfg, devices)
  except Exception as e:  # pylint: disable=broad-except  # XlaRuntimeError / JaxRuntimeError
    err = out_of_memory(e, config, devices)
    if err is None:
      raise
    raise err from None


@contextlib.contextmanager
def attention_override(fn: Callable | None) -> Iterator[None]:
  """Compile with `fn(q, k, v, mask_BTS, cfg)` in place of `transformer._attention` (None: as
  is). For plan-mode rows of a kernel the model config cannot name yet (splash before
  `model.attention='splash'` is wired into transformer.py): the layer looks `_attention` up at
  trace time, so the patched step is the real step with only the attention call swapped."""
  if fn is None:
    yield
    return
  original = transformer._attention
  transformer._attention = fn
  try:
    yield
  finally:
    transformer._attention = original


def splash_or_einsum(q, k, v, mask_BTS, cfg):
  """Splash for self-attention the kernel supports (T == S, T % 128 == 0), else the einsum path
  (what `attention="splash"` is meant to do once wired in transformer.py)."""
  if splash.supported(q.shape[1], k.shape[1]):
    return splash.attention_from_mask(q, k, v, mask_BTS, cfg)
  return _ORIGINAL_ATTENTION(q, k, v, mask_BTS, cfg)


_ORIGINAL_ATTENTION = transformer._attention


def plan(config: Any, model_cfg: ModelConfig, devices: list[Any] | None = None, *,
         attention_fn: Callable | None = None) -> dict[str, Any]:
  """Per-device bytes of params, optimizer state and step temporaries from the compiled step.

  `attention_fn` replaces the model's attention call for this compile (`attention_override`)."""
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
  step = make_train_step(losses.lm_loss_fn(model_cfg, loss_chunk=config.train.get("loss_chunk", 0)),
                         optimizer, grad_accum=config.optim.get("grad_accum", 1))
  state_shapes = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                              abstract_state, state_sh)
  with jax.set_mesh(mesh), attention_override(attention_fn):  # mesh: the model's constraints
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
