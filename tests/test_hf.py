"""HF interop: random tiny transformers models -> our load -> logits; our save -> transformers.

Every comparison is against transformers itself (float32, max abs logit diff <= 1e-4; the diffs
are printed, run with -s to see them). Weights are re-drawn at a larger scale than the default
init so logits spread widely and a mis-mapped tensor could not hide under the tolerance.
"""
import json
import os

import jax
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from citrus_jax import hf, hf_cli, sharding
from citrus_jax.model import transformer
from citrus_jax.model.config import get_preset

TOL = 1e-4
_fwd = jax.jit(transformer.forward, static_argnames="cfg")
_TOKENS = np.random.RandomState(0).randint(0, 256, size=(2, 12)).astype(np.int32)

_COMMON = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
_LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 16}
CASES = {
    "llama": ("llama", dict(rope_theta=10000.0)),
    "llama_rope_llama3": ("llama", dict(rope_theta=500000.0, rope_scaling=_LLAMA3)),
    "llama_tied": ("llama", dict(tie_word_embeddings=True, rms_norm_eps=1e-5)),
    "qwen2_untied": ("qwen2", dict(rope_theta=1e6, bos_token_id=5, eos_token_id=[6, 7])),
    "qwen2_tied": ("qwen2", dict(rope_theta=1e6, tie_word_embeddings=True)),
}


def _hf_model(case: str, seed: int = 0):
  family, extra = CASES[case]
  config_cls, model_cls = ((transformers.LlamaConfig, transformers.LlamaForCausalLM)
                           if family == "llama" else
                           (transformers.Qwen2Config, transformers.Qwen2ForCausalLM))
  torch.manual_seed(seed)
  model = model_cls(config_cls(**_COMMON, **extra)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name else 0.15 * torch.randn_like(p))
  return model


def _hf_logits(model) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(_TOKENS, dtype=torch.long)).logits.float().numpy()


def _our_logits(params, cfg) -> np.ndarray:
  return np.asarray(_fwd(params, _TOKENS, cfg=cfg)[0])


def _diff(a, b) -> float:
  return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max())


def _json(path):
  with open(path) as f:
    return json.load(f)


def _reload(path):
  return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
  """case -> (directory written by transformers' save_pretrained, its reference logits)."""
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
  assert cfg.family == CASES[case][0] and cfg.qkv_bias == (cfg.family == "qwen2")
  assert cfg.tie_embeddings == case.endswith("_tied")
  assert ("lm_head" in params) != cfg.tie_embeddings
  assert (cfg.rope_scaling is not None) == ("llama3" in case)
  load_diff = _diff(_our_logits(params, cfg), ref)

  # Same params from the in-memory state dict; and back to HF names bit-exactly.
  sd = {k: v.numpy() for k, v in hf_state.items()}
  params_sd = hf.params_from_state_dict(sd, cfg)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params),
                                                  jax.tree.leaves(params_sd)))
  ours_sd = hf.params_to_state_dict(params, cfg)
  for name, value in ours_sd.items():
    np.testing.assert_array_equal(value, sd[name], err_msg=name)
  assert set(sd) - set(ours_sd) <= {"lm_head.weight"}

  out = hf.save(str(tmp_path / "export"), params, cfg, provenance={"step": 7})
  reloaded = _reload(out)
  save_diff = _diff(_hf_logits(reloaded), ref)
  gen = _json(os.path.join(out, "generation_config.json"))
  assert gen["eos_token_id"] == cfg.eos_token_id and gen["bos_token_id"] == cfg.bos_token_id
  prov = _json(os.path.join(out, hf.PROVENANCE_FILE))
  assert prov["step"] == 7 and len(prov["config_sha256"]) == 64
  print(f"\n[hf] {case}: load max|dlogit| = {load_diff:.2e}, save->transformers {save_diff:.2e}")
  assert load_diff <= TOL and save_diff <= TOL


def test_round_trip_on_8_device_mesh(hf_dirs, tmp_path):
  path, ref, _ = hf_dirs("qwen2_untied")
  mesh = sharding.make_mesh((1, 4, 2))
  cfg, params = hf.load(path, mesh=mesh)
  want = sharding.param_shardings(cfg, mesh)
  for got, spec in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
    assert got.sharding.is_equivalent_to(spec, got.ndim), (got.sharding, spec)
  wq = params["layers"]["wq"]  # [L, D, q_dim] split 4 ways on D and 2 on q_dim
  assert len(wq.addressable_shards) == 8
  assert wq.addressable_shards[0].data.shape == (cfg.n_layers, cfg.d_model // 4, cfg.q_dim // 2)
  load_diff = _diff(_our_logits(params, cfg), ref)
  out = hf.save(str(tmp_path / "export"), params, cfg)
  save_diff = _diff(_hf_logits(_reload(out)), ref)
  print(f"\n[hf] mesh (1,4,2): load {load_diff:.2e}, save->transformers {save_diff:.2e}")
  assert load_diff <= TOL and save_diff <= TOL


def test_sharded_safetensors_export(hf_dirs, tmp_path):
  path, ref, _ = hf_dirs("llama")
  cfg, params = hf.load(path)
  out = hf.save(str(tmp_path / "export"), params, cfg, max_shard_bytes=60_000)
  files = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
  assert len(files) >= 3 and "model.safetensors" not in files
  index = _json(os.path.join(out, "model.safetensors.index.json"))
  assert sorted(set(index["weight_map"].values())) == files
  for f in files:  # each shard within the limit (or a single tensor larger than it)
    tensors = load_file(os.path.join(out, f))
    assert len(tensors) == 1 or sum(t.nbytes for t in tensors.values()) <= 60_000
  hf_diff = _diff(_hf_logits(_reload(out)), ref)
  cfg2, params2 = hf.load(out)
  assert cfg2 == cfg
  ours_diff = _diff(_our_logits(params2, cfg2), ref)
  print(f"\n[hf] {len(files)} shards: transformers {hf_diff:.2e}, our load {ours_diff:.2e}")
  assert hf_diff <= TOL and ours_diff <= TOL


def test_bfloat16_saved_as_bfloat16(hf_dirs, tmp_path):
  path, ref, _ = hf_dirs("qwen2_tied")
  cfg, params = hf.load(path, dtype="bfloat16")
  assert params["embed"].dtype == jax.numpy.bfloat16
  out = hf.save(str(tmp_path / "bf16"), params, cfg)
  assert _json(os.path.join(out, "config.json"))["dtype"] == "bfloat16"
  model = transformers.AutoModelForCausalLM.from_pretrained(out)
  assert model.model.embed_tokens.weight.dtype == torch.bfloat16
  cfg2, params2 = hf.load(out)  # dtype None: the checkpoint's
  assert cfg2.param_dtype == "bfloat16"
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
    assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
  assert _diff(_hf_logits(model.float()), ref) < 0.5  # bf16 rounding only, not garbage


def test_config_formats_agree():
  # transformers 5 writes `rope_parameters`; Hub files `rope_theta` + `rope_scaling`.
  legacy = dict(_COMMON, architectures=["LlamaForCausalLM"], model_type="llama",
                rope_theta=500000.0, rope_scaling=dict(_LLAMA3), eos_token_id=[128001, 128009],
                torch_dtype="bfloat16")
  v5 = transformers.LlamaConfig(**dict(legacy, eos_token_id=[128001, 128009])).to_dict()
  assert "rope_parameters" in v5 and "rope_scaling" not in v5
  a, b = hf.config_from_hf(legacy), hf.config_from_hf(v5)
  assert a == b
  assert a.rope_scaling == (8.0, 1.0, 4.0, 16) and a.rope_theta == 500000.0
  assert a.eos_token_id == 128001 and a.head_dim == 16 and a.param_dtype == "bfloat16"
  # Our config.json read by transformers gives the same model, for every real preset.
  for name in ("llama3_2_1b", "llama3_1_8b", "qwen2_5_7b", "tiny_qwen"):
    cfg = get_preset(name)
    hf_cfg = transformers.AutoConfig.for_model(**hf.config_to_hf(cfg))
    assert hf.config_from_hf(hf_cfg.to_dict()) == cfg, name
    rope = hf_cfg.rope_parameters
    assert rope["rope_theta"] == cfg.rope_theta
    assert (rope["rope_type"] == "llama3") == (cfg.rope_scaling is not None)


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


def test_bad_config(tmp_path, hf_dirs):
  with pytest.raises(FileNotFoundError, match="config.json"):
    hf.load(str(tmp_path))
  bad = tmp_path / "bad"
  _write(str(bad / "config.json"), '{"model_type": "llama",\n "hidden_size": }')
  with pytest.raises(ValueError, match=r"config.json:2: malformed JSON"):
    hf.load(str(bad))
  good = _json(os.path.join(hf_dirs("llama")[0], "config.json"))
  with pytest.raises(ValueError, match=r"cfg.json: field 'architectures'.*MistralForCausalLM"):
    hf.config_from_hf(dict(good, architectures=["MistralForCausalLM"]), "cfg.json")
  with pytest.raises(ValueError, match="field 'model_type' = 'mistral'"):
    hf.config_from_hf({k: v for k, v in good.items() if k != "architectures"} |
                      {"model_type": "mistral"})
  with pytest.raises(ValueError, match="cfg.json: missing field 'hidden_size'"):
    hf.config_from_hf({k: v for k, v in good.items() if k != "hidden_size"}, "cfg.json")
  with pytest.raises(ValueError, match="rope_type' = 'yarn'"):
    hf.config_from_hf(dict(good, rope_parameters={"rope_type": "yarn", "factor": 4.0}))
  with pytest.raises(ValueError, match="missing field 'rope_scaling.factor'"):
    hf.config_from_hf(dict(good, rope_parameters=None, rope_scaling={"rope_type": "llama3"}))
  with pytest.raises(ValueError, match="'num_hidden_layers' = 'two' is not an integer"):
    hf.config_from_hf(dict(good, num_hidden_layers="two"))


def test_bad_weights(tmp_path, hf_dirs):
  src = hf_dirs("llama")[0]
  with open(os.path.join(src, "config.json")) as f:
    config = f.read()
  tensors = load_file(os.path.join(src, "model.safetensors"))

  def write(name, tensors):
    d = tmp_path / name
    _write(str(d / "config.json"), config)
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    return str(d)

  missing = "model.layers.1.mlp.up_proj.weight"
  d = write("missing", {k: v for k, v in tensors.items() if k != missing})
  with pytest.raises(ValueError, match=rf"missing/model.safetensors: missing tensor '{missing}'"):
    hf.load(d)
  wrong = "model.layers.0.self_attn.k_proj.weight"
  d = write("shape", dict(tensors, **{wrong: tensors[wrong][:16]}))
  with pytest.raises(ValueError, match=rf"shape/model.safetensors: tensor '{wrong}' has shape "
                                       r"\(16, 64\), expected \(32, 64\)"):
    hf.load(d)
  d = write("extra", dict(tensors, **{"model.layers.2.mlp.up_proj.weight": tensors[missing]}))
  with pytest.raises(ValueError, match="unexpected tensor 'model.layers.2.mlp.up_proj.weight'"):
    hf.load(d)
  # In a sharded checkpoint the error names the shard the index points to.
  cfg, params = hf.load(src)
  d = hf.save(str(tmp_path / "sharded"), params, cfg, max_shard_bytes=60_000)
  shard = _json(os.path.join(d, "model.safetensors.index.json"))["weight_map"][missing]
  kept = {k: v for k, v in load_file(os.path.join(d, shard)).items() if k != missing}
  save_file(kept, os.path.join(d, shard), metadata={"format": "pt"})
  with pytest.raises(ValueError, match=rf"sharded/{shard}: missing tensor '{missing}'"):
    hf.load(d)
  d = tmp_path / "bin"
  _write(str(d / "config.json"), config)
  _write(str(d / "pytorch_model.bin"), "")
  with pytest.raises(FileNotFoundError, match="PyTorch .bin weights only"):
    hf.load(str(d))


def test_failed_export_leaves_nothing(tmp_path, hf_dirs, monkeypatch):
  cfg, params = hf.load(hf_dirs("llama")[0])
  out = tmp_path / "export"
  calls = []

  def flaky_save_file(tensors, path, metadata=None):
    calls.append(path)
    if len(calls) == 2:
      raise OSError("disk full (injected)")
    save_file(tensors, path, metadata=metadata)

  monkeypatch.setattr(hf, "save_file", flaky_save_file)
  with pytest.raises(OSError, match="injected"):
    hf.save(str(out), params, cfg, max_shard_bytes=60_000)
  assert len(calls) == 2 and os.path.exists(calls[0]) is False  # the temp dir is gone too
  assert not out.exists() and os.listdir(tmp_path) == []
  monkeypatch.undo()

  class BrokenTokenizer:
    def save_hf(self, path):
      raise RuntimeError("tokenizer failed (injected)")

  with pytest.raises(RuntimeError, match="injected"):
    hf.save(str(out), params, cfg, tokenizer=BrokenTokenizer())
  assert os.listdir(tmp_path) == []
  # An existing export is kept unless overwrite=True, then replaced whole.
  hf.save(str(out), params, cfg)
  with pytest.raises(FileExistsError):
    hf.save(str(out), params, cfg)
  hf.save(str(out), params, cfg, max_shard_bytes=60_000, overwrite=True)
  assert "model.safetensors" not in os.listdir(out) and os.listdir(tmp_path) == ["export"]


def test_generation_config_and_tokenizer(tmp_path, hf_dirs):
  cfg, params = hf.load(hf_dirs("llama")[0])

  class ChatTokenizer:  # the interface of citrus_jax.tokenizer.Tokenizer that save uses
    stop_ids, pad_id = (2, 9), 3

    def save_hf(self, path):
      _write(os.path.join(path, "tokenizer.json"), "{}")

  out = hf.save(str(tmp_path / "e"), params, cfg, tokenizer=ChatTokenizer(),
                generation_config={"eos_token_id": [2, 5], "temperature": 0.6})
  gen = _json(os.path.join(out, "generation_config.json"))
  assert gen == {"bos_token_id": 1, "eos_token_id": [2, 5, 9], "pad_token_id": 3,
                 "temperature": 0.6}
  assert os.path.exists(os.path.join(out, "tokenizer.json"))
  assert transformers.GenerationConfig.from_pretrained(out).eos_token_id == [2, 5, 9]


def test_cli_import_export(tmp_path, hf_dirs):
  path, ref, _ = hf_dirs("qwen2_untied")
  tok_dir = tmp_path / "tok"
  from tokenizers import Tokenizer, models, pre_tokenizers
  vocab = {f"w{i}": i for i in range(256)}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0").save_pretrained(
      str(tok_dir))
  ckpt, out = str(tmp_path / "ckpt"), str(tmp_path / "export")
  hf_cli.run(["import", "--hf_dir", path, "--out", ckpt])
  assert os.path.isdir(os.path.join(ckpt, "params"))
  meta = _json(os.path.join(ckpt, "model_config.json"))
  assert meta["model"]["qkv_bias"] is True and meta["hf_source"] == os.path.abspath(path)
  hf_cli.run(["export", "--checkpoint", ckpt, "--out", out, "--tokenizer", str(tok_dir)])
  diff = _diff(_hf_logits(_reload(out)), ref)
  # (AutoTokenizer would pick Qwen2Tokenizer from config.json's model_type and ignore our
  # WordLevel tokenizer.json, so the fast class is named.)
  loaded_tok = transformers.PreTrainedTokenizerFast.from_pretrained(out)
  assert loaded_tok("w3 w200")["input_ids"] == [3, 200]
  prov = _json(os.path.join(out, hf.PROVENANCE_FILE))
  assert prov["source_checkpoint"] == os.path.abspath(ckpt)
  # The eos list of the source's generation config survives (config.json keeps its first id).
  assert _json(os.path.join(out, "generation_config.json"))["eos_token_id"] == [6, 7]
  assert _json(os.path.join(out, "config.json"))["eos_token_id"] == 6
  print(f"\n[hf] CLI import -> export: max|dlogit| = {diff:.2e}")
  assert diff <= TOL
