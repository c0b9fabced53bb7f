"""AdamW with linear warmup + cosine decay, a weight-decay mask and global-norm clipping."""
from __future__ import annotations

from typing import Any

import jax
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


def decay_mask(params: Any, decay_norms_and_biases: bool = False) -> Any:
  """True for weights that get weight decay: matrices always; norms and biases only if asked."""
  def keep(path: Any, x: Any) -> bool:
    name = jax.tree_util.keystr(path[-1:]).strip("[]'\"")
    is_vector_param = "norm" in name or name in ("bq", "bk", "bv")
    return decay_norms_and_biases or not is_vector_param
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
      mask=lambda p: decay_mask(p, cfg.get("decay_norms_and_biases", False))))
  return optax.chain(*parts), schedule
