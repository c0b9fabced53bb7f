"""SFT stages: memorisation through the masked loss, stage chaining by value, skipping finished
stages, inspect mode, config errors, and a crash inside stage 2 resumed from the command line."""
import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from citrus_jax import chat, runtime
from citrus_jax import tokenizer as tk
from citrus_jax.train import checkpoint, metrics_log, sft
from configs import sft as sft_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "tokenizer" / "corpus.txt"
CITRUS = ROOT / "tests" / "fixtures" / "sft" / "citrus.jsonl"
QA = [("Drug for anaphylaxis?", "Epinephrine."), ("First test for chest pain?", "An ECG."),
      ("Low ferritin means?", "Iron deficiency."), ("Septic shock first step?",
                                                    "Fluids and antibiotics.")]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  d = tmp_path_factory.mktemp("sft")
  model = tk.train_sentencepiece([str(CORPUS)], str(d / "sp"), 600)
  with open(d / "qa.jsonl", "w") as f:
    for q, a in QA:
      f.write(json.dumps({"input": q, "target": a}) + "\n")
  return d, model


def _config(model, train_paths, **stages):
  c = sft_config.get_config("tiny")
  c.tokenizer.path = model
  c.data.train_paths = str(train_paths)
  c.data.seq_len = 64
  c.optim.update(lr=1e-2, schedule="constant", warmup_frac=0.0, weight_decay=0.0)
  c.train.log_every = 1
  c.checkpoint.every = 1000
  c.progress = False
  c.tensorboard = False
  if stages:
    c.sft.stages = tuple(sft_config.stage(name, **kw) for name, kw in stages.items())
  return c


def _curve(workdir):
  rows = metrics_log.read_metrics(os.path.join(workdir, "metrics.jsonl"), "train/")
  return [rows[s] for s in sorted(rows)]


def test_memorise_then_chain_a_zero_lr_stage(files, tmp_path, capsys):
  d, model = files
  c = _config(model, d / "qa.jsonl", memorise=dict(num_steps=40), frozen=dict(num_steps=2, lr=0.0))
  c.data.eval_paths = str(d / "qa.jsonl")
  c.train.eval_every = 40
  results = sft.run(c, str(tmp_path))
  assert list(results) == ["memorise", "frozen"] and results["frozen"].step == 2
  out = capsys.readouterr().out
  tok = tk.load_tokenizer(model)
  rendered = [chat.render([{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                          tok) for q, a in QA]
  n_tokens = sum(len(r.tokens) for r in rendered)
  n_trained = sum(sum(r.assistant_mask[1:]) for r in rendered)
  assert f"4 examples, {n_tokens:,} tokens, {n_trained:,} trained" in out
  audit = json.load(open(tmp_path / "memorise" / "data_audit.json"))
  assert (audit["examples"], audit["trained_tokens"], audit["truncated"]) == (4, n_trained, 0)
  assert "[memorise] starts from random init" in out
  assert f"[frozen] starts from the params in {tmp_path / 'memorise'}" in out
  curve = _curve(str(tmp_path / "memorise"))
  assert curve[0]["train/loss"] > 3.0 and curve[-1]["train/loss"] < 0.05, curve[-1]
  # Only assistant tokens are trained: about n_trained / n_tokens of each row's slots.
  assert all(0 < r["train/trained_fraction"] <= n_trained / n_tokens for r in curve)
  # Stage 2 started from stage 1's final params: with lr 0 it exports exactly them, and its
  # first loss is the memorised one.
  first = checkpoint.load_params(str(tmp_path / "memorise"))
  second = checkpoint.load_params(str(tmp_path / "frozen"))
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert _curve(str(tmp_path / "frozen"))[0]["train/loss"] < 0.05
  for stage in ("memorise", "frozen"):  # the held-out pass over the same examples agrees
    (row,) = metrics_log.read_metrics(str(tmp_path / stage / "metrics.jsonl"), "eval/").values()
    assert row["eval/loss"] < 0.05
  saved = json.load(open(tmp_path / "frozen" / "config.json"))
  assert saved["init"]["checkpoint"] == str(tmp_path / "memorise")
  assert saved["optim"]["lr"] == 0.0 and saved["train"]["num_steps"] == 2
  summary = json.load(open(tmp_path / "sft_stages.json"))
  assert summary["final"] == str(tmp_path / "frozen")
  assert all(s["complete"] for s in summary["stages"])
  # A rerun finds both stages complete and trains nothing.
  assert sft.run(c, str(tmp_path)) == {"memorise": None, "frozen": None}
  assert "[frozen] already complete" in capsys.readouterr().out


def test_inspect_mode_prints_marked_examples_and_audit(files, tmp_path, capsys):
  d, model = files
  c = _config(model, CITRUS, sft1=dict(), sft2=dict(train_paths=str(d / "qa.jsonl")))
  c.mode = "inspect"
  c.train.num_steps = 0
  c.data.num_epochs = 2
  c.sft.inspect_examples = 2
  assert sft.run(c, str(tmp_path)) == {}
  out = capsys.readouterr().out
  assert "[sft1] loss-mask audit" in out and "[sft2] loss-mask audit" in out
  assert "truncated (kept the last 65 tokens): 4 examples" in out
  assert "[[Epinephrine.<|eot_id|>]]" in out and "[[An ECG.<|eot_id|>]]" in out
  assert "Low ferritin" not in out  # only inspect_examples=2 per stage
  assert "[[" not in out.split("Drug for anaphylaxis?")[1].split("<|end_header_id|>")[0]
  assert re.search(r"\[sft2\] \d+ steps = 2 epoch\(s\)", out)
  assert not os.listdir(tmp_path)  # nothing trained or written


def test_stage_chain_and_config_errors(files, tmp_path):
  d, model = files
  c = _config(model, d / "qa.jsonl", a=dict(lr=0.5), b=dict(train_paths=str(CITRUS),
                                                               batch_size=3))
  chain = sft.stage_configs(c, str(tmp_path))
  assert [n for n, _ in chain] == ["a", "b"]
  (_, a), (_, b) = chain
  assert a.workdir == str(tmp_path / "a") and a.init.checkpoint == ""
  assert b.init.checkpoint == str(tmp_path / "a") and b.init.hf_dir == ""
  assert a.data.train_paths == str(d / "qa.jsonl") and b.data.train_paths == str(CITRUS)
  assert a.optim.lr == 0.5 and b.optim.lr == c.optim.lr  # unset fields are inherited
  assert (a.data.global_batch_size, b.data.global_batch_size) == (c.data.global_batch_size, 3)
  c.sft.select = "b"
  (name, only), = sft.stage_configs(c, str(tmp_path))
  assert name == "b" and only.init.checkpoint == ""  # the first selected stage starts from init
  bad = [("select", "zzz", "config.sft.select names unknown stages ['zzz']"),
         ("stages", (sft_config.stage("a"), sft_config.stage("a")), "must be unique"),
         ("stages", (sft_config.stage("a/b"),), "without '/'"),
         ("stages", (), "config.sft.stages is empty")]
  for field, value, message in bad:
    c = _config(model, d / "qa.jsonl")
    c.sft[field] = value
    with pytest.raises(runtime.ConfigError, match=re.escape(message)):
      sft.stage_configs(c, str(tmp_path))
  c = _config(model, "")
  with pytest.raises(runtime.ConfigError, match=re.escape("config.sft.stages[0].train_paths (sft)"
                                                          " is empty")):
    sft.stage_configs(c, str(tmp_path))


def _cli(workdir, model, *extra):
  cmd = [sys.executable, "-m", "citrus_jax.main", "--config=configs/sft.py:citrus_llama3_1_8b",
         "--config.model.preset=tiny", "--config.model.remat=none",
         "--config.model.compute_dtype=float32", "--config.mesh.shape=(1,-1,1)",
         "--config.data.seq_len=64", "--config.data.global_batch_size=4",
         f"--config.workdir={workdir}", f"--config.tokenizer.path={model}",
         f"--config.data.train_paths={CITRUS}", "--config.sft.select=sft1,sft2",
         "--config.sft.stages[0].num_steps=2", "--config.sft.stages[1].num_epochs=5",
         "--config.sft.stages[1].lr=1e-3", "--config.checkpoint.every=2",
         "--config.progress=False", "--config.train.log_every=1", *extra]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_cli_chain_crash_in_stage_two_and_resume(files, tmp_path):
  _, model = files
  # Stage 1 runs 2 steps; stage 2 runs 5 epochs of 4 examples, one per 64-token row after left
  # truncation, 4 rows per batch: 5 steps. The crash hits at step 3, inside stage 2.
  out = _cli(tmp_path, model, "--config.train.kill_after_step=3")
  assert out.returncode == 17, out.stderr[-3000:]
  assert sft.is_complete(str(tmp_path / "sft1")) and not sft.is_complete(str(tmp_path / "sft2"))
  assert "[sft2] 5 steps = 5 epoch(s)" in out.stdout, out.stdout[-2000:]
  out = _cli(tmp_path, model)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "[sft1] already complete" in out.stdout and "[sft2] resumed from step 2" in out.stdout
  assert out.stdout.strip().splitlines()[-1] == str(tmp_path)
  assert max(metrics_log.read_metrics(str(tmp_path / "sft2" / "metrics.jsonl"), "train/")) == 5
  assert json.load(open(tmp_path / "sft2" / "config.json"))["optim"]["lr"] == 1e-3
  assert sft.is_complete(str(tmp_path / "sft2")) and not (tmp_path / "sft3").exists()
