"""Splash attention (Pallas interpret mode on CPU) against the einsum path, fp32.

Packed rows (several documents per row), padded tails and GQA (4 query heads on 2 kv heads);
outputs to 1e-5 and input gradients to 1e-4 on the real (non-padding) tokens.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from citrus_jax import sharding
from citrus_jax.model import splash, transformer
from citrus_jax.model.config import get_preset

CFG = get_preset("tiny", attention="einsum")  # H=4, K=2, E=16
T = 256  # two 128-blocks, so block skipping (causal, cross-document) is exercised


def _segments() -> np.ndarray:
  row0 = [1] * 100 + [2] * 100 + [0] * 56          # two documents, padded tail
  row1 = [1] * 30 + [2] * 150 + [3] * 60 + [0] * 16  # three documents, padded tail
  return np.asarray([row0, row1], np.int32)


def _mask(seg_BT: jax.Array) -> jax.Array:
  """The self-attention mask exactly as transformer.forward builds it without a cache."""
  slots = jnp.arange(seg_BT.shape[1])
  return ((slots[:, None] >= slots[None, :])[None]
          & (seg_BT[:, :, None] == seg_BT[:, None, :]) & (seg_BT[:, None, :] != 0))


def _qkv(seed: int = 0):
  rng = np.random.default_rng(seed)
  B, H, K, E = 2, CFG.n_heads, CFG.n_kv_heads, CFG.head_dim
  q = jnp.asarray(rng.normal(size=(B, T, H, E)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(B, T, K, E)), jnp.float32)
  v = jnp.asarray(rng.normal(size=(B, T, K, E)), jnp.float32)
  return q, k, v


def _real(seg: np.ndarray) -> np.ndarray:
  """[B*T, 1] 1.0 on real tokens (the rows of the flattened [B*T, H*E] output)."""
  return (seg.reshape(-1, 1) != 0).astype(np.float32)


def test_outputs_match_einsum_on_packed_padded_gqa_rows():
  q, k, v = _qkv()
  seg = _segments()
  ref = transformer._attention(q, k, v, _mask(jnp.asarray(seg)), CFG)
  out = jax.jit(splash.attention, static_argnames="interpret")(q, k, v, jnp.asarray(seg),
                                                               interpret=True)
  assert out.shape == ref.shape == (2 * T, CFG.n_heads * CFG.head_dim)
  real = _real(seg)[:, 0] > 0
  np.testing.assert_allclose(np.asarray(out)[real], np.asarray(ref)[real], atol=1e-5, rtol=1e-5)
  # and the documents really are separated: a wrong mask changes the outputs a lot
  merged = jnp.asarray(np.where(seg > 0, 1, 0).astype(np.int32))
  wrong = splash.attention(q, k, v, merged, interpret=True)
  assert np.max(np.abs(np.asarray(wrong)[real] - np.asarray(ref)[real])) > 1e-2


def test_input_grads_match_einsum():
  q, k, v = _qkv(1)
  seg = _segments()
  w = jnp.asarray(np.random.default_rng(2).normal(size=(2 * T, CFG.n_heads * CFG.head_dim)),
                  jnp.float32) * _real(seg)  # padding outputs carry no loss, as in training
  mask = _mask(jnp.asarray(seg))

  def ref_loss(q, k, v):
    return jnp.sum(transformer._attention(q, k, v, mask, CFG) * w)

  def splash_loss(q, k, v):
    return jnp.sum(splash.attention(q, k, v, jnp.asarray(seg), interpret=True) * w)

  ref = jax.jit(jax.grad(ref_loss, argnums=(0, 1, 2)))(q, k, v)
  got = jax.jit(jax.grad(splash_loss, argnums=(0, 1, 2)))(q, k, v)
  for name, g, r in zip("qkv", got, ref):
    assert np.max(np.abs(np.asarray(r))) > 1e-3, name  # a real gradient, not all zeros
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-4, rtol=1e-4, err_msg=name)


def test_segment_ids_from_mask_names_each_document():
  seg = _segments()
  ids = np.asarray(splash.segment_ids_from_mask(_mask(jnp.asarray(seg))))
  assert ((ids == 0) == (seg == 0)).all()
  for b in range(seg.shape[0]):  # same document <=> same id
    same_doc = seg[b][:, None] == seg[b][None, :]
    same_id = ids[b][:, None] == ids[b][None, :]
    real = (seg[b][:, None] > 0) & (seg[b][None, :] > 0)
    assert (same_doc == same_id)[real].all()
  # a document that resumes after another one (not contiguous) keeps one id
  odd = jnp.asarray([[1] * 128 + [2] * 64 + [1] * 64], jnp.int32)
  odd_ids = np.asarray(splash.segment_ids_from_mask(_mask(odd)))[0]
  assert odd_ids[0] == odd_ids[-1] != odd_ids[150]


def test_sharded_under_a_mesh_matches_unsharded():
  """Under a (data, fsdp, tensor) mesh the kernel runs per shard (batch on fsdp, heads on
  tensor) inside shard_map; the result is the same numbers."""
  q, k, v = _qkv(3)
  seg = jnp.asarray(_segments())
  plain = splash.attention(q, k, v, seg, interpret=True)
  mesh = sharding.make_mesh((1, 2, 2), devices=jax.devices()[:4])
  with jax.set_mesh(mesh):
    out = jax.jit(lambda *a: splash.attention(*a, interpret=True))(q, k, v, seg)
  np.testing.assert_allclose(np.asarray(out), np.asarray(plain), atol=1e-6, rtol=1e-6)


def test_model_forward_and_loss_grads_with_splash_patched_in(monkeypatch):
  """The whole decoder with `_attention` swapped for `attention_from_mask` (the wiring plan
  mode uses): same logits on real tokens and same parameter gradients of a masked loss."""
  cfg = get_preset("tiny", attention="einsum", n_layers=1)
  params = transformer.init_params(cfg, jax.random.key(0))
  seg = _segments()[:, :128].copy()
  seg[0, 100:] = 0
  tokens = jnp.asarray(np.random.default_rng(4).integers(3, cfg.vocab_size, seg.shape), jnp.int32)
  positions = jnp.asarray(np.concatenate([np.arange(100), np.arange(28)])[None].repeat(2, 0))
  real = jnp.asarray(seg != 0, jnp.float32)

  def loss(p):
    logits, _ = transformer.forward(p, tokens, cfg, positions_BT=positions,
                                    segment_ids_BT=jnp.asarray(seg))
    lp = jax.nn.log_softmax(logits, -1)[..., 5]
    return -(lp * real).sum(), logits

  ref_grads, ref_logits = jax.grad(loss, has_aux=True)(params)
  monkeypatch.setattr(transformer, "_attention",
                      lambda q, k, v, m, c: splash.attention_from_mask(q, k, v, m, c,
                                                                       interpret=True))
  grads, logits = jax.grad(loss, has_aux=True)(params)
  r = np.asarray(seg != 0)
  np.testing.assert_allclose(np.asarray(logits)[r], np.asarray(ref_logits)[r], atol=1e-5)
  for (path, g), r_ in zip(jax.tree.leaves_with_path(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r_), atol=1e-4, rtol=1e-4,
                               err_msg=jax.tree_util.keystr(path))


def test_bad_lengths_are_refused_with_the_reason():
  q, k, v = _qkv()
  with pytest.raises(ValueError, match="multiple of 128"):
    splash.attention(q[:, :100], k[:, :100], v[:, :100], jnp.ones((2, 100), jnp.int32),
                     interpret=True)
  assert splash.supported(8192, 8192) and not splash.supported(8192, 8320)
  assert splash.target_platform() == "cpu"
