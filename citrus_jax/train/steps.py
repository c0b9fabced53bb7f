"""How long a stage trains: the one rule every stage (CPT, SFT, RL, GRPO) resolves its steps by.

    config.train.num_steps > 0   -> that many steps; the data repeats as needed
    else config.data.num_epochs  -> epochs x (full global batches in one pass), counted from the
                                    stage's own data by the stage's `count_batches(epochs)`

A stage that would train zero (or a negative number of) steps is a `ConfigError` whose lines read
`<field>: <why>` (main prints each as `config error: ...` and exits 2), never a run that exits 0
with an empty metrics file and untrained params.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import ml_collections

from citrus_jax.runtime import ConfigError


@dataclasses.dataclass(frozen=True)
class Fields:
  """The config fields a stage's length comes from, as the error messages name them (an SFT
  stage's own overrides, a GRPO step's prompts instead of a batch of rows)."""
  steps: str = "config.train.num_steps"
  epochs: str = "config.data.num_epochs"
  batch: str = "config.data.global_batch_size"


def resolve(config: ml_collections.ConfigDict, name: str, count_batches: Callable[[int], int],
            what: str, *, batch_size: int | None = None, fields: Fields = Fields()
            ) -> tuple[int, int | None]:
  """(num_steps, epochs for the data pipeline: None = repeat forever) of stage `name`.

  `count_batches(epochs)` is the number of full global batches `epochs` passes over the data
  make (only called when the length comes from epochs); `what` describes the data for messages
  (e.g. "120 pairs"); `batch_size` is what one step takes (default config.data.global_batch_size).
  """
  steps = config.train.get("num_steps", 0)
  epochs = config.data.get("num_epochs", 0)
  steps = 0 if steps is None else steps
  epochs = 0 if epochs is None else epochs
  batch = config.data.get("global_batch_size") if batch_size is None else batch_size
  for field, value in ((fields.steps, steps), (fields.epochs, epochs)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise ConfigError(f"{field}: must be an integer >= 0, got {value!r} ({name})")
  if steps > 0:
    print(f"[{name}] {steps} steps ({fields.steps}; the data repeats as needed)", flush=True)
    return int(steps), None
  if epochs == 0:
    raise ConfigError(f"{fields.steps}: is 0 and so is {fields.epochs}, so {name} would train "
                      f"zero steps; set {fields.steps} > 0 or {fields.epochs} > 0")
  n = int(count_batches(epochs))
  if n <= 0:
    raise _no_batch(name, epochs, what, batch, fields, "zero steps")
  print(f"[{name}] {n} steps = {epochs} epoch(s) of {what} in full batches of {batch}",
        flush=True)
  return n, int(epochs)


def _no_batch(name: str, epochs: int, what: str, batch: Any, fields: Fields, lost: str
              ) -> ConfigError:
  return ConfigError(
      f"{fields.epochs}: {epochs} epoch(s) of {what} make no full batch of {fields.batch}="
      f"{batch}, so {name} would train {lost}; lower {fields.batch}, add data or set "
      f"{fields.steps} > 0" + (f" and {fields.epochs} = 0" if lost != "zero steps" else ""))


def check_capped(config: ml_collections.ConfigDict, name: str, epochs: int | None,
                 has_batch: Callable[[], bool], what: str, *, fields: Fields = Fields()) -> None:
  """With num_steps given, `epochs` (when set) still caps the data: it must give at least one
  batch (`has_batch()`, e.g. the first batch of a fresh pipeline), else the stage would stop at
  step 0 and export its untrained start as a success."""
  if epochs and not has_batch():
    raise _no_batch(name, epochs, what, config.data.get("global_batch_size"), fields,
                    f"none of its {config.train.num_steps} steps")
