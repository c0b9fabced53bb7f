"""Training engine: loss decreases, mesh invariance, grad accumulation, exact resume, NaN stop."""
import json
import os

import grain
import jax
import ml_collections
import numpy as np
import pytest

from citrus_jax import sharding
from citrus_jax.model import config as mc
from citrus_jax.train import checkpoint, engine, losses, metrics_log
from configs import base
from helpers import tensorboard_scalars

CFG = mc.get_preset("tiny", vocab_size=64)
SEQ, BATCH = 32, 8


def _batches(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
  """Learnable rows: each row counts up by a row-specific stride (mod vocab)."""
  rng = np.random.RandomState(seed)
  out = []
  for _ in range(n):
    start = rng.randint(0, 64, size=(BATCH, 1))
    stride = rng.randint(1, 4, size=(BATCH, 1))
    row = (start + stride * np.arange(SEQ + 1)) % 64
    seg = np.ones((BATCH, SEQ), np.int32)
    seg[:, -3:] = 0  # some padding
    out.append({"inputs": row[:, :-1].astype(np.int32), "targets": row[:, 1:].astype(np.int32),
                "positions": np.tile(np.arange(SEQ, dtype=np.int32), (BATCH, 1)),
                "segment_ids": seg, "loss_mask": (seg > 0).astype(np.float32)})
  return out


def _iter(batches):
  return iter(grain.MapDataset.source(batches).to_iter_dataset())


def _config(num_steps: int, **optim) -> ml_collections.ConfigDict:
  c = base.get_config()
  c.optim.lr = 3e-3
  c.optim.warmup_steps = 2
  c.optim.update(optim)
  c.train.num_steps = num_steps
  c.train.log_every = 1
  c.checkpoint.every = 2
  c.progress = False
  return c


def _stage(batches, num_steps, cfg=CFG):
  return engine.Stage(name="test", loss_fn=losses.lm_loss_fn(cfg), train_iter=_iter(batches),
                      num_steps=num_steps, init_params=engine.random_init(cfg, 0))


def _losses(workdir):
  rows = metrics_log.read_metrics(os.path.join(workdir, "metrics.jsonl"), "train/")
  return [rows[s]["train/loss"] for s in sorted(rows)]


def test_loss_goes_down(tmp_path):
  mesh = sharding.make_mesh((1, -1, 1))
  data = _batches(40)
  result = engine.train(_config(40, lr=1e-2), CFG, _stage(data, 40), mesh, str(tmp_path))
  curve = _losses(str(tmp_path))
  assert len(curve) == 40 and result.step == 40
  assert np.mean(curve[-5:]) < 0.5 * np.mean(curve[:3]), curve
  # The params-only export the next stage starts from exists and holds the final params.
  loaded = checkpoint.load_params(str(tmp_path))
  np.testing.assert_array_equal(np.asarray(loaded["embed"]), np.asarray(result.params["embed"]))
  assert (tmp_path / "tensorboard").exists()


def _one_step_metrics(mesh_shape, devices, tmp_path, grad_accum=1):
  mesh = sharding.make_mesh(mesh_shape, devices=devices)
  config = _config(1, grad_accum=grad_accum)
  config.checkpoint.async_save = False
  engine.train(config, CFG, _stage(_batches(1), 1), mesh, str(tmp_path))
  rows = metrics_log.read_metrics(os.path.join(str(tmp_path), "metrics.jsonl"), "train/")
  return rows[1]


def test_mesh_invariance_and_grad_accumulation(tmp_path):
  ref = _one_step_metrics((1, 1, 1), jax.devices()[:1], tmp_path / "one")
  for name, shape in [("fsdp8", (1, 8, 1)), ("dp2fsdp2tp2", (2, 2, 2))]:
    got = _one_step_metrics(shape, jax.devices(), tmp_path / name)
    for key in ("train/loss", "train/grad_norm"):
      assert got[key] == pytest.approx(ref[key], rel=1e-5), (name, key)
  accum = _one_step_metrics((1, 1, 1), jax.devices()[:1], tmp_path / "accum", grad_accum=4)
  for key in ("train/loss", "train/grad_norm"):
    assert accum[key] == pytest.approx(ref[key], rel=1e-5), ("grad_accum", key)


def test_exact_resume_in_process(tmp_path):
  mesh = sharding.make_mesh((1, -1, 1))
  data = _batches(8, seed=3)
  full = engine.train(_config(8), CFG, _stage(data, 8), mesh, str(tmp_path / "full"))
  # The first run's data ends after 4 steps (same schedule: num_steps=8); a fresh stage then
  # resumes state and data position from the same workdir.
  part_dir = str(tmp_path / "part")
  first = engine.train(_config(8), CFG, _stage(data[:4], 8), mesh, part_dir)
  assert first.step == 4 and first.stopped_early == "data exhausted"
  resumed = engine.train(_config(8), CFG, _stage(data, 8), mesh, part_dir)
  assert resumed.step == 8
  np.testing.assert_allclose(_losses(part_dir), _losses(str(tmp_path / "full")), rtol=0, atol=0)
  for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_non_finite_step_is_skipped_exactly(tmp_path):
  """A NaN batch at step 5 is skipped inside the step: the run goes on, and its final params
  equal a run that never saw that batch (params, optimizer state and schedule step untouched)."""
  mesh = sharding.make_mesh((1, -1, 1))
  data = _batches(6)
  data[4]["loss_mask"] = data[4]["loss_mask"] * np.float32(np.nan)
  skipped = engine.train(_config(6), CFG, _stage(data, 6), mesh, str(tmp_path / "skip"))
  rows = metrics_log.read_metrics(str(tmp_path / "skip" / "metrics.jsonl"), "train/")
  assert skipped.step == 6 and [rows[s]["train/skipped"] for s in range(1, 7)] == [0, 0, 0, 0, 1, 0]
  without = engine.train(_config(6), CFG, _stage(data[:4] + data[5:], 6), mesh,
                         str(tmp_path / "without"))
  assert without.step == 5 and without.stopped_early == "data exhausted"
  for a, b in zip(jax.tree.leaves(skipped.params), jax.tree.leaves(without.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_non_finite_streak_stops_and_keeps_last_good_checkpoint(tmp_path):
  mesh = sharding.make_mesh((1, -1, 1))
  data = _batches(6)
  data[4]["loss_mask"] = data[4]["loss_mask"] * np.float32(np.nan)
  config = _config(6)
  config.train.max_skipped_steps = 1  # stop at the first non-finite step
  with pytest.raises(engine.TrainingDivergedError,
                     match=r"steps \(5\.\.5\).*step 4 in .*Lower optim.lr"):
    engine.train(config, CFG, _stage(data, 6), mesh, str(tmp_path))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
  assert ckpt.latest_step() == 4
  ckpt.close()
  assert not (tmp_path / "params").exists()


def test_resolved_config_and_tensorboard_records(tmp_path):
  from citrus_jax import runtime
  config = _config(3)
  path = runtime.save_resolved_config(config, str(tmp_path))
  assert json.load(open(path))["train"]["num_steps"] == 3
  logger = metrics_log.MetricsLogger(str(tmp_path))
  logger.write(7, {"loss": 1.5})
  logger.close()
  assert tensorboard_scalars(str(tmp_path)) == [(7, "loss", 1.5)]


def test_sigterm_stops_after_the_step_whose_batch_was_read(tmp_path):
  """SIGTERM while batch 3 is being read: step 3 still runs on it, then the state AND the data
  position (3 batches) are saved together and training stops cleanly."""
  import signal

  def batches():
    for i, b in enumerate(_batches(6)):
      if i == 2:
        os.kill(os.getpid(), signal.SIGTERM)
      yield b
  stage = engine.Stage(name="test", loss_fn=losses.lm_loss_fn(CFG), train_iter=batches(),
                       num_steps=6, init_params=engine.random_init(CFG, 0))
  config = _config(6)
  config.checkpoint.every = 100
  before = signal.getsignal(signal.SIGTERM)
  result = engine.train(config, CFG, stage, sharding.make_mesh((1, -1, 1)), str(tmp_path))
  assert result.step == 3 and result.stopped_early.startswith("preempted")
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
  assert ckpt.latest_step() == 3
  ckpt.close()
  assert sorted(metrics_log.read_metrics(os.path.join(tmp_path, "metrics.jsonl"))) == [1, 2, 3]
  assert signal.getsignal(signal.SIGTERM) == before  # the engine's handler was removed


def test_async_host_loop_logs_what_the_per_step_loop_logs(tmp_path, monkeypatch):
  """The asynchronous loop reads device metrics only at log/save points (here every 5 steps)
  and still logs every step, with the same values as reading them after each step."""
  mesh = sharding.make_mesh((1, -1, 1))
  data = _batches(10)
  reads = []
  real_get = jax.device_get

  def counting_get(x):
    reads.append(1)
    return real_get(x)

  logged = {}
  for async_host in (False, True):
    config = _config(10)
    config.train.log_every = 5
    config.checkpoint.every = 5
    config.train.async_host = async_host
    reads.clear()
    monkeypatch.setattr(engine.jax, "device_get", counting_get)
    engine.train(config, CFG, _stage(data, 10), mesh, str(tmp_path / str(async_host)))
    monkeypatch.setattr(engine.jax, "device_get", real_get)
    rows = metrics_log.read_metrics(str(tmp_path / str(async_host) / "metrics.jsonl"), "train/")
    logged[async_host] = {s: {k: v for k, v in r.items() if k != "train/tokens_per_sec"}
                          for s, r in rows.items()}
    assert sorted(rows) == list(range(1, 11))
    # Async: at the save Orbax makes at the first step, and at steps 5 and 10 (log + save).
    assert len(reads) == (3 if async_host else 10), reads
  assert logged[True] == logged[False]
