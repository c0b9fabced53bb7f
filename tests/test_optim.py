"""Learning-rate schedule and weight-decay mask."""
import jax
import ml_collections
import numpy as np
import pytest

from citrus_jax.model import config as mc, transformer
from citrus_jax.train import optim


def _cfg(**kw):
  base = dict(lr=1.0, schedule="cosine", warmup_frac=0.1, warmup_steps=0, end_lr_frac=0.0)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def test_warmup_then_cosine_to_zero():
  sched = optim.learning_rate_schedule(_cfg(), 100)
  lrs = np.array([float(sched(s)) for s in range(100)])
  assert 0 < lrs[0] < lrs[5] < lrs[9] <= 1.0  # linear warmup over 10 steps, never 0
  assert lrs[10] == pytest.approx(1.0)
  assert np.all(np.diff(lrs[10:]) <= 1e-7) and lrs[-1] < 1e-3
  assert float(sched(55)) == pytest.approx(0.5 * (1 + np.cos(np.pi * 45 / 90)), abs=1e-6)


def test_other_schedules_and_bad_name():
  const = optim.learning_rate_schedule(_cfg(schedule="constant", warmup_frac=0.0), 10)
  assert float(const(7)) == 1.0
  with pytest.raises(ValueError, match="schedule"):
    optim.learning_rate_schedule(_cfg(schedule="step"), 10)


def test_no_decay_on_norms_and_biases_by_default():
  cfg = mc.get_preset("tiny_qwen")
  params = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  mask = optim.decay_mask(params)
  assert mask["layers"]["wq"] and mask["embed"]
  assert not mask["layers"]["attn_norm"] and not mask["final_norm"] and not mask["layers"]["bq"]
  assert optim.decay_mask(params, decay_norms_and_biases=True)["final_norm"]
