"""python -m citrus_jax.synth --config=configs/synth.py[:preset] --config.<k>=<v> (see that file).

Exits with status 1 when some items could not be committed (LLM errors), so a wrapper can rerun.
"""
import sys

from absl import app
from ml_collections import config_flags

from citrus_jax.synth import pathway

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/synth.py[:preset]",
                                          lock_config=True)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  stats = pathway.run(_CONFIG.value)
  if stats["items"]["errors"]:
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
