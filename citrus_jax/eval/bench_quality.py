"""Quality checks of built benchmark items (eval/build_benchmark.py), exact and embedding-free.

Texts are compared as normalised words (NFKC, lower case, punctuation dropped, each CJK
character one word: synth/decontam.words), so the checks are the same for English and Chinese:

* options: a look-alike equal to the gold, or containing it / contained in it as a run of words
  ("tonsillitis" vs "acute tonsillitis"), could also be right: it is not a usable distractor;
  two distractors that overlap that way would be ambiguous with each other, so the later one
  is dropped;
* answer leak: the case text contains the gold diagnosis, or its head: the last two words
  ("community-acquired pneumonia" -> "acquired pneumonia") or the last three CJK characters
  ("急性阑尾炎" -> "阑尾炎");
* duplicates: an item whose case shares at least `threshold` of its word n-grams (of the shorter
  case) with an earlier kept item, or whose normalised case is equal, is a duplicate.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from citrus_jax.synth.decontam import words


def norm(text: str) -> tuple[str, ...]:
  """Normalised words of a text (CJK characters one by one)."""
  return tuple(words(text))


def _is_cjk(word: str) -> bool:
  return len(word) == 1 and "\u3400" <= word <= "\u9fff"


def contains_run(hay: Sequence[str], needle: Sequence[str]) -> bool:
  """Whether `needle` occurs in `hay` as consecutive words."""
  n = len(needle)
  if not n or n > len(hay):
    return False
  needle = tuple(needle)
  return any(tuple(hay[i:i + n]) == needle for i in range(len(hay) - n + 1))


def overlapping(a: str, b: str) -> bool:
  """Equal, or one contains the other as a run of words: both could name the same answer."""
  x, y = norm(a), norm(b)
  return bool(x) and bool(y) and (x == y or contains_run(x, y) or contains_run(y, x))


def answer_head(gold: str) -> tuple[str, ...]:
  """The words whose presence in a case gives the answer away (see the module docstring)."""
  g = norm(gold)
  if g and all(_is_cjk(w) for w in g):
    return g[-3:]
  return g[-min(2, len(g)):]


def leaks(case: str, gold: str) -> bool:
  """Whether the case text names the gold diagnosis (whole, or its head)."""
  c = norm(case)
  return contains_run(c, norm(gold)) or contains_run(c, answer_head(gold))


def select_distractors(gold: str, candidates: Iterable[tuple[str, str]], n: int
                       ) -> tuple[list[tuple[str, str]], dict[str, int]]:
  """The first `n` usable (text, origin) look-alikes in order, and counts of those set aside
  ("like_gold": could also be right; "overlap": overlaps an earlier distractor; "empty")."""
  chosen: list[tuple[str, str]] = []
  rejected = {"like_gold": 0, "overlap": 0, "empty": 0}
  for text, origin in candidates:
    text = " ".join(str(text).split()).strip(" .;,。")
    if len(chosen) >= n:
      break
    if not norm(text):
      rejected["empty"] += 1
    elif overlapping(text, gold):
      rejected["like_gold"] += 1
    elif any(overlapping(text, t) for t, _ in chosen):
      rejected["overlap"] += 1
    else:
      chosen.append((text, origin))
  return chosen, rejected


def shingles(text: str, n: int) -> set[tuple[str, ...]]:
  """Word n-grams of a text (the whole text when shorter than n)."""
  w = norm(text)
  if len(w) <= n:
    return {w} if w else set()
  return {w[i:i + n] for i in range(len(w) - n + 1)}


def find_duplicates(cases: Sequence[tuple[str, str]], *, n: int = 5, threshold: float = 0.5
                    ) -> dict[str, str]:
  """{id: id of the earlier item it duplicates} over (id, case text) pairs in order."""
  if n < 1 or not 0 < threshold <= 1:
    raise ValueError(f"duplicates: need n >= 1 and 0 < threshold <= 1, got {n}, {threshold}")
  kept: list[tuple[str, tuple[str, ...], set]] = []
  dup: dict[str, str] = {}
  for item_id, text in cases:
    w, s = norm(text), shingles(text, n)
    for other_id, ow, os_ in kept:
      small = min(len(s), len(os_))
      if w == ow or (small and len(s & os_) / small >= threshold):
        dup[item_id] = other_id
        break
    else:
      kept.append((item_id, w, s))
  return dup
