"""GRPO-family policy losses (GRPO, Dr. GRPO, DAPO, BNPO) as pure JAX functions.

Each function mirrors TRL 1.16's `GRPOTrainer` (`_generate_and_score_completions` for the
advantages, `_compute_loss` for the loss, token-level importance sampling, no vLLM correction,
no entropy masking/bonus, no off-policy mask); tests/test_grpo_loss.py checks parity against
TRL's own code. Rows are completions ordered group by group: row i belongs to prompt
i // num_generations, as TRL lays them out.

Normalisations, as TRL does them (L_bt = per-token loss, m_bt = completion mask):
  grpo    mean over rows of (sum_t L_bt m_bt / max(sum_t m_bt, 1)), then / grad-accum steps
  bnpo    sum L m / max(sum m, 1) over this micro-batch, then / grad-accum steps
  dr_grpo sum L m / (B * max_completion_length), then / grad-accum steps
  dapo    sum L m / (N / num_processes * grad_accum / steps_per_generation), N =
          `num_items_in_batch`, the completion-token count of the whole *generation* batch
          summed over all processes (so micro-batches of one generation batch share one
          normaliser). Single process with steps_per_generation == grad-accum (TRL's default):
          N is the token count of the generation batch; N defaults to this batch's mask sum.
"""
from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp

from citrus_jax.model import transformer
from citrus_jax.train import chunked_ce
from citrus_jax.train.losses import token_logprobs as logprobs_of  # noqa: F401  (re-export)

LossType = Literal["grpo", "dr_grpo", "dapo", "bnpo"]
LOSS_TYPES: tuple[str, ...] = ("grpo", "dr_grpo", "dapo", "bnpo")
STD_EPS = 1e-4  # TRL: advantages / (std + 1e-4)


def _scale_mode(scale_rewards: str | bool) -> str:
  """TRL's GRPOConfig maps True -> "group" and False -> "none"."""
  mode = {True: "group", False: "none"}[scale_rewards] if isinstance(scale_rewards, bool) \
      else scale_rewards
  if mode not in ("group", "batch", "none"):
    raise ValueError(f"scale_rewards must be 'group', 'batch', 'none' or a bool, got {scale_rewards!r}")
  return mode


def _nanstd(x: jax.Array, axis: int | None = None, keepdims: bool = False) -> jax.Array:
  """TRL's `nanstd`: Bessel-corrected (unbiased) std ignoring NaNs; NaN where < 2 values."""
  mean = jnp.nanmean(x, axis=axis, keepdims=True)
  var = jnp.nanmean((x - mean) ** 2, axis=axis, keepdims=True)
  count = jnp.sum(~jnp.isnan(x), axis=axis, keepdims=True)
  var = var * jnp.where(count > 1, count / jnp.maximum(count - 1, 1), jnp.nan)
  std = jnp.sqrt(var)
  return std if keepdims else jnp.squeeze(std, axis=axis)


def logprobs_and_entropy(params: Any, hidden_BTD: jax.Array, targets_BT: jax.Array, cfg: Any,
                         chunk: int = 0) -> tuple[jax.Array, jax.Array]:
  """Per-token policy log-probs [B, T] and softmax entropy [B, T] (gradient stopped, a metric)
  from final hidden states (`forward(..., return_hidden=True)`). `chunk` 0: through the full
  [B, T, V] logits; > 0: in sequence chunks (`chunked_ce`, `train.loss_chunk`), same numbers
  without the full logits ever existing."""
  if chunk:
    target, log_z, entropy = chunked_ce.target_logits_and_log_z(
        params, hidden_BTD, targets_BT, cfg, chunk, with_entropy=True)
    return target - log_z, entropy
  logits = transformer.logits_from_hidden(params, hidden_BTD, cfg)
  logp = logprobs_of(logits, targets_BT)
  sg = jax.lax.stop_gradient(logits.astype(jnp.float32))
  return logp, -(jax.nn.softmax(sg) * jax.nn.log_softmax(sg)).sum(-1)


def group_advantages(rewards: jax.Array, num_generations: int,
                     scale_rewards: str | bool = "group") -> jax.Array:
  """Group-relative advantages [N*G] (or [N, G] in, [N, G] out), as TRL 1.16 computes them.

  A = r - mean_group(r), divided by (std + 1e-4) unless scale_rewards is "none"/False, where
  std is the unbiased std within each group ("group"/True) or over the whole batch ("batch").
  NaN rewards (unscorable completions) are left out of means and stds and get advantage 0.
  TRL's single-objective "sum_then_normalize" path; sum weighted reward functions beforehand.
  """
  mode = _scale_mode(scale_rewards)
  shape = rewards.shape
  r = rewards.reshape(-1, num_generations)
  adv = r - jnp.nanmean(r, axis=1, keepdims=True)
  if mode == "group":
    std = _nanstd(r, axis=1, keepdims=True) if num_generations > 1 else jnp.zeros_like(r)
  elif mode == "batch":
    std = _nanstd(r) if r.size > 1 else jnp.zeros_like(r)
  if mode != "none":
    adv = adv / (std + STD_EPS)
  return jnp.nan_to_num(adv, nan=0.0).reshape(shape)


def dynamic_sampling_mask(rewards: jax.Array, num_generations: int) -> jax.Array:
  """[N] bool: True for groups whose rewards are all equal (zero advantage, no gradient).

  DAPO's dynamic sampling drops these groups (e.g. all-correct or all-wrong) and resamples;
  keep the rows where `~jnp.repeat(mask, num_generations)`. NaN rewards are ignored; a group
  with fewer than two scored rewards counts as degenerate.
  """
  r = rewards.reshape(-1, num_generations)
  lo = jnp.min(jnp.where(jnp.isnan(r), jnp.inf, r), axis=1)
  hi = jnp.max(jnp.where(jnp.isnan(r), -jnp.inf, r), axis=1)
  n = jnp.sum(~jnp.isnan(r), axis=1)
  return (hi <= lo) | (n < 2)


def grpo_loss(logp_BT: jax.Array, old_logp_BT: jax.Array | None, ref_logp_BT: jax.Array | None,
              advantages_B: jax.Array, mask_BT: jax.Array, *, loss_type: LossType = "dapo",
              epsilon_low: float = 0.2, epsilon_high: float | None = None, beta: float = 0.0,
              max_completion_length: int | None = None,
              num_items_in_batch: jax.Array | float | None = None,
              gradient_accumulation_steps: int = 1, steps_per_generation: int | None = None,
              num_processes: int = 1) -> tuple[jax.Array, dict[str, jax.Array]]:
  """TRL 1.16's clipped-surrogate GRPO loss on per-token log-probs of the completions [B, T].

  ratio = exp(logp - old_logp) (old_logp None: logp with its gradient stopped, TRL's
  num_iterations == 1 case); per-token loss -min(ratio*A, clip(ratio, 1-eps_low, 1+eps_high)*A)
  + beta * k3 KL, k3 = exp(ref - logp) - (ref - logp) - 1 (ref only read when beta != 0).
  epsilon_high None means epsilon_low. See the module docstring for each loss_type's
  normaliser (`max_completion_length` is dr_grpo's; the dapo arguments are explained there).
  Returns (loss, metrics): clip_ratio/{low,high,region}_mean (masked token means, TRL's
  definitions) and kl (masked token mean of the k3 KL, only when beta != 0).
  """
  if loss_type not in LOSS_TYPES:
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
  epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
  mask = mask_BT.astype(logp_BT.dtype)
  old = jax.lax.stop_gradient(logp_BT) if old_logp_BT is None else old_logp_BT
  adv = advantages_B[:, None] if advantages_B.ndim == 1 else advantages_B
  adv = adv.astype(logp_BT.dtype)

  coef_1 = jnp.exp(logp_BT - old)
  coef_2 = jnp.clip(coef_1, 1 - epsilon_low, 1 + epsilon_high)
  per_token = -jnp.minimum(coef_1 * adv, coef_2 * adv)
  metrics: dict[str, jax.Array] = {}
  n_tok = jnp.maximum(mask.sum(), 1.0)
  if beta != 0.0:
    if ref_logp_BT is None:
      raise ValueError("beta != 0 needs ref_logp_BT")
    d = ref_logp_BT - logp_BT
    kl = jnp.exp(d) - d - 1
    per_token = per_token + beta * kl
    metrics["kl"] = jax.lax.stop_gradient((kl * mask).sum() / n_tok)

  masked = per_token * mask
  if loss_type == "grpo":
    loss = (masked.sum(-1) / jnp.maximum(mask.sum(-1), 1.0)).mean() / gradient_accumulation_steps
  elif loss_type == "bnpo":
    loss = masked.sum() / n_tok / gradient_accumulation_steps
  elif loss_type == "dr_grpo":
    if max_completion_length is None:
      raise ValueError("dr_grpo needs max_completion_length")
    loss = masked.sum() / (logp_BT.shape[0] * max_completion_length) / gradient_accumulation_steps
  else:  # dapo
    n_items = mask.sum() if num_items_in_batch is None else jnp.asarray(num_items_in_batch, mask.dtype)
    normalizer = jnp.maximum(n_items, 1.0) / num_processes
    spg = gradient_accumulation_steps if steps_per_generation is None else steps_per_generation
    loss = masked.sum() / (normalizer * gradient_accumulation_steps / spg)

  c = jax.lax.stop_gradient(coef_1)
  low = ((c < 1 - epsilon_low) & (adv < 0)).astype(mask.dtype)
  high = ((c > 1 + epsilon_high) & (adv > 0)).astype(mask.dtype)
  region = jnp.maximum(low, high)
  for name, x in (("low", low), ("high", high), ("region", region)):
    metrics[f"clip_ratio/{name}_mean"] = (x * mask).sum() / n_tok
  return loss, metrics
