"""The one training loop every stage runs on: sharded state, jitted step, logs, checkpoints.

A stage (CPT, SFT, RL) hands over a `Stage`: its loss, its batch iterator and how to build the
initial params. Everything else (resume, preemption, the non-finite step guard, evaluation,
logging, the params-only export that the next stage starts from) lives here once.

A step whose loss, gradient norm or updated params are not finite is skipped inside the jitted
step (optim.guard_step: params and optimizer state stay as they were) and logged with
train/skipped=1; `train.max_skipped_steps` consecutive skips stop the run with
TrainingDivergedError. Only states verified finite are checkpointed.
"""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import time
from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from citrus_jax import multihost, sharding
from citrus_jax.config_types import ConfigError
from citrus_jax.model import lora, transformer
from citrus_jax.model.config import ModelConfig
from citrus_jax.train import checkpoint, metrics_log, optim
from citrus_jax.train.step import LossFn, TotalsFn, init_state, make_eval_step, \
    make_train_step, state_shardings, token_totals


@dataclasses.dataclass
class Stage:
  """What differs between stages."""
  name: str
  loss_fn: LossFn
  train_iter: Iterator[dict[str, np.ndarray]]  # process-local batches; grain iterators resume
  num_steps: int
  init_params: Callable[[Any], Any]  # shardings -> params (random, checkpoint or HF)
  totals_fn: TotalsFn = token_totals
  eval_batches: Callable[[], Iterable[dict[str, np.ndarray]]] | None = None
  tokens_in_batch: Callable[[dict[str, np.ndarray]], int] = (
      lambda b: int((np.asarray(b["segment_ids"]) > 0).sum()))
  # Online RL: (params, what train_iter gave, step) -> (train batch, host metrics). The batch is
  # made from the CURRENT params (e.g. group rollouts); train_iter then yields prompts, so resume
  # stays exact as long as the rollout's randomness is a function of the step.
  rollout: Callable[[Any, Any, int], tuple[dict[str, np.ndarray], dict[str, float]]] | None = None


@dataclasses.dataclass
class TrainResult:
  params: Any
  step: int
  workdir: str
  last_metrics: dict[str, float]
  stopped_early: str | None = None
  adapters: Any = None  # LoRA runs: the trained adapters (params is then base + them, merged)


class NonFiniteLossError(FloatingPointError):
  pass


class TrainingDivergedError(NonFiniteLossError):
  """Too many consecutive steps were non-finite and skipped; the message says what to change."""


DEFAULT_MAX_SKIPPED_STEPS = 10


def random_init(cfg: ModelConfig, seed: int) -> Callable[[Any], Any]:
  """Params created directly in their sharded layout (never whole on one device)."""
  def init(shardings: Any) -> Any:
    return jax.jit(lambda: transformer.init_params(cfg, jax.random.key(seed)),
                   out_shardings=shardings)()
  return init


def in_mesh(mesh: Mesh, fn: Callable) -> Callable:
  """`fn` called with `mesh` set, so the model's activation sharding constraints apply when it
  is traced (see transformer._batch_sharded)."""
  def call(*args, **kwargs):
    with jax.set_mesh(mesh):
      return fn(*args, **kwargs)
  return call


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Process-local numpy rows -> global arrays split over the data-parallel axes."""
  return {k: jax.make_array_from_process_local_data(sharding.batch_sharding(mesh, v.ndim),
                                                    np.asarray(v))
          for k, v in batch.items()}


_AGREE_TIMEOUT_MS = 24 * 3600 * 1000  # a host may be compiling or restoring for a long time


def _host_sum(tag: str, values: list[float], done_key: str | None = None) -> np.ndarray:
  """Element-wise sum of a few numbers over processes, exchanged through JAX's coordination
  service (key-value store + barrier: host RPCs) instead of `multihost.process_sum`'s device
  all-gather, which would queue behind the step in flight and so wait for it. `tag` must be
  unique per call and the same on every process (e.g. stage/step). `done_key`: this process's key
  of the previous round, deleted once this round's barrier shows every process has read it."""
  if jax.process_count() == 1:
    return np.asarray(values, np.float64)
  # Imported here: a private jax module, needed only on several processes.
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  # jax exposes no public host-side reduction; orbax and multihost_utils use this client too.
  client = distributed.global_state.client
  if client is None:
    return multihost.process_sum(values)
  me, n = jax.process_index(), jax.process_count()
  client.key_value_set(f"citrus_agree/{tag}/{me}", ",".join(repr(float(v)) for v in values))
  client.wait_at_barrier(f"citrus_agree/{tag}", _AGREE_TIMEOUT_MS)
  rows = client.key_value_dir_get(f"citrus_agree/{tag}/")
  if len(rows) != n:
    raise RuntimeError(f"host agreement {tag}: {len(rows)} of {n} processes answered")
  total = np.sum([[float(v) for v in value.split(",")] for _, value in rows], axis=0)
  if done_key is not None:
    client.key_value_delete(done_key)
  return total


class _Preemption:
  """SIGTERM sets a flag; the loop finishes the step it has read a batch for, saves and exits
  cleanly."""

  def __init__(self):
    self.requested = False
    self._old = None
    self._done_key = None  # the previous agreement's key (multi-host runs)
    self._connected = False

  def __enter__(self):
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. inside a notebook worker)
      self._old = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def agree(self, has_batch: bool, tag: str) -> tuple[bool, bool]:
    """(every process has a batch for the next step, some process got SIGTERM), the same answer
    on all of them: hosts are signalled at slightly different times and can run out of data at
    different steps (uneven shards of a finite epoch), and all must step, save (a collective) and
    stop together. On multi-host runs this is a host-side exchange through JAX's coordination
    service (`_host_sum`), not a device collective, so it never waits for the step the
    devices are running; on one process it is free."""
    flags = [not has_batch, self.requested]
    if not self._connected:
      # The first agreement is a device all-gather: it sets up the cross-process collective
      # context (gloo on CPU) before the first step is compiled, so a host that compiles slower
      # cannot make the others' first-step connection time out.
      out_of_data, preempted = multihost.process_sum(flags)
      self._connected = True
    else:
      out_of_data, preempted = _host_sum(tag, flags, self._done_key)
      self._done_key = f"citrus_agree/{tag}/{jax.process_index()}"
    return not out_of_data, bool(preempted)

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


class _SkipTracker:
  """Counts the steps the guard skipped and the current run of consecutive ones."""

  def __init__(self, max_skipped: int):
    self.max_skipped, self.steps = max_skipped, []
    self.streak, self.first_bad = 0, None  # consecutive skips, the first of them and its metrics

  def record(self, step: int, metrics: dict[str, float]) -> None:
    if metrics.get("skipped", 0.0):
      self.steps.append(step)
      self.streak += 1
      if self.streak == 1:
        self.first_bad = (step, metrics)
    else:
      self.streak = 0

  @property
  def diverged(self) -> bool:
    return self.max_skipped > 0 and self.streak >= self.max_skipped


def _progress(total: int, initial: int, desc: str, enabled: bool):
  return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True,
              file=sys.stdout, mininterval=1.0)


def lora_config(config: Any) -> lora.LoraConfig | None:
  """`config.model.lora` as a LoraConfig (None: off); a bad field is a ConfigError."""
  try:
    return lora.config_from(config.model.get("lora"))
  except ValueError as e:
    raise ConfigError(str(e)) from None


def train(config: Any, model_cfg: ModelConfig, stage: Stage, mesh: Mesh,
          workdir: str) -> TrainResult:
  """Runs (or resumes) `stage` to `stage.num_steps` and exports params to `workdir/params`.

  With `config.model.lora` enabled the train state holds only the LoRA adapters and their
  optimizer state; the base (`stage.init_params`, quantised if lora.quant says so) is frozen,
  reloaded on resume from the reference in `workdir/lora/lora.json`, and passed to the step as
  an argument. `workdir/params` is then base + adapters merged (what the next stage, evaluation
  and HF export read) and `workdir/lora/adapters` the adapters (peft_io.export_stage)."""
  is_main = jax.process_index() == 0
  optimizer, schedule = optim.make_optimizer(config.optim, stage.num_steps)
  lcfg = lora_config(config)
  if lcfg is None:
    param_sh = sharding.param_shardings(model_cfg, mesh)
    abstract_params = jax.eval_shape(lambda: transformer.init_params(model_cfg,
                                                                     jax.random.key(0)))
  else:
    abstract_params, abstract_base = lora.abstract_params(model_cfg, lcfg)
    param_sh = lora.shardings_like(abstract_params, model_cfg, mesh)
    base_sh = lora.shardings_like(abstract_base, model_cfg, mesh)
  abstract_state = jax.eval_shape(lambda p: init_state(p, optimizer, config.seed), abstract_params)
  state_sh = state_shardings(abstract_state, param_sh, mesh)
  ck = config.checkpoint
  ckpt_dir = os.path.join(workdir, "checkpoints")
  checkpoint.check_writable(ckpt_dir)  # seconds, not an async save timing out minutes later
  if lcfg is not None:
    checkpoint.write_lora_meta(workdir, model_cfg, lcfg, checkpoint.base_reference(config))
    # The frozen base, on every start (fresh or resumed): the same init as a full run.
    base = lora.quantize_base(stage.init_params(sharding.param_shardings(model_cfg, mesh)), lcfg,
                              base_sh, donate=stage.rollout is None)
  ckpt = checkpoint.Checkpointer(ckpt_dir, every=ck.every,
                                 keep=ck.keep, async_save=ck.get("async_save", True))
  state_finite = jax.jit(lambda s: optim.all_finite((s.params, s.opt_state)))
  state_like = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            abstract_state, state_sh)
  start, state = ckpt.restore_latest(state_like, stage.train_iter,
                                     verify=lambda s: bool(state_finite(s)))
  last_good = start  # the newest checkpoint known to hold a finite state
  if start is not None:
    print(f"[{stage.name}] resumed from step {start} in {workdir}", flush=True)
  else:
    if lcfg is None:
      params = stage.init_params(param_sh)
    else:  # PEFT's init (B = 0: the adapted model starts as the base)
      params = jax.jit(lambda: lora.init_adapters(
          model_cfg, lcfg, jax.random.fold_in(jax.random.key(config.seed), 1)),
          out_shardings=param_sh)()
    state = jax.jit(lambda p: init_state(p, optimizer, config.seed), out_shardings=state_sh)(params)
    start = 0

  grad_accum = config.optim.get("grad_accum", 1)
  if lcfg is None:
    step_fn = in_mesh(mesh, jax.jit(optim.guard_step(make_train_step(
                                        stage.loss_fn, optimizer, stage.totals_fn, grad_accum,
                                        schedule)),
                                    in_shardings=(state_sh, None),
                                    out_shardings=(state_sh, None), donate_argnums=0))
    full_params = lambda p: p
  else:
    lora_step = in_mesh(mesh, jax.jit(lora.train_step(stage.loss_fn, optimizer, lcfg,
                                                      stage.totals_fn, grad_accum, schedule),
                                      in_shardings=(state_sh, None, base_sh),
                                      out_shardings=(state_sh, None), donate_argnums=0))
    step_fn = lambda s, b: lora_step(s, b, base)
    full_params = lambda p: lora.combine(p, base, lcfg)  # no dropout: eval and rollouts
  eval_fn = in_mesh(mesh, jax.jit(make_eval_step(stage.loss_fn, stage.totals_fn)))
  logger = metrics_log.MetricsLogger(workdir, tensorboard=config.get("tensorboard", True),
                                     resume_step=start)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_params))
  if lcfg is not None:  # the base's matmuls run forward and backward (no weight gradients)
    n_params = transformer.count_params(model_cfg) * 2 // 3
  peak = metrics_log.peak_flops()
  log_every = max(int(config.train.get("log_every", 10)), 1)
  # The host reads a step's metrics only at log, eval and save points (and the end), so it
  # dispatches the next steps while the device runs; `train.async_host=False` reads them every
  # step, the old way (benchmarks/host_loop.py compares the two).
  fetch_every = log_every if config.train.get("async_host", True) else 1
  eval_every = int(config.train.get("eval_every", 0))
  kill_after = int(config.train.get("kill_after_step", 0))  # fault injection for resume tests
  max_skipped = int(config.train.get("max_skipped_steps", DEFAULT_MAX_SKIPPED_STEPS))
  skips = _SkipTracker(max_skipped)
  pending: list[tuple[int, Any, dict[str, float]]] = []  # (step, device metrics, host metrics)
  last: dict[str, float] = {}
  stopped = diverged = None
  bar = _progress(stage.num_steps, start, stage.name, is_main and config.get("progress", True))
  t_last, tokens_since = time.perf_counter(), 0
  seq_len = 0
  step = start

  def drain() -> dict[str, float]:
    """Fetches, checks and logs the metrics of every step dispatched since the last drain."""
    nonlocal t_last, tokens_since
    out: dict[str, float] = {}
    for i, (s, device_metrics, host_metrics) in enumerate(jax.device_get(pending)):
      out = {k: float(v) for k, v in device_metrics.items()}
      out.update(host_metrics)
      skips.record(s, out)
      if stage.rollout is None:  # a policy-gradient loss is no log-likelihood
        out["perplexity"] = math.exp(min(out.get("nll", out["loss"]), 50.0))
      if i == len(pending) - 1 and (s % log_every == 0 or s == stage.num_steps):
        dt = time.perf_counter() - t_last
        out["tokens_per_sec"] = tokens_since / max(dt, 1e-9)
        if peak:
          flops = metrics_log.train_flops_per_token(n_params, model_cfg.n_layers, seq_len,
                                                    model_cfg.q_dim)
          out["mfu"] = out["tokens_per_sec"] * flops / (peak * jax.device_count())
        t_last, tokens_since = time.perf_counter(), 0
        bar.set_postfix(loss=f"{out['loss']:.4f}", lr=f"{out.get('lr', 0):.2e}",
                        tok_s=f"{out['tokens_per_sec']:.0f}")
      logger.write(s, out, prefix="train/")
    pending.clear()
    return out

  with _Preemption() as preempt:
    while step < stage.num_steps:
      # The agreement comes after reading the batch, so a SIGTERM is acted on after the step
      # that uses it: the saved data position is then the one the saved state has seen.
      local = next(stage.train_iter, None)
      have_batches, preempted = preempt.agree(local is not None, f"{stage.name}/{step}")
      if not have_batches:
        stopped = "data exhausted"
        where = "" if local is None else " on another process"
        print(f"[{stage.name}] data ran out{where} at step {step} of {stage.num_steps}",
              flush=True)
        break
      rollout_metrics: dict[str, float] = {}
      if stage.rollout is not None:
        local, rollout_metrics = stage.rollout(full_params(state.params), local, step)
      tokens_since += stage.tokens_in_batch(local)
      seq_len = int(np.asarray(local[next(iter(local))]).shape[-1])
      state, metrics = step_fn(state, to_global(local, mesh))  # dispatched, not waited for
      step += 1
      pending.append((step, metrics, rollout_metrics))
      bar.update(1)
      is_eval = bool(eval_every and stage.eval_batches and (step % eval_every == 0 or
                                                            step == stage.num_steps))
      is_save = ckpt.should_save(step) or preempted or step == kill_after
      if (step % fetch_every == 0 or step == stage.num_steps or is_eval or is_save
          or stage.rollout is not None):
        last = drain() or last
      if is_eval:
        logger.write(step, evaluate(eval_fn, full_params(state.params), stage.eval_batches(),
                                    mesh), prefix="eval/")
      if skips.diverged:
        diverged = _diverged_message(stage.name, config, step, max_skipped, skips.first_bad,
                                     last_good, ckpt_dir)
        break
      if _save(ckpt, step, state, stage.train_iter, state_finite, preempted):
        last_good = step
      if preempted:
        ckpt.wait()
        stopped = "preempted (SIGTERM): saved and exiting"
        print(f"[{stage.name}] {stopped} at step {step}", flush=True)
        break
      if kill_after and step == kill_after:
        ckpt.wait()
        os._exit(17)  # simulated crash: no clean shutdown
  if pending:
    last = drain() or last
  skipped_steps = skips.steps
  bar.close()
  if skipped_steps:
    shown = ", ".join(map(str, skipped_steps[:20])) + (" ..." if len(skipped_steps) > 20 else "")
    print(f"[{stage.name}] {len(skipped_steps)} step(s) skipped (non-finite loss, gradient norm "
          f"or update; params and optimizer state kept): {shown}", flush=True)
  if diverged is None and (stopped is None or stopped == "data exhausted"):
    _save(ckpt, step, state, stage.train_iter, state_finite, force=True)
  ckpt.close()
  logger.close()
  if diverged:
    raise TrainingDivergedError(diverged)
  params, adapters = state.params, None
  if lcfg is not None:
    adapters = state.params
    params = in_mesh(mesh, jax.jit(lambda a, b: lora.merge(lora.combine(a, b, lcfg),
                                                           model_cfg.param_dtype)))(adapters, base)
  if stopped is None or stopped == "data exhausted":
    checkpoint.save_params(workdir, params, model_cfg,
                           extra={"stage": stage.name, "step": step,
                                  **({"lora": True} if lcfg else {})})
    if lcfg is not None:
      checkpoint.save_adapters(workdir, adapters)
  return TrainResult(params=params, step=step, workdir=workdir, last_metrics=last,
                     stopped_early=stopped, adapters=adapters)


def _save(ckpt: checkpoint.Checkpointer, step: int, state: Any, data_iter: Any,
          state_finite: Callable[[Any], Any], force: bool = False) -> bool:
  """Saves when due (or forced), only a state whose every value is finite. The guard keeps the
  state finite, so a failure here means the run started from non-finite params."""
  if not force and not ckpt.should_save(step):
    return False
  if step in ckpt.all_steps():
    return True
  if not bool(state_finite(state)):
    raise NonFiniteLossError(f"the train state at step {step} is not finite; no checkpoint "
                             f"was written for it. Check the initial params (config.init).")
  return ckpt.save(step, state, data_iter, force=force)


def _diverged_message(name: str, config: Any, step: int, max_skipped: int,
                      first_bad: tuple[int, dict[str, float]], last_good: int | None,
                      ckpt_dir: str) -> str:
  at, m = first_bad
  o = config.optim
  values = ", ".join(f"{k} {m[k]:.4g}" for k in ("loss", "grad_norm", "lr") if k in m)
  if all(math.isfinite(m.get(k, 0.0)) for k in ("loss", "grad_norm")):
    values += "; the update made params non-finite or larger than ~1e19"
  good = (f"the last good checkpoint (verified finite) is step {last_good} in {ckpt_dir}"
          if last_good is not None else "no checkpoint was written (none was due yet)")
  return (f"[{name}] training diverged: {step - at + 1} consecutive steps ({at}..{step}) had "
          f"a non-finite loss, gradient norm or update and were skipped, so params and optimizer "
          f"state are still as after step {at - 1} (first bad step: {values}). Stopped at step "
          f"{step}; {good}. Lower optim.lr (now {o.get('lr')}), set optim.grad_clip (now "
          f"{o.get('grad_clip', 0.0)}) or a warmup (optim.warmup_steps / optim.warmup_frac), or "
          f"check the data; train.max_skipped_steps (now {max_skipped}) sets how many consecutive "
          f"skips are tolerated.")


def _eval_weight(batch: dict[str, np.ndarray]) -> float:
  """What a held-out batch's metrics are a mean over: its real rows (a padded final batch of
  pairs has row_mask 0 rows), else its trained tokens."""
  if "row_mask" in batch:
    return float(np.asarray(batch["row_mask"]).sum())
  return float(np.asarray(batch.get("loss_mask", np.ones(1))).sum())


def evaluate(eval_fn: Callable, params: Any, batches: Iterable[dict[str, np.ndarray]],
             mesh: Mesh) -> dict[str, float]:
  """Token-weighted mean of each metric over the held-out batches (row-weighted for batches that
  carry a `row_mask`: preference pairs, whose metrics are means over their real rows).

  A batch's metrics are means over its GLOBAL tokens (rows), so it weighs its global count (the
  processes' counts summed). Processes may hold different numbers of held-out batches: one that
  has run out feeds an all-padding batch (no tokens) until every process has."""
  sums: dict[str, float] = {}
  weight = 0.0
  batches, blank = iter(batches), None
  while True:
    local = next(batches, None)
    if local is not None and blank is None:
      blank = {k: np.zeros_like(v) for k, v in local.items()}
    tokens = 0.0 if local is None else _eval_weight(local)
    n_have, w = multihost.process_sum([local is not None, tokens])
    if not n_have:
      break
    if local is None:
      if blank is None:
        raise ValueError("evaluate: this process has no held-out batch while others have; "
                         "every process needs at least one")
      local = blank
    metrics = jax.device_get(eval_fn(params, to_global(local, mesh)))
    w = w or 1.0
    for k, v in metrics.items():
      sums[k] = sums.get(k, 0.0) + float(v) * w
    weight += w
  out = {k: v / max(weight, 1e-9) for k, v in sums.items()}
  if "loss" in out:
    out["perplexity"] = math.exp(min(out.get("nll", out["loss"]), 50.0))
  return out
