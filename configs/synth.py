"""Expert-pathway synthesis of SFT-3 chains (citrus_jax/synth/pathway.py).

  python -m citrus_jax.synth --config=configs/synth.py:openai \
      --config.input.paths=medqa_train.jsonl --config.out_dir=runs/synth_medqa
  (OPENAI_API_KEY in the environment; the key is never logged or saved)
Against a vLLM server or our own (`python -m citrus_jax.infer.serve --checkpoint ... --port 8000`):
  python -m citrus_jax.synth --config=configs/synth.py:vllm --config.backend.model=<served name> \
      --config.input.paths=... --config.out_dir=...
In-process with a citrus_jax or HF checkpoint (e.g. the demo world's items):
  python -m citrus_jax.synth --config=configs/synth.py:demo \
      --config.backend.checkpoint=runs/demo/sft2 --config.backend.tokenizer=runs/demo/tok.model \
      --config.input.paths=data/sft3.jsonl
Rerunning the same command resumes: committed items are skipped and answered calls come from the
cache. Outputs: <out_dir>/sft.jsonl (SFT format), provenance.jsonl, stats.json, llm_cache.jsonl.
Presets: demo (local backend, small search), openai (gpt-4o), vllm (http://127.0.0.1:8000/v1).
"""
import ml_collections

# role -> (temperature, max_tokens)
_ROLES = {"rewrite_question": (0.0, 512), "step": (0.7, 512), "critic": (0.0, 384),
          "judge": (0.0, 128), "rewrite_chain": (0.3, 2048), "verify": (0.0, 64)}
_DEMO_ROLES = {"rewrite_question": (0.0, 64), "step": (0.7, 96), "critic": (0.0, 64),
               "judge": (0.0, 16), "rewrite_chain": (0.3, 256), "verify": (0.0, 16)}


def get_config(preset: str = "openai"):
  preset = preset or "openai"
  if preset not in ("demo", "openai", "vllm"):
    raise ValueError(f"configs/synth.py: unknown preset {preset!r}; known: demo, openai, vllm")
  c = ml_collections.ConfigDict()
  c.stage = "synth"
  c.seed = 0
  c.out_dir = f"runs/synth_{preset}"
  c.workers = 8 if preset != "demo" else 16  # items in flight; local calls are batched
  c.prompts_dir = ""  # a dir of <role>.txt overriding citrus_jax/synth/prompts/
  c.input = ml_collections.ConfigDict(dict(
      paths="",  # comma-separated files (MCQ benchmarks or {"question", "answer"} records)
      format="auto",  # auto | generic | a citrus_jax.eval.benchmarks name (medqa, unified, ...)
      on_error="raise",  # raise | skip (bad records counted in stats.json)
      limit=0,  # 0 = all items
      keep_input=True,  # keep a record's own "input" prompt (the demo's); else the Citrus prompt
  ))
  c.backend = ml_collections.ConfigDict(dict(
      kind="local" if preset == "demo" else "openai",  # openai | local
      # openai: any OpenAI-compatible server.
      base_url={"openai": "https://api.openai.com/v1", "vllm": "http://127.0.0.1:8000/v1",
                "demo": ""}[preset],
      model={"openai": "gpt-4o-2024-08-06", "vllm": "", "demo": ""}[preset],
      # The NAME of the variable holding the key. OPENAI_API_KEY goes only to api.openai.com; any
      # other endpoint gets a key only from a variable named for it (e.g. VLLM_API_KEY).
      api_key_env={"openai": "OPENAI_API_KEY", "vllm": "VLLM_API_KEY", "demo": ""}[preset],
      timeout_s=120.0, max_retries=6, backoff_s=2.0, concurrency=16,
      max_tokens_field="max_tokens",  # some hosted models want max_completion_tokens
      # local: the in-process sampler.
      checkpoint="",  # citrus_jax params dir or HF dir
      tokenizer="",  # default: the checkpoint dir
      mesh=(),  # e.g. (1, -1, 1); () = one device
      max_batch=32, batch_window_s=0.02,
  ))
  c.cache = ml_collections.ConfigDict(dict(
      path="",  # "" = <out_dir>/llm_cache.jsonl; "none" disables the cache
      namespace="",  # change to force fresh answers for otherwise identical requests
  ))
  c.search = ml_collections.ConfigDict(dict(
      width=2, depth=6, retries=2, min_depth=2, max_generations=40, max_complete=2))
  if preset == "demo":
    c.search.update(dict(width=2, depth=4, retries=1, min_depth=1, max_generations=12))
  roles = _DEMO_ROLES if preset == "demo" else _ROLES
  c.roles = ml_collections.ConfigDict({
      role: dict(temperature=t, max_tokens=m) for role, (t, m) in roles.items()})
  return c
