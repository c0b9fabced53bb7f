"""RL stage: CPO+SimPO raises held-out reward accuracy; DPO runs with cached reference sums."""
import json

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
