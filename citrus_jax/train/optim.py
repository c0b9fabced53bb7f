"""AdamW with linear warmup + cosine decay, a weight-decay mask and global-norm clipping, and
the step guard that skips a step whose loss, gradients or update are not finite."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax


def learning_rate_schedule(cfg: Any, total_steps: int) -> optax.Schedule:
  """Linear warmup to `lr`, then cosine (or constant / linear) decay to `lr * end_lr_frac`."""
  warmup = int(cfg.warmup_steps) if cfg.get("warmup_steps", 0) else int(
      round(cfg.get("warmup_frac", 0.0) * total_steps))
  warmup = min(max(warmup, 0), max(total_steps - 1, 0))
  decay_steps = max(total_steps - warmup, 1)
  end = cfg.lr * cfg.get("end_lr_frac", 0.0)
  kind = cfg.get("schedule", "cosine")
  if kind == "cosine":
    decay = optax.cosine_decay_schedule(cfg.lr, decay_steps, alpha=end / cfg.lr if cfg.lr else 0.0)
  elif kind == "linear":
    decay = optax.linear_schedule(cfg.lr, end, decay_steps)
  elif kind == "constant":
    decay = optax.constant_schedule(cfg.lr)
  else:
    raise ValueError(f"optim.schedule={kind!r}; expected 'cosine', 'linear' or 'constant'")
  if warmup == 0:
    return decay
  # Warmup starts at lr/warmup (not 0) so the first step already trains, as HF/TRL schedulers do.
  ramp = optax.linear_schedule(cfg.lr / (warmup + 1), cfg.lr, warmup)
  return optax.join_schedules([ramp, decay], [warmup])


def decay_mask(params: Any, decay_norms_and_biases: bool = False, *,
               decay_norms: bool | None = None, decay_biases: bool | None = None) -> Any:
  """True for weights that get weight decay: matrices (and embeddings) always; norm weights and
  biases only if asked (`decay_norms` / `decay_biases`, each defaulting to
  `decay_norms_and_biases`).

  Defaults (no decay on either) are HF Trainer's rule (get_decay_parameter_names: names with
  "bias", "layernorm", "rmsnorm", "norm"), which TRL's CPOTrainer, the reference RL, uses (at
  weight decay 0 there). The reference SFT loop (Citrus model_train/supervised_finetune.py) is
  not Trainer: it exempts names containing "bias" or "LayerNorm.weight", which no Llama/Qwen
  parameter has (their norms are `*_layernorm.weight` / `norm.weight`), so it DOES decay the
  RMSNorm weights and exempts only Qwen2's q/k/v biases: decay_norms=True, decay_biases=False
  (the SFT paper presets, configs/sft.py)."""
  norms = decay_norms_and_biases if decay_norms is None else decay_norms
  biases = decay_norms_and_biases if decay_biases is None else decay_biases

  def keep(path: Any, x: Any) -> bool:
    name = jax.tree_util.keystr(path[-1:]).strip("[]'\"")
    if "norm" in name:
      return bool(norms)
    if name in ("bq", "bk", "bv"):
      return bool(biases)
    return True
  return jax.tree.map_with_path(keep, params)


def make_optimizer(cfg: Any, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optax chain for every stage; `cfg` is the `optim` section of a run config."""
  schedule = learning_rate_schedule(cfg, total_steps)
  parts = []
  if cfg.get("grad_clip", 0.0):
    parts.append(optax.clip_by_global_norm(cfg.grad_clip))
  parts.append(optax.adamw(
      schedule, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), eps=cfg.get("eps", 1e-8),
      weight_decay=cfg.get("weight_decay", 0.0),
      mask=lambda p: decay_mask(p, cfg.get("decay_norms_and_biases", False),
                                decay_norms=cfg.get("decay_norms", None),
                                decay_biases=cfg.get("decay_biases", None))))
  return optax.chain(*parts), schedule


def finite_norm(tree: Any) -> jax.Array:
  """True when the tree's global L2 norm, summed in float32, is finite: one reduction that is
  False for any NaN or inf and also for values blown up past ~1e19 (e.g. by lr=1e38), which
  are finite but would poison every later step."""
  sq = [jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)]
  return jnp.isfinite(sum(sq)) if sq else jnp.asarray(True)


def all_finite(tree: Any) -> jax.Array:
  """True when every value of every floating leaf is finite (what a checkpoint must hold)."""
  leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


def guard_step(step_fn: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]]
               ) -> Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]]:
  """Wraps a train step so the state (params, optimizer state, step counter) only changes when
  the loss, the gradient norm and the updated params are all finite; otherwise the old state
  is kept and metrics["skipped"] is 1. Runs inside the jitted step: selects, never branches
  on the host."""
  def step(state: Any, batch: Any) -> tuple[Any, dict[str, jax.Array]]:
    new_state, metrics = step_fn(state, batch)
    ok = jnp.isfinite(metrics["loss"]) & finite_norm(new_state.params)
    if "grad_norm" in metrics:
      ok &= jnp.isfinite(metrics["grad_norm"])
    kept = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
    return kept, {**metrics, "skipped": 1.0 - ok.astype(jnp.float32)}
  return step
