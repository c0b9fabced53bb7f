"""Device mesh, logical-axis rules and NamedShardings (jit + GSPMD, pjit style).

Parameters carry logical axis names (`transformer.logical_axes`); `RULES` maps each name to mesh
axes. A dimension that a mesh axis does not divide is replicated instead of failing, so one rule
set serves the tiny test model and a 70B model alike.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from citrus_jax.model import transformer

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (or tuple of axes, or None for replicated).
RULES: dict[str, Any] = {
    "batch": ("data", "fsdp"),
    "embed": "fsdp",
    "vocab": "tensor",
    "q_heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "layers": None,
    "norm": None,
    "length": None,
}


def infer_mesh_shape(shape: Sequence[int], n_devices: int) -> tuple[int, ...]:
  """Fills one -1 entry so the product equals the device count; explains any mismatch."""
  shape = [int(s) for s in shape]
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {tuple(shape)}: at most one axis may be -1")
  known = int(np.prod([s for s in shape if s != -1]))
  if known <= 0 or n_devices % known:
    raise ValueError(f"mesh shape {tuple(shape)} does not divide the {n_devices} devices")
  if -1 in shape:
    shape[shape.index(-1)] = n_devices // known
  if int(np.prod(shape)) != n_devices:
    raise ValueError(
        f"mesh shape {tuple(shape)} uses {int(np.prod(shape))} devices but {n_devices} exist")
  return tuple(shape)


def make_mesh(shape: Sequence[int] = (1, -1, 1), devices: Sequence[Any] | None = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh with classic Auto axis types (GSPMD propagation)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = infer_mesh_shape(shape, len(devices))
  try:
    grid = mesh_utils.create_device_mesh(shape, devices=devices)
  except Exception:  # simulated or irregular topologies: plain reshape is fine
    grid = np.asarray(devices).reshape(shape)
  auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  return Mesh(grid, MESH_AXES, axis_types=auto)


def _axis_size(mesh: Mesh, axis: Any) -> int:
  if axis is None:
    return 1
  axes = axis if isinstance(axis, tuple) else (axis,)
  return int(np.prod([mesh.shape[a] for a in axes]))


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules: dict[str, Any] | None = None) -> P:
  """PartitionSpec for one array; mesh axes are used at most once and only where they divide."""
  rules = RULES if rules is None else rules
  used: set[str] = set()
  spec = []
  for name, dim in zip(names, shape):
    axis = rules.get(name) if name is not None else None
    axes = axis if isinstance(axis, tuple) else ((axis,) if axis else ())
    axes = tuple(a for a in axes if a not in used and mesh.shape.get(a, 1) > 1)
    if axes and dim % _axis_size(mesh, axes) == 0:
      used.update(axes)
      spec.append(axes[0] if len(axes) == 1 else axes)
    else:
      spec.append(None)
  return P(*spec)


def tree_shardings(logical_tree: Any, shape_tree: Any, mesh: Mesh) -> Any:
  """NamedShardings for a pytree, given a matching tree of logical names and of shapes."""
  is_names = lambda x: isinstance(x, tuple) and all(isinstance(n, (str, type(None))) for n in x)
  return jax.tree.map(
      lambda names, arr: NamedSharding(mesh, logical_to_spec(names, arr.shape, mesh)),
      logical_tree, shape_tree, is_leaf=is_names)


def param_shardings(cfg: Any, mesh: Mesh) -> Any:
  """NamedShardings for the params of a `ModelConfig`."""
  shapes = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  return tree_shardings(transformer.logical_axes(cfg), shapes, mesh)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Batch arrays split on their leading axis over ('data', 'fsdp')."""
  return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_parallel_size(mesh: Mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]


def opt_state_shardings(opt_state_shapes: Any, params_shardings: Any, mesh: Mesh) -> Any:
  """Optimizer moments take their parameter's sharding; counts and scalars are replicated.

  optax states nest copies of the params tree (mu, nu, ...), so a state leaf whose key path
  ends with a parameter's key path (and has its shape rank) is that parameter's moment."""
  by_path = {jax.tree_util.keystr(path): s
             for path, s in jax.tree.leaves_with_path(params_shardings)}

  def pick(path: Any, x: Any) -> NamedSharding:
    key = jax.tree_util.keystr(path)
    for suffix, sharding in by_path.items():
      if key.endswith(suffix) and len(sharding.spec) <= len(getattr(x, "shape", ())):
        return sharding
    return replicated(mesh)

  return jax.tree.map_with_path(pick, opt_state_shapes)


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
  """`jax.distributed.initialize` when several hosts take part; a no-op on one host.

  Under SLURM (srun with several tasks) and on GKE JAX auto-detects everything. On Cloud TPU VMs
  pass num_processes (the slice's host count; launch/tpu_pod.py does) and JAX reads the rest
  from the TPU metadata. Elsewhere pass the three values (or set JAX_COORDINATOR_ADDRESS /
  JAX_NUM_PROCESSES / JAX_PROCESS_ID). On CPU, processes talk through gloo (jax's default).
  Returns True if initialized.
  """
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  num_processes = num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "0") or 0) or None
  if process_id is None and os.environ.get("JAX_PROCESS_ID"):
    process_id = int(os.environ["JAX_PROCESS_ID"])
  # What jax's SLURM detection needs (srun sets SLURM_STEP_NODELIST; a bare sbatch shell does
  # not), or a GKE TPU pod.
  slurm = "SLURM_STEP_NODELIST" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1
  on_cluster = slurm or "TPU_WORKER_HOSTNAMES" in os.environ
  if num_processes == 1 or not (coordinator_address or on_cluster or (num_processes or 0) > 1):
    return False
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  return True
