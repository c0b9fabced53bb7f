"""Checkpoints: params saved on an 8-device fsdp mesh open in a process that has one device."""
import os
import subprocess
import sys

import jax
import numpy as np

from citrus_jax import sharding
from citrus_jax.model import config as mc
from citrus_jax.train import checkpoint, engine

CFG = mc.get_preset("tiny", vocab_size=64)

_LOAD = """
import sys, jax, numpy as np
from citrus_jax.train import checkpoint
assert jax.device_count() == 1, jax.devices()
for name in sys.argv[2:]:
  params = checkpoint.load_params(f"{sys.argv[1]}/{name}")
  leaves = jax.tree.leaves(params)
  assert all(x.sharding.device_set == {jax.devices()[0]} for x in leaves)
  np.savez(f"{sys.argv[1]}/{name}.npz", *[np.asarray(x) for x in leaves])
"""


def test_params_saved_on_8_devices_load_on_one(tmp_path):
  mesh = sharding.make_mesh((1, -1, 1))
  params = engine.random_init(CFG, 0)(sharding.param_shardings(CFG, mesh))
  assert len(params["embed"].sharding.device_set) == 8  # really spread over the 8 devices
  checkpoint.save_params(str(tmp_path / "export"), params, CFG)
  # A run directory with only a train-state checkpoint (params taken from its latest step).
  ckpt = checkpoint.Checkpointer(str(tmp_path / "run" / "checkpoints"), async_save=False)
  ckpt.save(3, {"params": params, "step": jax.numpy.int32(3)})
  ckpt.close()
  checkpoint.save_params(str(tmp_path / "cfg_only"), params, CFG)  # model_config.json for "run"
  os.replace(tmp_path / "cfg_only" / "model_config.json", tmp_path / "run" / "model_config.json")

  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}  # one CPU device
  out = subprocess.run([sys.executable, "-c", _LOAD, str(tmp_path), "export", "run"],
                       capture_output=True, text=True, timeout=240, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  want = [np.asarray(x) for x in jax.tree.leaves(params)]
  for name in ("export", "run"):
    got = np.load(tmp_path / f"{name}.npz")
    assert len(got.files) == len(want)
    for i, w in enumerate(want):
      np.testing.assert_array_equal(got[f"arr_{i}"], w)
