"""The clinic world's text corpora: CPT documents (textbook paragraphs, case reports, comparisons,
finding notes) and SFT-1/2 instruction records, all derived from the condition table.

A TEACHING TOY, NOT CLINICAL GUIDANCE. The world and its cases live in clinic_cases.py; the
SFT-3/RL/MCQ records in clinic_world.py, which calls `cpt_docs` and `instruction_records` when it
builds the files.
"""
import json
import random

from citrus_jax.demo.clinic_conditions import NONSPECIFIC, NORMAL_FINDINGS, Condition
from citrus_jax.demo.clinic_cases import (Case, World, _cap, _cycle, _join, _telling, draw_case,
                                          make_patient, mid, render_vignette)

# ------------------------------------------------------------------------------------------ CPT
def _some(rng: random.Random, items, low: int = 1) -> list:
  items = list(items)
  return rng.sample(items, rng.randint(min(low, len(items)), len(items))) if items else []


def _population(c: Condition) -> str:
  unit = c.age_unit + "s"
  who = {"female": "women"}.get(c.sex, "people")
  if c.age_unit != "year":
    who = "infants"
  elif c.age[1] <= 15:
    who = "children"
  return f"{who} aged {c.age[0]} to {c.age[1]} {unit}"


def textbook_doc(world: World, rng: random.Random, name: str) -> str:
  c = world.conditions[name]
  intro = rng.choice([f"{name} is {c.summary}.", f"Overview. {name} is {c.summary}."])
  intro += " " + rng.choice(["It typically affects {}.", "It is most often seen in {}."]).format(
      _population(c))
  sections = []
  if c.symptoms:
    sections.append(rng.choice(["Patients usually report {}.", "Typical symptoms include {}.",
                                "The usual presentation is with {}."]).format(
                                    _join(_some(rng, c.symptoms, 2))))
  if c.history:
    sections.append(rng.choice(["Relevant history includes {}.", "Risk factors include {}."])
                    .format(_join(_some(rng, c.history))))
  if c.signs:
    sections.append(rng.choice(["Examination may show {}.", "Signs include {}."]).format(
        _join(_some(rng, c.signs))))
  if c.tests:
    sections.append(rng.choice(["Investigations show {}.", "The diagnosis is supported by {}."])
                    .format(_join(_some(rng, c.tests))))
  rivals = list(c.lookalikes)
  sections.append(rng.choice(["It must be distinguished from {}.", "The differential diagnosis "
                              "includes {}."]).format(_join(mid(r) for r in rivals)) + " " +
                  " ".join(c.lookalikes[r] for r in rng.sample(rivals, rng.randint(1, 2))))
  sections.append(rng.choice(["Management: {}.", "First-line treatment: {}."]).format(
      "; ".join(_some(rng, c.management, 2))))
  body = [s for s in sections if rng.random() < 0.85] or sections[:1]
  title = rng.choice([f"{name}\n\n", f"{name}. ", ""])
  return title + " ".join([intro] + body)


def case_report_doc(world: World, rng: random.Random, case: Case) -> str:
  c, patient = world.conditions[case.condition], make_patient(world, case, rng, case.rivals)
  parts = [rng.choice(["Case report.", "Clinical case.", "Case:"]),
           render_vignette(world, case, patient, rng)]
  for r in rng.sample(case.rivals, rng.randint(1, 2)):
    f = _telling(world, [x for x in case.findings if x in world.excluders[r]])
    parts.append(f"{_cap(mid(r))} was considered, but {f} did not fit.")
  parts.append(rng.choice(["The diagnosis was {}.", "A diagnosis of {} was made.",
                           "The final diagnosis was {}."]).format(mid(case.condition)))
  parts.append(f"Treatment: {c.management[0]}. " + rng.choice(
      ["The patient recovered well.", "Symptoms improved over the following days.",
       "Follow-up was arranged."]))
  return " ".join(parts)


def compare_doc(world: World, rng: random.Random, name: str, other: str) -> str:
  shared = [f for f in world.findings(name) if f in world.findings(other)]
  own = [f for f in world.findings(name) if f in world.excluders[other]]
  theirs = [f for f in world.findings(other) if f in world.excluders[name]]
  parts = [f"{name} versus {mid(other)}."]
  parts.append(f"Both can present with {_join(shared)}." if shared else
               "They share few typical features.")
  if own:
    parts.append(f"Pointing to {mid(name)}: {_join(_some(rng, own)[:4])}.")
  if theirs:
    parts.append(f"Pointing to {mid(other)}: {_join(_some(rng, theirs)[:4])}.")
  parts.append(world.conditions[name].lookalikes[other])
  return " ".join(parts)


def finding_doc(world: World, rng: random.Random, finding: str) -> str:
  names = world.having[finding]
  if len(names) == 1:
    others = [f for f in world.findings(names[0]) if f != finding]
    return (f"{_cap(finding)} is a characteristic finding of {mid(names[0])}. Other features of "
            f"{mid(names[0])} include {_join(_some(rng, others)[:4])}.")
  parts = [f"{_cap(finding)} is seen in several conditions: {_join(mid(n) for n in names)}."]
  for n in rng.sample(names, min(4, len(names))):
    others = [f for f in world.findings(n) if f != finding]
    parts.append(f"In {mid(n)} it comes with {_join(rng.sample(others, min(2, len(others))))}.")
  return " ".join(parts)


def cpt_docs(world: World, rng: random.Random, n: int, held_out: set) -> list[dict]:
  """Textbook paragraphs, case reports, comparisons and finding notes over ALL conditions."""
  names, findings, docs = _cycle(rng, world.conditions), sorted(world.having), []
  while len(docs) < n:
    name, kind = next(names), rng.random()
    if kind < 0.35:
      text = textbook_doc(world, rng, name)
    elif kind < 0.7:
      mode = rng.choice(["shared", "unique"])
      case = (draw_case(world, rng, name, mode, train=False, avoid=held_out) or
              draw_case(world, rng, name, "unique", train=False, avoid=held_out))
      text = case_report_doc(world, rng, case)
    elif kind < 0.85:
      text = compare_doc(world, rng, name, rng.choice(list(world.conditions[name].lookalikes)))
    else:
      text = finding_doc(world, rng, rng.choice(findings))
    docs.append({"text": text})
  return docs


# ------------------------------------------------------------------------------------------ SFT-1/2
def _listing(rng: random.Random, items) -> str:
  items = list(items)
  if rng.random() < 0.3:
    return "\n".join(f"- {x}" for x in items)
  return _join(items) + "."


def sft1_record(world: World, rng: random.Random, name: str) -> tuple[str, str, str] | None:
  """(task, instruction, response) of a general instruction about a trainable condition."""
  c, m = world.conditions[name], mid(name)
  rivals = world.rivals(name, train=True)
  task = rng.choice(["symptoms", "signs", "tests", "history", "treatment", "define", "specialty",
                     "lookalikes", "tell_apart", "which_condition", "is_typical", "format"])
  if task in ("symptoms", "signs", "tests", "history"):
    items = getattr(c, task)
    if not items:
      return None
    ask = {"symptoms": ["What are the typical symptoms of {}?", "List the main symptoms of {}."],
           "signs": ["What examination findings are typical of {}?",
                     "Which signs would you look for in {}?"],
           "tests": ["Which investigation results support a diagnosis of {}?",
                     "What do the tests show in {}?"],
           "history": ["Which history or risk factors point towards {}?",
                       "What risk factors are associated with {}?"]}[task]
    lead = {"symptoms": "Typical symptoms of {} are:",
            "signs": "Examination in {} typically shows:",
            "tests": "Results that support {} are:",
            "history": "History pointing to {} includes:"}
    return task, rng.choice(ask).format(m), f"{lead[task].format(m)} {_listing(rng, items)}"
  if task == "treatment":
    steps = "\n".join(f"{i + 1}. {_cap(x)}" for i, x in enumerate(c.management))
    ask = rng.choice(["List first-line treatments for {}.", "How is {} managed?"]).format(m)
    return task, ask, steps
  if task == "define":
    ask = rng.choice(["What is {}?", "Define {}.", "Briefly describe {}."]).format(m)
    return task, ask, f"{name} is {c.summary}."
  if task == "specialty":
    return task, f"Which specialty usually manages {m}?", f"{name} belongs to {c.specialty}."
  if task == "lookalikes":
    return task, rng.choice(["Which conditions can mimic {}?", "What is the differential diagnosis "
                             "of {}?"]).format(m), f"Conditions that can look like {m} include " \
        f"{_join(mid(r) for r in rivals)}."
  if task == "tell_apart":
    r = rng.choice(rivals)
    return task, rng.choice([f"How can {m} be told apart from {mid(r)}?",
                             f"What distinguishes {mid(r)} from {m}?"]), c.lookalikes[r]
  if task == "which_condition":
    own = [f for f in world.findings(name) if world.having[f] == (name,)
           and f not in NONSPECIFIC and f not in NORMAL_FINDINGS]
    if not own:
      return None
    f = rng.choice(own)
    return task, rng.choice([f"Which condition is suggested by {f}?",
                             f"{_cap(f)} is a classic clue to which condition?"]), \
        f"{_cap(f)} suggests {m}."
  if task == "is_typical":
    if rng.random() < 0.5:
      f = rng.choice(world.findings(name))
      return task, f"Is {f} a typical feature of {m}?", \
          f"Yes. {_cap(f)} is a typical feature of {m}."
    r = rng.choice(rivals)
    options = [f for f in world.findings(r)
               if f in world.excluders[name] and f not in NORMAL_FINDINGS]
    if not options:
      return None
    f = rng.choice(options)
    where = [mid(n) for n in world.having[f] if n not in world.cpt_only][:3]
    return task, f"Is {f} a typical feature of {m}?", \
        f"No. {_cap(f)} is not a typical feature of {m}; it suggests {_join(where)}."
  items = _some(rng, world.findings(name), 3)[:5]  # "format": general instruction following
  kind = rng.randrange(3)
  if kind == 0:
    return task, f"Rewrite these findings as one sentence: {'; '.join(items)}.", \
        f"The patient has {_join(items)}."
  if kind == 1:
    return task, f"How many findings are in this list? {'; '.join(items)}.", \
        f"There are {len(items)} findings."
  return task, f"Sort these findings alphabetically: {'; '.join(items)}.", \
      "\n".join(f"- {x}" for x in sorted(items, key=str.lower))


def sft2_record(world: World, rng: random.Random, name: str, held_out: set):
  """(task, instruction, response) of a multi-step instruction about a trainable condition."""
  c, m = world.conditions[name], mid(name)
  task = rng.choice(["compare", "differential", "plan", "sort", "json", "rank"])
  if task in ("compare", "sort"):
    r = rng.choice(world.rivals(name, train=True))
    shared = [f for f in world.findings(name) if f in world.findings(r)]
    own = [f for f in world.findings(name) if f in world.excluders[r]]
    theirs = [f for f in world.findings(r) if f in world.excluders[name]]
    if not (own and theirs):
      return None
    if task == "compare":
      answer = (f"Shared features: {_join(shared) if shared else 'few typical features'}.\n"
                f"Pointing to {m}: {_join(own[:5])}.\nPointing to {mid(r)}: {_join(theirs[:5])}.\n"
                f"Key distinction: {c.lookalikes[r]}")
      ask = rng.choice([f"Compare {m} and {mid(r)}: what do they share, and which features point "
                        "to each?", f"Contrast {m} with {mid(r)} in three parts: shared features, "
                        "features of each, and the key distinction."])
      return task, ask, answer
    a, b, s = rng.sample(own, min(3, len(own))), rng.sample(theirs, min(3, len(theirs))), shared[:2]
    mixed = a + b + s
    rng.shuffle(mixed)
    answer = f"Support {m}: {_join(a)}.\nPoint to {mid(r)}: {_join(b)}."
    answer += f"\nSeen in both: {_join(s)}." if s else ""
    return task, f"Which of these findings support {m} and which point to {mid(r)} instead? " \
        f"{'; '.join(mixed)}.", answer
  if task == "plan":
    abnormal = [f for f in c.tests + c.signs if f not in NORMAL_FINDINGS]
    confirm = _join(abnormal[:2] or c.symptoms[:2])
    return task, (f"A patient has just been diagnosed with {m}. In three numbered steps, say what "
                  "confirms it, the first-line treatment, and how you would explain the "
                  "condition."), \
        (f"1. Confirm: look for {confirm}.\n2. Treat: {'; '.join(c.management[:2])}.\n"
         f"3. Explain: {name} is {c.summary}.")
  if task == "json":
    obj = {"condition": name, "symptoms": list(c.symptoms), "first_line": c.management[0]}
    return task, (f"Give a JSON object with keys \"condition\", \"symptoms\" and "
                  f"\"first_line\" for {m}."), json.dumps(obj)
  case = draw_case(world, rng, name, rng.choice(["shared", "unique"]), train=True, n_rivals=2,
                   avoid=held_out) or draw_case(world, rng, name, "unique", train=True,
                                                n_rivals=2, avoid=held_out)
  if case is None:
    return None
  who = make_patient(world, case, rng, case.rivals).describe()
  facts = _join(case.findings)
  if task == "rank":
    def score(n):
      return sum(f in world.findings(n) for f in case.findings)
    order = sorted([name, *case.rivals], key=lambda n: -score(n))
    shown = [name, *case.rivals]
    rng.shuffle(shown)
    lines = [f"{i + 1}. {n}: explains {score(n)} of {len(case.findings)} findings."
             for i, n in enumerate(order)]
    return task, (f"Rank {_join(mid(n) for n in shown)} by how well they explain these findings in "
                  f"{who}: {facts}."), "\n".join(lines)
  lines = [f"1. {name}: explains all of the findings."]
  for i, r in enumerate(case.rivals):
    s = [f for f in case.findings if f in world.findings(r)][:2]
    f = _telling(world, [x for x in case.findings if x in world.excluders[r]])
    lines.append(f"{i + 2}. {r}: " + (f"shares {_join(s)} but " if s else "is a look-alike but ")
                 + f"does not explain {f}.")
  tests = [t for t in c.tests if t not in case.findings and t not in NORMAL_FINDINGS]
  best = [t for t in tests if all(t in world.excluders[r] for r in case.rivals)]
  if not (best or tests):
    return None
  lines.append(f"Test: {rng.choice(best or tests)} would support {m} over the others.")
  return "differential", (f"{_cap(who)} has {facts}. List three differential diagnoses and one "
                          "test to distinguish them."), "\n".join(lines)


def _records(world: World, rng: random.Random, n: int, make, label: str) -> list[dict]:
  out, seen, names_it = [], set(), _cycle(rng, world.trainable())
  for _ in range(60 * n):
    if len(out) == n:
      return out
    rec = make(next(names_it))
    if rec and rec[1] not in seen and world.clean(rec[1] + " " + rec[2]):
      seen.add(rec[1])
      out.append({"input": rec[1], "target": rec[2], "task": rec[0]})
  raise RuntimeError(f"{label}: only {len(out)} distinct records of {n} requested")


def instruction_records(world: World, rng: random.Random, n: int, stage: str,
                        held_out: set) -> list[dict]:
  """`n` distinct SFT-1 (general) or SFT-2 (complex) records {input, target, task}."""
  if stage == "sft1":
    return _records(world, rng, n, lambda name: sft1_record(world, rng, name), stage)
  return _records(world, rng, n, lambda name: sft2_record(world, rng, name, held_out), stage)
