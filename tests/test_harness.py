"""Evaluation harness: offline scoring with hand-derived counts, option shuffling, bad prediction
files, a constructed "always answers C" model end to end, batching order, and the CLI."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from citrus_jax import chat, tokenizer
from citrus_jax.eval import benchmarks, extract, harness, prompts, scaling, stats
from citrus_jax.model import transformer
from citrus_jax.model.config import get_preset
from citrus_jax.train import checkpoint
from configs import eval as eval_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "harness"
MEDQA, JMED = str(FIX / "medqa_mini.jsonl"), str(FIX / "jmed_mini.jsonl")
SUMMARY_KEYS = {"n", "n_correct", "n_answered", "n_no_answer", "acc", "valid_acc"}


def _config(tmp_path, **ev):
  c = eval_config.get_config("tiny")
  c.workdir = str(tmp_path / "run")
  c.progress = False
  for k, v in ev.items():
    c.eval[k] = v
  return c


def _read_jsonl(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _run(config):
  outdir = harness.run(config, config.workdir)
  with open(os.path.join(outdir, "summary.json")) as f:
    return outdir, json.load(f)


# ------------------------------------------------------------------------------------------------
# Offline scoring: every expected number below is derived by hand from the fixture files.


def test_predictions_medqa_exact_counts(tmp_path):
  c = _config(tmp_path, benchmarks="medqa", data_paths=MEDQA,
              predictions=str(FIX / "preds_medqa.jsonl"))
  outdir, summary = _run(c)
  s = summary["benchmarks"]["medqa"]
  # right: 00000 (letter), 00001 (option text), 00006 (last <answer> block); wrong: 00002,
  # 00007; no answer: 00003 (unmappable), 00004 (empty), 00005 (null).
  assert (s["n"], s["n_correct"], s["n_answered"], s["n_no_answer"]) == (8, 3, 5, 3)
  assert s["acc"] == pytest.approx(3 / 8) and s["valid_acc"] == pytest.approx(3 / 5)
  assert summary["macro_avg"]["acc"] == pytest.approx(3 / 8)
  recs = _read_jsonl(os.path.join(outdir, "medqa.jsonl"))
  assert [r["pred"] for r in recs] == ["C", "B", "A", None, None, None, "D", "B"]
  assert [r["correct"] for r in recs] == [True, True, False, False, False, False, True, False]
  assert recs[6]["span"] == "D" and recs[5]["output"] is None
  assert s["n_missing"] == 0 and summary["settings"]["mode"] == "predictions"
  # Every accuracy has its seeded 95% bootstrap interval (eval/stats.py), around it.
  for key, value, n in (("acc", 3 / 8, 8), ("valid_acc", 3 / 5, 5)):
    lo, hi = s[f"{key}_ci95"]
    assert 0 <= lo <= value <= hi <= 1 and 0 < hi - lo < 1
    assert [lo, hi] == list(stats.bootstrap_interval([r["correct"] for r in recs
                                                      if key == "acc" or r["pred"]],
                                                     n_boot=harness.CI_BOOT,
                                                     seed=harness.CI_SEED))
  m_lo, m_hi = summary["macro_avg"]["acc_ci95"]
  assert m_lo <= 3 / 8 <= m_hi and "valid_acc_ci95" in summary["macro_avg"]
  _, again = _run(_config(tmp_path / "again", benchmarks="medqa", data_paths=MEDQA,
                          predictions=str(FIX / "preds_medqa.jsonl")))
  assert again["benchmarks"]["medqa"]["acc_ci95"] == s["acc_ci95"]  # seeded: reruns agree


def test_summarize_intervals_for_loglik_and_empty_sets():
  ll = [{"correct": i < 3, "correct_norm": i < 5, "truncated": False} for i in range(8)]
  gen = [{"output": "", "pred": None, "correct": False} for _ in range(8)]
  s = harness.summarize([{**g, "loglik": r} for g, r in zip(gen, ll)])
  assert s["acc_ci95"] == [0.0, 0.0] and s["valid_acc_ci95"] is None  # nothing answered
  lo, hi = s["loglik"]["acc_ci95"]
  assert lo <= 3 / 8 <= hi
  lo, hi = s["loglik"]["acc_norm_ci95"]
  assert lo <= 5 / 8 <= hi
  only_ll = harness.summarize([{"loglik": r} for r in ll])
  assert "acc_ci95" not in only_ll and "acc_ci95" in only_ll["loglik"]
  m = harness.macro_average({"x": s, "y": only_ll}, {"x": [{**g, "loglik": r} for g, r in
                                                          zip(gen, ll)],
                                                    "y": [{"loglik": r} for r in ll]})
  assert m["acc_ci95"] == [0.0, 0.0] and m["valid_acc_ci95"] is None
  assert m["loglik"]["acc_ci95"][0] <= 3 / 8 <= m["loglik"]["acc_ci95"][1]


def test_predictions_jmed_use_shuffled_options(tmp_path):
  loaded = {it.id: it for it in benchmarks.load_benchmark("jmed", JMED).items}
  assert sum(it.gold != "A" for it in loaded.values()) >= 3  # shuffled (all "A" in the file)
  _, summary = _run(_config(tmp_path, benchmarks="jmed", data_paths=JMED,
                            predictions=str(FIX / "preds_jmed.jsonl")))
  # jmed-0/1/3 name the right option's text, jmed-2 a wrong one's; jmed-4/5 say "A", the gold
  # before shuffling: right only where "A" is still the gold after it.
  expected = 3 + sum(loaded[i].gold == "A" for i in ("jmed-4", "jmed-5"))
  assert summary["benchmarks"]["jmed"]["n_correct"] == expected
  assert summary["benchmarks"]["jmed"]["n_no_answer"] == 0
  # Without shuffling "A" is always right.
  _, off = _run(_config(tmp_path / "off", benchmarks="jmed", data_paths=JMED,
                        predictions=str(FIX / "preds_jmed.jsonl"), shuffle_options="off"))
  assert off["benchmarks"]["jmed"]["n_correct"] == 5
  # A model that always answers "A" only gets the items whose shuffled gold is A.
  always_a = tmp_path / "always_a.jsonl"
  always_a.write_text("".join(json.dumps({"id": i, "output": "<answer>A</answer>"}) + "\n"
                              for i in loaded))
  _, s = _run(_config(tmp_path / "a", benchmarks="jmed", data_paths=JMED,
                      predictions=str(always_a)))
  n_gold_a = sum(it.gold == "A" for it in loaded.values())
  assert s["benchmarks"]["jmed"]["acc"] == pytest.approx(n_gold_a / 6) and n_gold_a < 6


def test_prompts_export_matches_scoring_items(tmp_path):
  outdir, summary = _run(_config(tmp_path, benchmarks="jmed,medqa", data_paths=f"{JMED},{MEDQA}",
                                 mode="prompts"))
  rows = _read_jsonl(os.path.join(outdir, "jmed.prompts.jsonl"))
  items = benchmarks.load_benchmark("jmed", JMED).items
  assert [r["id"] for r in rows] == [it.id for it in items]
  for r, it in zip(rows, items):
    assert r["messages"] == prompts.citrus_messages(it)
    assert f"A. {it.options['A']}" in r["messages"][-1]["content"]  # the shuffled order
  assert summary["benchmarks"]["medqa"]["n"] == 8


def _write(path, rows):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return str(path)


def test_bad_prediction_files(tmp_path):
  good = [{"id": f"{i:05d}", "output": "A"} for i in range(8)]
  cases = {
      "unknown": (good[:1] + [{"id": "99999", "output": "A"}] + good[1:], "unknown.jsonl:2",
                  "unknown id '99999'"),
      "duplicate": (good[:3] + [{"id": "00001", "output": "B"}] + good[3:], "duplicate.jsonl:4",
                    "first at"),
      "bad_json": (good[:2] + ["{not json"] + good[2:], "bad_json.jsonl:3", "invalid JSON"),
      "bad_output": (good[:1] + [{"id": "00001", "output": 3}] + good[2:], "bad_output.jsonl:2",
                     "field 'output'"),
      "missing": (good[:6], "missing.jsonl", "no prediction for 2 of 8"),
  }
  for name, (rows, where, what) in cases.items():
    path = _write(tmp_path / f"{name}.jsonl", rows)
    with pytest.raises(ValueError) as e:
      harness.run(_config(tmp_path / name, benchmarks="medqa", data_paths=MEDQA,
                          predictions=path), str(tmp_path / name))
    assert where in str(e.value) and what in str(e.value), str(e.value)
  # on_error=skip counts instead: 1 unknown id, 1 duplicate line, 2 missing items (no answer).
  rows = good[:1] + [{"id": "99999", "output": "A"}, {"id": "00000", "output": "B"}] + good[1:6]
  path = _write(tmp_path / "skip.jsonl", rows)
  _, summary = _run(_config(tmp_path / "skip", benchmarks="medqa", data_paths=MEDQA,
                            predictions=path, on_error="skip"))
  s = summary["benchmarks"]["medqa"]
  assert summary["unknown_ids"] == 1 and summary["skipped_lines"] == {"duplicate_id": 1}
  assert s["n_missing"] == 2 and s["n_no_answer"] == 2 and s["n"] == 8
  # "A" is right for 00004 and 00005 only (00000's duplicate "B" line is ignored).
  assert s["n_correct"] == 2


def test_several_benchmarks_from_one_predictions_file(tmp_path):
  rows = [{"id": f"{i:05d}", "output": "C"} for i in range(8)]
  path = _write(tmp_path / "p.jsonl", rows)
  with pytest.raises(ValueError, match=r"p.jsonl:1: field 'benchmark'"):
    harness.run(_config(tmp_path / "x", benchmarks="medqa,jmed", data_paths=f"{MEDQA},{JMED}",
                        predictions=path), str(tmp_path / "x"))
  jmed = benchmarks.load_benchmark("jmed", JMED).items
  rows = [dict(r, benchmark="medqa") for r in rows] + [
      {"benchmark": "jmed", "id": it.id, "output": it.gold_text} for it in jmed]
  _, summary = _run(_config(tmp_path / "y", benchmarks="medqa,jmed",
                            data_paths=f"{MEDQA},{JMED}", predictions=_write(tmp_path / "q.jsonl",
                                                                             rows)))
  assert summary["benchmarks"]["medqa"]["n_correct"] == 1  # one gold "C" in medqa_mini
  assert summary["benchmarks"]["jmed"]["acc"] == 1.0
  assert summary["macro_avg"]["acc"] == pytest.approx((1 / 8 + 1.0) / 2)


def test_data_dir_detection_skips_train_files(tmp_path):
  d = tmp_path / "data"
  (d / "medqa").mkdir(parents=True)
  (d / "mmlu").mkdir()
  shutil.copy(MEDQA, d / "medqa" / "phrases_no_exclude_test.jsonl")
  shutil.copy(MEDQA, d / "medqa" / "phrases_no_exclude_train.jsonl")
  shutil.copy(JMED, d / "jmed_mini.jsonl")
  for split in ("test", "dev"):
    (d / "mmlu" / f"anatomy_{split}.csv").write_text("What is the largest organ?,Skin,Liver,"
                                                     "Heart,Lung,A\n")
  c = _config(tmp_path, data_dir=str(d))
  found = sorted(harness.resolve_benchmarks(c.eval))
  assert found == [("jmed", str(d / "jmed_mini.jsonl")),
                   ("medqa", str(d / "medqa" / "phrases_no_exclude_test.jsonl")),
                   ("mmlu_anatomy", str(d / "mmlu" / "anatomy_test.csv"))]
  c.eval.benchmarks = "mmlu,medqa"
  assert [n for n, _ in harness.resolve_benchmarks(c.eval)] == ["mmlu_anatomy", "medqa"]
  c.eval.benchmarks = "pubmedqa"
  with pytest.raises(harness.runtime.ConfigError, match="no pubmedqa file"):
    harness.resolve_benchmarks(c.eval)


# ------------------------------------------------------------------------------------------------
# With a model.


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  d = tmp_path_factory.mktemp("tok")
  lines = [prompts.SYSTEM_PROMPT, prompts.LETTER_INSTRUCTION, "Question: Answer: Context:"]
  lines += prompts.CITRUS_TEMPLATE.splitlines()
  for line in open(MEDQA):
    obj = json.loads(line)
    lines += [obj["question"], *obj["options"].values()]
  (d / "corpus.txt").write_text("\n".join(lines * 3))
  return tokenizer.load_tokenizer(tokenizer.train_sentencepiece([str(d / "corpus.txt")],
                                                                str(d / "sp"), 400))


def always_letter_model(tok, letter: str = "C"):
  """A tiny decoder that answers `letter` then ends its turn, whatever the question.

  Attention and MLP outputs are zeroed, so the logits at a slot depend on that slot's token only;
  the output head maps the prompt's last token (the generation header's) to `letter` and
  `letter` to the end-of-turn token."""
  cfg = get_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=1024)
  params = jax.tree.map(np.asarray, transformer.init_params(cfg, jax.random.key(1)))
  params["layers"]["wo"] = np.zeros_like(params["layers"]["wo"])
  params["layers"]["w_down"] = np.zeros_like(params["layers"]["w_down"])
  (letter_id,) = tok.encode(letter)
  header = chat.render([{"role": "user", "content": "x"}], tok, add_generation_prompt=True)
  embed = params["embed"]
  unit = lambda v: v / np.linalg.norm(v)
  head = 0.01 * np.random.RandomState(0).randn(cfg.d_model, cfg.vocab_size).astype(np.float32)
  head[:, letter_id] += 10 * unit(embed[header.tokens[-1]])
  head[:, tok.eot_id] += 10 * unit(embed[letter_id])
  params["lm_head"] = head
  return cfg, params


def test_always_c_model_end_to_end(tok):
  cfg, params = always_letter_model(tok, "C")
  items = benchmarks.load_benchmark("medqa", MEDQA).items
  records, summary = harness.evaluate_items(params, cfg, tok, items, max_new_tokens=8,
                                            batch_size=4, benchmark="medqa")
  assert [r["output"] for r in records] == ["C"] * 8
  assert all(r["finish_reason"] == "stop" and r["n_new_tokens"] == 2 for r in records)
  n_gold_c = sum(it.gold == "C" for it in items)
  assert summary["n_correct"] == n_gold_c and summary["n_answered"] == 8
  assert summary["acc"] == pytest.approx(n_gold_c / 8)
  assert records[0]["prompt"].endswith("</Question>\n\nPlease begin your response.\n\nThe "
                                       "formatted output should be as follows:\n<think>\n"
                                       "[Insert Your Detailed Thought Process here]\n</think>\n"
                                       "<answer>\n[Insert Your Final Answer here]\n</answer>"
                                       "<|eot_id|><|start_header_id|>assistant"
                                       "<|end_header_id|>\n\n")
  assert prompts.SYSTEM_PROMPT in records[0]["prompt"]


def test_length_sorted_batches_keep_item_order(tok):
  cfg = get_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=1024)
  params = transformer.init_params(cfg, jax.random.key(3))
  items = benchmarks.load_benchmark("medqa", MEDQA).items[:5]
  kw = dict(prompt="letter", max_new_tokens=6, benchmark="medqa")
  batched, _ = harness.evaluate_items(params, cfg, tok, items, batch_size=3, **kw)
  single, _ = harness.evaluate_items(params, cfg, tok, items, batch_size=1, **kw)
  assert len({r["n_prompt_tokens"] for r in batched}) > 1  # really different lengths
  assert [r["id"] for r in batched] == [it.id for it in items]
  assert [r["output"] for r in batched] == [r["output"] for r in single]
  assert len({r["output"] for r in batched}) > 1  # outputs differ, so a mix-up would show


@pytest.mark.slow
def test_cli_end_to_end_and_recount(tmp_path, tok):
  cfg, params = always_letter_model(tok, "C")
  ckpt = checkpoint.save_params(str(tmp_path / "params"), params, cfg)
  cmd = [sys.executable, "-m", "citrus_jax.main", "--config=configs/eval.py:tiny",
         f"--config.workdir={tmp_path / 'run'}", f"--config.init.checkpoint={ckpt}",
         f"--config.tokenizer.path={tok.model_file}", "--config.eval.benchmarks=medqa,jmed",
         f"--config.eval.data_paths={MEDQA},{JMED}", "--config.eval.mode=both",
         "--config.eval.max_new_tokens=8", "--config.progress=False"]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  outdir = out.stdout.strip().splitlines()[-1]
  assert os.path.dirname(outdir) == str(tmp_path / "run")
  assert os.path.basename(outdir).startswith("eval_")
  assert "macro_avg" in out.stdout
  with open(os.path.join(outdir, "summary.json")) as f:
    summary = json.load(f)
  assert set(summary) >= {"benchmarks", "macro_avg", "settings"}
  assert set(summary["benchmarks"]) == {"medqa", "jmed"}
  items = {"medqa": benchmarks.load_benchmark("medqa", MEDQA).items,
           "jmed": benchmarks.load_benchmark("jmed", JMED).items}
  for key, s in summary["benchmarks"].items():
    assert SUMMARY_KEYS <= set(s) and set(s["loglik"]) >= {"acc", "acc_norm", "n"}
    recs = _read_jsonl(os.path.join(outdir, s["file"]))
    assert [r["id"] for r in recs] == [it.id for it in items[key]]
    # Recount every number from the per-item file.
    for r, it in zip(recs, items[key]):
      assert r["output"] == "C" and r["gold"] == it.gold and r["options"] == it.options
      assert extract.score(r["output"], it)["pred"] == r["pred"] == "C"
      ll = r["loglik"]["options"]
      best = max(ll, key=lambda k: ll[k]["loglik"])
      best_norm = max(ll, key=lambda k: ll[k]["loglik"] / ll[k]["n_chars"])
      assert (r["loglik"]["pred"], r["loglik"]["pred_norm"]) == (best, best_norm)
    n_correct = sum(r["correct"] for r in recs)
    answered = sum(r["pred"] is not None for r in recs)
    assert n_correct == sum(it.gold == "C" for it in items[key])
    assert (s["n"], s["n_correct"], s["n_answered"], s["n_no_answer"]) == (
        len(recs), n_correct, answered, len(recs) - answered)
    assert s["acc"] == pytest.approx(n_correct / len(recs))
    assert s["valid_acc"] == pytest.approx(n_correct / answered)
    assert s["loglik"]["acc"] == pytest.approx(
        np.mean([r["loglik"]["pred"] == r["gold"] for r in recs]))
    assert s["loglik"]["acc_norm"] == pytest.approx(
        np.mean([r["loglik"]["pred_norm"] == r["gold"] for r in recs]))
  accs = [s["acc"] for s in summary["benchmarks"].values()]
  assert summary["macro_avg"]["acc"] == pytest.approx(np.mean(accs))
  assert json.load(open(os.path.join(outdir, "config.json")))["stage"] == "eval"


# ------------------------------------------------------------------------------------------------
# Test-time scaling (k samples, seeds, think budgets)


def test_samples_in_one_batch_and_budget_forcing(tok):
  cfg = get_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=1024)
  params = transformer.init_params(cfg, jax.random.key(3))
  items = benchmarks.load_benchmark("medqa", MEDQA).items[:3]
  kw = dict(prompt="letter", max_new_tokens=6, benchmark="medqa", temperature=1.0, seed=1)
  recs, s = harness.evaluate_items(params, cfg, tok, items, batch_size=2, samples=4, **kw)
  assert [r["id"] for r in recs] == [it.id for it in items]
  for r in recs:
    assert len(r["samples"]) == 4 and r["samples"][0]["output"] == r["output"]
    assert r["maj_pred"] == scaling.majority_vote([x["pred"] for x in r["samples"]])
    assert r["pass_correct"] == any(x["correct"] for x in r["samples"])
  assert len({x["output"] for r in recs for x in r["samples"]}) > 3  # really sampled
  assert s["samples"] == 4 and {"maj@4", "pass@4", "maj@4_ci95", "pass@4_ci95"} <= set(s)
  assert s["pass@4"] >= s["acc"] - 1e-9
  with pytest.raises(ValueError, match="temperature > 0"):
    harness.evaluate_items(params, cfg, tok, items, samples=2, prompt="letter", max_new_tokens=2)
  forced, _ = harness.evaluate_items(params, cfg, tok, items, prompt="letter", think_budget=3,
                                     answer_tokens=2, benchmark="medqa")
  for r in forced:
    assert r["n_think_tokens"] <= 3 and r["n_new_tokens"] <= 5
    if r["forced"]:
      assert scaling.FORCE_ANSWER in r["output"]


@pytest.mark.parametrize("ev,match", [
    (dict(samples=0), "samples=0"),
    (dict(seeds="[0,1]"), "greedy runs do not depend"),
    (dict(seeds="0,x", temperature=0.7), "eval.seeds: 'x'"),
    (dict(think_budget="[0]"), "must be >= 1"),
    (dict(think_budget="8", mode="loglik"), "need generation"),
    (dict(seeds="1,1", temperature=0.7), "repeated"),
])
def test_scaling_config_errors(tmp_path, ev, match):
  with pytest.raises(harness.runtime.ConfigError, match=match):
    harness.check_eval_config(_config(tmp_path, **ev).eval)


def test_samples_at_temperature_0_sample_at_the_sampling_temperature():
  ev = ml_collections.ConfigDict(dict(samples=4, temperature=0.0, sampling_temperature=0.7))
  harness._sampling_for_k(ev)
  assert ev.temperature == 0.7
  ev = ml_collections.ConfigDict(dict(samples=4, temperature=0.0, sampling_temperature=0.0))
  with pytest.raises(harness.runtime.ConfigError, match="needs sampling"):
    harness._sampling_for_k(ev)


@pytest.mark.slow
def test_the_tiny_preset_runs_as_it_is_with_samples(tmp_path):
  """The #20 contract, as written: `--config=configs/eval.py:tiny --config.eval.samples=4` with
  nothing else generates its benchmarks and a random model, and writes maj@4, pass@4 and a 95%
  interval for each benchmark."""
  cmd = [sys.executable, "-m", "citrus_jax.main", "--config=configs/eval.py:tiny",
         "--config.eval.samples=4", f"--config.workdir={tmp_path / 'run'}",
         "--config.progress=False"]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "sampling at 0.7" in out.stdout
  summary = json.load(open(os.path.join(out.stdout.strip().splitlines()[-1], "summary.json")))
  assert len(summary["benchmarks"]) == 2  # the generated MedQA JSONL and MMLU CSV
  for s in summary["benchmarks"].values():
    for name in ("acc", "maj@4", "pass@4"):
      assert 0 <= s[f"{name}_ci95"][0] <= s[name] <= s[f"{name}_ci95"][1] <= 1


@pytest.mark.slow
def test_cli_samples_seeds_and_budgets(tmp_path, tok):
  """The #20 contract: eval.samples=4 (with temperature > 0) writes maj@4, pass@4 and 95% intervals
  per benchmark; seeds give acc mean/std/min/max; several think budgets a curve and a PNG."""
  cfg = get_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=1024)
  params = transformer.init_params(cfg, jax.random.key(3))
  ckpt = checkpoint.save_params(str(tmp_path / "params"), params, cfg)
  cmd = [sys.executable, "-m", "citrus_jax.main", "--config=configs/eval.py:tiny",
         f"--config.workdir={tmp_path / 'run'}", f"--config.init.checkpoint={ckpt}",
         f"--config.tokenizer.path={tok.model_file}", "--config.eval.benchmarks=medqa,jmed",
         f"--config.eval.data_paths={MEDQA},{JMED}", "--config.eval.samples=4",
         "--config.eval.temperature=0.7", "--config.eval.seeds=[0,1]",
         "--config.eval.think_budget=[2,6]", "--config.eval.answer_tokens=3",
         "--config.progress=False"]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  outdir = out.stdout.strip().splitlines()[-1]
  summary = json.load(open(os.path.join(outdir, "summary.json")))
  for key, s in summary["benchmarks"].items():
    for name in ("acc", "maj@4", "pass@4"):
      assert 0 <= s[f"{name}_ci95"][0] <= s[name] <= s[f"{name}_ci95"][1] <= 1
    recs = _read_jsonl(os.path.join(outdir, s["file"]))
    assert s["maj@4"] == pytest.approx(np.mean([r["maj_correct"] for r in recs]))
    assert s["pass@4"] == pytest.approx(np.mean([r["pass_correct"] for r in recs]))
    sd = s["seeds"]
    assert sd["seeds"] == [0, 1] and sd["min"] <= sd["mean"] <= sd["max"] and sd["std"] >= 0
    assert os.path.exists(os.path.join(outdir, f"{key}.budget2.seed1.jsonl"))
  tb = summary["think_budget"]
  assert tb["budgets"] == [2, 6] and len(tb["benchmarks"]) == 2 and tb["plot"] == "think_budget.png"
  assert open(os.path.join(outdir, "think_budget.png"), "rb").read(4) == b"\x89PNG"
  assert summary["macro_avg"]["pass@4"] == pytest.approx(
      np.mean([s["pass@4"] for s in summary["benchmarks"].values()]))
  # Without a temperature, samples=4 samples at eval.sampling_temperature: see
  # test_the_tiny_preset_runs_as_it_is_with_samples.
