"""LoRA adapters as params leaves: init as PEFT, base + adapters == merged, dropout, gradients
only into adapters, shardings by the logical-axis rules, the sampler unmerged, config errors."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from citrus_jax import sharding
from citrus_jax.infer import sampler
from citrus_jax.model import lora, transformer
from citrus_jax.model.config import get_preset
from citrus_jax.train import losses

_TOKENS = np.random.RandomState(0).randint(0, 256, size=(2, 12)).astype(np.int32)
ALL = ("q", "k", "v", "o", "gate", "up", "down")


def _setup(preset="tiny", scale=0.2, **kw):
  cfg = get_preset(preset)
  base = transformer.init_params(cfg, jax.random.key(0))
  lcfg = lora.LoraConfig(rank=4, alpha=8.0, **kw)
  adapters = lora.init_adapters(cfg, lcfg, jax.random.key(1))
  adapters = jax.tree.map(lambda x: x + scale * jax.random.normal(jax.random.key(2), x.shape),
                          adapters)
  return cfg, base, lcfg, adapters


def _logits(params, cfg):
  return np.asarray(transformer.forward(params, _TOKENS, cfg)[0])


def test_init_as_peft():
  cfg = get_preset("tiny")
  lcfg = lora.LoraConfig(rank=8, alpha=16.0, targets=("q", "down"))
  ad = lora.init_adapters(cfg, lcfg, jax.random.key(0))["layers"]
  assert set(ad) == {"wq", "w_down"}
  a, b = np.asarray(ad["w_down"]["lora_a"]), np.asarray(ad["w_down"]["lora_b"])
  assert a.shape == (cfg.n_layers, cfg.d_ff, 8) and b.shape == (cfg.n_layers, 8, cfg.d_model)
  bound = 1 / math.sqrt(cfg.d_ff)  # kaiming_uniform(a=sqrt(5)) on [r, in]
  assert np.abs(a).max() <= bound and np.abs(a).max() > 0.9 * bound
  assert abs(a.std() - bound / math.sqrt(3)) < 0.1 * bound  # uniform, not normal
  assert not b.any()
  base = transformer.init_params(cfg, jax.random.key(0))
  np.testing.assert_array_equal(_logits(lora.combine(lora.init_adapters(cfg, lcfg, jax.random.key(0)),
                                                     base, lcfg), cfg), _logits(base, cfg))
  assert lora.LoraConfig(rank=16, alpha=32).scale == 2.0
  assert lora.LoraConfig(rank=16, alpha=32, rslora=True).scale == 8.0


@pytest.mark.parametrize("preset", ["tiny", "tiny_qwen", "tiny_qwen3"])
@pytest.mark.parametrize("scan", [True, False])
def test_unmerged_equals_merged(preset, scan):
  cfg, base, lcfg, adapters = _setup(preset)
  cfg = cfg.replace(scan_layers=scan)
  combined = lora.combine(adapters, base, lcfg)
  merged = lora.merge(combined)
  assert jax.tree.structure(merged) == jax.tree.structure(base)
  ours, ref = _logits(combined, cfg), _logits(merged, cfg)
  np.testing.assert_allclose(ours, ref, atol=2e-5)
  assert np.abs(ours - _logits(base, cfg)).max() > 0.05
  # by hand for one kernel: W + (alpha / r) A B
  w = base["layers"]["wq"] + 2.0 * jnp.einsum("lir,lro->lio", adapters["layers"]["wq"]["lora_a"],
                                             adapters["layers"]["wq"]["lora_b"])
  np.testing.assert_allclose(merged["layers"]["wq"], w, atol=1e-6)
  back_adapters, back_base = lora.split(combined)
  assert jax.tree.structure(back_base) == jax.tree.structure(base)
  for x, y in zip(jax.tree.leaves(back_adapters), jax.tree.leaves(adapters)):
    np.testing.assert_array_equal(x, y)


def test_dropout_only_with_a_key():
  cfg, base, _, adapters = _setup()
  lcfg = lora.LoraConfig(rank=4, alpha=8.0, dropout=0.5)
  plain = _logits(lora.combine(adapters, base, lcfg), cfg)
  k1 = _logits(lora.combine(adapters, base, lcfg, dropout_key=jax.random.key(3)), cfg)
  k1_again = _logits(lora.combine(adapters, base, lcfg, dropout_key=jax.random.key(3)), cfg)
  k2 = _logits(lora.combine(adapters, base, lcfg, dropout_key=jax.random.key(4)), cfg)
  np.testing.assert_array_equal(k1, k1_again)
  assert np.abs(k1 - plain).max() > 1e-3 and np.abs(k1 - k2).max() > 1e-3
  no_rate = lora.LoraConfig(rank=4, alpha=8.0)
  np.testing.assert_array_equal(
      _logits(lora.combine(adapters, base, no_rate, dropout_key=jax.random.key(3)), cfg), plain)
  # the adapter input is dropped with rate 0.5 and scaled by 2: check one kernel by hand
  w = lora.combine(adapters, base, lcfg, dropout_key=jax.random.key(5))["layers"]["wq"]
  w0 = jax.tree.map(lambda a: a[0], w)
  x = jax.random.normal(jax.random.key(6), (64, cfg.d_model))
  keep = jax.random.bernoulli(jax.random.wrap_key_data(w0["lora_dropout"]["key"]), 0.5, x.shape)
  want = (jnp.where(keep, 2 * x, 0) @ w0["lora_a"]) @ w0["lora_b"] * 2.0
  np.testing.assert_allclose(lora.lora_delta(x, w0), want, atol=1e-5)
  assert 0.4 < float(keep.mean()) < 0.6


def test_gradients_reach_only_adapters():
  cfg = get_preset("tiny")
  base = transformer.init_params(cfg, jax.random.key(0))
  lcfg = lora.LoraConfig(rank=4, alpha=8.0)
  adapters = lora.init_adapters(cfg, lcfg, jax.random.key(1))
  batch = {"inputs": _TOKENS, "targets": np.roll(_TOKENS, -1, 1),
           "loss_mask": np.ones_like(_TOKENS, np.float32),
           "positions": np.broadcast_to(np.arange(12), (2, 12)).astype(np.int32),
           "segment_ids": np.ones_like(_TOKENS)}
  loss_fn = losses.lm_loss_fn(cfg)
  totals = {"n_tokens": jnp.float32(24.0), "n_slots": jnp.float32(24.0)}
  grads = jax.grad(lambda ad: loss_fn(lora.combine(ad, base, lcfg), batch, totals)[0])(adapters)
  assert jax.tree.structure(grads) == jax.tree.structure(adapters)
  for g in jax.tree.leaves({k: v["lora_a"] for k, v in grads["layers"].items()}):
    assert not np.asarray(g).any()  # B = 0 at init: dL/dA = 0, as in PEFT
  for g in jax.tree.leaves({k: v["lora_b"] for k, v in grads["layers"].items()}):
    assert np.abs(np.asarray(g)).max() > 0


def test_shardings_follow_the_rules():
  mesh = sharding.make_mesh((1, 4, 2))
  cfg, base, lcfg, adapters = _setup()
  sh = lora.shardings_like(adapters, cfg, mesh)["layers"]
  P = jax.sharding.PartitionSpec
  assert sh["wq"]["lora_a"].spec == P(None, "fsdp", None)  # [L, embed, rank]
  assert sh["wq"]["lora_b"].spec == P(None, None, "tensor")  # [L, rank, q_heads]
  assert sh["w_down"]["lora_a"].spec == P(None, "tensor", None)  # [L, mlp, rank]
  combined = lora.combine(adapters, base, lcfg)
  csh = lora.shardings_like(combined, cfg, mesh)
  assert csh["layers"]["wq"]["w"].spec == sharding.param_shardings(cfg, mesh)["layers"]["wq"].spec
  placed = jax.device_put(combined, csh)
  np.testing.assert_allclose(np.asarray(jax.jit(transformer.forward, static_argnums=2)(
      placed, _TOKENS, cfg)[0]), _logits(combined, cfg), atol=2e-5)


def test_sampler_runs_unmerged():
  cfg, base, lcfg, adapters = _setup(scale=0.5)
  combined = lora.combine(adapters, base, lcfg)
  prompts = [[1, 5, 9], [3, 4]]
  got = sampler.generate(combined, cfg, prompts, max_new_tokens=6, stop_ids=())
  want = sampler.generate(lora.merge(combined), cfg, prompts, max_new_tokens=6, stop_ids=())
  plain = sampler.generate(base, cfg, prompts, max_new_tokens=6, stop_ids=())
  assert got.tokens == want.tokens and got.tokens != plain.tokens
  np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-4)
  mesh = sharding.make_mesh((2, 4, 1))
  on_mesh = sampler.generate(combined, cfg, prompts, max_new_tokens=6, stop_ids=(), mesh=mesh)
  assert on_mesh.tokens == got.tokens
  merged_by_sampler = sampler.generate(combined, cfg, prompts, max_new_tokens=6, stop_ids=(),
                                       merge_adapters=True)
  assert merged_by_sampler.tokens == got.tokens


def test_config_section():
  section = ml_collections.ConfigDict(dict(enabled=True, rank=4, alpha=8.0,
                                           targets="q_proj,v,down_proj", dropout=0.05,
                                           rslora=False, quant="none", quant_block=64,
                                           dtype="float32"))
  lcfg = lora.config_from(section)
  assert lcfg.targets == ("q", "v", "down") and lcfg.scale == 2.0
  assert lora.config_from(ml_collections.ConfigDict(dict(enabled=False))) is None
  assert lora.config_from(None) is None
  for field, value, match in (("rank", 0, r"config.model.lora.rank=0"),
                              ("targets", "q,lm_head", r"unknown \['lm_head'\]"),
                              ("quant", "int4", r"config.model.lora.quant='int4'"),
                              ("dropout", 1.0, r"config.model.lora.dropout=1.0")):
    bad = section.copy_and_resolve_references()
    bad[field] = value
    with pytest.raises(ValueError, match=match):
      lora.config_from(bad)
  bad = section.copy_and_resolve_references()
  bad.ranks = 3
  with pytest.raises(ValueError, match=r"unknown fields \['ranks'\]"):
    lora.config_from(bad)


# --------------------------------------------------------------------------- on the engine

def _engine_batches(n, seed=0, vocab=256, seq=32, batch=8):
  rng = np.random.RandomState(seed)
  out = []
  for _ in range(n):
    start, stride = rng.randint(0, vocab, (batch, 1)), rng.randint(1, 4, (batch, 1))
    row = (start + stride * np.arange(seq + 1)) % vocab
    out.append({"inputs": row[:, :-1].astype(np.int32), "targets": row[:, 1:].astype(np.int32),
                "positions": np.tile(np.arange(seq, dtype=np.int32), (batch, 1)),
                "segment_ids": np.ones((batch, seq), np.int32),
                "loss_mask": np.ones((batch, seq), np.float32)})
  return out


def _engine_config(num_steps, quant_kind="none"):
  from configs import base as base_config, sft as sft_config
  c = base_config.get_config()
  c.optim.update(lr=1e-2, warmup_steps=0, weight_decay=0.01)
  c.train.num_steps = num_steps
  c.train.log_every = 1
  c.checkpoint.every = 2
  c.progress = False
  c.tensorboard = False
  c.model.lora = sft_config.lora_section(True, rank=4, alpha=8.0, targets="q,v,down",
                                         dropout=0.1, quant=quant_kind)
  c.model.lora.quant_block = 32
  return c


def _engine_stage(batches, num_steps, cfg):
  import grain
  from citrus_jax.train import engine
  it = iter(grain.MapDataset.source(batches).to_iter_dataset())
  return engine.Stage(name="lora", loss_fn=losses.lm_loss_fn(cfg), train_iter=it,
                      num_steps=num_steps, init_params=engine.random_init(cfg, 0))


def _engine_losses(workdir):
  import os
  from citrus_jax.train import metrics_log
  rows = metrics_log.read_metrics(os.path.join(workdir, "metrics.jsonl"), "train/")
  return [rows[s]["train/loss"] for s in sorted(rows)]


# QLoRA-nf4 is the superset (the base is reloaded AND requantised on resume); plain LoRA runs
# the same path without the quantisation. Add "none" here to check it too (2x the time).
@pytest.mark.parametrize("quant_kind", ["nf4"])
def test_engine_trains_adapters_only_and_resumes_exactly(tmp_path, quant_kind):
  from citrus_jax import runtime
  from citrus_jax.train import checkpoint, engine
  cfg = get_preset("tiny")
  mesh = sharding.make_mesh((1, -1, 1))
  data = _engine_batches(8, seed=3)
  full = engine.train(_engine_config(8, quant_kind), cfg, _engine_stage(data, 8, cfg), mesh,
                      str(tmp_path / "full"))
  curve = _engine_losses(str(tmp_path / "full"))
  assert len(curve) == 8 and curve[-1] < curve[0]
  # the first run's data ends after 4 steps; a fresh stage resumes adapters, AdamW state,
  # dropout keys and data position from the same workdir
  part = str(tmp_path / "part")
  first = engine.train(_engine_config(8, quant_kind), cfg, _engine_stage(data[:4], 8, cfg), mesh,
                       part)
  assert first.step == 4
  resumed = engine.train(_engine_config(8, quant_kind), cfg, _engine_stage(data, 8, cfg), mesh,
                         part)
  assert resumed.step == 8
  np.testing.assert_array_equal(_engine_losses(part), curve)
  for a, b in zip(jax.tree.leaves(full.adapters), jax.tree.leaves(resumed.adapters)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # the train state holds the adapters and their moments only (the base has no AdamW state)
  assert set(full.adapters["layers"]) == {"wq", "wv", "w_down"}
  state_files = {p.name for p in (tmp_path / "full" / "checkpoints" / "8" / "state").iterdir()}
  n_state = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
      jax.eval_shape(lambda: lora.init_adapters(cfg, lora.config_from(
          _engine_config(8).model.lora), jax.random.key(0)))))
  assert n_state == lora.count(full.adapters) and n_state < transformer.count_params(cfg) / 10
  assert state_files  # written
  # params/ is base + adapters merged: it reproduces the adapted model's logits
  base = checkpoint.load_lora_base({"kind": "random", "seed": 0}, cfg,
                                   lora.config_from(_engine_config(8, quant_kind).model.lora))
  lcfg = lora.config_from(_engine_config(8, quant_kind).model.lora)
  adapted = _logits(lora.combine(full.adapters, base, lcfg), cfg)
  exported = checkpoint.load_params(str(tmp_path / "full"))
  np.testing.assert_allclose(_logits(exported, cfg), adapted, atol=2e-5)
  assert np.abs(adapted - _logits(lora.merge(base), cfg)).max() > 1e-3  # training moved it
  loaded = checkpoint.load_adapters(str(tmp_path / "full"), cfg, lcfg)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(full.adapters)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # resuming with another LoRA config is refused, naming the file
  other = _engine_config(8, quant_kind)
  other.model.lora.rank = 8
  with pytest.raises(runtime.ConfigError, match=r"lora/lora.json: the checkpoints here"):
    engine.train(other, cfg, _engine_stage(data, 8, cfg), mesh, part)
