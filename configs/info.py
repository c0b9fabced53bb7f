"""Smallest possible run: build a model, print its parameter count and one forward pass.

  python -m citrus_jax.main --config=configs/info.py:demo
"""
from configs import base


def get_config(preset: str = "tiny"):
  c = base.get_config()
  c.stage = "info"
  c.model.preset = preset or "tiny"
  c.workdir = "runs/info"
  return c
