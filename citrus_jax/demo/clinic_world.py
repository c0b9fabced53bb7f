"""Seeded generator of the clinic demo world: CPT text, SFT-1/2/3, RL questions, dev/test MCQs.

A TEACHING TOY, NOT CLINICAL GUIDANCE: everything is derived from the small condition table in
clinic_conditions.py. One seed gives byte-identical files.

A case is a condition plus a set of its findings, and it is decisive: the gold condition lists every
finding, and every other condition of the table is ruled out by at least one of them. A finding
rules a condition out when the condition does not list it, unless it is NONSPECIFIC (never rules
out) or a normal result (rules out only conditions listing a contradicting abnormal result, see
NORMAL_FINDINGS). A "unique" case holds a finding that rules out all of its rivals (the look-alikes
it is built against); in a "shared" case every finding is also listed by some rival, so only the
combination decides. Held-out cases (dev, test) are never reused by a training file, CPT case
reports included. `cpt_only` conditions appear only in the CPT corpus and as gold
answers of dev/test items (group "cpt_only"); no SFT or RL record names them or their own findings.
The world and its cases live in clinic_cases.py; the CPT documents and SFT-1/2 instruction records
are written by clinic_texts.py.
"""
import json
import math
import os
import random
from typing import Callable

from citrus_jax.demo import clinic_texts
# The world model; CATEGORIES, make_world, mid, _join, draw_case are also read as clinic_world.X.
from citrus_jax.demo.clinic_cases import CATEGORIES  # noqa: F401
from citrus_jax.demo.clinic_cases import (Case, World, _cap, _cycle, _join, _telling, draw_case,
                                          make_patient, make_world, mid, render_vignette)
from citrus_jax.demo.clinic_conditions import CONDITIONS
from citrus_jax.demo.clinic_conditions import DEFAULT_CPT_ONLY
from citrus_jax.demo.clinic_conditions import sub_table

FILES = ("cpt", "sft1", "sft2", "sft3", "rl_questions", "dev", "test")
DEFAULT_SIZES = {"cpt": 3000, "sft1": 1500, "sft2": 800, "sft3": 1500, "rl_questions": 300,
                 "dev": 100, "test": 200}
SHARED_FRACTION = 0.4  # dev/test items of group "shared_only"
CPT_ONLY_FRACTION = 0.2  # dev/test items of group "cpt_only"
MAX_CHARS = 1500  # soft cap on SFT-3/RL question + target (about 400 tokens of a 4k BPE)
GROUPS = ("unique_finding", "shared_only", "cpt_only")
MCQ_ASK = "Which of the following is the most likely diagnosis?"
OPEN_ASKS = ("What is the most likely diagnosis?",
             "What is the most likely diagnosis in this patient?",
             "Which condition best explains this presentation?", "What is the diagnosis?")


def citrus_prompt(question: str) -> str:
  """A Citrus-style stage-3 user prompt (the project's exact template lives in eval/prompts.py)."""
  return ("You are tasked with addressing a medical examination question. Please carefully read "
          "the question, provide a detailed thought process, and then present your final answer."
          "\n\n"
          f"<Question>\n{question}\n</Question>\n\nPlease answer in the format: <think> your "
          "reasoning </think> <answer> your final answer </answer>")


def reasoning(world: World, case: Case, candidates, argue: str | None = None) -> str:
  """An expert-pathway chain: a leading impression, the findings that support it, the
  differential (the impression and its look-alikes among the candidates), each look-alike set
  aside by the most telling finding it cannot explain, the conclusion.

  Written so that a small model can learn it in minutes: one fixed phrasing, and every list in
  the impression's own order (its findings in the table's order, its look-alikes in the order of
  its look-alike list), so producing a line means looking things up in the question, never
  copying the question's word order.

  `argue` names another candidate for the chain to argue (a teacher that misreads the case,
  `teacher_errors`); a rival the case's findings cannot rule out (the true diagnosis) is then set
  aside by its most telling finding, as a teacher sure of the wrong answer would write.
  """
  gold = argue or case.condition
  lookalikes = list(world.conditions[gold].lookalikes)
  rivals = sorted((c for c in candidates if c != gold), key=lambda c: (
      lookalikes.index(c) if c in lookalikes else len(lookalikes), c))
  lines = [f"The findings point to {mid(gold)}.",
           f"Supporting findings: {_join(case.findings)}.",
           f"The differential includes {_join(mid(c) for c in [gold, *rivals])}."]
  for c in rivals:
    f = _telling(world, [x for x in case.findings if x in world.excluders[c]] or case.findings)
    lines.append(f"{_cap(mid(c))} does not fit {f}.")
  lines.append(f"So the diagnosis is {mid(gold)}.")
  return "\n".join(lines)


def cot_target(think: str, answer: str) -> str:
  return f"<think>\n{think}\n</think>\n<answer>\n{answer}\n</answer>"


def option_order(case: Case, rng: random.Random) -> list[str]:
  """The gold and its rivals in option order, the gold's position uniform."""
  options = list(case.rivals)
  rng.shuffle(options)
  options.insert(rng.randrange(len(options) + 1), case.condition)
  return options


def _lettered(names) -> dict[str, str]:
  return dict(zip("ABCDEFGHIJ", names))


def open_item(world: World, case: Case, rng: random.Random, prompt_fn: Callable[[str], str],
              *, item_id: str, max_chars: int = MAX_CHARS, argue: str | None = None) -> dict:
  """An SFT-3 / RL record: open question, gold name, Citrus prompt and expert-pathway target.

  `candidates` (the gold and its rivals, in option order) is what a prompt listing the options
  shows. Renders up to three surface forms of the question and keeps the first with question +
  target <= max_chars (else the shortest), so examples fit a short context.
  """
  candidates = option_order(case, rng)
  target = cot_target(reasoning(world, case, candidates, argue), argue or case.condition)
  questions = []
  for _ in range(3):
    patient = make_patient(world, case, rng, case.rivals)
    questions.append(f"{render_vignette(world, case, patient, rng)} {rng.choice(OPEN_ASKS)}")
    if len(questions[-1]) + len(target) <= max_chars:
      break
  question = min(questions, key=len)
  return {"id": item_id, "question": question, "answer": case.condition,
          "input": prompt_fn(question), "target": target, "mode": case.mode,
          "findings": list(case.findings), "rivals": list(case.rivals),
          "candidates": candidates, **({"teacher_answer": argue} if argue else {})}


def mcq_item(world: World, case: Case, rng: random.Random, *, item_id: str, group: str) -> dict:
  """A MedQA-layout item; the options are the gold and its rivals, gold letter uniform."""
  patient = make_patient(world, case, rng, case.rivals)
  options = _lettered(option_order(case, rng))
  return {"id": item_id, "question": f"{render_vignette(world, case, patient, rng)} {MCQ_ASK}",
          "options": options, "answer_idx": next(k for k, v in options.items()
                                                 if v == case.condition),
          "answer": case.condition, "meta_info": "clinic_world", "group": group,
          "mode": case.mode, "findings": list(case.findings)}


# ------------------------------------------------------------------------------------------ splits

def held_out_items(world: World, rng: random.Random, n: int, split: str, used: set) -> list[dict]:
  """Dev/test MCQs: cpt_only, shared_only and unique_finding groups; adds their keys to `used`."""
  n_cpt = round(n * CPT_ONLY_FRACTION) if world.cpt_only else 0
  n_shared = math.ceil(n * SHARED_FRACTION)
  plan = [("cpt_only", n_cpt, world.cpt_only), ("shared_only", n_shared, world.trainable()),
          ("unique_finding", n - n_cpt - n_shared, world.trainable())]
  items = []
  for group, count, names in plan:
    names_it, misses = _cycle(rng, names), 0
    while count > 0:
      name = next(names_it)
      modes = {"shared_only": ["shared"], "unique_finding": ["unique"]}.get(
          group, rng.choice([["shared", "unique"], ["unique"]]))
      case = None
      for mode in modes:
        case = case or draw_case(world, rng, name, mode, train=False, avoid=used)
      if case is None:
        misses += 1
        if misses > 50 * len(names):
          raise RuntimeError(f"{split}: cannot find {count} more new {group} cases")
        continue
      used.add(case.key)
      items.append(mcq_item(world, case, rng, item_id="", group=group))
      count -= 1
  rng.shuffle(items)
  for i, item in enumerate(items):
    item["id"] = f"{split}-{i:04d}"
  return items


def train_cases(world: World, rng: random.Random, n: int, held_out: set, seen: set,
                shared_p: float = 0.6) -> list[Case]:
  """Training cases over the trainable conditions; shared-only with prob. shared_p if possible."""
  cases, names = [], _cycle(rng, world.trainable())
  for _ in range(n):
    name = next(names)
    case = None
    for mode in (["shared", "unique"] if rng.random() < shared_p else ["unique"]):
      case = case or draw_case(world, rng, name, mode, train=True, avoid=held_out,
                               prefer_new=seen)
    if case is None:
      raise RuntimeError(f"no training case for {name!r}")
    seen.add(case.key)
    cases.append(case)
  return cases


def teacher_errors(world: World, rng: random.Random, cases: list[Case], misread: float,
                   rate: float) -> tuple[list[str | None], list[str]]:
  """What an SFT-3 teacher without a final-answer check writes (the released Citrus synthesis
  code keeps chains whatever they conclude): it misreads a `misread` fraction of the trainable
  conditions, and a chat on a misread condition argues, with probability `rate`, the case's
  closest look-alike (the first of its rivals in the condition's look-alike order) instead.

  Returns, per case, the condition its chat argues (None: the true one), and the misread
  conditions. The answer key (RL questions, dev, test) is never touched, so a verified reward
  can undo what this teacher taught; the README's designed experiment measures that."""
  if not (0.0 <= misread <= 1.0 and 0.0 <= rate <= 1.0):
    raise ValueError(f"teacher misread={misread} and rate={rate} must lie in [0, 1]")
  names = sorted(world.trainable())
  rng.shuffle(names)
  wrong = sorted(names[:round(misread * len(names))])
  argue: list[str | None] = []
  for case in cases:
    look = list(world.conditions[case.condition].lookalikes)
    rivals = sorted(case.rivals, key=lambda c: (look.index(c) if c in look else len(look), c))
    argue.append(rivals[0] if case.condition in wrong and rivals and rng.random() < rate
                 else None)
  return argue, wrong


def rl_item(world: World, case: Case, rng: random.Random, prompt_fn, *, item_id: str) -> dict:
  """A rejection-sampling question: the open record, whose options verify answers."""
  item = open_item(world, case, rng, prompt_fn, item_id=item_id)
  item["options"] = _lettered(item["candidates"])
  item["answer_idx"] = next(k for k, v in item["options"].items() if v == case.condition)
  item["group"] = "shared_only" if case.mode == "shared" else "unique_finding"
  return item


# ------------------------------------------------------------------------------------------ build
def _check_no_leak(world: World, label: str, records: list[dict]) -> None:
  for i, rec in enumerate(records):
    if not world.clean(json.dumps(rec, ensure_ascii=False)):
      raise RuntimeError(f"{label}.jsonl record {i}: mentions a cpt_only condition or its findings")


def generate(*, seed: int = 0, sizes: dict | None = None, cpt_only=None, conditions=(),
             prompt_fn: Callable[[str], str] | None = None, teacher_misread: float = 0.0,
             teacher_error_rate: float = 0.0) -> dict:
  """All records of the world in memory: {file name: [records]} plus "world_stats".

  `conditions` names a part of the table to build the world from (default: all of it);
  `teacher_misread` > 0 gives SFT-3 a teacher that is wrong on part of the table
  (`teacher_errors`); 0 (the default) leaves every file byte-identical to a clean world's."""
  unknown = set(sizes or {}) - set(DEFAULT_SIZES)
  if unknown:
    raise ValueError(f"sizes: unknown keys {sorted(unknown)}; known: {sorted(DEFAULT_SIZES)}")
  sizes = {**DEFAULT_SIZES, **(sizes or {})}
  world = make_world(DEFAULT_CPT_ONLY if cpt_only is None else tuple(cpt_only),
                     sub_table(conditions) if conditions else CONDITIONS)
  prompt_fn = prompt_fn or citrus_prompt

  def rng(part):
    return random.Random(f"clinic_world/{seed}/{part}")

  held, seen = set(), set()
  out = {"test": held_out_items(world, rng("test"), sizes["test"], "test", held)}
  out["dev"] = held_out_items(world, rng("dev"), sizes["dev"], "dev", held)
  r = rng("rl")
  out["rl_questions"] = [rl_item(world, c, r, prompt_fn, item_id=f"rl-{i:04d}") for i, c in
                         enumerate(train_cases(world, r, sizes["rl_questions"], held, seen))]
  r = rng("sft3")
  cases = train_cases(world, r, sizes["sft3"], held, seen)
  argue, misread = [None] * len(cases), []
  if teacher_misread > 0:
    argue, misread = teacher_errors(world, rng("teacher"), cases, teacher_misread,
                                    teacher_error_rate)
  out["sft3"] = [open_item(world, c, r, prompt_fn, item_id=f"sft3-{i:04d}", argue=a)
                 for i, (c, a) in enumerate(zip(cases, argue))]
  out["cpt"] = clinic_texts.cpt_docs(world, rng("cpt"), sizes["cpt"], held)
  for stage in ("sft1", "sft2"):
    out[stage] = clinic_texts.instruction_records(world, rng(stage), sizes[stage], stage, held)
  for label in ("sft1", "sft2", "sft3", "rl_questions"):
    _check_no_leak(world, label, out[label])
  out["world_stats"] = _stats(world, out, seed, sizes)
  if teacher_misread > 0:
    out["world_stats"]["teacher"] = {
        "misread": teacher_misread, "error_rate": teacher_error_rate, "conditions": misread,
        "sft3_chats_wrong": sum(a is not None for a in argue)}
  return out


def _stats(world: World, out: dict, seed: int, sizes: dict) -> dict:
  def count(items, key):
    values = sorted({x[key] for x in items})
    return {v: sum(x[key] == v for x in items) for v in values}

  lengths = [len(x["question"]) + len(x["target"]) for x in out["sft3"]]
  cpt_text = " ".join(d["text"] for d in out["cpt"]).lower()
  return {
      "seed": seed, "sizes": sizes, "n_conditions": len(world.conditions),
      "conditions": list(world.conditions),
      "cpt_only": list(world.cpt_only),
      "records": {k: len(v) for k, v in out.items()},
      "test_groups": count(out["test"], "group"), "dev_groups": count(out["dev"], "group"),
      "test_answer_idx": count(out["test"], "answer_idx"),
      "rl_groups": count(out["rl_questions"], "group"), "sft3_modes": count(out["sft3"], "mode"),
      "sft1_tasks": count(out["sft1"], "task"), "sft2_tasks": count(out["sft2"], "task"),
      "sft3_question_plus_target_chars": {"mean": round(sum(lengths) / max(1, len(lengths)), 1),
                                          "max": max(lengths, default=0)},
      "distinct_train_cases": len({(x["answer"], frozenset(x["findings"]))
                                   for x in out["sft3"] + out["rl_questions"]}),
      "cpt_only_mentions_in_cpt": {n: cpt_text.count(n.lower()) for n in world.cpt_only},
  }


def build_world(out_dir: str, *, seed: int = 0, sizes: dict | None = None, cpt_only=None,
                conditions=(), prompt_fn: Callable[[str], str] | None = None,
                teacher_misread: float = 0.0, teacher_error_rate: float = 0.0
                ) -> dict[str, str]:
  """Writes the world's JSONL files and world_stats.json under out_dir; returns their paths."""
  data = generate(seed=seed, sizes=sizes, cpt_only=cpt_only, conditions=conditions,
                  prompt_fn=prompt_fn, teacher_misread=teacher_misread,
                  teacher_error_rate=teacher_error_rate)
  os.makedirs(out_dir, exist_ok=True)
  paths = {}
  for name in FILES:
    paths[name] = os.path.join(out_dir, f"{name}.jsonl")
    with open(paths[name], "w", encoding="utf-8") as f:
      for rec in data[name]:
        f.write(json.dumps(rec, ensure_ascii=False) + "\n")
  paths["world_stats"] = os.path.join(out_dir, "world_stats.json")
  with open(paths["world_stats"], "w", encoding="utf-8") as f:
    json.dump(data["world_stats"], f, indent=2, sort_keys=True)
    f.write("\n")
  return paths
