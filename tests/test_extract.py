"""Answer-span extraction and rule-based option mapping on tricky model outputs."""
import pytest

from citrus_jax.eval.benchmarks import MCQItem
from citrus_jax.eval.extract import extract_answer_span, map_to_option, score, summarize

UTI = {"A": "Ampicillin", "B": "Ceftriaxone", "C": "Doxycycline", "D": "Nitrofurantoin"}
YNM = {"A": "yes", "B": "no", "C": "maybe"}
TEN = {"A": "Tyrosinase", "B": "Homogentisate oxidase", "C": "Hexosaminidase A",
       "D": "Glucocerebrosidase", "E": "Galactokinase", "F": "Alpha-galactosidase",
       "G": "Arylsulfatase A", "H": "Sphingomyelinase", "I": "Phenylalanine hydroxylase",
       "J": "Cystathionine synthase"}
GENO = {"A": "bb bb", "B": "Bb BB", "C": "Bb Bb", "D": "BB bb"}  # only case tells them apart
HEP = {"A": "Past hepatitis B infection", "B": "Acute hepatitis A", "C": "Acute hepatitis B",
       "D": "Hepatitis D superinfection"}
ARROWS = {"A": "↓ ↓ ↓", "B": "↑ ↓ normal", "C": "↓ ↑ ↑", "D": "↓ ↑ ↓"}
ZH = {"A": "局灶性手部肌张力障碍", "B": "腕管综合征", "C": "De Quervain腱鞘炎", "D": "特发性震颤",
      "E": "肌肉劳损"}
HTN = {"A": "Hypertension", "B": "Pulmonary hypertension", "C": "Asthma", "D": "Heart failure"}
BUGS = {"A": "Staphylococcus aureus", "B": "Escherichia coli", "C": "Klebsiella",
        "D": "Proteus", "E": "Pseudomonas"}
AGE = {"A": "A 45-year-old man with hypertension", "B": "A 30-year-old woman",
       "C": "A child", "D": "An infant"}

# (model output, options, expected letter or None)
CASES = [
    # Letter forms.
    ("<answer>B</answer>", UTI, "B"),
    ("<answer>(B)</answer>", UTI, "B"),
    ("<answer>B.</answer>", UTI, "B"),
    ("<answer>B)</answer>", UTI, "B"),
    ("<answer>\nB. Ceftriaxone\n</answer>", UTI, "B"),
    ("<answer>Option B</answer>", UTI, "B"),
    ("<answer>option (b)</answer>", UTI, "B"),
    ("<answer>The answer is B</answer>", UTI, "B"),
    ("<answer>Answer: D</answer>", UTI, "D"),
    ("<answer>**C**</answer>", UTI, "C"),
    ("<answer>（Ｄ）</answer>", UTI, "D"),  # full-width
    ("<answer>\\boxed{C}</answer>", UTI, "C"),
    # Letters in prose: the explicit, last statement wins.
    ("<answer>I think B is wrong, the answer is C.</answer>", UTI, "C"),
    ("<answer>The answer is B. Wait, actually the answer is D.</answer>", UTI, "D"),
    ("<answer>Therefore, D is correct.</answer>", UTI, "D"),
    ("<answer>I would choose D because it is safe in pregnancy.</answer>", UTI, "D"),
    ("<answer>The correct option is (D) Nitrofurantoin</answer>", UTI, "D"),
    ("<answer>the answer is c, because doxycycline...</answer>", UTI, "C"),
    ("<answer>The answer is C or D</answer>", UTI, None),  # hedge
    # Letter and text must agree.
    ("<answer>Nitrofurantoin (D)</answer>", UTI, "D"),
    ("<answer>B. Doxycycline</answer>", UTI, None),
    # Option text only.
    ("<answer>nitrofurantoin</answer>", UTI, "D"),
    ("<answer>The best treatment is nitrofurantoin.</answer>", UTI, "D"),
    ("<answer>Ceftriaxone or doxycycline</answer>", UTI, None),
    ("<answer>Pulmonary hypertension</answer>", HTN, "B"),  # longest of nested matches
    ("<answer>He has pulmonary hypertension.</answer>", HTN, "B"),
    # "A" as an article must not be read as option A.
    ("<answer>A 45-year-old woman with cystitis in pregnancy should receive nitrofurantoin."
     "</answer>", UTI, "D"),
    ("<answer>The answer is A lesion of the urethra</answer>", UTI, None),
    ("<answer>A 30-year-old woman</answer>", AGE, "B"),
    ("<answer>A</answer>", AGE, "A"),
    # "E. coli" is an organism, not option E.
    ("<answer>E. coli</answer>", BUGS, "B"),
    ("The organism is gram-negative, so the answer is E. coli.", BUGS, "B"),
    ("<answer>S. aureus</answer>", BUGS, "A"),
    ("<answer>C. difficile colitis (B)</answer>",
     {"A": "Cryptosporidiosis", "B": "C. difficile colitis", "C": "Bacillus cereus infection"}, "B"),
    # Letters beyond E, never letters that are not options.
    ("<answer>The answer is (I)</answer>", TEN, "I"),
    ("<answer>J. Cystathionine synthase</answer>", TEN, "J"),
    ("<answer>I</answer>", UTI, None),
    ("<answer>E</answer>", UTI, None),
    ("<answer>The answer is F</answer>", UTI, None),
    ("<answer>Phenylalanine hydroxylase deficiency</answer>", TEN, "I"),
    # Options that differ only in case, in a trailing "A", or are symbols.
    ("<answer>Bb Bb</answer>", GENO, "C"),
    ("<answer>BB bb (D)</answer>", GENO, "D"),
    ("<answer>Acute hepatitis A</answer>", HEP, "B"),
    ("<answer>C. ↓ ↑ ↑</answer>", ARROWS, "C"),
    # Several answer blocks, unclosed block, no tags.
    ("<answer>A</answer> on reflection <answer>C</answer>", UTI, "C"),
    ("<think>Pregnant, so avoid doxycycline.</think>\n<answer>D", UTI, "D"),
    ("<think>Maybe A? No.</think>\nThe answer is D.", UTI, "D"),
    ("A. Ampicillin: resistance\nB. Ceftriaxone: too broad\nC. Doxycycline: no\n"
     "D. Nitrofurantoin: first line", UTI, None),
    ("Considering resistance and safety in pregnancy, the answer is D.", UTI, "D"),
    ("<answer></answer>", UTI, None),
    # PubMedQA yes/no/maybe.
    ("<answer>Yes</answer>", YNM, "A"),
    ("<answer>No, it does not.</answer>", YNM, "B"),
    ("<answer>maybe</answer>", YNM, "C"),
    ("<answer>The answer is yes.</answer>", YNM, "A"),
    # Chinese.
    ("<answer>最可能的诊断是腕管综合征。</answer>", ZH, "B"),
    ("<answer>答案：B. 腕管综合征</answer>", ZH, "B"),
    ("<answer>答案是D</answer>", ZH, "D"),
    ("<answer>选项E</answer>", ZH, "E"),
    ("<answer>故选C</answer>", ZH, "C"),
    ("<answer>不选A，选D</answer>", ZH, "D"),
    ("<answer>De Quervain腱鞘炎</answer>", ZH, "C"),
]


@pytest.mark.parametrize("output,options,expected", CASES)
def test_map_to_option(output, options, expected):
  assert map_to_option(extract_answer_span(output), options) == expected


def test_table_is_large_enough():
  assert len(CASES) >= 30


def test_extract_answer_span():
  assert extract_answer_span("<think>x</think><answer> A </answer> and <answer>C</answer>") == "C"
  assert extract_answer_span("<answer>A</answer><answer>  </answer>") == "A"
  assert extract_answer_span("<think>x</think>\n<ANSWER>\nB. Cef") == "B. Cef"
  assert extract_answer_span("<answer>A</answer> tail <answer>D") == "D"
  assert extract_answer_span("no tags at all") == "no tags at all"
  assert extract_answer_span("<think>A or B?</think> C") == "C"
  assert extract_answer_span("<think>unfinished thinking") == "<think>unfinished thinking"
  assert extract_answer_span("") is None and extract_answer_span(None) is None
  assert extract_answer_span("<answer></answer>") is None


def test_map_is_deterministic_and_never_invents_letters():
  for out, opts, _ in CASES:
    span = extract_answer_span(out)
    first = map_to_option(span, opts)
    assert first == map_to_option(span, dict(opts))
    assert first is None or first in opts
  assert map_to_option("", UTI) is None and map_to_option("B", {}) is None


def test_score_and_summarize():
  item = MCQItem(id="1", question="q", options=UTI, gold="D")
  outs = ["<think>...</think><answer>D. Nitrofurantoin</answer>", "<answer>B</answer>",
          "<answer>no idea</answer>"]
  scores = [score(o, item) for o in outs]
  assert [s["pred"] for s in scores] == ["D", "B", None]
  assert [s["correct"] for s in scores] == [True, False, False]
  assert scores[0]["span"] == "D. Nitrofurantoin" and score(None, item)["span"] == ""
  summary = summarize(scores)
  assert summary["n"] == 3 and summary["answered"] == 2 and summary["no_answer"] == 1
  assert summary["acc"] == pytest.approx(1 / 3) and summary["valid_acc"] == pytest.approx(1 / 2)


# ------------------------------------------------------------------------------------------------
# Outputs without <answer> tags: only what the output commits to (eval/untagged.py).

import json  # noqa: E402
import pathlib  # noqa: E402

from citrus_jax.eval import untagged  # noqa: E402
from citrus_jax.eval.extract import map_output  # noqa: E402

FIX = pathlib.Path(__file__).resolve().parent / "fixtures" / "extract"
DECIDE = {"A": "Decide.", "B": "Wait and see", "C": "Refer", "D": "Admit"}
IONS = {"A": "Cl-.", "B": "Br-.", "C": "F-.", "D": "I-.", "E": "ClO4-."}


def _fixture(name):
  with open(FIX / name, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_issue_cases_without_tags():
  # Thinking is never searched for option texts: not "Decide.", not "I-.".
  assert map_output("<think>I cannot decide between these.</think>", DECIDE) is None
  assert map_output("<think>I recall that iodide is trapped. I need the others.</think>", IONS) is None
  assert map_output("I think the symporter carries it, but I am not certain.", IONS) is None
  # The old whole-output search did take them (what this fixes).
  assert map_to_option(extract_answer_span("<think>I cannot decide between these.</think>"),
                       DECIDE) == "A"
  # Corrections and eliminations.
  assert map_output("Not A; it is B.", UTI) == "B"
  assert map_output("Both B and C are wrong, so D", UTI) == "D"
  assert map_output("Not ampicillin; it is nitrofurantoin.", UTI) == "D"
  assert map_output("It's not ceftriaxone, but nitrofurantoin.", UTI) == "D"
  # ... also inside an answer block, where they used to give no answer.
  assert map_output("<answer>Not A; it is B.</answer>", UTI) == "B"
  assert map_output("<answer>Both B and C are wrong, so D</answer>", UTI) == "D"


@pytest.mark.parametrize("output,expected", [
    ("The answer is C?", None),  # a question
    ("Is the answer B? Or could it be D?", None),
    ("Doxycycline is contraindicated in pregnancy.", None),  # negated mention only
    ("It could be nitrofurantoin.", None),  # hedged
    ("Nitrofurantoin is the first-line treatment in pregnancy.", "D"),  # short, committed
    ("Long reasoning. About ampicillin. And resistance. Nitrofurantoin is first-line.", None),
    ("Resistance is high.\n\nD. Nitrofurantoin", "D"),  # final line
    ("A. Ampicillin: no\nB. Ceftriaxone: no\nC. Doxycycline: no\nD. Nitrofurantoin", None),
    ("The answer is B. Wait, the answer is D.", "D"),  # the last statement wins
    ("<think>The answer is B.</think>", None),  # thinking only
    ("reasoning about it </think>\nC", "C"),  # template opened the think
    ("The best treatment is nitrofurantoin for 5 days.", "D"),
    ("So ampicillin is not appropriate.", None),  # cue, but the fragment negates
])
def test_untagged_commitment(output, expected):
  assert map_output(output, UTI) == expected


def test_distinctive_option_texts():
  assert untagged.distinctive("Nitrofurantoin") and untagged.distinctive("Pulmonary hypertension")
  assert untagged.distinctive("腕管综合征")
  for text in ("Decide.", "I-.", "None of the above", "All of the above", "yes", "Refer"):
    assert not untagged.distinctive(text), text


def test_no_answer_fixture_has_no_false_positives():
  rows = _fixture("no_answer.jsonl")
  assert len(rows) >= 50
  hits = [(r["id"], map_output(r["output"], r["options"])) for r in rows]
  assert [h for h in hits if h[1] is not None] == []


def test_answered_fixture_recall():
  rows = _fixture("answered.jsonl")
  assert len(rows) >= 50
  preds = [map_output(r["output"], r["options"]) for r in rows]
  wrong = [(r["id"], p) for r, p in zip(rows, preds) if p is not None and p != r["gold"]]
  assert wrong == []  # never a wrong letter
  recall = sum(p == r["gold"] for r, p in zip(rows, preds)) / len(rows)
  assert recall >= 0.9, recall  # 72/75 measured when the fixture was written


def test_score_reads_untagged_outputs_strictly():
  item = MCQItem(id="1", question="q", options=DECIDE, gold="A")
  assert score("<think>I cannot decide between these.</think>", item)["pred"] is None
  assert score("<answer>Decide.</answer>", item)["pred"] == "A"
  assert score("Decide.", item)["pred"] == "A"
