"""Chat rendering tests: text and ids against transformers, assistant masks against its
{% generation %} masks, and the error cases."""
import importlib.util
import os

import pytest

from citrus_jax import chat
from citrus_jax import tokenizer as tk
from helpers import with_generation_tags

transformers = pytest.importorskip("transformers")

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "tokenizer")
CORPUS = os.path.join(FIXTURES, "corpus.txt")
_spec = importlib.util.spec_from_file_location("tokenizer_builders",
                                               os.path.join(FIXTURES, "builders.py"))
builders = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builders)

SYSTEM = {"role": "system", "content": "You are a careful clinician. "}
CONVERSATIONS = {
    "single": [{"role": "user", "content": "What causes fever?"},
               {"role": "assistant", "content": "Usually an infection; 38.5 C is common."}],
    "multi": [{"role": "user", "content": "  A 67-year-old with chest pain.\n"},
              {"role": "assistant", "content": "<think>\nRule out MI.\n</think>\n<answer>ECG"
                                               "</answer>"},
              {"role": "user", "content": "患者发热三天？"},
              {"role": "assistant", "content": "  可能是肺炎。 Check 123 and  spaces. "}],
    "system_multi": [SYSTEM,
                     {"role": "user", "content": "Q1"},
                     {"role": "assistant", "content": "A1"},
                     {"role": "user", "content": "Q2"},
                     {"role": "assistant", "content": ""}],
    "prompt_only": [SYSTEM, {"role": "user", "content": "Which test first?"}],
}


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
  """Our tokenizer and the transformers tokenizer loaded from its save_hf export, per kind."""
  root = tmp_path_factory.mktemp("chat")
  ours = {
      "sp_llama3": tk.load_tokenizer(tk.train_sentencepiece([CORPUS], str(root / "l"), 600)),
      "sp_chatml": tk.load_tokenizer(
          tk.train_sentencepiece([CORPUS], str(root / "c"), 600, chat_format="chatml")),
      "sp_plain": tk.load_tokenizer(
          tk.train_sentencepiece([CORPUS], str(root / "p"), 600, chat_format="plain")),
      "bpe_llama3": tk.load_tokenizer(builders.llama3_like(CORPUS, str(root / "bl"))),
      "bpe_chatml": tk.load_tokenizer(
          builders.qwen_like(CORPUS, str(root / "bq"), chat_template=chat.CHATML_TEMPLATE)),
  }
  out = {}
  for name, tok in ours.items():
    tok.save_hf(str(root / f"{name}_hf"))
    out[name] = (tok, transformers.AutoTokenizer.from_pretrained(str(root / f"{name}_hf")))
  return out


def expected_assistant_ids(messages, tok, fmt):
  """What SFT must train on: each assistant content as the template writes it, then end-of-turn."""
  ids = []
  for m in messages:
    if m["role"] == "assistant":
      content = m["content"].strip() if fmt == "llama3" else m["content"]
      ids += tok.encode(content) + [tok.eot_id]
  return ids


@pytest.mark.parametrize("gen", [False, True])
@pytest.mark.parametrize("conv", list(CONVERSATIONS))
@pytest.mark.parametrize("kind", ["sp_llama3", "sp_chatml", "sp_plain", "bpe_llama3",
                                  "bpe_chatml"])
def test_render_matches_transformers(tokenizers, kind, conv, gen):
  tok, hf = tokenizers[kind]
  messages = CONVERSATIONS[conv]
  if gen and messages[-1]["role"] == "assistant":
    messages = messages[:-1]
  r = chat.render(messages, tok, add_generation_prompt=gen)
  assert r.text == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
  hf_ids = hf.apply_chat_template(messages, add_generation_prompt=gen, return_dict=False)
  assert r.tokens == hf_ids == hf(r.text, add_special_tokens=False)["input_ids"]
  assert len(r.assistant_mask) == len(r.tokens)
  trained = [t for t, m in zip(r.tokens, r.assistant_mask) if m]
  assert trained == expected_assistant_ids(messages, tok, tok.chat_format)
  eot = chat.END_OF_TURN.get(tok.chat_format, tok.special_tokens.get("eos_token"))
  contents = [m["content"].strip() if tok.chat_format == "llama3" else m["content"]
              for m in messages if m["role"] == "assistant"]
  assert tok.decode(trained, skip_special=False) == "".join(c + eot for c in contents)
  if tok.chat_format != "chatml":  # Qwen's ChatML writes no BOS
    assert r.tokens[0] == tok.bos_id and not r.assistant_mask[0]


@pytest.mark.parametrize("conv", ["single", "multi", "system_multi"])
@pytest.mark.parametrize("kind", ["sp_llama3", "sp_chatml", "bpe_llama3", "bpe_chatml"])
def test_mask_matches_transformers_generation_mask(tokenizers, kind, conv):
  tok, hf = tokenizers[kind]
  messages = CONVERSATIONS[conv]
  tagged = with_generation_tags(tok.chat_template, tok.chat_format)
  out = hf.apply_chat_template(messages, chat_template=tagged, return_dict=True,
                               return_assistant_tokens_mask=True)
  r = chat.render(messages, tok)
  assert r.tokens == out["input_ids"]
  assert [int(m) for m in r.assistant_mask] == out["assistant_masks"]
  assert sum(r.assistant_mask) > 0


@pytest.mark.parametrize("kind", ["sp_llama3", "sp_chatml", "sp_plain", "bpe_llama3",
                                  "bpe_chatml"])
def test_generation_prompt_is_a_prefix_of_the_trained_chat(tokenizers, kind):
  """Sampler/trainer parity: prompt ids, then exactly the trained ids, then untrained rest."""
  tok, _ = tokenizers[kind]
  messages = CONVERSATIONS["multi"]
  prompt = chat.render(messages[:-1], tok, add_generation_prompt=True)
  full = chat.render(messages, tok)
  n = len(prompt.tokens)
  assert full.tokens[:n] == prompt.tokens
  assert not any(prompt.assistant_mask[-3:])  # the generation header is never trained
  reply = tok.encode(messages[-1]["content"].strip() if tok.chat_format == "llama3"
                     else messages[-1]["content"]) + [tok.eot_id]
  assert full.tokens[n:n + len(reply)] == reply
  assert all(full.assistant_mask[n:n + len(reply)])
  assert not any(full.assistant_mask[n + len(reply):])


def test_chatml_default_system_prompt(tokenizers):
  tok, _ = tokenizers["sp_chatml"]
  text = chat.render(CONVERSATIONS["single"], tok).text
  assert text.startswith(f"<|im_start|>system\n{chat.QWEN_DEFAULT_SYSTEM}<|im_end|>\n")
  assert chat.QWEN_DEFAULT_SYSTEM not in chat.render(CONVERSATIONS["system_multi"], tok).text


def test_fmt_override_and_missing_chat_tokens(tokenizers):
  tok, hf = tokenizers["sp_llama3"]
  plain = chat.render(CONVERSATIONS["single"], tok, fmt="plain")
  assert plain.text.startswith("<s>User:\nWhat causes fever?\n\nAssistant:\nUsually")
  assert plain.text == hf.apply_chat_template(CONVERSATIONS["single"], tokenize=False,
                                              chat_template=chat.PLAIN_TEMPLATE)
  trained = [t for t, m in zip(plain.tokens, plain.assistant_mask) if m]
  assert trained[-1] == tok.eos_id
  with pytest.raises(ValueError, match="<\\|im_end\\|>"):
    chat.render(CONVERSATIONS["single"], tok, fmt="chatml")
  with pytest.raises(ValueError, match="unknown chat format"):
    chat.render(CONVERSATIONS["single"], tok, fmt="vicuna")


def test_byte_level_chatml_leading_newline_keeps_generation_ids(tokenizers):
  """The one documented case where pieces differ from whole-text ids (module doc of chat)."""
  tok, hf = tokenizers["bpe_chatml"]
  messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\nok"}]
  r = chat.render(messages, tok)
  whole = hf(r.text, add_special_tokens=False)["input_ids"]
  assert r.tokens != whole and tok.decode(r.tokens, False) == tok.decode(whole, False) == r.text
  prompt = chat.render(messages[:1], tok, add_generation_prompt=True).tokens
  assert r.tokens[:len(prompt)] == prompt


def test_checkpoint_template_features_match_transformers(tokenizers):
  """A checkpoint template using the helpers transformers provides (Llama-3.1 style)."""
  tok, hf = tokenizers["bpe_llama3"]
  # Indented blocks without "-": rendering depends on trim_blocks and lstrip_blocks.
  template = """{{ bos_token }}{% set date = strftime_now('%d %b %Y') %}
{% if messages[0]['role'] != 'system' %}
    {{ '<|start_header_id|>system<|end_header_id|>\n\nToday Date: ' + date + '<|eot_id|>' }}
{% endif %}
{% for message in messages %}
    {% if message['role'] == 'tool' %}{{ raise_exception('no tools') }}{% endif %}
    {% if loop.index0 > 9 %}{% break %}{% endif %}
    {{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}
    {% if message['role'] == 'assistant' %}
        {% generation %}{{ message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}
    {% else %}
        {{ message['content'] | trim + '<|eot_id|>' }}
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}
    {{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{% endif %}
"""
  tok.chat_template = template
  try:
    for conv in ("single", "system_multi"):
      messages = CONVERSATIONS[conv]
      r = chat.render(messages, tok)
      assert r.text == hf.apply_chat_template(messages, chat_template=template, tokenize=False)
      out = hf.apply_chat_template(messages, chat_template=template, return_dict=True,
                                   return_assistant_tokens_mask=True)
      assert r.tokens == out["input_ids"]
      assert [int(m) for m in r.assistant_mask] == out["assistant_masks"]
    # raise_exception surfaces as ValueError with the template's message.
    tok.chat_template = template.replace("'tool'", "'user'")
    with pytest.raises(ValueError, match="no tools"):
      chat.render(CONVERSATIONS["single"], tok)
  finally:
    tok.chat_template = chat.LLAMA3_TEMPLATE


def test_templates_that_hide_the_assistant_turn_are_refused(tokenizers):
  tok, _ = tokenizers["sp_llama3"]
  messages = CONVERSATIONS["single"]
  # Character-wise filters are fine: the mask covers what the template wrote.
  tok.chat_template = chat.LLAMA3_TEMPLATE.replace("| trim", "| upper")
  try:
    r = chat.render(messages, tok)
  finally:
    tok.chat_template = chat.LLAMA3_TEMPLATE
  trained = [t for t, m in zip(r.tokens, r.assistant_mask) if m]
  assert tok.decode(trained, False) == messages[1]["content"].upper() + "<|eot_id|>"
  cut = chat.LLAMA3_TEMPLATE.replace("message['content'] | trim", "message['content'][1:]")
  no_eot = chat.LLAMA3_TEMPLATE.replace("{{- '<|eot_id|>' }}", "{{- '\\n' }}")
  for template, match in ((cut, "changes assistant contents"), (no_eot, "does not close")):
    tok.chat_template = template
    try:
      with pytest.raises(ValueError, match=match):
        chat.render(messages, tok)
    finally:
      tok.chat_template = chat.LLAMA3_TEMPLATE


def test_message_errors(tokenizers):
  tok, _ = tokenizers["sp_llama3"]
  prompt_only = CONVERSATIONS["prompt_only"]
  r = chat.render(prompt_only, tok, add_generation_prompt=True)
  assert not any(r.assistant_mask)
  with pytest.raises(ValueError, match="no assistant message"):
    chat.render(prompt_only, tok, require_assistant=True)
  with pytest.raises(ValueError, match="message 1: unknown role 'doctor'"):
    chat.render([SYSTEM, {"role": "doctor", "content": "x"}], tok)
  with pytest.raises(ValueError, match="message 0 \\(user\\): content must be a string, got list"):
    chat.render([{"role": "user", "content": [{"type": "text", "text": "x"}]}], tok)
  with pytest.raises(ValueError, match="message 0: expected a dict"):
    chat.render(["hello"], tok)
  with pytest.raises(ValueError, match="empty"):
    chat.render([], tok)
  with pytest.raises(ValueError, match="list of dicts"):
    chat.render("hello", tok)


# ----------------------------------------------------------------------------------- Qwen3
THINK = "<think>\nFever, cough and crackles.\n</think>\n\nCommunity-acquired pneumonia."
QWEN3_CONVERSATIONS = {
    "think": [{"role": "user", "content": "What causes fever?"},
              {"role": "assistant", "content": THINK}],
    "no_think": [{"role": "user", "content": "What causes fever?"},
                 {"role": "assistant", "content": "Usually an infection; 38.5 C is common."}],
    # Earlier replies carry think blocks, which the template strips; the last has none.
    "system_multi": [SYSTEM,
                     {"role": "user", "content": "Q1"},
                     {"role": "assistant", "content": "<think>\nR1\n</think>\n\nA1"},
                     {"role": "user", "content": "患者发热三天？"},
                     {"role": "assistant", "content": "<think>R2</think>A2 with  spaces. "},
                     {"role": "user", "content": "Q3"},
                     {"role": "assistant", "content": "A3 plain"}],
    "multi_think_last": [{"role": "user", "content": "Q1"},
                         {"role": "assistant", "content": "<think>\nR1\n</think>\n\nA1"},
                         {"role": "user", "content": "Q2"},
                         {"role": "assistant", "content": "\n\n<think>R2\n\n</think>\n\n\nA2"}],
    "empty_think": [{"role": "user", "content": "Q"},
                    {"role": "assistant", "content": "<think>\n\n</think>\n\nA"}],
    "reasoning_field": [SYSTEM, {"role": "user", "content": "Q"},
                        {"role": "assistant", "content": "A", "reasoning_content": "R"}],
    # Leading newlines: kept in earlier replies, dropped from the last by the template.
    "newlines": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "\nA1"},
                 {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "\n\nA2"}],
    "prompt_only": [SYSTEM, {"role": "user", "content": "Which test first?"}],
}
THINKING = {"default": {}, "on": {"enable_thinking": True}, "off": {"enable_thinking": False}}


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
  """A Qwen3-shaped tokenizer dir (Qwen2.5 BPE + non-special <think>/</think>, the Hub template)
  loaded by us and by transformers."""
  tokenizers_lib = pytest.importorskip("tokenizers")
  path = builders.qwen_like(CORPUS, str(tmp_path_factory.mktemp("qwen3")),
                            chat_template=chat.QWEN3_TEMPLATE)
  tj = os.path.join(path, "tokenizer.json")
  t = tokenizers_lib.Tokenizer.from_file(tj)
  t.add_tokens([tokenizers_lib.AddedToken(s, special=False, normalized=False)
                for s in (chat.THINK_OPEN, chat.THINK_CLOSE)])
  t.save(tj)
  return tk.load_tokenizer(path), transformers.AutoTokenizer.from_pretrained(path)


def _runs(tokens, mask):
  """The trained tokens as contiguous runs."""
  runs, cur = [], []
  for t, m in zip(tokens, mask):
    if m:
      cur.append(t)
    elif cur:
      runs, cur = runs + [cur], []
  return runs + [cur] if cur else runs


def qwen3_trained_texts(messages):
  """The rule of chat's module doc, written from Qwen3's reply format (not from its template)."""
  last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
  out = []
  for i, m in enumerate(messages):
    if m["role"] != "assistant":
      continue
    c, reasoning = m["content"], m.get("reasoning_content")
    if "</think>" in c:
      reasoning, c = c.split("</think>")
      reasoning = reasoning.split("<think>")[-1]
    answer = c.lstrip("\n")
    if i > last_user and reasoning and (reasoning.strip() or "</think>" in m["content"]):
      out.append(f"<think>\n{reasoning.strip(chr(10))}\n</think>\n\n{answer}<|im_end|>")
    else:
      out.append(answer + "<|im_end|>")
  return out


def test_qwen3_template_is_the_hub_one():
  assert chat.infer_chat_format(chat.QWEN3_TEMPLATE) == "qwen3"
  assert chat.infer_chat_format(chat.CHATML_TEMPLATE) == "chatml"
  trl = pytest.importorskip("trl")
  # TRL keeps the Hub's Qwen3 template byte for byte (and checks it weekly against the Qwen repos).
  with open(os.path.join(os.path.dirname(trl.__file__), "chat_templates", "qwen3.jinja"),
            encoding="utf-8") as f:
    assert f.read() == chat.QWEN3_TEMPLATE


@pytest.mark.parametrize("thinking", list(THINKING))
@pytest.mark.parametrize("gen", [False, True])
@pytest.mark.parametrize("conv", list(QWEN3_CONVERSATIONS))
def test_qwen3_render_matches_transformers(qwen3, conv, gen, thinking):
  tok, hf = qwen3
  assert tok.chat_format == "qwen3" and tok.eot_id == hf.convert_tokens_to_ids("<|im_end|>")
  messages = QWEN3_CONVERSATIONS[conv]
  if gen and messages[-1]["role"] == "assistant":
    messages = messages[:-1]
  kw = THINKING[thinking]
  want = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen, **kw)
  r = chat.render(messages, tok, add_generation_prompt=gen, **kw)
  assert r.text == want
  assert chat.render_text(messages, tok.chat_template, tok.special_tokens,
                          add_generation_prompt=gen, **kw) == want
  assert want.endswith("<|im_start|>assistant\n" + ("<think>\n\n</think>\n\n"
                                                     if thinking == "off" else "")) == gen
  assert r.tokens == hf.apply_chat_template(messages, add_generation_prompt=gen,
                                            return_dict=False, **kw)
  runs = [tok.decode(run, skip_special=False) for run in _runs(r.tokens, r.assistant_mask)]
  assert runs == qwen3_trained_texts(messages)
  if not gen:
    assert "Q1\n" not in "".join(runs) and "R1" not in want  # earlier reasoning is stripped


def test_qwen3_no_doubled_or_stripped_think_block(qwen3):
  tok, _ = qwen3
  think = chat.render(QWEN3_CONVERSATIONS["think"], tok)
  assert think.text.count("<think>") == 1
  trained = tok.decode([t for t, m in zip(think.tokens, think.assistant_mask) if m], False)
  assert trained == THINK + "<|im_end|>"
  plain = chat.render(QWEN3_CONVERSATIONS["no_think"], tok)
  assert "<think>\n\n</think>\n\n" in plain.text
  trained = tok.decode([t for t, m in zip(plain.tokens, plain.assistant_mask) if m], False)
  assert trained == QWEN3_CONVERSATIONS["no_think"][1]["content"] + "<|im_end|>"


@pytest.mark.parametrize("conv,thinking", [("think", "default"), ("think", "on"),
                                           ("no_think", "off"), ("empty_think", "default")])
def test_qwen3_generation_prompt_is_a_prefix_of_the_trained_chat(qwen3, conv, thinking):
  """Sampler/trainer parity: the prompt of the matching thinking mode, then the trained ids."""
  tok, _ = qwen3
  messages = QWEN3_CONVERSATIONS[conv]
  prompt = chat.render(messages[:-1], tok, add_generation_prompt=True, **THINKING[thinking])
  full = chat.render(messages, tok)
  n = len(prompt.tokens)
  assert full.tokens[:n] == prompt.tokens and not any(full.assistant_mask[:n])
  assert all(full.assistant_mask[n:-1]) and not full.assistant_mask[-1]  # "\n" after <|im_end|>
  assert tok.decode(full.tokens[n:-1], False) == qwen3_trained_texts(messages)[-1]


def _tagged_qwen3():
  """The Hub template with {% generation %} where the module doc's rule puts the trained text
  (tool calls dropped: these chats have none); it renders the same text."""
  t = chat.QWEN3_TEMPLATE
  start = t.index("        {%- if loop.index0 > ns.last_query_index %}")
  end = t.index("        {{- '<|im_end|>\\n' }}", start) + len("        {{- '<|im_end|>\\n' }}")
  tagged = (
      "{%- set own = '</think>' in message.content or (message.reasoning_content is string and "
      "message.reasoning_content.strip()) %}"
      "{%- set answer = content.lstrip('\\n') %}"
      "{{- '<|im_start|>' + message.role + '\\n' }}"
      "{%- if loop.index0 > ns.last_query_index and (loop.last or reasoning_content) %}"
      "{%- if not own %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
      "{%- generation %}{%- if own %}{{- '<think>\\n' + reasoning_content.strip('\\n') + "
      "'\\n</think>\\n\\n' }}{%- endif %}{{- answer + '<|im_end|>' }}{%- endgeneration %}"
      "{%- else %}{{- content[:content|length - answer|length] }}"
      "{%- generation %}{{- answer + '<|im_end|>' }}{%- endgeneration %}"
      "{%- endif %}{{- '\\n' }}")
  return t[:start] + tagged + t[end:]


@pytest.mark.parametrize("conv", [c for c in QWEN3_CONVERSATIONS if c != "prompt_only"])
def test_qwen3_mask_matches_transformers_generation_mask(qwen3, conv):
  tok, hf = qwen3
  messages = QWEN3_CONVERSATIONS[conv]
  tagged = _tagged_qwen3()
  assert (hf.apply_chat_template(messages, chat_template=tagged, tokenize=False) ==
          hf.apply_chat_template(messages, tokenize=False))
  out = hf.apply_chat_template(messages, chat_template=tagged, return_dict=True,
                               return_assistant_tokens_mask=True)
  r = chat.render(messages, tok)
  assert r.tokens == out["input_ids"]
  assert [int(m) for m in r.assistant_mask] == out["assistant_masks"]
  assert sum(r.assistant_mask) > 0


@pytest.mark.parametrize("content,match", [
    ("<think>unclosed reasoning, then the answer", "found 1 <think> and 0 </think>"),
    ("<think>a</think><think>b</think>answer", "found 2 <think> and 2 </think>"),
    ("<think>a</think>answer</think>", "found 1 <think> and 2 </think>"),
    ("Preamble. <think>a</think>answer", "after the text 'Preamble.'"),
])
def test_qwen3_garbled_think_blocks_are_refused(qwen3, content, match):
  tok, _ = qwen3
  messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": content}]
  with pytest.raises(ValueError, match="message 1 \\(assistant\\).*" + match):
    chat.render(messages, tok)
  both = [messages[0], {"role": "assistant", "content": THINK, "reasoning_content": "R"}]
  with pytest.raises(ValueError, match="reasoning_content and a think block"):
    chat.render(both, tok)
  with pytest.raises(ValueError, match="reasoning_content must be a string, got int"):
    chat.render([messages[0], {"role": "assistant", "content": "A", "reasoning_content": 3}], tok)
  # The same text under ChatML (a template that leaves think blocks alone) is trained verbatim.
  tok_chatml = chat.render(messages, tok, fmt="chatml")
  trained = [t for t, m in zip(tok_chatml.tokens, tok_chatml.assistant_mask) if m]
  assert tok.decode(trained, False) == content + "<|im_end|>"
