"""Option log-likelihoods against transformers (batched, left-padded, sharded, truncated) and the
acc / acc_norm choice on constructed scores."""
import dataclasses
import json
import pathlib

import jax
import numpy as np
import pytest
import torch
import transformers

from citrus_jax import hf, sharding, tokenizer
from citrus_jax.eval import benchmarks, harness, loglik
from citrus_jax.model import transformer
from citrus_jax.model.config import get_preset

FIX = pathlib.Path(__file__).resolve().parent / "fixtures" / "harness"
MEDQA, JMED = str(FIX / "medqa_mini.jsonl"), str(FIX / "jmed_mini.jsonl")
TOL = 1e-4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  d = tmp_path_factory.mktemp("loglik")
  lines = ["Question: Answer: Context:"]
  for line in open(MEDQA):
    obj = json.loads(line)
    lines += [obj["question"], *obj["options"].values()]
  (d / "corpus.txt").write_text("\n".join(lines * 3))
  tok = tokenizer.load_tokenizer(tokenizer.train_sentencepiece([str(d / "corpus.txt")],
                                                               str(d / "sp"), 360))
  cfg = get_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=512)
  params = transformer.init_params(cfg, jax.random.key(0))
  # Wider weights than the default init, so log-probs spread and a wrong position would show.
  rng = np.random.RandomState(0)
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: np.asarray(1 + 0.1 * rng.randn(*x.shape) if "norm" in str(p)
                              else 0.15 * rng.randn(*x.shape), np.float32), params)
  hf.save(str(d / "hf"), params, cfg)
  model = transformers.LlamaForCausalLM.from_pretrained(str(d / "hf"),
                                                        dtype=torch.float32).eval()
  return tok, cfg, params, model


def _hf_loglik(model, ctx, cont):
  ids = torch.tensor([list(ctx) + list(cont)])
  with torch.no_grad():
    lp = torch.log_softmax(model(ids).logits[0].double(), -1)
  n = len(ctx)
  return float(sum(lp[n - 1 + j, t] for j, t in enumerate(cont)))


def test_option_logliks_match_transformers(setup):
  tok, cfg, params, model = setup
  items = (benchmarks.load_benchmark("medqa", MEDQA).items[:4]
           + benchmarks.load_benchmark("jmed", JMED).items[:2])  # byte-fallback Chinese
  for form in loglik.FORMS:
    recs = loglik.score_items(params, cfg, tok, items, form=form, batch_size=10)
    diffs = []
    for item, rec in zip(items, recs):
      assert rec["context"] == loglik.context_text(item, form)
      assert rec["context"].endswith("Answer:")
      assert all(f"{k}. {v}" in rec["context"] for k, v in item.options.items()) == (
          form == "letter")
      for letter, s in rec["options"].items():
        cont = f" {letter}" if form == "letter" else f" {item.options[letter]}"
        ctx_ids, cont_ids = loglik.encode_pair(tok, rec["context"], cont)
        assert ctx_ids[0] == tok.bos_id and s["n_tokens"] == len(cont_ids)
        assert s["n_chars"] == len(cont) - 1 and not s["truncated"]
        diffs.append(abs(s["loglik"] - _hf_loglik(model, ctx_ids, cont_ids)))
    print(f"form={form}: max |ours - transformers| = {max(diffs):.2e} over {len(diffs)} options")
    assert max(diffs) < TOL


def test_sharded_and_truncated_scoring(setup):
  tok, cfg, params, model = setup
  rng = np.random.RandomState(1)
  pairs = [(list(rng.randint(4, tok.vocab_size, size=n)), list(rng.randint(4, tok.vocab_size,
                                                                           size=m)))
           for n, m in ((3, 1), (40, 7), (17, 12), (90, 3), (9, 20))]
  mesh = sharding.make_mesh((1, -1, 1))  # batch split over 8 simulated devices
  sharded = loglik.score_pairs(params, cfg, pairs, batch_size=3, mesh=mesh)
  for s, (ctx, cont) in zip(sharded, pairs):
    assert s["n_tokens"] == len(cont)
    assert abs(s["loglik"] - _hf_loglik(model, ctx, cont)) < TOL
  # Longer than max_seq_len: the context loses its first tokens.
  short = cfg.replace(max_seq_len=64)
  (s,) = loglik.score_pairs(params, short, [pairs[3]])
  seq = (pairs[3][0] + pairs[3][1])[-64:]
  assert s["truncated"]
  assert abs(s["loglik"] - _hf_loglik(model, seq[:-3], seq[-3:])) < TOL


def test_acc_and_acc_norm_on_constructed_scores():
  item = benchmarks.MCQItem(id="x", question="q?", options={"A": "aa", "B": "b" * 10, "C": "cc"},
                            gold="B")
  # Sums: A wins (-2 > -5). Per character: A -1.0, B -0.5, C -1.5 -> B wins.
  scores = {"A": {"loglik": -2.0, "n_chars": 2}, "B": {"loglik": -5.0, "n_chars": 10},
            "C": {"loglik": -3.0, "n_chars": 2}}
  rec = loglik.item_record(item, scores)
  assert (rec["pred"], rec["pred_norm"]) == ("A", "B")
  assert (rec["correct"], rec["correct_norm"]) == (False, True)
  # A tie goes to the earlier option.
  tie = loglik.item_record(item, {k: dict(v, loglik=-4.0) for k, v in scores.items()})
  assert tie["pred"] == "A" and tie["pred_norm"] == "B"
  other = loglik.item_record(dataclasses.replace(item, gold="A"), scores)
  summary = loglik.summarize([rec, other])
  assert (summary["acc"], summary["acc_norm"]) == (0.5, 0.5)
  s = harness.summarize([{"loglik": rec}, {"loglik": other}])
  assert s["loglik"]["n_correct"] == 1 and "acc" not in s  # loglik only: no generation keys


def test_evaluate_items_loglik_mode(setup):
  tok, cfg, params, _ = setup
  items = benchmarks.load_benchmark("medqa", MEDQA).items
  records, summary = harness.evaluate_items(params, cfg, tok, items, mode="loglik",
                                            batch_size=8, loglik_form="text")
  assert "output" not in records[0] and summary["n"] == 8
  ll = summary["loglik"]
  assert ll["n_correct"] == sum(r["loglik"]["correct"] for r in records)
  assert ll["acc_norm"] == pytest.approx(np.mean([r["loglik"]["pred_norm"] == it.gold
                                                  for r, it in zip(records, items)]))
