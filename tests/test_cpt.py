"""CPT from the command line: trains, survives a crash mid-run, resumes bit-exactly."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from citrus_jax import tokenizer
from citrus_jax.train import checkpoint, metrics_log
from helpers import write_word_corpus

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORDS = ("fever cough chest pain dyspnea troponin ecg asthma wheeze insulin glucose anemia "
         "ferritin migraine aura stroke thrombolysis sepsis lactate").split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  d = tmp_path_factory.mktemp("cpt")
  write_word_corpus(d, WORDS, 300)
  model = tokenizer.train_sentencepiece([str(d / "corpus.txt")], str(d / "sp"), 320)
  return d, model


def _run(workdir, corpus_dir, model, *extra, check=True):
  cmd = [sys.executable, "-m", "citrus_jax.main", "--config=configs/cpt.py:tiny",
         f"--config.workdir={workdir}", f"--config.tokenizer.path={model}",
         f"--config.data.train_paths={corpus_dir / 'corpus.jsonl'}",
         "--config.train.num_steps=8", "--config.checkpoint.every=2", "--config.progress=False",
         "--config.train.log_every=1", *extra]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
  if check:
    assert out.returncode == 0, out.stderr[-3000:]
  return out


def _curve(workdir):
  rows = metrics_log.read_metrics(os.path.join(workdir, "metrics.jsonl"), "train/")
  return [rows[s]["train/loss"] for s in sorted(rows)]


def test_cpt_crash_and_exact_resume(tmp_path, corpus):
  corpus_dir, model = corpus
  full, crashed = tmp_path / "full", tmp_path / "crashed"
  out = _run(full, corpus_dir, model, f"--config.data.eval_paths={corpus_dir / 'corpus.jsonl'}",
             "--config.train.eval_every=4")
  assert out.stdout.strip().splitlines()[-1] == str(full)
  evals = metrics_log.read_metrics(str(full / "metrics.jsonl"), "eval/")
  assert sorted(evals) == [4, 8] and evals[8]["eval/loss"] < evals[4]["eval/loss"] + 0.5
  assert json.load(open(full / "config.json"))["stage"] == "cpt"
  # Crash hard right after step 5 (checkpoint at step 4 is the last complete one), then rerun.
  out = _run(crashed, corpus_dir, model, "--config.train.kill_after_step=5", check=False)
  assert out.returncode == 17, out.stderr[-3000:]
  assert not (crashed / "params").exists()
  out = _run(crashed, corpus_dir, model)
  assert "resumed from step 4" in out.stdout
  assert _curve(str(crashed)) == _curve(str(full))  # identical per-step losses, all 8 steps
  a, b = checkpoint.load_params(str(full)), checkpoint.load_params(str(crashed))
  for x, y in zip(__import__("jax").tree.leaves(a), __import__("jax").tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_config_errors_are_clear(tmp_path, corpus):
  corpus_dir, model = corpus
  cases = [("--config.stage=pretrain", "config.stage: 'pretrain' is unknown"),
           ("--config.mesh.shape=(3,1,1)", "config.mesh.shape"),
           ("--config.data.global_batch_size=3", "not divisible by the data-parallel size"),
           ("--config.data.train_paths=/nonexistent.jsonl", "/nonexistent.jsonl does not exist")]
  for flag, message in cases:
    out = _run(tmp_path / "bad", corpus_dir, model, flag, check=False)
    assert out.returncode == 2 and message in out.stderr, (flag, out.stderr[-1500:])


def test_epochs_give_the_steps_and_zero_steps_is_an_error(tmp_path, corpus):
  """`num_steps=0, num_epochs=1` trains one pass of packed batches, not zero steps (it used to
  exit 0 with an empty metrics file); an epoch too small for one batch is a config error."""
  corpus_dir, model = corpus
  out = _run(tmp_path / "epoch", corpus_dir, model, "--config.train.num_steps=0",
             "--config.data.num_epochs=1", "--config.checkpoint.every=1000")
  steps = [l for l in out.stdout.splitlines() if l.startswith("[cpt]") and "epoch(s)" in l]
  assert steps, out.stdout[-2000:]
  n = int(steps[0].split()[1])
  rows = metrics_log.read_metrics(str(tmp_path / "epoch" / "metrics.jsonl"), "train/")
  assert n > 0 and max(rows) == n, (n, sorted(rows))
  tiny = tmp_path / "one.jsonl"
  tiny.write_text(json.dumps({"text": "fever cough"}) + "\n")
  out = _run(tmp_path / "none", corpus_dir, model, "--config.train.num_steps=0",
             "--config.data.num_epochs=1", f"--config.data.train_paths={tiny}", check=False)
  assert out.returncode == 2 and "make no full batch" in out.stderr, out.stderr[-2000:]
  assert "config error: config.data.num_epochs: 1 epoch(s) of " in out.stderr
  assert "config.data.global_batch_size=8" in out.stderr and "Traceback" not in out.stderr
  assert not (tmp_path / "none" / "params").exists()  # nothing exported, nothing logged
  assert not (tmp_path / "none" / "metrics.jsonl").exists()
  # Steps given, but num_epochs caps the data to nothing: the same error, not a step-0 export.
  out = _run(tmp_path / "capped", corpus_dir, model, "--config.train.num_steps=5",
             "--config.data.num_epochs=1", f"--config.data.train_paths={tiny}", check=False)
  assert out.returncode == 2, out.stderr[-2000:]
  assert "config error: config.data.num_epochs: 1 epoch(s) of " in out.stderr
  assert "would train none of its 5 steps" in out.stderr and "Traceback" not in out.stderr
  assert not (tmp_path / "capped" / "params").exists()
