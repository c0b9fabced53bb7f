"""N-gram decontamination of training files against benchmark sets.

A training example is contaminated by a benchmark item when they share an n-gram (default 13
words) of normalised text: NFKC, lower case, punctuation dropped, CJK characters counted as one
word each. Each benchmark item contributes the n-grams of its question (and context; options too
with include_options=True); an item shorter than n words contributes its whole text instead when
it has at least `min_words`, so short questions are still caught (the GPT-3 rule). N-grams shared
by more than `max_item_frequency` items of the benchmarks are boilerplate ("which of the following
is the most likely diagnosis ...") and can be ignored (0 keeps all). `min_overlap` > 0 asks that
one training example share at least that fraction of an item's n-grams: near-copies, not shared
stock phrases (templated data such as the demo world shares long finding phrases between cases).

  python -m citrus_jax.synth.decontam --train data/sft3.jsonl --benchmark medqa:test.jsonl \
      --benchmark auto:mmlu/anatomy_test.csv --report decontam.json [--drop_to clean/]

Training files: JSONL (every string value of a record is scanned, keys listed in `skip_keys`
excepted), a JSON array, or text (one example per line). The report gives, per benchmark, items
hit and examples of the overlap, and per training file the contaminated examples (file:line);
with `drop_to`, each file is rewritten there without them (other lines byte for byte).
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import re
import unicodedata
from typing import Any, Iterable, Iterator, Mapping, Sequence

from citrus_jax.data import records
from citrus_jax.eval.benchmarks import load_benchmark

_WORD = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]|[^\W_]+")
DEFAULT_SKIP_KEYS = ("id", "source", "meta_info", "answer_idx", "gold", "mode", "group")


def words(text: str) -> list[str]:
  """Normalised words (CJK characters one by one)."""
  return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def _grams(ws: Sequence[str], n: int) -> Iterator[str]:
  for i in range(len(ws) - n + 1):
    yield " ".join(ws[i:i + n])


@dataclasses.dataclass
class _Item:
  bench: str
  id: str
  text: str


class BenchmarkIndex:
  """n-gram -> benchmark items holding it (plus whole short items)."""

  def __init__(self, n: int = 13, min_words: int = 8, include_options: bool = False):
    if n < 1 or min_words < 1:
      raise ValueError(f"need n >= 1 and min_words >= 1, got n={n}, min_words={min_words}")
    self.n, self.min_words, self.include_options = n, min_words, include_options
    self.items: list[_Item] = []
    self.n_keys: list[int] = []  # n-grams (or whole short texts) per item
    self.table: dict[str, set[int]] = collections.defaultdict(set)
    self.short_lengths: set[int] = set()
    self.too_short: collections.Counter[str] = collections.Counter()
    self.sizes: collections.Counter[str] = collections.Counter()

  def _segments(self, item: Any) -> list[tuple[str, bool]]:
    """(text, whether a short text counts as a whole); options never count whole."""
    if isinstance(item, str):
      return [(item, True)]
    segs = [(getattr(item, "context", None) or "", True), (item.question, True)]
    if self.include_options:
      segs += [(o, False) for o in getattr(item, "options", {}).values()]
    return [(s, whole) for s, whole in segs if s]

  def add(self, bench: str, items: Iterable[Any]) -> None:
    """Items are MCQItems (question, context, options) or (id, text) pairs."""
    for k, item in enumerate(items):
      item_id, obj = (item if isinstance(item, tuple) else (getattr(item, "id", str(k)), item))
      idx = len(self.items)
      segs = self._segments(obj)
      self.items.append(_Item(bench, str(item_id), " / ".join(s for s, _ in segs)))
      self.sizes[bench] += 1
      keys = set()
      for seg, whole in segs:
        ws = words(seg)
        if len(ws) >= self.n:
          keys.update(_grams(ws, self.n))
        elif whole and len(ws) >= self.min_words:
          keys.add(" ".join(ws))
          self.short_lengths.add(len(ws))
      self.n_keys.append(len(keys))
      if not keys:
        self.too_short[bench] += 1
      for key in keys:
        self.table[key].add(idx)

  def prune(self, max_item_frequency: int) -> int:
    """Drops n-grams held by more than that many items; returns how many were dropped."""
    if max_item_frequency <= 0:
      return 0
    common = [k for k, v in self.table.items() if len(v) > max_item_frequency]
    for k in common:
      del self.table[k]
    return len(common)

  def match(self, text: str, min_overlap: float = 0.0) -> dict[int, str]:
    """Benchmark item index -> one shared n-gram, for items sharing at least one n-gram and at
    least `min_overlap` of all their n-grams with `text`."""
    ws = words(text)
    found: dict[int, set[str]] = collections.defaultdict(set)
    for length in (self.n, *sorted(self.short_lengths)):
      for g in _grams(ws, length):
        for idx in self.table.get(g, ()):
          found[idx].add(g)
    return {idx: min(gs) for idx, gs in found.items()
            if len(gs) >= min_overlap * self.n_keys[idx]}


# ------------------------------------------------------------------------------------------------
# Training files.


def _strings(obj: Any, skip_keys: Sequence[str]) -> Iterator[str]:
  if isinstance(obj, str):
    yield obj
  elif isinstance(obj, dict):
    for k, v in obj.items():
      if k not in skip_keys:
        yield from _strings(v, skip_keys)
  elif isinstance(obj, list):
    for v in obj:
      yield from _strings(v, skip_keys)


def read_examples(path: str, skip_keys: Sequence[str] = DEFAULT_SKIP_KEYS
                  ) -> Iterator[tuple[int, str, Any]]:
  """(line or index, text to scan, raw line or record) for each example of a training file."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: training file not found")
  if path.endswith(".json"):  # read by data/records: BOM, UTF-8 errors at file:line, "\n" only
    for i, rec in records.read_json_array(path, objects=False):
      yield i, "\n".join(_strings(rec, skip_keys)), rec
    return
  if path.endswith((".jsonl", ".ndjson")):
    for row in records.scan_jsonl(path):
      yield row.line, "\n".join(_strings(row.record, skip_keys)), \
          row.body.removeprefix(records.BOM).decode("utf-8") + "\n"
    return
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if line.strip():
        yield n, line, line


def _snippet(text: str, gram: str, width: int = 160) -> str:
  first = gram.split()[0]
  pos = text.lower().find(first)
  pos = max(0, pos - 40)
  return text[pos:pos + width].replace("\n", " ")


def decontaminate(train_paths: Sequence[str], benchmarks: Mapping[str, Iterable[Any]], *,
                  n: int = 13, min_words: int = 8, include_options: bool = False,
                  max_item_frequency: int = 0, min_overlap: float = 0.0, drop_to: str = "",
                  examples: int = 5,
                  skip_keys: Sequence[str] = DEFAULT_SKIP_KEYS) -> dict[str, Any]:
  """The contamination report; with drop_to, clean copies of the training files are written."""
  index = BenchmarkIndex(n, min_words, include_options)
  for name, items in benchmarks.items():
    index.add(name, items)
  pruned = index.prune(max_item_frequency)
  items_hit: dict[str, set[int]] = collections.defaultdict(set)
  shown: dict[str, list[dict]] = collections.defaultdict(list)
  files: dict[str, dict[str, Any]] = {}
  if drop_to:
    os.makedirs(drop_to, exist_ok=True)
  for path in train_paths:
    bad_lines, total, kept = [], 0, []
    for where, text, raw in read_examples(path, skip_keys):
      total += 1
      hits = index.match(text, min_overlap)
      if not hits:
        kept.append(raw)
        continue
      bad_lines.append(where)
      for idx, gram in hits.items():
        item = index.items[idx]
        items_hit[item.bench].add(idx)
        if len(shown[item.bench]) < examples:
          shown[item.bench].append({"benchmark_id": item.id, "train": f"{path}:{where}",
                                    "ngram": gram, "benchmark_text": item.text[:200],
                                    "train_text": _snippet(text, gram)})
    info = {"examples": total, "contaminated": len(bad_lines),
            "lines": bad_lines[:1000]}
    if drop_to:
      out = os.path.join(drop_to, os.path.basename(path))
      if os.path.abspath(out) == os.path.abspath(path):
        raise ValueError(f"drop_to would overwrite {path}; choose another directory")
      with open(out, "w", encoding="utf-8") as f:
        if path.endswith(".json"):
          json.dump(kept, f, ensure_ascii=False, indent=1)
        else:
          f.writelines(r if r.endswith("\n") else r + "\n" for r in kept)
      info.update(written=out, dropped=len(bad_lines))
    files[path] = info
  report = {"n": n, "min_words": min_words, "include_options": include_options,
            "max_item_frequency": max_item_frequency, "min_overlap": min_overlap,
            "pruned_ngrams": pruned, "benchmarks": {},
            "train": files}
  for name in benchmarks:
    size = index.sizes[name]
    hit = len(items_hit[name])
    report["benchmarks"][name] = {"items": size, "items_hit": hit,
                                  "fraction": round(hit / size, 6) if size else 0.0,
                                  "too_short": index.too_short[name], "examples": shown[name]}
  return report


def format_report(report: Mapping[str, Any]) -> str:
  lines = [f"{report['n']}-gram overlap"]
  for name, b in report["benchmarks"].items():
    lines.append(f"  {name}: {b['items_hit']}/{b['items']} items hit ({b['fraction']:.2%}), "
                 f"{b['too_short']} too short to check")
  for path, t in report["train"].items():
    extra = f", written without them to {t['written']}" if "written" in t else ""
    lines.append(f"  {path}: {t['contaminated']}/{t['examples']} examples contaminated{extra}")
  return "\n".join(lines)


def load_benchmarks(specs: Sequence[str]) -> dict[str, list[Any]]:
  """"kind:path" (a citrus_jax.eval.benchmarks name or "auto") -> {display name: items}."""
  out: dict[str, list[Any]] = {}
  for spec in specs:
    kind, sep, path = spec.partition(":")
    if not sep or not path:
      raise ValueError(f"--benchmark {spec!r}: expected KIND:PATH, e.g. medqa:test.jsonl")
    data = load_benchmark(kind, path, on_error="skip")
    name = data.name
    if name in out:
      name = f"{name}:{os.path.basename(path)}"
    out[name] = data.items
  return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  p = argparse.ArgumentParser(prog="python -m citrus_jax.synth.decontam",
                              description="n-gram overlap between training files and benchmarks")
  p.add_argument("--train", action="append", required=True, help="training file (repeatable)")
  p.add_argument("--benchmark", action="append", required=True,
                 help="KIND:PATH, KIND a benchmark name or auto (repeatable)")
  p.add_argument("--n", type=int, default=13)
  p.add_argument("--min_words", type=int, default=8)
  p.add_argument("--include_options", action="store_true")
  p.add_argument("--max_item_frequency", type=int, default=0)
  p.add_argument("--min_overlap", type=float, default=0.0,
                 help="fraction of an item's n-grams one example must share (0: any one)")
  p.add_argument("--drop_to", default="", help="write clean copies of the training files here")
  p.add_argument("--examples", type=int, default=5)
  p.add_argument("--report", default="", help="write the JSON report here")
  args = p.parse_args(argv)
  report = decontaminate(args.train, load_benchmarks(args.benchmark), n=args.n,
                         min_words=args.min_words, include_options=args.include_options,
                         max_item_frequency=args.max_item_frequency,
                         min_overlap=args.min_overlap, drop_to=args.drop_to,
                         examples=args.examples)
  if args.report:
    with open(args.report, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2, ensure_ascii=False)
  print(format_report(report))
  return report


if __name__ == "__main__":
  main()
