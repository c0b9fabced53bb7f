"""Sampler: greedy decoding against transformers' generate(), log-prob parity with the training
forward, the sampling filters, stops, bucketing and a sharded mesh."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from citrus_jax import hf, sharding
from citrus_jax.infer import sampler
from citrus_jax.model import transformer
from citrus_jax.model.config import get_preset

# Prompts of different lengths (one batch needs left padding); ids avoid BOS/EOS/pad.
PROMPTS = [[1, 17, 33, 9], [1, 200], [1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]]
_fwd = jax.jit(transformer.forward, static_argnames="cfg")


def _hf_model(family: str, seed: int = 0):
  config_cls, model_cls = ((transformers.LlamaConfig, transformers.LlamaForCausalLM)
                           if family == "llama" else
                           (transformers.Qwen2Config, transformers.Qwen2ForCausalLM))
  extra = dict(rope_theta=10000.0) if family == "llama" else dict(rope_theta=1e6,
                                                                  tie_word_embeddings=True)
  config = config_cls(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, **extra)
  torch.manual_seed(seed)
  model = model_cls(config).eval()
  with torch.no_grad():  # a wide init: logits spread out, so argmax near-ties do not happen
    for name, p in model.named_parameters():
      p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name else 0.3 * torch.randn_like(p))
  return model


def _ours(model):
  cfg = hf.config_from_hf(model.config.to_dict())
  state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  return cfg, hf.params_from_state_dict(state, cfg)


def _hf_greedy(model, prompt, max_new_tokens, eos):
  with torch.no_grad():
    out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt)),
                         max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                         pad_token_id=0, top_k=None, top_p=None, temperature=None)
  return out[0, len(prompt):].tolist()


@pytest.fixture(scope="module")
def tiny():
  cfg = get_preset("tiny")
  params = transformer.init_params(cfg, jax.random.key(0))
  params = jax.tree.map(lambda x: 15 * x if x.ndim > 2 else x, params)  # spread the logits
  return cfg, params


# ------------------------------------------------------------------------------------------------
# Filters and sampling (pure functions).


def test_top_k_keeps_k_largest_and_ties():
  logits = jnp.array([[1.0, 5.0, 3.0, 3.0, -2.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
  kept = np.isfinite(np.asarray(sampler.top_k_filter(logits, 2)))
  np.testing.assert_array_equal(kept, [[0, 1, 1, 1, 0], [0, 0, 0, 1, 1]])  # tie with 2nd kept
  np.testing.assert_array_equal(sampler.top_k_filter(logits, 0), logits)
  np.testing.assert_array_equal(sampler.top_k_filter(logits, 5), logits)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.8, 0.95, 1.0])
def test_top_p_keeps_smallest_set_reaching_mass(p):
  logits = jax.random.normal(jax.random.key(1), (6, 50)) * 2
  kept = np.isfinite(np.asarray(sampler.top_p_filter(logits, p)))
  probs = np.asarray(jax.nn.softmax(logits, -1))
  for row_probs, row_kept in zip(probs, kept):
    mass = row_probs[row_kept].sum()
    assert mass >= p - 1e-6 or row_kept.all()
    # Minimal: dropping the least likely kept token falls below p (no ties in random logits).
    assert mass - row_probs[row_kept].min() < p
    # Kept tokens are exactly the most likely ones.
    assert row_probs[row_kept].min() >= row_probs[~row_kept].max(initial=0)


def test_top_p_ties_and_at_least_one():
  logits = jnp.log(jnp.array([[0.4, 0.4, 0.2], [0.9, 0.05, 0.05]]))
  kept = np.isfinite(np.asarray(sampler.top_p_filter(logits, 0.3)))
  np.testing.assert_array_equal(kept, [[1, 1, 0], [1, 0, 0]])
  kept = np.isfinite(np.asarray(sampler.top_p_filter(logits, 1e-9)))
  assert kept.sum(-1).tolist() == [2, 1]


def test_temperature_sampling_follows_the_distribution():
  n = 20000
  logits = jnp.broadcast_to(jnp.array([2.0, 1.0, 0.0, -1.0]), (n, 4))
  draw = lambda **kw: np.asarray(sampler.sample_tokens(jax.random.key(0), logits, greedy=False,
                                                       **kw)[0])
  counts = np.bincount(draw(temperature=0.5), minlength=4) / n
  np.testing.assert_allclose(counts, jax.nn.softmax(logits[0] / 0.5), atol=0.015)
  # top-k=2 and top-p never emit a filtered token.
  assert set(draw(top_k=2)) == {0, 1}
  assert set(draw(top_p=0.6)) == {0}


def test_bucketing():
  assert [sampler.bucket_length(n) for n in (1, 16, 17, 100, 512, 513)] == [16, 16, 32, 128, 512,
                                                                            1024]
  assert [sampler.bucket_batch(n, 4) for n in (1, 3, 5, 8)] == [4, 4, 8, 8]


# ------------------------------------------------------------------------------------------------
# Against transformers and the training forward.


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_greedy_matches_transformers_generate(family):
  model = _hf_model(family)
  cfg, params = _ours(model)
  n = 12
  free = [_hf_greedy(model, p, n, eos=None) for p in PROMPTS]
  ours = sampler.generate(params, cfg, PROMPTS, max_new_tokens=n, stop_ids=())
  assert ours.tokens == free
  assert ours.finish_reason == ["length"] * 3
  # EOS handling: make the 4th token of prompt 0 the EOS; rows stop at their first EOS, included.
  eos = free[0][3]
  hf_stop = [_hf_greedy(model, p, n, eos=eos) for p in PROMPTS]
  ours = sampler.generate(params, cfg, PROMPTS, max_new_tokens=n, stop_ids=(eos,))
  assert ours.tokens == hf_stop
  assert ours.tokens[0][-1] == eos and len(ours.tokens[0]) <= 4
  assert ours.finish_reason == ["stop" if eos in t else "length" for t in hf_stop]


_SAMPLING = dict(max_new_tokens=10, temperature=0.8, top_p=0.9, top_k=40, stop_ids=())


def test_logprobs_match_training_forward(tiny):
  cfg, params = tiny
  res = sampler.generate(params, cfg, PROMPTS, seed=3, **_SAMPLING)
  # The training forward over prompt + completion, right-padded into one batch (segment 0).
  seqs = [p + t for p, t in zip(PROMPTS, res.tokens)]
  width = max(map(len, seqs))
  tokens = np.zeros((len(seqs), width), np.int32)
  segments = np.zeros((len(seqs), width), np.int32)
  for i, s in enumerate(seqs):
    tokens[i, :len(s)], segments[i, :len(s)] = s, 1
  logits_all = _fwd(params, tokens, cfg=cfg, segment_ids_BT=segments)[0]
  for i, (prompt, toks) in enumerate(zip(PROMPTS, res.tokens)):
    assert len(toks) == 10
    logits = logits_all[i, len(prompt) - 1:len(prompt) + 9]  # the positions predicting new tokens
    want = jax.nn.log_softmax(logits, -1)[jnp.arange(10), jnp.asarray(toks)]
    np.testing.assert_allclose(res.logprobs[i], want, atol=1e-4)
    processed = sampler.process_logits(logits, 0.8, 40, 0.9)
    want_s = jax.nn.log_softmax(processed, -1)[jnp.arange(10), jnp.asarray(toks)]
    np.testing.assert_allclose(res.sampling_logprobs[i], want_s, atol=1e-4)
    # Filtering only moves mass onto kept tokens.
    assert np.all(np.asarray(res.sampling_logprobs[i]) >= np.asarray(res.logprobs[i]) - 1e-4)


def test_seed_determinism(tiny):
  cfg, params = tiny
  run = lambda seed: sampler.generate(params, cfg, PROMPTS, seed=seed, **_SAMPLING).tokens
  a, b, c = run(0), run(0), run(1)
  assert a == b
  assert a != c


def test_variable_length_batch_equals_per_prompt(tiny):
  cfg, params = tiny
  batch = sampler.generate(params, cfg, PROMPTS, max_new_tokens=8, stop_ids=())
  for i, p in enumerate(PROMPTS):
    alone = sampler.generate(params, cfg, [p], max_new_tokens=8, stop_ids=())
    assert alone.tokens[0] == batch.tokens[i]
    np.testing.assert_allclose(alone.logprobs[0], batch.logprobs[i], atol=1e-5)


def test_stops_and_max_new_tokens(tiny):
  cfg, params = tiny
  free = sampler.generate(params, cfg, PROMPTS, max_new_tokens=8, stop_ids=())
  assert [len(t) for t in free.tokens] == [8, 8, 8]
  stop = free.tokens[1][2]
  res = sampler.generate(params, cfg, PROMPTS, max_new_tokens=8, stop_ids=(stop,))
  for full, got, reason in zip(free.tokens, res.tokens, res.finish_reason):
    cut = full.index(stop) + 1 if stop in full else len(full)
    assert got == full[:cut]
    assert reason == ("stop" if stop in full else "length")
  # A stop sequence of two tokens, matched on device.
  seq = free.tokens[2][4:6]
  res = sampler.generate(params, cfg, PROMPTS[2:], max_new_tokens=8, stop_ids=(),
                         stop_sequences=[seq])
  assert res.tokens[0] == free.tokens[2][:6] and res.finish_reason == ["stop"]


class _CharTokenizer:
  """One id per character (ids < 256); ids 0-2 are special and decode to nothing."""

  def encode(self, text):
    return [ord(c) for c in text]

  def decode(self, ids):
    return "".join(chr(i) for i in ids if i > 2)


def test_generate_text_cuts_at_stop_strings(tiny):
  cfg, params = tiny
  tok = _CharTokenizer()
  prompt = "ab"
  free = sampler.generate_text(params, cfg, tok, [prompt], max_new_tokens=12, stop_ids=())[0]
  assert len(free.tokens) == 12 and free.finish_reason == "length"
  stop = free.text[5:7]
  out = sampler.generate_text(params, cfg, tok, [prompt], max_new_tokens=12, stop_ids=(),
                              stop_strings=["\x00never", stop])[0]
  cut = free.text.index(stop)
  assert out.text == free.text[:cut] and out.finish_reason == "stop"
  assert out.tokens == free.tokens[:cut + 2]  # up to and including the stop string's last token
  np.testing.assert_allclose(out.logprobs, free.logprobs[:cut + 2], atol=1e-5)
  # Host-side cut alone (a stop string the device could not see as one token sequence).
  text, n = sampler._cut_at_stop_strings(tok, free.tokens, [stop], set())
  assert (text, n) == (free.text[:cut], cut + 2)


# ------------------------------------------------------------------------------------------------
# Mesh and errors.


def test_sharded_mesh_matches_unsharded(tiny):
  cfg, params = tiny
  mesh = sharding.make_mesh((1, 4, 2))
  ref = sampler.generate(params, cfg, PROMPTS, max_new_tokens=8, stop_ids=())
  out = sampler.generate(params, cfg, PROMPTS, max_new_tokens=8, stop_ids=(), mesh=mesh)
  assert out.tokens == ref.tokens
  np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(ref.logprobs), atol=1e-4)


def test_stacked_layer_path_matches(tiny, monkeypatch):
  """Accelerators decode with the stacked (scanned) weights; CPU splits them per layer."""
  cfg, params = tiny
  ref = sampler.generate(params, cfg, PROMPTS, max_new_tokens=8, stop_ids=())
  monkeypatch.setattr(sampler, "_platform", lambda mesh: "tpu")
  out = sampler.generate(params, cfg, PROMPTS, max_new_tokens=8, stop_ids=())
  assert out.tokens == ref.tokens
  np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(ref.logprobs), atol=1e-5)


def test_bad_inputs(tiny):
  cfg, params = tiny
  with pytest.raises(ValueError, match="prompt 1 is empty"):
    sampler.generate(params, cfg, [[1], []], max_new_tokens=4)
  with pytest.raises(ValueError, match="max_seq_len"):
    sampler.generate(params, cfg, [[1] * 250], max_new_tokens=10)
  with pytest.raises(ValueError, match="outside"):
    sampler.generate(params, cfg, [[1, 999]], max_new_tokens=4)
