"""Faults a long run meets: a diverging lr, kill -9 during an async save, a corrupted latest
checkpoint, an unwritable run directory. Each must end cleanly or be recovered from exactly.

A crash right after a completed save (kill_after_step) is covered by
tests/test_cpt.py::test_cpt_crash_and_exact_resume; here the kill lands while a save is in
flight."""
import glob
import json
import logging
import os
import pathlib
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from citrus_jax import sharding, tokenizer
from citrus_jax.model import config as mc
from citrus_jax.train import checkpoint, engine, losses, metrics_log

from configs import base
from helpers import write_word_corpus

ROOT = pathlib.Path(__file__).resolve().parent.parent
CFG = mc.get_preset("tiny", vocab_size=64)
SEQ, BATCH = 32, 8
WORDS = "fever cough chest pain dyspnea troponin ecg asthma wheeze insulin glucose sepsis".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  d = tmp_path_factory.mktemp("faults")
  write_word_corpus(d, WORDS, 200)
  return d, tokenizer.train_sentencepiece([str(d / "corpus.txt")], str(d / "sp"), 320)


def _batches(n: int) -> list[dict[str, np.ndarray]]:
  """Learnable rows (each counts up by a row-specific stride), as in tests/test_engine.py."""
  rng = np.random.RandomState(0)
  out = []
  for _ in range(n):
    row = (rng.randint(0, 64, size=(BATCH, 1)) + rng.randint(1, 4, size=(BATCH, 1))
           * np.arange(SEQ + 1)) % 64
    seg = np.ones((BATCH, SEQ), np.int32)
    out.append({"inputs": row[:, :-1].astype(np.int32), "targets": row[:, 1:].astype(np.int32),
                "positions": np.tile(np.arange(SEQ, dtype=np.int32), (BATCH, 1)),
                "segment_ids": seg, "loss_mask": seg.astype(np.float32)})
  return out


def _config(num_steps: int):
  c = base.get_config()
  c.optim.lr, c.optim.warmup_steps = 3e-3, 2
  c.train.num_steps, c.train.log_every = num_steps, 1
  c.checkpoint.every, c.progress, c.tensorboard = 2, False, False
  return c


def _stage(batches, num_steps):
  import grain
  return engine.Stage(name="faults", loss_fn=losses.lm_loss_fn(CFG),
                      train_iter=iter(grain.MapDataset.source(batches).to_iter_dataset()),
                      num_steps=num_steps, init_params=engine.random_init(CFG, 0))


def _losses(workdir):
  rows = metrics_log.read_metrics(os.path.join(workdir, "metrics.jsonl"), "train/")
  return [rows[s]["train/loss"] for s in sorted(rows)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted 6-step run that the recovered runs must match exactly."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  result = engine.train(_config(6), CFG, _stage(_batches(6), 6), sharding.make_mesh((1, -1, 1)),
                        workdir)
  return _losses(workdir), [np.asarray(x) for x in jax.tree.leaves(result.params)]


def _assert_matches(reference, workdir, result):
  assert result.step == 6
  assert _losses(workdir) == reference[0]
  for a, b in zip(reference[1], jax.tree.leaves(result.params)):
    np.testing.assert_array_equal(a, np.asarray(b))


def _cli(workdir, corpus, *extra):
  corpus_dir, model = corpus
  cmd = [sys.executable, "-m", "citrus_jax.main", "--config=configs/cpt.py:tiny",
         f"--config.workdir={workdir}", f"--config.tokenizer.path={model}",
         f"--config.data.train_paths={corpus_dir / 'corpus.jsonl'}", "--config.progress=False",
         "--config.train.num_steps=6", "--config.checkpoint.every=1", *extra]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def _steps(checkpoints_dir):
  ckpt = checkpoint.Checkpointer(str(checkpoints_dir))
  steps = ckpt.all_steps()
  ckpt.close()
  return steps


def _checkpoint_params(workdir, step):
  """Params of checkpoint `step`, read straight from its state."""
  import orbax.checkpoint as ocp
  return ocp.StandardCheckpointer().restore(
      os.path.join(workdir, "checkpoints", str(step), "state"))["params"]


def test_huge_lr_is_skipped_stops_cleanly_and_resumes_at_a_sane_lr(tmp_path, corpus):
  """lr=1e38 used to give a finite loss, NaN gradients and NaN checkpoints called "the last
  good checkpoint"; resuming at a sane lr then failed too. Now every such step is skipped,
  every checkpoint is finite, the run stops with the step and the remedy (exit 3, no
  traceback), and rerunning with a sane lr resumes and trains."""
  run = tmp_path / "run"
  out = _cli(run, corpus, "--config.optim.lr=1e38", "--config.optim.warmup_frac=0",
             "--config.train.max_skipped_steps=3")
  assert out.returncode == 3, out.stderr[-3000:]
  assert "Traceback" not in out.stderr
  assert "training diverged: 3 consecutive steps (1..3)" in out.stderr, out.stderr[-2000:]
  assert "Lower optim.lr (now 1e+38)" in out.stderr
  steps = _steps(run / "checkpoints")
  assert steps == [1, 2], steps  # step 3 hit the limit before its save
  assert f"last good checkpoint (verified finite) is step 2 in {run}/checkpoints" in out.stderr
  for step in steps:
    for leaf in jax.tree.leaves(_checkpoint_params(str(run), step)):
      assert np.isfinite(np.asarray(leaf)).all(), step
  rows = metrics_log.read_metrics(str(run / "metrics.jsonl"), "train/")
  assert [rows[s]["train/skipped"] for s in (1, 2, 3)] == [1.0, 1.0, 1.0]
  assert not (run / "params").exists()

  out = _cli(run, corpus, "--config.optim.lr=1e-3")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "resumed from step 2" in out.stdout
  rows = metrics_log.read_metrics(str(run / "metrics.jsonl"), "train/")
  assert [rows[s]["train/skipped"] for s in (3, 4, 5, 6)] == [0.0] * 4
  assert rows[6]["train/loss"] < rows[3]["train/loss"]
  for leaf in jax.tree.leaves(checkpoint.load_params(str(run))):
    assert np.isfinite(np.asarray(leaf)).all()


def test_unwritable_workdir_is_a_clean_error_within_seconds(tmp_path, corpus):
  """A run directory that cannot be written fails before training, naming the path; an async
  Orbax save into it used to hang ~5 minutes, then raise TimeoutError. Running as root makes
  chmod ineffective, so the case every user can hit is a file where a directory must be."""
  blocker = tmp_path / "blocker"
  blocker.write_text("a file, not a directory")
  cases = [blocker / "run"]
  if os.geteuid() != 0:
    ro = tmp_path / "read_only"
    ro.mkdir()
    ro.chmod(0o500)
    cases.append(ro / "run")
  mesh = sharding.make_mesh((1, -1, 1))
  for workdir in cases:
    t0 = time.perf_counter()
    with pytest.raises(checkpoint.NotWritableError, match=f"{workdir}/checkpoints is not writable"):
      engine.train(_config(2), CFG, _stage(_batches(2), 2), mesh, str(workdir))
    assert time.perf_counter() - t0 < 10
  # workdir writable, its checkpoints/ not: the engine's own check catches it.
  (tmp_path / "ok").mkdir()
  (tmp_path / "ok" / "checkpoints").write_text("a file")
  with pytest.raises(checkpoint.NotWritableError, match="ok/checkpoints is not writable"):
    engine.train(_config(2), CFG, _stage(_batches(2), 2), mesh, str(tmp_path / "ok"))
  # From the command line: exit 2, one line naming the path, no traceback.
  t0 = time.perf_counter()
  out = _cli(blocker / "cli", corpus)
  assert out.returncode == 2 and f"{blocker}/cli is not writable" in out.stderr, out.stderr[-2000:]
  assert "Traceback" not in out.stderr and time.perf_counter() - t0 < 60


_KILL_DURING_SAVE = """
import os, signal, sys
sys.path.insert(0, sys.argv[2])
from citrus_jax import sharding
from citrus_jax.train import checkpoint, engine
from test_faults import CFG, _batches, _config, _stage
original = checkpoint.Checkpointer.save
def save_then_die(self, step, state, data_iter=None, force=False):
  wrote = original(self, step, state, data_iter, force)
  if step == 4:  # the async save of step 4 is in flight: die now, as kill -9 would
    print("in flight:", self.manager.is_saving_in_progress(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
  return wrote
checkpoint.Checkpointer.save = save_then_die
config = _config(6)
engine.train(config, CFG, _stage(_batches(6), 6), sharding.make_mesh((1, -1, 1)), sys.argv[1])
"""


def test_kill_9_during_an_async_save_resumes_exactly(tmp_path, reference):
  crashed = tmp_path / "crashed"
  out = subprocess.run([sys.executable, "-c", _KILL_DURING_SAVE, str(crashed), str(ROOT / "tests")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == -9, out.stderr[-3000:]
  assert "in flight: True" in out.stdout
  assert _steps(crashed / "checkpoints")[-1] == 2
  assert glob.glob(str(crashed / "checkpoints" / "4.orbax-checkpoint-tmp*"))  # the torn save
  mesh = sharding.make_mesh((1, -1, 1))
  resumed = engine.train(_config(6), CFG, _stage(_batches(6), 6), mesh, str(crashed))
  _assert_matches(reference, str(crashed), resumed)


def test_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, reference):
  """Checkpoint 4's array files cut in half (a full disk, a bad copy): resume warns, naming the
  step, moves it to checkpoints.bad/, resumes from step 2 and ends as the uninterrupted run.
  Other damage (metadata) and all-bad directories: tests/test_checkpoint.py."""
  mesh = sharding.make_mesh((1, -1, 1))
  run = tmp_path / "run"
  config = _config(6)
  config.checkpoint.async_save = False
  first = engine.train(config, CFG, _stage(_batches(6)[:4], 6), mesh, str(run))
  assert first.step == 4 and _steps(run / "checkpoints")[-2:] == [2, 4]
  files = glob.glob(str(run / "checkpoints" / "4" / "state" / "ocdbt.process_*" / "d" / "*"))
  assert files
  for f in files:
    with open(f, "r+b") as fh:
      fh.truncate(os.path.getsize(f) // 2)
  with caplog.at_level(logging.WARNING):
    resumed = engine.train(_config(6), CFG, _stage(_batches(6), 6), mesh, str(run))
  messages = [r.getMessage() for r in caplog.records]
  warned = [m for m in messages if "checkpoint step 4 is unusable: it could not be read" in m]
  assert warned and "checkpoints.bad/4" in warned[0], messages
  assert (run / "checkpoints.bad" / "4").exists()
  _assert_matches(reference, str(run), resumed)
