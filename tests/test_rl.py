"""RL stage: CPO+SimPO raises held-out reward accuracy; DPO runs with cached reference sums."""
import json
import os

import jax
import numpy as np
import pytest

from citrus_jax import tokenizer
from citrus_jax.data import preference as pref_data
from citrus_jax.model import config as mc, transformer
from citrus_jax.train import preference, rl
from configs import rl as rl_config

FINDINGS = ["fever", "cough", "rash", "headache", "wheeze", "chest pain", "jaundice", "edema"]


def _pairs(path, seed, n):
  """Chosen answers name the finding from the prompt; rejected ones name a different finding."""
  rng = np.random.RandomState(seed)
  with open(path, "w") as f:
    for _ in range(n):
      a, b = rng.choice(len(FINDINGS), 2, replace=False)
      prompt = [{"role": "user", "content": f"The patient reports {FINDINGS[a]}. Main finding?"}]
      f.write(json.dumps({
          "chosen": prompt + [{"role": "assistant", "content": f"The finding is {FINDINGS[a]}."}],
          "rejected": prompt + [{"role": "assistant", "content": f"The finding is {FINDINGS[b]}."}],
      }) + "\n")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  d = tmp_path_factory.mktemp("rl")
  (d / "corpus.txt").write_text(" ".join(f"The patient reports {x}. The finding is {x}."
                                         for x in FINDINGS) * 20)
  model = tokenizer.train_sentencepiece([str(d / "corpus.txt")], str(d / "sp"), 300)
  _pairs(d / "train.jsonl", 0, 64)
  _pairs(d / "heldout.jsonl", 1, 32)
  return d, model


def _config(d, model, workdir, **rl_over):
  c = rl_config.get_config("tiny")
  c.workdir = str(workdir)
  c.tokenizer.path = model
  c.data.train_paths = str(d / "train.jsonl")
  c.data.eval_paths = str(d / "heldout.jsonl")
  c.data.num_epochs = 8
  c.optim.lr = 3e-3
  c.train.eval_every = 1000
  c.progress = False
  c.rl.update(rl_over)
  return c


def _reward_accuracy(params, cfg, tok, path, loss="cpo_simpo"):
  pairs, _ = pref_data.load_pairs(str(path), tok, max_length=128, max_prompt_length=96)
  batch = pref_data.make_batch(pairs, 128)
  _, metrics = preference.make_loss_fn(cfg, loss)(params, batch)
  return float(metrics["rewards/accuracies"])


def test_cpo_simpo_raises_heldout_reward_accuracy(setup, tmp_path):
  d, model = setup
  config = _config(d, model, tmp_path / "run")
  result = rl.run(config, config.workdir)
  tok = tokenizer.load_tokenizer(model)
  cfg = mc.get_preset("tiny", vocab_size=tok.vocab_size)
  params0 = transformer.init_params(cfg, jax.random.key(config.seed))
  before = _reward_accuracy(params0, cfg, tok, d / "heldout.jsonl")
  after = _reward_accuracy(result.params, cfg, tok, d / "heldout.jsonl")
  assert result.step == 8 * 64 // 8
  assert after >= before + 0.25, (before, after)


def test_dpo_precomputes_reference_once(setup, tmp_path):
  d, model = setup
  config = _config(d, model, tmp_path / "dpo", loss="dpo", beta=0.5)
  config.data.num_epochs = 1
  result = rl.run(config, config.workdir)
  ref = np.load(tmp_path / "dpo" / "reference_logprobs.npy")
  assert ref.shape == (64, 2) and np.all(ref < 0)
  assert result.step == 8 and np.isfinite(result.last_metrics["loss"])
  # The first step's loss is log 2: the policy starts equal to its reference.
  first = json.loads(open(tmp_path / "dpo" / "metrics.jsonl").readline())
  assert first["train/loss"] == pytest.approx(np.log(2), abs=1e-5)


# --- held-out batches padded on an 8-device mesh; the reference cache is keyed by the pairs


def _tiny(setup):
  d, model = setup
  tok = tokenizer.load_tokenizer(model)
  cfg = mc.get_preset("tiny", vocab_size=tok.vocab_size)
  pairs, _ = pref_data.load_pairs(str(d / "heldout.jsonl"), tok, max_length=128,
                                  max_prompt_length=96)
  return tok, cfg, pairs


@pytest.mark.parametrize("loss", ["cpo_simpo", "dpo"])
def test_padded_eval_on_8_devices_equals_the_unpadded_mean(setup, loss):
  """14 held-out pairs, global batch 8 on an 8-device mesh: the last batch (6 pairs) is padded
  to 8 rows with row_mask 0 and evaluates to the 6 pairs' own values, and the mean over batches
  weighted by row_mask.sum() is the mean over the 14 pairs."""
  from citrus_jax import sharding
  from citrus_jax.train import engine, step
  _, cfg, pairs = _tiny(setup)
  pairs = pairs[:14]
  if loss == "dpo":
    pairs = pref_data.attach_reference_logprobs(
        pairs, np.stack([-np.arange(14.0) - 20, -np.arange(14.0) - 25], 1))
  mesh = sharding.make_mesh((1, -1, 1))
  assert mesh.devices.size == 8
  params = transformer.init_params(cfg, jax.random.key(0))
  mesh_params = jax.device_put(params, sharding.param_shardings(cfg, mesh))
  loss_fn = preference.make_loss_fn(cfg, loss)
  eval_step = engine.in_mesh(mesh, jax.jit(step.make_eval_step(loss_fn,
                                                               preference.preference_totals)))
  plain_step = jax.jit(step.make_eval_step(loss_fn, preference.preference_totals))
  padded = list(pref_data.make_pair_dataset(pairs, 128, 8, shuffle=False, num_epochs=1,
                                            final_batch="pad"))
  assert [b["row_mask"].sum() for b in padded] == [8.0, 6.0]
  got = [jax.device_get(eval_step(mesh_params, engine.to_global(b, mesh))) for b in padded]
  # The unpadded batches (8 and 6 rows; a 6-row batch cannot split over 8 devices), on one device.
  unpadded = [pref_data.make_batch(pairs[:8], 128), pref_data.make_batch(pairs[8:], 128)]
  if loss == "dpo":
    for b, part in zip(unpadded, (pairs[:8], pairs[8:])):
      assert b["ref_chosen_logps"].shape == (len(part),)
  want = [jax.device_get(plain_step(params, b)) for b in unpadded]
  for g, w in zip(got, want):
    assert set(g) == set(w)
    for k in w:
      assert float(g[k]) == pytest.approx(float(w[k]), rel=1e-5, abs=1e-6), k
  weights = [float(b["row_mask"].sum()) for b in padded]
  mean = {k: sum(float(g[k]) * w for g, w in zip(got, weights)) / sum(weights) for k in got[0]}
  whole = jax.device_get(plain_step(params, pref_data.make_batch(pairs, 128)))
  for k in ("pref_loss" if loss == "cpo_simpo" else "loss", "rewards/accuracies",
            "rewards/margins", "rewards/chosen", "logps/chosen", "logps/rejected"):
    assert mean[k] == pytest.approx(float(whole[k]), rel=1e-5, abs=1e-6), k  # per-pair means
  ev = engine.evaluate(eval_step, mesh_params, padded, mesh)  # weighs batches by row_mask.sum()
  for k in mean:
    assert ev[k] == pytest.approx(mean[k], rel=1e-5, abs=1e-6), k


def test_reference_cache_is_reused_only_for_the_same_pairs(setup, tmp_path, monkeypatch,
                                                           capsys):
  d, model = setup
  tok, cfg, pairs = _tiny(setup)
  pairs = pairs[:6]
  path = tmp_path / "pairs.jsonl"
  path.write_text("".join(open(d / "heldout.jsonl").readlines()[:6]))
  config = _config(d, model, tmp_path / "run", loss="dpo")
  params = transformer.init_params(cfg, jax.random.key(0))
  cache = str(tmp_path / "reference_logprobs.npy")
  key = rl.reference_key(config, [str(path)], pairs)
  first = rl.with_reference(pairs, key, params, cfg, 128, 8, cache)
  assert "computed" in capsys.readouterr().out
  assert all(p.ref_chosen_logps < 0 for p in first)
  calls = []
  real = preference.precompute_reference_logprobs
  monkeypatch.setattr(preference, "precompute_reference_logprobs",
                      lambda *a: calls.append(1) or real(*a))
  again = rl.with_reference(pairs, rl.reference_key(config, [str(path)], pairs), params, cfg,
                            128, 8, cache)
  assert calls == [] and "from " in capsys.readouterr().out
  assert [p.ref_chosen_logps for p in again] == [p.ref_chosen_logps for p in first]
  # Same number of rows, different content: the old cache is stale and is recomputed.
  lines = open(path).readlines()
  path.write_text("".join(lines[1:] + lines[:1]))
  moved, _ = pref_data.load_pairs(str(path), tok, max_length=128, max_prompt_length=96)
  fresh = rl.with_reference(moved, rl.reference_key(config, [str(path)], moved), params, cfg,
                            128, 8, cache)
  assert calls == [1]
  assert fresh[0].ref_chosen_logps == pytest.approx(first[1].ref_chosen_logps, abs=1e-4)
  # Another start point (a different init seed) is stale too; a cache without its key file too.
  config.seed += 1
  rl.with_reference(moved, rl.reference_key(config, [str(path)], moved), params, cfg, 128, 8,
                    cache)
  assert calls == [1, 1]
  os.remove(cache[:-4] + ".json")
  rl.with_reference(moved, rl.reference_key(config, [str(path)], moved), params, cfg, 128, 8,
                    cache)
  assert calls == [1, 1, 1]


def test_sharded_run_with_a_padded_eval_batch(setup, tmp_path):
  """The stage end to end on the 8-device mesh: 2 logical shards, 14 held-out pairs (8 + a
  6-pair batch padded to 8), evaluated every step (a ragged batch used to fail here)."""
  from citrus_jax.train import metrics_log
  d, model = setup
  (tmp_path / "heldout14.jsonl").write_text("".join(open(d / "heldout.jsonl").readlines()[:14]))
  config = _config(d, model, tmp_path / "run")
  config.data.eval_paths = str(tmp_path / "heldout14.jsonl")
  config.data.num_shards = 2
  config.data.num_epochs = 0
  config.train.num_steps = 2
  config.train.eval_every = 1
  result = rl.run(config, config.workdir)
  assert result.step == 2
  evals = metrics_log.read_metrics(str(tmp_path / "run" / "metrics.jsonl"), "eval/")
  assert sorted(evals) == [1, 2]
  assert all(np.isfinite(evals[s]["eval/loss"]) for s in evals)
  assert 0.0 <= evals[2]["eval/rewards/accuracies"] <= 1.0


@pytest.mark.parametrize("loss", ["cpo_simpo", "dpo"])
def test_loss_chunk_logs_the_full_paths_losses(setup, tmp_path, loss):
  """train.loss_chunk=7 (not dividing the 128 tokens) runs the stage, the reference precompute
  (dpo) included, and logs the loss_chunk=0 run's losses: step 1 to 1e-6 relative, step 2
  (after one update from gradients equal to ~1e-7) to 1e-5; the reference sums to 1e-6."""
  from citrus_jax.train import metrics_log
  d, model = setup
  logged, refs = {}, {}
  for chunk in (0, 7):
    config = _config(d, model, tmp_path / f"chunk{chunk}", loss=loss)
    config.data.eval_paths = ""
    config.data.num_epochs = 0
    config.train.num_steps = 2
    config.train.log_every = 1
    config.train.loss_chunk = chunk
    assert rl.run(config, config.workdir).step == 2
    logged[chunk] = metrics_log.read_metrics(os.path.join(config.workdir, "metrics.jsonl"),
                                             "train/")
    if loss == "dpo":
      refs[chunk] = np.load(os.path.join(config.workdir, "reference_logprobs.npy"))
  assert sorted(logged[7]) == sorted(logged[0]) == [1, 2]
  assert logged[7][1]["train/loss"] == pytest.approx(logged[0][1]["train/loss"], rel=1e-6)
  assert logged[7][2]["train/loss"] == pytest.approx(logged[0][2]["train/loss"], rel=1e-5)
  assert logged[0][2]["train/loss"] != logged[0][1]["train/loss"]  # the update moved it
  if loss == "dpo":
    np.testing.assert_allclose(refs[7], refs[0], rtol=1e-6, atol=1e-6)
