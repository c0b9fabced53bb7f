"""Tokenizer tests: SentencePiece training and HF tokenizer.json, both against transformers."""
import importlib.util
import json
import os
import random

import pytest
import sentencepiece as spm

from citrus_jax import chat
from citrus_jax import tokenizer as tk

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "tokenizer")
CORPUS = os.path.join(FIXTURES, "corpus.txt")
_spec = importlib.util.spec_from_file_location("tokenizer_builders",
                                               os.path.join(FIXTURES, "builders.py"))
builders = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builders)

TEXTS = [
    "Hello world",
    "A 67-year-old man presents with fever.",
    "  two  spaces\n\n\nnewlines\t\ttabs   ",
    "1234567 mm Hg, 3.14159, 2025-01-31",
    "患者发热三天，伴有咳嗽。未见过的字：龘靐",
    "emoji 🙂🫀 and accents: Ünïcödé ßtraße café",
    " leading space and trailing space ",
    "<s>bos</s>eos<pad>pad<unk>unk",
    "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
    "<|im_start|>assistant\nno chatml tokens here<|im_end|>",
    "",
]


def random_texts(n, seed=0):
  rng = random.Random(seed)
  pool = (list("abcxyzABC 0123456789\n\t.,;:!?'\"()-/éü患者发热咳嗽🙂") +
          ["<s>", "</s>", "<|eot_id|>", "<|im_end|>", "  ", "\r\n", " the", "'s"])
  return ["".join(rng.choice(pool) for _ in range(rng.randint(0, 40))) for _ in range(n)]


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
  return tk.train_sentencepiece([CORPUS], str(tmp_path_factory.mktemp("sp") / "sp"), 600)


@pytest.fixture(scope="module")
def sp_tok(sp_model):
  return tk.load_tokenizer(sp_model)


@pytest.fixture(scope="module")
def auto_tokenizer():
  transformers = pytest.importorskip("transformers")
  return transformers.AutoTokenizer.from_pretrained


def test_train_is_deterministic(sp_model, tmp_path):
  with open(sp_model, "rb") as f:
    first = f.read()
  prefix = sp_model[:-len(".model")]
  assert tk.train_sentencepiece([CORPUS], prefix, 600) == sp_model
  with open(sp_model, "rb") as f:
    assert f.read() == first
  # More threads: the same pieces and scores.
  other = tk.train_sentencepiece([CORPUS], str(tmp_path / "t2"), 600, num_threads=2)
  a, b = (spm.SentencePieceProcessor(model_file=p) for p in (sp_model, other))
  assert [(a.id_to_piece(i), a.get_score(i)) for i in range(600)] == [
      (b.id_to_piece(i), b.get_score(i)) for i in range(600)]


def test_sentencepiece_layout(sp_tok, sp_model):
  sp = spm.SentencePieceProcessor(model_file=sp_model)
  assert [sp.id_to_piece(i) for i in range(4)] == ["<unk>", "<s>", "</s>", "<pad>"]
  assert (sp_tok.bos_id, sp_tok.eos_id, sp_tok.pad_id, sp_tok.vocab_size) == (1, 2, 3, 600)
  assert sp_tok.chat_format == "llama3" and sp_tok.chat_template == chat.LLAMA3_TEMPLATE
  ids = [sp_tok.token_to_id(t) for t in chat.CHAT_TOKENS["llama3"]]
  assert ids == [4, 5, 6] and sp_tok.eot_id == 6 and sp_tok.stop_ids == (2, 6)
  assert sp_tok.token_to_id("<|im_end|>") is None
  assert sp_tok.token_to_id("<unk>") == 0
  # Byte fallback: an unseen character still round-trips, through byte pieces.
  assert any(sp.is_byte(i) for i in sp_tok.encode("龘"))


def test_sentencepiece_chatml_and_extra_symbols(tmp_path):
  model = tk.train_sentencepiece([CORPUS], str(tmp_path / "c"), 500, chat_format="chatml",
                                 user_defined_symbols=["<think>", "</think>"])
  tok = tk.SentencePieceTokenizer(model)
  assert tok.chat_format == "chatml" and tok.eot_id == tok.token_to_id("<|im_end|>")
  think = tok.token_to_id("<think>")
  assert tok.encode("<think>x</think>")[0] == think
  # Chat tokens are special (skipped), other user symbols are content (kept).
  assert tok.decode(tok.encode("<|im_start|>a<think>b<|im_end|>")) == "a<think>b"


@pytest.mark.parametrize("text", TEXTS)
def test_sentencepiece_round_trip(sp_tok, text):
  ids = sp_tok.encode(text)
  assert sp_tok.decode(ids, skip_special=False) == text


def test_special_strings_are_single_ids(sp_tok):
  ids = sp_tok.encode("<s>x</s><|eot_id|>")
  assert ids[0] == 1 and ids[-2:] == [2, 6]
  assert sp_tok.decode(ids) == "x"
  with pytest.raises(ValueError, match="outside the vocabulary"):
    sp_tok.decode([600])


def test_sentencepiece_save_hf_matches_transformers(sp_tok, auto_tokenizer, tmp_path):
  sp_tok.save_hf(str(tmp_path))
  hf = auto_tokenizer(str(tmp_path))
  for text in TEXTS + random_texts(300):
    ids = sp_tok.encode(text)
    assert hf(text, add_special_tokens=False)["input_ids"] == ids, text
    assert hf.decode(ids) == sp_tok.decode(ids, skip_special=False), text
    assert hf.decode(ids, skip_special_tokens=True) == sp_tok.decode(ids), text
  assert hf("Hi")["input_ids"] == [1] + sp_tok.encode("Hi")  # HF adds BOS by default, as Llama
  assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (1, 2, 3)
  assert hf.convert_tokens_to_ids("<|eot_id|>") == sp_tok.eot_id
  assert hf.chat_template == sp_tok.chat_template
  # The exported directory loads back as our SentencePiece tokenizer, template included.
  again = tk.load_tokenizer(str(tmp_path))
  assert isinstance(again, tk.SentencePieceTokenizer) and again.chat_format == "llama3"
  assert again.encode(TEXTS[4]) == sp_tok.encode(TEXTS[4])


def test_save_hf_refuses_models_transformers_cannot_reproduce(tmp_path):
  spm.SentencePieceTrainer.train(input=CORPUS, model_prefix=str(tmp_path / "u"), vocab_size=300,
                                 model_type="unigram", minloglevel=2)
  tok = tk.SentencePieceTokenizer(str(tmp_path / "u.model"))
  assert tok.chat_format == "plain"
  with pytest.raises(ValueError, match="u.model.*BPE"):
    tok.save_hf(str(tmp_path / "out"))


@pytest.mark.parametrize("kind", ["llama3_base", "llama3_instruct", "qwen"])
def test_hf_tokenizer_matches_transformers(kind, auto_tokenizer, tmp_path):
  if kind == "qwen":
    path = builders.qwen_like(CORPUS, str(tmp_path / "src"), chat_template=chat.CHATML_TEMPLATE)
  else:
    template = chat.LLAMA3_TEMPLATE if kind == "llama3_instruct" else None
    path = builders.llama3_like(CORPUS, str(tmp_path / "src"), chat_template=template)
  tok = tk.load_tokenizer(path)
  hf = auto_tokenizer(path)
  assert isinstance(tok, tk.HFTokenizer) and tok.vocab_size == len(hf)
  assert tok.chat_format == ("chatml" if kind == "qwen" else "llama3")
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (hf.bos_token_id, hf.eos_token_id,
                                                  hf.pad_token_id)
  assert tok.eot_id == hf.convert_tokens_to_ids(chat.END_OF_TURN[tok.chat_format])
  texts = TEXTS + random_texts(200)
  for text in texts:
    ids = tok.encode(text)
    assert ids == hf(text, add_special_tokens=False)["input_ids"], text
    assert tok.decode(ids, skip_special=False) == hf.decode(ids) == text
  # save_hf: same ids, and the template travels (a base Llama-3 gets ours).
  out = str(tmp_path / "out")
  tok.save_hf(out)
  hf2 = auto_tokenizer(out)
  assert hf2.chat_template == tok.chat_template == chat.TEMPLATES[tok.chat_format]
  for text in texts:
    assert hf2(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
  assert tk.load_tokenizer(os.path.join(out, "tokenizer.json")).encode("abc") == tok.encode("abc")


def test_hf_reads_chat_template_jinja_and_infers_format(tmp_path):
  path = builders.qwen_like(CORPUS, str(tmp_path), vocab_size=400)
  assert tk.HFTokenizer(path).chat_format == "chatml"  # no template: from the vocabulary
  custom = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
  with open(os.path.join(path, "chat_template.jinja"), "w") as f:
    f.write(custom)
  tok = tk.HFTokenizer(path)
  assert tok.chat_template == custom and tok.chat_format == "chatml"
  forced = tk.HFTokenizer(path, chat_format="plain")
  assert forced.chat_template == chat.PLAIN_TEMPLATE
  with pytest.raises(ValueError, match="needs tokens"):
    tk.HFTokenizer(path, chat_format="llama3")


def test_hf_bad_config_errors_name_the_file(tmp_path):
  path = builders.qwen_like(CORPUS, str(tmp_path), vocab_size=400)
  config = os.path.join(path, "tokenizer_config.json")
  with open(config, "w") as f:
    json.dump({"eos_token": "<|not_a_token|>"}, f)
  with pytest.raises(ValueError, match="tokenizer_config.json.*eos_token"):
    tk.HFTokenizer(path)
  with open(config, "w") as f:
    f.write('{\n  "eos_token": "<|im_end|>",\n}')
  with pytest.raises(ValueError, match="tokenizer_config.json: line 3"):
    tk.HFTokenizer(path)


def test_load_tokenizer_dispatch_and_errors(sp_model, tmp_path):
  assert isinstance(tk.load_tokenizer(sp_model), tk.SentencePieceTokenizer)
  with pytest.raises(FileNotFoundError, match="nowhere"):
    tk.load_tokenizer(str(tmp_path / "nowhere"))
  with pytest.raises(ValueError, match="neither tokenizer.json nor tokenizer.model"):
    tk.load_tokenizer(str(tmp_path))
  other = tmp_path / "vocab.txt"
  other.write_text("a\nb\n")
  with pytest.raises(ValueError, match="vocab.txt: not a tokenizer"):
    tk.load_tokenizer(str(other))
  with pytest.raises(FileNotFoundError, match="missing.txt"):
    tk.train_sentencepiece([str(tmp_path / "missing.txt")], str(tmp_path / "m"), 300)
  with pytest.raises(ValueError, match="vocab_size=100000"):
    tk.train_sentencepiece([CORPUS], str(tmp_path / "m"), 100000)


def test_sentencepiece_tokenizer_pickles_for_worker_processes(tmp_path):
  import pickle
  corpus = tmp_path / "c.txt"
  corpus.write_text("fever and cough with chest pain\n" * 50 + "migraine with aura\n" * 50)
  model = tk.train_sentencepiece([str(corpus)], str(tmp_path / "sp"), 300)
  tok = tk.load_tokenizer(model)
  clone = pickle.loads(pickle.dumps(tok))
  text = "fever with aura <|eot_id|> 123"
  assert clone.encode(text) == tok.encode(text) and clone.chat_format == tok.chat_format
