"""Token-level losses shared by every stage: log-probs of targets and masked cross-entropy."""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from citrus_jax.model import transformer
from citrus_jax.train import chunked_ce


def token_logprobs(logits_BTV: jax.Array, targets_BT: jax.Array) -> jax.Array:
  """log p(target_t | prefix) [B, T], float32; computed once and shared by CE and preference losses."""
  logits = logits_BTV.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets_BT[..., None], axis=-1)[..., 0]
  return target_logit - log_z


def token_logprobs_from_hidden(params: Any, hidden_BTD: jax.Array, targets_BT: jax.Array,
                               cfg: Any, chunk: int = 0) -> jax.Array:
  """`token_logprobs` from final hidden states (`forward(..., return_hidden=True)`): through the
  full [B, T, V] logits when `chunk` is 0, else in sequence chunks of that many positions
  (`chunked_ce`: same numbers, never more than [B, chunk, V] logits alive)."""
  if chunk:
    return chunked_ce.token_logprobs(params, hidden_BTD, targets_BT, cfg, chunk)
  return token_logprobs(transformer.logits_from_hidden(params, hidden_BTD, cfg), targets_BT)


def cross_entropy(logits_BTV: jax.Array, targets_BT: jax.Array, loss_mask_BT: jax.Array,
                  n_tokens: jax.Array | None = None,
                  z_loss: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Token-mean cross-entropy over trained targets, pooled over the batch (not a mean of rows).

  `n_tokens` is the normaliser; pass the whole batch's count when this is one microbatch of it.
  An optional z-loss (PaLM) keeps log Z near 0 for bf16 stability. Returns (loss, metrics).
  """
  logits = logits_BTV.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets_BT[..., None], axis=-1)[..., 0]
  return chunked_ce.masked_nll(target_logit, log_z, loss_mask_BT, n_tokens, z_loss)


def _trained_positions(loss_mask_BT: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """Per row, the slots of its first `k` trained targets (padded with slot 0) and a 0/1 mask."""
  def row(mask_T):
    idx = jnp.nonzero(mask_T > 0, size=k, fill_value=0)[0]
    valid = jnp.arange(k) < jnp.sum(mask_T > 0)
    return idx, valid
  return jax.vmap(row)(loss_mask_BT)


def check_loss_chunk(chunk: int) -> int:
  """`train.loss_chunk` as an int; 0 is off (full logits), a negative value is an error."""
  chunk = int(chunk)
  if chunk < 0:
    raise ValueError(f"train.loss_chunk={chunk} must be >= 0 (0: full logits)")
  return chunk


def lm_loss_fn(cfg: Any, z_loss: float = 0.0, logits_fraction: float = 1.0,
               loss_chunk: int = 0) -> Callable:
  """Next-token loss on a packed batch (inputs, targets, positions, segment_ids, loss_mask).

  Used by CPT and SFT alike: they differ only in which targets `loss_mask` trains. With
  `logits_fraction` < 1 the output layer and softmax run only at trained positions, up to that
  fraction of each row (SFT trains ~30% of slots, and the [B, T, V] logits are a large share of
  a small model's step); a batch with a fuller row takes the all-positions path, so the loss
  is the same either way.

  With `loss_chunk` > 0 (`train.loss_chunk`; 0, the default, is off) the output layer and
  cross-entropy run in sequence chunks of that many positions (`chunked_ce`), so the [B, T, V]
  fp32 logits never exist at once; same loss and gradients. It combines with
  `logits_fraction` (the compact rows are chunked too)."""
  logits_fraction = float(logits_fraction)
  if not 0.0 < logits_fraction <= 1.0:
    raise ValueError(f"logits_fraction={logits_fraction} must be in (0, 1]")
  loss_chunk = check_loss_chunk(loss_chunk)

  def ce(params, hidden_BTD, targets, weights, totals):
    if loss_chunk:
      return chunked_ce.cross_entropy(params, hidden_BTD, targets, weights, cfg, loss_chunk,
                                      totals["n_tokens"], z_loss)
    logits = transformer.logits_from_hidden(params, hidden_BTD, cfg)
    return cross_entropy(logits, targets, weights, totals["n_tokens"], z_loss)

  def full_loss(params, hidden_BTD, batch, totals):
    return ce(params, hidden_BTD, batch["targets"], batch["loss_mask"], totals)

  def capacity(t: int) -> int:  # trained targets per row the compact path holds
    return max(1, math.ceil(logits_fraction * t))

  def compact_loss(params, hidden_BTD, batch, totals):
    idx_BK, valid_BK = _trained_positions(batch["loss_mask"], capacity(hidden_BTD.shape[1]))
    h_BKD = jnp.take_along_axis(hidden_BTD, idx_BK[..., None], axis=1)
    targets_BK = jnp.take_along_axis(batch["targets"], idx_BK, axis=1)
    weights_BK = jnp.take_along_axis(batch["loss_mask"], idx_BK, axis=1) * valid_BK
    return ce(params, h_BKD, targets_BK, weights_BK, totals)

  def loss_fn(params: Any, batch: dict[str, jax.Array], totals: dict[str, jax.Array]):
    hidden, _ = transformer.forward(params, batch["inputs"], cfg,
                                    positions_BT=batch["positions"],
                                    segment_ids_BT=batch["segment_ids"], return_hidden=True)
    args = (params, hidden, batch, totals)
    if logits_fraction >= 1.0:
      loss, metrics = full_loss(*args)
    else:
      fits = jnp.max(jnp.sum(batch["loss_mask"] > 0, axis=1)) <= capacity(hidden.shape[1])
      loss, metrics = jax.lax.cond(fits, compact_loss, full_loss, *args)
    metrics["trained_fraction"] = batch["loss_mask"].astype(jnp.float32).sum() / totals["n_slots"]
    metrics["trained_tokens"] = batch["loss_mask"].astype(jnp.float32).sum()
    return loss, metrics

  return loss_fn
