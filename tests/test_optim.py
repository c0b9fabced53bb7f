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


def _hf_decayed(cfg_name, **mask_kw):
  """Our mask, as the set of Hugging Face parameter names it decays (via hf.py's mapping)."""
  from citrus_jax import hf
  cfg = mc.get_preset(cfg_name)
  params = transformer.init_params(cfg, jax.random.key(0))
  mask = optim.decay_mask(params, **mask_kw)
  as_values = jax.tree.map(lambda m, x: np.full(x.shape, float(m), np.float32), mask, params)
  sd = hf.params_to_state_dict(as_values, cfg.replace(param_dtype="float32"))
  assert all(np.all(v == v.flat[0]) for v in sd.values())
  return cfg, {k for k, v in sd.items() if v.flat[0] == 1.0}, set(sd)


def _hf_model(cfg):
  transformers = pytest.importorskip("transformers")
  from citrus_jax import hf_config
  hf_cfg = hf_config.config_to_hf(cfg)
  kind = hf_cfg["model_type"]
  model_cls, config_cls = {"llama": (transformers.LlamaForCausalLM, transformers.LlamaConfig),
                           "qwen2": (transformers.Qwen2ForCausalLM, transformers.Qwen2Config)}[kind]
  return model_cls(config_cls(**{k: v for k, v in hf_cfg.items() if k != "architectures"}))


@pytest.mark.parametrize("preset", ["tiny", "tiny_qwen"])
def test_decay_masks_match_the_reference_rules(preset):
  """Default = HF Trainer's own get_decay_parameter_names (the reference RL's TRL trainer);
  decay_norms=True, decay_biases=False = the reference SFT loop's rule, `no_decay = ["bias",
  "LayerNorm.weight"]` as substrings, both applied to the transformers model's own names."""
  transformers = pytest.importorskip("transformers")
  cfg, ours_default, names = _hf_decayed(preset)
  model = _hf_model(cfg)
  hf_names = [n for n, _ in model.named_parameters()]
  assert names <= set(hf_names)
  trainer = set(transformers.Trainer.get_decay_parameter_names(None, model))
  assert ours_default == trainer & names
  reference_sft = {n for n in hf_names if not any(nd in n for nd in ["bias", "LayerNorm.weight"])}
  _, ours_sft, _ = _hf_decayed(preset, decay_norms=True, decay_biases=False)
  assert ours_sft == reference_sft & names
  assert any("layernorm" in n for n in ours_sft)  # the reference SFT decays RMSNorm weights
  if preset == "tiny_qwen":
    assert not any(n.endswith(".bias") for n in ours_sft) and any(
        n.endswith(".bias") for n in names)


@pytest.mark.parametrize("decay_norms,decay_biases", [(None, None), (True, False)])
def test_make_optimizer_applies_the_mask(decay_norms, decay_biases):
  cfg = mc.get_preset("tiny_qwen")
  params = transformer.init_params(cfg, jax.random.key(0))
  params = jax.tree.map(lambda x: x + 1.0, params)  # norms and biases non-zero
  ocfg = _cfg(warmup_frac=0.0, schedule="constant", weight_decay=0.1, b1=0.9, b2=0.999,
              eps=1e-8, grad_clip=0.0, decay_norms_and_biases=False)
  if decay_norms is not None:
    ocfg.decay_norms, ocfg.decay_biases = decay_norms, decay_biases
  tx, _ = optim.make_optimizer(ocfg, 10)
  zero = jax.tree.map(np.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  moved = jax.tree.map(lambda u: bool(np.any(np.asarray(u) != 0)), updates)
  assert moved["layers"]["wq"] and moved["embed"]  # decoupled decay with zero gradients
  assert moved["final_norm"] == moved["layers"]["attn_norm"] == bool(decay_norms)
  assert not moved["layers"]["bq"]
