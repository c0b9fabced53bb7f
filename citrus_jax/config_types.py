"""Names every config reader shares: stage and mode names, ConfigError, comma-separated paths.

A leaf module (no citrus_jax imports), so the checker (config_check), the checkpoint code and
the train engine can raise and read these without importing the entry-point module (runtime).
"""
from __future__ import annotations

from typing import Any

STAGES = ("cpt", "sft", "rl", "grpo", "eval", "pipeline", "info")
MODES = ("train", "plan", "inspect")
EVAL_MODES = ("generate", "loglik", "both", "prompts")  # config.eval.mode (eval/harness.py)


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field and the fix."""


def split_paths(value: Any) -> list[str]:
  """A paths field (comma-separated string, or list/tuple) as a list of non-empty paths."""
  if not value:
    return []
  if isinstance(value, (list, tuple)):
    return [str(v) for v in value]
  return [p for p in str(value).split(",") if p]
