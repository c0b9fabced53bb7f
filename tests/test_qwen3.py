"""Qwen3 dense: per-head q/k RMSNorm, head_dim != d_model / n_heads, tied and untied embeddings.

Every comparison is against transformers' Qwen3ForCausalLM on a tiny random config in float32
(max abs logit diff <= 1e-4; run with -s to see the diffs): a left-padded batch, HF load, our
export read back by transformers, an 8-device mesh, and greedy decoding through the sampler's
KV cache against generate(). Weights are re-drawn wider than the default init (the q/k norm
weights too), so a mis-mapped or skipped tensor could not hide under the tolerance.
"""
import importlib
import json
import os

import jax
import numpy as np
import pytest
import torch
import transformers

from citrus_jax import config_check, hf, runtime, sharding
from citrus_jax.infer import sampler
from citrus_jax.model import transformer
from citrus_jax.model.config import PRESETS, get_preset

TOL = 1e-4
_fwd = jax.jit(transformer.forward, static_argnames="cfg")
# head_dim 32 with hidden 64 and 4 heads: q_dim 128 != d_model, as in Qwen3-0.6B/4B/32B.
_TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=32,
             max_position_embeddings=128, rope_theta=1e6, rms_norm_eps=1e-6, bos_token_id=1,
             eos_token_id=2, pad_token_id=0)
CASES = {"tied": dict(tie_word_embeddings=True), "untied": dict(tie_word_embeddings=False)}
# Rows of different lengths, left-padded (pad id 0, segment 0).
_ROWS = [list(np.random.RandomState(s).randint(3, 256, size=n)) for s, n in
         ((0, 12), (1, 7), (2, 3))]
_WIDTH = max(map(len, _ROWS))


def _padded():
  tokens = np.zeros((len(_ROWS), _WIDTH), np.int32)
  mask = np.zeros_like(tokens)
  positions = np.zeros_like(tokens)
  for i, r in enumerate(_ROWS):
    tokens[i, _WIDTH - len(r):], mask[i, _WIDTH - len(r):] = r, 1
    positions[i, _WIDTH - len(r):] = np.arange(len(r))
  return tokens, mask, positions


def _hf_model(case: str, seed: int = 0, **overrides):
  torch.manual_seed(seed)
  config = transformers.Qwen3Config(**dict(_TINY, **CASES[case], **overrides))
  model = transformers.Qwen3ForCausalLM(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.copy_(1 + 0.3 * torch.randn_like(p) if "norm" in name else 0.15 * torch.randn_like(p))
  return model


def _hf_logits(model) -> np.ndarray:
  tokens, mask, positions = _padded()
  with torch.no_grad():
    out = model(torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(positions, dtype=torch.long))
  return out.logits.float().numpy()


def _our_logits(params, cfg) -> np.ndarray:
  tokens, mask, positions = _padded()
  return np.asarray(_fwd(params, tokens, cfg=cfg, positions_BT=positions, segment_ids_BT=mask)[0])


def _diff(a, b) -> float:
  """Max abs difference over the real (non-padding) tokens."""
  valid = _padded()[1].astype(bool)
  return float(np.abs(np.asarray(a)[valid] - np.asarray(b)[valid]).max())


def _reload(path):
  return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _json(path):
  with open(path) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
  """case -> (save_pretrained directory, reference logits on the padded batch, state dict)."""
  cache = {}

  def get(case):
    if case not in cache:
      model = _hf_model(case)
      path = str(tmp_path_factory.mktemp(case) / "hf")
      model.save_pretrained(path)
      cache[case] = (path, _hf_logits(model), model.state_dict())
    return cache[case]
  return get


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_matches_transformers(case, hf_dirs, tmp_path):
  path, ref, hf_state = hf_dirs(case)
  assert np.std(ref) > 0.3  # logits spread: a wrong tensor would show
  cfg, params = hf.load(path)
  assert cfg.family == "qwen3" and cfg.qk_norm and not cfg.qkv_bias
  assert cfg.head_dim == 32 and cfg.q_dim == 2 * cfg.d_model
  assert cfg.tie_embeddings == (case == "tied") and ("lm_head" in params) == (case == "untied")
  assert params["layers"]["q_norm"].shape == (2, 32) == params["layers"]["k_norm"].shape
  load_diff = _diff(_our_logits(params, cfg), ref)

  # The q/k norm is applied and mapped the right way round: without it, or with q and k
  # swapped, the logits are far off.
  layers = params["layers"]
  swapped = dict(params, layers=dict(layers, q_norm=layers["k_norm"], k_norm=layers["q_norm"]))
  assert _diff(_our_logits(swapped, cfg), ref) > 100 * TOL
  plain = dict(params, layers={k: v for k, v in layers.items() if k not in ("q_norm", "k_norm")})
  assert _diff(_our_logits(plain, cfg.replace(qk_norm=False)), ref) > 100 * TOL

  # HF names <-> params bit-exactly, from the in-memory state dict too.
  sd = {k: v.numpy() for k, v in hf_state.items()}
  params_sd = hf.params_from_state_dict(sd, cfg)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params),
                                                  jax.tree.leaves(params_sd)))
  ours_sd = hf.params_to_state_dict(params, cfg)
  for name, value in ours_sd.items():
    np.testing.assert_array_equal(value, sd[name], err_msg=name)
  assert set(sd) - set(ours_sd) <= {"lm_head.weight"}
  assert "model.layers.1.self_attn.k_norm.weight" in ours_sd

  out = hf.save(str(tmp_path / "export"), params, cfg)
  written = _json(os.path.join(out, "config.json"))
  assert written["model_type"] == "qwen3" and written["architectures"] == ["Qwen3ForCausalLM"]
  reloaded = _reload(out)
  assert type(reloaded).__name__ == "Qwen3ForCausalLM"
  save_diff = _diff(_hf_logits(reloaded), ref)
  cfg2, params2 = hf.load(out)
  assert cfg2 == cfg
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params),
                                                  jax.tree.leaves(params2)))
  print(f"\n[qwen3] {case}: load max|dlogit| = {load_diff:.2e}, "
        f"save->transformers {save_diff:.2e}")
  assert load_diff <= TOL and save_diff <= TOL


def test_padded_batch_equals_rows_alone(hf_dirs):
  """Padding changes nothing: each row alone (no padding, default positions) gives the same
  logits as its place in the left-padded batch."""
  path, ref, _ = hf_dirs("untied")
  cfg, params = hf.load(path)
  for i, row in enumerate(_ROWS):
    alone = np.asarray(_fwd(params, np.asarray([row], np.int32), cfg=cfg)[0])[0]
    np.testing.assert_allclose(alone, ref[i, _WIDTH - len(row):], atol=TOL)


def test_round_trip_on_8_device_mesh(hf_dirs, tmp_path):
  path, ref, _ = hf_dirs("untied")
  mesh = sharding.make_mesh((1, 4, 2))
  cfg, params = hf.load(path, mesh=mesh)
  want = sharding.param_shardings(cfg, mesh)
  for got, spec in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
    assert got.sharding.is_equivalent_to(spec, got.ndim), (got.sharding, spec)
  wq = params["layers"]["wq"]  # [L, D, q_dim] split 4 ways on D and 2 on q_dim
  assert wq.addressable_shards[0].data.shape == (cfg.n_layers, cfg.d_model // 4, cfg.q_dim // 2)
  assert len(params["layers"]["q_norm"].addressable_shards) == 8
  load_diff = _diff(_our_logits(params, cfg), ref)
  out = hf.save(str(tmp_path / "export"), params, cfg)
  save_diff = _diff(_hf_logits(_reload(out)), ref)
  print(f"\n[qwen3] mesh (1,4,2): load {load_diff:.2e}, save->transformers {save_diff:.2e}")
  assert load_diff <= TOL and save_diff <= TOL


def _hf_greedy(model, prompt, max_new_tokens):
  with torch.no_grad():
    out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt)),
                         max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=None,
                         pad_token_id=0, top_k=None, top_p=None, temperature=None)
  return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("case", list(CASES))
def test_greedy_kv_cache_decoding_matches_transformers_generate(case):
  model = _hf_model(case, seed=1)
  cfg = hf.config_from_hf(model.config.to_dict())
  assert cfg.qk_norm
  params = hf.params_from_state_dict(
      {k: v.detach().numpy() for k, v in model.state_dict().items()}, cfg)
  prompts = [[1] + r[:n] for r, n in zip(_ROWS, (3, 1, 10))]  # one batch, left-padded
  n = 12
  want = [_hf_greedy(model, p, n) for p in prompts]
  ours = sampler.generate(params, cfg, prompts, max_new_tokens=n, stop_ids=())
  assert ours.tokens == want
  # The decode path without the q/k norm would drift: the check has teeth.
  plain = dict(params, layers={k: v for k, v in params["layers"].items()
                               if k not in ("q_norm", "k_norm")})
  off = sampler.generate(plain, cfg.replace(qk_norm=False), prompts, max_new_tokens=n,
                         stop_ids=())
  assert off.tokens != want


def test_presets_config_json_round_trip():
  names = [n for n in PRESETS if n.startswith("qwen3_")]
  assert names == ["qwen3_0_6b", "qwen3_1_7b", "qwen3_4b", "qwen3_8b", "qwen3_14b", "qwen3_32b"]
  for name in names + ["tiny_qwen3"]:
    cfg = get_preset(name)
    hf_cfg = transformers.AutoConfig.for_model(**hf.config_to_hf(cfg))
    assert type(hf_cfg).__name__ == "Qwen3Config"
    assert hf.config_from_hf(hf_cfg.to_dict()) == cfg, name
    assert hf_cfg.head_dim == 128 or name == "tiny_qwen3"
    assert hf_cfg.tie_word_embeddings == (name in ("qwen3_0_6b", "qwen3_1_7b", "qwen3_4b",
                                                   "tiny_qwen3"))


def test_hub_style_config_json():
  """A config.json as the Hub ships it (Qwen3-0.6B's fields); head_dim defaults to 128."""
  hub = {"architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
         "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
         "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
         "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
         "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
         "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000,
         "sliding_window": None, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
         "use_cache": True, "use_sliding_window": False, "vocab_size": 151936}
  cfg = hf.config_from_hf(hub)
  assert cfg == get_preset("qwen3_0_6b", param_dtype="bfloat16")
  no_head_dim = {k: v for k, v in hub.items() if k != "head_dim"}
  assert hf.config_from_hf(no_head_dim).head_dim == 128  # Qwen3Config's default
  with pytest.raises(ValueError, match="'attention_bias' = True is not supported for qwen3"):
    hf.config_from_hf(dict(hub, attention_bias=True))
  with pytest.raises(ValueError, match="'use_sliding_window' = True is not supported"):
    hf.config_from_hf(dict(hub, use_sliding_window=True))
  with pytest.raises(ValueError, match="no Hugging Face architecture"):
    hf.config_to_hf(cfg.replace(qk_norm=False))
  with pytest.raises(ValueError, match="no Hugging Face architecture"):
    hf.config_to_hf(get_preset("tiny").replace(qk_norm=True))


def test_hub_checkpoint_with_tied_lm_head_copy(hf_dirs, tmp_path):
  """Qwen3-0.6B/1.7B ship lm_head.weight although tied; it is ignored on load."""
  from safetensors.numpy import load_file, save_file
  path, ref, _ = hf_dirs("tied")
  tensors = load_file(os.path.join(path, "model.safetensors"))
  assert "lm_head.weight" not in tensors
  tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
  d = tmp_path / "with_lm_head"
  d.mkdir()
  save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(path, "config.json")) as f, open(d / "config.json", "w") as g:
    g.write(f.read())
  cfg, params = hf.load(str(d))
  assert "lm_head" not in params and _diff(_our_logits(params, cfg), ref) <= TOL


# Stage presets: each Qwen3 preset is its Llama counterpart with the model swapped (8B for 8B,
# 32B on the 70B's 8-way tensor-parallel mesh), checked field by field.
_STAGE_PRESETS = {
    "sft": (("citrus_qwen3_8b", "citrus_llama3_1_8b"), ("citrus_qwen3_32b", "citrus_llama3_1_70b")),
    "rl": (("citrus_qwen3_8b", "citrus_8b"), ("citrus_qwen3_32b", "citrus_70b")),
    "grpo": (("qwen3_8b", "llama3_1_8b"), ("qwen3_32b", "llama3_1_70b")),
    "cpt": (("qwen3_8b", "llama3_1_8b"), ("qwen3_32b", "llama3_1_70b")),
    "eval": (("paper_qwen3_8b", "paper"), ("paper_qwen3_32b", "paper_70b")),
}


def _flat(d, prefix=""):
  out = {}
  for k, v in d.items():
    out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
  return out


@pytest.mark.parametrize("stage", list(_STAGE_PRESETS))
def test_stage_presets_mirror_llama(stage):
  module = importlib.import_module(f"configs.{stage}")
  for (ours, theirs), model in zip(_STAGE_PRESETS[stage], ("qwen3_8b", "qwen3_32b")):
    c = module.get_config(ours)
    a, b = _flat(c.to_dict()), _flat(module.get_config(theirs).to_dict())
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} == {"workdir", "model.preset"}
    assert c.model.preset == model and c.workdir.endswith(ours)
    cfg = runtime.model_config_from(c)
    assert cfg.family == "qwen3" and cfg.qk_norm and cfg == get_preset(model).replace(
        param_dtype=cfg.param_dtype, compute_dtype=cfg.compute_dtype, remat=cfg.remat,
        attention=cfg.attention, scan_layers=cfg.scan_layers)
    tensor = c.mesh.shape[2]
    assert tensor == (8 if model == "qwen3_32b" else 1)
    assert cfg.n_heads % tensor == cfg.n_kv_heads % tensor == cfg.d_ff % tensor == 0
    config_check.validate(c, 64)  # a v5p-128 (64 chips)
