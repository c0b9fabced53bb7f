"""Entry point: python -m citrus_jax.main --config=configs/<file>.py[:<preset>] --config.<k>=<v>."""
from __future__ import annotations

import json
import os
import sys
from typing import NoReturn

from absl import app, flags, logging
from ml_collections import config_flags

from citrus_jax import shipped_configs
from citrus_jax.config_types import ConfigError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A configs/*.py file, optionally ':preset'.", lock_config=True)


RESUMABLE_EXIT = 75  # a training stage saved on SIGTERM and stopped: rerun the job to resume


def run(config) -> str:
  """Runs one configured job and returns its work directory (also used by tests and notebooks)."""
  return run_job(config)[0]


def run_job(config) -> tuple[str, bool]:
  """(work directory, whether a training stage stopped early on SIGTERM and can be resumed)."""
  # Imported here, per stage: JAX and each stage's stack load only for the job that runs, so
  # `import citrus_jax.main` (tests, notebooks) stays light and no stage pulls in every other.
  import jax
  import numpy as np

  from citrus_jax import config_check, runtime, sharding
  from citrus_jax.model import transformer

  config_check.validate(config)  # every bad value at once, before any process waits on a peer
  dist = config.distributed
  sharding.initialize_distributed(dist.coordinator_address or None, dist.num_processes or None,
                                  None if dist.process_id < 0 else dist.process_id)
  devices = None  # plan mode for a TPU slice: AOT compile for the slice's devices
  if config.get("mode") == "plan" and config.plan.get("topology"):
    from citrus_jax.train import plan
    devices = plan.topology_devices(config.plan.topology)
  runtime.check_config(config, len(devices) if devices else None)
  workdir = config.workdir  # printed and recorded absolute, wherever the command ran
  if config.stage == "pipeline" and not str(workdir).strip():  # not the working directory itself
    raise runtime.ConfigError("config.workdir: empty; give the run directory")
  if "://" not in workdir:
    workdir = os.path.abspath(workdir)
  if config.stage == "info":
    cfg = runtime.model_config_from(config)
    n = transformer.count_params(cfg)
    mesh = runtime.make_mesh(config)
    params = runtime.init_params_fn(config, cfg, mesh)(sharding.param_shardings(cfg, mesh))
    tokens = np.arange(16, dtype=np.int32).reshape(2, 8) % cfg.vocab_size
    logits, _ = jax.jit(lambda p, t: transformer.forward(p, t, cfg))(params, tokens)
    print(f"model {config.model.preset}: {n:,} parameters on {jax.device_count()} "
          f"{jax.devices()[0].platform} device(s), mesh {dict(mesh.shape)}")
    print(f"forward pass: logits {tuple(logits.shape)}, mean {float(logits.mean()):+.5f}, "
          f"std {float(logits.std()):.5f}")
    return workdir, False
  if config.mode == "plan" and config.stage == "pipeline":  # every training step of the recipe
    from citrus_jax import pipeline
    return pipeline.plan(config, workdir, devices), False
  if config.mode == "plan":
    from citrus_jax.train import plan
    cfg = runtime.model_config_from(config)
    result = plan.checked_plan(config, cfg, devices)
    print(plan.format_plan(result))
    from etils import epath
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    (epath.Path(workdir) / "plan.json").write_text(json.dumps(result, indent=2))
    return workdir, False
  from citrus_jax.train import checkpoint
  checkpoint.check_writable(workdir)  # a clear error now, not a failed async save minutes later
  runtime.save_resolved_config(config, workdir)
  results = []
  if config.stage == "cpt":
    from citrus_jax.train import cpt
    results = [cpt.run(config, workdir)]
  elif config.stage == "sft":
    from citrus_jax.train import sft
    results = list(sft.run(config, workdir).values())
  elif config.stage == "rl":
    from citrus_jax.train import rl
    results = [rl.run(config, workdir)]
  elif config.stage == "grpo":
    from citrus_jax.train import grpo
    results = [grpo.run(config, workdir)]
  elif config.stage == "eval":
    from citrus_jax.eval import harness
    workdir = harness.run(config, workdir)
  elif config.stage == "pipeline":
    from citrus_jax import pipeline
    workdir, preempted = pipeline.run_job(config, workdir)
    return workdir, preempted
  preempted = any(str(getattr(r, "stopped_early", None) or "").startswith("preempted")
                  for r in results)
  return workdir, preempted


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:  # Orbax logs every save and restore at INFO
    logging.set_verbosity(logging.WARNING)
  from citrus_jax.train.plan import PlanError  # JAX: kept out of `import citrus_jax.main`
  try:
    workdir, preempted = run_job(_CONFIG.value)
  except ConfigError as e:
    _fail_config(str(e).splitlines())  # config_check: one "<field>: <why>" per line
  except PlanError as e:  # plan mode: no libtpu for the slice, or the step does not fit
    print(f"plan error: {e}", file=sys.stderr)
    sys.exit(2)
  except FloatingPointError as e:  # train/engine.py: training diverged; the message says why
    print(f"training stopped: {e}", file=sys.stderr)
    sys.exit(3)
  print(workdir)
  if preempted:
    sys.exit(RESUMABLE_EXIT)


def _fail_config(problems: list) -> NoReturn:
  """One `config error: <field>: <why>` line per problem (a (field, why) pair or a line) on
  stderr, exit 2, no traceback."""
  for problem in problems:
    line = problem if isinstance(problem, str) else ": ".join(problem)
    print(f"config error: {line}", file=sys.stderr)
  sys.exit(2)


def _resolve_config_flag(arg: str) -> str:
  """`--config=configs/x.py[:preset]` from any directory: the installed configs when the working
  directory has none (citrus_jax/shipped_configs.py)."""
  if not arg.startswith("--config="):
    return arg
  path, sep, preset = arg[len("--config="):].partition(":")
  return f"--config={shipped_configs.resolve(path)}{sep}{preset}"


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with each mistake in a --config flag turned into a config error
  (ml_collections raises a bare KeyError/AttributeError for a field the config lacks)."""
  # config_overrides imports config_check (JAX, train.plan): kept out of `import citrus_jax.main`.
  from citrus_jax import config_overrides
  shipped_configs.ensure_importable()
  argv = [_resolve_config_flag(a) for a in argv]
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    problem = config_overrides.flag_error(str(e))
    if problem is None:  # another flag: absl's own report
      print(f"FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull to see help on "
            "flags.", file=sys.stderr)
      sys.exit(1)
    _fail_config([problem])
  except (AttributeError, KeyError, IndexError, TypeError, ValueError) as e:
    found = []
    try:  # load the config again (the flag holds none) to name the unknown fields
      config = flags.FLAGS["config"].parser.parse(config_overrides.config_argument(argv) or "")
      found = [p for p in (config_overrides.unknown_override(config, path)
                           for path in config_overrides.override_paths(argv)) if p]
    except Exception:  # pylint: disable=broad-except
      pass
    _fail_config(found or [("config", f"{type(e).__name__}: {e}")])
  config = flags.FLAGS["config"].value
  if config is None:
    _fail_config([("--config", "missing: give --config=configs/<file>.py[:<preset>]")])
  try:  # ml_collections defers a config file that failed to load to its first use
    config.get("stage")
  except OSError as e:
    path = (config_overrides.config_argument(argv) or "").split(":", 1)[0]
    _fail_config([("--config", f"{path}: no such file" if not os.path.exists(path) else
                   " ".join(line.strip() for line in str(e).splitlines()))])
  return rest


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
