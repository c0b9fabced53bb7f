"""Orbax checkpoints: the train state plus the data iterator, and params-only exports.

A run directory holds `checkpoints/<step>/{state,data}` written by an async CheckpointManager
(keep-last-K, atomic: an interrupted save is never picked up) and, at the end of a stage,
`params/` + `model_config.json`: the params-only layout that stage chaining and the HF exporter
read. A complete checkpoint that cannot be read back (truncated or corrupted files) or holds
non-finite values is moved to `checkpoints.bad/` on resume, with a warning, and the previous one
is used instead.
"""
from __future__ import annotations

import dataclasses
import json
import os
import uuid
from typing import Any, Callable

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from citrus_jax import hf, sharding as sharding_lib
from citrus_jax.config_types import ConfigError
from citrus_jax.model import lora, transformer
from citrus_jax.model.config import ModelConfig


class NotWritableError(ConfigError):
  """The run directory cannot be written (raised before training, not by a failed async save)."""


class NoUsableCheckpointError(RuntimeError):
  pass


def _abstract(tree: Any) -> Any:
  """ShapeDtypeStructs that keep each array's sharding, so restore places shards directly."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
      tree)


def _orbax_path(directory: Any) -> epath.Path:
  """Absolute for local paths: newer Orbax refuses relative ones ("should be absolute")."""
  path = os.fspath(directory)
  return epath.Path(path if "://" in path else os.path.abspath(path))


def _has_grain_state(it: Any) -> bool:
  return it is not None and hasattr(it, "get_state") and hasattr(it, "set_state")


def check_writable(directory: str) -> None:
  """Creates `directory` and writes and removes a small file in it, so an unwritable run
  directory fails at once with its path; an async Orbax save there would only time out after
  minutes."""
  path = _orbax_path(directory)
  probe = path / f".write_check.{jax.process_index()}.{uuid.uuid4().hex[:8]}"
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe.write_text("ok")
    probe.unlink()
  except Exception as e:  # OSError locally; other types from object stores
    raise NotWritableError(f"{path} is not writable ({type(e).__name__}: {e}); set "
                           "config.workdir to a directory this process can write") from None


class Checkpointer:
  """Periodic async saves of (train state, data iterator) with auto-resume."""

  def __init__(self, directory: str, every: int = 100, keep: int = 3, async_save: bool = True):
    self.directory = _orbax_path(directory)
    self.every = max(int(every), 1)
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=self.every, max_to_keep=keep, create=True,
        enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def should_save(self, step: int) -> bool:
    """Whether `save(step, ...)` (without force) would write."""
    return step not in self.manager.all_steps() and self.manager.should_save(step)

  def save(self, step: int, state: Any, data_iter: Any = None, force: bool = False) -> bool:
    if step in self.manager.all_steps():
      return False
    args = {"state": ocp.args.StandardSave(state)}
    if _has_grain_state(data_iter):
      args["data"] = grain.checkpoint.CheckpointSave(data_iter)
    return self.manager.save(step, args=ocp.args.Composite(**args), force=force)

  def restore(self, state_like: Any, data_iter: Any = None, step: int | None = None) -> Any:
    """Restores onto `state_like`'s shapes and shardings (which may differ from the saved mesh)."""
    step = self.latest_step() if step is None else step
    args = {"state": ocp.args.StandardRestore(_abstract(state_like))}
    if _has_grain_state(data_iter):
      args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    return restored["state"]

  def restore_latest(self, state_like: Any, data_iter: Any = None,
                     verify: Callable[[Any], bool] | None = None) -> tuple[int | None, Any]:
    """(step, state) of the newest checkpoint that reads back and passes `verify` (e.g. "every
    value is finite"), or (None, None) when there is none. Newer ones that fail are moved to
    `<checkpoints>.bad/<step>` with a warning naming the step and why, so the run saves those
    steps again instead of tripping over them."""
    bad = []
    for step in reversed(self.all_steps()):
      try:
        state = self.restore(state_like, data_iter, step=step)
        why = None if verify is None or verify(state) else "it holds non-finite values"
      except Exception as e:  # truncated / corrupted files: tensorstore, json, orbax errors
        why = f"it could not be read ({type(e).__name__}: {str(e).splitlines()[0][:300]})"
      if why is None:
        if bad:
          logging.warning("%s: resuming from step %d instead (checkpoint%s %s set aside)",
                          self.directory, step, "s" if len(bad) > 1 else "",
                          ", ".join(map(str, bad)))
        return step, state
      moved = self._set_aside(step)
      logging.warning("%s: checkpoint step %d is unusable: %s; moved to %s, falling back to the "
                      "previous checkpoint", self.directory, step, why, moved)
      bad.append(step)
    if bad:
      raise NoUsableCheckpointError(
          f"{self.directory}: no usable checkpoint (steps {bad} were unusable and were moved to "
          f"{self.directory}.bad/); remove the directory to start the stage afresh")
    return None, None

  def _set_aside(self, step: int) -> str:
    """Moves checkpoint `step` out of the manager's directory (process 0; the others wait)."""
    target = epath.Path(f"{self.directory}.bad") / str(step)
    if jax.process_index() == 0:
      target.parent.mkdir(parents=True, exist_ok=True)
      n = 1
      while target.exists():
        target, n = epath.Path(f"{self.directory}.bad") / f"{step}.{n}", n + 1
      (self.directory / str(step)).rename(target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"citrus_jax_set_aside_{step}")
    self.manager.reload()
    return os.fspath(target)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def config_to_json(cfg: ModelConfig) -> dict[str, Any]:
  return dataclasses.asdict(cfg)


def config_from_json(d: dict[str, Any], path: str = "model_config.json") -> ModelConfig:
  fields = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = set(d) - fields
  if unknown:
    raise ValueError(f"{path}: unknown model config fields {sorted(unknown)}")
  d = dict(d)
  if d.get("rope_scaling") is not None:
    d["rope_scaling"] = tuple(d["rope_scaling"])
  return ModelConfig(**d).validate()


def save_params(directory: str, params: Any, cfg: ModelConfig,
                extra: dict[str, Any] | None = None) -> str:
  """Writes `params/` (Orbax) and `model_config.json`: what the next stage starts from."""
  path = _orbax_path(directory)
  path.mkdir(parents=True, exist_ok=True)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(path / "params", params, force=True)
  ckptr.wait_until_finished()
  if jax.process_index() == 0:
    meta = {"model": config_to_json(cfg), **(extra or {})}
    (path / "model_config.json").write_text(json.dumps(meta, indent=2))
  return os.fspath(directory)


def read_model_config(directory: str) -> ModelConfig:
  path = epath.Path(directory) / "model_config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path}: not found; expected a params directory written by "
                            "citrus_jax (params/ + model_config.json)")
  meta = json.loads(path.read_text())
  return config_from_json(meta["model"], os.fspath(path))


def load_params(directory: str, cfg: ModelConfig | None = None, shardings: Any = None) -> Any:
  """Params from a params directory, or from a run's latest checkpoint (its state's params).

  `cfg` overrides dtype/scan/remat of the saved config; shapes must match. With `shardings` the
  tensors are restored straight onto them (possibly a different mesh than they were saved on);
  without, whole onto this process's first device, whatever devices saved them (pod params
  opened on a laptop).
  """
  path = _orbax_path(directory)
  saved_cfg = read_model_config(directory) if (path / "model_config.json").exists() else None
  cfg = cfg or saved_cfg
  if cfg is None:
    raise ValueError(f"{path}: no model_config.json; pass the model config explicitly")
  abstract = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  if shardings is None:
    shardings = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.local_devices()[0]),
                             abstract)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  if (path / "params").exists():
    return ocp.StandardCheckpointer().restore(path / "params", abstract)
  # A CheckpointManager directory: take params from the latest state (partial restore).
  ckpt_dir = path / "checkpoints" if (path / "checkpoints").exists() else path
  manager = ocp.CheckpointManager(ckpt_dir, item_names=("state", "data"))
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"{path}: neither params/ nor any checkpoint step found")
  restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, dtype=a.dtype),
                              abstract)
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item={"params": abstract}, restore_args={"params": restore_args}, partial_restore=True)))
  return restored["state"]["params"]


# --------------------------------------------------------------------------- LoRA stages
# A LoRA stage keeps only the adapters in its train state; the frozen base is a REFERENCE
# (where it came from: random init with a seed, a params directory or an HF checkpoint) written
# to `<dir>/lora/lora.json` with the LoRA config, checked on resume, and reloaded (then quantised
# again, deterministically) wherever the base is needed: resume, and `peft_io.export_stage`.

LORA_DIR = "lora"


def base_reference(config: Any) -> dict[str, Any]:
  """Where a stage's initial (= frozen base) params come from, as runtime.init_params_fn
  reads them."""
  init = config.init
  if init.get("hf_dir"):
    return {"kind": "hf", "path": os.path.abspath(init.hf_dir)}
  if init.get("checkpoint"):
    return {"kind": "checkpoint", "path": os.path.abspath(init.checkpoint)}
  return {"kind": "random", "seed": int(config.seed)}


def write_lora_meta(directory: str, cfg: ModelConfig, lcfg: Any, base_ref: dict[str, Any]
                    ) -> None:
  """`<directory>/lora/lora.json`; an existing one must agree (a resume with another LoRA
  config or base would silently train something else)."""
  path = epath.Path(directory) / LORA_DIR / "lora.json"
  meta = {"lora": dataclasses.asdict(lcfg), "base": base_ref, "model": config_to_json(cfg)}
  meta = json.loads(json.dumps(meta))  # tuples -> lists, as read back
  if path.exists():
    old = json.loads(path.read_text())
    for field in ("lora", "base"):
      if old.get(field) != meta[field]:
        raise ConfigError(f"{path}: the checkpoints here were trained with {field} "
                          f"{old.get(field)}, but this run has {meta[field]}; use another "
                          "workdir or the same config.model.lora / config.init")
    return
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=2))


def read_lora_meta(directory: str) -> tuple[ModelConfig, Any, dict[str, Any]]:
  """(model config, LoraConfig, base reference) of a LoRA stage directory."""
  path = epath.Path(directory) / LORA_DIR / "lora.json"
  if not path.exists():
    raise FileNotFoundError(f"{path}: not found; {directory} is not a LoRA stage directory "
                            "(config.model.lora.enabled was off?)")
  meta = json.loads(path.read_text())
  lcfg = dict(meta["lora"])
  lcfg["targets"] = tuple(lcfg["targets"])
  return (config_from_json(meta["model"], os.fspath(path)), lora.LoraConfig(**lcfg).validate(),
          meta["base"])


def load_lora_base(base_ref: dict[str, Any], cfg: ModelConfig, lcfg: Any, mesh: Any = None,
                   shardings: Any = None) -> Any:
  """The frozen base a reference names, on `shardings` (or the mesh's param shardings, or one
  device), quantised as `lcfg.quant` says."""
  if shardings is None and mesh is not None:
    shardings = sharding_lib.param_shardings(cfg, mesh)
  kind = base_ref.get("kind")
  if kind == "random":
    fn = jax.jit(lambda: transformer.init_params(cfg, jax.random.key(base_ref["seed"])),
                 out_shardings=shardings)
    params = fn()
  elif kind == "checkpoint":
    params = load_params(base_ref["path"], cfg, shardings)
  elif kind == "hf":
    params = hf.load(base_ref["path"], mesh=mesh, dtype=cfg.param_dtype)[1]
  else:
    raise ValueError(f"unknown LoRA base reference {base_ref!r}")
  if lcfg.quant == "none":
    return params
  q_sh = None
  if shardings is not None:
    abstract = lora.abstract_params(cfg, lcfg)[1]
    q_sh = lora.shardings_like(abstract, cfg, next(iter(jax.tree.leaves(shardings))).mesh)
  return lora.quantize_base(params, lcfg, q_sh)


def save_adapters(directory: str, adapters: Any) -> None:
  """`<directory>/lora/adapters` (Orbax): the trained adapters of a finished LoRA stage."""
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(_orbax_path(directory) / LORA_DIR / "adapters", adapters, force=True)
  ckptr.wait_until_finished()


def load_adapters(directory: str, cfg: ModelConfig, lcfg: Any, mesh: Any = None) -> Any:
  """The adapters `save_adapters` wrote (on the mesh's shardings, or on one device)."""
  abstract = lora.abstract_params(cfg, lcfg)[0]
  if mesh is not None:
    sh = lora.shardings_like(abstract, cfg, mesh)
  else:
    dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    sh = jax.tree.map(lambda _: dev, abstract)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, sh)
  return ocp.StandardCheckpointer().restore(_orbax_path(directory) / LORA_DIR / "adapters",
                                            abstract)
