"""QLoRA storage: int8 and NF4 block-wise absmax, checked against an independent numpy version
of bitsandbytes' NF4 on the torch [out, in] layout, and the QLoRA forward: quantised base inside
the matmul == the dequantised float base (1e-5), and close to the float model (stated below)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from citrus_jax.model import lora, quant, transformer
from citrus_jax.model.config import get_preset

_TOKENS = np.random.RandomState(0).randint(0, 256, size=(2, 12)).astype(np.int32)

# max |logits(quantised) - logits(float)| / max |logits(float)| on the tiny model (measured:
# int8 ~0.9%, nf4 ~13%, with normal(0.02) weights and random LoRA adapters).
REL_TOL = {"int8": 0.02, "nf4": 0.2}


def _bnb_nf4_reference(w_torch: np.ndarray, block: int) -> np.ndarray:
  """bitsandbytes' algorithm on an [out, in] weight: flatten row-major, blocks of `block`,
  absmax per block, nearest NF4 level; returns the dequantised [out, in] weight."""
  flat = w_torch.reshape(-1, block).astype(np.float32)
  absmax = np.abs(flat).max(axis=1, keepdims=True)
  normed = flat / absmax
  codes = np.abs(normed[:, :, None] - quant.NF4_LEVELS[None, None, :]).argmin(-1)
  return (quant.NF4_LEVELS[codes] * absmax).reshape(w_torch.shape)


def test_nf4_matches_the_bitsandbytes_algorithm():
  rng = np.random.RandomState(0)
  w = rng.standard_normal((3, 128, 96)).astype(np.float32) * 0.02  # [L, in, out]
  q = quant.quantize_layers(jnp.asarray(w), "nf4", 64)
  assert q["q"].dtype == jnp.uint8 and q["q"].shape == (3, 2, 32, 96)
  assert q["scale"].shape == (3, 2, 1, 96)
  ours = np.asarray(quant.dequantize(q))
  for layer in range(3):
    ref = _bnb_nf4_reference(w[layer].T, 64).T  # torch layout [out, in] -> ours
    np.testing.assert_allclose(ours[layer], ref, rtol=0, atol=1e-7)
  assert quant.kind_of(q) == "nf4"


def test_int8_round_trip_and_bytes():
  rng = np.random.RandomState(1)
  w = jnp.asarray(rng.standard_normal((2, 64, 32)).astype(np.float32))
  q = quant.quantize(w, "int8", 32)
  assert q["q"].dtype == jnp.int8 and quant.kind_of(q) == "int8"
  deq = quant.dequantize(q)
  step = np.repeat(np.asarray(q["scale"]), 32, axis=-2).reshape(2, 64, 32)  # absmax / 127
  assert np.all(np.abs(np.asarray(deq - w)) <= step / 2 + 1e-7)
  # block maxima are exact
  blocks = np.asarray(w).reshape(2, 2, 32, 32)
  idx = np.abs(blocks).argmax(axis=2)
  got = np.take_along_axis(np.asarray(deq).reshape(2, 2, 32, 32), idx[:, :, None], 2)
  np.testing.assert_allclose(got[:, :, 0], np.take_along_axis(blocks, idx[:, :, None], 2)[:, :, 0],
                             rtol=1e-6)
  n = 2 * 64 * 32
  assert quant.nbytes(q) == n + 4 * n // 32
  assert quant.nbytes(quant.quantize(w, "nf4", 64)) == n // 2 + 4 * n // 64
  zero = quant.dequantize(quant.quantize(jnp.zeros((64, 8)), "nf4", 64))
  assert not np.asarray(zero).any()


def test_bad_block():
  with pytest.raises(ValueError, match=r"input dimension 48 .* block size 64"):
    quant.quantize(jnp.zeros((48, 8)), "nf4", 64)
  with pytest.raises(ValueError, match=r"kind 'int4'"):
    quant.quantize(jnp.zeros((64, 8)), "int4", 64)


@pytest.mark.parametrize("kind", ["int8", "nf4"])
@pytest.mark.parametrize("preset", ["tiny", "tiny_qwen"])
def test_qlora_forward(kind, preset):
  cfg = get_preset(preset)
  base = transformer.init_params(cfg, jax.random.key(0))
  lcfg = lora.LoraConfig(rank=4, alpha=8.0, quant=kind, quant_block=32)
  adapters = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(2), x.shape),
                          lora.init_adapters(cfg, lcfg, jax.random.key(1)))
  qbase = lora.quantize_base(base, lcfg)
  assert quant.is_quantized(qbase["layers"]["w_up"])
  assert quant.nbytes(qbase["layers"]) < quant.nbytes(base["layers"]) / (3 if kind == "nf4" else
                                                                          2)
  fwd = jax.jit(transformer.forward, static_argnums=2)
  qlora = np.asarray(fwd(lora.combine(adapters, qbase, lcfg), _TOKENS, cfg)[0])
  dequantised_base = lora.merge(qbase)  # plain float kernels holding the quantised values
  dq = np.asarray(fwd(lora.combine(adapters, dequantised_base, lcfg), _TOKENS, cfg)[0])
  np.testing.assert_allclose(qlora, dq, atol=1e-5)
  ref = np.asarray(fwd(lora.combine(adapters, base, lcfg), _TOKENS, cfg)[0])
  rel = np.linalg.norm(qlora - ref) / np.linalg.norm(ref)
  print(f"{preset} {kind}: ||logit error|| / ||logits|| = {rel:.4f}, max abs error "
        f"{np.abs(qlora - ref).max():.4f} (max |logit| {np.abs(ref).max():.3f})")
  assert rel < REL_TOL[kind]
  assert rel > 1e-5  # it is quantised
  # gradients flow into the adapters through the quantised base
  g = jax.grad(lambda ad: fwd(lora.combine(ad, qbase, lcfg), _TOKENS, cfg)[0].sum())(adapters)
  assert np.abs(np.asarray(g["layers"]["wq"]["lora_b"])).max() > 0
