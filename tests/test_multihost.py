"""Multi-host: logical data shards; CPT + SFT on 2 processes x 4 CPU devices (gloo) with a
crash of both processes and a resume, matching a 1-process 8-device run of the same config;
uneven data across processes (all stop together, held-out loss weighted by global tokens); and
evaluation (generation + log-likelihood) across processes, matching one process."""
import json
import os

import grain
import jax
import numpy as np
import pytest

from citrus_jax import multihost, sharding, tokenizer
from citrus_jax.train import checkpoint, metrics_log
from multihost_helpers import ROOT, launch as _launch, stderr_tail as _stderr
from helpers import write_word_corpus
WORDS = ("fever cough chest pain dyspnea troponin ecg asthma wheeze insulin glucose anemia "
         "ferritin migraine aura stroke thrombolysis sepsis lactate").split()


# --- logical data shards (in-process) ---------------------------------------------------------


def _toy_shard(records, rows):
  """Shard i of n of `records`, shuffled, batched into `rows` // n rows of 3 numbers."""
  def make(i, n):
    ds = grain.MapDataset.source(records)[i::n].shuffle(seed=1).repeat(None)
    return ds.map(lambda x: {"x": np.asarray([x, x, x])}).to_iter_dataset().batch(rows // n)
  return make


def test_shard_blocks_are_contiguous_and_checked():
  assert [list(multihost.shard_block(4, p, 2)) for p in range(2)] == [[0, 1], [2, 3]]
  assert list(multihost.shard_block(0, 1, 2)) == [1]  # default: one shard per process
  with pytest.raises(ValueError, match="num_shards=3 is not a multiple of the 2 processes"):
    multihost.shard_block(3, 0, 2)


@pytest.mark.parametrize("num_shards", [2, 4])
def test_global_batch_does_not_depend_on_the_process_count(num_shards):
  make = _toy_shard(list(range(37)), 8)
  one = iter(multihost.sharded_dataset(make, num_shards, process_index=0, process_count=1))
  two = [iter(multihost.sharded_dataset(make, num_shards, process_index=p, process_count=2))
         for p in range(2)]
  for _ in range(6):  # past the end of an epoch of each shard
    rows = np.concatenate([next(it)["x"] for it in two])  # host 0 rows, then host 1 rows
    np.testing.assert_array_equal(next(one)["x"], rows)


def test_sharded_iterator_state_resumes_exactly():
  make = _toy_shard(list(range(29)), 6)
  it = iter(multihost.sharded_dataset(make, 3, process_index=0, process_count=1))
  for _ in range(4):
    next(it)
  state = it.get_state()
  expected = [next(it)["x"] for _ in range(5)]
  fresh = iter(multihost.sharded_dataset(make, 3, process_index=0, process_count=1))
  fresh.set_state(json.loads(json.dumps(state)))  # as the grain checkpoint handler stores it
  for want in expected:
    np.testing.assert_array_equal(next(fresh)["x"], want)


def test_host_arrays_on_one_process_are_plain_device_put_and_get():
  mesh = sharding.make_mesh((1, -1, 1))
  x = np.arange(32, dtype=np.int32).reshape(8, 4)
  g = multihost.global_array(x, sharding.batch_sharding(mesh, 2))
  assert g.sharding == sharding.batch_sharding(mesh, 2) and len(g.addressable_shards) == 8
  back = multihost.to_host({"x": g * 2})
  assert isinstance(back["x"], np.ndarray)
  np.testing.assert_array_equal(back["x"], 2 * x)
  np.testing.assert_array_equal(multihost.process_sum([True, 2.5]), [1.0, 2.5])


# --- 2 processes x 4 devices against 1 process x 8 devices ------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  d = tmp_path_factory.mktemp("multihost")
  rng = write_word_corpus(d, WORDS, 200)
  with open(d / "sft.jsonl", "w") as f:
    for i in range(64):
      q = " ".join(rng.choice(WORDS, size=rng.randint(3, 8)))
      f.write(json.dumps({"input": f"What fits {q}?", "target": " ".join(rng.choice(WORDS, 6))})
              + "\n")
  model = tokenizer.train_sentencepiece([str(d / "corpus.txt")], str(d / "sp"), 320)
  return d, model


def _losses(metrics_path):
  rows = metrics_log.read_metrics(str(metrics_path), "train/")
  return [rows[s]["train/loss"] for s in sorted(rows)]


def _cpt(workdir, d, model, *extra):
  return ["--config=configs/cpt.py:tiny", f"--config.workdir={workdir}",
          f"--config.tokenizer.path={model}", f"--config.data.train_paths={d / 'corpus.jsonl'}",
          "--config.train.num_steps=4", "--config.checkpoint.every=2", "--config.progress=False",
          "--config.train.log_every=1", "--config.tensorboard=False", *extra]


def _sft(workdir, d, model, init, *extra):
  return ["--config=configs/sft.py:tiny", f"--config.workdir={workdir}",
          f"--config.tokenizer.path={model}", f"--config.data.train_paths={d / 'sft.jsonl'}",
          f"--config.init.checkpoint={init}", "--config.data.seq_len=64",
          "--config.train.num_steps=4", "--config.checkpoint.every=2", "--config.progress=False",
          "--config.train.log_every=1", "--config.tensorboard=False", *extra]


def _crash_and_resume(args, tmp_path, name):
  """Both processes die hard after step 3 (last checkpoint: step 2); a relaunch resumes."""
  crashed = _launch([*args, "--config.train.kill_after_step=3"], 2, tmp_path / f"{name}_crash")
  # Process 0 exits 17; process 1 exits 17 too, or is torn down by the distributed runtime when
  # process 0 (the coordinator) disappears. Either way both are gone.
  assert crashed[0][0] == 17 and crashed[1][0] != 0, _stderr(tmp_path / f"{name}_crash")
  resumed = _launch(args, 2, tmp_path / f"{name}_resume")
  assert [r for r, _ in resumed] == [0, 0], _stderr(tmp_path / f"{name}_resume")
  assert all("resumed from step 2" in out for _, out in resumed)


@pytest.mark.slow
def test_two_hosts_crash_resume_and_match_one_host(data, tmp_path):
  d, model = data
  # The reference: one process, 8 devices, reading the data as 2 logical shards (the layout
  # two processes give by default), so its global batches are the same rows.
  ref = _launch(_cpt(tmp_path / "cpt1", d, model, "--config.data.num_shards=2"), 1,
                tmp_path / "cpt1_log")
  assert ref[0][0] == 0, _stderr(tmp_path / "cpt1_log")
  ref = _launch(_sft(tmp_path / "sft1", d, model, tmp_path / "cpt1", "--config.data.num_shards=2"),
                1, tmp_path / "sft1_log")
  assert ref[0][0] == 0, _stderr(tmp_path / "sft1_log")

  _crash_and_resume(_cpt(tmp_path / "cpt2", d, model), tmp_path, "cpt2")
  _crash_and_resume(_sft(tmp_path / "sft2", d, model, tmp_path / "cpt2"), tmp_path, "sft2")

  # Same losses, step by step, to float32 rounding: the cross-process all-reduce (gloo) sums
  # in another order than the in-process one. A different data layout moves them by ~1e-3.
  for one, two in (("cpt1", "cpt2"), ("sft1/sft", "sft2/sft")):
    a, b = _losses(tmp_path / one / "metrics.jsonl"), _losses(tmp_path / two / "metrics.jsonl")
    assert len(a) == len(b) == 4
    np.testing.assert_allclose(b, a, rtol=2e-6, err_msg=f"{one} vs {two}")
    # Only process 0 logs: the crashed run logged steps 1-3; the resumed one (from step 2) drops
    # step 3's record and logs 3-4, so each step is there once.
    steps = [json.loads(line)["step"] for line in open(tmp_path / two / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4], steps
    # Each process checkpointed its own data iterator; the train state was saved jointly.
    data_dir = tmp_path / two / "checkpoints" / "2" / "data"
    assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(os.listdir(data_dir))
  # The exported params too (restored onto this process's devices: the 2-process run saved
  # shards of devices that do not exist here). Adam's normalised update can turn an ulp-level
  # gradient difference on a near-zero gradient into a visible step, so a few of the 115k
  # weights differ by up to ~5e-5; the mean difference stays ~1e-9. Another data layout gives
  # a mean difference of ~7e-4 (max ~7e-3) on this config.
  mesh = sharding.make_mesh((1, -1, 1))
  for one, two in (("cpt1", "cpt2"), ("sft1/sft", "sft2/sft")):
    cfg = checkpoint.read_model_config(str(tmp_path / two))
    sh = sharding.param_shardings(cfg, mesh)
    a, b = (np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(
        checkpoint.load_params(str(tmp_path / d), cfg, sh))]) for d in (one, two))
    assert np.abs(a - b).mean() < 1e-7 and np.abs(a - b).max() < 5e-4, (one, two)


@pytest.mark.slow
def test_uneven_data_stops_all_processes_together(tmp_path):
  """Process 0 holds 5 training batches, process 1 only 3 (and 3 vs 2 held-out batches): both
  stop after step 3 and save; train and held-out losses equal one process reading the same
  rows (held-out batch 3 has only process 0's rows; its halves hold different token counts, so
  weighting by a process's own count would move the held-out loss)."""
  script = ROOT / "tests" / "multihost_helpers.py"
  runs = {}
  for name, processes in (("one", 1), ("two", 2)):
    out = _launch(["engine", tmp_path / name, "5,3", "3,2"], processes, tmp_path / f"{name}_log",
                  timeout=300, script=script)
    assert [r for r, _ in out] == [0] * processes, _stderr(tmp_path / f"{name}_log")
    results = [json.loads(o.strip().splitlines()[-1]) for _, o in out]
    assert [(r["step"], r["stopped"]) for r in results] == [(3, "data exhausted")] * processes
    runs[name] = metrics_log.read_metrics(str(tmp_path / name / "metrics.jsonl"))
  assert "data ran out on another process at step 3" in out[0][1]
  assert sorted(runs["two"]) == sorted(runs["one"]) == [1, 2, 3]
  for step in (1, 2, 3):
    for key in ("train/loss", "eval/loss", "eval/perplexity"):
      assert runs["two"][step][key] == pytest.approx(runs["one"][step][key], rel=2e-6), (step, key)
  assert (tmp_path / "two" / "params").exists()  # the final save happened jointly
  ckpt = checkpoint.Checkpointer(str(tmp_path / "two" / "checkpoints"))
  assert ckpt.latest_step() == 3
  ckpt.close()


MEDQA = ROOT / "tests" / "fixtures" / "harness" / "medqa_mini.jsonl"


def _eval_args(workdir, model, mode):
  return ["--config=configs/eval.py:tiny", f"--config.workdir={workdir}",
          f"--config.tokenizer.path={model}", "--config.eval.benchmarks=medqa",
          f"--config.eval.data_paths={MEDQA}",
          f"--config.eval.mode={mode}", "--config.eval.max_new_tokens=8",
          "--config.eval.batch_size=4", "--config.eval.timestamped=False",
          "--config.progress=False"]


@pytest.mark.slow
def test_eval_across_processes_matches_one_process(data, tmp_path):
  """The eval harness (greedy generation and option log-likelihoods) of a random tiny model on
  a mesh over 2 processes x 4 devices gives the one-process 8-device records; process 0 writes."""
  _, model = data
  recs, outs = {}, {}
  for name, processes in (("one", 1), ("two", 2)):
    outs[name] = _launch(_eval_args(tmp_path / name, model, "both"), processes,
                         tmp_path / f"{name}_log")
    assert [r for r, _ in outs[name]] == [0] * processes, _stderr(tmp_path / f"{name}_log")
    with open(tmp_path / name / "medqa.jsonl") as f:
      recs[name] = [json.loads(line) for line in f]
  one, two = recs["one"], recs["two"]
  assert len(one) == len(two) == 8
  # 8 items in batches of 4 on a data-parallel size of 8: half of every batch is padding rows.
  for a, b in zip(one, two):
    for key in ("id", "output", "n_new_tokens", "finish_reason", "pred", "correct"):
      assert a[key] == b[key], key
    assert a["loglik"]["pred"] == b["loglik"]["pred"]
    for letter, opt in a["loglik"]["options"].items():
      assert b["loglik"]["options"][letter]["loglik"] == pytest.approx(opt["loglik"], rel=1e-5)
      assert b["loglik"]["options"][letter]["n_tokens"] == opt["n_tokens"]
  assert len({r["output"] for r in one}) > 1  # real, differing outputs: a row mix-up would show
  assert all(r["n_new_tokens"] > 0 for r in one)
  # Only process 0 reports (and writes) the summary.
  assert "macro_avg" in outs["two"][0][1] and "macro_avg" not in outs["two"][1][1]
  with open(tmp_path / "two" / "summary.json") as f:
    assert json.load(f)["benchmarks"]["medqa"]["n"] == 8
