"""SFT data: loss masks against transformers, the target shift, truncation, formats, bad input,
the zero-trained-batch check, epoch step counts and exact resume."""
import importlib.util
import json
import os

import grain
import numpy as np
import pytest

from citrus_jax import chat
from citrus_jax import tokenizer as tk
from citrus_jax.data import sft
from citrus_jax.data.sources import DataError
from helpers import with_generation_tags

HERE = os.path.dirname(__file__)
SFT = os.path.join(HERE, "fixtures", "sft")
CITRUS, CHAT, ARRAY = (os.path.join(SFT, f) for f in ("citrus.jsonl", "chat.jsonl",
                                                      "mixed_array.json"))
CORPUS = os.path.join(HERE, "fixtures", "tokenizer", "corpus.txt")
_spec = importlib.util.spec_from_file_location(
    "tokenizer_builders", os.path.join(HERE, "fixtures", "tokenizer", "builders.py"))
builders = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builders)


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
  root = tmp_path_factory.mktemp("sft_tok")
  return {
      "sp_llama3": tk.load_tokenizer(tk.train_sentencepiece([CORPUS], str(root / "l"), 600)),
      "sp_chatml": tk.load_tokenizer(
          tk.train_sentencepiece([CORPUS], str(root / "c"), 600, chat_format="chatml")),
      "bpe_llama3": tk.load_tokenizer(builders.llama3_like(CORPUS, str(root / "bl"))),
      "bpe_chatml": tk.load_tokenizer(
          builders.qwen_like(CORPUS, str(root / "bq"), chat_template=chat.CHATML_TEMPLATE)),
  }


def _records(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("kind", ["sp_llama3", "sp_chatml", "bpe_llama3", "bpe_chatml"])
def test_weights_are_transformers_assistant_masks_and_shift_to_targets(toks, kind, tmp_path):
  transformers = pytest.importorskip("transformers")
  tok = toks[kind]
  tok.save_hf(str(tmp_path / "hf"))
  hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
  tagged = with_generation_tags(tok.chat_template, tok.chat_format)
  eot = chat.END_OF_TURN[tok.chat_format]
  records = _records(CITRUS) + _records(CHAT)
  for record in records:
    messages = sft.to_messages(record)
    tokens, weights = sft.encode(messages, tok)
    ref = hf.apply_chat_template(messages, chat_template=tagged, return_dict=True,
                                 return_assistant_tokens_mask=True)
    assert tokens.tolist() == ref["input_ids"]
    assert weights.astype(int).tolist() == ref["assistant_masks"]
    # Decoding the trained tokens gives exactly each assistant content and its end-of-turn.
    trained = tokens[weights > 0]
    contents = [m["content"].strip() if tok.chat_format == "llama3" else m["content"]
                for m in messages if m["role"] == "assistant"]
    assert tok.decode(trained, skip_special=False) == "".join(c + eot for c in contents)
    # In a training row the prediction OF token j+1 (target j) is trained iff weights[j+1].
    row = sft.ToRow(len(tokens) + 5)({"tokens": tokens, "weights": weights})
    n = len(tokens) - 1
    assert row["targets"][:n].tolist() == tokens[1:].tolist()
    assert row["inputs"][:n].tolist() == tokens[:-1].tolist()
    assert row["loss_mask"][:n].tolist() == weights[1:].tolist()
    assert not row["loss_mask"][n:].any() and not row["segment_ids"][n + 1:].any()


def test_packed_rows_train_exactly_the_assistant_targets(toks):
  tok = toks["sp_llama3"]
  data = sft.load_sft([CHAT, ARRAY], tok, 128)
  examples = [sft.encode(data.records[i]["messages"], tok) for i in range(len(data.records))]
  ds = sft.make_sft_dataset(data, tok, 128, 2, shuffle=False, num_epochs=1, final_batch="pad",
                            process_index=0, process_count=1)
  rows = [{k: v[r] for k, v in b.items()} for b in ds for r in range(len(b["inputs"]))]
  assert max(r["segment_ids"].max() for r in rows) >= 2  # several examples share a row
  got = []  # (input tokens, their loss mask, the target after the last one) per segment
  for row in rows:
    for s in range(1, row["segment_ids"].max() + 1):
      idx = np.flatnonzero(row["segment_ids"] == s)
      got.append((row["inputs"][idx], row["loss_mask"][idx], row["targets"][idx[-1]]))
  assert len(got) == len(examples)
  for (inputs, mask, last_target), (ref_tokens, ref_weights) in zip(got, examples):
    n = len(ref_tokens)
    if len(inputs) == n:  # the example ends inside the row: its last input predicts nothing
      assert mask[-1] == 0
    else:  # the example ends the row: its last token appears only as the last target
      assert len(inputs) == n - 1 and last_target == ref_tokens[-1]
    assert inputs.tolist() == ref_tokens[:len(inputs)].tolist()
    assert mask[:n - 1].tolist() == ref_weights[1:].tolist()
  total = sum(r["loss_mask"].sum() for r in rows)
  assert total == data.audit.trained_tokens == sum(w[1:].sum() for _, w in examples)


@pytest.mark.parametrize("pack", [True, False])
def test_left_truncation_keeps_the_end_and_is_counted(toks, pack):
  tok = toks["sp_llama3"]
  seq_len = 40
  data = sft.load_sft(CITRUS, tok, seq_len)
  full = [sft.encode(data.records[i]["messages"], tok) for i in range(len(data.records))]
  long = [(t, w) for t, w in full if len(t) > seq_len + 1]
  assert data.audit.truncated == len(long) == 4
  assert data.audit.truncated_tokens == sum(len(t) - seq_len - 1 for t, _ in long)
  assert data.audit.tokens == sum(min(len(t), seq_len + 1) for t, _ in full)
  ds = sft.make_sft_dataset(data, tok, seq_len, 4, pack=pack, shuffle=False, num_epochs=1,
                            process_index=0, process_count=1)
  batch = next(iter(ds))
  for r, (tokens, weights) in enumerate(full):
    kept = tokens[-(seq_len + 1):]
    assert batch["inputs"][r].tolist() == kept[:-1].tolist()
    assert batch["targets"][r].tolist() == kept[1:].tolist()
    assert batch["targets"][r, -1] == tok.eot_id  # the end (answer + end-of-turn) survives
    assert batch["loss_mask"][r].tolist() == weights[-seq_len:].tolist()
  out = sft.show_examples(data, tok, seq_len, 1, color=False)
  assert "cut from the start" in out and out.rstrip().endswith("<|eot_id|>]]")


def test_all_formats_give_the_same_examples(toks, tmp_path):
  datasets = pytest.importorskip("datasets")
  tok = toks["sp_chatml"]
  records = _records(CITRUS)
  as_messages = [{"messages": sft.to_messages(r)} for r in records]
  (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in as_messages))
  (tmp_path / "a.json").write_text(json.dumps(records, indent=2))
  # (from_list takes its columns from the first row: give every row a "system", None if absent)
  datasets.Dataset.from_list([{"system": None, **r} for r in records]).save_to_disk(
      str(tmp_path / "hf"))
  datasets.Dataset.from_list(as_messages).save_to_disk(str(tmp_path / "hf_m"))

  def tokens_of(path):
    data = sft.load_sft(path, tok, 512)
    return [sft.encode(data.records[i]["messages"], tok)[0].tolist()
            for i in range(len(data.records))]

  ref = tokens_of(CITRUS)
  assert len(ref) == 4 and any(ref[0] != r for r in ref[1:])
  for path in ("m.jsonl", "a.json", "hf", "hf_m"):
    assert tokens_of(str(tmp_path / path)) == ref, path
  assert sft.load_sft(str(tmp_path / "hf"), tok, 512).records[1]["where"].endswith("hf:row 1")
  # The optional system prompt is the first turn.
  assert "expert clinician" in chat.render(sft.to_messages(records[1]), tok).text.split(
      "<|im_end|>")[0]


BAD = [
    ('{"input": "q", "target": "a"', "bad_json", "invalid JSON"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "no_assistant", "no assistant turn"),
    ('{"input": "q", "target": "  "}', "empty_target", "field 'target' is empty"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}',
     "empty_target", "empty assistant content"),
    ('{"input": "q"}', "missing_field", "missing field 'target'"),
    ('{"prompt": "q", "completion": "a"}', "missing_field", "expected field 'messages'"),
    ('{"messages": [{"role": "doctor", "content": "q"}]}', "bad_field", "role 'doctor'"),
    ('{"input": 3, "target": "a"}', "bad_field", "field 'input' is int"),
    ('["input", "target"]', "not_object", "expected a JSON object"),
    ('{"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}',
     "bad_field", "field 'conversations'[1]: from 'bot'"),
    ('{"instruction": "q", "input": "x"}', "missing_field", "missing field 'output'"),
    ('{"input": "q", "output": " "}', "empty_target", "field 'output' is empty"),
]


@pytest.mark.parametrize("line,reason,words", BAD)
def test_bad_record_raises_with_file_and_line(toks, tmp_path, line, reason, words):
  path = tmp_path / "bad.jsonl"
  good = json.dumps({"input": "Which test first?", "target": "An ECG."})
  path.write_text(f"{good}\n\n{line}\n{good}\n")
  with pytest.raises(DataError) as e:
    sft.load_sft(str(path), toks["sp_llama3"], 64)
  assert f"{path}:3:" in str(e.value) and words in str(e.value)
  data = sft.load_sft(str(path), toks["sp_llama3"], 64, on_error="skip")
  assert data.audit.examples == 2 and data.audit.skips.as_dict() == {reason: 1}
  assert data.audit.skips.first[reason] == f"{path}:3"
  assert f"{reason}=1" in data.audit.format()


def test_nothing_trainable_is_an_error(toks, tmp_path):
  tok = toks["sp_llama3"]
  # The assistant turn is followed by a long user turn: the kept end holds no trained token.
  rec = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A."},
                      {"role": "user", "content": "fever cough " * 40}]}
  path = tmp_path / "late.jsonl"
  path.write_text(json.dumps(rec) + "\n")
  with pytest.raises(DataError, match=r"late.jsonl:1: all 3 assistant tokens fall outside"):
    sft.load_sft(str(path), tok, 32)
  with pytest.raises(DataError, match="no valid SFT examples.*no_trained_after_truncation=1"):
    sft.load_sft(str(path), tok, 32, on_error="skip")
  bad_json = tmp_path / "array.json"
  bad_json.write_text('[{"input": "q", "target": "a"},\n {"input": }]')
  with pytest.raises(DataError, match=r"array.json:2: field '<json>': invalid JSON"):
    sft.load_sft(str(bad_json), tok, 32)


def _fake_batches(masks):
  out = []
  for m in masks:
    m = np.asarray(m, np.float32)
    out.append({"inputs": np.zeros(m.shape, np.int32), "loss_mask": m})
  return out


def test_batch_without_trained_tokens_raises_naming_the_step():
  masks = [[[1, 0]], [[0, 1]], [[0, 0]], [[1, 1]]]
  ds = sft.CheckTrained(grain.MapDataset.source(_fake_batches(masks)).to_iter_dataset(), "sft2")
  it = iter(ds)
  next(it)
  state = it.get_state()
  next(it)
  with pytest.raises(DataError, match=r"\[sft2\] the batch for step 3 has no trained tokens"):
    next(it)
  it2 = iter(ds)
  it2.set_state(state)  # resumed after step 1: the count continues
  next(it2)
  with pytest.raises(DataError, match="step 3"):
    next(it2)


@pytest.mark.parametrize("pack", [True, False])
def test_epoch_step_count_and_exact_resume(toks, pack):
  tok = toks["sp_llama3"]
  data = sft.load_sft([CITRUS, CHAT, ARRAY], tok, 96)
  kw = dict(pack=pack, seed=3, shuffle=True, num_epochs=3)
  for pc in (1, 2):
    n = [sum(1 for _ in sft.make_sft_dataset(data, tok, 96, 4, process_index=p,
                                              process_count=pc, **kw)) for p in range(pc)]
    assert sft.count_batches(data, 96, 4, 3, pack=pack, seed=3, process_count=pc) == min(n) > 0
  it = iter(sft.make_sft_dataset(data, tok, 96, 2, process_index=0, process_count=1, **kw))
  for _ in range(2):
    next(it)
  state = it.get_state()
  ahead = [next(it) for _ in range(3)]
  it2 = iter(sft.make_sft_dataset(data, tok, 96, 2, process_index=0, process_count=1, **kw))
  it2.set_state(state)
  for a in ahead:
    b = next(it2)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_format_example_marks_trained_spans(toks):
  tok = toks["sp_chatml"]
  messages = sft.to_messages({"input": "Which test first?", "target": "An ECG."})
  tokens, weights = sft.encode(messages, tok)
  text = sft.format_example(tokens, weights, tok, color=False)
  assert text.count("[[") == 1 and "[[An ECG.<|im_end|>]]" in text
  assert "Which test first?" in text.split("[[")[0]
  colored = sft.format_example(tokens, weights, tok, color=True)
  assert "\x1b[1;32mAn ECG.<|im_end|>\x1b[0m" in colored


def test_example_batches_match_the_reference_step_count(toks):
  """global_batch_size counted in examples: steps = epochs x floor(N / G) as the reference's
  drop_last DataLoader of one example per sequence trains; packed rows per step chosen so the
  epochs' rows fill exactly those steps."""
  tok = toks["sp_llama3"]
  data = sft.load_sft([CITRUS, CHAT, ARRAY], tok, 384)
  n = data.audit.examples
  G, E = 4, 3
  assert sft.example_steps(n, G, E) == E * (n // G)
  # The reference's loop (drop_last per epoch, one example per sequence), counted directly.
  ref_steps = sum(len(range(0, n - G + 1, G)) for _ in range(E))
  flat = sft.plan_example_batches(data, 384, G, E, pack=False)
  assert (flat.steps, flat.rows_per_step) == (ref_steps, G)
  packed = sft.plan_example_batches(data, 384, G, E, pack=True, seed=3, multiple_of=2)
  assert packed.steps == ref_steps and packed.rows_per_step % 2 == 0
  assert packed.rows_per_step < G  # denser rows: fewer rows than examples per step
  batches = list(sft.make_sft_dataset(data, tok, 384, packed.rows_per_step, pack=True, seed=3,
                                      num_epochs=E, process_index=0, process_count=1))
  assert len(batches) >= packed.steps  # E epochs fill the steps...
  seen = sum(len(set(row[row > 0].tolist())) for b in batches[:packed.steps]
             for row in np.asarray(b["segment_ids"]))
  assert seen / packed.steps == pytest.approx(G, rel=0.35)  # ...at ~G examples per step
  print(f"\n[sft] {n} examples, G={G}, E={E}: {packed.steps} steps of {packed.rows_per_step} "
        f"packed rows, {seen / packed.steps:.2f} examples per step")
  assert "as the reference counts" in packed.describe()
  with pytest.raises(ValueError, match="no full batch"):
    sft.plan_example_batches(data, 384, n + 1, E)
  with pytest.raises(ValueError, match="does not split over 3"):
    sft.plan_example_batches(data, 384, G, E, pack=False, multiple_of=3)


@pytest.mark.parametrize("n", [20000, 7_000_000, 1_400_000, 60000, 513, 1000])
def test_example_steps_equal_the_reference_loop(n):
  """The reference (supervised_finetune.py, 32 processes x 2 per GPU x 8 accumulation = 512):
  optimizer steps its loop takes over 3 epochs, and its scheduler's num_training_steps."""
  world, per_gpu, accum, epochs = 32, 2, 8, 3
  per_process = n // (per_gpu * world)  # accelerate-sharded drop_last loader, per epoch
  loop_steps = (epochs * per_process) // accum  # optimizer.step every accum micro-batches
  scheduler_steps = int((n // per_gpu) * epochs) // accum // world
  ours = sft.example_steps(n, per_gpu * world * accum, epochs)
  assert abs(ours - loop_steps) < epochs and abs(ours - scheduler_steps) < epochs
  if n == 20000:  # Citrus_S3's 20k examples
    assert ours == loop_steps == scheduler_steps == 117
