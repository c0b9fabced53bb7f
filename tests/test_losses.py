"""lm_loss_fn: the trained-positions-only output layer gives the all-positions loss and grads."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from citrus_jax.model import config as mc, transformer
from citrus_jax.train import losses

CFG = mc.get_preset("tiny")


def _batch(loss_rows):
  rng = np.random.RandomState(0)
  b, t = len(loss_rows), len(loss_rows[0])
  tokens = rng.randint(0, CFG.vocab_size, (b, t + 1))
  mask = np.asarray(loss_rows, np.float32)
  segments = np.ones((b, t), np.int32)
  segments[0, -3:] = 0  # a padded tail
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": mask,
          "positions": np.tile(np.arange(t), (b, 1)), "segment_ids": segments}


@pytest.mark.parametrize("fraction", [0.5, 0.25])
def test_compact_logits_equal_full_loss_and_grads(fraction):
  # Row trained fractions 3/16 and 4/16: both fit 0.5 (k=8) and 0.25 (k=4).
  rows = [[0] * 5 + [1, 1, 1] + [0] * 8, [0] * 10 + [1] * 4 + [0, 0]]
  batch = _batch(rows)
  totals = {"n_tokens": jnp.float32(7), "n_slots": jnp.float32(32)}
  params = transformer.init_params(CFG, jax.random.key(0))

  def run(f):
    fn = losses.lm_loss_fn(CFG, logits_fraction=f)
    return jax.value_and_grad(lambda p: fn(p, batch, totals)[0])(params)

  (ref, ref_g), (val, g) = run(1.0), run(fraction)
  assert float(val) == pytest.approx(float(ref), rel=1e-6)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref_g)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_a_row_fuller_than_the_fraction_takes_the_full_path():
  rows = [[1] * 12 + [0] * 4, [0] * 16]  # 12 trained targets > k = 4
  batch = _batch(rows)
  totals = {"n_tokens": jnp.float32(12), "n_slots": jnp.float32(32)}
  params = transformer.init_params(CFG, jax.random.key(1))
  full = losses.lm_loss_fn(CFG)(params, batch, totals)[0]
  compact = losses.lm_loss_fn(CFG, logits_fraction=0.25)(params, batch, totals)[0]
  assert float(compact) == pytest.approx(float(full), rel=1e-6)
  with pytest.raises(ValueError, match="logits_fraction"):
    losses.lm_loss_fn(CFG, logits_fraction=0.0)
