"""Token-level losses shared by every stage: log-probs of targets and masked cross-entropy."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from citrus_jax.model import transformer


def token_logprobs(logits_BTV: jax.Array, targets_BT: jax.Array) -> jax.Array:
  """log p(target_t | prefix) [B, T], float32; computed once and shared by CE and preference losses."""
  logits = logits_BTV.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets_BT[..., None], axis=-1)[..., 0]
  return target_logit - log_z


def cross_entropy(logits_BTV: jax.Array, targets_BT: jax.Array, loss_mask_BT: jax.Array,
                  n_tokens: jax.Array | None = None,
                  z_loss: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Token-mean cross-entropy over trained targets, pooled over the batch (not a mean of rows).

  `n_tokens` is the normaliser; pass the whole batch's count when this is one microbatch of it.
  An optional z-loss (PaLM) keeps log Z near 0 for bf16 stability. Returns (loss, metrics).
  """
  logits = logits_BTV.astype(jnp.float32)
  mask = loss_mask_BT.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets_BT[..., None], axis=-1)[..., 0]
  denom = jnp.maximum(mask.sum(), 1.0) if n_tokens is None else n_tokens
  nll = ((log_z - target_logit) * mask).sum() / denom
  loss = nll
  if z_loss:
    loss = loss + z_loss * ((log_z ** 2) * mask).sum() / denom
  return loss, {"nll": nll}


def lm_loss_fn(cfg: Any, z_loss: float = 0.0) -> Callable:
  """Next-token loss on a packed batch (inputs, targets, positions, segment_ids, loss_mask).

  Used by CPT and SFT alike: they differ only in which targets `loss_mask` trains."""

  def loss_fn(params: Any, batch: dict[str, jax.Array], totals: dict[str, jax.Array]):
    logits, _ = transformer.forward(params, batch["inputs"], cfg,
                                    positions_BT=batch["positions"],
                                    segment_ids_BT=batch["segment_ids"])
    loss, metrics = cross_entropy(logits, batch["targets"], batch["loss_mask"],
                                  totals["n_tokens"], z_loss)
    metrics["trained_fraction"] = batch["loss_mask"].astype(jnp.float32).sum() / totals["n_slots"]
    metrics["trained_tokens"] = batch["loss_mask"].astype(jnp.float32).sum()
    return loss, metrics

  return loss_fn
