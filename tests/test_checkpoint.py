"""Checkpoints: params saved on 8 devices open on one; resume falls back past bad checkpoints."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

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


def _small_run(directory, steps=(1, 2, 3)):
  ckpt = checkpoint.Checkpointer(str(directory), every=1, keep=5, async_save=False)
  for s in steps:
    ckpt.save(s, {"w": jax.numpy.full((4, 4), float(s)), "step": jax.numpy.int32(s)})
  return ckpt


LIKE = {"w": jax.ShapeDtypeStruct((4, 4), np.float32), "step": jax.ShapeDtypeStruct((), np.int32)}


def test_restore_latest_falls_back_past_unreadable_and_non_finite_checkpoints(tmp_path, caplog):
  """Step 3's metadata is corrupt and step 2 fails verification: step 1 is restored, 3 and 2 are
  moved to checkpoints.bad/ with a warning each, and the next save of step 2 is not refused."""
  import logging
  ckpt = _small_run(tmp_path / "checkpoints")
  ckpt.close()
  (tmp_path / "checkpoints" / "3" / "state" / "_METADATA").write_text('{"tree_metadata": ')
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), every=1, async_save=False)
  with caplog.at_level(logging.WARNING):
    step, state = ckpt.restore_latest(LIKE, verify=lambda s: float(s["w"][0, 0]) != 2.0)
  assert step == 1 and float(state["w"][0, 0]) == 1.0
  messages = [r.getMessage() for r in caplog.records]
  assert any("checkpoint step 3 is unusable: it could not be read" in m for m in messages)
  assert any("checkpoint step 2 is unusable: it holds non-finite values" in m for m in messages)
  assert sorted(os.listdir(tmp_path / "checkpoints.bad")) == ["2", "3"]
  assert ckpt.all_steps() == [1] and ckpt.should_save(2)
  assert ckpt.save(2, {"w": jax.numpy.zeros((4, 4)), "step": jax.numpy.int32(2)})
  ckpt.close()


def test_restore_latest_with_nothing_usable_says_so(tmp_path):
  assert checkpoint.Checkpointer(str(tmp_path / "empty")).restore_latest(LIKE) == (None, None)
  ckpt = _small_run(tmp_path / "checkpoints", steps=(1,))
  with pytest.raises(checkpoint.NoUsableCheckpointError, match=r"steps \[1\] were unusable"):
    ckpt.restore_latest(LIKE, verify=lambda s: False)
  ckpt.close()


def test_check_writable_names_the_path(tmp_path):
  checkpoint.check_writable(str(tmp_path / "new" / "dir"))  # creates it
  assert (tmp_path / "new" / "dir").is_dir() and not os.listdir(tmp_path / "new" / "dir")
  (tmp_path / "file").write_text("x")
  with pytest.raises(checkpoint.NotWritableError, match=f"{tmp_path}/file/run is not writable"):
    checkpoint.check_writable(str(tmp_path / "file" / "run"))
