"""Memory-lean output layer: log-probs and cross-entropy in sequence chunks.

Why: the full path builds [B, T, V] fp32 logits (plus their softmax gradient of the same size):
at 8192 tokens and a 128k vocabulary that is 4 GiB per sequence, often the largest tensor of
the step. Here a `lax.scan` walks the sequence `chunk` positions at a time; each step projects
[B, chunk, D] hidden states to [B, chunk, V] fp32 logits, keeps only log Z and the target's
logit, and the body is under `jax.checkpoint`, so the backward pass recomputes each chunk's
logits instead of saving them: the largest live logits buffer is [B, chunk, V]. The math per
position is the full path's (same matmul of the same rows, fp32 log-sum-exp), so loss and
gradients agree to float rounding (tests/test_chunked_ce.py: 1e-6 in fp32).

The price is one more matmul of the output layer in the backward (recompute), about 1/3 more
output-layer FLOPs, and a scan the compiler cannot fuse across chunks.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from citrus_jax.model import transformer


def _chunks(x_BT: jax.Array, chunk: int) -> jax.Array:
  """[B, T, ...] -> [n, B, chunk, ...], padding T with zeros up to a multiple of chunk."""
  B, T = x_BT.shape[:2]
  n = -(-T // chunk)
  pad = n * chunk - T
  if pad:
    x_BT = jnp.pad(x_BT, [(0, 0), (0, pad)] + [(0, 0)] * (x_BT.ndim - 2))
  return jnp.swapaxes(x_BT.reshape(B, n, chunk, *x_BT.shape[2:]), 0, 1)


def _unchunk(x_nBC: jax.Array, T: int) -> jax.Array:
  n, B, C = x_nBC.shape
  return jnp.swapaxes(x_nBC, 0, 1).reshape(B, n * C)[:, :T]


def target_logits_and_log_z(params: Any, hidden_BTD: jax.Array, targets_BT: jax.Array,
                            cfg: Any, chunk: int, with_entropy: bool = False) -> tuple:
  """(logit of the target, log Z) [B, T] float32, never holding more than [B, chunk, V] logits.

  Same numbers as `transformer.logits_from_hidden` followed by a log-sum-exp and a gather. With
  `with_entropy`, also the softmax entropy [B, T] (gradient stopped: a metric, as GRPO logs it).
  """
  chunk = int(chunk)
  if chunk <= 0:
    raise ValueError(f"chunk={chunk} must be positive (train.loss_chunk > 0 turns this on)")
  B, T, D = hidden_BTD.shape
  # Passed in its stored dtype (fp32) and cast per chunk, as the full path's matmul does: the
  # scan's backward then accumulates the weight gradient over chunks in fp32, not bf16.
  w_DV = transformer.unembed_matrix(params, cfg)
  hidden_BTD = transformer._batch_sharded(hidden_BTD)  # pylint: disable=protected-access

  @jax.checkpoint  # backward recomputes this chunk's logits: none are saved across the scan
  def body(_, xs):
    h_BCD, t_BC = xs
    b, c = t_BC.shape
    h_BCD = transformer._batch_sharded(h_BCD)  # pylint: disable=protected-access
    logits = (h_BCD.reshape(b * c, D) @ w_DV.astype(h_BCD.dtype)).astype(jnp.float32)
    logits = logits.reshape(b, c, -1)
    logits = transformer._batch_sharded(logits)  # pylint: disable=protected-access
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target = jnp.take_along_axis(logits, t_BC[..., None], axis=-1)[..., 0]
    if not with_entropy:
      return None, (target, log_z)
    sg = jax.lax.stop_gradient(logits)
    entropy = -(jax.nn.softmax(sg) * jax.nn.log_softmax(sg)).sum(-1)
    return None, (target, log_z, entropy)

  outs = jax.lax.scan(body, None, (_chunks(hidden_BTD, chunk), _chunks(targets_BT, chunk)))[1]
  return tuple(_unchunk(x, T) for x in outs)


def token_logprobs(params: Any, hidden_BTD: jax.Array, targets_BT: jax.Array, cfg: Any,
                   chunk: int) -> jax.Array:
  """log p(target_t | prefix) [B, T] float32 from final hidden states (`forward(...,
  return_hidden=True)`): `losses.token_logprobs` without the [B, T, V] logits, for the
  preference and GRPO losses."""
  target, log_z = target_logits_and_log_z(params, hidden_BTD, targets_BT, cfg, chunk)
  return target - log_z


def cross_entropy(params: Any, hidden_BTD: jax.Array, targets_BT: jax.Array,
                  loss_mask_BT: jax.Array, cfg: Any, chunk: int,
                  n_tokens: jax.Array | None = None,
                  z_loss: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`losses.cross_entropy` (token mean over trained targets, optional z-loss) computed from
  hidden states in sequence chunks; returns (loss, {"nll": ...}) like it."""
  target, log_z = target_logits_and_log_z(params, hidden_BTD, targets_BT, cfg, chunk)
  return masked_nll(target, log_z, loss_mask_BT, n_tokens, z_loss)


def masked_nll(target_BT: jax.Array, log_z_BT: jax.Array, loss_mask_BT: jax.Array,
               n_tokens: jax.Array | None = None,
               z_loss: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(loss, {"nll"}) from each position's target logit and log Z: the token mean over trained
  targets (or over `n_tokens`) plus the optional z-loss; the full and chunked paths share it."""
  mask = loss_mask_BT.astype(jnp.float32)
  denom = jnp.maximum(mask.sum(), 1.0) if n_tokens is None else n_tokens
  nll = ((log_z_BT - target_BT) * mask).sum() / denom
  loss = nll
  if z_loss:
    loss = loss + z_loss * ((log_z_BT ** 2) * mask).sum() / denom
  return loss, {"nll": nll}
