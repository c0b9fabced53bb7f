"""The whole Citrus recipe as one resumable run (configs/citrus.py; configs/demo.py is the same
pipeline on the shipped clinical world).

  data -> tokenizer -> init -> cpt -> sft1 -> sft2 -> sft3 -> rejection -> rl [-> grpo]
       -> eval -> export -> report

Each step runs in `<workdir>/<step>` (the SFT stages in `sft/<name>`), saves its resolved
config there and writes `done.json` when it finishes; a rerun skips finished steps and resumes at
the first unfinished one, and a training step resumes from its own checkpoints. Every step can
be skipped (`config.steps.<step>.skip`), given its own data (`train_paths`, `questions`,
`data_paths`/`data_dir`) and its own overrides of its stage config (`overrides`, a nested
section, or `set='optim.lr=1e-5;train.num_steps=10'`). Each stage starts from the previous
stage that ran (the first from config.init). On several hosts every process runs the same
steps, as the stages do; process 0 writes the records.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

import ml_collections

from citrus_jax import runtime, sharding, shipped_configs
from citrus_jax.demo import report
from citrus_jax.pipeline import clinic, planning, runner, sources, steps
from citrus_jax.pipeline.runner import StopPipeline
from citrus_jax.pipeline.steps import Preempted, by_group  # noqa: F401  (tools/demo_dev.py)
from citrus_jax.train import checkpoint

STEPS = ("data", "tokenizer", "init", "cpt", "sft1", "sft2", "sft3", "rejection", "rl", "grpo",
         "eval", "export", "report")
SFT_STAGES = ("sft1", "sft2", "sft3")
TRAIN_STEPS = ("cpt", *SFT_STAGES, "rl", "grpo")
# Steps whose runners write with local file IO: staged locally when the workdir is gs://.
LOCAL_IO = ("rejection", "eval", "export")
# step -> (configs/ module name, file) of its stage config
STAGE_FILES = {"cpt": "cpt", "sft1": "sft", "sft2": "sft", "sft3": "sft", "rl": "rl",
               "grpo": "grpo", "eval": "eval"}


def _stage_module(step: str) -> Any:
  return importlib.import_module(f"configs.{STAGE_FILES[step]}")


def preflight(config: ml_collections.ConfigDict) -> None:
  """Every step's overrides applied to its stage preset before anything runs, so a typo in the
  last step's overrides fails in seconds, not after CPT."""
  if config.pipeline.source not in sources.SOURCES:
    raise runtime.ConfigError(f"config.pipeline.source={config.pipeline.source!r}: expected one "
                              f"of {sources.SOURCES}")
  unknown = sorted(set(config.steps.keys()) - set(STEPS))
  if unknown:
    raise runtime.ConfigError(f"config.steps: unknown steps {unknown}; steps: {STEPS}")
  stop = config.pipeline.get("stop_after", "")
  if stop and stop not in STEPS:
    raise runtime.ConfigError(f"config.pipeline.stop_after={stop!r}: expected one of {STEPS}")
  for step in STAGE_FILES:
    if not config.steps[step].skip:
      runner.stage_config(_stage_module(step), f"{STAGE_FILES[step]}.py", config, step,
                          "/nonexistent", "", {})


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Runs every step that has not finished yet; returns the run directory."""
  return run_job(config, workdir)[0]


def run_job(config: ml_collections.ConfigDict, workdir: str) -> tuple[str, bool]:
  """(run directory, whether a training stage stopped on SIGTERM and the run can resume)."""
  shipped_configs.ensure_importable()  # the stage configs, also from an installed package
  if not str(config.workdir).strip() or not str(workdir).strip():  # not the cwd itself
    raise runtime.ConfigError("config.workdir: empty; give the run directory")
  if "://" not in workdir:
    workdir = os.path.abspath(workdir)
  if config.pipeline.get("source") == "clinic_world":
    clinic.apply_knobs(config)  # the demo's knobs, after any command-line overrides
  preflight(config)
  runtime.save_resolved_config(config, workdir)
  try:
    _run(config, workdir)
  except StopPipeline as e:
    print(f"[pipeline] stopped after {e} (config.pipeline.stop_after); rerun to continue",
          flush=True)
  except Preempted as e:
    print(f"[pipeline] {e}; rerun the same command to resume", flush=True)
    return workdir, True
  return workdir, False


def _final(chain: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
  name = list(chain)[-1]
  return name, chain[name]


def _run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  S = config.steps
  stop = config.pipeline.get("stop_after", "")

  def step(name: str, fn, step_dir: str | None = None) -> dict[str, Any]:
    skip = bool(S[name].skip) if name in S else False
    return runner.run_step(workdir, name, fn, step_dir=step_dir, skip=skip, stop_after=stop,
                           local_io=name in LOCAL_IO)

  data = step("data", lambda d: sources.prepare(config, d))
  found = sources.inputs(config, data)
  tok = step("tokenizer", lambda d: sources.tokenizer_step(config, d, data, found))
  tok_path = tok["model"]
  init = step("init", lambda d: steps.step_init(config, d, found.get("hf_dir", ""), tok_path))
  results: dict[str, Any] = {"data": data, "tokenizer": tok, "init": init}
  chain: dict[str, dict[str, Any]] = {"init": init}  # the stages that ran, in order

  def start() -> dict[str, str]:
    return steps.init_from(_final(chain)[1])

  def train(name: str, fn, step_dir: str | None = None) -> None:
    before = _final(chain)[0]
    r = step(name, fn, step_dir)
    results[name] = {**r, "start": r.get("init", before)}
    if not r.get("skipped"):
      chain[name] = r

  train("cpt", lambda d: steps.step_cpt(config, d, tok_path, start(), found["cpt"]))
  for name in SFT_STAGES:
    train(name, lambda d, n=name: steps.step_sft(config, n, d, tok_path, start(), found[n],
                                                 S[n].get("eval_paths", "")),
          step_dir=f"sft/{name}")
  ran = {n: chain[n]["workdir"] for n in SFT_STAGES if n in chain}
  if ran:
    results["sft"] = runner.run_step(workdir, "sft", lambda d: {"workdirs": ran})
  sft_final = steps.init_from(_final(chain)[1])
  rej = step("rejection", lambda d: steps.step_rejection(
      config, d, tok_path, sft_final, found["questions"]))
  results["rejection"] = rej
  pairs = S.rl.get("train_paths") or rej.get("pairs")
  if not S.rl.skip and not pairs:
    raise runtime.ConfigError("config.steps.rl.train_paths: empty and step 'rejection' was "
                              "skipped; give preference pairs or run rejection sampling")
  train("rl", lambda d: steps.step_rl(config, d, tok_path, start(), pairs))
  if not S.grpo.skip:
    origin = S.grpo.get("init_from", "rl")
    if origin not in chain:
      raise runtime.ConfigError(f"config.steps.grpo.init_from={origin!r}: that step did not "
                                f"run; ran: {list(chain)}")
    init_g = steps.init_from(chain[origin])
    questions = S.grpo.get("train_paths") or found["questions"]
    train("grpo", lambda d: steps.step_grpo(config, d, tok_path, init_g, questions, origin))
  final_name, final = _final(chain)
  names = runner_names(S.eval.checkpoints, final_name)
  checkpoints = {}
  for n in names if not S.eval.skip else ():
    if n == "random":
      checkpoints[n] = {}
    elif n in chain:
      checkpoints[n] = steps.init_from(chain[n])
    else:
      print(f"[pipeline] eval: {n!r} did not run; not evaluated", flush=True)
  ev = {"benchmarks": found.get("eval_benchmarks", ""), "data_paths": found.get("eval_paths", ""),
        "data_dir": "" if found.get("eval_paths") else found.get("eval_dir", "")}
  results["eval"] = step("eval", lambda d: steps.step_eval(config, d, tok_path, checkpoints, ev))
  if not S.export.skip and not final.get("workdir"):
    raise runtime.ConfigError("config.steps.export: no stage ran, nothing to export (skip it)")
  results["export"] = step("export", lambda d: steps.step_export(
      config, d, tok_path, final["workdir"], final_name))
  if not S.report.skip:
    report.write(workdir, results, config)
  return results


def runner_names(value: Any, final: str) -> list[str]:
  """`steps.eval.checkpoints`: 'final' is the last stage that ran."""
  out = []
  for n in runtime.split_paths(value):
    n = final if n == "final" else n
    if n not in out:
      out.append(n)
  return out


def plan(config: ml_collections.ConfigDict, workdir: str, devices: list[Any] | None) -> str:
  """Plan mode for the recipe (citrus_jax/pipeline/planning.py)."""
  return planning.run(config, workdir, devices)


# ------------------------------------------------------------------------------------------------
# The old single-module names, for tools/demo_dev.py (the demo's dev-split sweeps)

_run_step = runner.run_step


def step_data(config: ml_collections.ConfigDict, step_dir: str) -> dict[str, Any]:
  return clinic.step_data(config, step_dir)


def step_tokenizer(config: ml_collections.ConfigDict, step_dir: str, paths: dict) -> dict:
  return clinic.step_tokenizer(config, step_dir, paths)


def _load(params_dir: str, mesh: Any = None) -> tuple[Any, Any]:
  cfg = checkpoint.read_model_config(params_dir)
  shardings = sharding.param_shardings(cfg, mesh) if mesh is not None else None
  return cfg, checkpoint.load_params(params_dir, cfg, shardings)


def _stage_config(module: Any, preset: str, config: ml_collections.ConfigDict, workdir: str,
                  tokenizer_path: str, **data: Any) -> ml_collections.ConfigDict:
  """A demo stage's config as its pipeline step builds it (`preset` is the step's own)."""
  del preset
  clinic.apply_knobs(config)
  name = {"cpt": "cpt", "sft": "sft3", "rl": "rl", "grpo": "grpo"}[module.__name__.split(".")[-1]]
  return runner.stage_config(module, f"{module.__name__.split('.')[-1]}.py", config, name,
                             workdir, tokenizer_path, {}, data=data)


def step_grpo(config: ml_collections.ConfigDict, step_dir: str, questions: str,
              tok_path: str, init_dir: str) -> dict[str, Any]:
  clinic.apply_knobs(config)
  return steps.step_grpo(config, step_dir, tok_path, {"checkpoint": init_dir}, questions,
                         os.path.basename(os.path.normpath(init_dir)))
