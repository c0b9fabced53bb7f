"""Scoring predictions made elsewhere: JSONL lines {"id", "output", optional "benchmark"}
matched to the benchmark items by id (split out of eval/harness.py; harness re-exports these).
"""
from __future__ import annotations

from typing import Any, Sequence

from citrus_jax.data import records
from citrus_jax.eval.generation import output_record


def read_predictions(paths: Sequence[str], keys: Sequence[str], on_error: str = "raise"
                     ) -> tuple[dict[str, dict[str, tuple[str, str | None]]], dict[str, int]]:
  """{benchmark key: {item id: (where, output)}} and counts of skipped lines per reason.

  A line is {"id", "output", optional "benchmark"}. Without "benchmark", a line belongs to the
  only benchmark, or to the benchmark at the same position as its file when there are as many
  files as benchmarks. Duplicates and bad lines raise a ValueError naming file:line, or with
  on_error="skip" are counted (the first of duplicates is kept).
  """
  preds: dict[str, dict[str, tuple[str, str | None]]] = {k: {} for k in keys}
  on_error = "skip" if on_error == "skip" else "raise"
  skips = records.Skips()

  def bad(field: str, reason: str, msg: str) -> None:  # about line `line_no` of `path`
    records.handle(records.RecordError.at(path, line_no, field, msg, reason), on_error, skips)

  for f_idx, path in enumerate(paths):
    default = keys[0] if len(keys) == 1 else keys[f_idx] if len(paths) == len(keys) else None
    for line_no, obj in records.read_jsonl(path, on_error=on_error, skips=skips):
      where = f"{path}:{line_no}"
      key = obj.get("benchmark", default)
      if key is None:
        bad("benchmark", "no_benchmark", f"needed when scoring several benchmarks "
            f"({', '.join(keys)}) from {len(paths)} file(s)")
        continue
      if key not in preds:
        bad("benchmark", "unknown_benchmark",
            f"{key!r} is not among the evaluated benchmarks ({', '.join(keys)})")
        continue
      item_id, output = obj.get("id"), obj.get("output")
      if not isinstance(item_id, (str, int)) or isinstance(item_id, bool) or item_id == "":
        bad("id", "bad_id", f"missing or not a string: {item_id!r}")
        continue
      if output is not None and not isinstance(output, str):
        bad("output", "bad_output", f"must be a string or null, got "
            f"{type(output).__name__}")
        continue
      item_id = str(item_id)
      if item_id in preds[key]:
        bad("id", "duplicate_id", f"duplicate id {item_id!r} for {key} (first at "
            f"{preds[key][item_id][0]})")
        continue
      preds[key][item_id] = (where, output)
  return preds, skips.as_dict()


def score_predictions(data: dict[str, Any], paths: Sequence[str], on_error: str = "raise"
                      ) -> tuple[dict[str, list[dict]], dict]:
  """Records per benchmark from predictions files, matched to the items by id.

  Unknown ids raise (file:line), as do items without a prediction, unless on_error="skip": then
  unknown ids are counted and missing items are scored as no answer (record "missing": true).
  """
  preds, skipped = read_predictions(paths, list(data), on_error)
  out, unknown = {}, 0
  for key, bench in data.items():
    items = {it.id: it for it in bench.items}
    for item_id, (where, _) in preds[key].items():
      if item_id not in items:
        if on_error != "skip":
          raise ValueError(f"{where}: field 'id': unknown id {item_id!r} for benchmark {key} "
                           f"({bench.path}, {len(items)} items)")
        unknown += 1
    missing = [i for i in items if i not in preds[key]]
    if missing and on_error != "skip":
      raise ValueError(f"{', '.join(paths)}: no prediction for {len(missing)} of {len(items)} "
                       f"{key} items (first ids: {', '.join(missing[:5])}); set "
                       "config.eval.on_error=skip to score them as no answer")
    out[key] = [output_record(it, preds[key].get(it.id, (None, None))[1], key,
                              missing=it.id not in preds[key],
                              where=preds[key].get(it.id, (None,))[0])
                for it in bench.items]
  return out, {"skipped_lines": skipped, "unknown_ids": unknown}
