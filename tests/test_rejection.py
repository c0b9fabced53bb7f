"""Rejection sampling: question records, verification, pair construction and its filters (canned
responses), then the sampling path with a tiny random model, and the written pairs training a
couple of CPO+SimPO steps."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from citrus_jax import chat
from citrus_jax import tokenizer as tk
from citrus_jax.data import preference as pref_data
from citrus_jax.eval import prompts
from citrus_jax.rollout import rejection, rejection_cli
from citrus_jax.eval.benchmarks import MCQItem
from citrus_jax.model import transformer
from citrus_jax.model.config import get_preset
from citrus_jax.train import checkpoint
from citrus_jax.train import preference as pref_loss
from citrus_jax.train import step as step_lib

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "rejection")
QUESTIONS = os.path.join(FIXTURES, "questions.jsonl")
CORPUS = os.path.join(os.path.dirname(__file__), "fixtures", "tokenizer", "corpus.txt")

THINK = ("The patient has fever, neck stiffness and photophobia, which suggests meningitis. "
         "Gram-negative diplococci on the lumbar puncture point to Neisseria meningitidis. "
         "Empiric therapy must cover it and cross the blood-brain barrier; a third-generation "
         "cephalosporin does both.")
ZH_THINK = ("患者突发胸骨后压榨性疼痛伴大汗，心电图提示前壁导联ST段抬高，符合急性冠脉闭塞的表现。"
            "心绞痛通常短暂且休息可缓解，心包炎多为广泛导联抬高，主动脉夹层多为撕裂样疼痛。")


def resp(answer, think=THINK):
  return f"<think>\n{think}\n</think>\n<answer>\n{answer}\n</answer>"


@pytest.fixture(scope="module")
def questions():
  return rejection.load_questions(QUESTIONS)


@pytest.fixture(scope="module")
def medqa(questions):
  return questions[1]  # meningitis, gold B (Ceftriaxone), options A-E


def samples_of(q, texts, judge=None, scores=None, reasons=None):
  """Samples verified the way sample_responses does it."""
  out = []
  for i, text in enumerate(texts):
    answer, pred, verdict, method = rejection.verify(q, text, judge)
    out.append(rejection.Sample(i, text, (reasons or {}).get(i, "stop"), answer, pred, verdict,
                                method, None if scores is None else scores[i]))
  return out


# ------------------------------------------------------------------------------------------------
# Question records


def test_question_layouts(questions):
  rl, medqa, text_gold, open_gold, zh = questions
  with open(QUESTIONS, encoding="utf-8") as f:
    raw = json.loads(f.readline())  # a clinic world rl_questions record
  assert (rl.id, rl.gold, rl.gold_text) == (raw["id"], raw["answer_idx"], raw["answer"])
  assert rl.input and rl.question in rl.input  # the clinic world's own prompt is kept
  assert (medqa.id, medqa.gold, medqa.gold_text) == ("q1", "B", "Ceftriaxone")  # no id: index
  assert (text_gold.gold, text_gold.gold_text) == ("B", "Hypothyroidism")  # letter from text
  assert (open_gold.options, open_gold.gold, open_gold.gold_text) == (
      {}, None, "Iron deficiency anemia")
  assert zh.gold == "A" and rejection.language_of(zh.text) == "cjk"
  for q in questions:  # the prompt is the open question: no options
    user = rejection.open_prompt(q)[-1]["content"]
    assert user == prompts.citrus_user_prompt(q.question) and "{Q}" not in user
    assert not any(f"{k}. {v}" in user for k, v in q.options.items())
  item = MCQItem("m1", "Which vitamin?", {"A": "Vitamin A", "B": "Vitamin C"}, "B",
                 context="Scurvy.")
  q = rejection.question_from_record(item)
  assert (q.gold, q.gold_text, q.text) == ("B", "Vitamin C", "Context:\nScurvy.\n\nQuestion:\n"
                                                             "Which vitamin?")
  assert rejection.as_questions([item, questions[1]])[1] is questions[1]


def test_bad_question_records_name_file_line_and_field(tmp_path):
  with pytest.raises(rejection.QuestionError, match=r"bad_questions.jsonl:2: field 'answer_idx'"):
    rejection.load_questions(os.path.join(FIXTURES, "bad_questions.jsonl"))
  cases = [({"question": "Q?"}, "needs the gold"),
           ({"question": "", "answer": "x"}, "field 'question'"),
           ({"question": "Q?", "options": {"A": "x", "B": "y"}, "answer_idx": "A", "answer": "y"},
            "names another option"),
           ({"question": "Q?", "options": {"A": "x", "B": "y"}, "answer": "zzz"}, "matches none"),
           ({"question": "Q?", "options": {"a1": "x"}, "answer_idx": "A"}, "field 'options'")]
  for record, message in cases:
    with pytest.raises(rejection.QuestionError, match=message):
      rejection.question_from_record(record, "f.jsonl:7")
  path = tmp_path / "dup.jsonl"
  path.write_text('{"id": "a", "question": "Q?", "answer": "x"}\n' * 2)
  with pytest.raises(rejection.QuestionError, match="duplicate question ids"):
    rejection.load_questions(str(path))


# ------------------------------------------------------------------------------------------------
# Verification and checks


def test_verify_rule_then_judge(medqa, questions):
  calls = []

  def judge(question, response, gold_text):
    calls.append(response)
    assert question == medqa.text and gold_text == "Ceftriaxone"
    return True if "cephalosporin" in response.split("<answer>")[-1] else None

  texts = [resp("B"), resp("The answer is D."), resp("a third-generation cephalosporin"),
           resp("something else entirely")]
  ss = samples_of(medqa, texts, judge)
  assert [(s.verdict, s.method) for s in ss] == [
      ("correct", "rule"), ("wrong", "rule"), ("correct", "judge"), ("unverified", "none")]
  assert calls == texts[2:]  # only where the rule found no letter
  open_q = questions[3]
  verdicts = [rejection.verify(open_q, resp(a))[2] for a in
              ("Iron deficiency anemia", "The most likely diagnosis is iron-deficiency anemia.",
               "Anemia of chronic disease", "A")]
  assert verdicts == ["correct", "correct", "wrong", "wrong"]
  assert rejection.verify(open_q, "<think>x</think><answer></answer>")[2] == "unverified"


def test_split_response_and_language():
  assert rejection.split_response(resp("B")) == (THINK, "B")
  for bad in ("<think>x</think>", "<think>x<answer>B</answer>", "pre <think>x</think><answer>B"
              "</answer>", "<think>x</think><answer>B</answer> post", "<think>x</think>"
              "<answer> </answer>", "<think>a<think>b</think><answer>B</answer>",
              "<answer>B</answer><think>x</think>"):
    assert rejection.split_response(bad) is None, bad
  assert rejection.language_of(ZH_THINK) == "cjk" and rejection.language_of(THINK) == "latin"
  assert rejection.language_of("ECG 示 ST 段抬高，考虑急性心肌梗死") == "cjk"
  assert rejection.cjk_ratio("") == 0.0


# ------------------------------------------------------------------------------------------------
# Pairs


def test_pairs_chosen_correct_rejected_distinct_wrong_options(medqa):
  texts = [resp("C"), resp("B. Ceftriaxone"), resp("Ceftriaxone"), resp("Doxycycline"),
           resp("Amoxicillin"), resp("E"), resp("The answer is D")]
  ss = samples_of(medqa, texts)
  prompt = rejection.open_prompt(medqa)
  pairs, counts = rejection.build_pairs(medqa, ss, prompt)
  assert len(pairs) == 3 and counts["over_limit"] == 2 and counts["candidates"] == 5
  rejected_preds = [p["meta"]["rejected_pred"] for p in pairs]
  assert len(set(rejected_preds)) == 3 and medqa.gold not in rejected_preds  # C once, not twice
  for p in pairs:
    assert p["chosen"][:-1] == p["rejected"][:-1] == prompt  # shared prompt turns
    assert p["chosen"][-1] == {"role": "assistant", "content": texts[1]}  # first correct sample
    assert p["rejected"][-1]["content"] in texts and p["rejected"][-1]["content"] != texts[1]
    assert medqa.question in p["chosen"][0]["content"] and "{Q}" not in p["chosen"][0]["content"]
    assert rejection.verify(medqa, p["rejected"][-1]["content"])[2] == "wrong"
    prompt_msgs, chosen, rejected = pref_data.split_record(json.loads(json.dumps(p)), "x")
    assert prompt_msgs == prompt and (chosen, rejected) == (p["chosen"][-1]["content"],
                                                            p["rejected"][-1]["content"])
  one, _ = rejection.build_pairs(medqa, ss, prompt, max_pairs_per_question=1)
  assert one == pairs[:1]


def test_each_filter_drops_and_counts(medqa):
  """One valid wrong response, and one (or more) failing each check; a scorer makes a
  low-quality correct response a candidate that `same_answer` drops."""
  texts = {
      "chosen": resp("B"),
      "ok": resp("C"),
      "duplicate": resp("C"),
      "unfinished": resp("D"),
      "format_open": f"<think>\n{THINK}\n</think>\n<answer>\nD",
      "format_trailing": resp("D") + "\nUser: thanks",
      "stray_eot": resp("A", THINK + " <|eot_id|>"),
      "stray_im_start": resp("A", THINK + "\n<|im_start|>user"),
      "stray_placeholder": resp("A", "{Q} " + THINK),
      "stray_pseudo": resp("A", THINK + " <Question>"),
      "short_think": resp("E", "Meningitis; give doxycycline."),
      "language": resp("A", ZH_THINK * 3),
      "too_long": resp("D", THINK * 80),
      "same_answer": resp("Ceftriaxone", THINK + " low"),
  }
  names = list(texts)
  scorer = lambda text: 40.0 if text.endswith("low\n</think>\n<answer>\nCeftriaxone\n</answer>") \
      else 80.0 if rejection.verify(medqa, text)[2] == "correct" else 10.0
  ss = samples_of(medqa, list(texts.values()), scores=[scorer(t) for t in texts.values()],
                  reasons={names.index("unfinished"): "length"})
  pairs, stats = rejection.make_pairs([medqa], [ss])
  assert stats["filtered"] == {"unfinished": 1, "format": 2, "stray_tags": 4, "short_think": 1,
                               "language": 1, "too_long": 1, "same_answer": 1,
                               "duplicate": 1}
  assert stats["pairs"] == 1 and stats["candidate_pairs"] == len(texts) - 1
  assert pairs[0]["chosen"][-1]["content"] == texts["chosen"]
  assert pairs[0]["rejected"][-1]["content"] == texts["ok"]
  assert (pairs[0]["meta"]["chosen_score"], pairs[0]["meta"]["rejected_score"]) == (80.0, 10.0)
  problems = {n: s.problem for n, s in zip(names, ss)}
  assert problems["chosen"] is None and problems["ok"] is None
  assert problems["stray_eot"] == problems["stray_placeholder"] == "stray_tags"
  # min_think_chars is a parameter (the demo's model writes short chains).
  _, loose = rejection.make_pairs([medqa], [ss], min_think_chars=10)
  assert loose["filtered"]["short_think"] == 0 and loose["pairs"] == 2


def test_chosen_selection_with_scores_and_checks(medqa):
  texts = [resp("B", "too short"), resp("B"), resp("Ceftriaxone"), resp("B. Ceftriaxone"),
           resp("C"), resp("D")]
  prompt = rejection.open_prompt(medqa)
  # Unscored: the first correct sample that passes the checks (0 has a short think).
  pairs, _ = rejection.build_pairs(medqa, samples_of(medqa, texts), prompt)
  assert {p["meta"]["chosen_sample"] for p in pairs} == {1}
  # Scored: the highest score >= 60; a wrong response scored >= 60 is never rejected.
  pairs, counts = rejection.build_pairs(
      medqa, samples_of(medqa, texts, scores=[99, 70, 85, 50, 20, 65]), prompt)
  assert {p["meta"]["chosen_sample"] for p in pairs} == {2}
  assert [p["meta"]["rejected_sample"] for p in pairs] == [4]
  assert counts["filtered_same_answer"] == 1  # sample 3, correct but scored 50
  # All correct responses fail a check or score low: no chosen, no pairs.
  _, counts = rejection.build_pairs(
      medqa, samples_of(medqa, texts, scores=[99, 55, 59, 50, 20, 10]), prompt)
  assert counts["no_valid_chosen"] == 1 and counts["kept"] == 0
  _, counts = rejection.build_pairs(medqa, samples_of(medqa, [resp("C"), resp("D")]), prompt)
  assert counts["no_correct"] == 1


def test_unverified_only_rejected_when_asked(medqa):
  texts = [resp("B"), resp("no idea at all"), resp("C")]
  prompt = rejection.open_prompt(medqa)
  pairs, _ = rejection.build_pairs(medqa, samples_of(medqa, texts), prompt)
  assert [p["meta"]["rejected_sample"] for p in pairs] == [2]
  pairs, _ = rejection.build_pairs(medqa, samples_of(medqa, texts), prompt,
                                   unverified_as_wrong=True)
  assert sorted(p["meta"]["rejected_sample"] for p in pairs) == [1, 2]


def test_chinese_question_language_filter(questions):
  zh = questions[4]
  texts = [resp("A", ZH_THINK), resp("B", THINK), resp("稳定型心绞痛", ZH_THINK),
           resp("答案是D", ZH_THINK)]
  pairs, stats = rejection.make_pairs([zh], [samples_of(zh, texts)], min_think_chars=20)
  assert stats["filtered"]["language"] == 1  # the English reply to a Chinese question
  assert sorted(p["meta"]["rejected_pred"] for p in pairs) == ["B", "D"]
  assert all(p["meta"]["rejected_sample"] in (2, 3) for p in pairs)


def test_stats_and_write_pairs(tmp_path, questions, medqa):
  ss = [samples_of(medqa, [resp("B"), resp("C"), resp("nothing")]),
        None,
        samples_of(questions[3], [resp("Anemia of chronic disease")])]
  qs = [medqa, questions[0], questions[3]]
  pairs, stats = rejection.make_pairs(qs, ss, skipped={"prompt_too_long": 1})
  assert (stats["questions"], stats["questions_sampled"], stats["samples"]) == (3, 2, 4)
  assert (stats["correct"], stats["wrong"], stats["unverified"]) == (1, 2, 1)
  assert stats["correct_rate"] == pytest.approx(0.25)
  assert stats["questions_with_correct"] == 1 and stats["questions_with_pairs"] == 1
  assert stats["pairs"] == len(pairs) == 1 and "pairs kept 1" in rejection.format_stats(stats)
  path = str(tmp_path / "out" / "pairs.jsonl")
  assert rejection.write_pairs(path, pairs) == 1
  with open(path, encoding="utf-8") as f:
    assert [json.loads(line) for line in f] == pairs


def test_only_process_0_writes_pairs(tmp_path, monkeypatch, questions, medqa):
  pairs, _ = rejection.make_pairs([medqa], [samples_of(medqa, [resp("B"), resp("C")])])
  monkeypatch.setattr(rejection, "_is_main_process", lambda: False)  # as on process 1 of 2
  path = tmp_path / "pairs.jsonl"
  assert rejection.write_pairs(str(path), iter(pairs)) == len(pairs) == 1
  assert not path.exists()


# ------------------------------------------------------------------------------------------------
# Sampling with a tiny model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  d = tmp_path_factory.mktemp("rejection")
  corpus = d / "corpus.txt"
  with open(CORPUS, encoding="utf-8") as f:
    text = f.read()
  lines = [prompts.CITRUS_TEMPLATE, THINK, ZH_THINK]
  lines += [json.loads(line)["question"] for line in open(QUESTIONS, encoding="utf-8")]
  corpus.write_text(text + "\n".join(lines) * 3, encoding="utf-8")
  tok = tk.load_tokenizer(tk.train_sentencepiece([str(corpus)], str(d / "sp"), 1200))
  cfg = get_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=512)
  params = transformer.init_params(cfg, jax.random.key(0))
  params = jax.tree.map(lambda x: 8 * x if x.ndim > 2 else x, params)  # spread the logits
  return d, tok, cfg, params


SAMPLING = dict(n_samples=3, max_new_tokens=24, batch_size=6, progress=False, verbose=False)


def test_sampling_runs_and_is_deterministic(model, questions):
  _, tok, cfg, params = model
  runs = {}
  for seed in (0, 0, 1):
    samples = []
    pairs, stats = rejection.sample_pairs(params, cfg, tok, questions[:2], seed=seed,
                                          samples_out=samples, **SAMPLING)
    runs.setdefault(seed, []).append([[s["text"] for s in r["samples"]] for r in samples])
  assert runs[0][0] == runs[0][1]  # same seed, same samples
  assert runs[0][0] != runs[1][0]
  texts = runs[0][0]
  assert len(texts) == 2 and all(len(t) == 3 for t in texts)
  assert len(set(texts[0])) > 1  # the repeated prompt samples independently
  assert stats["samples"] == 6 and sum(stats["response_checks"].values()) == 6
  assert not any("<|eot_id|>" in t for row in texts for t in row)  # the stop token is cut
  assert stats["pairs"] == 0  # a random model writes no <think>/<answer> responses


def test_prompt_too_long_is_skipped(model, questions):
  _, tok, cfg, _ = model

  def never(prompts, seed):
    raise AssertionError("nothing should be generated")

  pairs, stats = rejection.sample_pairs(None, cfg, tok, questions, generate_fn=never,
                                        n_samples=2, max_new_tokens=cfg.max_seq_len - 20,
                                        progress=False, verbose=False)
  assert pairs == [] and stats["questions_skipped"] == {"prompt_too_long": len(questions)}


def scripted_generate(tok, questions):
  """A stand-in model: per question, one correct, two wrong and one short-think response."""
  by_prompt = {tuple(chat.render(rejection.open_prompt(q), tok, add_generation_prompt=True)
                     .tokens): q for q in questions}
  calls = []

  def generate(prompt_ids, seed):
    calls.append(len(prompt_ids))
    out, seen = [], {}
    for p in prompt_ids:
      q = by_prompt[tuple(p)]
      n = seen[q.id] = seen.get(q.id, -1) + 1
      wrong = [v for k, v in q.options.items() if k != q.gold] or ["Anemia of chronic disease"]
      think = ZH_THINK * 3 if rejection.language_of(q.text) == "cjk" else THINK
      texts = [resp(q.gold_text, think), resp(wrong[0], think), resp(wrong[-1], think),
               resp(wrong[0], "short")]
      out.append((texts[n % len(texts)], "stop"))
    return out

  return generate, calls


def test_pairs_train_cpo_simpo(model, questions, tmp_path):
  _, tok, cfg, params = model
  generate, calls = scripted_generate(tok, questions)
  pairs, stats = rejection.sample_pairs(params, cfg, tok, questions, generate_fn=generate,
                                        n_samples=4, batch_size=8, progress=False,
                                        max_new_tokens=256)
  assert calls == [8, 8, 4]  # two questions (8 rows) per call
  assert stats["correct"] == len(questions) and stats["filtered"]["short_think"] == len(questions)
  # Two wrong responses each; the open question's two are the same text (kept once).
  assert stats["pairs"] == 2 * len(questions) - 1 and stats["filtered"]["duplicate"] == 1
  path = str(tmp_path / "pairs.jsonl")
  rejection.write_pairs(path, pairs)
  loaded, load_stats = pref_data.load_pairs(path, tok, max_length=320, max_prompt_length=256)
  assert load_stats["kept"] == len(pairs) and load_stats["skipped"] == 0
  for pair, record in zip(loaded, pairs):
    assert tok.decode(pair.prompt_ids) == tok.decode(chat.render(
        record["chosen"][:-1], tok, add_generation_prompt=True).tokens)
  assert not any(p.truncated for p in loaded)
  batch = pref_data.make_batch(loaded, 320)
  opt = optax.adam(1e-3)
  train_step = jax.jit(step_lib.make_train_step(pref_loss.make_loss_fn(cfg, "cpo_simpo"), opt,
                                                pref_loss.preference_totals))
  state = step_lib.init_state(params, opt, seed=0)
  losses = []
  for _ in range(2):
    state, metrics = train_step(state, batch)
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses)) and int(state.step) == 2
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       state.params, params)
  assert max(jax.tree.leaves(moved)) > 0


def test_cli_matches_api(model, questions, tmp_path):
  d, tok, cfg, params = model
  ckpt = checkpoint.save_params(str(tmp_path / "sft"), params, cfg)
  qpath = tmp_path / "q.jsonl"
  with open(QUESTIONS, encoding="utf-8") as f:
    qpath.write_text("".join(f.readlines()[:2]), encoding="utf-8")
  out = str(tmp_path / "pairs.jsonl")
  stats = rejection_cli.main(["--checkpoint", ckpt, "--tokenizer", tok.model_file, "--questions",
                              str(qpath), "--out", out, "--samples_out",
                              str(tmp_path / "s.jsonl"), "--n_samples", "3", "--max_new_tokens",
                              "24", "--batch_size", "6", "--no_progress"])
  with open(out + ".stats.json") as f:
    assert json.load(f)["samples"] == stats["samples"] == 6
  with open(tmp_path / "s.jsonl", encoding="utf-8") as f:
    cli = [[s["text"] for s in json.loads(line)["samples"]] for line in f]
  api = []
  rejection.sample_pairs(params, cfg, tok, questions[:2], seed=0, samples_out=api, **SAMPLING)
  assert cli == [[s["text"] for s in r["samples"]] for r in api]


def test_command_line_runs():
  module = "citrus_jax.rollout.rejection_cli"
  out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "--questions" in out.stdout and "--coordinator_address" in out.stdout
