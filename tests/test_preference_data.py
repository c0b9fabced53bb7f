"""Preference pairs: reading, chat tokenization (vs TRL's CPOTrainer), truncation, batches."""
import json
import os
import warnings

import numpy as np
import pytest

from citrus_jax import chat
from citrus_jax.data import preference as data
from citrus_jax.tokenizer import load_tokenizer

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "preference")
JSONL = os.path.join(FIXTURES, "pairs.jsonl")
SPECIALS = ["<|pad|>", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>",
            "<|end_header_id|>", "<unk>"]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
  """A character-level tokenizer.json with Llama-3 chat tokens (BOS, EOS = <|eot_id|>)."""
  from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
  chars = [chr(c) for c in range(32, 127)] + ["\n"]
  tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(SPECIALS + chars)},
                                   unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
  tok.decoder = decoders.Fuse()
  tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
  d = str(tmp_path_factory.mktemp("tok"))
  tok.save(os.path.join(d, "tokenizer.json"))
  config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<|pad|>",
            "unk_token": "<unk>", "chat_template": chat.LLAMA3_TEMPLATE,
            "tokenizer_class": "PreTrainedTokenizerFast"}
  with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
    json.dump(config, f)
  return d


@pytest.fixture(scope="module")
def tok(tok_dir):
  return load_tokenizer(tok_dir)


def _conv(user, answer, system=None):
  msgs = [{"role": "system", "content": system}] if system else []
  return msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def test_masks_train_response_and_eot_only(tok):
  prompt = [{"role": "user", "content": "Fever?"}]
  pair = data.tokenize_pair(prompt, "Flu.", "Cold, probably.", tok)
  assert list(pair.prompt_ids) == chat.render(prompt, tok, add_generation_prompt=True).tokens
  assert pair.prompt_ids[0] == tok.bos_id
  assert tok.decode(pair.prompt_ids, skip_special=False).endswith(
      "<|start_header_id|>assistant<|end_header_id|>\n\n")
  assert pair.chosen_ids[-1] == tok.eot_id and tok.decode(pair.chosen_ids) == "Flu."
  assert tok.decode(pair.rejected_ids) == "Cold, probably."
  T = 48
  batch = data.make_batch([pair], T, batch_size=2)
  assert all(v.shape == (2, T) for v in batch.values())
  for side in data.SIDES:
    seq = list(pair.prompt_ids + getattr(pair, f"{side}_ids"))
    n = len(seq) - 1
    np.testing.assert_array_equal(batch[f"{side}_inputs"][0, :n], seq[:-1])
    np.testing.assert_array_equal(batch[f"{side}_targets"][0, :n], seq[1:])
    mask = batch[f"{side}_loss_mask"][0]
    trained = batch[f"{side}_targets"][0][mask == 1]
    np.testing.assert_array_equal(trained, getattr(pair, f"{side}_ids"))  # response + eot
    assert mask[:len(pair.prompt_ids) - 1].sum() == 0  # no prompt token is trained
    np.testing.assert_array_equal(batch[f"{side}_segment_ids"][0], [1] * n + [0] * (T - n))
    np.testing.assert_array_equal(batch[f"{side}_positions"][0, :n], np.arange(n))
    assert not batch[f"{side}_segment_ids"][1].any() and not batch[f"{side}_loss_mask"][1].any()


def test_tokens_match_trl_cpo_trainer(tok, tok_dir):
  """TRL 1.16 CPOTrainer on the same Citrus-format records gives the same ids (no truncation)."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  datasets = pytest.importorskip("datasets")
  os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
  from trl.experimental.cpo import CPOConfig, CPOTrainer
  records = [
      {"chosen": _conv("Rash and fever?", "Measles.", system="Be brief."),
       "rejected": _conv("Rash and fever?", "A cold, most likely.", system="Be brief.")},
      {"chosen": _conv("  Chest pain?  ", " <think>\nMI\n</think> "),
       "rejected": _conv("  Chest pain?  ", "Reflux")},
  ]
  hf_tok = transformers.AutoTokenizer.from_pretrained(tok_dir)
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
      vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
      num_attention_heads=2, num_key_value_heads=1))
  args = CPOConfig(output_dir="/tmp/citrus_pref_trl", use_cpu=True, bf16=False, report_to=[],
                   max_length=512)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    trainer = CPOTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(records),
                         processing_class=hf_tok)
  for i, record in enumerate(records):
    row = trainer.train_dataset[i]
    pair = data.tokenize_pair(*data.split_record(record, f"r{i}"), tok)
    assert row["prompt_input_ids"] == list(pair.prompt_ids)
    for side in data.SIDES:
      ids = getattr(pair, f"{side}_ids")
      assert row[f"{side}_input_ids"] == list(pair.prompt_ids + ids)
      assert row[f"{side}_labels"] == [-100] * len(pair.prompt_ids) + list(ids)


@pytest.mark.parametrize("lens,want", [
    # (prompt, chosen, rejected) lengths -> kept lengths; max_length 10, max_prompt_length 6.
    ((4, 3, 6), (4, 3, 6)),  # fits exactly: untouched
    ((9, 2, 1), (6, 2, 1)),  # long prompt: its last 6 tokens, responses fit after that
    ((3, 9, 2), (3, 4, 2)),  # short prompt kept whole; each response cut to 10 - 6 = 4
    ((8, 6, 5), (6, 4, 4)),  # both: last 6 prompt tokens, responses to 4
])
def test_truncation_rule(lens, want):
  p, c, r = (list(range(100 * k, 100 * k + n)) for k, n in enumerate(lens, 1))
  tp, tc, tr, truncated = data.truncate_pair(p, c, r, max_length=10, max_prompt_length=6)
  assert (len(tp), len(tc), len(tr)) == want
  assert truncated == (lens != want)
  assert tp == p[len(p) - len(tp):]  # the prompt keeps its END
  assert tc == c[:len(tc)] and tr == r[:len(tr)]  # responses keep their START


def test_load_fixture_raise_and_skip(tok):
  with pytest.raises(data.PairError, match=r"pairs\.jsonl:3: field 'chosen' is empty"):
    data.load_pairs(JSONL, tok, max_length=200, max_prompt_length=150)
  pairs, stats = data.load_pairs(JSONL, tok, max_length=200, max_prompt_length=150,
                                 on_error="skip")
  assert stats["read"] == 9 and stats["kept"] == 3 and stats["skipped"] == 6
  assert stats["reasons"] == {"bad_json": 1, "bad_pair": 5}
  assert stats["truncated"] == 1 and pairs[2].truncated and len(pairs[2].prompt_ids) == 150
  assert [p.where.rsplit(":", 1)[1] for p in pairs] == ["1", "2", "10"]
  errors = "\n".join(stats["errors"])
  for line, reason in [(3, "field 'chosen' is empty"), (4, "identical"),
                       (5, "field 'chosen' has no assistant turn"), (6, "differ between"),
                       (7, "missing field 'rejected'"), (9, "invalid JSON")]:
    assert f"pairs.jsonl:{line}: " in errors and reason in errors, (line, reason)
  assert "skipped 6" in data.summarize(stats)
  # The system turn of the Citrus-format record is part of the prompt.
  assert "You are a doctor." in tok.decode(pairs[1].prompt_ids)
  json_pairs, _ = data.load_pairs(os.path.join(FIXTURES, "pairs.json"), tok)
  assert [p.chosen_ids for p in json_pairs] == [p.chosen_ids for p in pairs[:2]]


def test_bad_records():
  where = "f.jsonl:7"
  with pytest.raises(data.PairError, match="f.jsonl:7: .*continues after its last assistant"):
    data.split_record({"chosen": _conv("q", "a") + [{"role": "user", "content": "more"}],
                       "rejected": _conv("q", "b")}, where)
  with pytest.raises(data.PairError, match="must all be strings"):
    data.split_record({"prompt": 3, "chosen": "a", "rejected": "b"}, where)
  with pytest.raises(data.PairError, match=r"'chosen'\[0\] must be"):
    data.split_record({"chosen": [{"role": "user"}], "rejected": _conv("q", "b")}, where)
  prompt, c, r = data.split_record({"prompt": [{"role": "user", "content": "q"}],
                                    "chosen": [{"role": "assistant", "content": "a"}],
                                    "rejected": [{"role": "assistant", "content": "b"}]}, where)
  assert (prompt, c, r) == ([{"role": "user", "content": "q"}], "a", "b")


def test_prompt_longer_than_max_length_is_truncated_or_skipped(tok):
  prompt = [{"role": "user", "content": "x" * 300}]
  pair = data.tokenize_pair(prompt, "yes", "no", tok, max_length=64, max_prompt_length=48)
  assert len(pair.prompt_ids) == 48 and pair.truncated
  assert len(pair.prompt_ids) + len(pair.chosen_ids) <= 64
  with pytest.raises(data.PairError, match="empty after truncation"):
    data.tokenize_pair(prompt, "yes", "no", tok, max_length=64, max_prompt_length=64)
  with pytest.raises(data.PairError, match="identical after truncation"):
    data.tokenize_pair(prompt, "same start, then A", "same start, then B", tok,
                       max_length=64, max_prompt_length=56)


def test_batches_are_seeded_padded_and_carry_reference(tok):
  pairs = [data.tokenize_pair([{"role": "user", "content": f"q{i}"}], f"a{i}", f"b{i}!", tok)
           for i in range(5)]
  pairs = data.attach_reference_logprobs(pairs, np.array([[-i, -10.0 - i] for i in range(5)]))
  run = lambda seed: list(data.iterate_batches(pairs, 2, 32, seed=seed))
  a, b, c = run(0), run(0), run(1)
  assert len(a) == 3 and all(x["chosen_inputs"].shape == (2, 32) for x in a)
  assert all(np.array_equal(x["chosen_inputs"], y["chosen_inputs"]) for x, y in zip(a, b))
  assert not all(np.array_equal(x["chosen_inputs"], y["chosen_inputs"]) for x, y in zip(a, c))
  assert not a[-1]["chosen_loss_mask"][1].any()  # the 6th row pads the last batch
  refs = sorted(float(v) for x in a for v in x["ref_chosen_logps"][x["chosen_loss_mask"].any(1)])
  assert refs == [-4.0, -3.0, -2.0, -1.0, 0.0]
  # Each row's reference belongs to that row's pair.
  for x in a:
    for i in np.flatnonzero(x["chosen_loss_mask"].any(1)):
      k = int(tok.decode(x["chosen_targets"][i][x["chosen_loss_mask"][i] == 1])[1:])
      assert x["ref_rejected_logps"][i] == -10.0 - k
  assert len(list(data.iterate_batches(pairs, 2, 32, drop_remainder=True))) == 2
  with pytest.raises(ValueError, match="exceeds seq_len"):
    data.make_batch(pairs[:1], 4)


# --- the RL dataset: logical shards (host-count independent), padded eval, reference cache key


def _qa_pairs(tok, n, ref=False):
  pairs = [data.tokenize_pair([{"role": "user", "content": f"q{i}"}], f"a{i}", f"b{i}!", tok)
           for i in range(n)]
  if ref:
    pairs = data.attach_reference_logprobs(pairs, np.array([[-i, -100.0 - i] for i in range(n)]))
  return pairs


def _answer(tok, batch, i):
  """Which pair row i of a batch is (its chosen answer 'a<k>' -> k)."""
  mask = batch["chosen_loss_mask"][i] == 1
  return int(tok.decode(batch["chosen_targets"][i][mask])[1:])


def _global_batches(pairs, processes, steps, **kw):
  """The global batches (rows of process 0, then process 1, ...) of `processes` simulated hosts."""
  its = [iter(data.make_pair_dataset(pairs, 32, 8, process_index=p, process_count=processes,
                                     **kw)) for p in range(processes)]
  out = []
  for _ in range(steps):
    parts = [next(it, None) for it in its]
    if any(p is None for p in parts):
      break
    out.append({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
  return out


@pytest.mark.parametrize("num_shards", [2, 4])
def test_rl_global_batches_do_not_depend_on_the_host_count(tok, num_shards):
  pairs = _qa_pairs(tok, 11, ref=True)
  one = _global_batches(pairs, 1, 6, seed=3, num_shards=num_shards)
  for hosts in (2, num_shards):
    many = _global_batches(pairs, hosts, 6, seed=3, num_shards=num_shards)
    assert len(one) == len(many) == 6  # past the end of each shard's epoch (repeats forever)
    for a, b in zip(one, many):
      assert sorted(a) == sorted(b)
      for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=(hosts, k))
  assert all(b["row_mask"].tolist() == [1.0] * 8 for b in one)
  # Without num_shards each host is its own shard: 2 hosts make a different first batch.
  default_two = _global_batches(pairs, 2, 1, seed=3)
  default_one = _global_batches(pairs, 1, 1, seed=3)
  assert not np.array_equal(default_two[0]["chosen_inputs"], default_one[0]["chosen_inputs"])


@pytest.mark.parametrize("hosts, num_shards", [(1, 0), (1, 2), (2, 2), (2, 0), (4, 4)])
def test_eval_batches_are_padded_to_the_global_batch_with_row_mask(tok, hosts, num_shards):
  pairs = _qa_pairs(tok, 14, ref=True)
  batches = _global_batches(pairs, hosts, 10, shuffle=False, num_epochs=1, final_batch="pad",
                            num_shards=num_shards)
  assert [b["row_mask"].sum() for b in batches] == [8.0, 6.0]  # 14 = 8 + 6 real rows
  seen = []
  for b in batches:
    assert b["chosen_inputs"].shape == (8, 32) and b["row_mask"].dtype == np.float32
    assert set(b) == set(batches[0])  # the same keys in every batch (ref_* included)
    for i in range(8):
      if b["row_mask"][i]:
        k = _answer(tok, b, i)
        seen.append(k)
        assert b["ref_rejected_logps"][i] == -100.0 - k  # the row's own reference
      else:  # padding: no token, no reference, weight 0 in the losses
        assert not b["chosen_loss_mask"][i].any() and not b["rejected_segment_ids"][i].any()
        assert b["ref_chosen_logps"][i] == 0.0
  assert sorted(seen) == list(range(14))  # every held-out pair exactly once


@pytest.mark.parametrize("n, epochs, shards", [(11, 1, 1), (11, 3, 2), (30, 2, 4), (7, 1, 1)])
def test_count_batches_is_what_a_finite_run_yields(tok, n, epochs, shards):
  pairs = _qa_pairs(tok, n)
  got = sum(1 for _ in data.make_pair_dataset(pairs, 32, 8, num_epochs=epochs, num_shards=shards,
                                              process_index=0, process_count=1))
  assert data.count_batches(n, 8, epochs, shards) == got


def test_too_few_pairs_for_the_shards_is_an_error(tok):
  with pytest.raises(ValueError, match="shard 2 of 3 got no records"):
    list(data.make_pair_dataset(_qa_pairs(tok, 2), 32, 6, num_shards=3, process_index=0,
                                process_count=1))


def test_files_digest_follows_the_content(tmp_path):
  a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
  a.write_text('{"prompt": "p", "chosen": "x", "rejected": "y"}\n')
  b.write_bytes(a.read_bytes())
  assert data.files_digest(str(a)) == data.files_digest(str(b))  # content, not the name
  before = data.files_digest(f"{a},{b}")
  b.write_text('{"prompt": "p", "chosen": "x", "rejected": "z"}\n')
  assert data.files_digest(f"{a},{b}") != before
  assert data.files_digest([str(a), str(b)]) == data.files_digest(f"{a},{b}")
