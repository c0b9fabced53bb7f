"""Online RL (GRPO family): rewards, rollout rows, the update's direction, grad accumulation,
and `configs/grpo.py:tiny` end to end with exact resume."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from citrus_jax.rollout.questions import question_from_record
from citrus_jax.model import config as mc, transformer
from citrus_jax.rollout import group, rewards
from citrus_jax.train import grpo, grpo_loss, losses, metrics_log, step as step_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Q = question_from_record({"id": "q", "question": "A patient reports rash. Which finding?",
                          "options": {"A": "fever", "B": "rash", "C": "cough", "D": "edema"},
                          "answer_idx": "B"})


@pytest.mark.parametrize("text,value,correct", [
    ("<think>the rash is named</think><answer>B</answer>", 1.0, True),
    ("<think>x</think><answer>rash</answer>", 1.0, True),  # the option's text
    ("<think>x</think><answer>A</answer>", 0.0, False),
    ("<think>x</think><answer>B or C</answer>", 0.0, False),  # naming several options earns 0
    ("<think>x</think><answer>A, B, C, D</answer>", 0.0, False),
    ("<think>x</think><answer>fever and rash</answer>", 0.0, False),
    ("The answer is B", 1.0, True),  # no tags: the extractor reads the statement
    ("", 0.0, False),
])
def test_answer_reward(text, value, correct):
  r = rewards.answer_reward(Q, text)
  assert (r.value, r.correct) == (value, correct)


def test_truncated_and_format_rewards():
  good = "<think>x</think><answer>B</answer>"
  assert rewards.answer_reward(Q, good, "length").value == 0.0  # never finished its answer
  assert rewards.answer_reward(Q, good, format_weight=0.25).value == 1.25
  assert rewards.answer_reward(Q, "B", format_weight=0.25).value == 1.0  # correct, no format


def test_group_stats():
  rs = [rewards.Reward(1.0, True, True, "B"), rewards.Reward(0.0, False, True, "A"),
        rewards.Reward(0.0, False, False, None), rewards.Reward(0.0, False, False, None)]
  s = rewards.group_stats(rs, 2)
  assert s["accuracy"] == 0.25 and s["pass_at_group"] == 0.5 and s["groups/all_equal"] == 0.5
  assert s["format_rate"] == 0.5 and s["answered_rate"] == 0.5


def test_completion_rows_train_exactly_the_completion():
  rows = group.completion_rows([[5, 6, 7], [5, 6]], [[8, 9, 2], [2]], seq_len=8, pad_id=0)
  np.testing.assert_array_equal(rows["inputs"][0, :5], [5, 6, 7, 8, 9])
  np.testing.assert_array_equal(rows["targets"][0, :5], [6, 7, 8, 9, 2])
  np.testing.assert_array_equal(rows["loss_mask"][0], [0, 0, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(rows["loss_mask"][1], [0, 1, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(rows["segment_ids"][1], [1, 1, 0, 0, 0, 0, 0, 0])
  with pytest.raises(ValueError, match="exceed"):
    group.completion_rows([[1] * 6], [[2] * 4], seq_len=8)


CFG = mc.get_preset("tiny", vocab_size=32)


def _rollout_batch(seed=0, rows=8, seq=12):
  """Random completions after random prompts, half with advantage +1 and half -1."""
  rng = np.random.RandomState(seed)
  prompts = [list(rng.randint(3, 32, size=4)) for _ in range(rows)]
  comps = [list(rng.randint(3, 32, size=rng.randint(2, 7))) for _ in range(rows)]
  batch = group.completion_rows(prompts, comps, seq, pad_id=0)
  batch["advantages"] = np.asarray([1.0, -1.0] * (rows // 2), np.float32)
  return batch


def _mean_logp(params, batch):
  logits, _ = transformer.forward(params, batch["inputs"], CFG, positions_BT=batch["positions"],
                                  segment_ids_BT=batch["segment_ids"])
  lp = np.asarray(losses.token_logprobs(logits, batch["targets"]))
  m = batch["loss_mask"]
  return (lp * m).sum(1) / m.sum(1)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "bnpo"])
def test_updates_raise_rewarded_completions(loss_type):
  """A few updates on one rollout batch make positive-advantage completions likelier and
  negative ones less likely: the sign of the policy gradient, for every normalisation."""
  batch = _rollout_batch()
  params = transformer.init_params(CFG, jax.random.key(0))
  loss_fn = grpo.make_loss_fn(CFG, loss_type=loss_type, max_completion_length=8)
  opt = optax.adam(1e-2)
  train = jax.jit(step_lib.make_train_step(loss_fn, opt))
  state = step_lib.init_state(params, opt, 0)
  before = _mean_logp(params, batch)
  for _ in range(5):
    state, metrics = train(state, batch)
  after = _mean_logp(state.params, batch)
  up = batch["advantages"] > 0
  assert (after[up] > before[up]).all() and (after[~up] < before[~up]).all(), (before, after)
  assert float(metrics["clip_ratio/region_mean"]) >= 0.0 and float(metrics["entropy"]) > 0.0


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_grad_accumulation_equals_one_batch(loss_type):
  """Microbatches sum to the full batch's loss and gradient for the normalisations that are
  batch-level (bnpo normalises per microbatch, as TRL does)."""
  batch = _rollout_batch(1)
  params = transformer.init_params(CFG, jax.random.key(1))
  out = {}
  for accum in (1, 2):
    loss_fn = grpo.make_loss_fn(CFG, loss_type=loss_type, max_completion_length=8,
                                grad_accum=accum)
    train = jax.jit(step_lib.make_train_step(loss_fn, optax.sgd(1.0), grad_accum=accum))
    state, metrics = train(step_lib.init_state(params, optax.sgd(1.0), 0), batch)
    out[accum] = (state.params, metrics)
  np.testing.assert_allclose(out[1][1]["loss"], out[2][1]["loss"], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(out[1][1]["entropy"], out[2][1]["entropy"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(out[1][0]), jax.tree.leaves(out[2][0])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "bnpo"])
def test_completion_window_gives_the_full_rows_loss_and_grads(loss_type):
  """The output layer on each row's completion slots only (`completion_slots`, what rollouts
  send) gives the loss and gradients of the full rows, for every normalisation."""
  batch = _rollout_batch(2)
  lens = batch["loss_mask"].sum(1).astype(int)
  starts = batch["loss_mask"].argmax(1) + 1  # prompt length
  batch_w = dict(batch)
  batch_w["completion_slots"], batch_w["completion_mask"] = group.completion_window(
      batch["loss_mask"], starts, lens, width=int(lens.max()) + 1)
  params = transformer.init_params(CFG, jax.random.key(3))
  loss_fn = grpo.make_loss_fn(CFG, loss_type=loss_type, max_completion_length=8)
  totals = {"n_tokens": jnp.asarray(batch["loss_mask"].sum())}
  (l_full, m_full), g_full = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, totals)
  (l_win, m_win), g_win = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_w, totals)
  np.testing.assert_allclose(l_win, l_full, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(m_win["entropy"], m_full["entropy"], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g_win), jax.tree.leaves(g_full)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_completion_window_and_group_selection():
  mask = np.zeros((2, 8), np.float32)
  mask[0, 2:5] = 1  # prompt 3 tokens, completion 3
  mask[1, 5:8] = 1  # prompt 6 tokens, completion 3 ending at the last slot
  slots, m = group.completion_window(mask, [3, 6], [3, 3], width=4)
  np.testing.assert_array_equal(slots, [[2, 3, 4, 5], [5, 6, 7, 7]])
  np.testing.assert_array_equal(m, [[1, 1, 1, 0], [1, 1, 1, 0]])  # the clipped slot is not counted
  values = np.asarray([1, 1, 0, 1, 0, 0, 1, 0], np.float32)  # groups of 2: equal, mixed, equal, mixed
  degenerate = grpo_loss.dynamic_sampling_mask(values, 2)
  np.testing.assert_array_equal(group.select_groups(degenerate, 3), [1, 3, 0])
  with pytest.raises(ValueError, match="4 groups sampled, 5"):
    group.select_groups(degenerate, 5)


def _main(workdir, *extra, check=True):
  proc = subprocess.run(
      [sys.executable, "-m", "citrus_jax.main", "--config=configs/grpo.py:tiny",
       f"--config.workdir={workdir}", "--config.progress=False", *extra],
      cwd=REPO, capture_output=True, text=True, timeout=900)
  if check:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  return proc


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("grpo") / "run"
  _main(workdir)
  return workdir


@pytest.mark.slow
def test_tiny_preset_logs_reward_and_accuracy_per_step(tiny_run):
  rows = metrics_log.read_metrics(os.path.join(tiny_run, "metrics.jsonl"), "train/")
  assert sorted(rows) == list(range(1, 9))
  for s, m in rows.items():
    for key in ("reward/mean", "accuracy", "clip_ratio/region_mean", "entropy",
                "completion_length/mean", "groups/all_equal", "grad_norm"):
      assert f"train/{key}" in m, (s, key)
    assert 0.0 <= m["train/accuracy"] <= 1.0
  with open(os.path.join(tiny_run, "rollouts.jsonl")) as f:
    samples = [json.loads(line) for line in f]
  assert len(samples) == 8 * 16 and {s["step"] for s in samples} == set(range(1, 9))
  assert os.path.exists(os.path.join(tiny_run, "params"))
  with open(os.path.join(tiny_run, "config.json")) as f:
    assert json.load(f)["grpo"]["loss_type"] == "dapo"


@pytest.mark.slow
def test_resume_continues_the_same_run(tiny_run, tmp_path):
  """Killed after step 5 (last checkpoint: 4), rerun: the prompts and samples of steps 5-8 are
  the uninterrupted run's, so the metrics and final params are too."""
  workdir = tmp_path / "run"
  crashed = _main(workdir, "--config.train.kill_after_step=5", check=False)
  assert crashed.returncode == 17, crashed.stderr[-2000:]
  _main(workdir)
  ref = metrics_log.read_metrics(os.path.join(tiny_run, "metrics.jsonl"), "train/")
  got = metrics_log.read_metrics(os.path.join(workdir, "metrics.jsonl"), "train/")
  for s in (6, 7, 8):
    for key in ("train/loss", "train/reward/mean", "train/completion_length/mean"):
      assert got[s][key] == pytest.approx(ref[s][key], rel=1e-5, abs=1e-7), (s, key)
  from citrus_jax.train import checkpoint
  a = checkpoint.load_params(str(tiny_run))
  b = checkpoint.load_params(str(workdir))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def test_oversampled_trimmed_steps_train_the_informative_groups(tmp_path):
  """sampled_prompts > prompts_per_step: each step samples 8 prompts and trains the 4 whose
  rewards differ first; length_bucket trims the rows. The logged rollouts are the trained rows."""
  workdir = tmp_path / "run"
  _main(workdir, "--config.grpo.sampled_prompts=8", "--config.grpo.length_bucket=16",
        "--config.train.num_steps=3")
  got = metrics_log.read_metrics(os.path.join(workdir, "metrics.jsonl"), "train/")
  assert sorted(got) == [1, 2, 3]
  for rec in got.values():
    assert 0.0 <= rec["train/groups/trained_mixed"] <= 1.0
    # rows_trained counts trained rows: a mixed group is 4 of the 16
    assert rec["train/rows_trained"] == pytest.approx(rec["train/groups/trained_mixed"])
  with open(os.path.join(workdir, "rollouts.jsonl")) as f:
    samples = [json.loads(line) for line in f]
  assert len(samples) == 3 * 16
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["grpo"]["sampled_prompts"] == 8


def test_bad_group_shape_is_a_config_error(tmp_path):
  proc = _main(tmp_path / "bad", "--config.grpo.num_generations=1", check=False)
  assert proc.returncode == 2 and "num_generations" in proc.stderr
  assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_loss_chunk_logs_the_full_paths_losses(tmp_path, monkeypatch):
  """configs/grpo.py:tiny with the k3 KL (beta > 0: the rollout's reference log-probs too) and
  train.loss_chunk=5 (rows of 79 tokens) logs the loss_chunk=0 run's loss, KL and entropy to 1e-6
  relative. The reward is the completion's length mod 3 (the untrained model never answers, so
  the real reward is 0 everywhere and every advantage, and the loss, would be 0)."""
  from configs import grpo as grpo_config
  monkeypatch.setattr(group, "answer_reward", lambda q, text, reason, **kw: rewards.Reward(
      float(len(text) % 3), False, False, None))
  logged = {}
  for chunk in (0, 5):
    config = grpo_config.get_config("tiny")
    config.workdir = str(tmp_path / f"chunk{chunk}")
    config.progress = False
    config.train.num_steps = 2
    config.checkpoint.every = 0
    config.grpo.beta = 0.04
    config.grpo.dynamic_sampling = False
    config.train.loss_chunk = chunk
    assert grpo.run(config, config.workdir).step == 2
    logged[chunk] = metrics_log.read_metrics(os.path.join(config.workdir, "metrics.jsonl"),
                                             "train/")
  assert sorted(logged[5]) == sorted(logged[0]) == [1, 2]
  assert abs(logged[0][1]["train/loss"]) > 1e-3 and logged[0][2]["train/kl"] > 0.0
  for s in (1, 2):
    assert logged[5][s]["train/reward/mean"] == logged[0][s]["train/reward/mean"]  # same samples
    for key in ("train/loss", "train/kl", "train/entropy", "train/logp"):
      assert logged[5][s][key] == pytest.approx(logged[0][s][key], rel=1e-6, abs=1e-9), (s, key)
