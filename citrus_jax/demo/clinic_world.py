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
The CPT documents and SFT-1/2 instruction records are written by clinic_texts.py.
"""
import dataclasses
import itertools
import json
import math
import os
import random
import re
from typing import Callable

from citrus_jax.demo.clinic_conditions import CONDITIONS
from citrus_jax.demo.clinic_conditions import Condition
from citrus_jax.demo.clinic_conditions import DEFAULT_CPT_ONLY
from citrus_jax.demo.clinic_conditions import FEMALE_FINDINGS
from citrus_jax.demo.clinic_conditions import NONSPECIFIC
from citrus_jax.demo.clinic_conditions import NORMAL_FINDINGS
from citrus_jax.demo.clinic_conditions import sub_table

CATEGORIES = ("history", "symptoms", "signs", "tests")
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
_EXAM_SENTENCES = {"an unremarkable physical examination": "Physical examination is unremarkable.",
                   "a normal neurological examination": "The neurological examination is normal."}
_EPONYMS = ("Graves", "Bell", "Crohn", "Guillain", "Henoch", "Addison", "Cushing", "Lyme",
            "Hodgkin")


def citrus_prompt(question: str) -> str:
  """A Citrus-style stage-3 user prompt (the project's exact template lives in eval/prompts.py)."""
  return ("You are tasked with addressing a medical examination question. Please carefully read "
          "the question, provide a detailed thought process, and then present your final answer."
          "\n\n"
          f"<Question>\n{question}\n</Question>\n\nPlease answer in the format: <think> your "
          "reasoning </think> <answer> your final answer </answer>")


# ------------------------------------------------------------------------------------------ world
@dataclasses.dataclass(frozen=True)
class World:
  conditions: dict[str, Condition]  # table order
  category: dict[str, str]  # finding -> "history" | "symptoms" | "signs" | "tests"
  having: dict[str, tuple[str, ...]]  # finding -> conditions that list it
  excluders: dict[str, frozenset]  # condition -> findings that rule it out
  cpt_only: tuple[str, ...]
  ruled_out: dict[str, frozenset]  # finding -> conditions it rules out
  leaks: tuple[str, ...] = ()  # lower-cased leak_terms(), filled by make_world

  def clean(self, text: str) -> bool:
    """True if `text` names no cpt_only condition (or alias) and none of their own findings."""
    low = text.lower()
    return not any(t in low and re.search(rf"(?<!\w){re.escape(t)}(?!\w)", low)
                   for t in self.leaks)

  def findings(self, name: str) -> tuple[str, ...]:
    c = self.conditions[name]
    return c.history + c.symptoms + c.signs + c.tests

  def trainable(self) -> list[str]:
    return [n for n in self.conditions if n not in self.cpt_only]

  def rivals(self, name: str, *, train: bool) -> list[str]:
    return [n for n in self.conditions[name].lookalikes if not (train and n in self.cpt_only)]


def make_world(cpt_only=DEFAULT_CPT_ONLY, conditions=CONDITIONS) -> World:
  """Indexes the table and checks it; errors name the condition and field."""
  by_name, category, having = {}, {}, {}
  for c in conditions:
    where = f"clinic_conditions.py: condition {c.name!r}"
    if c.name in by_name:
      raise ValueError(f"{where}: duplicate name")
    if c.age_unit not in ("year", "month", "week") or not 0 < c.age[0] <= c.age[1]:
      raise ValueError(f"{where}: bad age {c.age} {c.age_unit}")
    by_name[c.name] = c
    for k in CATEGORIES:
      for f in getattr(c, k):
        if category.setdefault(f, k) != k:
          raise ValueError(f"{where}: field {k!r}: finding {f!r} is already listed as "
                           f"{category[f]!r}")
        having.setdefault(f, []).append(c.name)
    if "an unremarkable physical examination" in c.signs and len(c.signs) > 1:
      raise ValueError(f"{where}: field 'signs': an unremarkable examination must be the only sign")
  for c in conditions:
    where = f"clinic_conditions.py: condition {c.name!r}: field 'lookalikes'"
    bad = [n for n in c.lookalikes if n not in by_name or n == c.name]
    if bad or len(c.lookalikes) < 3:
      raise ValueError(f"{where}: needs >= 3 other conditions of the table, bad: {bad}")
  for name in cpt_only:
    if name not in by_name:
      raise ValueError(f"cpt_only: {name!r} is not a condition of the table")
  table = {f for c in CONDITIONS for k in CATEGORIES for f in getattr(c, k)}
  for f in NONSPECIFIC | FEMALE_FINDINGS | set(NORMAL_FINDINGS):
    if f not in table:
      raise ValueError(f"clinic_conditions.py: NONSPECIFIC/FEMALE_FINDINGS/NORMAL_FINDINGS: "
                       f"unknown finding {f!r}")
  signs = {f for f, k in category.items() if k == "signs" and f not in NORMAL_FINDINGS}
  contradicts = {f: signs if v is None else set(v) for f, v in NORMAL_FINDINGS.items()}
  excluders = {}
  for c in conditions:
    own = set(c.history + c.symptoms + c.signs + c.tests)
    for f in own & set(contradicts):
      if own & contradicts[f]:
        raise ValueError(f"clinic_conditions.py: condition {c.name!r}: {f!r} contradicts "
                         f"{sorted(own & contradicts[f])}")
    excluders[c.name] = frozenset(f for f in category if f not in own and f not in NONSPECIFIC and
                                  (f not in contradicts or own & contradicts[f]))
  ruled_out = {f: frozenset(n for n in by_name if f in excluders[n]) for f in category}
  world = World(by_name, category, {f: tuple(v) for f, v in having.items()}, excluders,
                tuple(cpt_only), ruled_out)
  world = dataclasses.replace(world, leaks=tuple(t.lower() for t in leak_terms(world)))
  for name in world.trainable():
    if len(world.rivals(name, train=True)) < 3:
      raise ValueError(f"cpt_only={cpt_only}: {name!r} keeps fewer than 3 trainable look-alikes")
  return world


def consistent(world: World, findings) -> list[str]:
  """Conditions that no finding rules out (see `World.excluders`)."""
  out = set().union(*(world.ruled_out[f] for f in findings))
  return [n for n in world.conditions if n not in out]


def leak_terms(world: World) -> list[str]:
  """Names, aliases and own findings of the cpt_only conditions: none may appear in SFT/RL data.

  A finding counts as their own when only cpt_only conditions list it and it is not part of a
  longer finding of a trainable condition ("elevated troponin" vs "a mildly elevated troponin").
  """
  held = set(world.cpt_only)
  trainable = [f for f, names in world.having.items() if not set(names) <= held]
  terms = []
  for name in world.cpt_only:
    terms += [name, *world.conditions[name].aliases]
    terms += [f for f in world.findings(name) if set(world.having[f]) <= held and
              not any(f.lower() in g.lower() for g in trainable)]
  return terms


# ------------------------------------------------------------------------------------------ cases
@dataclasses.dataclass(frozen=True)
class Case:
  condition: str
  findings: tuple[str, ...]  # table order
  rivals: tuple[str, ...]  # the look-alikes it is built to rule out
  mode: str  # "unique" or "shared"

  @property
  def key(self) -> tuple[str, frozenset]:
    return (self.condition, frozenset(self.findings))


def sample_case(world: World, rng: random.Random, name: str, rivals, mode: str,
                tries: int = 20) -> Case | None:
  """A decisive case of `name` against `rivals` (see the module docstring), or None."""
  own = world.findings(name)
  listed = set().union(*(world.findings(r) for r in rivals))
  pool = [f for f in own if mode == "unique" or f in listed]
  unique = [f for f in pool if all(f in world.excluders[r] for r in rivals)]
  if mode == "unique" and not unique:
    return None
  for _ in range(tries):
    chosen = [rng.choice(unique)] if mode == "unique" else []
    order = list(rivals)
    rng.shuffle(order)
    for r in order:  # every rival must be ruled out by some finding
      if not world.excluders[r].intersection(chosen):
        options = [f for f in pool if f in world.excluders[r] and f not in chosen]
        if not options:
          break
        chosen.append(rng.choice(options))
    else:
      extra = [f for f in pool if f not in chosen]
      rng.shuffle(extra)
      complaints = [f for f in extra if world.category[f] == "symptoms" and f not in NONSPECIFIC]
      if complaints and not any(world.category[f] == "symptoms" and f not in NONSPECIFIC
                                for f in chosen):
        chosen.append(complaints[0])  # a real chief complaint
      chosen += [f for f in extra if f not in chosen][:max(0, rng.randint(4, 6) - len(chosen))]
      for f in extra:  # at least three specific findings, so the case has substance
        if sum(x not in NONSPECIFIC for x in chosen) >= 3:
          break
        if f not in chosen and f not in NONSPECIFIC:
          chosen.append(f)
      for other in consistent(world, chosen):  # rule out the rest of the table too
        if other != name and not world.excluders[other].intersection(chosen):
          options = [f for f in pool if f in world.excluders[other]]
          if options:
            chosen.append(rng.choice(options))
      specific = sum(f not in NONSPECIFIC for f in chosen)
      if consistent(world, chosen) == [name] and specific >= 3 and len(chosen) <= 7:
        return Case(name, tuple(f for f in own if f in chosen), tuple(rivals), mode)
  return None


def draw_case(world: World, rng: random.Random, name: str, mode: str, *, train: bool,
              n_rivals: int = 3, avoid=frozenset(), prefer_new=frozenset(), tries: int = 12):
  """A case of `name` whose key is not in `avoid`, new to `prefer_new` when possible."""
  pool, fallback = world.rivals(name, train=train), None
  for _ in range(tries):
    case = sample_case(world, rng, name, rng.sample(pool, min(n_rivals, len(pool))), mode, tries=4)
    if case is None or case.key in avoid:
      continue
    if case.key not in prefer_new:
      return case
    fallback = fallback or case
  return fallback


# ------------------------------------------------------------------------------------------ text
def _join(items) -> str:
  """"a, b and c"; with an Oxford comma when an item has its own "and"."""
  items = list(items)
  if len(items) == 1:
    return items[0]
  if not any(" and " in x for x in items):
    return ", ".join(items[:-1]) + " and " + items[-1]
  return f"{items[0]}, along with {items[1]}" if len(items) == 2 else \
      ", ".join(items[:-1]) + ", and " + items[-1]


def mid(name: str) -> str:
  """A condition name as written mid-sentence."""
  return name if name.startswith(_EPONYMS) or name[1:2].isupper() else name[0].lower() + name[1:]


def _cap(text: str) -> str:
  return text[0].upper() + text[1:]


@dataclasses.dataclass(frozen=True)
class Patient:
  age: int
  unit: str
  female: bool

  def describe(self) -> str:
    article = "an" if str(self.age).startswith("8") or self.age in (11, 18) else "a"
    child = self.unit != "year" or self.age < 18
    noun = ("girl" if child else "woman") if self.female else ("boy" if child else "man")
    return f"{article} {self.age}-{self.unit}-old {noun}"

  @property
  def child(self) -> bool:
    return self.unit != "year" or self.age < 13


def make_patient(world: World, case: Case, rng: random.Random, others=()) -> Patient:
  c = world.conditions[case.condition]
  lo, hi = c.age
  female_only = c.sex == "female" or any(f in FEMALE_FINDINGS for f in case.findings)
  if female_only and c.age_unit == "year":
    lo, hi = max(lo, 14), max(min(hi, 48), max(lo, 14))
  if female_only or c.sex == "male":
    female = female_only
  elif any(world.conditions[o].sex == "female" for o in others):
    female = rng.random() < 0.8  # so sex alone rarely rules out a female-only look-alike
  else:
    female = rng.random() < 0.5
  return Patient(rng.randint(lo, hi), c.age_unit, female)


def render_vignette(world: World, case: Case, patient: Patient, rng: random.Random) -> str:
  """The case as a short clinical vignette, without the question sentence."""
  by = {k: [f for f in case.findings if world.category[f] == k] for k in CATEGORIES}
  for v in by.values():
    rng.shuffle(v)
  who = _cap(patient.describe())
  pos = "her" if patient.female else "his"
  if by["symptoms"] and patient.child:
    opener = rng.choice([f"{who} is brought in by {pos} parents with {{}}.",
                         f"{who} is brought to the emergency department with {{}}."])
  elif by["symptoms"]:
    opener = rng.choice([f"{who} presents with {{}}.", f"{who} reports {{}}.",
                         f"{who} comes to the clinic because of {{}}.",
                         f"{who} is seen in the emergency department with {{}}."])
  else:
    opener = rng.choice([f"{who} is evaluated.", f"{who} attends for assessment."])
  parts = [opener.format(_join(by["symptoms"])) if by["symptoms"] else opener]
  templates = {"history": ("History is notable for {}.", "Relevant history includes {}."),
               "signs": ("On examination there is {}.", "Examination shows {}.",
                         "Examination reveals {}."),
               "tests": ("Investigations show {}.", "Work-up reveals {}.", "Tests show {}.")}
  for k in ("history", "signs", "tests"):
    normal_exam = [f for f in by[k] if f in _EXAM_SENTENCES]
    rest = [f for f in by[k] if f not in _EXAM_SENTENCES]
    if rest:
      parts.append(rng.choice(templates[k]).format(_join(rest)))
    parts += [_EXAM_SENTENCES[f] for f in normal_exam]
  return " ".join(parts)


def _telling(world: World, findings) -> str:
  """The most telling finding: abnormal before normal, history last, then the rarest."""
  return min(findings, key=lambda f: (f in NORMAL_FINDINGS, world.category[f] == "history",
                                      len(world.having[f]), f))


def reasoning(world: World, case: Case, candidates) -> str:
  """An expert-pathway chain: a leading impression, the findings that support it, the
  differential (the impression and its look-alikes among the candidates), each look-alike set
  aside by the most telling finding it cannot explain, the conclusion.

  Written so that a small model can learn it in minutes: one fixed phrasing, and every list in
  the impression's own order (its findings in the table's order, its look-alikes in the order of
  its look-alike list), so producing a line means looking things up in the question, never
  copying the question's word order.
  """
  gold = case.condition
  lookalikes = list(world.conditions[gold].lookalikes)
  rivals = sorted((c for c in candidates if c != gold), key=lambda c: (
      lookalikes.index(c) if c in lookalikes else len(lookalikes), c))
  lines = [f"The findings point to {mid(gold)}.",
           f"Supporting findings: {_join(case.findings)}.",
           f"The differential includes {_join(mid(c) for c in [gold, *rivals])}."]
  for c in rivals:
    f = _telling(world, [x for x in case.findings if x in world.excluders[c]])
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
              *, item_id: str, max_chars: int = MAX_CHARS) -> dict:
  """An SFT-3 / RL record: open question, gold name, Citrus prompt and expert-pathway target.

  `candidates` (the gold and its rivals, in option order) is what a prompt listing the options
  shows. Renders up to three surface forms of the question and keeps the first with question +
  target <= max_chars (else the shortest), so examples fit a short context.
  """
  candidates = option_order(case, rng)
  target = cot_target(reasoning(world, case, candidates), case.condition)
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
          "candidates": candidates}


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
def _cycle(rng: random.Random, names):
  """Endless round-robin over `names` in a seeded order."""
  names = list(names)
  rng.shuffle(names)
  return itertools.cycle(names)


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
             prompt_fn: Callable[[str], str] | None = None) -> dict:
  """All records of the world in memory: {file name: [records]} plus "world_stats".

  `conditions` names a part of the table to build the world from (default: all of it)."""
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
  out["sft3"] = [open_item(world, c, r, prompt_fn, item_id=f"sft3-{i:04d}") for i, c in
                 enumerate(train_cases(world, r, sizes["sft3"], held, seen))]
  from citrus_jax.demo import clinic_texts  # builds on this module's world and cases
  out["cpt"] = clinic_texts.cpt_docs(world, rng("cpt"), sizes["cpt"], held)
  for stage in ("sft1", "sft2"):
    out[stage] = clinic_texts.instruction_records(world, rng(stage), sizes[stage], stage, held)
  for label in ("sft1", "sft2", "sft3", "rl_questions"):
    _check_no_leak(world, label, out[label])
  out["world_stats"] = _stats(world, out, seed, sizes)
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
                conditions=(), prompt_fn: Callable[[str], str] | None = None) -> dict[str, str]:
  """Writes the world's JSONL files and world_stats.json under out_dir; returns their paths."""
  data = generate(seed=seed, sizes=sizes, cpt_only=cpt_only, conditions=conditions,
                  prompt_fn=prompt_fn)
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
