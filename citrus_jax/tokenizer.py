"""Tokenizers behind one small interface: our SentencePiece BPE, or a checkpoint's tokenizer.json.

`encode` never adds BOS/EOS: chat templates and data pipelines write them where they belong.
Special-token strings in text ("<s>", "<|eot_id|>", ...) become their single ids, as in
transformers. `save_hf(dir)` writes files that `transformers.AutoTokenizer.from_pretrained(dir)`
loads offline with the same ids and the chat template.

Our SentencePiece layout (Llama-2 style): 0 <unk>, 1 <s> (BOS), 2 </s> (EOS), 3 <pad> (a dedicated
pad, so masking padding never masks EOS), then the chat tokens and other user symbols, then the
256 byte-fallback pieces, then the merges. It is trained as BPE with the identity normalizer, no
whitespace collapsing and no dummy "▁" prefix: the HF converter then reproduces it exactly, and a
piece of text gets the same ids alone or after a special token, which chat rendering relies on.
"""
from __future__ import annotations

import abc
import json
import os
import re
from typing import Any, Sequence

import sentencepiece as spm
import tokenizers
from sentencepiece import sentencepiece_model_pb2

from citrus_jax import chat

_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                 "mask_token")
_ALL_CHAT_TOKENS = frozenset(t for toks in chat.CHAT_TOKENS.values() for t in toks)


class Tokenizer(abc.ABC):
  """The interface the rest of citrus_jax uses."""

  chat_format: str  # "llama3" | "chatml" | "plain"
  chat_template: str  # Jinja, rendered by citrus_jax.chat
  special_tokens: dict[str, str]  # e.g. {"bos_token": "<s>", ...}; also template variables

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Ids of `text`, no special tokens added."""

  @abc.abstractmethod
  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
    """Text of `ids`; skip_special drops BOS/EOS/pad/unk and chat tokens."""

  @abc.abstractmethod
  def token_to_id(self, token: str) -> int | None:
    """Id of one vocabulary entry, e.g. "<|eot_id|>"; None if absent."""

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of ids, added tokens included (a model's embedding may be larger)."""

  @abc.abstractmethod
  def save_hf(self, out_dir: str) -> None:
    """Writes tokenizer files (with the chat template) for transformers.AutoTokenizer."""

  def _id_of(self, key: str) -> int | None:
    token = self.special_tokens.get(key)
    return None if token is None else self.token_to_id(token)

  @property
  def bos_id(self) -> int | None:
    return self._id_of("bos_token")

  @property
  def eos_id(self) -> int | None:
    return self._id_of("eos_token")

  @property
  def pad_id(self) -> int | None:
    return self._id_of("pad_token")

  @property
  def eot_id(self) -> int | None:
    """The id that closes an assistant turn: <|eot_id|>, <|im_end|>, or EOS for "plain"."""
    token = chat.END_OF_TURN.get(self.chat_format)
    return self.eos_id if token is None else self.token_to_id(token)

  @property
  def stop_ids(self) -> tuple[int, ...]:
    """Ids that end generation (EOS and the end-of-turn token)."""
    return tuple(sorted({i for i in (self.eos_id, self.eot_id) if i is not None}))


def _read_json(path: str) -> dict[str, Any]:
  if not os.path.isfile(path):
    return {}
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: line {e.lineno}: invalid JSON: {e.msg}") from e
  if not isinstance(data, dict):
    raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
  return data


def _read_template(directory: str, config: dict[str, Any]) -> str | None:
  """The chat template as transformers finds it: chat_template.jinja, else tokenizer_config."""
  path = os.path.join(directory, "chat_template.jinja")
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      return f.read()
  template = config.get("chat_template")
  if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
    named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
    template = named.get("default")
  if template is not None and not isinstance(template, str):
    raise ValueError(f"{directory}/tokenizer_config.json: chat_template must be a string, "
                     f"got {type(template).__name__}")
  return template


def _pick_format(template: str | None, chat_format: str | None, has_token: Any,
                 where: str) -> tuple[str, str]:
  """(chat_format, template): an explicit format wins over a checkpoint template of another kind."""
  inferred = chat.infer_chat_format(template, has_token)
  if chat_format is None or chat_format == inferred:
    return inferred, template or chat.TEMPLATES[inferred]
  if chat_format not in chat.FORMATS:
    raise ValueError(f"unknown chat_format {chat_format!r}; expected one of {chat.FORMATS}")
  missing = [t for t in chat.CHAT_TOKENS[chat_format] if not has_token(t)]
  if missing:
    raise ValueError(f"{where}: chat_format={chat_format!r} needs tokens {missing} the "
                     "vocabulary lacks")
  return chat_format, chat.TEMPLATES[chat_format]


# ------------------------------------------------------------------------------- SentencePiece
_NORMAL, _UNKNOWN, _CONTROL, _USER, _BYTE = 1, 2, 3, 4, 6  # ModelProto.SentencePiece.Type
_BPE = 2  # TrainerSpec.ModelType


def train_sentencepiece(text_files: Sequence[str], model_prefix: str, vocab_size: int, *,
                        chat_format: str = "llama3",
                        user_defined_symbols: Sequence[str] = (),
                        character_coverage: float = 0.9995,
                        input_sentence_size: int = 0,
                        max_sentence_length: int = 16384,
                        split_by_whitespace: bool = True,
                        max_piece_length: int = 16,
                        num_threads: int = 1) -> str:
  """Trains our BPE layout (module doc) on text files, one sentence per line; returns the .model.

  The chat tokens of `chat_format` ("llama3" header tokens by default, or "chatml") are added as
  user symbols so they are single ids. `input_sentence_size` > 0 samples that many lines (with
  sentencepiece's fixed internal seed: spm.set_random_generator_seed has no effect on it in 0.2.3);
  0 uses them all. Lines longer than `max_sentence_length` bytes are skipped by sentencepiece.
  The same files and arguments give a byte-identical model; num_threads does not change the pieces.
  `split_by_whitespace=False` lets pieces span words (up to `max_piece_length` characters): on a
  small templated corpus, frequent phrases become single ids, so sequences are much shorter.
  """
  if chat_format not in chat.FORMATS:
    raise ValueError(f"unknown chat_format {chat_format!r}; expected one of {chat.FORMATS}")
  if isinstance(text_files, str):
    text_files = [text_files]
  for path in text_files:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: training text file not found")
  symbols = list(dict.fromkeys([*chat.CHAT_TOKENS[chat_format], *user_defined_symbols]))
  if os.path.dirname(model_prefix):
    os.makedirs(os.path.dirname(model_prefix), exist_ok=True)
  try:
    spm.SentencePieceTrainer.train(
        input=list(text_files), model_prefix=model_prefix, vocab_size=vocab_size,
        model_type="bpe", normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=False, byte_fallback=True, split_digits=True,
        allow_whitespace_only_pieces=True, character_coverage=character_coverage,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3, unk_piece="<unk>", bos_piece="<s>",
        eos_piece="</s>", pad_piece="<pad>", user_defined_symbols=symbols,
        input_sentence_size=input_sentence_size, shuffle_input_sentence=True,
        max_sentence_length=max_sentence_length, split_by_whitespace=split_by_whitespace,
        max_sentencepiece_length=max_piece_length, num_threads=num_threads, minloglevel=2)
  except RuntimeError as e:
    raise ValueError(f"sentencepiece training on {list(text_files)} with vocab_size={vocab_size} "
                     f"failed: {e}") from e
  return model_prefix + ".model"


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece .model, encoding like its transformers LlamaTokenizer export."""

  def __init__(self, model_file: str, *, chat_format: str | None = None,
               chat_template: str | None = None):
    if not os.path.isfile(model_file):
      raise FileNotFoundError(f"{model_file}: sentencepiece model not found")
    self.model_file = model_file
    self._sp = spm.SentencePieceProcessor(model_file=model_file)
    self._proto = sentencepiece_model_pb2.ModelProto()
    self._proto.ParseFromString(self._sp.serialized_model_proto())
    kinds = {p.piece: (i, p.type) for i, p in enumerate(self._proto.pieces)}
    # Pieces matched whole in raw text, like transformers' added tokens.
    self._atomic = {p: i for p, (i, t) in kinds.items() if t in (_UNKNOWN, _CONTROL, _USER)}
    self._split = re.compile("|".join(re.escape(p) for p in sorted(self._atomic, key=len,
                                                                    reverse=True)))
    self._skip = {i for p, (i, t) in kinds.items()
                  if t in (_UNKNOWN, _CONTROL) or (t == _USER and p in _ALL_CHAT_TOKENS)}
    sp = self._sp
    self.special_tokens = {key: sp.id_to_piece(i) for key, i in
                           (("bos_token", sp.bos_id()), ("eos_token", sp.eos_id()),
                            ("unk_token", sp.unk_id()), ("pad_token", sp.pad_id())) if i >= 0}
    has_user = lambda t: kinds.get(t, (0, 0))[1] == _USER
    self.chat_format, self.chat_template = _pick_format(chat_template, chat_format, has_user,
                                                        model_file)

  def __getstate__(self) -> dict:
    # Grain worker processes receive a pickled copy; protobuf objects don't pickle, the path does.
    return {"model_file": self.model_file, "chat_format": self.chat_format,
            "chat_template": self.chat_template}

  def __setstate__(self, state: dict) -> None:
    self.__init__(state["model_file"], chat_format=state["chat_format"],
                  chat_template=state["chat_template"])

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    if not isinstance(text, str):
      raise TypeError(f"encode expects a str, got {type(text).__name__}")
    ids: list[int] = []
    pos = 0
    for m in self._split.finditer(text):
      if m.start() > pos:
        ids += self._sp.encode(text[pos:m.start()])
      ids.append(self._atomic[m.group()])
      pos = m.end()
    if pos < len(text):
      ids += self._sp.encode(text[pos:])
    return ids

  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
    out: list[str] = []
    run: list[int] = []
    n = self.vocab_size
    for i in ids:
      i = int(i)
      if not 0 <= i < n:
        raise ValueError(f"token id {i} is outside the vocabulary [0, {n}) of {self.model_file}")
      if i in self._skip:
        if run:
          out.append(self._sp.decode(run))
          run = []
        if not skip_special:
          out.append(self._sp.id_to_piece(i))
      else:
        run.append(i)
    if run:
      out.append(self._sp.decode(run))
    return "".join(out)

  def token_to_id(self, token: str) -> int | None:
    i = self._sp.piece_to_id(token)
    return i if self._sp.id_to_piece(i) == token else None

  def save_hf(self, out_dir: str) -> None:
    """tokenizer.model + tokenizer_config.json for transformers' LlamaTokenizer, no prefix space."""
    spec, norm = self._proto.trainer_spec, self._proto.normalizer_spec
    if (spec.model_type != _BPE or norm.add_dummy_prefix or norm.remove_extra_whitespaces
        or norm.precompiled_charsmap):
      raise ValueError(f"{self.model_file}: transformers only reproduces BPE models trained with "
                       "the identity normalizer, no dummy prefix and no whitespace removal "
                       "(use train_sentencepiece)")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tokenizer.model"), "wb") as f:
      f.write(self._sp.serialized_model_proto())
    special = dict(self.special_tokens)
    added = {str(i): {"content": self._sp.id_to_piece(i), "lstrip": False, "normalized": False,
                      "rstrip": False, "single_word": False, "special": True}
             for i in sorted(self._skip)}
    config = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
              "add_prefix_space": False, "legacy": False, "clean_up_tokenization_spaces": False,
              **special, "added_tokens_decoder": added, "chat_template": self.chat_template}
    _write_json(os.path.join(out_dir, "tokenizer_config.json"), config)
    _write_json(os.path.join(out_dir, "special_tokens_map.json"), special)


# ---------------------------------------------------------------------------- HF tokenizer.json
class HFTokenizer(Tokenizer):
  """A checkpoint's tokenizer.json (Llama-3, Qwen2.5) read with `tokenizers`; no transformers."""

  def __init__(self, directory: str, *, chat_format: str | None = None):
    self.directory = directory
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: not found")
    try:
      self._tok = tokenizers.Tokenizer.from_file(path)
    except Exception as e:  # tokenizers raises a bare Exception on bad files
      raise ValueError(f"{path}: cannot read tokenizer: {e}") from e
    config_path = os.path.join(directory, "tokenizer_config.json")
    self._config = _read_json(config_path)
    token_map = _read_json(os.path.join(directory, "special_tokens_map.json"))
    self.special_tokens = {}
    for key in _SPECIAL_KEYS:
      value = self._config[key] if key in self._config else token_map.get(key)
      if isinstance(value, dict):  # serialized AddedToken
        value = value.get("content")
      if value is None:
        continue
      if not isinstance(value, str) or self._tok.token_to_id(value) is None:
        raise ValueError(f"{config_path}: {key}={value!r} is not a token of {path}")
      self.special_tokens[key] = value
    template = _read_template(directory, self._config)
    has = lambda t: self._tok.token_to_id(t) is not None
    self.chat_format, self.chat_template = _pick_format(template, chat_format, has, directory)

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str) -> list[int]:
    if not isinstance(text, str):
      raise TypeError(f"encode expects a str, got {type(text).__name__}")
    return self._tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
    ids = [int(i) for i in ids]
    n = self.vocab_size
    bad = [i for i in ids if not 0 <= i < n]
    if bad:
      raise ValueError(f"token id {bad[0]} is outside the vocabulary [0, {n}) of {self.directory}")
    return self._tok.decode(ids, skip_special_tokens=skip_special)

  def token_to_id(self, token: str) -> int | None:
    return self._tok.token_to_id(token)

  def save_hf(self, out_dir: str) -> None:
    """tokenizer.json + the checkpoint's tokenizer_config.json carrying our chat template."""
    os.makedirs(out_dir, exist_ok=True)
    self._tok.save(os.path.join(out_dir, "tokenizer.json"))
    config = {k: v for k, v in self._config.items() if k not in ("tokenizer_file", "name_or_path")}
    config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    config.update(self.special_tokens)
    config["chat_template"] = self.chat_template
    _write_json(os.path.join(out_dir, "tokenizer_config.json"), config)
    _write_json(os.path.join(out_dir, "special_tokens_map.json"), self.special_tokens)


def _write_json(path: str, data: dict[str, Any]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(data, f, indent=2, ensure_ascii=False)
    f.write("\n")


def load_tokenizer(path: str, *, chat_format: str | None = None) -> Tokenizer:
  """A .model file or a dir with only tokenizer.model -> SentencePiece; tokenizer.json -> HF."""
  if os.path.isdir(path):
    if os.path.isfile(os.path.join(path, "tokenizer.json")):
      return HFTokenizer(path, chat_format=chat_format)
    model = os.path.join(path, "tokenizer.model")
    if os.path.isfile(model):
      template = _read_template(path, _read_json(os.path.join(path, "tokenizer_config.json")))
      return SentencePieceTokenizer(model, chat_format=chat_format, chat_template=template)
    raise ValueError(f"{path}: directory holds neither tokenizer.json nor tokenizer.model")
  if os.path.isfile(path):
    if path.endswith(".model"):
      return SentencePieceTokenizer(path, chat_format=chat_format)
    if os.path.basename(path) == "tokenizer.json":
      return HFTokenizer(os.path.dirname(path) or ".", chat_format=chat_format)
    raise ValueError(f"{path}: not a tokenizer; expected a sentencepiece .model file, a "
                     "tokenizer.json, or a directory holding one")
  raise FileNotFoundError(f"{path}: no such tokenizer file or directory")
