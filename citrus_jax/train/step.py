"""The train state and one pure, jittable train step shared by CPT, SFT and RL.

Stages differ only in `loss_fn(params, batch, totals) -> (loss, metrics)`. `totals` holds the
normalisers of the WHOLE batch (e.g. its number of trained tokens), so a loss computed on a
microbatch is that microbatch's exact contribution to the full-batch loss: summing
contributions over gradient-accumulation microbatches gives the same loss and gradient as one
big batch. Every metric a loss returns is such a contribution too.
"""
from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from citrus_jax import sharding

Batch = dict[str, jax.Array]
LossFn = Callable[[Any, Batch, dict[str, jax.Array]], tuple[jax.Array, dict[str, jax.Array]]]
TotalsFn = Callable[[Batch], dict[str, jax.Array]]


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def init_state(params: Any, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params),
                    rng=jax.random.key_data(jax.random.key(seed)))


def state_shardings(abstract_state: TrainState, param_shardings: Any, mesh: Any) -> TrainState:
  """Where each part of the train state lives: params and their optimizer moments sharded alike,
  step and rng replicated. Shared by training and plan mode."""
  return TrainState(step=sharding.replicated(mesh), params=param_shardings,
                    opt_state=sharding.opt_state_shardings(abstract_state.opt_state,
                                                           param_shardings, mesh),
                    rng=sharding.replicated(mesh))


def token_totals(batch: Batch) -> dict[str, jax.Array]:
  """Normalisers for token-mean losses (CPT, SFT)."""
  mask = batch["loss_mask"].astype(jnp.float32)
  return {"n_tokens": jnp.maximum(mask.sum(), 1.0), "n_slots": jnp.asarray(mask.size, jnp.float32)}


def _split_microbatches(batch: Batch, n: int) -> Batch:
  """[B, ...] -> [n, B/n, ...] taking every n-th row (strided), so each microbatch keeps rows on
  every device of the batch-sharded axis instead of living on a slice of them."""
  def split(x):
    if x.shape[0] % n:
      raise ValueError(f"batch of {x.shape[0]} rows does not split into {n} microbatches")
    return x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1)
  return jax.tree.map(split, batch)


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation,
                    totals_fn: TotalsFn = token_totals, grad_accum: int = 1,
                    schedule: optax.Schedule | None = None) -> Callable[[TrainState, Batch],
                                                                      tuple[TrainState, dict]]:
  """Returns step(state, batch) -> (state, metrics). A non-finite loss leaves params untouched."""

  def grads_and_metrics(params: Any, batch: Batch) -> tuple[Any, dict[str, jax.Array]]:
    totals = totals_fn(batch)
    grad_fn = jax.value_and_grad(lambda p, b: loss_fn(p, b, totals), has_aux=True)
    if grad_accum == 1:
      (loss, metrics), grads = grad_fn(params, batch)
      return grads, {"loss": loss, **metrics}

    def body(carry, micro):
      g_acc, m_acc = carry
      (loss, metrics), g = grad_fn(params, micro)
      metrics = {"loss": loss, **metrics}
      g_acc = jax.tree.map(lambda a, b: a + b.astype(a.dtype), g_acc, g)
      m_acc = jax.tree.map(jnp.add, m_acc, metrics) if m_acc is not None else metrics
      return (g_acc, m_acc), None

    micro = _split_microbatches(batch, grad_accum)
    first = jax.tree.map(lambda x: x[0], micro)
    rest = jax.tree.map(lambda x: x[1:], micro)
    (loss0, m0), g0 = grad_fn(params, first)
    g0 = jax.tree.map(lambda g: g.astype(jnp.float32), g0)
    (grads, metrics), _ = jax.lax.scan(body, (g0, {"loss": loss0, **m0}), rest)
    return grads, metrics

  def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    grads, metrics = grads_and_metrics(state.params, batch)
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
    updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(metrics["loss"])
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    metrics["grad_norm"] = optax.global_norm(grads)
    if schedule is not None:
      metrics["lr"] = schedule(state.step)
    new_state = state.replace(step=state.step + jnp.where(finite, 1, 0),
                              params=keep(new_params, state.params),
                              opt_state=keep(new_opt_state, state.opt_state))
    return new_state, metrics

  return step


def make_eval_step(loss_fn: LossFn, totals_fn: TotalsFn = token_totals) -> Callable:
  def eval_step(params: Any, batch: Batch) -> dict[str, jax.Array]:
    loss, metrics = loss_fn(params, batch, totals_fn(batch))
    return {"loss": loss, **metrics}
  return eval_step
