"""train/steps.py: one rule for a stage's length, and zero steps is a config error naming fields."""
import os
import pathlib
import subprocess
import sys

import ml_collections
import pytest

from citrus_jax.runtime import ConfigError
from citrus_jax.train import steps

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _config(num_steps=0, num_epochs=0, batch=8):
  return ml_collections.ConfigDict({"train": {"num_steps": num_steps},
                                    "data": {"num_epochs": num_epochs,
                                             "global_batch_size": batch}})


def _never(epochs):
  raise AssertionError("counted batches although num_steps was given")


def test_num_steps_wins_and_the_data_repeats(capsys):
  assert steps.resolve(_config(7, 3), "cpt", _never, "x") == (7, None)
  assert "[cpt] 7 steps (config.train.num_steps" in capsys.readouterr().out


def test_epochs_are_counted_in_full_batches(capsys):
  calls = []
  count = lambda e: calls.append(e) or e * 50 // 8
  assert steps.resolve(_config(0, 2), "rl", count, "50 pairs") == (12, 2)
  assert calls == [2]
  assert "[rl] 12 steps = 2 epoch(s) of 50 pairs in full batches of 8" in capsys.readouterr().out


def test_no_length_names_both_fields():
  with pytest.raises(ConfigError) as e:
    steps.resolve(_config(0, 0), "cpt", _never, "x")
  msg = str(e.value)
  assert msg.startswith("config.train.num_steps: ") and "config.data.num_epochs > 0" in msg


@pytest.mark.parametrize("field, cfg", [("config.train.num_steps", _config(-3, 1)),
                                        ("config.data.num_epochs", _config(0, -1))])
def test_negative_values_are_errors(field, cfg):
  with pytest.raises(ConfigError, match=f"^{field}: must be an integer >= 0"):
    steps.resolve(cfg, "sft", _never, "x")


def test_epochs_that_make_no_batch_are_an_error():
  with pytest.raises(ConfigError) as e:
    steps.resolve(_config(0, 1), "cpt", lambda e: 0, "3 documents")
  msg = str(e.value)
  assert msg.startswith("config.data.num_epochs: 1 epoch(s) of 3 documents make no full batch "
                        "of config.data.global_batch_size=8"), msg
  assert "config.train.num_steps > 0" in msg


def test_epochs_capping_given_steps_must_give_a_batch():
  steps.check_capped(_config(5, 2), "cpt", 2, lambda: True, "x")
  steps.check_capped(_config(5, 0), "cpt", None, _never, "x")  # no cap: nothing to check
  with pytest.raises(ConfigError) as e:
    steps.check_capped(_config(5, 1), "cpt", 1, lambda: False, "one.jsonl")
  msg = str(e.value)
  assert msg.startswith("config.data.num_epochs: 1 epoch(s) of one.jsonl make no full batch of "
                        "config.data.global_batch_size=8, so cpt would train none of its 5 steps")
  assert "config.data.num_epochs = 0" in msg


def test_a_stage_names_its_own_batch_field():
  fields = steps.Fields(batch="config.grpo.prompts_per_step")
  with pytest.raises(ConfigError, match="config.grpo.prompts_per_step=4"):
    steps.resolve(_config(0, 1), "grpo", lambda e: e * 3 // 4, "3 questions", batch_size=4,
                  fields=fields)


def test_every_training_stage_uses_the_rule():
  """No stage derives its length its own way (the old per-stage resolvers are gone)."""
  for stage in ("cpt", "sft", "rl", "grpo"):
    text = (ROOT / "citrus_jax" / "train" / f"{stage}.py").read_text()
    assert "steps.resolve(" in text, stage
    assert "resolve_num_steps" not in text, stage


def test_grpo_epoch_smaller_than_a_step_is_a_config_error(tmp_path):
  """3 toy questions with 4 prompts per step: one epoch is no step (exit 2, no traceback)."""
  out = subprocess.run(
      [sys.executable, "-m", "citrus_jax.main", "--config=configs/grpo.py:tiny",
       f"--config.workdir={tmp_path}/run", "--config.train.num_steps=0",
       "--config.data.num_epochs=1", "--config.grpo.toy_questions=3",
       "--config.grpo.prompts_per_step=4", "--config.progress=False"],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  assert out.returncode == 2, out.stderr[-2000:]
  assert "config error: config.data.num_epochs: 1 epoch(s) of 3 questions" in out.stderr
  assert "config.grpo.prompts_per_step=4" in out.stderr and "Traceback" not in out.stderr
  assert not (tmp_path / "run" / "params").exists()
