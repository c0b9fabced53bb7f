"""GRPO-family losses and advantages against TRL 1.16's GRPOTrainer, on fixed random log-probs.

No model: the loss comes from TRL's own `GRPOTrainer._compute_loss` on a bare trainer object
(`object.__new__`) carrying only the attributes it reads, with `_get_per_token_logps_and_entropies`
replaced by fixed tensors; the advantages come from executing TRL's own source block (the
"sum_then_normalize" branch of `_generate_and_score_completions`). Everything is float32.
"""
import collections
import inspect
import os
import textwrap
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

from trl.trainer import grpo_trainer as trl_grpo  # noqa: E402

from citrus_jax.train import grpo_loss as G  # noqa: E402

N, NG, T = 3, 4, 7  # prompts, generations per prompt, completion length
B = N * NG
TOL = 1e-5
DIFFS: dict[str, float] = {}


def _report(name, ours, theirs, relative=False):
  """Max |ours - theirs| < TOL; `relative` (gradients, ~1/(B*T) in size): over max|theirs|."""
  theirs = np.asarray(theirs, np.float64)
  diff = float(np.max(np.abs(np.asarray(ours, np.float64) - theirs)))
  if relative:
    diff /= float(np.max(np.abs(theirs)))
    name += " (relative)"
  DIFFS[name] = max(DIFFS.get(name, 0.0), diff)
  print(f"max|diff| {name}: {diff:.3g}")
  assert diff < TOL, (name, ours, theirs)


def _data(seed=0):
  rng = np.random.default_rng(seed)
  logp = -rng.exponential(1.0, (B, T)).astype(np.float32)
  old = (logp + rng.normal(0, 0.3, (B, T))).astype(np.float32)  # ratios on both sides of the clip
  ref = (logp + rng.normal(0, 0.5, (B, T))).astype(np.float32)
  lengths = rng.integers(1, T + 1, B)
  lengths[2] = 0  # an empty completion: TRL clamps its token count to 1
  mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float32)
  adv = rng.normal(0, 1, B).astype(np.float32)
  adv[5] = 0.0
  return logp, old, ref, adv, mask


# ----------------------------------------------------------------------------- TRL references


def _trl_advantages(rewards, num_generations, scale_rewards):
  """Runs TRL's own advantage block (source of `_generate_and_score_completions`) on `rewards`."""
  src = inspect.getsource(trl_grpo.GRPOTrainer._generate_and_score_completions).splitlines()
  start = next(i for i, l in enumerate(src)
               if 'if self.multi_objective_aggregation == "sum_then_normalize":' in l)
  end = next(i for i, l in enumerate(src) if "advantages = torch.nan_to_num(advantages" in l)
  block = textwrap.dedent("\n".join(src[start:end + 1]))
  cfg_mode = {True: "group", False: "none"}.get(scale_rewards, scale_rewards)  # GRPOConfig's mapping
  rewards_per_func = torch.tensor(np.asarray(rewards, np.float32)).reshape(-1, 1)
  self = types.SimpleNamespace(multi_objective_aggregation="sum_then_normalize",
                               scale_rewards=cfg_mode, reward_weights=torch.ones(1),
                               reward_funcs=[None])
  ns = dict(self=self, rewards_per_func=rewards_per_func, num_generations=num_generations,
            device="cpu", torch=torch, nanstd=trl_grpo.nanstd,
            unscorable_mask=torch.isnan(rewards_per_func).all(dim=1))
  exec(block, ns)  # noqa: S102
  return ns["advantages"].numpy(), ns["is_std_zero"].numpy()


def _trl_trainer(loss_type, eps_low, eps_high, beta, max_len, ga, spg):
  tr = object.__new__(trl_grpo.GRPOTrainer)
  tr.loss_type, tr.beta, tr.max_completion_length = loss_type, beta, max_len
  tr.epsilon_low, tr.epsilon_high = eps_low, eps_high
  tr.top_entropy_quantile, tr.off_policy_mask_threshold = 1.0, None
  tr.importance_sampling_level, tr.use_vllm, tr.vllm_importance_sampling_correction = "token", False, False
  tr.aux_loss_enabled, tr._entropy_bonus_enabled = False, False
  tr.current_gradient_accumulation_steps = ga
  tr.args = types.SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=spg)
  tr.model = types.SimpleNamespace(training=True)
  tr.accelerator = types.SimpleNamespace(num_processes=1, reduce=lambda x, reduction="sum": x,
                                         gather=lambda x: x, gather_for_metrics=lambda x: x)
  tr._metrics = {"train": collections.defaultdict(list), "eval": collections.defaultdict(list)}
  return tr


def _trl_loss(data, loss_type, eps_low, eps_high, beta, max_len=T, ga=1, spg=1, num_items=None,
              old_none=False):
  """TRL's `_compute_loss`: (loss, d loss / d logp, metrics)."""
  logp, old, ref, adv, mask = (torch.tensor(x) for x in data)
  logp = logp.clone().requires_grad_(True)
  tr = _trl_trainer(loss_type, eps_low, eps_high, beta, max_len, ga, spg)
  tr._get_per_token_logps_and_entropies = lambda *a, **k: (logp, torch.zeros_like(logp), None)
  inputs = dict(prompt_ids=torch.zeros(B, 2, dtype=torch.long), prompt_mask=torch.ones(B, 2),
                completion_ids=torch.zeros(B, T, dtype=torch.long), completion_mask=mask,
                advantages=adv, ref_per_token_logps=ref,
                num_items_in_batch=mask.sum() if num_items is None else torch.tensor(num_items))
  if not old_none:
    inputs["old_per_token_logps"] = old
  loss = tr._compute_loss(None, inputs)
  loss.backward()
  metrics = {k: v[-1] for k, v in tr._metrics["train"].items()}
  return loss.item(), logp.grad.numpy(), metrics


def _ours(data, old_none=False, **kw):
  logp, old, ref, adv, mask = (jnp.asarray(x) for x in data)
  def f(lp):
    return G.grpo_loss(lp, None if old_none else old, ref, adv, mask, **kw)
  (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(logp)
  return float(loss), np.asarray(grad), {k: float(v) for k, v in metrics.items()}


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("scale", ["group", "batch", "none", True, False])
def test_group_advantages_match_trl(scale):
  rng = np.random.default_rng(1)
  rewards = rng.normal(0, 1, B).astype(np.float32)
  rewards[NG:2 * NG] = 1.0  # a degenerate group (std 0)
  rewards[2 * NG + 1] = np.nan  # an unscorable completion
  theirs, _ = _trl_advantages(rewards, NG, scale)
  _report(f"advantages/{scale}", G.group_advantages(jnp.asarray(rewards), NG, scale), theirs)
  ours_2d = G.group_advantages(jnp.asarray(rewards).reshape(N, NG), NG, scale)
  assert ours_2d.shape == (N, NG)
  _report(f"advantages/{scale}", ours_2d.reshape(-1), theirs)
  with pytest.raises(ValueError):
    G.group_advantages(jnp.asarray(rewards), NG, "rank")


def test_dynamic_sampling_mask():
  rewards = np.array([1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0.5, 0.5, np.nan, 0.5], np.float32)
  got = np.asarray(G.dynamic_sampling_mask(jnp.asarray(rewards), 4))
  np.testing.assert_array_equal(got, [True, False, True, True])
  _, std_zero = _trl_advantages(rewards[:12], 4, "group")  # TRL's own zero-std flag agrees
  np.testing.assert_array_equal(got[:3], std_zero.reshape(3, 4)[:, 0])


@pytest.mark.parametrize("loss_type", G.LOSS_TYPES)
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("eps", [(0.2, 0.2), (0.2, 0.28)])
def test_loss_and_grad_match_trl(loss_type, beta, eps):
  data = _data()
  kw = dict(loss_type=loss_type, epsilon_low=eps[0], epsilon_high=eps[1], beta=beta,
            max_completion_length=T + 3)
  loss, grad, metrics = _ours(data, **kw)
  t_loss, t_grad, t_metrics = _trl_loss(data, loss_type, eps[0], eps[1], beta, max_len=T + 3)
  tag = f"{loss_type}/beta={beta}/eps={eps[0]},{eps[1]}"
  _report(f"loss {tag}", loss, t_loss)
  _report(f"grad {tag}", grad, t_grad, relative=True)
  for k, v in metrics.items():
    _report(f"metric {k}", v, t_metrics[k])
  assert ("kl" in metrics) == (beta != 0.0)
  assert metrics["clip_ratio/low_mean"] > 0 and metrics["clip_ratio/high_mean"] > 0


@pytest.mark.parametrize("loss_type", G.LOSS_TYPES)
def test_gradient_accumulation_and_dapo_global_normaliser(loss_type):
  """Micro-batch of a generation batch: grad-accum 2, and dapo's global token count."""
  data = _data(seed=3)
  n_items = float(data[4].sum()) * 2.5
  loss, grad, _ = _ours(data, loss_type=loss_type, epsilon_low=0.2, epsilon_high=0.28, beta=0.1,
                        max_completion_length=T, num_items_in_batch=n_items,
                        gradient_accumulation_steps=2, steps_per_generation=4)
  t_loss, t_grad, _ = _trl_loss(data, loss_type, 0.2, 0.28, 0.1, ga=2, spg=4, num_items=n_items)
  _report(f"loss {loss_type}/ga=2,spg=4", loss, t_loss)
  _report(f"grad {loss_type}/ga=2,spg=4", grad, t_grad, relative=True)


def test_on_policy_old_logp_none():
  """old_logp None = TRL's num_iterations == 1 path: ratio 1 in value, gradient A-weighted."""
  data = _data(seed=4)
  loss, grad, metrics = _ours(data, old_none=True, loss_type="grpo", epsilon_low=0.2,
                              epsilon_high=0.28, beta=0.0)
  t_loss, t_grad, _ = _trl_loss(data, "grpo", 0.2, 0.28, 0.0, old_none=True)
  _report("loss grpo/old=None", loss, t_loss)
  _report("grad grpo/old=None", grad, t_grad, relative=True)
  assert metrics["clip_ratio/region_mean"] == 0.0


def test_logprobs_of_is_token_logprobs():
  logits = jax.random.normal(jax.random.key(0), (2, 3, 5))
  targets = jnp.array([[0, 1, 4], [2, 3, 3]])
  ref = jax.nn.log_softmax(logits, -1)
  want = jnp.take_along_axis(ref, targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(G.logprobs_of(logits, targets), want, atol=1e-6)


def test_zz_summary():
  """Prints the largest difference per check (run with -s)."""
  for name, diff in sorted(DIFFS.items()):
    print(f"{name}: {diff:.3g}")
  assert DIFFS
