"""The shipped `configs/` files wherever citrus_jax is installed, so `--config=configs/demo.py`
works from any directory, not only from a checkout.

setup.py installs the checkout's `configs/` directory as the package `citrus_jax.configs`. The
config files import their siblings as `configs.<name>` (`from configs import base`), so when no
`configs` package is importable (a non-editable install run outside the checkout) that name is
bound to the installed copy. A `configs/` directory in the working directory always wins.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys


def installed_dir() -> str | None:
  """The directory of the installed configs, or None (a checkout without an install)."""
  spec = importlib.util.find_spec("citrus_jax.configs")
  return os.path.dirname(spec.origin) if spec and spec.origin else None


def resolve(path: str) -> str:
  """`configs/<file>.py` relative to the working directory if it is there, else the installed
  copy's; any other path unchanged."""
  if os.path.exists(path) or not path.startswith("configs/"):
    return path
  home = installed_dir()
  candidate = os.path.join(home, path[len("configs/"):]) if home else ""
  return candidate if candidate and os.path.exists(candidate) else path


def ensure_importable() -> None:
  """Makes `import configs` find the shipped configs when no other `configs` package exists."""
  if "configs" in sys.modules or importlib.util.find_spec("configs") is not None:
    return
  if installed_dir() is not None:
    sys.modules["configs"] = importlib.import_module("citrus_jax.configs")
