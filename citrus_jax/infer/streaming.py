"""Token-by-token text for streaming answers: deltas whose concatenation is always a prefix of the
text the same request gets without streaming.

Each push decodes the row's tokens so far and releases only text that cannot change: it holds
back a trailing U+FFFD (a byte-fallback character still missing bytes) and any tail that could be
the start of a stop string, and stops at a stop string. `finish` then sends what the final text
(cut at max_tokens and stop strings by the backend) adds, so the stream ends with exactly it.
"""
from __future__ import annotations

from typing import Callable, Collection, Sequence

from absl import logging


def _held_back(text: str, stops: Sequence[str]) -> int:
  """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
  best = 0
  for s in stops:
    for k in range(min(len(s) - 1, len(text)), best, -1):
      if text.endswith(s[:k]):
        best = k
        break
  return best


class TextStream:
  """One streamed choice: push(token) -> new text (maybe ""), finish(final_text) -> the rest."""

  def __init__(self, decode: Callable[[list[int]], str], skip_ids: Collection[int],
               stops: Sequence[str]):
    self.decode, self.skip, self.stops = decode, set(skip_ids), [s for s in stops if s]
    self.tokens: list[int] = []
    self.sent = ""
    self.stopped = False

  def push(self, token: int) -> str:
    if self.stopped:
      return ""
    if token not in self.skip:
      self.tokens.append(int(token))
    text = self.decode(self.tokens)
    hits = [text.find(s) for s in self.stops if s in text]
    if hits:
      text, self.stopped = text[:min(hits)], True
    else:
      text = text[:len(text) - _held_back(text, self.stops)]
    text = text.rstrip("\ufffd")
    if len(text) <= len(self.sent) or not text.startswith(self.sent):
      return ""
    delta, self.sent = text[len(self.sent):], text
    return delta

  def finish(self, final: str) -> str:
    if not final.startswith(self.sent):  # cannot happen for a prefix-stable tokenizer
      logging.warning("streamed text %r is not a prefix of the final text %r", self.sent, final)
      return ""
    delta, self.sent = final[len(self.sent):], final
    return delta
