"""Preference losses (CPO+SimPO, DPO, IPO, ORPO) as pure functions, matched to TRL 1.16.

Every loss reads per-sequence log-prob statistics of the response tokens (prompt masked, the
end-of-turn token included), computed once by `pair_forward_logprobs` in a single forward pass
over chosen and rejected together. Conventions, each checked numerically against TRL in
tests/test_preference.py:

- cpo_simpo (TRL `CPOTrainer`, loss_type="simpo"): pi(y) = mean response-token log-prob;
  TRL computes logits = (pi_c - pi_r) - gamma/beta and -logsigmoid(beta * logits), which is
  exactly -logsigmoid(beta (pi_c - pi_r) - gamma) of the SimPO paper / CITRUS.md (gamma is the
  margin in reward units; TRL divides it by beta only to multiply it back). Label smoothing eps
  adds -eps logsigmoid(gamma - beta (pi_c - pi_r)). NLL = token-mean CE over ALL chosen response
  tokens of the batch (pooled). loss = mean_i L_i + cpo_alpha * NLL. Rewards: beta * pi(y).
- dpo (TRL `DPOTrainer`, loss_type="sigmoid"): summed log-probs against a reference;
  -logsigmoid(beta ((lp_c - ref_c) - (lp_r - ref_r))). TRL 1.16's "sigmoid" has no label
  smoothing; eps > 0 here gives the conservative-DPO form of older TRL. Rewards: beta * (lp - ref).
- ipo (TRL `DPOTrainer`, loss_type="ipo"): the log-ratios are divided by the number of response
  tokens: ((lr_c / n_c - lr_r / n_r) - 1 / (2 beta))^2. Rewards as DPO (summed log-ratios).
  With zero reference log-probs this is TRL `CPOTrainer`'s reference-free "ipo".
- orpo (TRL `ORPOTrainer`): log odds = (pi_c - pi_r) - (log(1 - e^pi_c) - log(1 - e^pi_r)) on
  mean log-probs; loss = NLL - beta * mean logsigmoid(log odds). TRL's ORPO NLL covers the whole
  chosen sequence (prompt too), so `preference_loss` passes that NLL for "orpo".

Gradient accumulation: every loss takes the WHOLE batch's normalisers (`n_pairs`, token counts;
see `preference_totals`), so a microbatch's loss and metrics are exact contributions to the
full-batch values, as `train/step.py` requires. Rows with an empty chosen or rejected response
or with `row_mask` 0 (batch padding) have pair weight 0, so every mean is over real pairs.

Batch layout (built by `citrus_jax.data.preference`): `chosen_{inputs,targets,loss_mask,
positions,segment_ids}` and `rejected_*`, each [B, T], plus optional `ref_chosen_logps`,
`ref_rejected_logps` [B]. The forward stacks them as [B, 2, T] -> [2B, T] (rows interleaved), so a
batch sharded along B stays local to its devices.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from citrus_jax.model.config import ModelConfig
from citrus_jax.model.transformer import forward
from citrus_jax.train.losses import check_loss_chunk, token_logprobs, token_logprobs_from_hidden

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]

LOSSES = ("cpo_simpo", "dpo", "ipo", "orpo")
# Per-loss defaults: Citrus values for cpo_simpo, TRL defaults for the others.
DEFAULTS: dict[str, dict[str, float]] = {
    "cpo_simpo": {"beta": 10.0, "gamma": 5.4, "cpo_alpha": 0.05, "label_smoothing": 0.0},
    "dpo": {"beta": 0.1, "label_smoothing": 0.0},
    "ipo": {"beta": 0.1},
    "orpo": {"beta": 0.1},
}
NEEDS_REFERENCE = ("dpo", "ipo")
_FIELDS = ("inputs", "targets", "loss_mask", "positions", "segment_ids")


# ----------------------------------------------------------------------------- log-probs


def masked_sequence_stats(logps_BT: jax.Array, mask_BT: jax.Array
                          ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(sum, mean, count) over masked tokens per row; an empty row has mean 0, not NaN."""
  mask = mask_BT.astype(jnp.float32)
  n_B = mask.sum(-1)
  sum_B = (logps_BT * mask).sum(-1)
  return sum_B, sum_B / jnp.maximum(n_B, 1.0), n_B


def sequence_logprobs(logits_BTV: jax.Array, targets_BT: jax.Array, mask_BT: jax.Array
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Summed and length-normalised response log-probs per sequence, and the response length."""
  return masked_sequence_stats(token_logprobs(logits_BTV, targets_BT), mask_BT)


def _pair_rows(batch: Batch, field: str) -> jax.Array:
  """[B, T] chosen and rejected -> [2B, T], rows interleaved (chosen_0, rejected_0, ...)."""
  c, r = batch[f"chosen_{field}"], batch[f"rejected_{field}"]
  return jnp.stack([c, r], axis=1).reshape(-1, c.shape[-1])


def pair_stats(logps_2BT: jax.Array, batch: Batch) -> dict[str, jax.Array]:
  """Per-sequence stats ([B] each) from the [2B, T] per-token log-probs of the paired rows
  (`_pair_rows` order); the part of `pair_forward_logprobs` after the output layer."""
  B, T = batch["chosen_inputs"].shape
  mask = _pair_rows(batch, "loss_mask").astype(jnp.float32)
  sums, means, ns = (x.reshape(B, 2) for x in masked_sequence_stats(logps_2BT, mask))
  logps_c = logps_2BT.reshape(B, 2, T)[:, 0]
  seq_mask_c = (batch["chosen_segment_ids"] != 0).astype(jnp.float32)
  return {
      "sum_c": sums[:, 0], "sum_r": sums[:, 1],
      "mean_c": means[:, 0], "mean_r": means[:, 1],
      "n_c": ns[:, 0], "n_r": ns[:, 1],
      "token_logps_c": logps_c * mask.reshape(B, 2, T)[:, 0],
      "seq_logps_sum_c": (logps_c * seq_mask_c).sum(-1),
      "n_seq_c": seq_mask_c.sum(-1),
  }


def pair_forward_logprobs(params: Any, batch: Batch, cfg: ModelConfig, chunk: int = 0
                          ) -> dict[str, jax.Array]:
  """One forward over chosen and rejected together; per-sequence stats ([B] each).

  Returns sum_c/sum_r (summed response log-probs), mean_c/mean_r (length-normalised), n_c/n_r
  (response tokens), token_logps_c [B, T] (chosen per-token log-probs, response-masked) and
  seq_logps_sum_c / n_seq_c (chosen log-probs over every real target, prompt included, for ORPO).
  `chunk` > 0 (`train.loss_chunk`) computes the log-probs from the final hidden states in
  sequence chunks (`chunked_ce`): same numbers without the [2B, T, V] fp32 logits.
  """
  hidden, _ = forward(params, _pair_rows(batch, "inputs"), cfg,
                      positions_BT=_pair_rows(batch, "positions"),
                      segment_ids_BT=_pair_rows(batch, "segment_ids"), return_hidden=True)
  logps = token_logprobs_from_hidden(params, hidden, _pair_rows(batch, "targets"), cfg,
                                     check_loss_chunk(chunk))  # [2B, T]
  return pair_stats(logps, batch)


def reference_logprobs(ref_params: Any, batch: Batch, cfg: ModelConfig, chunk: int = 0
                       ) -> dict[str, jax.Array]:
  """Summed response log-probs of a frozen reference ([B] each), outside the gradient.

  Pass `ref_params` as a jit ARGUMENT: arrays closed over by a jitted function are embedded in
  the program as constants (checked on jax 0.10), which for a whole model is a disaster.
  `chunk` as in `pair_forward_logprobs`.
  """
  stats = pair_forward_logprobs(jax.lax.stop_gradient(ref_params), batch, cfg, chunk)
  return {"ref_chosen_logps": jax.lax.stop_gradient(stats["sum_c"]),
          "ref_rejected_logps": jax.lax.stop_gradient(stats["sum_r"])}


def precompute_reference_logprobs(params: Any, batches: Iterable[Batch], cfg: ModelConfig,
                                  chunk: int = 0) -> np.ndarray:
  """Reference sums for every row of `batches`, in order: float32 [rows, 2] (chosen, rejected).

  Run once before DPO/IPO training and store the result with the data
  (`data.preference.attach_reference_logprobs`), so a training step needs one policy forward.
  Padding rows of a final partial batch come back as zeros. `chunk` as in
  `pair_forward_logprobs` (the forward alone holds [2B, T, V] logits without it).
  """
  fn = jax.jit(reference_logprobs, static_argnums=(2, 3))
  out = []
  for batch in batches:
    arrays = {f"{s}_{f}": batch[f"{s}_{f}"] for s in ("chosen", "rejected") for f in _FIELDS}
    ref = fn(params, arrays, cfg, check_loss_chunk(chunk))
    out.append(np.stack([np.asarray(ref["ref_chosen_logps"]),
                         np.asarray(ref["ref_rejected_logps"])], axis=-1))
  if not out:
    return np.zeros((0, 2), np.float32)
  return np.concatenate(out).astype(np.float32)


# ----------------------------------------------------------------------------- losses


def _weights(like: jax.Array, pair_mask: jax.Array | None, n_pairs: jax.Array | float | None):
  w = jnp.ones_like(like) if pair_mask is None else pair_mask.astype(like.dtype)
  denom = w.sum() if n_pairs is None else jnp.asarray(n_pairs, like.dtype)
  return w, jnp.maximum(denom, 1.0)


def _reward_metrics(chosen_rewards, rejected_rewards, w, n) -> Metrics:
  """TRL's logged reward metrics, as contributions to the batch means."""
  mean = lambda x: (jax.lax.stop_gradient(x) * w).sum() / n
  return {
      "rewards/chosen": mean(chosen_rewards),
      "rewards/rejected": mean(rejected_rewards),
      "rewards/margins": mean(chosen_rewards - rejected_rewards),
      "rewards/accuracies": mean((chosen_rewards > rejected_rewards).astype(w.dtype)),
  }


def _smoothed_logistic(z: jax.Array, eps: float) -> jax.Array:
  return -(1.0 - eps) * jax.nn.log_sigmoid(z) - eps * jax.nn.log_sigmoid(-z)


def cpo_simpo_loss(pol_mean_c: jax.Array, pol_mean_r: jax.Array, nll_sum_c: jax.Array,
                   n_tokens_c: jax.Array, *, beta: float = 10.0, gamma: float = 5.4,
                   cpo_alpha: float = 0.05, label_smoothing: float = 0.0,
                   pair_mask: jax.Array | None = None, n_pairs: jax.Array | None = None
                   ) -> tuple[jax.Array, Metrics]:
  """CPO + SimPO (Citrus RL). `nll_sum_c`: summed -log p over chosen response tokens;
  `n_tokens_c`: the batch's chosen response-token count (pooled NLL normaliser)."""
  w, n = _weights(pol_mean_c, pair_mask, n_pairs)
  # TRL's arithmetic, kept for parity: beta * (delta - gamma / beta) == beta * delta - gamma.
  z = beta * ((pol_mean_c - pol_mean_r) - gamma / beta)
  pref = (_smoothed_logistic(z, label_smoothing) * w).sum() / n
  nll = nll_sum_c / jnp.maximum(n_tokens_c, 1.0)
  loss = pref + cpo_alpha * nll
  metrics = _reward_metrics(beta * pol_mean_c, beta * pol_mean_r, w, n)
  metrics.update({"pref_loss": pref, "nll": nll,
                  "logps/chosen": (pol_mean_c * w).sum() / n,
                  "logps/rejected": (pol_mean_r * w).sum() / n})
  return loss, jax.tree.map(jax.lax.stop_gradient, metrics)


def dpo_loss(pol_sum_c: jax.Array, pol_sum_r: jax.Array, ref_sum_c: jax.Array,
             ref_sum_r: jax.Array, *, beta: float = 0.1, label_smoothing: float = 0.0,
             pair_mask: jax.Array | None = None, n_pairs: jax.Array | None = None
             ) -> tuple[jax.Array, Metrics]:
  """DPO, TRL "sigmoid", on summed response log-probs."""
  w, n = _weights(pol_sum_c, pair_mask, n_pairs)
  ref_sum_c, ref_sum_r = jax.lax.stop_gradient(ref_sum_c), jax.lax.stop_gradient(ref_sum_r)
  lr_c, lr_r = pol_sum_c - ref_sum_c, pol_sum_r - ref_sum_r
  loss = (_smoothed_logistic(beta * (lr_c - lr_r), label_smoothing) * w).sum() / n
  metrics = _reward_metrics(beta * lr_c, beta * lr_r, w, n)
  metrics.update({"logps/chosen": (pol_sum_c * w).sum() / n,
                  "logps/rejected": (pol_sum_r * w).sum() / n})
  return loss, jax.tree.map(jax.lax.stop_gradient, metrics)


def ipo_loss(pol_sum_c: jax.Array, pol_sum_r: jax.Array, ref_sum_c: jax.Array,
             ref_sum_r: jax.Array, n_c: jax.Array, n_r: jax.Array, *, beta: float = 0.1,
             pair_mask: jax.Array | None = None, n_pairs: jax.Array | None = None
             ) -> tuple[jax.Array, Metrics]:
  """IPO as TRL's DPOTrainer: squared loss on per-token (length-normalised) log-ratios."""
  w, n = _weights(pol_sum_c, pair_mask, n_pairs)
  ref_sum_c, ref_sum_r = jax.lax.stop_gradient(ref_sum_c), jax.lax.stop_gradient(ref_sum_r)
  lr_c, lr_r = pol_sum_c - ref_sum_c, pol_sum_r - ref_sum_r
  delta = lr_c / jnp.maximum(n_c, 1.0) - lr_r / jnp.maximum(n_r, 1.0)
  loss = (((delta - 1.0 / (2.0 * beta)) ** 2) * w).sum() / n
  metrics = _reward_metrics(beta * lr_c, beta * lr_r, w, n)
  metrics.update({"logps/chosen": (pol_sum_c * w).sum() / n,
                  "logps/rejected": (pol_sum_r * w).sum() / n})
  return loss, jax.tree.map(jax.lax.stop_gradient, metrics)


def _log1mexp(x: jax.Array) -> jax.Array:
  """log(1 - e^x) for x < 0, stable on both sides of -ln 2 (TRL's branches), NaN-free grads."""
  x = jnp.minimum(x, -1e-30)  # a mean log-prob of exactly 0 would give log(0)
  small = x < -0.6931471805599453
  safe_small = jnp.where(small, x, -1.0)
  safe_big = jnp.where(small, -0.5, x)
  return jnp.where(small, jnp.log1p(-jnp.exp(safe_small)), jnp.log(-jnp.expm1(safe_big)))


def orpo_loss(pol_mean_c: jax.Array, pol_mean_r: jax.Array, nll: jax.Array, *,
              beta: float = 0.1, pair_mask: jax.Array | None = None,
              n_pairs: jax.Array | None = None) -> tuple[jax.Array, Metrics]:
  """ORPO: NLL - beta * mean logsigmoid(log odds ratio); beta is the paper's lambda."""
  w, n = _weights(pol_mean_c, pair_mask, n_pairs)
  log_odds = (pol_mean_c - pol_mean_r) - (_log1mexp(pol_mean_c) - _log1mexp(pol_mean_r))
  ratio = jax.nn.log_sigmoid(log_odds)
  or_term = (ratio * w).sum() / n
  loss = nll - beta * or_term
  metrics = _reward_metrics(beta * pol_mean_c, beta * pol_mean_r, w, n)
  metrics.update({"nll": nll, "log_odds_ratio": or_term,
                  "log_odds_chosen": (log_odds * w).sum() / n,
                  "logps/chosen": (pol_mean_c * w).sum() / n,
                  "logps/rejected": (pol_mean_r * w).sum() / n})
  return loss, jax.tree.map(jax.lax.stop_gradient, metrics)


# ----------------------------------------------------------------------------- dispatch


def hparams_for(name: str, **overrides: float | None) -> dict[str, float]:
  """The loss's defaults with non-None overrides; unknown names or keys are errors."""
  if name not in LOSSES:
    raise ValueError(f"unknown preference loss {name!r}; expected one of {LOSSES}")
  hp = dict(DEFAULTS[name])
  for k, v in overrides.items():
    if v is None:
      continue
    if k not in hp:
      raise ValueError(f"preference loss {name!r} takes {sorted(hp)}, not {k!r}")
    hp[k] = float(v)
  return hp


def real_pairs(n_c: jax.Array, n_r: jax.Array, batch: Batch) -> jax.Array:
  """1.0 for a row that is a real pair: both responses non-empty and, when the batch has one,
  `row_mask` 1 (data/preference.py pads a final eval batch with row_mask 0 rows), else 0.0.
  Every mean of the losses and metrics is over these rows only, so a padded batch gives the
  values of its real rows and evaluation can weigh it by `row_mask.sum()`."""
  valid = ((n_c > 0) & (n_r > 0)).astype(jnp.float32)
  if "row_mask" in batch:
    valid = valid * (batch["row_mask"].astype(jnp.float32) > 0)
  return valid


def preference_totals(batch: Batch) -> dict[str, jax.Array]:
  """Whole-batch normalisers (real pairs, their chosen response and sequence tokens)."""
  n_c = batch["chosen_loss_mask"].astype(jnp.float32).sum(-1)
  n_r = batch["rejected_loss_mask"].astype(jnp.float32).sum(-1)
  valid = real_pairs(n_c, n_r, batch)
  n_seq = (batch["chosen_segment_ids"] != 0).astype(jnp.float32).sum(-1)
  return {
      "n_pairs": jnp.maximum(valid.sum(), 1.0),
      "n_chosen_tokens": jnp.maximum((n_c * valid).sum(), 1.0),
      "n_chosen_seq_tokens": jnp.maximum((n_seq * valid).sum(), 1.0),
  }


def preference_loss(name: str, stats: Mapping[str, jax.Array],
                    totals: Mapping[str, jax.Array] | None = None,
                    ref: Mapping[str, jax.Array] | None = None,
                    row_mask: jax.Array | None = None, **hparams: float | None
                    ) -> tuple[jax.Array, Metrics]:
  """Dispatch on the config string. `stats` from `pair_forward_logprobs`; `ref` holds
  `ref_chosen_logps`/`ref_rejected_logps` for dpo/ipo; `totals` default to this batch's;
  `row_mask` [B] (0: a padding row) leaves rows out as an empty response does."""
  hp = hparams_for(name, **hparams)
  pair_mask = real_pairs(stats["n_c"], stats["n_r"],
                         {} if row_mask is None else {"row_mask": row_mask})
  n_pairs = None if totals is None else totals["n_pairs"]
  common = {"pair_mask": pair_mask, "n_pairs": n_pairs}
  if name in NEEDS_REFERENCE:
    if ref is None or "ref_chosen_logps" not in ref:
      raise ValueError(f"preference loss {name!r} needs reference log-probs: precompute them "
                       "(precompute_reference_logprobs) or pass reference params")
    ref_c, ref_r = ref["ref_chosen_logps"], ref["ref_rejected_logps"]
  if name == "cpo_simpo":
    n_tok = (stats["n_c"] * pair_mask).sum() if totals is None else totals["n_chosen_tokens"]
    nll_sum = -(stats["sum_c"] * pair_mask).sum()
    return cpo_simpo_loss(stats["mean_c"], stats["mean_r"], nll_sum, n_tok, **hp, **common)
  if name == "dpo":
    return dpo_loss(stats["sum_c"], stats["sum_r"], ref_c, ref_r, **hp, **common)
  if name == "ipo":
    return ipo_loss(stats["sum_c"], stats["sum_r"], ref_c, ref_r, stats["n_c"], stats["n_r"],
                    **hp, **common)
  n_seq = (stats["n_seq_c"] * pair_mask).sum() if totals is None else totals["n_chosen_seq_tokens"]
  nll = -(stats["seq_logps_sum_c"] * pair_mask).sum() / jnp.maximum(n_seq, 1.0)
  return orpo_loss(stats["mean_c"], stats["mean_r"], nll, **hp, **common)


def make_loss_fn(cfg: ModelConfig, name: str = "cpo_simpo", *, loss_chunk: int = 0,
                 **hparams: float | None) -> Callable[..., tuple[jax.Array, Metrics]]:
  """loss_fn(params, batch, totals, ref_params=None) for `train.step.make_train_step`.

  Use `preference_totals` as the step's totals_fn. For dpo/ipo the reference sums come from
  the batch (precomputed) or, when `ref_params` is passed (as an argument, never a closure),
  from a stop-gradient reference forward inside the step. `loss_chunk` > 0
  (`train.loss_chunk`): policy and reference log-probs in sequence chunks (`chunked_ce`).
  """
  hparams_for(name, **hparams)  # fail fast on a bad name or key
  loss_chunk = check_loss_chunk(loss_chunk)

  def loss_fn(params: Any, batch: Batch, totals: Mapping[str, jax.Array] | None = None,
              ref_params: Any = None) -> tuple[jax.Array, Metrics]:
    ref = None
    if name in NEEDS_REFERENCE:
      if "ref_chosen_logps" in batch:
        ref = batch
      elif ref_params is not None:
        ref = reference_logprobs(ref_params, batch, cfg, loss_chunk)
      else:
        raise ValueError(f"preference loss {name!r} needs reference log-probs: precompute them "
                         "(precompute_reference_logprobs) or pass ref_params")
    stats = pair_forward_logprobs(params, batch, cfg, loss_chunk)
    return preference_loss(name, stats, totals, ref, batch.get("row_mask"), **hparams)

  return loss_fn
