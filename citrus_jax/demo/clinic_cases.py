"""The clinic world and its cases: the condition table as a World, decisive cases drawn from it,
patients and rendered vignettes.

A TEACHING TOY, NOT CLINICAL GUIDANCE. clinic_world.py (SFT-3/RL/MCQ records, the build) and
clinic_texts.py (CPT documents, SFT-1/2 records) both build on this module.
"""
import dataclasses
import itertools
import random
import re

from citrus_jax.demo.clinic_conditions import CONDITIONS
from citrus_jax.demo.clinic_conditions import Condition
from citrus_jax.demo.clinic_conditions import DEFAULT_CPT_ONLY
from citrus_jax.demo.clinic_conditions import FEMALE_FINDINGS
from citrus_jax.demo.clinic_conditions import NONSPECIFIC
from citrus_jax.demo.clinic_conditions import NORMAL_FINDINGS

CATEGORIES = ("history", "symptoms", "signs", "tests")
_EXAM_SENTENCES = {"an unremarkable physical examination": "Physical examination is unremarkable.",
                   "a normal neurological examination": "The neurological examination is normal."}
_EPONYMS = ("Graves", "Bell", "Crohn", "Guillain", "Henoch", "Addison", "Cushing", "Lyme",
            "Hodgkin")


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


def _cycle(rng: random.Random, names):
  """Endless round-robin over `names` in a seeded order."""
  names = list(names)
  rng.shuffle(names)
  return itertools.cycle(names)
