"""N-gram decontamination: normalisation, hits against a brute-force reference, the per-benchmark
report, dropping contaminated examples byte for byte, boilerplate pruning, the CLI."""
import json
import os
import random

import pytest

from citrus_jax.synth import decontam

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "synth")
BENCH = os.path.join(FIXTURES, "bench_medqa.jsonl")
TRAIN = os.path.join(FIXTURES, "train_sft.jsonl")


def test_words_normalise_case_punctuation_width_and_cjk():
  assert decontam.words("The 45-Year-Old, naïve ＡＢＣ; 发热咳嗽!") == \
      ["the", "45", "year", "old", "naïve", "abc", "发", "热", "咳", "嗽"]
  assert decontam.words("dry_skin") == ["dry", "skin"]


def test_report_per_benchmark_and_drop_keeps_other_lines_byte_for_byte(tmp_path):
  benches = decontam.load_benchmarks([f"medqa:{BENCH}"])
  report = decontam.decontaminate([TRAIN], benches, drop_to=str(tmp_path / "clean"))
  b = report["benchmarks"]["medqa"]
  # Item 0 shares 13-grams with t1 (case/punctuation differ); item 2 (10 words) is inside t3;
  # item 1 is only paraphrased by t2; item 3 has 4 words, too short to check.
  assert (b["items"], b["items_hit"], b["too_short"]) == (4, 2, 1)
  assert {e["benchmark_id"] for e in b["examples"]} == {"00000", "00002"}
  ex = next(e for e in b["examples"] if e["benchmark_id"] == "00000")
  assert ex["train"] == f"{TRAIN}:1" and len(ex["ngram"].split()) == 13
  assert "fatigue" in ex["ngram"] or "woman" in ex["ngram"]
  t = report["train"][TRAIN]
  assert (t["examples"], t["contaminated"], t["lines"], t["dropped"]) == (4, 2, [1, 3], 2)
  lines = open(TRAIN, encoding="utf-8").readlines()
  assert open(t["written"], encoding="utf-8").readlines() == [lines[1], lines[3]]
  text = decontam.format_report(report)
  assert "medqa: 2/4 items hit" in text and "2/4 examples contaminated" in text
  with pytest.raises(ValueError, match="overwrite"):
    decontam.decontaminate([TRAIN], benches, drop_to=FIXTURES)


def _naive(items, texts, n, min_words, min_overlap):
  """Brute force: item i hits text j if an n-gram (or a whole short item) occurs in both, and
  at least min_overlap of the item's n-grams do."""
  def grams(ws, k):
    return {tuple(ws[i:i + k]) for i in range(len(ws) - k + 1)}
  hits = set()
  for i, item in enumerate(items):
    iw = decontam.words(item)
    keys = grams(iw, n) if len(iw) >= n else ({tuple(iw)} if len(iw) >= min_words else set())
    for j, text in enumerate(texts):
      tw = decontam.words(text)
      shared = [k for k in keys if k in grams(tw, len(k))]
      if shared and len(shared) >= min_overlap * len(keys):
        hits.add((i, j))
  return hits


@pytest.mark.parametrize("min_overlap", [0.0, 0.5])
def test_matches_a_brute_force_reference(min_overlap):
  rng = random.Random(0)
  vocab = [f"w{k}" for k in range(5)]
  sentence = lambda k: " ".join(rng.choice(vocab) for _ in range(k))
  items = [sentence(rng.randint(2, 14)) for _ in range(40)]
  texts = []
  for _ in range(60):  # random text, sometimes with a span copied from an item
    parts = [sentence(rng.randint(0, 10))]
    if rng.random() < 0.5:
      src = decontam.words(rng.choice(items))
      a = rng.randint(0, len(src) - 1)
      parts.append(" ".join(src[a:a + rng.randint(3, 12)]).upper() + ",")
    parts.append(sentence(rng.randint(0, 10)))
    texts.append(" ".join(parts))
  index = decontam.BenchmarkIndex(n=6, min_words=4)
  index.add("b", [(str(i), t) for i, t in enumerate(items)])
  got = {(i, j) for j, t in enumerate(texts) for i in index.match(t, min_overlap)}
  want = _naive(items, texts, 6, 4, min_overlap)
  assert got == want and len(want) >= 8
  if min_overlap:
    assert len(want) < len(_naive(items, texts, 6, 4, 0.0))


def test_boilerplate_pruning_and_options(tmp_path):
  boiler = "which of the following is the most likely diagnosis in this patient today"
  items = [(f"q{k}", f"case {k} {'x' * (k + 1)} has findings. {boiler}") for k in range(3)]
  train = tmp_path / "train.txt"
  train.write_text(f"{boiler.upper()}?\nunrelated line\n")
  r = decontam.decontaminate([str(train)], {"b": items})
  assert r["benchmarks"]["b"]["items_hit"] == 3 and r["train"][str(train)]["lines"] == [1]
  r = decontam.decontaminate([str(train)], {"b": items}, max_item_frequency=2)
  assert r["benchmarks"]["b"]["items_hit"] == 0 and r["pruned_ngrams"] > 0
  r = decontam.decontaminate([str(train)], {"b": items}, min_overlap=0.6)  # stock phrase only
  assert r["benchmarks"]["b"]["items_hit"] == 0
  train.write_text(items[1][1] + "\n")  # a verbatim copy passes any overlap threshold
  r = decontam.decontaminate([str(train)], {"b": items}, min_overlap=1.0)
  assert r["benchmarks"]["b"]["items_hit"] == 1

  from citrus_jax.eval.benchmarks import MCQItem
  long_option = "a thirteen word option text that a training example might copy in full here"
  item = MCQItem("m", "Short question?", {"A": long_option, "B": "no"}, "A")
  arr = tmp_path / "train.json"
  arr.write_text(json.dumps([{"text": f"copied: {long_option}"}, {"text": "clean"}]))
  assert decontam.decontaminate([str(arr)], {"b": [item]})["benchmarks"]["b"]["items_hit"] == 0
  r = decontam.decontaminate([str(arr)], {"b": [item]}, include_options=True,
                             drop_to=str(tmp_path / "out"))
  assert r["benchmarks"]["b"]["items_hit"] == 1
  assert json.load(open(tmp_path / "out" / "train.json")) == [{"text": "clean"}]


def test_cli_and_bad_input(tmp_path):
  report_path = tmp_path / "r.json"
  decontam.main(["--train", TRAIN, "--benchmark", f"auto:{BENCH}", "--report", str(report_path),
                 "--drop_to", str(tmp_path / "clean")])
  report = json.load(open(report_path))
  assert report["benchmarks"]["medqa"]["items_hit"] == 2
  assert os.path.exists(tmp_path / "clean" / "train_sft.jsonl")
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"input": "ok"}\n{"input": \n')
  with pytest.raises(ValueError, match=r"bad\.jsonl:2: field '<json>': invalid JSON"):
    decontam.decontaminate([str(bad)], {"b": [("q", "one two three")]})
  with pytest.raises(ValueError, match="expected KIND:PATH"):
    decontam.load_benchmarks([BENCH])
  with pytest.raises(FileNotFoundError, match="training file not found"):
    decontam.decontaminate([str(tmp_path / "missing.jsonl")], {"b": []})
