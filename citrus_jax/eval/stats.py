"""Uncertainty for 0/1 per-item correctness: bootstrap intervals and paired tests (numpy only).

Every function takes per-item correctness (0/1 or bool, one entry per item). Because the values
are binary, a bootstrap resample (n draws with replacement from n items) is summarised exactly
by counts: the number of correct items in a resample is Binomial(n, k/n), and for paired items
the counts of (both, only A, only B, neither) are Multinomial(n, observed shares). Drawing those
counts is the same distribution as resampling indices, at O(n_boot) cost whatever n is.
Intervals are percentile intervals; a fixed seed gives the same interval every time.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

ArrayLike = Sequence[bool] | Sequence[int] | Sequence[float] | np.ndarray


def _binary(x: ArrayLike, name: str = "correct") -> np.ndarray:
  a = np.asarray(x, dtype=float).reshape(-1)
  if a.size and not np.isin(a, (0.0, 1.0)).all():
    raise ValueError(f"{name}: expected 0/1 (or bool) per item")
  return a.astype(bool)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
  if not 0 < level < 1:
    raise ValueError(f"level must be in (0, 1), got {level}")
  alpha = (1 - level) / 2
  lo, hi = np.quantile(values, [alpha, 1 - alpha])
  return float(lo), float(hi)


def bootstrap_means(correct: ArrayLike, *, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
  """n_boot bootstrap resample means of the per-item 0/1 correctness (empty input raises)."""
  c = _binary(correct)
  n = c.size
  if n == 0:
    raise ValueError("bootstrap of an empty set of items")
  rng = np.random.default_rng(seed)
  return rng.binomial(n, c.sum() / n, size=n_boot) / n


def bootstrap_interval(correct: ArrayLike, *, n_boot: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
  """(lo, hi): percentile bootstrap interval of the accuracy (the mean of `correct`)."""
  return _percentiles(bootstrap_means(correct, n_boot=n_boot, seed=seed), level)


def macro_bootstrap_interval(groups: Sequence[ArrayLike], *, n_boot: int = 1000, seed: int = 0,
                             level: float = 0.95) -> tuple[float, float]:
  """(lo, hi) for the unweighted mean of per-group accuracies (each group resampled alone)."""
  if not groups:
    raise ValueError("macro bootstrap of no groups")
  seqs = np.random.SeedSequence(seed).spawn(len(groups))
  means = [bootstrap_means(g, n_boot=n_boot, seed=int(s.generate_state(1)[0]))
           for g, s in zip(groups, seqs)]
  return _percentiles(np.mean(means, axis=0), level)


def _pair(a_correct: ArrayLike, b_correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
  a, b = _binary(a_correct, "a_correct"), _binary(b_correct, "b_correct")
  if a.shape != b.shape:
    raise ValueError(f"paired inputs differ in length: {a.size} vs {b.size}")
  return a, b


def binom_two_sided_half(k: int, n: int) -> float:
  """Two-sided exact p of k successes in n trials at p=0.5: min(1, 2 P(X <= min(k, n-k)))."""
  if n == 0:
    return 1.0
  m = min(k, n - k)
  tail = sum(math.comb(n, i) for i in range(m + 1))
  return min(1.0, 2 * tail / 2**n)  # exact integers, one rounding at the end


def mcnemar_exact(a_correct: ArrayLike, b_correct: ArrayLike) -> dict:
  """{"b_only", "a_only", "p"}: exact McNemar test of two systems on the same items.

  b_only counts items only B gets right, a_only items only A gets right; p is the two-sided
  exact binomial p-value of the discordant pairs at 1/2 (1.0 when there are none).
  """
  a, b = _pair(a_correct, b_correct)
  b_only, a_only = int((b & ~a).sum()), int((a & ~b).sum())
  return {"b_only": b_only, "a_only": a_only, "p": binom_two_sided_half(b_only, b_only + a_only)}


def paired_bootstrap_diff(a_correct: ArrayLike, b_correct: ArrayLike, n_boot: int = 1000,
                          seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
  """(mean_diff, lo, hi) of accuracy(B) - accuracy(A), items resampled in pairs."""
  a, b = _pair(a_correct, b_correct)
  n = a.size
  if n == 0:
    raise ValueError("paired bootstrap of an empty set of items")
  counts = np.array([(a & b).sum(), (a & ~b).sum(), (~a & b).sum(), (~a & ~b).sum()])
  rng = np.random.default_rng(seed)
  draws = rng.multinomial(n, counts / n, size=n_boot)
  diffs = (draws[:, 2] - draws[:, 1]) / n
  lo, hi = _percentiles(diffs, level)
  return (int(b.sum()) - int(a.sum())) / n, lo, hi
