"""Preference pairs for RL (CPO+SimPO, DPO, ...): reading, tokenization, truncation, batches.

Accepted records (JSONL, one per line, or a JSON list):
- `{"prompt": str, "chosen": str, "rejected": str}`: the prompt becomes one user turn and each
  response an assistant turn;
- the Citrus / TRL-conversational form `{"chosen": [messages], "rejected": [messages]}`: the
  prompt is every message before the final assistant message and must be identical on both
  sides; an optional `"prompt": [messages]` is prepended to both.

Tokenization (`tokenize_pair`): prompt = the chat template with the generation header
(`chat.render(..., add_generation_prompt=True)`); response = the assistant content and its
end-of-turn token, i.e. the trained tokens of the full rendered conversation after the prompt.
The chat renderer decides BOS, as for SFT. Over-long pairs follow CITRUS.md (older TRL's rule,
from when CPO/DPO had max_prompt_length): if prompt + longer response > max_length, keep the
LAST max_prompt_length prompt tokens, then cut each response to its first
max_length - max_prompt_length tokens.
Differences from TRL 1.16's CPOTrainer (same ids for a Llama-3-instruct template without
truncation; see tests): it no longer truncates prompts, only responses (to max_length -
len(prompt), possibly to nothing, which then gives a NaN mean log-prob); and it appends
tokenizer.eos_token to a response not ending in it, so with ChatML (a turn ends "<|im_end|>",
newline) or a base Llama-3 tokenizer (EOS <|end_of_text|>) its responses get one more token:
"Yes.<|im_end|>", newline, "<|im_end|>" where ours is "Yes.<|im_end|>" (checked, TRL 1.16).

Batches (`make_batch`): numpy, fixed [B, T] shapes, T = max_length: for each side s in
{chosen, rejected}: `s_inputs` (sequence[:-1]), `s_targets` (sequence[1:]), `s_loss_mask` (1 where
the target is a response token), `s_positions`, `s_segment_ids` (1 real, 0 padding); plus
`ref_chosen_logps`/`ref_rejected_logps` [B] when the pairs carry reference log-probs. Rows with
empty masks are padding pairs (weight 0 in the losses).

The RL stage's batches (`make_pair_dataset`) come from the grain code CPT and SFT share: the pairs
are split into `num_shards` logical shards (`multihost.shard_records`), each shuffled, repeated
and batched on its own, and `multihost.sharded_dataset` hands each process its block of shards,
so a global batch does not depend on the host count. Those batches add `row_mask` [B] (float32:
1 a real pair, 0 padding); a final eval batch is padded to the full global batch with rows of
row_mask 0, which evaluation weighs by `row_mask.sum()` and the losses leave out.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
from typing import Any, Callable, Iterator, Sequence

import grain
import jax
import numpy as np
from etils import epath

from citrus_jax import chat, multihost
from citrus_jax.data import pipeline, records

Messages = list[dict[str, str]]
SIDES = ("chosen", "rejected")


class PairError(records.RecordError):
  """A record that cannot become a training pair; the message names file:line and field."""


@dataclasses.dataclass(frozen=True)
class PreferencePair:
  prompt_ids: tuple[int, ...]
  chosen_ids: tuple[int, ...]  # response tokens, end-of-turn included
  rejected_ids: tuple[int, ...]
  where: str = ""  # file:line of the record
  truncated: bool = False
  ref_chosen_logps: float | None = None
  ref_rejected_logps: float | None = None


# ----------------------------------------------------------------------------- reading


def read_records(path: str, on_error: str = "raise", skips: records.Skips | None = None
                 ) -> Iterator[tuple[str, Any]]:
  """(where, record) for every record of a .jsonl (blank lines skipped) or .json list file; a
  line that is not a JSON object raises PairError or is counted in `skips` (data/records)."""
  yield from records.read_records(os.fspath(path), on_error=on_error, skips=skips,
                                  error=PairError)


def _messages(value: Any, where: str, field: str) -> Messages:
  if not isinstance(value, list) or not value:
    raise PairError(f"{where}: field {field!r} must be a non-empty list of messages")
  for i, m in enumerate(value):
    if not (isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)):
      raise PairError(f"{where}: field {field!r}[{i}] must be {{'role': str, 'content': str}}")
  return [{"role": m["role"], "content": m["content"]} for m in value]


def _split_conversation(messages: Messages, where: str, field: str) -> tuple[Messages, str]:
  last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
  if last is None:
    raise PairError(f"{where}: field {field!r} has no assistant turn")
  if last != len(messages) - 1:
    raise PairError(f"{where}: field {field!r} continues after its last assistant turn")
  return messages[:last], messages[last]["content"]


def split_record(record: Any, where: str) -> tuple[Messages, str, str]:
  """(prompt messages, chosen text, rejected text) of one record, validated."""
  if not isinstance(record, dict):
    raise PairError(f"{where}: expected a JSON object, got {type(record).__name__}")
  for field in SIDES:
    if field not in record:
      raise PairError(f"{where}: missing field {field!r}")
  prompt, chosen, rejected = record.get("prompt"), record["chosen"], record["rejected"]
  if isinstance(chosen, str) or isinstance(rejected, str):
    if not (isinstance(prompt, str) and isinstance(chosen, str) and isinstance(rejected, str)):
      raise PairError(f"{where}: fields 'prompt', 'chosen', 'rejected' must all be strings "
                      "(or chosen/rejected message lists)")
    prompt_msgs: Messages = [{"role": "user", "content": prompt}]
    if not prompt.strip():
      raise PairError(f"{where}: field 'prompt' is empty")
  else:
    prefix = [] if prompt is None else _messages(prompt, where, "prompt")
    prompt_c, chosen = _split_conversation(
        prefix + _messages(chosen, where, "chosen"), where, "chosen")
    prompt_r, rejected = _split_conversation(
        prefix + _messages(rejected, where, "rejected"), where, "rejected")
    if prompt_c != prompt_r:
      raise PairError(f"{where}: the turns before the last assistant message differ between "
                      "'chosen' and 'rejected'; a pair must share its prompt")
    if not prompt_c:
      raise PairError(f"{where}: field 'chosen' has no prompt turns before the assistant turn")
    prompt_msgs = prompt_c
  for field, text in (("chosen", chosen), ("rejected", rejected)):
    if not text.strip():
      raise PairError(f"{where}: field {field!r} is empty")
  if chosen == rejected:
    raise PairError(f"{where}: 'chosen' and 'rejected' are identical")
  return prompt_msgs, chosen, rejected


# ----------------------------------------------------------------------------- tokens


def truncate_pair(prompt: Sequence[int], chosen: Sequence[int], rejected: Sequence[int],
                  max_length: int, max_prompt_length: int
                  ) -> tuple[list[int], list[int], list[int], bool]:
  """CITRUS.md's rule, as older TRL's tokenize_row did it (max_prompt_length, 'keep_end').

  Both responses are cut whenever the LONGER one overflows, to max_length - max_prompt_length
  even if the prompt came out shorter than max_prompt_length. Returns (p, c, r, truncated).
  """
  prompt, chosen, rejected = list(prompt), list(chosen), list(rejected)
  longer = max(len(chosen), len(rejected))
  if len(prompt) + longer <= max_length:
    return prompt, chosen, rejected, False
  prompt = prompt[-max_prompt_length:]
  if len(prompt) + longer > max_length:
    keep = max_length - max_prompt_length
    chosen, rejected = chosen[:keep], rejected[:keep]
  return prompt, chosen, rejected, True


def _default_render() -> Callable[..., Any]:
  return chat.render


def _response_tokens(prompt_ids: list[int], full: Any, where: str, field: str) -> list[int]:
  tokens, mask = list(full.tokens), list(full.assistant_mask)
  if tokens[:len(prompt_ids)] != prompt_ids:
    raise PairError(f"{where}: field {field!r}: the rendered prompt is not a prefix of the "
                    "rendered conversation; the chat template is not prefix-stable")
  trained = [i for i, m in enumerate(mask) if m and i >= len(prompt_ids)]
  if not trained:
    raise PairError(f"{where}: field {field!r} renders to no trained tokens")
  return tokens[len(prompt_ids):trained[-1] + 1]


def tokenize_pair(prompt: Messages, chosen: str, rejected: str, tokenizer: Any, *,
                  max_length: int = 2048, max_prompt_length: int = 1800, where: str = "",
                  render: Callable[..., Any] | None = None) -> PreferencePair:
  """Token ids of one pair, truncated; raises PairError if a response ends up empty."""
  if not 1 <= max_prompt_length <= max_length:
    raise ValueError(f"need 1 <= max_prompt_length ({max_prompt_length}) <= max_length "
                     f"({max_length})")
  render = render or _default_render()
  prompt_ids = list(render(prompt, tokenizer, add_generation_prompt=True).tokens)
  responses = []
  for field, text in (("chosen", chosen), ("rejected", rejected)):
    full = render(prompt + [{"role": "assistant", "content": text}], tokenizer,
                  add_generation_prompt=False)
    responses.append(_response_tokens(prompt_ids, full, where, field))
  p, c, r, truncated = truncate_pair(prompt_ids, responses[0], responses[1], max_length,
                                     max_prompt_length)
  if not c or not r:
    raise PairError(f"{where}: a response is empty after truncation (prompt of "
                    f"{len(prompt_ids)} tokens, max_length {max_length})")
  if c == r:
    raise PairError(f"{where}: 'chosen' and 'rejected' are identical after truncation")
  return PreferencePair(tuple(p), tuple(c), tuple(r), where, truncated)


def load_pairs(paths: str | Sequence[str], tokenizer: Any, *, max_length: int = 2048,
               max_prompt_length: int = 1800, on_error: str = "raise",
               render: Callable[..., Any] | None = None
               ) -> tuple[list[PreferencePair], dict[str, Any]]:
  """Read and tokenize every pair of one or more files (a comma list is several). With
  on_error='skip', bad records are counted (stats['skipped'], per reason in stats['reasons'],
  first messages in stats['errors']) instead of raised."""
  records.check_on_error(on_error)
  files = records.split_paths(paths)
  if not files:
    raise PairError(f"no preference pair files in {paths!r}")
  pairs: list[PreferencePair] = []
  skips = records.Skips()
  stats: dict[str, Any] = {"read": 0, "kept": 0, "skipped": 0, "truncated": 0}
  for path in files:
    for where, record in read_records(path, on_error, skips):
      stats["read"] += 1
      try:
        prompt, chosen, rejected = split_record(record, where)
        pair = tokenize_pair(prompt, chosen, rejected, tokenizer, max_length=max_length,
                             max_prompt_length=max_prompt_length, where=where, render=render)
      except PairError as e:
        if on_error == "raise":
          raise
        skips.add(e.reason if e.reason != "bad_record" else "bad_pair", where, str(e))
        continue
      pairs.append(pair)
      stats["truncated"] += pair.truncated
  stats["read"] += sum(n for r, n in skips.counts.items() if r != "bad_pair")  # bad lines
  stats["kept"] = len(pairs)
  stats["skipped"] = skips.total()
  stats["reasons"] = skips.as_dict()
  stats["errors"] = list(skips.messages)
  return pairs, stats


def attach_reference_logprobs(pairs: Sequence[PreferencePair], ref: np.ndarray
                              ) -> list[PreferencePair]:
  """Pairs carrying precomputed reference sums (rows of `train.preference.precompute_...`)."""
  ref = np.asarray(ref)
  if ref.ndim != 2 or ref.shape[1] != 2 or ref.shape[0] < len(pairs):
    raise ValueError(f"reference log-probs of shape {ref.shape} for {len(pairs)} pairs")
  return [dataclasses.replace(p, ref_chosen_logps=float(ref[i, 0]),
                              ref_rejected_logps=float(ref[i, 1])) for i, p in enumerate(pairs)]


# ----------------------------------------------------------------------------- batches


def make_batch(pairs: Sequence[PreferencePair], seq_len: int,
               batch_size: int | None = None) -> dict[str, np.ndarray]:
  """Fixed-shape numpy batch; `batch_size` > len(pairs) adds padding pairs (empty masks)."""
  B = len(pairs) if batch_size is None else batch_size
  if B < len(pairs):
    raise ValueError(f"{len(pairs)} pairs do not fit batch_size {B}")
  batch: dict[str, np.ndarray] = {}
  for side in SIDES:
    for name in ("inputs", "targets", "loss_mask", "positions", "segment_ids"):
      batch[f"{side}_{name}"] = np.zeros((B, seq_len), np.int32)
  for i, pair in enumerate(pairs):
    for side in SIDES:
      response = getattr(pair, f"{side}_ids")
      seq = np.asarray(pair.prompt_ids + response, np.int32)
      n = len(seq) - 1
      if n > seq_len:
        raise ValueError(f"{pair.where}: {side} sequence of {len(seq)} tokens exceeds "
                         f"seq_len {seq_len} + 1")
      batch[f"{side}_inputs"][i, :n] = seq[:-1]
      batch[f"{side}_targets"][i, :n] = seq[1:]
      batch[f"{side}_loss_mask"][i, len(pair.prompt_ids) - 1:n] = 1
      batch[f"{side}_positions"][i, :n] = np.arange(n)
      batch[f"{side}_segment_ids"][i, :n] = 1
  if pairs and pairs[0].ref_chosen_logps is not None:
    for side in SIDES:
      values = [getattr(p, f"ref_{side}_logps") for p in pairs]
      if any(v is None for v in values):
        raise ValueError("some pairs lack reference log-probs")
      batch[f"ref_{side}_logps"] = np.zeros((B,), np.float32)
      batch[f"ref_{side}_logps"][:len(pairs)] = values
  return batch


# The padding pair: an empty row (row_mask 0). A sentinel, not None: grain drops None elements.
PADDING = PreferencePair((), (), (), where="<padding>")


class PairRow:
  """A pair -> one row of a batch, `row_mask` 1 (0 for `PADDING`); picklable for grain workers.
  `with_reference`: every row carries `ref_*_logps` (0 on padding), so all batches share keys."""

  def __init__(self, seq_len: int, with_reference: bool = False):
    self.seq_len, self.with_reference = seq_len, with_reference

  def __call__(self, pair: PreferencePair) -> dict[str, np.ndarray]:
    pad = pair is PADDING or not pair.chosen_ids
    row = {k: v[0] for k, v in make_batch([] if pad else [pair], self.seq_len, 1).items()}
    if self.with_reference and pad:
      row.update(ref_chosen_logps=np.float32(0.0), ref_rejected_logps=np.float32(0.0))
    row["row_mask"] = np.float32(0.0 if pad else 1.0)
    return row


def make_pair_dataset(pairs: Sequence[PreferencePair], seq_len: int, global_batch_size: int, *,
                      seed: int = 0, shuffle: bool = True, num_epochs: int | None = None,
                      final_batch: str = "drop", num_shards: int = 0,
                      process_index: int | None = None, process_count: int | None = None
                      ) -> grain.IterDataset:
  """This process's batches of pairs [global_batch_size // process_count, seq_len], resumable.

  The same shards as CPT and SFT (see citrus_jax/multihost.py): shard i of `num_shards` (0: one
  per process) is `pairs[i::num_shards]`, shuffled per epoch with `seed`, batched into
  global // num_shards rows; a process reads its block of shards. `final_batch`: "drop" a short
  last batch (training), or "pad" it (evaluation): the pairs are first padded to a multiple of
  num_shards with `PADDING`, so every shard has as many batches, and each shard's last batch is
  filled with empty rows, making the last global batch full size with row_mask 0 on padding.
  `num_epochs=None` repeats forever.
  """
  if final_batch not in ("drop", "pad"):
    raise ValueError(f"final_batch must be 'drop' or 'pad', got {final_batch!r}")
  if not pairs:
    raise ValueError("no preference pairs to batch")
  with_ref = pairs[0].ref_chosen_logps is not None
  if final_batch == "pad":
    n = num_shards or (jax.process_count() if process_count is None else process_count)
    pairs = list(pairs) + [PADDING] * (-len(pairs) % n)

  def make_shard(shard: int, n_shards: int) -> grain.IterDataset:
    rows = pipeline.local_batch_size(global_batch_size, n_shards)
    ds = multihost.shard_records(pairs, shard, n_shards, seed=seed, shuffle=shuffle,
                                 num_epochs=num_epochs)
    it = ds.map(PairRow(seq_len, with_ref)).to_iter_dataset()
    it = it.batch(rows, drop_remainder=final_batch == "drop")
    return it.map(pipeline.PadBatch(rows)) if final_batch == "pad" else it

  return multihost.sharded_dataset(make_shard, num_shards, process_index=process_index,
                                   process_count=process_count)


def count_batches(n_pairs: int, global_batch_size: int, num_epochs: int,
                  num_shards: int = 1) -> int:
  """Full training batches `num_epochs` epochs of `n_pairs` give in `make_pair_dataset`: the
  shortest shard's (pairs // num_shards of them, epochs back to back) sets the count."""
  n = max(num_shards, 1)
  return num_epochs * (n_pairs // n) // pipeline.local_batch_size(global_batch_size, n)


def iterate_batches(pairs: Sequence[PreferencePair], batch_size: int, seq_len: int, *,
                    shuffle: bool = True, seed: int = 0, epochs: int = 1,
                    drop_remainder: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """One process's seeded, reproducible epochs of whole batches (`make_pair_dataset` on a
  single shard); the last partial batch is padded unless dropped."""
  yield from make_pair_dataset(pairs, seq_len, batch_size, seed=seed, shuffle=shuffle,
                               num_epochs=epochs, num_shards=1, process_index=0, process_count=1,
                               final_batch="drop" if drop_remainder else "pad")


def files_digest(paths: str | Sequence[str]) -> str:
  """sha256 over the contents of the pair files, in order (not their names: a moved file keeps
  its cache): what a reference cache is keyed by, so one computed for other pairs is never
  reused. Local paths or gs:// (etils.epath)."""
  h = hashlib.sha256()
  for path in records.split_paths(paths):
    file_hash = hashlib.sha256()
    with epath.Path(path).open("rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        file_hash.update(chunk)
    h.update(file_hash.digest())  # fixed-size per file: file boundaries are part of the key
  return h.hexdigest()


def pairs_digest(pairs: Sequence[PreferencePair]) -> str:
  """sha256 of the pairs' token ids: catches a change of tokenizer or truncation settings."""
  h = hashlib.sha256()
  for p in pairs:
    for ids in (p.prompt_ids, p.chosen_ids, p.rejected_ids):
      h.update(np.asarray(ids, np.int64).tobytes() + b"|")
    h.update(b"\n")
  return h.hexdigest()


def summarize(stats: dict[str, Any]) -> str:
  """One line for logs: counts and the most common skip reasons."""
  reasons = collections.Counter(e.split(": ", 1)[-1] for e in stats.get("errors", []))
  top = "; ".join(f"{n}x {r}" for r, n in reasons.most_common(3))
  return (f"pairs read {stats['read']}, kept {stats['kept']}, skipped {stats['skipped']}, "
          f"truncated {stats['truncated']}" + (f" ({top})" if top else ""))
