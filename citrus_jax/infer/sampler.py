"""Batched generation with a KV cache: left-padded prefill, then a compiled one-token decode loop.

Prompts of different lengths share one batch by LEFT padding: padding slots carry segment id 0
(never attended) and each row's positions start at 0 at its first real token, so every row sees
exactly what it would see alone. The whole of generation (prefill, sampling, the decode
`while_loop`, stop checks) is one jitted function; the loop exits as soon as every row is done.

Conventions (the ones RL and DPO code relies on):
  * `tokens` holds the new tokens only. A stop token (or the tokens completing a stop sequence)
    IS included: it is part of the policy's action and has a log-prob.
  * `logprobs` is log_softmax of the RAW logits at the sampled token, i.e. the model's own
    log-prob, which equals what the training forward computes for the same sequence.
    `sampling_logprobs` is the log-prob under the distribution actually sampled from (after
    temperature, top-k and top-p; 0 for greedy).
  * Rows that finished emit `pad_id` (log-prob 0) until the whole batch is done.

Recompiles are limited by bucketing: the padded prompt length is rounded up to a power of two (at
least 16; multiples of 512 beyond 512), the batch to a power of two (and a multiple of the mesh's
data-parallel size). Static under jit: cfg, max_new_tokens, greedy-or-not, top_k, whether top-p is
on, the number of stop ids/sequences; temperature and top_p values are traced.

On CPU the decode loop runs the layers unrolled on per-layer copies of the weights (twice the
weight memory while generating) with the cache in the layouts attention reads; that made decoding
~1.7x faster on the demo model. Elsewhere the loop uses the stacked, scanned layers as given.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback
from jax.experimental.layout import Layout, with_layout_constraint

from citrus_jax import multihost, sharding
from citrus_jax.model import lora, transformer
from citrus_jax.model.config import ModelConfig

_NEG_INF = -jnp.inf


# ------------------------------------------------------------------------------------------------
# Pure sampling functions on logits [B, V].


def top_k_filter(logits_BV: jax.Array, k: int) -> jax.Array:
  """Keeps the k largest logits per row (all tokens tied with the k-th are kept), -inf elsewhere."""
  if k <= 0 or k >= logits_BV.shape[-1]:
    return logits_BV
  kth_B1 = jax.lax.top_k(logits_BV, k)[0][..., -1:]
  return jnp.where(logits_BV >= kth_B1, logits_BV, _NEG_INF)


def top_p_filter(logits_BV: jax.Array, p: jax.Array | float) -> jax.Array:
  """Nucleus filter: the smallest set of most likely tokens whose mass reaches p (always >= 1
  token; tokens tied with the last one kept are kept too, so the kept mass is >= p)."""
  sorted_BV = -jnp.sort(-logits_BV, axis=-1)
  probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
  mass_before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
  keep_BV = mass_before_BV < p
  keep_BV = keep_BV.at[:, 0].set(True)
  cutoff_B1 = jnp.min(jnp.where(keep_BV, sorted_BV, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits_BV >= cutoff_B1, logits_BV, _NEG_INF)


def process_logits(logits_BV: jax.Array, temperature: jax.Array | float, top_k: int = 0,
                   top_p: jax.Array | float | None = None) -> jax.Array:
  """Temperature, then top-k, then top-p (the transformers order). top_p None = off."""
  out = logits_BV.astype(jnp.float32) / temperature
  out = top_k_filter(out, top_k)
  if top_p is not None:
    out = top_p_filter(out, top_p)
  return out


def sample_tokens(rng: jax.Array, logits_BV: jax.Array, *, greedy: bool,
                  temperature: jax.Array | float = 1.0, top_k: int = 0,
                  top_p: jax.Array | float | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(tokens [B], model log-probs [B], sampling log-probs [B]) for one step.

  The model log-prob is log_softmax of the raw logits; the sampling log-prob is under the
  processed distribution (0 for greedy, which takes the argmax of the raw logits)."""
  logits_BV = logits_BV.astype(jnp.float32)
  model_lp_BV = jax.nn.log_softmax(logits_BV, axis=-1)
  if greedy:
    tok_B = jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    sample_lp_B = jnp.zeros(tok_B.shape, jnp.float32)
  else:
    processed_BV = process_logits(logits_BV, temperature, top_k, top_p)
    tok_B = jax.random.categorical(rng, processed_BV, axis=-1).astype(jnp.int32)
    sample_lp_B = jnp.take_along_axis(
        jax.nn.log_softmax(processed_BV, axis=-1), tok_B[:, None], axis=-1)[:, 0]
  model_lp_B = jnp.take_along_axis(model_lp_BV, tok_B[:, None], axis=-1)[:, 0]
  return tok_B, model_lp_B, sample_lp_B


# ------------------------------------------------------------------------------------------------
# Bucketing and left padding (host side).


def bucket_length(n: int, minimum: int = 16, step_above: int = 512) -> int:
  """Power of two >= n (at least `minimum`); beyond `step_above`, the next multiple of it."""
  if n > step_above:
    return -(-n // step_above) * step_above
  return max(minimum, 1 << max(0, n - 1).bit_length())


def bucket_batch(n: int, multiple: int = 1) -> int:
  b = 1 << max(0, n - 1).bit_length()
  return -(-b // multiple) * multiple


def left_pad(prompts: Sequence[Sequence[int]], length: int, batch: int,
             pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """tokens [batch, length] with each prompt right-aligned, and true lengths [batch] (0 for the
  extra rows that fill the batch bucket)."""
  tokens = np.full((batch, length), pad_id, np.int32)
  lengths = np.zeros((batch,), np.int32)
  for i, p in enumerate(prompts):
    if len(p):
      tokens[i, length - len(p):] = p
    lengths[i] = len(p)
  return tokens, lengths


# ------------------------------------------------------------------------------------------------
# The compiled core.


def _cache_shardings(cache: dict[str, jax.Array], mesh: jax.sharding.Mesh) -> dict[str, Any]:
  names = {"k": ("layers", "batch", "length", "kv_heads", None),
           "v": ("layers", "batch", "length", "kv_heads", None),
           "segment_ids": ("batch", "length"), "index": ()}
  return {key: jax.sharding.NamedSharding(
      mesh, sharding.logical_to_spec(names[key], cache[key].shape, mesh)) for key in cache}


class _PerLayer:
  """Per-layer weights that the unrolled `forward` (scan_layers=False) indexes as `a[i]`.

  A pytree leaf holding a list, so that inside the decode loop each layer's weights are separate
  buffers: slicing stacked [L, ...] arrays there makes XLA:CPU copy every weight on every step
  (about a quarter of decode time on the demo model). The cache likewise travels through the
  loop as per-layer tuples (in the layouts attention reads); `forward` stacks its update and
  `_split_cache` splits it again, which XLA folds away."""

  def __init__(self, arrays: list[jax.Array]):
    self.arrays = arrays

  def __getitem__(self, i: int) -> jax.Array:
    return self.arrays[i]


def _split_params(params: Any, n_layers: int) -> Any:
  # Leaf by leaf, so LoRA-adapted and quantised kernels (dict leaves, model/lora.py) split too.
  layers = jax.tree.map(lambda a: _PerLayer([a[i] for i in range(n_layers)]), params["layers"])
  return dict(params, layers=layers)


# Physical layouts (major to minor) of one layer's cache [B, S, K, E] in the CPU decode loop:
# the ones attention's two einsums read, so XLA does not transpose the whole cache every step.
_K_LAYOUT = Layout((0, 2, 1, 3))  # [B, K, S, E]
_V_LAYOUT = Layout((0, 2, 3, 1))  # [B, K, E, S]


def _split_cache(cache: dict[str, Any], n_layers: int) -> dict[str, Any]:
  k = tuple(with_layout_constraint(cache["k"][i], _K_LAYOUT) for i in range(n_layers))
  v = tuple(with_layout_constraint(cache["v"][i], _V_LAYOUT) for i in range(n_layers))
  return dict(cache, k=k, v=v)


def _stop_seq_hit(window_BW: jax.Array, seqs_MW: jax.Array) -> jax.Array:
  """Whether the last generated tokens equal any stop sequence (right-aligned, -1 = wildcard)."""
  match_BMW = (seqs_MW[None] == -1) | (window_BW[:, None, :] == seqs_MW[None])
  return jnp.any(jnp.all(match_BMW, axis=-1), axis=-1)


class DecodeState(NamedTuple):
  """Per-row outputs and flags carried through the decode loop (N = max_new_tokens)."""
  tokens_BN: jax.Array  # new tokens; pad_id after a row finished
  logprobs_BN: jax.Array  # log_softmax(raw logits)[token]
  sampling_logprobs_BN: jax.Array  # under the processed (temperature/top-k/top-p) distribution
  done_B: jax.Array  # finished: stopped, cancelled by on_step, or an empty row
  stopped_B: jax.Array  # finished by a stop id or stop sequence (finish_reason "stop")
  n_generated_B: jax.Array  # tokens written so far
  window_BW: jax.Array  # the newest W tokens, matched against the stop sequences


StepHook = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array], Any]


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "greedy", "top_k",
                                             "use_top_p", "pad_id", "mesh", "split_layers",
                                             "on_step", "on_step_every"))
def _generate_core(params, tokens_BP, lengths_B, rng, temperature, top_p, stop_ids_S, stop_seqs_MW,
                   *, cfg: ModelConfig, max_new_tokens: int, greedy: bool, top_k: int,
                   use_top_p: bool, pad_id: int, mesh: jax.sharding.Mesh | None,
                   split_layers: bool, on_step: StepHook | None = None,
                   on_step_every: int = 1):
  B, P = tokens_BP.shape
  N = max_new_tokens
  slots_P = jnp.arange(P, dtype=jnp.int32)
  start_B = P - lengths_B
  segments_BP = (slots_P[None] >= start_B[:, None]).astype(jnp.int32)
  positions_BP = jnp.maximum(slots_P[None] - start_B[:, None], 0)
  cache = transformer.init_cache(cfg, B, P + N)
  if mesh is not None:
    cache = jax.lax.with_sharding_constraint(cache, _cache_shardings(cache, mesh))
  # Prefill; only the last slot's logits are needed (left padding puts every row's last prompt
  # token there), so the [B, P, V] logits are never built.
  hidden_BPD, cache = transformer.forward(params, tokens_BP, cfg, positions_BT=positions_BP,
                                          segment_ids_BT=segments_BP, cache=cache,
                                          return_hidden=True)
  last_logits_BV = transformer.logits_from_hidden(params, hidden_BPD[:, -1:], cfg)[:, 0]
  pick = functools.partial(sample_tokens, greedy=greedy, temperature=temperature, top_k=top_k,
                           top_p=top_p if use_top_p else None)
  W = stop_seqs_MW.shape[1]

  def record(state, step, tok_B, lp_B, slp_B):
    """Writes step's outputs for rows still running and updates done/stop flags."""
    def write(out_BN, value_B):
      return jax.lax.dynamic_update_slice_in_dim(out_BN, value_B[:, None], step, axis=1)

    live_B = ~state.done_B
    tok_B = jnp.where(live_B, tok_B, pad_id)
    hit_B = jnp.any(tok_B[:, None] == stop_ids_S[None], axis=-1)
    window_BW = state.window_BW
    if W:
      window_BW = jnp.concatenate([window_BW[:, 1:], tok_B[:, None]], axis=1)
      hit_B = hit_B | _stop_seq_hit(window_BW, stop_seqs_MW)
    hit_B = hit_B & live_B
    return state._replace(
        tokens_BN=write(state.tokens_BN, tok_B),
        logprobs_BN=write(state.logprobs_BN, jnp.where(live_B, lp_B, 0.0)),
        sampling_logprobs_BN=write(state.sampling_logprobs_BN, jnp.where(live_B, slp_B, 0.0)),
        done_B=state.done_B | hit_B, stopped_B=state.stopped_B | hit_B,
        n_generated_B=state.n_generated_B + live_B.astype(jnp.int32),
        window_BW=window_BW), tok_B

  K = min(on_step_every, N)

  def report(state, step):
    """The host hook (streaming, cancellation) every K steps: sees the last K steps' tokens and
    each row's count so far, may end rows."""
    if on_step is None:
      return state

    def call(state):
      start = jnp.maximum(step - K + 1, 0)
      window_BK = jax.lax.dynamic_slice_in_dim(state.tokens_BN, start, K, axis=1)
      cancel_B = io_callback(on_step, jax.ShapeDtypeStruct((B,), jnp.bool_), step, start,
                             window_BK, state.n_generated_B, ~state.done_B)
      return state._replace(done_B=state.done_B | cancel_B)
    return call(state) if K == 1 else jax.lax.cond(step % K == K - 1, call, lambda s: s, state)

  state = DecodeState(
      tokens_BN=jnp.full((B, N), pad_id, jnp.int32), logprobs_BN=jnp.zeros((B, N), jnp.float32),
      sampling_logprobs_BN=jnp.zeros((B, N), jnp.float32), done_B=lengths_B == 0,
      stopped_B=jnp.zeros((B,), bool), n_generated_B=jnp.zeros((B,), jnp.int32),
      window_BW=jnp.full((B, W), -2, jnp.int32))
  tok_B, lp_B, slp_B = pick(jax.random.fold_in(rng, 0), last_logits_BV)
  state, tok_B = record(state, 0, tok_B, lp_B, slp_B)
  state = report(state, jnp.int32(0))

  def cond(carry):
    step, _, _, state = carry
    return (step < N) & ~jnp.all(state.done_B)

  # On CPU the loop runs the unrolled forward on per-layer weights and caches (see _PerLayer);
  # that holds a second copy of the weights, so accelerators keep the stacked layout.
  loop_cfg = cfg.replace(scan_layers=False) if split_layers else cfg
  loop_params = _split_params(params, cfg.n_layers) if split_layers else params
  split_cache = functools.partial(_split_cache, n_layers=cfg.n_layers) if split_layers else (
      lambda c: c)

  def body(carry):
    step, tok_B, cache, state = carry
    positions_B1 = (lengths_B + step - 1)[:, None]
    logits_B1V, cache = transformer.forward(loop_params, tok_B[:, None], loop_cfg,
                                            positions_BT=positions_B1,
                                            segment_ids_BT=jnp.ones((B, 1), jnp.int32),
                                            cache=cache)
    cache = split_cache(cache)
    tok_B, lp_B, slp_B = pick(jax.random.fold_in(rng, step), logits_B1V[:, 0])
    state, tok_B = record(state, step, tok_B, lp_B, slp_B)
    state = report(state, step)
    return step + 1, tok_B, cache, state

  _, _, _, state = jax.lax.while_loop(
      cond, body, (jnp.int32(1), tok_B, split_cache(cache), state))
  return (state.tokens_BN, state.logprobs_BN, state.sampling_logprobs_BN, state.stopped_B,
          state.n_generated_B)


# ------------------------------------------------------------------------------------------------
# Public API.


@dataclasses.dataclass
class GenerationResult:
  """Per-row outputs; `tokens[i]` includes the stop token/sequence when finish_reason is 'stop'."""
  tokens: list[list[int]]
  logprobs: list[list[float]]  # log_softmax(raw logits)[token]: the model's own log-prob
  sampling_logprobs: list[list[float]]  # under the processed (temperature/top-k/top-p) dist.
  finish_reason: list[str]  # "stop" or "length"


def _platform(mesh: jax.sharding.Mesh | None) -> str:
  return (jax.devices()[0] if mesh is None else mesh.devices.flat[0]).platform


def _default_stop_ids(cfg: ModelConfig) -> tuple[int, ...]:
  return () if cfg.eos_token_id is None else (cfg.eos_token_id,)


def generate(
    params: Any,
    cfg: ModelConfig,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    stop_ids: Sequence[int] | None = None,
    stop_sequences: Sequence[Sequence[int]] = (),
    pad_id: int = 0,
    mesh: jax.sharding.Mesh | None = None,
    on_step: StepHook | None = None,
    on_step_every: int = 1,
    merge_adapters: bool = False,
) -> GenerationResult:
  """Samples up to `max_new_tokens` after each prompt (temperature 0 = greedy).

  stop_ids defaults to (cfg.eos_token_id,); pass () to never stop early. stop_sequences are token
  id sequences matched on device against the newest generated tokens. With `mesh`, params are
  placed with `sharding.param_shardings` and the batch is split over the data axes. On several
  processes (a mesh spanning them all) every process passes the same prompts and gets every
  row back; params must already be global arrays on the mesh (or host numpy arrays).

  on_step(step, start, tokens_BK, n_generated_B, live_B) -> end_B runs on the host after every
  `on_step_every`-th step (token-by-token streaming, cancellation): the tokens of steps
  [start, start + K) for the whole padded batch (row i's new ones are its indices below
  n_generated_B[i]), and which rows still run; it returns a bool [B] array of rows to end now
  (they finish as "length"). A host callback per step costs ~0.1-1 ms on CPU, hence the stride;
  tokens after the last call are only in the result. Both are static under jit: pass the same
  hashable object each call or every call recompiles. None (the default) compiles exactly what
  it did before.

  LoRA-adapted (and quantised) params run as they are, base + adapters in each matmul
  (model/lora.py); merge_adapters=True merges them into plain kernels first (then each decode
  step does one matmul per projection).
  """
  if max_new_tokens < 1:
    raise ValueError(f"generate: max_new_tokens={max_new_tokens} must be >= 1")
  if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
    raise ValueError(f"generate: need temperature >= 0, 0 < top_p <= 1, top_k >= 0; got "
                     f"temperature={temperature}, top_p={top_p}, top_k={top_k}")
  if not prompts:
    raise ValueError("generate: prompts is empty")
  prompts = [list(map(int, p)) for p in prompts]
  for i, p in enumerate(prompts):
    if not p:
      raise ValueError(f"generate: prompt {i} is empty; it needs at least one token (e.g. BOS)")
    if min(p) < 0 or max(p) >= cfg.vocab_size:
      raise ValueError(f"generate: prompt {i} has token ids outside [0, {cfg.vocab_size})")
    if len(p) + max_new_tokens > cfg.max_seq_len:
      raise ValueError(f"generate: prompt {i} length {len(p)} + max_new_tokens {max_new_tokens} "
                       f"exceeds cfg.max_seq_len={cfg.max_seq_len}")
  stop_ids = _default_stop_ids(cfg) if stop_ids is None else tuple(int(s) for s in stop_ids)
  stop_ids_S = np.asarray(stop_ids or (-1,), np.int32)
  seqs = [list(map(int, s)) for s in stop_sequences if len(s)]
  W = max((len(s) for s in seqs), default=0)
  stop_seqs_MW = np.full((max(len(seqs), 1), W), -1, np.int32)
  for m, s in enumerate(seqs):
    stop_seqs_MW[m, W - len(s):] = s

  if merge_adapters and lora.has_adapters(params):
    params = jax.jit(lora.merge)(params)
  dp = sharding.data_parallel_size(mesh) if mesh is not None else 1
  B = bucket_batch(len(prompts), dp)
  P = bucket_length(max(len(p) for p in prompts))
  tokens_BP, lengths_B = left_pad(prompts, P, B, pad_id)
  if mesh is not None:
    params = jax.device_put(params, lora.shardings_like(params, cfg, mesh))
    tokens_BP = multihost.global_array(tokens_BP, sharding.batch_sharding(mesh, 2))
    lengths_B = multihost.global_array(lengths_B, sharding.batch_sharding(mesh, 1))
  greedy = temperature == 0.0
  out = _generate_core(
      params, tokens_BP, lengths_B, jax.random.key(seed), jnp.float32(temperature or 1.0),
      jnp.float32(top_p), stop_ids_S, stop_seqs_MW, cfg=cfg, max_new_tokens=max_new_tokens,
      greedy=greedy, top_k=0 if greedy else top_k, use_top_p=(not greedy) and top_p < 1.0,
      pad_id=pad_id, mesh=mesh, split_layers=_platform(mesh) == "cpu", on_step=on_step,
      on_step_every=max(1, int(on_step_every)))
  out_tok, out_lp, out_slp, stopped, n_gen = multihost.to_host(out)
  rows = range(len(prompts))
  return GenerationResult(
      tokens=[out_tok[i, :n_gen[i]].tolist() for i in rows],
      logprobs=[out_lp[i, :n_gen[i]].tolist() for i in rows],
      sampling_logprobs=[out_slp[i, :n_gen[i]].tolist() for i in rows],
      finish_reason=["stop" if stopped[i] else "length" for i in rows])


# ------------------------------------------------------------------------------------------------
# Text level.


class Tokenizer(Protocol):
  """What generate_text needs (citrus_jax.tokenizer.Tokenizer fits): `encode` adds no special
  tokens, `decode` drops them."""

  def encode(self, text: str) -> list[int]: ...
  def decode(self, ids: Sequence[int]) -> str: ...


@dataclasses.dataclass
class TextGeneration:
  """One completion. `text` stops before the stop string; `tokens`/`logprobs` run up to and
  including the token that completed it (or the stop token, which `text` never shows)."""
  text: str
  tokens: list[int]
  logprobs: list[float]
  finish_reason: str


def _cut_at_stop_strings(tokenizer: Tokenizer, tokens: list[int], stop_strings: Sequence[str],
                         skip_ids: set[int]) -> tuple[str, int] | None:
  """(text before the first stop string, number of tokens needed to produce it) or None."""
  decode = lambda ids: tokenizer.decode([t for t in ids if t not in skip_ids])
  full = decode(tokens)
  hits = [(full.find(s), s) for s in stop_strings if s and s in full]
  if not hits:
    return None
  pos, s = min(hits)
  lo, hi = 1, len(tokens)  # the shortest prefix whose text contains the stop string
  while lo < hi:
    mid = (lo + hi) // 2
    if s in decode(tokens[:mid]):
      hi = mid
    else:
      lo = mid + 1
  return full[:pos], lo


def generate_text(
    params: Any,
    cfg: ModelConfig,
    tokenizer: Tokenizer,
    prompts: Sequence[str | Sequence[int]],
    *,
    max_new_tokens: int,
    stop_strings: Sequence[str] = (),
    add_bos: bool = False,
    **kwargs: Any,
) -> list[TextGeneration]:
  """Text in, text out. String prompts are encoded with `tokenizer` (with `add_bos`, BOS is put
  in front unless already there); token-id lists pass through (e.g. a rendered chat prompt).

  Stop strings are matched on the decoded text after generation, which is the authority; each is
  also encoded and matched on device as a token sequence, so generation usually ends early. A
  stop string that the model spells with other tokens is still cut on the host, just not early.
  stop_ids defaults to `tokenizer.stop_ids` when it has them (EOS and end-of-turn), else to
  cfg.eos_token_id. Other kwargs go to `generate` (temperature, top_p, top_k, seed, pad_id, mesh,
  on_step, on_step_every).
  """
  bos = cfg.bos_token_id
  ids = []
  for p in prompts:
    p = tokenizer.encode(p) if isinstance(p, str) else list(p)
    if add_bos and bos is not None and p[:1] != [bos]:
      p = [bos] + p
    ids.append(p)
  if kwargs.get("stop_ids") is None:
    kwargs["stop_ids"] = tuple(getattr(tokenizer, "stop_ids", None) or _default_stop_ids(cfg))
  seqs = [tokenizer.encode(s) for s in stop_strings if s]
  result = generate(params, cfg, ids, max_new_tokens=max_new_tokens,
                    stop_sequences=[s for s in seqs if s], **kwargs)
  skip = set(kwargs["stop_ids"])
  outs = []
  for toks, lps, reason in zip(result.tokens, result.logprobs, result.finish_reason):
    cut = _cut_at_stop_strings(tokenizer, toks, stop_strings, skip)
    if cut is not None:
      text, n = cut
      outs.append(TextGeneration(text, toks[:n], lps[:n], "stop"))
    else:
      text = tokenizer.decode([t for t in toks if t not in skip])
      outs.append(TextGeneration(text, toks, lps, reason))
  return outs
