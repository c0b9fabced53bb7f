"""Preference losses against TRL 1.16 (CPO-SimPO, DPO, IPO, ORPO) on a random tiny HF Llama.

TRL's trainers score hand-made token-id pairs with a torch LlamaForCausalLM; our model runs on
the same weights (citrus_jax.hf) and the same token ids. Everything is float32.
"""
import collections
import copy
import math
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from citrus_jax import hf  # noqa: E402
from citrus_jax.data.preference import PreferencePair, make_batch  # noqa: E402
from citrus_jax.train import preference as pref  # noqa: E402

V, T = 64, 16
TOL = 1e-5
# (prompt, chosen, rejected): different lengths on every side; 2 is EOS.
PAIRS = [
    ([1, 5, 6, 7], [10, 11, 12, 2], [13, 2]),
    ([1, 8], [14, 15, 2], [16, 17, 18, 19, 20, 2]),
    ([1, 21, 22, 23, 24, 25], [26, 2], [27, 28, 2]),
]
DIFFS: dict[str, float] = {}


def _report(name, ours, theirs, relative=False):
  """Max |ours - theirs| < TOL; for values above 1 (and gradients: `relative`), relative to
  max|theirs| (float32 carries ~7 significant digits)."""
  theirs = np.asarray(theirs, np.float64)
  diff = float(np.max(np.abs(np.asarray(ours, np.float64) - theirs)))
  scale = float(np.max(np.abs(theirs)))
  if relative or scale > 1.0:
    diff /= scale
    name += " (relative)"
  DIFFS[name] = max(DIFFS.get(name, 0.0), diff)
  print(f"max|diff| {name}: {diff:.3g}")
  assert diff < TOL, (name, ours, theirs)


def _hf_tokenizer():
  from tokenizers import Tokenizer, models, pre_tokenizers
  tok = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(V)}, unk_token="t3"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="t1",
                                              eos_token="t2", pad_token="t0", unk_token="t3")


def _hf_model(seed):
  torch.manual_seed(seed)
  config = transformers.LlamaConfig(
      vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
      rope_theta=10000.0, bos_token_id=1, eos_token_id=2, pad_token_id=0,
      initializer_range=0.2)  # far from uniform predictions, so the numbers discriminate
  model = transformers.LlamaForCausalLM(config).float().eval()
  with torch.no_grad():  # HF inits norms to 1: perturb them so the test sees their weights
    for name, p in model.named_parameters():
      if "norm" in name:
        p.add_(0.1 * torch.randn_like(p))
  return model


def _ours(model):
  cfg = hf.config_from_hf(model.config.to_dict())
  state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  return cfg, hf.params_from_state_dict(state, cfg)


@pytest.fixture(scope="module")
def env():
  tok = _hf_tokenizer()
  policy, other = _hf_model(0), _hf_model(1)
  cfg, params = _ours(policy)
  _, other_params = _ours(other)
  pairs = [PreferencePair(tuple(p), tuple(c), tuple(r)) for p, c, r in PAIRS]
  batch = make_batch(pairs, T, batch_size=4)  # one padding pair: must not count
  text = {"prompt": ["t5 t6"], "chosen": [" t7 t8"], "rejected": [" t9"]}
  dataset = datasets.Dataset.from_dict(text)  # TRL needs one to build a trainer
  return dict(tok=tok, policy=policy, other=other, cfg=cfg, params=params,
              other_params=other_params, batch=batch, dataset=dataset)


def _common_args(**kw):
  return dict(output_dir="/tmp/citrus_pref_trl", use_cpu=True, bf16=False, report_to=[],
              per_device_train_batch_size=len(PAIRS), **kw)


def _trl_cpo_batch(trainer):
  """TRL's own collator over our token ids (the layout of CPOTrainer.tokenize_row)."""
  feats = []
  for p, c, r in PAIRS:
    f = {"prompt_input_ids": p, "prompt_attention_mask": [1] * len(p)}
    for side, resp in (("chosen", c), ("rejected", r)):
      f[f"{side}_input_ids"] = p + resp
      f[f"{side}_attention_mask"] = [1] * (len(p) + len(resp))
      f[f"{side}_labels"] = [-100] * len(p) + resp
    feats.append(f)
  return trainer.data_collator(feats)


def _trl_dpo_batch(trainer):
  return trainer.data_collator(
      [{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r} for p, c, r in PAIRS])


_JITTED = {}


def _loss_fn(cfg, name, **hp):
  key = (name, tuple(sorted(hp.items())))
  if key not in _JITTED:  # one compile per loss and shape, shared by the tests
    _JITTED[key] = jax.jit(pref.make_loss_fn(cfg, name, **hp))
  return _JITTED[key]


def _our_loss(env, name, ref_params=None, batch=None, **hp):
  batch = env["batch"] if batch is None else batch
  loss_fn = _loss_fn(env["cfg"], name, **hp)
  return loss_fn(env["params"], batch, pref.preference_totals(batch), ref_params)


def _cpo_trainer(env, **kw):
  from trl.experimental.cpo import CPOConfig, CPOTrainer
  args = CPOConfig(**_common_args(max_length=64, **kw))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return CPOTrainer(model=env["policy"], args=args, train_dataset=env["dataset"],
                      processing_class=env["tok"])


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cpo_simpo_matches_trl(env, label_smoothing):
  trainer = _cpo_trainer(env, loss_type="simpo", beta=10.0, simpo_gamma=5.4, cpo_alpha=0.05,
                         label_smoothing=label_smoothing)
  batch = _trl_cpo_batch(trainer)
  with torch.no_grad():
    loss_t, m_t = trainer.get_batch_loss_metrics(env["policy"], batch)
    logps_c, logps_r = trainer.concatenated_forward(env["policy"], batch)[:2]
  loss, m = _our_loss(env, "cpo_simpo", label_smoothing=label_smoothing)
  stats = jax.jit(pref.pair_forward_logprobs, static_argnums=2)(
      env["params"], env["batch"], env["cfg"])
  n = len(PAIRS)
  _report("cpo_simpo mean logp chosen", stats["mean_c"][:n], logps_c.numpy())
  _report("cpo_simpo mean logp rejected", stats["mean_r"][:n], logps_r.numpy())
  _report(f"cpo_simpo loss (eps={label_smoothing})", loss, loss_t.item())
  _report("cpo_simpo nll", m["nll"], m_t["nll_loss"])
  for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
    _report(f"cpo_simpo {key}", m[key], m_t[key])
  assert float(m["nll"]) > 0 and 0.0 < float(loss) < 50.0


def test_cpo_simpo_gradient_matches_torch(env):
  trainer = _cpo_trainer(env, loss_type="simpo", beta=10.0, simpo_gamma=5.4, cpo_alpha=0.05)
  model = env["policy"]
  model.zero_grad()
  loss_t, _ = trainer.get_batch_loss_metrics(model, _trl_cpo_batch(trainer))
  loss_t.backward()
  loss_fn = pref.make_loss_fn(env["cfg"], "cpo_simpo")
  grads = jax.jit(jax.grad(lambda p: loss_fn(p, env["batch"],
                                             pref.preference_totals(env["batch"]))[0]))(
                                                 env["params"])
  layer0 = model.model.layers[0]
  _report("cpo_simpo grad lm_head", grads["lm_head"], model.lm_head.weight.grad.numpy().T, True)
  _report("cpo_simpo grad wq[0]", grads["layers"]["wq"][0],
          layer0.self_attn.q_proj.weight.grad.numpy().T, True)
  _report("cpo_simpo grad attn_norm[0]", grads["layers"]["attn_norm"][0],
          layer0.input_layernorm.weight.grad.numpy(), True)
  _report("cpo_simpo grad embed", grads["embed"], model.model.embed_tokens.weight.grad.numpy(),
          True)
  model.zero_grad()
  assert float(jnp.abs(grads["lm_head"]).max()) > 1e-4


def _dpo_trainer(env, ref_model, loss_type, beta=0.1):
  from trl import DPOConfig, DPOTrainer
  args = DPOConfig(**_common_args(loss_type=loss_type, beta=beta, max_length=64))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return DPOTrainer(model=env["policy"], ref_model=ref_model, args=args,
                      train_dataset=env["dataset"], processing_class=env["tok"])


def _trl_dpo(trainer):
  trainer._metrics = {"train": collections.defaultdict(list),
                      "eval": collections.defaultdict(list)}
  with torch.no_grad():
    loss = trainer.compute_loss(trainer.model, _trl_dpo_batch(trainer)).item()
  metrics = trainer._metrics["train"] or trainer._metrics["eval"]
  return loss, {k: v[-1] for k, v in metrics.items()}


@pytest.mark.parametrize("loss_type,ref", [("sigmoid", "same"), ("sigmoid", "other"),
                                           ("ipo", "other")])
def test_dpo_ipo_match_trl(env, loss_type, ref):
  ref_model = copy.deepcopy(env["policy"]) if ref == "same" else env["other"]
  ref_params = env["params"] if ref == "same" else env["other_params"]
  loss_t, m_t = _trl_dpo(_dpo_trainer(env, ref_model, loss_type))
  name = "dpo" if loss_type == "sigmoid" else "ipo"
  # (a) reference forward inside the step; (b) precomputed reference sums stored in the batch.
  loss_a, m_a = _our_loss(env, name, ref_params=ref_params)
  ref_rows = pref.precompute_reference_logprobs(ref_params, [env["batch"]], env["cfg"])
  batch_b = dict(env["batch"], ref_chosen_logps=ref_rows[:, 0], ref_rejected_logps=ref_rows[:, 1])
  loss_b, m_b = _our_loss(env, name, batch=batch_b)
  _report(f"{name} loss (ref={ref})", loss_a, loss_t)
  _report(f"{name} loss precomputed ref (ref={ref})", loss_b, loss_t)
  for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
    _report(f"{name} {key} (ref={ref})", m_a[key], m_t[key])
    _report(f"{name} {key} precomputed (ref={ref})", m_b[key], m_t[key])
  _report(f"{name} logps/chosen", m_a["logps/chosen"], m_t["logps/chosen"])
  if name == "dpo" and ref == "same":
    assert abs(float(loss_a) - math.log(2.0)) < 1e-6
  elif name == "dpo":
    assert abs(float(loss_a) - math.log(2.0)) > 1e-3  # a non-trivial reference


def test_orpo_matches_trl(env):
  from trl.experimental.orpo import ORPOConfig, ORPOTrainer
  args = ORPOConfig(**_common_args(beta=0.1, max_length=64))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    trainer = ORPOTrainer(model=env["policy"], args=args, train_dataset=env["dataset"],
                          processing_class=env["tok"])
  with torch.no_grad():
    loss_t, m_t = trainer.get_batch_loss_metrics(env["policy"], _trl_cpo_batch(trainer))
  loss, m = _our_loss(env, "orpo", beta=0.1)
  _report("orpo loss", loss, loss_t.item())
  _report("orpo nll", m["nll"], float(m_t["nll_loss"]))
  _report("orpo log_odds_ratio", m["log_odds_ratio"], float(m_t["log_odds_ratio"]))
  _report("orpo log_odds_chosen", m["log_odds_chosen"], float(m_t["log_odds_chosen"]))
  for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
    _report(f"orpo {key}", m[key], float(m_t[key]))


# ----------------------------------------------------------------------------- formulas


def _np_logsig(x):
  return -np.logaddexp(0.0, -x)


def test_losses_match_independent_numpy_formulas():
  rng = np.random.default_rng(0)
  pc, pr = -rng.uniform(0.2, 3.0, 5), -rng.uniform(0.2, 3.0, 5)
  sc, sr, rc, rr = (-rng.uniform(5, 40, 5) for _ in range(4))
  nc, nr = rng.integers(3, 20, 5).astype(float), rng.integers(3, 20, 5).astype(float)
  nll_sum, n_tok = 123.4, 57.0
  # CPO-SimPO written as CITRUS.md states it (gamma NOT divided by beta).
  b, g, a, e = 10.0, 5.4, 0.05, 0.2
  want = np.mean(-(1 - e) * _np_logsig(b * (pc - pr) - g) - e * _np_logsig(g - b * (pc - pr)))
  got, m = pref.cpo_simpo_loss(pc, pr, nll_sum, n_tok, beta=b, gamma=g, cpo_alpha=a,
                               label_smoothing=e)
  np.testing.assert_allclose(got, want + a * nll_sum / n_tok, rtol=1e-5)
  np.testing.assert_allclose(m["rewards/accuracies"], np.mean(pc > pr), rtol=1e-6)
  # Conservative DPO.
  d = (sc - rc) - (sr - rr)
  got, _ = pref.dpo_loss(sc, sr, rc, rr, beta=0.1, label_smoothing=e)
  want = np.mean(-(1 - e) * _np_logsig(0.1 * d) - e * _np_logsig(-0.1 * d))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # IPO on per-token log-ratios.
  got, _ = pref.ipo_loss(sc, sr, rc, rr, nc, nr, beta=0.5)
  np.testing.assert_allclose(got, np.mean(((sc - rc) / nc - (sr - rr) / nr - 1.0) ** 2),
                             rtol=1e-5)
  # ORPO with log(1 - p) computed directly in float64.
  log_odds = (pc - np.log1p(-np.exp(pc))) - (pr - np.log1p(-np.exp(pr)))
  got, m = pref.orpo_loss(pc, pr, 2.0, beta=0.3)
  np.testing.assert_allclose(got, 2.0 - 0.3 * np.mean(_np_logsig(log_odds)), rtol=1e-5)
  # Per-sequence stats from logits, against a float64 log-softmax.
  logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
  targets = rng.integers(0, 7, (2, 5))
  mask = np.array([[0, 1, 1, 1, 0], [0, 0, 0, 0, 0]])
  lsm = logits - np.log(np.exp(logits.astype(np.float64)).sum(-1, keepdims=True))
  want_sum = (np.take_along_axis(lsm, targets[..., None], -1)[..., 0] * mask).sum(-1)
  s, mean, n = pref.sequence_logprobs(logits, targets, mask)
  np.testing.assert_allclose(s, want_sum, rtol=1e-5)
  np.testing.assert_allclose(mean, [want_sum[0] / 3, 0.0], rtol=1e-5)
  np.testing.assert_array_equal(n, [3, 0])
  # Pair weights: a zero-weight pair changes nothing.
  got_w, _ = pref.dpo_loss(np.append(sc, 0.0), np.append(sr, -9.0), np.append(rc, 0.0),
                           np.append(rr, 0.0), beta=0.1, label_smoothing=e,
                           pair_mask=np.array([1, 1, 1, 1, 1, 0.0]))
  got, _ = pref.dpo_loss(sc, sr, rc, rr, beta=0.1, label_smoothing=e)
  np.testing.assert_allclose(got_w, got, rtol=1e-6)


def test_orpo_log1mexp_is_finite_at_the_edges():
  means = jnp.array([-1e-9, -0.69, -0.7, -30.0])
  grad = jax.jit(jax.grad(lambda x: pref.orpo_loss(x, x[::-1] - 0.1, 0.0)[0]))(means)
  assert bool(jnp.all(jnp.isfinite(grad)))
  np.testing.assert_allclose(pref._log1mexp(jnp.array([-0.5, -2.0])),
                             np.log1p(-np.exp([-0.5, -2.0])), rtol=1e-6)


def test_microbatches_sum_to_the_full_batch(env):
  """With whole-batch totals, the DPO losses of the two halves add up to the full-batch loss
  (cpo_simpo: see the train-step test below)."""
  b = dict(env["batch"], ref_chosen_logps=np.array([-30.0, -20.0, -10.0, 0.0], np.float32),
           ref_rejected_logps=np.array([-10.0, -40.0, -15.0, 0.0], np.float32))
  totals = pref.preference_totals(b)
  loss_fn = _loss_fn(env["cfg"], "dpo")
  full, m_full = loss_fn(env["params"], b, totals)
  halves = [loss_fn(env["params"], {k: v[s] for k, v in b.items()}, totals)
            for s in (slice(0, 2), slice(2, 4))]
  np.testing.assert_allclose(sum(h[0] for h in halves), full, rtol=1e-5)
  np.testing.assert_allclose(sum(h[1]["rewards/margins"] for h in halves),
                             m_full["rewards/margins"], rtol=1e-5, atol=1e-6)


def test_bad_names_and_missing_reference(env):
  # (Padding pairs: the parity tests' batch has a 4th, empty row that TRL's batch lacks.)
  batch = env["batch"]
  with pytest.raises(ValueError, match="unknown preference loss"):
    pref.make_loss_fn(env["cfg"], "kto")
  with pytest.raises(ValueError, match="not 'gamma'"):
    pref.make_loss_fn(env["cfg"], "dpo", gamma=1.0)
  with pytest.raises(ValueError, match="needs reference log-probs"):
    pref.make_loss_fn(env["cfg"], "dpo")(env["params"], batch)


def test_report_diffs():
  """Prints the max |ours - TRL| of the parity tests above (run with -s to see them)."""
  print("\n".join(f"{k}: {v:.3g}" for k, v in sorted(DIFFS.items())))
  assert all(v < TOL for v in DIFFS.values())


def test_train_step_with_grad_accumulation_raises_the_margin(env):
  """make_loss_fn + preference_totals in train.step with 2 microbatches: the full-batch loss,
  and a few steps raise the reward margin."""
  import optax
  from citrus_jax.train import step as step_lib
  opt = optax.adam(3e-3)
  train_step = jax.jit(step_lib.make_train_step(pref.make_loss_fn(env["cfg"], "cpo_simpo"), opt,
                                                pref.preference_totals, grad_accum=2))
  state = step_lib.init_state(env["params"], opt, seed=0)
  history = []
  for _ in range(6):
    state, m = train_step(state, env["batch"])
    history.append(jax.device_get(m))
  full_loss, full_m = _our_loss(env, "cpo_simpo")
  np.testing.assert_allclose(history[0]["loss"], full_loss, rtol=1e-5)
  np.testing.assert_allclose(history[0]["rewards/margins"], full_m["rewards/margins"], rtol=1e-5)
  assert history[-1]["loss"] < history[0]["loss"]
  assert history[-1]["rewards/margins"] > history[0]["rewards/margins"]
