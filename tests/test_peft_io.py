"""PEFT interop against `peft` itself (float32, max abs logit diff <= 1e-4).

ours -> PEFT: our exported HF base + our exported adapter, loaded by transformers +
`PeftModel.from_pretrained`, give our base+adapter logits; the merged export loads in
transformers with the same logits. PEFT -> ours: an adapter made with `peft.get_peft_model` (B
drawn nonzero), saved by PEFT, imports to PEFT's logits. Weights and adapters are drawn at a
scale where a mis-mapped or mis-transposed tensor or a wrong scaling would move logits by >> 1e-4.
"""
import json
import os

import jax
import numpy as np
import peft
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from citrus_jax import hf, peft_io
from citrus_jax.model import lora, transformer
from citrus_jax.model.config import get_preset

TOL = 1e-4
_fwd = jax.jit(transformer.forward, static_argnames="cfg")
_TOKENS = np.random.RandomState(0).randint(0, 256, size=(2, 12)).astype(np.int32)


def _diff(a, b) -> float:
  return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max())


def _big(tree, seed, scale):
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [scale * jax.random.normal(k, x.shape, x.dtype)
                                      for k, x in zip(keys, leaves)])


def _base(preset):
  cfg = get_preset(preset)
  params = transformer.init_params(cfg, jax.random.key(0))
  layers = dict(params["layers"])
  for k in lora.PROJECTIONS:
    layers[k] = 0.15 * jax.random.normal(jax.random.key(hash(k) % 1000), layers[k].shape)
  return cfg, dict(params, layers=layers)


def _hf_logits(model) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(_TOKENS, dtype=torch.long)).logits.float().numpy()


def _load(path):
  return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.mark.parametrize("preset,targets,rslora", [
    ("tiny", ("q", "k", "v", "o", "gate", "up", "down"), False),
    ("tiny_qwen", ("q", "v", "down"), True),  # q/k/v biases, tied embeddings, rsLoRA scaling
])
def test_ours_to_peft(tmp_path, preset, targets, rslora):
  cfg, base = _base(preset)
  lcfg = lora.LoraConfig(rank=4, alpha=8.0, targets=targets, rslora=rslora)
  adapters = _big(lora.init_adapters(cfg, lcfg, jax.random.key(1)), 2, 0.3)
  combined = lora.combine(adapters, base, lcfg)
  ours = np.asarray(_fwd(combined, _TOKENS, cfg=cfg)[0])
  base_logits = np.asarray(_fwd(base, _TOKENS, cfg=cfg)[0])
  assert _diff(ours, base_logits) > 0.1  # the adapters matter at this scale

  paths = peft_io.export_all(str(tmp_path / "export"), adapters, base, cfg, lcfg)
  conf = json.load(open(os.path.join(paths["peft"], "adapter_config.json")))
  assert conf["r"] == 4 and conf["use_rslora"] == rslora
  assert conf["base_model_name_or_path"] == paths["base"]
  names = load_file(os.path.join(paths["peft"], "adapter_model.safetensors"))
  assert "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight" in names
  assert names["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"].shape == (
      cfg.q_dim, 4)

  hf_base = _load(paths["base"])
  assert _diff(_hf_logits(hf_base), base_logits) <= TOL
  model = peft.PeftModel.from_pretrained(hf_base, paths["peft"]).eval()
  d = _diff(_hf_logits(model), ours)
  print(f"{preset}: PEFT(our base + our adapter) vs ours: {d:.2e}")
  assert d <= TOL
  merged = _load(paths["merged"])
  d = _diff(_hf_logits(merged), ours)
  print(f"{preset}: transformers(our merged) vs ours: {d:.2e}")
  assert d <= TOL


def test_peft_to_ours(tmp_path):
  cfg, base = _base("tiny")
  base_dir = hf.save(str(tmp_path / "base"), base, cfg)
  torch.manual_seed(0)
  model = _load(base_dir)
  pcfg = peft.LoraConfig(r=4, lora_alpha=12, target_modules=["q_proj", "o_proj", "up_proj"],
                         lora_dropout=0.1, task_type="CAUSAL_LM")
  pm = peft.get_peft_model(model, pcfg)
  with torch.no_grad():
    for name, p in pm.named_parameters():
      if "lora_B" in name:
        p.copy_(0.3 * torch.randn_like(p))
  pm.eval()
  ref = _hf_logits(pm)
  pm.save_pretrained(str(tmp_path / "adapter"))

  lcfg, adapters = peft_io.import_adapter(str(tmp_path / "adapter"), cfg)
  assert lcfg.targets == ("q", "o", "up") and lcfg.rank == 4 and lcfg.scale == 3.0
  assert lcfg.dropout == pytest.approx(0.1)
  ours = np.asarray(_fwd(lora.combine(adapters, base, lcfg), _TOKENS, cfg=cfg)[0])
  d = _diff(ours, ref)
  print(f"ours(PEFT adapter) vs PEFT: {d:.2e}")
  assert d <= TOL
  assert _diff(ours, _fwd(base, _TOKENS, cfg=cfg)[0]) > 0.1


def test_round_trip_and_errors(tmp_path):
  cfg, _ = _base("tiny")
  lcfg = lora.LoraConfig(rank=2, alpha=4.0, targets=("k", "gate"))
  adapters = _big(lora.init_adapters(cfg, lcfg, jax.random.key(1)), 3, 0.1)
  out = peft_io.export_adapter(str(tmp_path / "a"), adapters, cfg, lcfg)
  lcfg2, back = peft_io.import_adapter(out, cfg)
  assert lcfg2 == lcfg
  for x, y in zip(jax.tree.leaves(adapters), jax.tree.leaves(back)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

  conf_path = os.path.join(out, "adapter_config.json")
  conf = json.load(open(conf_path))
  json.dump({**conf, "use_dora": True}, open(conf_path, "w"))
  with pytest.raises(ValueError, match=r"adapter_config.json: field 'use_dora'"):
    peft_io.import_adapter(out, cfg)
  json.dump({**conf, "target_modules": ["q_proj"]}, open(conf_path, "w"))
  with pytest.raises(ValueError, match=r"holds adapters for \['gate', 'k'\]"):
    peft_io.import_adapter(out, cfg)
  json.dump(conf, open(conf_path, "w"))
  weights = os.path.join(out, "adapter_model.safetensors")
  tensors = load_file(weights)
  tensors["base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"] = np.zeros(
      (3, 64), np.float32)
  save_file(tensors, weights)
  with pytest.raises(ValueError, match=r"lora_A of self_attn.k_proj has shape"):
    peft_io.import_adapter(out, cfg)
  del tensors["base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"]
  save_file(tensors, weights)
  with pytest.raises(ValueError, match=r"no lora_A tensor for self_attn.k_proj in layers \[0\]"):
    peft_io.import_adapter(out, cfg)
  with pytest.raises(ValueError, match=r"is for layer 5"):
    save_file({"base_model.model.model.layers.5.mlp.gate_proj.lora_A.weight":
               np.zeros((2, 64), np.float32)}, weights)
    peft_io.import_adapter(out, cfg)


@pytest.mark.slow
def test_lora_tiny_cli_contract(tmp_path):
  """`python -m citrus_jax.main --config=configs/sft.py:lora_tiny` leaves export/{peft,base,
  merged}: PEFT on the base gives the merged model's logits, and a rerun does nothing new."""
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "citrus_jax.main", "--config=configs/sft.py:lora_tiny",
         f"--config.workdir={workdir}", "--config.progress=False", "--config.train.num_steps=6"]
  out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0, out.stderr[-3000:]
  export = workdir / "export"
  assert f"LoRA export: PEFT adapter {export / 'peft'}" in out.stdout
  for name in ("adapter_config.json", "adapter_model.safetensors"):
    assert (export / "peft" / name).exists()
  base = _load(str(export / "base"))
  merged = _load(str(export / "merged"))
  adapted = peft.PeftModel.from_pretrained(base, str(export / "peft")).eval()
  assert _diff(_hf_logits(adapted), _hf_logits(merged)) <= TOL
  assert _diff(_hf_logits(merged), _hf_logits(_load(str(export / "base")))) > 1e-4  # trained
  tok = transformers.AutoTokenizer.from_pretrained(str(export / "merged"))
  assert tok("chest pain")["input_ids"]
  again = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0 and "already complete" in again.stdout
  assert "LoRA export" not in again.stdout
