"""JMED-style benchmark construction from consultation dialogues or EMR-like records.

  python -m citrus_jax.eval.build_benchmark --config=configs/benchmark_build.py:openai \
      --config.input.paths=dialogues.jsonl --config.out_dir=runs/bench_build

The paper built JMED from de-identified JD Health consultations (no code was released). Per
source record ({"id", "diagnosis", "dialogue": [{"role", "text"}] or "record": text, optional
"lookalikes": [...], "department"}):
  1. the "case" role (a synthesis backend, synth/llm.py) writes a case summary and a question
     from the dialogue; the record's diagnosis is kept as the gold answer;
  2. distractors are expanded to n_options - 1 from plausible look-alikes, in this order: the
     record's own "lookalikes", those the "distractors" role proposes, a look-alike table
     (input.lookalikes: {diagnosis: [look-alikes]}), then other records' diagnoses of the same
     department; look-alikes that could also be right are set aside (eval/bench_quality.py);
  3. quality: items whose case names the answer ("leak"), with fewer than n_options distinct
     options ("too_few_options"), that the "check" role answers with another or a second option
     ("ambiguous"; quality.llm_check), or whose case duplicates an earlier item's ("duplicate";
     word n-gram overlap, exact) are dropped;
  4. options are placed by a seeded permutation per item (gold letters spread evenly) and the
     kept items are written in the Citrus unified JSONL the eval readers read.
Outputs in out_dir: benchmark.jsonl (score it with --config.eval.benchmarks=unified),
provenance.jsonl (one committed record per source: status, reason, the role outputs, where each
option came from, tokens), stats.json (kept, drop counts by reason, gold letter counts). Resumable
like synthesis: provenance is the commit log, a rerun skips committed sources, failed calls
(LLMError) stay uncommitted; duplicates are decided over all committed items in input order.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import random
import re
import sys
import time
from typing import Any, Mapping, Sequence

from absl import flags, logging

from citrus_jax.data import records
from citrus_jax.eval import bench_quality as q
from citrus_jax.synth import pathway
from citrus_jax.synth.llm import LLM, ChatRequest, LLMError

LETTERS = "ABCDEFGHIJ"
ROLES = ("case", "distractors", "check")
DEFAULT_SAMPLING = {"case": (0.0, 512), "distractors": (0.7, 256), "check": (0.0, 16)}
PROMPTS = {
    "case": (
        "You write questions for a medical examination from real consultations. Never name or "
        "hint at the diagnosis.",
        "Consultation ({kind}):\n{text}\n\nWrite a concise case summary (age and sex if known, "
        "the complaint, its course, the relevant findings) and one question asking for the most "
        "likely diagnosis. Do not mention the diagnosis. Reply exactly as:\nSummary: ...\n"
        "Question: ..."),
    "distractors": (
        "You write distractor options for medical examination questions.",
        "Case: {case}\nCorrect diagnosis: {gold}\n\nList {n} diagnoses that a clinician could "
        "plausibly confuse with the correct one for this case but that are wrong. One per line, "
        "no numbering, no explanation."),
    "check": (
        "You are a careful physician answering an examination question.",
        "{case}\n\n{options}\n\nWhich options are correct? Reply with the letter(s) only, "
        "separated by commas."),
}


class SourceError(records.RecordError):
  """A source record that cannot become an item; the message names file:line and field."""


@dataclasses.dataclass(frozen=True)
class Source:
  id: str
  kind: str  # "dialogue" | "record"
  text: str
  diagnosis: str
  lookalikes: tuple[str, ...] = ()
  department: str = ""
  where: str = ""


@dataclasses.dataclass
class BuildOptions:
  n_options: int = 5  # JMED: 5
  seed: int = 0
  exam_name: str = "built_mcq"
  sampling: Mapping[str, tuple[float, int]] = dataclasses.field(
      default_factory=lambda: dict(DEFAULT_SAMPLING))
  n_proposed: int = 6  # look-alikes asked of the distractors role
  lookalikes: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
  llm_check: bool = True
  dup_n: int = 5
  dup_threshold: float = 0.5
  workers: int = 4

  def validate(self) -> "BuildOptions":
    if not 2 <= self.n_options <= len(LETTERS):
      raise ValueError(f"n_options={self.n_options}; expected 2..{len(LETTERS)}")
    missing = set(ROLES) - set(self.sampling)
    if missing:
      raise ValueError(f"sampling has no (temperature, max_tokens) for roles {sorted(missing)}")
    return self


# ------------------------------------------------------------------------------------------------
# Sources


def render_dialogue(turns: Sequence[Mapping[str, str]]) -> str:
  """"Patient: ...\nDoctor: ..." from [{"role", "text"}]."""
  return "\n".join(f"{t['role'].strip().capitalize()}: {t['text'].strip()}" for t in turns)


def _source(obj: Any, path: str, line: int | str) -> Source:
  def bad(field: str, why: str, reason: str = "bad_field") -> SourceError:
    return SourceError.at(path, line, field, why, reason)
  if not isinstance(obj, dict):
    raise bad(None, f"expected a JSON object, got {type(obj).__name__}", "bad_json")
  for field in ("id", "diagnosis"):
    if not isinstance(obj.get(field), (str, int)) or not str(obj.get(field)).strip():
      raise bad(field, "missing or empty", "missing_field")
  if "dialogue" in obj:
    turns = obj["dialogue"]
    if not isinstance(turns, list) or not turns or not all(
        isinstance(t, dict) and isinstance(t.get("role"), str) and isinstance(t.get("text"), str)
        and t["text"].strip() for t in turns):
      raise bad("dialogue", "must be a non-empty list of {'role', 'text'} with text")
    kind, text = "dialogue", render_dialogue(turns)
  elif isinstance(obj.get("record"), str) and obj["record"].strip():
    kind, text = "record", obj["record"].strip()
  else:
    raise bad("dialogue", "expected 'dialogue' (a list of turns) or 'record' (text)",
              "missing_field")
  looks = obj.get("lookalikes", [])
  if not isinstance(looks, list) or not all(isinstance(x, str) for x in looks):
    raise bad("lookalikes", "must be a list of strings")
  return Source(id=str(obj["id"]), kind=kind, text=text, diagnosis=str(obj["diagnosis"]).strip(),
                lookalikes=tuple(looks), department=str(obj.get("department") or ""),
                where=records.where(path, line))


def read_sources(paths: str | Sequence[str], on_error: str = "raise"
                 ) -> tuple[list[Source], dict[str, int]]:
  """Source records of JSONL / JSON array files, and skipped counts per reason."""
  skips = records.Skips()
  out: list[Source] = []
  for path in records.split_paths(paths):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"input.paths: {path} does not exist")
    for where, obj in records.read_records(path, on_error=on_error, skips=skips):
      line = where.rsplit(":", 1)[1]
      try:
        out.append(_source(obj, path, int(line) if line.isdigit() else line))
      except SourceError as e:
        records.handle(e, on_error, skips)
  dup = [i for i, c in collections.Counter(s.id for s in out).items() if c > 1]
  if dup:
    raise ValueError(f"duplicate source ids {dup[:3]}; ids must be unique across input files")
  return out, skips.as_dict()


# ------------------------------------------------------------------------------------------------
# Role replies


def parse_case(text: str) -> tuple[str, str] | None:
  """(summary, question) from "Summary: ...\nQuestion: ..." (markdown bold allowed)."""
  t = re.sub(r"\*\*|__", "", text)
  m = re.search(r"(?is)summary\s*[:：]\s*(.+?)\s*question\s*[:：]\s*(.+)$", t)
  if not m or not m.group(1).strip() or not m.group(2).strip():
    return None
  return " ".join(m.group(1).split()), " ".join(m.group(2).split())


def parse_list(text: str) -> list[str]:
  """One look-alike per line; bullets, numbering and trailing explanations removed."""
  out = []
  for line in text.splitlines():
    line = re.sub(r"^\s*(?:[-*•]|\d+[.)]|[A-J][.)])\s*", "", line).strip()
    line = re.split(r"\s+[-–—:]\s+|\s*\(", line)[0].strip(" .;,")
    if line:
      out.append(line)
  return out


def parse_letters(text: str, letters: str) -> set[str] | None:
  """Letters named in a check reply ("B", "A, C", "Answer: D"); None when there are none."""
  found = set(re.findall(rf"(?<![A-Za-z])([{letters}])(?![a-z])", re.sub(r"(?i)answers?\s*:",
                                                                           "", text)))
  return found or None


# ------------------------------------------------------------------------------------------------
# One source -> one committed record


def _seed(*parts: Any) -> int:
  return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:4], "big")


class _Build:
  def __init__(self, src: Source, llm: LLM, opts: BuildOptions, pool: Sequence[Source]):
    self.src, self.llm, self.opts, self.pool = src, llm, opts, pool
    self.tokens: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    self.outputs: dict[str, str] = {}

  def call(self, role: str, **values: Any) -> str:
    temperature, max_tokens = self.opts.sampling[role]
    system, user = PROMPTS[role]
    request = ChatRequest([{"role": "system", "content": system},
                           {"role": "user", "content": user.format(**values)}],
                          temperature=temperature, max_tokens=max_tokens,
                          seed=_seed(self.opts.seed, self.src.id, role), tag=role)
    r = self.llm.complete(request)
    t = self.tokens[role]
    t.update(calls=1, cached=int(r.cached), prompt=r.prompt_tokens, completion=r.completion_tokens)
    self.outputs[role] = r.texts[0]
    return r.texts[0]

  def record(self, status: str, reason: str = "", **extra: Any) -> dict[str, Any]:
    return {"id": self.src.id, "source": self.src.where, "kind": self.src.kind,
            "diagnosis": self.src.diagnosis, "status": status, "reason": reason,
            "outputs": self.outputs, "tokens": {k: dict(v) for k, v in self.tokens.items()},
            **extra}

  def candidates(self, proposed: Sequence[str]) -> list[tuple[str, str]]:
    src, gold = self.src, self.src.diagnosis
    table = next((v for k, v in self.opts.lookalikes.items() if q.norm(k) == q.norm(gold)), [])
    same = [s.diagnosis for s in self.pool if s.department == src.department and s.id != src.id]
    other = [s.diagnosis for s in self.pool if s.department != src.department]
    rng = random.Random(_seed(self.opts.seed, src.id, "pool"))
    rng.shuffle(same)
    rng.shuffle(other)
    return ([(x, "record") for x in src.lookalikes] + [(x, "llm") for x in proposed]
            + [(x, "table") for x in table] + [(x, "department") for x in same]
            + [(x, "pool") for x in other])

  def run(self) -> dict[str, Any]:
    src, opts = self.src, self.opts
    parsed = parse_case(self.call("case", kind=src.kind, text=src.text))
    if parsed is None:
      return self.record("dropped", "unparsed_case")
    summary, question = parsed
    case = f"{summary}\n{question}"
    if q.leaks(case, src.diagnosis):
      return self.record("dropped", "leak", case=case)
    proposed = parse_list(self.call("distractors", case=case, gold=src.diagnosis,
                                    n=opts.n_proposed))
    chosen, set_aside = q.select_distractors(src.diagnosis, self.candidates(proposed),
                                             opts.n_options - 1)
    extra = {"case": case, "set_aside": set_aside}
    if len(chosen) < opts.n_options - 1:
      return self.record("dropped", "too_few_options", **extra)
    options = [(src.diagnosis, "gold")] + chosen
    random.Random(_seed(opts.seed, src.id, "order")).shuffle(options)
    letters = LETTERS[:len(options)]
    gold = letters[[o for _, o in options].index("gold")]
    ops = [{"op_idx": k, "op_value": t, "op_text": f"{k}. {t}"} for k, (t, _) in
           zip(letters, options)]
    extra.update(origins={k: o for k, (_, o) in zip(letters, options)})
    if opts.llm_check:
      said = parse_letters(self.call("check", case=case, options="\n".join(
          o["op_text"] for o in ops)), letters)
      extra["check"] = sorted(said) if said else None
      if said is None:
        return self.record("dropped", "check_unparsed", **extra)
      if said != {gold}:
        return self.record("dropped", "ambiguous", **extra)
    item = {"exam_name": opts.exam_name, "id": src.id, "Q": case, "A": gold, "C": None,
            "OP": ops}
    return self.record("candidate", **extra, item=item)


# ------------------------------------------------------------------------------------------------
# The job


def assemble(committed: Sequence[dict[str, Any]], opts: BuildOptions) -> list[dict[str, Any]]:
  """Kept unified items in input order; candidates duplicating an earlier one become dropped."""
  cands = [r for r in committed if r["status"] == "candidate"]
  dup = q.find_duplicates([(r["id"], r["item"]["Q"]) for r in cands], n=opts.dup_n,
                          threshold=opts.dup_threshold)
  for r in committed:
    r["final"] = ("dropped", "duplicate") if r["id"] in dup else \
        ("kept", "") if r["status"] == "candidate" else ("dropped", r["reason"])
    if r["id"] in dup:
      r["duplicate_of"] = dup[r["id"]]
  return [r["item"] for r in cands if r["id"] not in dup]


def summarize(committed: Sequence[dict[str, Any]], kept: Sequence[dict[str, Any]],
              errors: Mapping[str, str], skipped_input: Mapping[str, int]) -> dict[str, Any]:
  tokens: collections.Counter = collections.Counter()
  origins: collections.Counter = collections.Counter()
  for r in committed:
    for t in r.get("tokens", {}).values():
      tokens.update(t)
    if r["final"][0] == "kept":
      origins.update(o for o in r["origins"].values() if o != "gold")
  return {"sources": len(committed) + len(errors), "committed": len(committed),
          "kept": len(kept), "dropped": len(committed) - len(kept), "errors": len(errors),
          "dropped_reasons": dict(collections.Counter(r["final"][1] for r in committed
                                                      if r["final"][0] != "kept")),
          "skipped_input": dict(skipped_input),
          "gold_letters": dict(sorted(collections.Counter(it["A"] for it in kept).items())),
          "distractor_origins": dict(origins), "tokens": dict(tokens),
          "error_examples": dict(list(errors.items())[:10])}


def run_job(sources: Sequence[Source], llm: LLM, out_dir: str, opts: BuildOptions | None = None,
            skipped_input: Mapping[str, int] | None = None) -> dict[str, Any]:
  """Builds (or resumes building) the benchmark in out_dir; returns and writes the statistics."""
  opts = (opts or BuildOptions()).validate()
  os.makedirs(out_dir, exist_ok=True)
  prov_path = os.path.join(out_dir, "provenance.jsonl")
  committed = {r["id"]: r for r in records.read_log(prov_path, required=("id", "status"))}
  todo = [s for s in sources if s.id not in committed]
  logging.info("benchmark build: %d sources, %d committed, %d to do", len(sources),
               len(committed), len(todo))
  errors: dict[str, str] = {}
  start = time.time()
  pool = concurrent.futures.ThreadPoolExecutor(max(1, opts.workers), "bench")
  try:
    with open(prov_path, "a", encoding="utf-8") as prov:
      futures = {pool.submit(_Build(s, llm, opts, sources).run): s for s in todo}
      for fut in concurrent.futures.as_completed(futures):
        src = futures[fut]
        try:
          rec = fut.result()
        except LLMError as e:
          errors[src.id] = str(e)
          logging.error("%s: not committed (rerun to retry): %s", src.id, e)
          continue
        prov.write(json.dumps(rec, ensure_ascii=False) + "\n")
        prov.flush()
        committed[src.id] = rec
  finally:
    pool.shutdown(wait=False, cancel_futures=True)
  order = {s.id: k for k, s in enumerate(sources)}
  ordered = sorted(committed.values(), key=lambda r: order.get(r["id"], len(order)))
  kept = assemble(ordered, opts)
  tmp = os.path.join(out_dir, "benchmark.jsonl.tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    for it in kept:
      f.write(json.dumps(it, ensure_ascii=False) + "\n")
  os.replace(tmp, os.path.join(out_dir, "benchmark.jsonl"))
  stats = summarize(ordered, kept, errors, skipped_input or {})
  stats["run"] = {"resumed": len(sources) - len(todo), "new": len(todo) - len(errors),
                  "wall_s": round(time.time() - start, 3)}
  stats["per_source"] = {r["id"]: {"status": r["final"][0], "reason": r["final"][1]}
                         for r in ordered}
  with open(os.path.join(out_dir, "stats.json"), "w", encoding="utf-8") as f:
    json.dump(stats, f, indent=2, ensure_ascii=False)
  return stats


def format_stats(stats: Mapping[str, Any]) -> str:
  return (f"benchmark: {stats['kept']} kept of {stats['sources']} sources "
          f"({stats['dropped']} dropped, {stats['errors']} errors, uncommitted); dropped by "
          f"reason {stats['dropped_reasons']}; gold letters {stats['gold_letters']}; "
          f"skipped input {stats['skipped_input']}")


# ------------------------------------------------------------------------------------------------
# From a config (configs/benchmark_build.py)


def options_from_config(config: Any) -> BuildOptions:
  looks: dict[str, list[str]] = {}
  if config.input.lookalikes:
    looks = records.load_json(config.input.lookalikes)
    if not isinstance(looks, dict) or not all(isinstance(v, list) for v in looks.values()):
      raise ValueError(f"{config.input.lookalikes}: expected {{diagnosis: [look-alikes]}}")
  sampling = {r: (float(config.roles[r].temperature), int(config.roles[r].max_tokens))
              for r in ROLES}
  return BuildOptions(n_options=config.n_options, seed=config.seed, exam_name=config.exam_name,
                      sampling=sampling, n_proposed=config.n_proposed, lookalikes=looks,
                      llm_check=config.quality.llm_check, dup_n=config.quality.dup_n,
                      dup_threshold=config.quality.dup_threshold, workers=config.workers)


def run(config: Any, llm: LLM | None = None) -> dict[str, Any]:
  """Reads the sources, runs (or resumes) the build in config.out_dir, prints the statistics."""
  sources, skipped = read_sources(config.input.paths, config.input.on_error)
  if config.input.limit:
    sources = sources[:config.input.limit]
  opts = options_from_config(config)
  own = llm is None
  llm = pathway.make_llm(config, config.out_dir) if own else llm
  try:
    stats = run_job(sources, llm, config.out_dir, opts, skipped)
  finally:
    if own:
      llm.close()
  print(format_stats(stats))
  print(os.path.abspath(os.path.join(config.out_dir, "benchmark.jsonl")))
  return stats


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise SystemExit(f"unexpected arguments: {argv[1:]}")
  try:
    stats = run(flags.FLAGS.config)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if stats["errors"]:
    sys.exit(1)


if __name__ == "__main__":
  from absl import app
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "configs/benchmark_build.py[:preset]",
                                  lock_config=True)
  app.run(main)
