"""The generic step runner: done.json bookkeeping, step skipping, stage configs with overrides.

A step is a function `fn(step_dir) -> dict` (JSON results). It runs in `<workdir>/<dir>` and
writes `done.json` there when it finishes, so a rerun skips it and resumes at the first
unfinished step (the training stages inside a step resume from their own checkpoints). A step
configured with `skip=True` runs nothing and records nothing, so unskipping it later runs it.
"""
from __future__ import annotations

import ast
import json
import os
import re
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from etils import epath

from citrus_jax import config_overrides, runtime
from citrus_jax.runtime import ConfigError

# Fields of a step section that the runner reads itself (the rest are the step's own settings).
RUNNER_FIELDS = ("skip", "preset", "overrides", "set")


class StopPipeline(Exception):
  """`config.pipeline.stop_after` reached: the run ends cleanly, a rerun continues."""


def done_path(workdir: str, step_dir: str) -> epath.Path:
  return epath.Path(workdir) / step_dir / "done.json"


def read_done(workdir: str, step_dir: str) -> dict[str, Any] | None:
  path = done_path(workdir, step_dir)
  return json.loads(path.read_text()) if path.exists() else None


def write_json(path: Any, obj: Any) -> None:
  """Process 0 writes (atomically on a local disk); the others have computed the same."""
  if jax.process_index() != 0:
    return
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_text(json.dumps(jsonable(obj), indent=2, ensure_ascii=False))
  tmp.rename(path) if "://" in os.fspath(path) else os.replace(tmp, path)


def jsonable(x: Any) -> Any:
  if isinstance(x, (dict, ml_collections.ConfigDict)):
    return {str(k): jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  return x


def is_remote(path: str) -> bool:
  return "://" in path


def staging_dir(workdir: str, step_dir: str) -> str:
  """A local directory for a step whose runner writes with local file IO (eval, rejection,
  HF export) when the workdir is remote (gs://); uploaded when the step finishes."""
  root = os.environ.get("CITRUS_STAGING_DIR", "/tmp/citrus_staging")
  return os.path.join(root, re.sub(r"[^A-Za-z0-9._-]+", "_", workdir), step_dir)


def upload(local: str, remote: str) -> None:
  """Process 0 copies the tree `local` to `remote` (any etils.epath location)."""
  if jax.process_index() != 0:
    return
  for root, _, files in os.walk(local):
    rel = os.path.relpath(root, local)
    dst = epath.Path(remote) if rel == "." else epath.Path(remote) / rel
    dst.mkdir(parents=True, exist_ok=True)
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        (dst / name).write_bytes(f.read())


def _moved(x: Any, local: str, remote: str) -> Any:
  """Results with paths under the staging dir pointing at their uploaded copies."""
  if isinstance(x, dict):
    return {k: _moved(v, local, remote) for k, v in x.items()}
  if isinstance(x, list):
    return [_moved(v, local, remote) for v in x]
  if isinstance(x, str) and (x == local or x.startswith(local + os.sep)):
    return remote + x[len(local):]
  return x


def run_step(workdir: str, name: str, fn: Callable[[str], dict[str, Any]], *,
             step_dir: str | None = None, skip: bool = False, stop_after: str = "",
             local_io: bool = False) -> dict[str, Any]:
  """Runs `fn(<workdir>/<step_dir>)` unless it finished earlier (its done.json) or is skipped;
  records its wall time. A `local_io` step on a remote workdir runs in a local staging dir that
  is uploaded when it finishes. Raises StopPipeline after the step named `stop_after`."""
  step_dir = step_dir or name
  if skip:
    print(f"[pipeline] {name}: skipped (config.steps.{name.split('/')[-1]}.skip)", flush=True)
    return {"skipped": True}
  result = read_done(workdir, step_dir)
  if result is not None:
    print(f"[pipeline] {name}: done earlier ({result.get('wall_s', 0):.0f}s), skipping",
          flush=True)
  else:
    out = os.path.join(workdir, step_dir)
    run_in = staging_dir(workdir, step_dir) if local_io and is_remote(workdir) else out
    epath.Path(run_in).mkdir(parents=True, exist_ok=True)
    print(f"[pipeline] {name} ...", flush=True)
    t0 = time.perf_counter()
    result = fn(run_in)
    if run_in != out:
      upload(run_in, out)
      result = _moved(result, run_in, out)
    result["wall_s"] = time.perf_counter() - t0
    write_json(done_path(workdir, step_dir), result)
    print(f"[pipeline] {name}: {result['wall_s']:.0f}s", flush=True)
  if stop_after and stop_after == name.split("/")[-1]:
    raise StopPipeline(name)
  return result


# ------------------------------------------------------------------------------------------------
# Stage configs: the stage file's preset, the pipeline's shared fields, then the step's overrides


def parse_value(text: str) -> Any:
  """A Python literal if it is one ('1e-5', '3', 'True', '(1, -1, 8)'), else the string."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _leaves(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
  out = []
  for k, v in d.items():
    path = f"{prefix}.{k}" if prefix else str(k)
    if isinstance(v, (ml_collections.ConfigDict, dict)) and v:
      out += _leaves(v, path)
    else:
      out.append((path, v))
  return out


def assign(config: ml_collections.ConfigDict, path: str, value: Any, field: str,
           what: str) -> None:
  """config.<path> = value; a path the stage config lacks is a ConfigError naming `field` and
  the nearest real field."""
  node = config
  parts = path.split(".")
  for p in parts[:-1]:
    if not isinstance(node, ml_collections.ConfigDict) or p not in node:
      node = None
      break
    node = node[p]
  if not isinstance(node, ml_collections.ConfigDict) or parts[-1] not in node:
    problem = config_overrides.unknown_override(config, path)
    hint = problem[1] if problem else "no such field"
    raise ConfigError(f"{field}: {what} has no field {path!r} ({hint})")
  try:
    if isinstance(node[parts[-1]], tuple) and isinstance(value, list):
      value = tuple(value)
    node[parts[-1]] = value
  except (TypeError, ValueError) as e:
    raise ConfigError(f"{field}: {value!r} does not fit {what}'s {path} ({e})") from None


def apply_overrides(config: ml_collections.ConfigDict, section: ml_collections.ConfigDict,
                    where: str, what: str) -> ml_collections.ConfigDict:
  """The step's `overrides` (a nested section) then its `set` ('a.b=v;c=w') onto `config`."""
  for path, value in _leaves(section.get("overrides") or {}):
    assign(config, path, value, f"{where}.overrides.{path}", what)
  for item in [s for s in str(section.get("set") or "").split(";") if s.strip()]:
    path, eq, text = item.partition("=")
    if not eq:
      raise ConfigError(f"{where}.set: {item!r} is not 'field=value'")
    assign(config, path.strip(), parse_value(text.strip()), f"{where}.set", what)
  return config


def stage_config(module: Any, file: str, config: ml_collections.ConfigDict, name: str,
                 step_dir: str, tokenizer: str, init: dict[str, str],
                 **sections: dict[str, Any]) -> ml_collections.ConfigDict:
  """A stage config: `configs/<file>:<preset>`, with the pipeline's run-wide fields (workdir,
  seed, mesh, distributed, tokenizer, model preset, where the params start), the step's inputs
  (`sections`: e.g. data={"train_paths": ...}), then `config.steps.<name>.overrides` and `.set`."""
  section = config.steps[name]
  c = module.get_config(section.preset)
  c.workdir = step_dir
  c.seed = config.seed
  c.progress = config.progress
  c.tensorboard = config.get("tensorboard", True)
  c.mesh.shape = tuple(config.mesh.shape)
  c.distributed = config.distributed.copy_and_resolve_references()
  c.tokenizer.path = tokenizer
  numerics = ("param_dtype", "compute_dtype", "remat", "scan_layers", "attention")
  for key, value in config.model.items():  # preset, vocab and shape fields; the stage's numerics
    if key not in numerics:
      c.model[key] = value
  c.init.checkpoint = init.get("checkpoint", "")
  c.init.hf_dir = init.get("hf_dir", "")
  for key, values in sections.items():
    for field, value in values.items():
      c[key][field] = value
  return apply_overrides(c, section, f"config.steps.{name}",
                         f"configs/{file}:{section.preset}")


def save_config(config: ml_collections.ConfigDict | dict, step_dir: str) -> str:
  """Each step's resolved config next to its outputs (runtime.save_resolved_config)."""
  if not isinstance(config, ml_collections.ConfigDict):
    config = ml_collections.ConfigDict(jsonable(config))
  return runtime.save_resolved_config(config, step_dir)
