"""Token-length statistics of any stage's data (the paper's token-length figure).

  python -m citrus_jax.data.stats --tokenizer=/path/tok.model --seq_len=2048 \
      --out=runs/stats cpt=corpus.jsonl sft3=pathway.jsonl,extra.jsonl rl=pairs.jsonl

Per stage: count, mean, median, p95 and max tokens, and the share of records longer than seq_len
(what a training row of seq_len tokens cuts or, for CPT, splits across rows); a histogram PNG per
stage and a markdown table. A record is counted the way its stage tokenizes it:

* text (CPT: a JSONL "text" field, or a plain-text file): [BOS] + encode(text) + EOS, as
  data/pipeline.TokenizeDoc builds it for CPT;
* chat (SFT: "messages", or "input"/"target", with "system"): the rendered conversation
  (chat.render, the tokenizer's template), as data/sft.py encodes it;
* preference pair ("prompt"/"chosen"/"rejected"): the longer of prompt + chosen and prompt +
  rejected, the row that decides truncation (data/preference.py).

Bad records raise a ValueError naming file:line and field (on_error="skip" counts them instead).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np

from citrus_jax import chat, tokenizer
from citrus_jax.data import preference, records, sft, sources

KINDS = ("text", "chat", "pair")
COLUMNS = ("stage", "files", "records", "mean", "median", "p95", "max", "> seq_len")


def record_kind(record: Any) -> str:
  """"pair", "chat" or "text" from a record's fields (the stage readers' own field names)."""
  if isinstance(record, dict):
    if "chosen" in record and "rejected" in record:
      return "pair"
    if "messages" in record or "input" in record or "target" in record:
      return "chat"
    if "text" in record:
      return "text"
  keys = sorted(record)[:8] if isinstance(record, dict) else type(record).__name__
  raise ValueError(f"expected a text ('text'), chat ('messages' or 'input'/'target') or "
                   f"preference ('prompt'/'chosen'/'rejected') record, got {keys}")


def _text_len(text: str, tok: Any, add_bos: bool) -> int:
  n = len(tok.encode(text)) + (tok.eos_id is not None)
  return n + (add_bos and tok.bos_id is not None)


def record_length(record: Any, tok: Any, *, chat_format: str | None = None,
                  text_field: str = "text", add_bos: bool = True, where: str = "record"
                  ) -> tuple[str, int]:
  """(kind, tokens) of one record as its stage would tokenize it (see the module docstring);
  a bad record raises a ValueError starting with `where` (file:line)."""
  try:
    kind = "text" if isinstance(record, dict) and text_field in record and \
        text_field != "text" else record_kind(record)
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from None
  if kind == "text":
    text = record.get(text_field)
    if not isinstance(text, str) or not text.strip():
      raise ValueError(f"{where}: field {text_field!r}: expected a non-empty string")
    return kind, _text_len(text, tok, add_bos)
  if kind == "chat":
    try:
      messages = sft.to_messages(record)
    except sft._Bad as e:  # sft's per-record problem, with its own message
      raise ValueError(f"{where}: {e}") from None
    return kind, len(chat.render(messages, tok, fmt=chat_format).tokens)
  prompt, chosen, rejected = preference.split_record(record, where)
  return kind, max(len(chat.render(prompt + [{"role": "assistant", "content": side}], tok,
                                   fmt=chat_format).tokens) for side in (chosen, rejected))


def token_lengths(paths: str | Sequence[str], tok: Any, *, chat_format: str | None = None,
                  text_field: str = "text", add_bos: bool = True, on_error: str = "raise"
                  ) -> tuple[list[int], dict[str, int], dict[str, int]]:
  """(tokens per record, records per kind, skipped per reason) over files/globs/comma lists."""
  records.check_on_error(on_error)
  lengths: list[int] = []
  kinds: Counter = Counter()
  skipped: Counter = Counter()
  for path in sources.expand_paths(paths):
    if not path.endswith(sources.JSONL_SUFFIXES):  # plain text: one document per file
      text = records.read_text(path)
      lengths.append(_text_len(text, tok, add_bos))
      kinds["text"] += 1
      continue
    skips = records.Skips()
    for where, rec in records.read_records(path, on_error=on_error, skips=skips):
      try:
        kind, n = record_length(rec, tok, chat_format=chat_format, text_field=text_field,
                                add_bos=add_bos, where=where)
      except ValueError:
        if on_error != "skip":
          raise
        skipped["bad_record"] += 1
        continue
      lengths.append(n)
      kinds[kind] += 1
    skipped.update(skips.as_dict())
  return lengths, dict(kinds), dict(skipped)


def length_stats(lengths: Sequence[int], seq_len: int) -> dict[str, Any]:
  """count, mean, median, p95 (linear interpolation), max and the share over seq_len."""
  if seq_len < 1:
    raise ValueError(f"seq_len must be >= 1, got {seq_len}")
  a = np.asarray(lengths, dtype=np.int64)
  if not a.size:
    return {"count": 0, "mean": None, "median": None, "p95": None, "max": None,
            "n_over_seq_len": 0, "share_over_seq_len": None, "seq_len": seq_len}
  over = int((a > seq_len).sum())
  return {"count": int(a.size), "mean": float(a.mean()), "median": float(np.median(a)),
          "p95": float(np.percentile(a, 95)), "max": int(a.max()), "n_over_seq_len": over,
          "share_over_seq_len": over / a.size, "seq_len": seq_len}


def plot_histogram(path: str, lengths: Sequence[int], seq_len: int, title: str) -> str:
  """Histogram PNG of tokens per record with seq_len marked."""
  import matplotlib  # optional: only the histogram PNGs need it; Agg set before pyplot
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5, 3.2))
  if len(lengths):
    ax.hist(lengths, bins=min(50, max(5, len(set(lengths)))), color="#4c72b0")
  ax.axvline(seq_len, color="#c44e52", linestyle="--", label=f"seq_len {seq_len}")
  ax.set_xlabel("tokens per record")
  ax.set_ylabel("records")
  ax.set_title(title)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def stage_stats(stages: dict[str, str | Sequence[str]], tok: Any,
                seq_len: int | Mapping[str, int], *, out_dir: str | None = None, **kw: Any
                ) -> dict[str, dict[str, Any]]:
  """{stage: length_stats + files, kinds, skipped (+ "plot" when out_dir is given)}; seq_len is
  one length for all stages or {stage: length} (CPT and SFT rows often differ)."""
  out: dict[str, dict[str, Any]] = {}
  for stage, paths in stages.items():
    n = seq_len[stage] if isinstance(seq_len, Mapping) else seq_len
    files = sources.expand_paths(paths)
    lengths, kinds, skipped = token_lengths(files, tok, **kw)
    s = {**length_stats(lengths, n), "files": files, "kinds": kinds, "skipped": skipped}
    if out_dir is not None:
      os.makedirs(out_dir, exist_ok=True)
      name = f"lengths_{stage}.png"
      plot_histogram(os.path.join(out_dir, name), lengths, n, f"{stage} ({len(lengths)})")
      s["plot"] = name
    out[stage] = s
  return out


def markdown_table(stats: dict[str, dict[str, Any]]) -> str:
  """The per-stage table (what the demo report includes)."""
  def num(x, fmt="{:.0f}"):
    return "-" if x is None else fmt.format(x)
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  for stage, s in stats.items():
    share = s.get("share_over_seq_len")
    over = "-" if share is None else f"{100 * share:.1f}% ({s['n_over_seq_len']})"
    lines.append(f"| {stage} | {len(s.get('files', []))} | {s['count']} | {num(s['mean'], '{:.1f}')}"
                 f" | {num(s['median'])} | {num(s['p95'])} | {num(s['max'])} | {over} |")
  seq = {s["seq_len"] for s in stats.values()}
  if len(seq) == 1:
    lines.append(f"\nTokens per record; '> seq_len' is the share longer than {seq.pop()} tokens.")
  elif seq:
    each = ", ".join(f"{k} {s['seq_len']}" for k, s in stats.items())
    lines.append(f"\nTokens per record; '> seq_len' is the share longer than the stage's row "
                 f"({each}).")
  return "\n".join(lines)


def report_section(stages: dict[str, str | Sequence[str]], tok: Any,
                   seq_len: int | Mapping[str, int],
                   out_dir: str, **kw: Any) -> str:
  """A report's "Data statistics" section: the table and one histogram link per stage (PNGs
  written to out_dir, linked relative to it, so a report.md in out_dir shows them)."""
  stats = stage_stats(stages, tok, seq_len, out_dir=out_dir, **kw)
  images = " ".join(f"![{k}]({s['plot']})" for k, s in stats.items())
  return f"## Data statistics\n\n{markdown_table(stats)}\n\n{images}\n"


def parse_stage(arg: str) -> tuple[str, list[str]]:
  """"stage=path[,path]" -> (stage, paths)."""
  name, sep, paths = arg.partition("=")
  if not sep or not name.strip() or not paths.strip():
    raise ValueError(f"expected STAGE=PATH[,PATH...], got {arg!r}")
  return name.strip(), records.split_paths(paths)


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m citrus_jax.data.stats", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--tokenizer", required=True, help="a .model file or an HF tokenizer directory")
  p.add_argument("--seq_len", type=int, required=True)
  p.add_argument("--out", default="data_stats", help="output directory (table, PNGs, JSON)")
  p.add_argument("--chat_format", default=None)
  p.add_argument("--text_field", default="text")
  p.add_argument("--on_error", default="raise", choices=("raise", "skip"))
  p.add_argument("stages", nargs="+", metavar="STAGE=PATH[,PATH]")
  a = p.parse_args(argv)
  try:
    stages = dict(parse_stage(s) for s in a.stages)
    tok = tokenizer.load_tokenizer(a.tokenizer)
    stats = stage_stats(stages, tok, a.seq_len, out_dir=a.out, chat_format=a.chat_format,
                        text_field=a.text_field, on_error=a.on_error)
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  table = markdown_table(stats)
  with open(os.path.join(a.out, "data_stats.md"), "w", encoding="utf-8") as f:
    f.write(table + "\n")
  with open(os.path.join(a.out, "data_stats.json"), "w", encoding="utf-8") as f:
    json.dump(stats, f, indent=2, ensure_ascii=False)
  print(table)
  print(os.path.abspath(a.out))
  return 0


if __name__ == "__main__":
  sys.exit(main())
