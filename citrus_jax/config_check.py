"""One validation pass over a run config, before anything is built or trained.

Every value that cannot work becomes a `(field, why)` problem, all of them at once, and `main`
prints each as `config error: <field>: <why>` and exits 2. Without it a typo costs a traceback
minutes in (or never shows: `optim.lr=-1.0` trained from loss 5.8 up to 33.5 and exited 0).

The table is `RULES` (one field, one check of its value) plus `CROSS` (checks that read several
fields: the mesh against the devices, seq_len against the model's context, steps against
epochs). Each entry names the stages that read the field, and a stage's own checks go in the
same two lists. Fields a config does not have are skipped: each stage file adds its own section.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import os
import re
from typing import Any, Callable, Iterable, Sequence

import ml_collections

from citrus_jax import model_source, sharding
from citrus_jax.config_types import EVAL_MODES, MODES, STAGES, ConfigError, split_paths
from citrus_jax.model import config as model_config
from citrus_jax.train import plan

Problem = tuple[str, str]  # (field, e.g. "config.optim.lr"; why it cannot work)
Check = Callable[[Any], "str | None"]  # a value -> None, or why it is bad

TRAIN = ("cpt", "sft", "rl", "grpo")  # stages that run the training engine
ALL = STAGES
DTYPES = ("float32", "bfloat16", "float16")
TEXT_FORMATS = ("auto", "jsonl", "text", "tfds", "hf")  # data/sources.py open_source kinds


# ------------------------------------------------------------------------------------------------
# Checks of one value


def _fmt(x: float) -> str:
  return f"{x:g}" if isinstance(x, float) else str(x)


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False, integer: bool = False, optional: bool = False) -> Check:
  """A finite number in [lo, hi] (either end open or absent); None passes only if optional."""
  def check(v: Any) -> str | None:
    if v is None:
      return None if optional else "must be set"
    kind = "an integer" if integer else "a number"
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and v != int(v)):
      return f"must be {kind}, got {v!r}"
    if not math.isfinite(v):
      return f"must be finite, got {v!r}"
    low_bad = lo is not None and (v <= lo if lo_open else v < lo)
    high_bad = hi is not None and (v >= hi if hi_open else v > hi)
    if not (low_bad or high_bad):
      return None
    if lo is not None and hi is not None:
      return (f"must be in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if hi_open else ']'}"
              f", got {v!r}")
    if lo is not None:
      return f"must be {'>' if lo_open else '>='} {_fmt(lo)}, got {v!r}"
    return f"must be {'<' if hi_open else '<='} {_fmt(hi)}, got {v!r}"
  return check


def at_least(lo: int, *, optional: bool = False) -> Check:
  return number(lo, integer=True, optional=optional)


def one_of(choices: Sequence[str] | Callable[[], Sequence[str]]) -> Check:
  """A value from a fixed set; a callable is imported lazily (only for the stage that reads it)."""
  def check(v: Any) -> str | None:
    allowed = tuple(choices() if callable(choices) else choices)
    if v in allowed:
      return None
    near = difflib.get_close_matches(str(v), [str(a) for a in allowed], n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f"{v!r} is unknown{hint}; expected one of {', '.join(map(repr, allowed))}"
  return check


def each(check: Check) -> Check:
  """Every element of a sequence (the first bad one is reported with its index)."""
  def run(v: Any) -> str | None:
    if not isinstance(v, (list, tuple)):
      return f"must be a list, got {v!r}"
    for i, x in enumerate(v):
      why = check(x)
      if why:
        return f"[{i}] {why}"
    return None
  return run


def _is_local(path: str) -> bool:
  return "://" not in path and not any(c in path for c in "*?[")


def existing_paths(v: Any) -> str | None:
  """Comma-separated local paths that must exist (globs and gs:// etc. are left to the reader)."""
  missing = [p for p in split_paths(v) if _is_local(p) and not os.path.exists(p)]
  return f"{', '.join(missing)} does not exist" if missing else None


def mesh_shape(v: Any) -> str | None:
  if not isinstance(v, (list, tuple)) or len(v) != 3:
    return f"must be 3 axis sizes (data, fsdp, tensor), got {v!r}"
  if any(isinstance(s, bool) or not isinstance(s, int) or (s < 1 and s != -1) for s in v):
    return f"axis sizes must be >= 1 or -1 (the remaining devices), got {tuple(v)}"
  if list(v).count(-1) > 1:
    return f"at most one axis may be -1, got {tuple(v)}"
  return None


def topology(v: Any) -> str | None:
  if not v:
    return None
  try:
    plan.parse_topology(v)
  except ValueError as e:
    return str(e)
  return None


def _lazy(module: str, attr: str, extra: Sequence[str] = ()) -> Callable[[], Sequence[str]]:
  # Looked up when a rule runs: the stacks that own these names (chat, data readers, RL losses,
  # eval) need not load for a config to be checked.
  def get() -> Sequence[str]:
    return (*extra, *getattr(importlib.import_module(module), attr))
  return get


_ON_ERROR = _lazy("citrus_jax.data.records", "ON_ERROR")  # what every record reader accepts


# ------------------------------------------------------------------------------------------------
# The table: field -> check, and the stages that read the field


@dataclasses.dataclass(frozen=True)
class Rule:
  field: str  # dotted path under config; "[*]" stands for every element of a sequence
  check: Check
  stages: tuple[str, ...] = ALL


_opt = dict(optional=True)
RULES: list[Rule] = [
    Rule("stage", one_of(STAGES)),
    Rule("mode", one_of(MODES)),
    Rule("model.param_dtype", one_of(DTYPES)),
    Rule("model.compute_dtype", one_of(DTYPES)),
    Rule("model.remat", one_of(("none", "full", "dots"))),
    Rule("model.attention", one_of(("auto", "einsum", "xla", "cudnn"))),
    Rule("model.vocab_size", at_least(0)),
    Rule("init.checkpoint", existing_paths),
    Rule("init.hf_dir", existing_paths),
    Rule("tokenizer.path", existing_paths),
    Rule("mesh.shape", mesh_shape),
    Rule("distributed.num_processes", at_least(0)),
    Rule("distributed.process_id", at_least(-1)),
    Rule("plan.batch_size", at_least(0)),
    Rule("plan.topology", topology),
    # Data and optimisation: what the training engine and every data reader read.
    Rule("data.global_batch_size", at_least(1), TRAIN + ("pipeline",)),
    Rule("data.seq_len", at_least(1), ("cpt", "sft", "pipeline")),
    Rule("data.on_error", one_of(_ON_ERROR), ("cpt", "sft", "rl")),
    Rule("data.format", one_of(TEXT_FORMATS), ("cpt",)),
    Rule("data.format", one_of(_lazy("citrus_jax.data.sft", "KINDS")), ("sft",)),
    Rule("data.num_epochs", at_least(0), TRAIN),
    Rule("data.worker_count", at_least(0), TRAIN),
    Rule("data.num_shards", at_least(0), TRAIN),
    Rule("optim.lr", number(0), TRAIN),
    Rule("optim.schedule", one_of(("cosine", "linear", "constant")), TRAIN),
    Rule("optim.warmup_frac", number(0, 1), TRAIN),
    Rule("optim.warmup_steps", at_least(0), TRAIN),
    Rule("optim.end_lr_frac", number(0, 1), TRAIN),
    Rule("optim.b1", number(0, 1, hi_open=True), TRAIN),
    Rule("optim.b2", number(0, 1, hi_open=True), TRAIN),
    Rule("optim.eps", number(0, lo_open=True), TRAIN),
    Rule("optim.weight_decay", number(0), TRAIN),
    Rule("optim.grad_clip", number(0), TRAIN),
    Rule("optim.grad_accum", at_least(1), TRAIN),
    Rule("train.num_steps", at_least(0), TRAIN),
    Rule("train.log_every", at_least(0), TRAIN),
    Rule("train.eval_every", at_least(0), TRAIN),
    Rule("train.eval_batches", at_least(1), TRAIN),
    Rule("train.z_loss", number(0), TRAIN),
    Rule("train.logits_fraction", number(0, 1, lo_open=True), TRAIN),
    Rule("train.kill_after_step", at_least(0), TRAIN),
    Rule("train.max_skipped_steps", at_least(0), TRAIN),
    Rule("checkpoint.every", at_least(1), TRAIN + ("pipeline",)),
    Rule("checkpoint.keep", at_least(1), TRAIN + ("pipeline",)),
    # SFT: each stage's overrides (None: the top-level value).
    Rule("sft.stages[*].lr", number(0, **_opt), ("sft",)),
    Rule("sft.stages[*].num_steps", at_least(0, **_opt), ("sft",)),
    Rule("sft.stages[*].num_epochs", at_least(0, **_opt), ("sft",)),
    Rule("sft.stages[*].batch_size", at_least(1, **_opt), ("sft",)),
    Rule("sft.stages[*].train_paths", existing_paths, ("sft",)),
    Rule("sft.stages[*].eval_paths", existing_paths, ("sft",)),
    Rule("sft.chat_format", one_of(_lazy("citrus_jax.chat", "FORMATS", ("",))), ("sft",)),
    Rule("sft.inspect_examples", at_least(0), ("sft",)),
    # RL (preference pairs).
    Rule("rl.loss", one_of(_lazy("citrus_jax.train.preference", "LOSSES")), ("rl",)),
    Rule("rl.max_length", at_least(2), ("rl",)),
    Rule("rl.max_prompt_length", at_least(1), ("rl",)),
    Rule("rl.beta", number(0, lo_open=True, **_opt), ("rl",)),
    Rule("rl.gamma", number(**_opt), ("rl",)),
    Rule("rl.cpo_alpha", number(0, **_opt), ("rl",)),
    Rule("rl.label_smoothing", number(0, 0.5, hi_open=True, **_opt), ("rl",)),
    # GRPO (online RL).
    Rule("grpo.loss_type", one_of(_lazy("citrus_jax.train.grpo_loss", "LOSS_TYPES")), ("grpo",)),
    Rule("grpo.prompt", one_of(_lazy("citrus_jax.rollout.questions", "PROMPT_STYLES", ("mcq",))),
         ("grpo",)),
    Rule("grpo.prompts_per_step", at_least(1), ("grpo",)),
    Rule("grpo.num_generations", at_least(2), ("grpo",)),
    Rule("grpo.max_prompt_length", at_least(1), ("grpo",)),
    Rule("grpo.max_new_tokens", at_least(1), ("grpo",)),
    Rule("grpo.temperature", number(0, lo_open=True), ("grpo",)),
    Rule("grpo.top_p", number(0, 1, lo_open=True), ("grpo",)),
    Rule("grpo.top_k", at_least(0), ("grpo",)),
    Rule("grpo.epsilon_low", number(0), ("grpo",)),
    Rule("grpo.epsilon_high", number(0, **_opt), ("grpo",)),
    Rule("grpo.beta", number(0), ("grpo",)),
    Rule("grpo.scale_rewards", one_of(("group", "batch", "none")), ("grpo",)),
    Rule("grpo.max_questions", at_least(0), ("grpo",)),
    Rule("grpo.toy_questions", at_least(0), ("grpo",)),
    Rule("grpo.log_samples_every", at_least(0), ("grpo",)),
    # Evaluation (eval/harness.py check_eval_config checks the same values again, later).
    Rule("eval.mode", one_of(EVAL_MODES), ("eval",)),
    Rule("eval.prompt", one_of(_lazy("citrus_jax.eval.prompts", "EVAL_PROMPTS")), ("eval",)),
    Rule("eval.chat_format", one_of(_lazy("citrus_jax.chat", "FORMATS", ("",))), ("eval",)),
    Rule("eval.loglik_form", one_of(_lazy("citrus_jax.eval.loglik", "FORMS")), ("eval",)),
    Rule("eval.shuffle_options", one_of(("default", "on", "off")), ("eval",)),
    Rule("eval.on_error", one_of(_ON_ERROR), ("eval",)),
    Rule("eval.max_new_tokens", at_least(1), ("eval",)),
    Rule("eval.temperature", number(0), ("eval",)),
    Rule("eval.top_p", number(0, 1, lo_open=True), ("eval",)),
    Rule("eval.top_k", at_least(0), ("eval",)),
    Rule("eval.batch_size", at_least(1), ("eval",)),
    Rule("eval.limit", at_least(0), ("eval",)),
    Rule("eval.data_paths", existing_paths, ("eval",)),
    Rule("eval.predictions", existing_paths, ("eval",)),
    # The demo lifecycle (configs/demo.py, pipeline.py).
    Rule("demo.world_scale", number(0, lo_open=True), ("pipeline",)),
    Rule("demo.sft3_cases", at_least(0), ("pipeline",)),
    Rule("demo.sft3_source", one_of(("template", "synth")), ("pipeline",)),
    Rule("demo.sft3_options_fraction", number(0, 1), ("pipeline",)),
    Rule("demo.tokenizer_vocab", at_least(1), ("pipeline",)),
    Rule("demo.cpt_steps", at_least(0), ("pipeline",)),
    Rule("demo.cpt_seq_len", at_least(1), ("pipeline",)),
    Rule("demo.sft_steps", each(at_least(0)), ("pipeline",)),
    Rule("demo.sft_batch_sizes", each(at_least(1)), ("pipeline",)),
    Rule("demo.cpt_lr", number(0), ("pipeline",)),
    Rule("demo.sft_lr", number(0), ("pipeline",)),
    Rule("demo.rl_lr", number(0), ("pipeline",)),
    Rule("demo.grpo_lr", number(0), ("pipeline",)),
    Rule("demo.rs_questions", at_least(1), ("pipeline",)),
    Rule("demo.rs_samples", at_least(1), ("pipeline",)),
    Rule("demo.rs_temperature", number(0), ("pipeline",)),
    Rule("demo.rs_max_new_tokens", at_least(1), ("pipeline",)),
    Rule("demo.rl_epochs", at_least(1), ("pipeline",)),
    Rule("demo.rl_batch_size", at_least(1), ("pipeline",)),
    Rule("demo.grpo_steps", at_least(0), ("pipeline",)),
    Rule("demo.grpo_prompts", at_least(1), ("pipeline",)),
    Rule("demo.grpo_generations", at_least(2), ("pipeline",)),
    Rule("demo.eval_items", at_least(1), ("pipeline",)),
    Rule("demo.eval_max_new_tokens", at_least(1), ("pipeline",)),
    Rule("demo.eval_batch_size", at_least(1), ("pipeline",)),
    Rule("demo.decontam_n", at_least(1), ("pipeline",)),
]


# ------------------------------------------------------------------------------------------------
# Checks that read several fields


def _model_max_seq_len(config: ml_collections.ConfigDict) -> int | None:
  """The context of the model the run starts from (preset, HF config or checkpoint), if known."""
  try:
    return int(model_source.model_config_from(config).max_seq_len)
  except Exception:  # pylint: disable=broad-except  # a bad preset or path is reported elsewhere
    return None


def _context(fields: Sequence[str], extra: int = 0,
             when: Callable[[ml_collections.ConfigDict], bool] = lambda c: True
             ) -> Callable[..., Iterable[Problem]]:
  """The fields' sum (+ extra) must fit in the model's max_seq_len (else: a huge OOM)."""
  def check(config: ml_collections.ConfigDict, n_devices: int | None) -> Iterable[Problem]:
    if not when(config):
      return
    values = {f: _get(config, f) for f in fields}
    if any(not isinstance(v, int) or v < 1 for v in values.values()):
      return  # a bad value is reported by its own rule
    limit = _model_max_seq_len(config)
    total = sum(values.values()) + extra
    if limit is None or total <= limit:
      return
    model = (f"config.init.{'hf_dir' if config.init.get('hf_dir') else 'checkpoint'}"
             if config.init.get("hf_dir") or config.init.get("checkpoint") else
             f"config.model.preset={config.model.preset!r}")
    if extra:
      why = f"{total - extra} leaves no room for a prompt in"
    elif len(fields) == 1:
      why = f"{total} exceeds"
    else:
      why = f"{' + '.join(f'config.{f}' for f in fields)} = {total} exceeds"
    yield f"config.{fields[0]}", f"{why} the model's max_seq_len {limit} ({model}); lower it"
  return check


def _sft_stages(config: ml_collections.ConfigDict) -> list[tuple[int, Any]]:
  """(index, stage) of the SFT stages that will run (config.sft.select, when set)."""
  select = split_paths(config.sft.get("select", ""))
  return [(i, s) for i, s in enumerate(config.sft.get("stages", ()))
          if not select or s.get("name") in select]


def _mesh_and_batch(config: ml_collections.ConfigDict, n_devices: int | None
                    ) -> Iterable[Problem]:
  """The mesh fills the devices and every batch splits over data x fsdp and grad_accum."""
  if n_devices is None or mesh_shape(config.mesh.shape):
    return
  try:
    shape = sharding.infer_mesh_shape(config.mesh.shape, n_devices)
  except ValueError as e:
    yield "config.mesh.shape", str(e)
    return
  mode = config.get("mode", "train")
  if config.stage not in TRAIN or mode not in ("train", "plan"):
    return
  dp = shape[0] * shape[1]
  batches = [("data.global_batch_size", config.data.global_batch_size)]
  if mode == "plan" and config.plan.get("batch_size"):
    batches = [("plan.batch_size", config.plan.batch_size)]
  if config.stage == "sft" and mode == "train":
    batches += [(f"sft.stages[{i}].batch_size", s.get("batch_size"))
                for i, s in _sft_stages(config)]
  accum = config.optim.get("grad_accum", 1)
  for field, gbs in batches:
    if not isinstance(gbs, int) or gbs < 1 or not isinstance(accum, int) or accum < 1:
      continue
    if gbs % dp:
      yield (f"config.{field}", f"{gbs} is not divisible by the data-parallel size {dp} "
             f"(mesh data x fsdp = {shape[0]} x {shape[1]})")
    elif (gbs // dp) % accum and gbs % accum:
      yield ("config.optim.grad_accum", f"{accum} does not divide the batch of {gbs} "
             f"(config.{field})")


def _steps_or_epochs(config: ml_collections.ConfigDict, n_devices: int | None
                     ) -> Iterable[Problem]:
  """A training stage needs a length: num_steps > 0, or num_epochs > 0 (per SFT stage)."""
  if config.get("mode", "train") != "train":
    return
  steps, epochs = config.train.num_steps, config.data.get("num_epochs", 0) or 0
  if config.stage != "sft":
    if isinstance(steps, int) and steps == 0 and not epochs:
      yield "config.train.num_steps", "set config.train.num_steps > 0 or config.data.num_epochs > 0"
    return
  for i, s in _sft_stages(config):
    st = steps if s.get("num_steps") is None else s.num_steps
    ep = epochs if s.get("num_epochs") is None else s.num_epochs
    if isinstance(st, int) and st == 0 and not ep:
      yield (f"config.sft.stages[{i}].num_steps", f"stage {s.get('name')!r} has neither steps nor "
             "epochs: set config.train.num_steps > 0 or config.data.num_epochs > 0 (or the stage's"
             " num_steps / num_epochs)")


def _batch_over_shards(config: ml_collections.ConfigDict, n_devices: int | None
                       ) -> Iterable[Problem]:
  """Each logical data shard (config.data.num_shards, multihost.py) batches global // shards
  rows, so every batch of the stage must split over the shards."""
  shards = config.data.get("num_shards", 0)
  if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
    return  # 0: one shard per process (checked against the batch when the processes are known)
  batches = [("data.global_batch_size", config.data.get("global_batch_size"))]
  if config.stage == "sft":
    batches += [(f"sft.stages[{i}].batch_size", s.get("batch_size"))
                for i, s in _sft_stages(config)]
  for field, gbs in batches:
    if isinstance(gbs, int) and gbs >= 1 and gbs % shards:
      yield (f"config.{field}", f"{gbs} does not split over config.data.num_shards={shards} "
             "logical data shards; make it a multiple")


def _less_than(small: str, big: str) -> Callable[..., Iterable[Problem]]:
  def check(config: ml_collections.ConfigDict, n_devices: int | None) -> Iterable[Problem]:
    a, b = _get(config, small), _get(config, big)
    if isinstance(a, int) and isinstance(b, int) and a >= b:
      yield f"config.{small}", f"{a} must be < config.{big} ({b})"
  return check


def _train_paths(config: ml_collections.ConfigDict, n_devices: int | None) -> Iterable[Problem]:
  if config.get("mode", "train") != "plan":
    for field in ("data.train_paths", "data.eval_paths"):
      why = existing_paths(_get(config, field))
      if why:
        yield f"config.{field}", why


def _model_preset(config: ml_collections.ConfigDict, n_devices: int | None) -> Iterable[Problem]:
  preset = config.model.preset
  if preset not in model_config.PRESETS and not config.init.get("hf_dir") \
      and not config.init.get("checkpoint"):
    near = difflib.get_close_matches(str(preset), list(model_config.PRESETS), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    yield ("config.model.preset", f"{preset!r} is unknown{hint}; known: "
           f"{', '.join(sorted(model_config.PRESETS))}")


@dataclasses.dataclass(frozen=True)
class Cross:
  check: Callable[[ml_collections.ConfigDict, "int | None"], Iterable[Problem]]
  stages: tuple[str, ...] = ALL


CROSS: list[Cross] = [
    Cross(_model_preset, tuple(s for s in ALL if s != "pipeline")),
    Cross(_mesh_and_batch),
    Cross(_train_paths, TRAIN),
    Cross(_steps_or_epochs, TRAIN),
    Cross(_batch_over_shards, ("cpt", "sft", "rl")),
    Cross(_context(("data.seq_len",)), ("cpt", "sft")),
    Cross(_context(("rl.max_length",)), ("rl",)),
    Cross(_less_than("rl.max_prompt_length", "rl.max_length"), ("rl",)),
    Cross(_context(("grpo.max_prompt_length", "grpo.max_new_tokens")), ("grpo",)),
    Cross(_context(("eval.max_new_tokens",), extra=1,  # generation leaves room for a prompt
                   when=lambda c: c.eval.get("mode") in ("generate", "both")), ("eval",)),
    Cross(_context(("demo.cpt_seq_len",)), ("pipeline",)),
    Cross(_context(("data.seq_len",)), ("pipeline",)),
    Cross(_context(("demo.rl_max_length",)), ("pipeline",)),
    Cross(_less_than("demo.rl_max_prompt_length", "demo.rl_max_length"), ("pipeline",)),
]


# ------------------------------------------------------------------------------------------------
# Field paths and the pass


_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+|\*)\]")
MISSING = object()


def tokens(path: str) -> list[str | int]:
  """'sft.stages[0].lr' -> ['sft', 'stages', 0, 'lr'] ('[*]' -> '*')."""
  out: list[str | int] = []
  for name, index in _TOKEN.findall(path):
    out.append(name if name else ("*" if index == "*" else int(index)))
  return out


def _get(config: Any, path: str) -> Any:
  node = config
  for t in tokens(path):
    node = child(node, t)
    if node is MISSING:
      return None
  return node


def child(node: Any, token: str | int) -> Any:
  """node[token] for a section key or a list index; MISSING when there is none."""
  if isinstance(token, int):
    if isinstance(node, (list, tuple)) and 0 <= token < len(node):
      return node[token]
    return MISSING
  if isinstance(node, (ml_collections.ConfigDict, dict)) and token in node:
    return node[token]
  return MISSING


def _expand(config: Any, path: str) -> list[tuple[str, Any]]:
  """(concrete path, value) for a rule's field; '[*]' expands over the sequence."""
  found = [("", config)]
  for t in tokens(path):
    nxt = []
    for prefix, node in found:
      if t == "*":
        if isinstance(node, (list, tuple)):
          nxt += [(f"{prefix}[{i}]", x) for i, x in enumerate(node)]
      else:
        value = child(node, t)
        if value is not MISSING:
          nxt.append((f"{prefix}[{t}]" if isinstance(t, int) else
                      f"{prefix}.{t}" if prefix else t, value))
    found = nxt
  return found


def problems(config: ml_collections.ConfigDict, n_devices: int | None = None) -> list[Problem]:
  """Every (field, why) of the table that applies to config.stage; n_devices None skips the
  checks that need the device count (the mesh), e.g. before jax.distributed is initialised."""
  stage = config.get("stage")
  if stage not in STAGES:
    return [("config.stage", one_of(STAGES)(stage))]
  out: list[Problem] = []
  for rule in RULES:
    if stage in rule.stages:
      for path, value in _expand(config, rule.field):
        why = rule.check(value)
        if why:
          out.append((f"config.{path}", why))
  for cross in CROSS:
    if stage in cross.stages:
      out += list(cross.check(config, n_devices))
  seen: set[Problem] = set()
  return [p for p in out if not (p in seen or seen.add(p))]


def validate(config: ml_collections.ConfigDict, n_devices: int | None = None) -> None:
  """Raises ConfigError with one `<field>: <why>` line per problem, if there is any."""
  found = problems(config, n_devices)
  if found:
    raise ConfigError("\n".join(f"{field}: {why}" for field, why in found))
