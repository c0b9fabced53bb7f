"""Verified rewards for online RL: a completion earns 1 when its final answer is the gold option.

The verdict is rejection sampling's (`eval.rejection.verify`: the rule-based extractor maps the
final answer to ONE option letter, the optional judge only where the rule is silent), so the
reward cannot be gamed by naming several options: "A or C", a list of letters, or an answer
containing two options' texts maps to no letter and earns 0, as does an unfinished completion.
An optional format reward adds `format_weight` for exactly `<think>...</think><answer>...</answer>`.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from citrus_jax.rollout.rejection import Judge, Question, split_response, verify


@dataclasses.dataclass(frozen=True)
class Reward:
  value: float
  correct: bool
  formatted: bool
  pred: str | None  # the option letter the answer was mapped to (None: none, or ambiguous)


def answer_reward(q: Question, text: str, finish_reason: str = "stop", *,
                  format_weight: float = 0.0, judge: Judge | None = None,
                  truncated_reward: float = 0.0) -> Reward:
  """Correct option = 1 (+ format_weight when well formed); a truncated completion (hit
  max_new_tokens) gets `truncated_reward` whatever it says, since its answer was never given."""
  formatted = split_response(text) is not None
  if finish_reason != "stop":
    return Reward(truncated_reward, False, formatted, None)
  _, pred, verdict, _ = verify(q, text, judge)
  correct = verdict == "correct"
  return Reward(float(correct) + (format_weight if formatted else 0.0), correct, formatted, pred)


def group_stats(rewards: Sequence[Reward], num_generations: int) -> dict[str, float]:
  """Host metrics of one rollout batch (rows ordered group by group)."""
  n = len(rewards)
  values = [r.value for r in rewards]
  groups = [values[i:i + num_generations] for i in range(0, n, num_generations)]
  correct = [r.correct for r in rewards]
  solved = [any(correct[i:i + num_generations]) for i in range(0, n, num_generations)]
  mean = sum(values) / max(n, 1)
  return {
      "reward/mean": mean,
      "reward/std": (sum((v - mean) ** 2 for v in values) / max(n - 1, 1)) ** 0.5,
      "accuracy": sum(correct) / max(n, 1),
      "pass_at_group": sum(solved) / max(len(groups), 1),
      "format_rate": sum(r.formatted for r in rewards) / max(n, 1),
      "answered_rate": sum(r.pred is not None for r in rewards) / max(n, 1),
      "groups/all_equal": sum(max(g) == min(g) for g in groups) / max(len(groups), 1),
  }
