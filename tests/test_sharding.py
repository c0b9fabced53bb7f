"""Mesh construction and logical-axis rules."""
import jax
import pytest
from jax.sharding import PartitionSpec as P

from citrus_jax import sharding
from citrus_jax.model import config as mc, transformer


def test_mesh_shape_inference_and_errors():
  assert sharding.infer_mesh_shape((1, -1, 2), 8) == (1, 4, 2)
  assert sharding.infer_mesh_shape((2, 2, 2), 8) == (2, 2, 2)
  with pytest.raises(ValueError, match="does not divide"):
    sharding.infer_mesh_shape((3, -1, 1), 8)
  with pytest.raises(ValueError, match="at most one"):
    sharding.infer_mesh_shape((-1, -1, 1), 8)
  with pytest.raises(ValueError, match="uses 4 devices"):
    sharding.infer_mesh_shape((2, 2, 1), 8)
  mesh = sharding.make_mesh((2, -1, 2))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_rules_shard_divisible_dims_and_replicate_others():
  mesh = sharding.make_mesh((1, 4, 2))
  assert sharding.logical_to_spec(("embed", "mlp"), (64, 128), mesh) == P("fsdp", "tensor")
  # 6 is not divisible by fsdp=4: replicated rather than an error.
  assert sharding.logical_to_spec(("embed", "mlp"), (6, 128), mesh) == P(None, "tensor")
  # A mesh axis is used once per array.
  assert sharding.logical_to_spec(("mlp", "vocab"), (8, 8), mesh) == P("tensor", None)


def test_params_created_directly_sharded():
  mesh = sharding.make_mesh((1, 4, 2))
  cfg = mc.get_preset("tiny")
  shardings = sharding.param_shardings(cfg, mesh)
  params = jax.jit(lambda: transformer.init_params(cfg, jax.random.key(0)),
                   out_shardings=shardings)()
  wq = params["layers"]["wq"]
  assert wq.sharding.spec == P(None, "fsdp", "tensor")
  assert wq.addressable_shards[0].data.shape == (2, 64 // 4, 64 // 2)
  assert sharding.batch_sharding(mesh).spec == P(("data", "fsdp"), None)


def test_initialize_distributed_is_a_no_op_on_one_host(monkeypatch):
  for k in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(k, raising=False)
  assert sharding.initialize_distributed() is False
