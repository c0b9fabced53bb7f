"""Decoder: published parameter counts, KV-cache decoding, packed-sequence isolation, numerics."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from citrus_jax.model import config as mc, transformer

PUBLISHED = {
    "llama3_1_8b": 8_030_261_248,
    "llama3_1_70b": 70_553_706_496,
    "qwen2_5_7b": 7_615_616_512,
    "qwen2_5_72b": 72_706_203_648,
    "llama3_2_1b": 1_235_814_400,
    # Qwen3: the Hub safetensors totals. 0.6B and 1.7B also ship a copy of the tied lm_head
    # (751_632_384 and 2_031_739_904 on the Hub), which we count once, as the unique weights.
    "qwen3_0_6b": 751_632_384 - 151936 * 1024,
    "qwen3_1_7b": 2_031_739_904 - 151936 * 2048,
    "qwen3_4b": 4_022_468_096,
    "qwen3_8b": 8_190_735_360,
    "qwen3_14b": 14_768_307_200,
    "qwen3_32b": 32_762_123_264,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_equal_published(name):
  assert transformer.count_params(mc.get_preset(name)) == PUBLISHED[name]


def test_demo_preset_is_cpu_sized():
  assert 5e6 <= transformer.count_params(mc.get_preset("demo")) <= 20e6


def _params(name="tiny", **kw):
  cfg = mc.get_preset(name, **kw)
  # Larger weights than the 0.02 init so logits differ clearly between positions.
  params = jax.tree.map(lambda x: x * 10 if x.ndim > 1 else x,
                        transformer.init_params(cfg, jax.random.key(0)))
  return cfg, params


@pytest.mark.parametrize("name", ["tiny", "tiny_qwen", "tiny_qwen3"])
def test_kv_cache_decoding_equals_full_forward(name):
  cfg, params = _params(name)
  tokens = np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 24))
  full, _ = transformer.forward(params, tokens, cfg)
  cache = transformer.init_cache(cfg, 2, 32)
  logits, cache = transformer.forward(params, tokens[:, :10], cfg, cache=cache)
  outs = [logits]
  step = jax.jit(lambda p, t, pos, c: transformer.forward(p, t, cfg, positions_BT=pos, cache=c))
  for t in range(10, 24):
    logits, cache = step(params, tokens[:, t:t + 1], jnp.full((2, 1), t), cache)
    outs.append(logits)
  np.testing.assert_allclose(np.concatenate(outs, 1), full, atol=1e-4, rtol=1e-4)
  assert int(cache["index"]) == 24


def test_packed_documents_do_not_see_each_other():
  cfg, params = _params()
  rng = np.random.RandomState(1)
  a, b = rng.randint(0, cfg.vocab_size, 7), rng.randint(0, cfg.vocab_size, 9)
  alone_a, _ = transformer.forward(params, a[None], cfg)
  alone_b, _ = transformer.forward(params, b[None], cfg)
  packed = np.concatenate([a, b, np.zeros(4, int)])[None]
  segments = np.array([[1] * 7 + [2] * 9 + [0] * 4])
  positions = np.array([list(range(7)) + list(range(9)) + [0] * 4])
  logits, _ = transformer.forward(params, packed, cfg, positions_BT=positions,
                                  segment_ids_BT=segments)
  np.testing.assert_allclose(logits[0, :7], alone_a[0], atol=1e-5)
  np.testing.assert_allclose(logits[0, 7:16], alone_b[0], atol=1e-5)
  assert np.isfinite(np.asarray(logits)).all()  # padding rows stay finite


def test_left_padded_prompt_matches_unpadded():
  cfg, params = _params()
  tokens = np.random.RandomState(2).randint(0, cfg.vocab_size, 6)
  ref, _ = transformer.forward(params, tokens[None], cfg)
  padded = np.concatenate([np.zeros(3, int), tokens])[None]
  logits, _ = transformer.forward(params, padded, cfg,
                                  positions_BT=np.array([[0, 0, 0, 0, 1, 2, 3, 4, 5]]),
                                  segment_ids_BT=np.array([[0, 0, 0] + [1] * 6]))
  np.testing.assert_allclose(logits[0, 3:], ref[0], atol=1e-5)


def test_scan_unrolled_and_remat_agree_including_gradients():
  cfg, params = _params()
  tokens = np.random.RandomState(3).randint(0, cfg.vocab_size, (2, 12))

  def loss(p, c):
    return transformer.forward(p, tokens, c)[0].mean()

  ref_val, ref_grad = jax.value_and_grad(loss)(params, cfg)
  for variant in (dict(scan_layers=False), dict(remat="full"), dict(remat="dots")):
    val, grad = jax.value_and_grad(loss)(params, cfg.replace(**variant))
    assert val == pytest.approx(float(ref_val), rel=1e-5), variant
    for g, r in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad)):
      np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-4)


def test_library_attention_equals_einsum_on_packed_padded_rows_with_gradients():
  """attention="xla" (jax.nn.dot_product_attention, the code path "cudnn" takes on a GPU)."""
  cfg, params = _params()
  tokens = np.random.RandomState(5).randint(0, cfg.vocab_size, (2, 20))
  segments = np.array([[1] * 7 + [2] * 9 + [0] * 4, [1] * 20])
  positions = np.array([list(range(7)) + list(range(9)) + [0] * 4, list(range(20))])
  weights = jnp.asarray(segments != 0, jnp.float32)[:, :, None]

  def loss(p, c):
    logits = transformer.forward(p, tokens, c, positions_BT=positions, segment_ids_BT=segments)[0]
    return (logits * weights).mean(), logits

  (ref_val, ref), ref_grad = jax.value_and_grad(loss, has_aux=True)(params, cfg)
  (val, logits), grad = jax.value_and_grad(loss, has_aux=True)(params,
                                                                cfg.replace(attention="xla"))
  real = segments != 0
  np.testing.assert_allclose(np.asarray(logits)[real], np.asarray(ref)[real], atol=1e-5)
  assert val == pytest.approx(float(ref_val), rel=1e-5)
  for g, r in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad)):
    np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-4)
  # "auto" picks cudnn only on a GPU in 16-bit compute; on CPU it is the einsum path.
  auto = cfg.replace(attention="auto")
  assert transformer.attention_kernel(auto, jnp.float32) == "einsum"
  expected = "cudnn" if jax.default_backend() == "gpu" else "einsum"
  assert transformer.attention_kernel(auto, jnp.bfloat16) == expected


def test_bf16_compute_stays_close_to_fp32():
  cfg, params = _params()
  tokens = np.random.RandomState(4).randint(0, cfg.vocab_size, (2, 16))
  ref, _ = transformer.forward(params, tokens, cfg)
  low, _ = transformer.forward(params, tokens, cfg.replace(compute_dtype="bfloat16"))
  assert low.dtype == jnp.float32  # logits are always returned in fp32
  agree = (np.argmax(low, -1) == np.argmax(ref, -1)).mean()
  assert agree > 0.9 and np.abs(np.asarray(low) - np.asarray(ref)).max() < 0.5 * np.abs(ref).max()


def test_bad_configs_are_rejected():
  with pytest.raises(ValueError, match="unknown model preset"):
    mc.get_preset("llama9")
  with pytest.raises(ValueError, match="multiple of n_kv_heads"):
    mc.get_preset("tiny", n_kv_heads=3)
  with pytest.raises(ValueError, match="remat"):
    mc.get_preset("tiny", remat="some")
  with pytest.raises(ValueError, match="attention="):
    mc.get_preset("tiny", attention="flash")
  with pytest.raises(ValueError, match="cudnn.*bfloat16"):
    mc.get_preset("tiny", attention="cudnn")
