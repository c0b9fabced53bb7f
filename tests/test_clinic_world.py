"""Tests of the clinic demo world: table sanity, determinism, split hygiene, MCQ and CoT formats."""
import collections
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

from citrus_jax.demo import clinic_conditions as cc
from citrus_jax.demo import clinic_world as cw

SMALL = {"cpt": 120, "sft1": 80, "sft2": 60, "sft3": 80, "rl_questions": 30, "dev": 20, "test": 40}
TRAIN_FILES = ("sft1", "sft2", "sft3", "rl_questions")
TABLE = {c.name: c for c in cc.CONDITIONS}


def _findings(name):
  c = TABLE[name]
  return c.history + c.symptoms + c.signs + c.tests


def _rules_out(finding, name):
  """The world's exclusion rule, written from the table definitions (not from the generator)."""
  own = set(_findings(name))
  if finding in own or finding in cc.NONSPECIFIC:
    return False
  if finding not in cc.NORMAL_FINDINGS:
    return True
  contradicting = cc.NORMAL_FINDINGS[finding]
  if contradicting is None:  # every abnormal sign of the table
    return any(f not in cc.NORMAL_FINDINGS for f in TABLE[name].signs)
  return bool(own & set(contradicting))


def _read(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _listed(items):
  """Findings as the generator lists them in running text: "a, b and c" (Oxford comma when an
  item has its own "and")."""
  if len(items) == 1:
    return items[0]
  if not any(" and " in x for x in items):
    return ", ".join(items[:-1]) + " and " + items[-1]
  return f"{items[0]}, along with {items[1]}" if len(items) == 2 else (
      ", ".join(items[:-1]) + ", and " + items[-1])


def _stem(question):
  return question.rsplit(". ", 1)[0]


@pytest.fixture(scope="module")
def world_files(tmp_path_factory):
  paths = cw.build_world(str(tmp_path_factory.mktemp("clinic")), seed=0)
  return paths, {name: _read(paths[name]) for name in cw.FILES}


# ------------------------------------------------------------------------------------------ table
def test_table_has_enough_conditions_and_real_lookalikes():
  assert len(TABLE) == len(cc.CONDITIONS) >= 40
  specialties = {c.specialty for c in cc.CONDITIONS}
  for needed in ("cardiology", "pulmonology", "gastroenterology", "neurology", "endocrinology",
                 "nephrology", "infectious disease", "hematology", "rheumatology", "dermatology",
                 "psychiatry", "obstetrics", "gynecology", "pediatrics"):
    assert needed in specialties
  for c in cc.CONDITIONS:
    assert len(c.lookalikes) >= 3, c.name
    assert all(n in TABLE and n != c.name for n in c.lookalikes), c.name
    assert all(len(text) > 30 for text in c.lookalikes.values()), c.name
    assert c.symptoms and c.management and c.summary, c.name
    assert len(_findings(c.name)) >= 5, c.name


def test_findings_are_structured_and_shared():
  category = {}
  for c in cc.CONDITIONS:
    for k in cw.CATEGORIES:
      for f in getattr(c, k):
        assert category.setdefault(f, k) == k, f"{f!r} is both {category[f]} and {k}"
  for f in cc.NONSPECIFIC | cc.FEMALE_FINDINGS | set(cc.NORMAL_FINDINGS):
    assert f in category, f
  for f, contradicting in cc.NORMAL_FINDINGS.items():
    assert all(x in category for x in contradicting or ()), f
  having = collections.Counter(f for c in cc.CONDITIONS for f in _findings(c.name))
  shared_specific = [f for f, n in having.items() if n > 1 and f not in cc.NONSPECIFIC]
  assert len(shared_specific) >= 60
  world = cw.make_world()
  for name in TABLE:  # the generator's index agrees with the table
    assert world.findings(name) == _findings(name)
    assert all(name in world.having[f] for f in _findings(name))


def test_cpt_only_configuration_is_checked():
  assert 3 <= len(cc.DEFAULT_CPT_ONLY) <= 5
  with pytest.raises(ValueError, match="not a condition"):
    cw.make_world(("Not a disease",))
  with pytest.raises(ValueError, match="fewer than 3 trainable look-alikes"):
    cw.make_world(("Croup",))  # Epiglottitis would keep only two look-alikes
  with pytest.raises(ValueError, match="unknown keys"):
    cw.generate(sizes={"tests": 3})


# ------------------------------------------------------------------------------------------ files
def test_files_sizes_and_stats(world_files):
  paths, data = world_files
  assert set(paths) == set(cw.FILES) | {"world_stats"}
  for name in cw.FILES:
    assert len(data[name]) == cw.DEFAULT_SIZES[name], name
  assert all(set(d) == {"text"} and d["text"] for d in data["cpt"])
  for name in ("sft1", "sft2"):
    assert all(r["input"] and r["target"] for r in data[name])
    assert len({r["input"] for r in data[name]}) == len(data[name])  # no duplicate instructions
  with open(paths["world_stats"]) as f:
    stats = json.load(f)
  assert stats["records"] == {k: len(v) for k, v in data.items()}
  assert stats["cpt_only"] == list(cc.DEFAULT_CPT_ONLY)


def _digests(out_dir):
  return {n: hashlib.sha256(open(os.path.join(out_dir, n), "rb").read()).hexdigest()
          for n in sorted(os.listdir(out_dir))}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
  a, b, c = (str(tmp_path / x) for x in "abc")
  cw.build_world(a, seed=1, sizes=SMALL)
  cw.build_world(b, seed=1, sizes=SMALL)
  cw.build_world(c, seed=2, sizes=SMALL)
  assert _digests(a) == _digests(b)
  differ = [n for n, h in _digests(c).items() if h != _digests(a)[n]]
  assert {f"{n}.jsonl" for n in cw.FILES} <= set(differ)
  # A fresh interpreter with another hash seed (set/dict-order bugs) gives the same bytes.
  code = ("import sys; from citrus_jax.demo import clinic_world as cw; "
          f"cw.build_world(sys.argv[1], seed=1, sizes={SMALL!r})")
  env = {**os.environ, "PYTHONHASHSEED": "12345"}
  subprocess.run([sys.executable, "-c", code, str(tmp_path / "d")], check=True, env=env)
  assert _digests(str(tmp_path / "d")) == _digests(a)


def test_splits_are_disjoint_by_case_and_text(world_files):
  _, data = world_files
  keys = {name: {(r["answer"], frozenset(r["findings"])) for r in data[name]}
          for name in ("test", "dev", "sft3", "rl_questions")}
  train = keys["sft3"] | keys["rl_questions"]
  assert not keys["test"] & keys["dev"]
  assert not (keys["test"] | keys["dev"]) & train
  assert len(keys["test"]) == len(data["test"]) and len(keys["dev"]) == len(data["dev"])
  stems = {name: {_stem(r["question"]) for r in data[name]} for name in keys}
  assert not stems["test"] & stems["dev"]
  assert not (stems["test"] | stems["dev"]) & (stems["sft3"] | stems["rl_questions"])
  cpt_text = "\n".join(d["text"] for d in data["cpt"])
  for r in data["test"] + data["dev"]:
    assert _stem(r["question"]) not in cpt_text
  # SFT-2 tasks that list a patient's findings never list a held-out finding set.
  facts = set()
  for r in data["sft2"]:
    m = re.search(r" has (.+)\. List three| explain these findings in [^:]+: (.+)\.$", r["input"])
    if m:
      facts.add(m.group(1) or m.group(2))
  assert len(facts) > 50
  for r in data["test"] + data["dev"]:
    assert _listed(r["findings"]) not in facts, r["id"]


# ------------------------------------------------------------------------------------------ MCQs
def test_mcq_layout_gold_and_distractors(world_files):
  _, data = world_files
  for r in data["test"] + data["dev"]:
    assert {"id", "question", "options", "answer_idx", "answer", "meta_info", "group"} <= set(r)
    assert list(r["options"]) == ["A", "B", "C", "D"]
    assert len(set(r["options"].values())) == 4
    gold = r["answer"]
    assert r["options"][r["answer_idx"]] == gold
    assert set(r["findings"]) <= set(_findings(gold))  # the gold condition generated the vignette
    distractors = [v for k, v in r["options"].items() if k != r["answer_idx"]]
    assert all(d in TABLE[gold].lookalikes for d in distractors)
    assert r["group"] in cw.GROUPS
    assert r["question"].endswith(cw.MCQ_ASK)
  assert len({r["id"] for r in data["test"] + data["dev"]}) == len(data["test"]) + len(data["dev"])


def test_gold_letter_is_balanced(world_files):
  _, data = world_files
  letters = collections.Counter(r["answer_idx"] for r in data["test"] + data["dev"])
  n = len(data["test"]) + len(data["dev"])
  for letter in "ABCD":  # expected n/4 = 75, sd ~7.5: a fixed letter would be far outside
    assert abs(letters[letter] - n / 4) < 6 * (n * 3 / 16) ** 0.5, letters


def test_every_item_is_decisive_and_shared_only_items_have_no_unique_finding(world_files):
  _, data = world_files
  for r in data["test"] + data["dev"]:
    gold, options = r["answer"], list(r["options"].values())
    for option in options:  # only the gold is consistent with ALL findings
      ruled_out = any(_rules_out(f, option) for f in r["findings"])
      assert ruled_out == (option != gold), (r["id"], option)
    distractors = [o for o in options if o != gold]
    if r["group"] == "shared_only":
      for f in r["findings"]:
        assert any(f in _findings(d) for d in distractors), (r["id"], f)
    if r["group"] == "unique_finding":
      assert any(all(f not in _findings(d) for d in distractors) for f in r["findings"]), r["id"]
  groups = collections.Counter(r["group"] for r in data["test"])
  assert groups["shared_only"] >= 0.3 * len(data["test"])
  assert groups["unique_finding"] > 0 and groups["cpt_only"] > 0


# ------------------------------------------------------------------------------------------ cpt_only
def _leak_terms(cpt_only):
  """Names, aliases and own findings of the held-out conditions (lower case)."""
  held = set(cpt_only)
  trainable_findings = {f for n in TABLE if n not in held for f in _findings(n)}
  terms = []
  for name in cpt_only:
    terms += [name, *TABLE[name].aliases]
    terms += [f for f in _findings(name) if f not in trainable_findings and
              not any(f.lower() in g.lower() for g in trainable_findings)]
  return [t.lower() for t in terms]


def _leak(record, terms):
  text = json.dumps(record).lower()
  return next((t for t in terms  # substring first (fast), then word boundaries
               if t in text and re.search(rf"(?<!\w){re.escape(t)}(?!\w)", text)), None)


def test_cpt_only_conditions_stay_out_of_sft_and_rl(world_files):
  _, data = world_files
  terms = _leak_terms(cc.DEFAULT_CPT_ONLY)
  assert len(terms) > 20
  for name in TRAIN_FILES:
    for i, r in enumerate(data[name]):
      assert _leak(r, terms) is None, f"{name}[{i}] mentions {_leak(r, terms)!r}"
  cpt_text = " ".join(d["text"] for d in data["cpt"]).lower()
  test_gold = collections.Counter(r["answer"] for r in data["test"])
  for name in cc.DEFAULT_CPT_ONLY:
    assert cpt_text.count(name.lower()) >= 20, name
    assert test_gold[name] > 0, name
  for r in data["test"] + data["dev"]:
    assert (r["answer"] in cc.DEFAULT_CPT_ONLY) == (r["group"] == "cpt_only"), r["id"]


def test_another_cpt_only_choice_is_respected():
  held = ("Aortic dissection", "Gout", "Bipolar disorder")
  data = cw.generate(seed=5, sizes=SMALL, cpt_only=held)
  terms = _leak_terms(held)
  for name in TRAIN_FILES:
    assert not any(_leak(r, terms) for r in data[name]), name
  assert {r["answer"] for r in data["test"] if r["group"] == "cpt_only"} == set(held)


def test_a_part_of_the_table_is_a_closed_smaller_world():
  """configs/demo.py:small's world: every item, option and differential stays inside the part,
  and each case is decisive among the part's conditions."""
  from configs import demo
  part, held = demo.SMALL_WORLD, demo.SMALL_CPT_ONLY
  data = cw.generate(seed=0, sizes=SMALL, conditions=part, cpt_only=held)
  lookalikes = {c.name: set(c.lookalikes) for c in cc.sub_table(part)}
  assert data["world_stats"]["conditions"] == [n for n in TABLE if n in part]
  outside = [t.lower() for n in TABLE if n not in part for t in (n, *TABLE[n].aliases)]
  for name in ("test", "dev", "sft3", "rl_questions"):
    for r in data[name]:
      assert r["answer"] in part, (name, r["id"])
      assert set(r.get("options", {}).values()) | set(r.get("candidates", ())) <= set(part)
      fits = [n for n in part if not any(_rules_out(f, n) for f in r["findings"])]
      assert fits == [r["answer"]], (name, r["id"], fits)  # decisive among the part
      assert _leak(r, outside) is None, (name, r["id"], _leak(r, outside))
  for r in data["test"]:
    distractors = set(r["options"].values()) - {r["answer"]}
    assert distractors <= lookalikes[r["answer"]], r["id"]
  assert all(len(v) >= 3 and v <= set(part) for v in lookalikes.values())
  assert {r["answer"] for r in data["test"] if r["group"] == "cpt_only"} == set(held)
  terms = _leak_terms(held)
  for name in TRAIN_FILES:
    assert not any(_leak(r, terms) for r in data[name]), name
  with pytest.raises(ValueError, match="not conditions of clinic_conditions.py"):
    cw.generate(sizes=SMALL, conditions=part + ("Not a disease",))
  with pytest.raises(ValueError, match="needs >= 3 other conditions"):  # Asthma keeps COPD only
    cw.generate(sizes=SMALL, conditions=("Asthma", "Chronic obstructive pulmonary disease",
                                         "Psoriasis", "Atopic dermatitis"), cpt_only=())


# ------------------------------------------------------------------------------------------ CoT
COT = re.compile(r"<think>\n(.+)\n</think>\n<answer>\n(.+)\n</answer>", re.DOTALL)


def test_sft3_targets_are_well_formed(world_files):
  _, data = world_files
  lengths = []
  for r in data["sft3"] + data["rl_questions"]:
    m = COT.fullmatch(r["target"])
    assert m, r["id"]
    think, answer = m.groups()
    assert answer == r["answer"] and answer in TABLE
    assert "<think>" not in think and "<answer>" not in think
    assert answer.lower() in think.lower()  # the chain names its conclusion
    for rival in r["rivals"]:  # ... and discusses every look-alike it rules out
      assert rival in TABLE[answer].lookalikes and rival.lower() in think.lower()
    # The pathway: an impression, its supporting findings, the differential (the impression and
    # its look-alikes among the candidates, in the order of its look-alike list), one line per
    # look-alike set aside by a finding of the case that rules it out, the conclusion.
    lines = think.split("\n")
    assert sorted(r["candidates"]) == sorted([answer, *r["rivals"]])
    assert lines[0] == f"The findings point to {cw.mid(answer)}."
    assert lines[1] == f"Supporting findings: {cw._join(r['findings'])}."
    order = [c for c in TABLE[answer].lookalikes if c in r["rivals"]]
    assert lines[2] == f"The differential includes {cw._join(cw.mid(c) for c in [answer, *order])}."
    for rival, line in zip(order, lines[3:-1], strict=True):
      finding = re.fullmatch(rf"{re.escape(cw.mid(rival))} does not fit (.+)\.", line,
                             re.IGNORECASE).group(1)
      assert finding in r["findings"] and _rules_out(finding, rival), (rival, finding)
    assert lines[-1] == f"So the diagnosis is {cw.mid(answer)}."
    assert r["input"] == cw.citrus_prompt(r["question"])
    lengths.append(len(r["question"]) + len(r["target"]))
  assert sum(lengths) / len(lengths) < 1500 and max(lengths) < 2200
  for r in data["rl_questions"]:
    assert r["options"][r["answer_idx"]] == r["answer"]


def test_prompt_fn_is_used():
  data = cw.generate(seed=0, sizes={**SMALL, "cpt": 1}, prompt_fn=lambda q: f"Q: {q}\nA:")
  assert all(r["input"] == f"Q: {r['question']}\nA:" for r in data["sft3"])


def test_a_misreading_teacher_argues_look_alikes_and_leaves_the_answer_key_alone():
  sizes = {**SMALL, "cpt": 1, "sft3": 400}
  clean = cw.generate(seed=0, sizes=sizes)
  noisy = cw.generate(seed=0, sizes=sizes, teacher_misread=0.3, teacher_error_rate=0.8)
  for name in ("rl_questions", "dev", "test", "sft1", "sft2"):  # the answer key is the same
    assert noisy[name] == clean[name], name
  teacher = noisy["world_stats"]["teacher"]
  misread = set(teacher["conditions"])
  assert len(misread) == round(0.3 * len(set(TABLE) - set(cc.DEFAULT_CPT_ONLY)))
  wrong = 0
  for c, n in zip(clean["sft3"], noisy["sft3"], strict=True):
    assert {k: v for k, v in n.items() if k not in ("target", "teacher_answer")} == \
        {k: v for k, v in c.items() if k != "target"}
    if "teacher_answer" not in n:
      assert n["target"] == c["target"]
      continue
    wrong += 1
    y = n["teacher_answer"]
    assert n["answer"] in misread and y in n["rivals"]
    # ... the closest look-alike of the case, argued all the way to the answer
    assert y == min(n["rivals"], key=list(TABLE[n["answer"]].lookalikes).index)
    think, answer = COT.fullmatch(n["target"]).groups()
    assert answer == y and think.startswith(f"The findings point to {cw.mid(y)}.")
    assert think.endswith(f"So the diagnosis is {cw.mid(y)}.")
    assert f"{cw.mid(n['answer'])} does not fit".lower() in think.lower()
  on_misread = sum(c["answer"] in misread for c in clean["sft3"])
  assert wrong == teacher["sft3_chats_wrong"] and 0.65 * on_misread < wrong < 0.95 * on_misread
  with pytest.raises(ValueError, match="must lie in"):
    cw.generate(seed=0, sizes=sizes, teacher_misread=1.5)
