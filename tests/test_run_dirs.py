"""run_dirs: serve, synth's local backend, eval and `hf_cli export` take a run dir, a stage dir, a
params dir or an HF dir, say which they found, and fail clearly on anything else.

The layouts are built as the stages write them (train/checkpoint.save_params, an Orbax
Checkpointer step, the resolved config.json that runtime.save_resolved_config writes, hf.save), on
the tiny preset, so each test takes seconds.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from citrus_jax import hf, hf_cli, run_dirs
from citrus_jax.infer import local
from citrus_jax.model import transformer
from citrus_jax.model.config import get_preset
from citrus_jax.train import checkpoint
from configs import base

_TOKENS = np.random.RandomState(0).randint(0, 256, size=(2, 9)).astype(np.int32)


def _params(cfg, seed):
  return transformer.init_params(cfg, jax.random.key(seed))


def _same(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _tokenizer_dir(path):
  import transformers
  from tokenizers import Tokenizer, models, pre_tokenizers
  tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(256)}, unk_token="w0"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0").save_pretrained(path)
  return path


def _resolved_config(path, tokenizer="", init_checkpoint=""):
  """What runtime.save_resolved_config writes: an ml_collections dump named config.json."""
  c = base.get_config()
  c.tokenizer.path = tokenizer
  c.init.checkpoint = init_checkpoint
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write(c.to_json_best_effort(indent=2))


def _stage(path, params, cfg, step, tokenizer, finished=True, init=""):
  _resolved_config(path, tokenizer, init)
  ckpt = checkpoint.Checkpointer(os.path.join(path, "checkpoints"), async_save=False)
  ckpt.save(step, {"params": params, "step": jnp.asarray(step)}, force=True)
  ckpt.close()
  if finished:
    checkpoint.save_params(path, params, cfg, extra={"stage": os.path.basename(path),
                                                     "step": step})


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
  """A pipeline-like run: cpt, sft/sft1, sft/sft3 finished, rl unfinished, export/hf."""
  root = tmp_path_factory.mktemp("runs")
  cfg = get_preset("tiny")
  tok = _tokenizer_dir(str(root / "tok"))
  run = str(root / "run")
  _resolved_config(run, tok)  # the pipeline's own resolved config.json (the reported bug)
  p = {name: _params(cfg, seed) for seed, name in enumerate(["cpt", "sft1", "sft3", "rl"])}
  _stage(os.path.join(run, "cpt"), p["cpt"], cfg, 4, tok)
  _stage(os.path.join(run, "sft", "sft1"), p["sft1"], cfg, 5, tok)
  _stage(os.path.join(run, "sft", "sft3"), p["sft3"], cfg, 6, tok)
  _stage(os.path.join(run, "rl"), p["rl"], cfg, 3, tok, finished=False,
         init=os.path.join(run, "sft", "sft3"))
  os.makedirs(os.path.join(run, "rejection"))  # a step dir without a model
  hf.save(os.path.join(run, "export", "hf"), p["cpt"], cfg)
  params_dir = str(root / "params")
  checkpoint.save_params(params_dir, p["sft1"], cfg)
  return dict(root=root, run=run, cfg=cfg, tok=tok, params=p, params_dir=params_dir)


def test_each_layout_resolves(layouts):
  run = layouts["run"]
  r = run_dirs.resolve(run)  # unfinished rl is passed over: the last FINISHED stage is sft3
  assert (r.kind, r.fmt, r.load_dir) == ("run", "params", os.path.join(run, "sft", "sft3"))
  assert r.tokenizer == layouts["tok"] and r.step == 6
  line = r.describe()
  assert line.startswith(f"[checkpoint] {run}: a run dir, using its last finished stage sft3 "
                         f"({run}/sft/sft3, step 6), loading params/"), line
  r = run_dirs.resolve(os.path.join(run, "cpt"))
  assert (r.kind, r.fmt, r.stage, r.step) == ("stage", "params", "cpt", 4)
  r = run_dirs.resolve(os.path.join(run, "rl"))
  assert (r.kind, r.fmt, r.step) == ("stage", "checkpoint", 3)
  assert "has not finished" in r.describe()
  r = run_dirs.resolve(layouts["params_dir"])
  assert (r.kind, r.fmt, r.tokenizer) == ("params", "params", None)
  r = run_dirs.resolve(os.path.join(run, "export", "hf"))
  assert (r.kind, r.fmt) == ("hf", "hf")
  # A run dir whose only model is its HF export falls back to it.
  only_export = str(layouts["root"] / "only_export")
  hf.save(os.path.join(only_export, "export", "hf"), layouts["params"]["cpt"], layouts["cfg"])
  r = run_dirs.resolve(only_export)
  assert (r.kind, r.fmt, r.load_dir) == ("run", "hf", os.path.join(only_export, "export", "hf"))


def test_loads_the_right_params(layouts):
  run, p = layouts["run"], layouts["params"]
  cfg, params = run_dirs.load(run_dirs.resolve(run))
  assert _same(params, p["sft3"]) and cfg == layouts["cfg"]
  cfg, params = run_dirs.load(run_dirs.resolve(os.path.join(run, "rl")))  # from checkpoints/3
  assert _same(params, p["rl"]) and cfg.d_model == layouts["cfg"].d_model
  assert not _same(p["rl"], p["sft3"])


def test_load_model_serves_a_run_dir(layouts, capsys):
  """The reported bug: the run's resolved config.json was taken for an HF config."""
  cfg, params, tok = local.load_model(layouts["run"])
  assert _same(params, layouts["params"]["sft3"]) and tok.vocab_size == 256
  assert "a run dir" in capsys.readouterr().out
  with pytest.raises(ValueError, match="no tokenizer found"):
    local.load_model(layouts["params_dir"])
  cfg, params, tok = local.load_model(layouts["params_dir"], layouts["tok"])
  assert _same(params, layouts["params"]["sft1"])


def test_serve_cli_on_a_run_dir(layouts, monkeypatch, capsys):
  from citrus_jax.infer import serve
  ran = {}

  class FakeServer:
    def __init__(self, config):
      ran["config"] = config

    def run(self, sockets):
      ran["run"] = True
  monkeypatch.setattr(serve.uvicorn, "Server", FakeServer)
  monkeypatch.setattr(serve, "uvicorn_config", lambda app, cfg, **kw: app)  # no logging setup
  serve.main(["--checkpoint", layouts["run"], "--port", "0", "--no-warmup"])
  out = capsys.readouterr().out
  assert ran.get("run") and f"[checkpoint] {layouts['run']}: a run dir" in out
  assert "serving 'run'" in out
  empty = layouts["root"] / "empty_for_serve"
  empty.mkdir()
  with pytest.raises(SystemExit, match="holds none of"):
    serve.main(["--checkpoint", str(empty), "--no-warmup"])


def test_export_from_run_and_stage_dirs(layouts, capsys):
  import torch
  import transformers
  out = str(layouts["root"] / "exported")
  hf_cli.run(["export", "--checkpoint", layouts["run"], "--out", out])
  assert "a run dir" in capsys.readouterr().out
  model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  with torch.no_grad():
    theirs = model(torch.tensor(_TOKENS, dtype=torch.long)).logits.numpy()
  ours = np.asarray(transformer.forward(layouts["params"]["sft3"], _TOKENS,
                                        cfg=layouts["cfg"])[0])
  assert np.abs(theirs - ours).max() <= 1e-4
  assert os.path.isfile(os.path.join(out, "tokenizer.json"))  # the stage's tokenizer came along
  prov = json.load(open(os.path.join(out, hf.PROVENANCE_FILE)))
  assert prov["source_layout"] == "run" and prov["stage"] == "sft3"
  # An unfinished stage exports its latest checkpoint, and says so.
  out2 = str(layouts["root"] / "exported_rl")
  hf_cli.run(["export", "--checkpoint", os.path.join(layouts["run"], "rl"), "--out", out2])
  assert "has not finished" in capsys.readouterr().out
  cfg2, params2 = hf.load(out2)
  assert _same(params2, layouts["params"]["rl"])


def test_apply_to_init_for_eval(layouts):
  c = base.get_config()
  c.init.checkpoint = layouts["run"]
  run_dirs.apply_to_init(c)
  assert c.init.checkpoint == os.path.join(layouts["run"], "sft", "sft3")
  assert c.tokenizer.path == layouts["tok"]
  c = base.get_config()
  c.init.checkpoint = os.path.join(layouts["run"], "export", "hf")
  run_dirs.apply_to_init(c)
  assert (c.init.checkpoint, c.init.hf_dir) == ("", os.path.join(layouts["run"], "export", "hf"))
  c = base.get_config()
  c.init.checkpoint = os.path.join(layouts["run"], "rl")
  with pytest.raises(run_dirs.CheckpointPathError, match="has not finished"):
    run_dirs.apply_to_init(c)


def test_clear_errors(layouts, tmp_path):
  with pytest.raises(FileNotFoundError, match="not found"):
    run_dirs.resolve(str(tmp_path / "missing"))
  (tmp_path / "file.txt").write_text("x")
  with pytest.raises(run_dirs.CheckpointPathError, match="not a directory"):
    run_dirs.resolve(str(tmp_path / "file.txt"))
  started = str(tmp_path / "started")
  _resolved_config(started)
  with pytest.raises(run_dirs.CheckpointPathError, match="resolved config .no model_type."):
    run_dirs.resolve(started)
  with pytest.raises(ValueError, match="not a Hugging Face config"):
    hf.load(started)  # direct hf.load on a run dir names the cause too
  hf_only_config = tmp_path / "hfcfg"
  hf_only_config.mkdir()
  (hf_only_config / "config.json").write_text(json.dumps({"model_type": "llama"}))
  with pytest.raises(run_dirs.CheckpointPathError, match="no model.safetensors"):
    run_dirs.resolve(str(hf_only_config))
  several = tmp_path / "several"
  for name in ("alpha", "beta"):
    checkpoint.save_params(str(several / name), layouts["params"]["cpt"], layouts["cfg"])
  with pytest.raises(run_dirs.CheckpointPathError, match=r"several stages .*pass the stage dir"):
    run_dirs.resolve(str(several))
  bad_meta = tmp_path / "badmeta"
  (bad_meta / "params").mkdir(parents=True)
  (bad_meta / "model_config.json").write_text("{}")
  with pytest.raises(run_dirs.CheckpointPathError, match="field 'model'"):
    run_dirs.resolve(str(bad_meta))
