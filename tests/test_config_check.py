"""The config validation pass: each bad value is `config error: <field>: <why>`, exit 2, no
traceback, from the real command line (a few) and from `problems` (the rest, fast); and no
shipped preset trips it."""
import importlib
import math
import os
import pathlib
import subprocess
import sys

import pytest

from citrus_jax import config_check, runtime
from citrus_jax.model import config as model_config

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _cli(*flags, config="configs/cpt.py:tiny", tmp_path=None):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", "citrus_jax.main", f"--config={config}",
                         f"--config.workdir={tmp_path}/run", *flags],
                        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("flag, field, why", [
    ("--config.optim.lrr=1", "config.optim.lrr", "did you mean config.optim.lr?"),
    ("--config.optim.lr=-1.0", "config.optim.lr", "must be >= 0"),
    ("--config.data.seq_len=1000000", "config.data.seq_len", "max_seq_len 256"),
    ("--config.tokenizer.path=/nonexistent/tok.model", "config.tokenizer.path", "does not exist"),
    ("--config.optim.lr=abc", "config.optim.lr", "could not convert"),
])
def test_the_command_line_reports_bad_values_without_a_traceback(tmp_path, flag, field, why):
  out = _cli(flag, tmp_path=tmp_path)
  assert out.returncode == 2, out.stderr[-2000:]
  assert f"config error: {field}: " in out.stderr and why in out.stderr, out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  assert not (tmp_path / "run").exists()  # nothing ran: no config.json, no checkpoints


def test_every_problem_is_reported_at_once(tmp_path):
  out = _cli("--config.data.global_batch_size=0", "--config.checkpoint.every=0",
             "--config.data.on_error=ignore", tmp_path=tmp_path)
  assert out.returncode == 2 and "Traceback" not in out.stderr
  lines = [l for l in out.stderr.splitlines() if l.startswith("config error: ")]
  assert [l.split(": ")[1] for l in lines] == [
      "config.data.global_batch_size", "config.data.on_error", "config.checkpoint.every"], lines


def _set(config, path, value):
  """config.<path> = value, for 'a.b', 'a.b[0].c'."""
  *head, last = config_check.tokens(path)
  node = config
  for t in head:
    node = node[t]
  node[last] = value


def _get_config(spec):
  file, _, preset = spec.partition(":")
  return importlib.import_module(f"configs.{file}").get_config(preset)


# (config, field, bad value, reported field, words of the why)
CASES = [
    ("cpt:tiny", "data.global_batch_size", 0, None, "must be >= 1"),
    ("cpt:tiny", "data.global_batch_size", -8, None, "must be >= 1"),
    ("cpt:tiny", "data.seq_len", 0, None, "must be >= 1"),
    ("cpt:tiny", "data.seq_len", -1, None, "must be >= 1"),
    ("cpt:tiny", "data.on_error", "ignore", None, "expected one of 'raise', 'skip'"),
    ("cpt:tiny", "data.format", "parquet", None, "'parquet' is unknown"),
    ("cpt:tiny", "train.num_steps", -5, None, "must be >= 0"),
    ("cpt:tiny", "train.num_steps", 0, None, "config.data.num_epochs > 0"),
    ("cpt:tiny", "optim.warmup_frac", 1.5, None, "must be in [0, 1]"),
    ("cpt:tiny", "optim.warmup_frac", -0.1, None, "must be in [0, 1]"),
    ("cpt:tiny", "optim.lr", math.nan, None, "must be finite"),
    ("cpt:tiny", "optim.b2", 1.0, None, "must be in [0, 1)"),
    ("cpt:tiny", "optim.grad_accum", 0, None, "must be >= 1"),
    ("cpt:tiny", "optim.schedule", "cosin", None, "did you mean 'cosine'?"),
    ("cpt:tiny", "checkpoint.every", 0, None, "must be >= 1"),
    ("cpt:tiny", "checkpoint.every", -10, None, "must be >= 1"),
    ("cpt:tiny", "checkpoint.keep", 0, None, "must be >= 1"),
    ("cpt:tiny", "train.logits_fraction", 0.0, None, "must be in (0, 1]"),
    ("cpt:tiny", "model.preset", "tinyy", None, "did you mean 'tiny'?"),
    ("cpt:tiny", "model.remat", "all", None, "expected one of 'none', 'full', 'dots'"),
    ("cpt:tiny", "mesh.shape", (1, -1, -1), None, "at most one axis may be -1"),
    ("cpt:tiny", "mesh.shape", (1, 0, 1), None, ">= 1 or -1"),
    ("cpt:tiny", "init.hf_dir", "/nonexistent/hf", None, "does not exist"),
    ("cpt:tiny", "data.train_paths", "/nonexistent/a.jsonl", None, "does not exist"),
    ("cpt:tiny", "plan.topology", "v9:2x2", None, "is not a TPU slice"),
    ("cpt:tiny", "stage", "pretrain", None, "'pretrain' is unknown"),
    ("cpt:tiny", "mode", "dry", None, "'dry' is unknown"),
    ("sft:tiny", "sft.stages[0].batch_size", 0, None, "must be >= 1"),
    ("sft:tiny", "sft.stages[0].lr", -1e-5, None, "must be >= 0"),
    ("sft:tiny", "sft.stages[0].num_steps", -1, None, "must be >= 0"),
    ("sft:tiny", "sft.stages[0].train_paths", "/nonexistent/s.jsonl", None, "does not exist"),
    ("sft:tiny", "data.format", "text", None, "'text' is unknown"),
    ("sft:tiny", "sft.chat_format", "llama2", None, "'llama2' is unknown"),
    ("sft:demo", "data.seq_len", 4096, None, "max_seq_len 1024"),
    ("rl:tiny", "rl.loss", "dpoo", None, "did you mean 'dpo'?"),
    ("rl:tiny", "rl.max_prompt_length", 128, None, "must be < config.rl.max_length"),
    ("rl:tiny", "rl.max_length", 4096, None, "max_seq_len 256"),
    ("rl:tiny", "data.on_error", "warn", None, "'warn' is unknown"),
    ("rl:tiny", "data.num_shards", 3, "config.data.global_batch_size",
     "8 does not split over config.data.num_shards=3"),
    ("cpt:tiny", "data.num_shards", 16, "config.data.global_batch_size",
     "8 does not split over config.data.num_shards=16"),
    ("grpo:tiny", "grpo.num_generations", 1, None, "must be >= 2"),
    ("grpo:tiny", "grpo.max_new_tokens", 1000, "config.grpo.max_prompt_length",
     "max_prompt_length + config.grpo.max_new_tokens = 1064 exceeds"),
    ("grpo:tiny", "grpo.loss_type", "ppo", None, "'ppo' is unknown"),
    ("grpo:tiny", "grpo.top_p", 0.0, None, "must be in (0, 1]"),
    ("eval:tiny", "eval.on_error", "ignore", None, "expected one of 'raise', 'skip'"),
    ("eval:tiny", "eval.max_new_tokens", 0, None, "must be >= 1"),
    ("eval:tiny", "eval.max_new_tokens", 256, None, "leaves no room for a prompt"),
    ("eval:tiny", "eval.batch_size", -1, None, "must be >= 1"),
    ("eval:tiny", "eval.mode", "gen", None, "'gen' is unknown"),
    ("demo:tiny", "demo.sft_batch_sizes", (8, 0, 8), None, "[1] must be >= 1"),
    ("demo:tiny", "demo.cpt_seq_len", 4096, None, "max_seq_len 512"),
    ("demo:tiny", "demo.rl_max_prompt_length", 300, None, "must be < config.demo.rl_max_length"),
    ("demo:tiny", "data.global_batch_size", 0, None, "must be >= 1"),
]


@pytest.mark.parametrize("spec, field, value, reported, why", CASES,
                         ids=[f"{c[0]}-{c[1]}={c[2]}" for c in CASES])
def test_each_bad_value_names_its_field(spec, field, value, reported, why):
  config = _get_config(spec)
  assert config_check.problems(config, 1) == []  # the preset itself is fine
  _set(config, field, value)
  found = config_check.problems(config, 1)
  assert len(found) == 1, found
  assert found[0][0] == (reported or f"config.{field}") and why in found[0][1], found
  with pytest.raises(runtime.ConfigError, match="^" + (reported or f"config.{field}")
                     .replace("[", r"\[").replace(".", r"\.") + ": "):
    config_check.validate(config, 1)


def test_the_mesh_and_per_stage_batches_against_the_devices():
  config = _get_config("sft:tiny")
  config.mesh.shape = (1, -1, 1)
  config.sft.stages[0].batch_size = 6
  assert config_check.problems(config) == []  # no device count: the mesh checks wait
  found = config_check.problems(config, 4)
  assert found == [("config.sft.stages[0].batch_size",
                    "6 is not divisible by the data-parallel size 4 (mesh data x fsdp = 1 x 4)")]
  config.sft.stages[0].batch_size = None
  config.mesh.shape = (3, 1, 1)
  assert [f for f, _ in config_check.problems(config, 4)] == ["config.mesh.shape"]


def test_every_batch_splits_over_the_logical_shards():
  config = _get_config("sft:tiny")
  config.data.num_shards = 4
  assert config_check.problems(config, 1) == []
  config.sft.stages[0].batch_size = 6
  assert config_check.problems(config, 1) == [
      ("config.sft.stages[0].batch_size",
       "6 does not split over config.data.num_shards=4 logical data shards; make it a multiple")]
  grpo = _get_config("grpo:tiny")  # GRPO reads no data shards: its batch is its rollouts
  grpo.data.num_shards = 3
  assert config_check.problems(grpo, 1) == []


def test_sft_stage_lengths_fall_back_to_the_top_level():
  config = _get_config("sft:tiny")
  config.train.num_steps = 0
  assert [f for f, _ in config_check.problems(config, 1)] == ["config.sft.stages[0].num_steps"]
  config.sft.stages[0].num_steps = 5  # the stage's own length is enough
  assert config_check.problems(config, 1) == []
  config.mode = "inspect"  # inspect mode trains nothing
  config.sft.stages[0].num_steps = None
  assert config_check.problems(config, 1) == []


def test_seq_len_is_checked_against_the_model_the_run_starts_from(tmp_path):
  hf = tmp_path / "hf"
  hf.mkdir()
  (hf / "config.json").write_text(
      '{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 256, '
      '"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, '
      '"num_key_value_heads": 2, "intermediate_size": 128, "max_position_embeddings": 128}')
  config = _get_config("cpt:tiny")
  config.init.hf_dir = str(hf)
  config.data.seq_len = 200  # fits the tiny preset (256), not this model (128)
  assert config_check.problems(config, 1) == [
      ("config.data.seq_len", "200 exceeds the model's max_seq_len 128 (config.init.hf_dir); "
       "lower it")]


def _presets():
  """(config file, preset) for every preset of every configs/*.py that main runs."""
  out = []
  for path in sorted((ROOT / "configs").glob("*.py")):
    name = path.stem
    # synth and benchmark_build run under citrus_jax.synth / citrus_jax.eval.build_benchmark
    if name in ("__init__", "base", "synth", "benchmark_build"):
      continue
    module = importlib.import_module(f"configs.{name}")
    presets = list(getattr(module, "_PRESETS", {})) or (
        list(model_config.PRESETS) if name == "info" else [""])
    out += [(name, p) for p in presets]
  return out


def test_every_shipped_preset_passes():
  presets = _presets()
  assert len(presets) > 30 and ("cpt", "llama3_1_70b") in presets and ("demo", "small") in presets
  for name, preset in presets:
    config = importlib.import_module(f"configs.{name}").get_config(preset)
    # The fewest devices the preset's mesh runs on (the fixed axes: 8 with tensor=8).
    n = math.prod(s for s in config.mesh.shape if s != -1)
    modes = ("train", "plan") if config.stage in config_check.TRAIN else (config.mode,)
    for mode in modes:
      config.mode = mode
      for n_devices in (None, n, 8 * n):
        if n_devices == 8 * n and config.data.global_batch_size % (8 * n):
          continue  # a small preset's batch does not split over 8x the devices, rightly
        assert config_check.problems(config, n_devices) == [], (name, preset, mode, n_devices)
