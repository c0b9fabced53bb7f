"""Chunked output layer + cross-entropy: the full path's loss and grads (1e-6, fp32), less memory;
for CPT/SFT, the preference losses and GRPO."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from citrus_jax import sharding
from citrus_jax.data import preference as pref_data
from citrus_jax.data.preference import PreferencePair
from citrus_jax.model import config as mc, transformer
from citrus_jax.rollout import group
from citrus_jax.train import chunked_ce, grpo, losses, preference

TOL = dict(atol=1e-6, rtol=1e-6)


def _setup(preset: str = "tiny", b: int = 2, t: int = 24, seed: int = 0):
  cfg = mc.get_preset(preset)
  params = transformer.init_params(cfg, jax.random.key(seed))
  rng = np.random.default_rng(seed)
  hidden = jnp.asarray(rng.normal(size=(b, t, cfg.d_model)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, cfg.vocab_size, (b, t)), jnp.int32)
  mask = jnp.asarray(rng.random((b, t)) < 0.6, jnp.float32)
  return cfg, params, hidden, targets, mask


@pytest.mark.parametrize("preset,chunk", [("tiny", 8), ("tiny", 7), ("tiny_qwen", 5),
                                          ("tiny_qwen", 64)])
def test_logprobs_equal_the_full_logits_path(preset, chunk):
  """Untied (lm_head) and tied (embed.T) output layers; chunk dividing T, not dividing it
  (padded last chunk) and larger than T."""
  cfg, params, hidden, targets, _ = _setup(preset)
  full = losses.token_logprobs(transformer.logits_from_hidden(params, hidden, cfg), targets)
  got = chunked_ce.token_logprobs(params, hidden, targets, cfg, chunk)
  assert got.shape == full.shape == targets.shape
  np.testing.assert_allclose(np.asarray(got), np.asarray(full), **TOL)
  via = losses.token_logprobs_from_hidden(params, hidden, targets, cfg, chunk)
  np.testing.assert_array_equal(np.asarray(via), np.asarray(got))
  np.testing.assert_array_equal(
      np.asarray(losses.token_logprobs_from_hidden(params, hidden, targets, cfg)),
      np.asarray(full))


@pytest.mark.parametrize("z_loss", [0.0, 1e-3])
def test_cross_entropy_loss_and_grads_equal_the_full_path(z_loss):
  cfg, params, hidden, targets, mask = _setup("tiny", t=20, seed=1)
  n_tokens = jnp.float32(17.0)

  def full(p, h):
    logits = transformer.logits_from_hidden(p, h, cfg)
    return losses.cross_entropy(logits, targets, mask, n_tokens, z_loss)[0]

  def chunked(p, h):
    return chunked_ce.cross_entropy(p, h, targets, mask, cfg, 6, n_tokens, z_loss)[0]

  ref, ref_g = jax.value_and_grad(full, argnums=(0, 1))(params, hidden)
  val, g = jax.jit(jax.value_and_grad(chunked, argnums=(0, 1)))(params, hidden)
  assert abs(float(val) - float(ref)) <= 1e-6 * abs(float(ref))
  leaves, ref_leaves = jax.tree.leaves(g), jax.tree.leaves(ref_g)
  assert len(leaves) == len(ref_leaves)
  assert max(float(jnp.max(jnp.abs(x))) for x in ref_leaves) > 1e-3
  for a, b in zip(leaves, ref_leaves):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


def _batch(cfg, b=2, t=16, seed=0):
  rng = np.random.RandomState(seed)
  tokens = rng.randint(0, cfg.vocab_size, (b, t + 1))
  segments = np.ones((b, t), np.int32)
  segments[0, -3:] = 0
  mask = (rng.rand(b, t) < 0.7).astype(np.float32) * (segments > 0)
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": mask,
          "positions": np.tile(np.arange(t), (b, 1)), "segment_ids": segments}


@pytest.mark.parametrize("fraction", [1.0, 0.75])
def test_lm_loss_fn_with_loss_chunk_equals_full(fraction):
  """The whole CPT/SFT loss through the model: loss_chunk=0 vs 5, param grads to 1e-6."""
  cfg = mc.get_preset("tiny")
  batch = _batch(cfg)
  totals = {"n_tokens": jnp.float32(batch["loss_mask"].sum()), "n_slots": jnp.float32(32)}
  params = transformer.init_params(cfg, jax.random.key(2))

  def run(chunk):
    fn = losses.lm_loss_fn(cfg, z_loss=1e-4, logits_fraction=fraction, loss_chunk=chunk)
    return jax.jit(jax.value_and_grad(lambda p: fn(p, batch, totals)[0]))(params)

  (ref, ref_g), (val, g) = run(0), run(5)
  assert abs(float(val) - float(ref)) <= 1e-6 * abs(float(ref))
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref_g)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)
  with pytest.raises(ValueError, match="loss_chunk"):
    losses.lm_loss_fn(cfg, loss_chunk=-1)


def test_under_a_mesh_equals_unsharded():
  cfg, params, hidden, targets, mask = _setup("tiny", b=4, t=16, seed=3)
  ref = chunked_ce.cross_entropy(params, hidden, targets, mask, cfg, 4)[0]
  mesh = sharding.make_mesh((1, 4, 2))
  with jax.set_mesh(mesh):
    got = jax.jit(lambda p, h: chunked_ce.cross_entropy(p, h, targets, mask, cfg, 4)[0])(
        params, hidden)
  assert abs(float(got) - float(ref)) <= 1e-6 * abs(float(ref))


def _temp_bytes(fn, *args) -> int:
  return int(jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes)


def test_compiled_step_holds_far_less_than_the_full_logits():
  """Compiled memory analysis (CPU) of loss + grads: the full path holds [B, T, V] fp32 logits
  and their gradient; the chunked one about [B, chunk, V]."""
  cfg = mc.get_preset("tiny", vocab_size=16384)
  b, t, chunk = 2, 256, 32
  params = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  hidden = jax.ShapeDtypeStruct((b, t, cfg.d_model), jnp.float32)
  targets = jax.ShapeDtypeStruct((b, t), jnp.int32)
  mask = jax.ShapeDtypeStruct((b, t), jnp.float32)

  def full(p, h, y, m):
    return jax.grad(lambda p: losses.cross_entropy(
        transformer.logits_from_hidden(p, h, cfg), y, m)[0])(p)

  def chunked(p, h, y, m):
    return jax.grad(lambda p: chunked_ce.cross_entropy(p, h, y, m, cfg, chunk)[0])(p)

  logits_bytes = b * t * cfg.vocab_size * 4
  full_temp = _temp_bytes(full, params, hidden, targets, mask)
  chunked_temp = _temp_bytes(chunked, params, hidden, targets, mask)
  assert full_temp >= logits_bytes  # at least one [B, T, V] fp32 buffer
  assert chunked_temp < logits_bytes / 2, (full_temp, chunked_temp)


def test_bad_chunk_is_refused():
  cfg, params, hidden, targets, _ = _setup()
  with pytest.raises(ValueError, match="chunk=0"):
    chunked_ce.token_logprobs(params, hidden, targets, cfg, 0)


def test_grpo_logprobs_and_entropy_chunked_equal_full():
  """GRPO's per-token log-probs (and their grads) and its entropy metric, chunked vs full."""
  from citrus_jax.train import grpo_loss
  cfg, params, hidden, targets, mask = _setup("tiny_qwen", t=18, seed=5)
  adv = jnp.asarray([0.5, -1.0], jnp.float32)

  def loss(p, chunk):
    logp, ent = grpo_loss.logprobs_and_entropy(p, hidden, targets, cfg, chunk)
    return grpo_loss.grpo_loss(logp, None, None, adv, mask, loss_type="dapo")[0], (logp, ent)

  (ref, (ref_lp, ref_ent)), ref_g = jax.value_and_grad(loss, has_aux=True)(params, 0)
  (val, (lp, ent)), g = jax.value_and_grad(loss, has_aux=True)(params, 4)
  np.testing.assert_allclose(np.asarray(lp), np.asarray(ref_lp), **TOL)
  np.testing.assert_allclose(np.asarray(ent), np.asarray(ref_ent), **TOL)
  assert float(jnp.min(ref_ent)) > 1.0  # a real entropy (tiny random model: ~log 256)
  assert abs(float(val) - float(ref)) <= 1e-6 * max(abs(float(ref)), 1e-3)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref_g)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


# --- the preference (CPO-SimPO, DPO, IPO, ORPO) and GRPO losses through the whole model


def _pair_batch(cfg, t=19):
  pairs = [PreferencePair((1, 5, 6, 7), (10, 11, 12, 2), (13, 2)),
           PreferencePair((1, 8), (14, 15, 2), (16, 17, 18, 19, 20, 2)),
           PreferencePair((1, 21, 22, 23, 24, 25), (26, 2), (27, 28, 2))]
  assert max(len(p.prompt_ids) + len(p.rejected_ids) for p in pairs) <= t
  return pref_data.make_batch(pairs, t, batch_size=4)  # one padding pair


def _close(val, ref, g, ref_g):
  """Loss relative 1e-6; every gradient leaf |a - b| <= 1e-6 + 1e-6 |b| (assert_allclose)."""
  assert abs(float(val) - float(ref)) <= 1e-6 * abs(float(ref)), (float(val), float(ref))
  leaves, ref_leaves = jax.tree.leaves(g), jax.tree.leaves(ref_g)
  assert len(leaves) == len(ref_leaves)
  assert max(float(jnp.max(jnp.abs(x))) for x in ref_leaves) > 1e-4  # a real gradient
  for a, b in zip(leaves, ref_leaves):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


@pytest.mark.parametrize("name", ["cpo_simpo", "dpo", "ipo", "orpo"])
def test_preference_loss_with_loss_chunk_equals_full(name):
  """fp32, T=19 in chunks of 5 (the last one padded); dpo/ipo take their reference from a
  second model's forward inside the loss, chunked as well."""
  cfg = mc.get_preset("tiny", vocab_size=64)
  batch = _pair_batch(cfg)
  totals = preference.preference_totals(batch)
  params = transformer.init_params(cfg, jax.random.key(4))
  ref_params = transformer.init_params(cfg, jax.random.key(5))
  hp = {"beta": 0.5} if name in ("dpo", "ipo") else {}

  def run(chunk):
    fn = preference.make_loss_fn(cfg, name, loss_chunk=chunk, **hp)
    return jax.jit(jax.value_and_grad(lambda p, r: fn(p, batch, totals, r)[0]))(
        params, ref_params)

  (ref, ref_g), (val, g) = run(0), run(5)
  _close(val, ref, g, ref_g)
  stats = [jax.jit(preference.pair_forward_logprobs, static_argnums=(2, 3))(
      params, batch, cfg, c) for c in (0, 5)]
  for key in stats[0]:
    np.testing.assert_allclose(np.asarray(stats[1][key]), np.asarray(stats[0][key]), **TOL)
  with pytest.raises(ValueError, match="loss_chunk"):
    preference.make_loss_fn(cfg, name, loss_chunk=-1)


def test_precomputed_reference_logprobs_with_chunk_equal_full():
  cfg = mc.get_preset("tiny_qwen", vocab_size=64)  # tied output layer
  batch = _pair_batch(cfg)
  params = transformer.init_params(cfg, jax.random.key(6))
  full = preference.precompute_reference_logprobs(params, [batch], cfg)
  got = preference.precompute_reference_logprobs(params, [batch], cfg, chunk=4)
  assert full.shape == (4, 2) and np.all(full[:3] < 0)
  np.testing.assert_allclose(got, full, **TOL)


def test_grpo_loss_fn_with_loss_chunk_equals_full():
  """grpo.make_loss_fn (dapo with the k3 KL to a reference) chunked vs full: loss, grads, the
  entropy and logp metrics; and the rollout's reference log-probs (group._ref_logprobs_fn)."""
  cfg = mc.get_preset("tiny", vocab_size=64)
  batch = _batch(cfg, b=4, t=15, seed=7)
  params = transformer.init_params(cfg, jax.random.key(8))
  ref_params = transformer.init_params(cfg, jax.random.key(9))
  rows = {k: batch[k] for k in ("inputs", "targets", "positions", "segment_ids")}
  ref_full = group._ref_logprobs_fn(cfg)(ref_params, rows)  # pylint: disable=protected-access
  ref_chunked = group._ref_logprobs_fn(cfg, 4)(ref_params, rows)  # pylint: disable=protected-access
  np.testing.assert_allclose(np.asarray(ref_chunked), np.asarray(ref_full), **TOL)
  batch = {**batch, "ref_logp": ref_full,
           "advantages": np.asarray([1.0, -0.5, 0.25, -1.0], np.float32)}
  totals = {"n_tokens": jnp.float32(batch["loss_mask"].sum())}

  def run(chunk):
    fn = grpo.make_loss_fn(cfg, loss_type="dapo", beta=0.04, loss_chunk=chunk)
    return jax.jit(jax.value_and_grad(lambda p: fn(p, batch, totals), has_aux=True))(params)

  ((ref, ref_m), ref_g), ((val, m), g) = run(0), run(4)
  _close(val, ref, g, ref_g)
  assert float(ref_m["kl"]) > 1e-3  # the KL term is live
  for key in ref_m:
    np.testing.assert_allclose(np.asarray(m[key]), np.asarray(ref_m[key]), **TOL)
