"""JMED-style benchmark construction (citrus_jax/eval/build_benchmark.py).

  python -m citrus_jax.eval.build_benchmark --config=configs/benchmark_build.py:openai \
      --config.input.paths=dialogues.jsonl --config.out_dir=runs/bench_build
  (OPENAI_API_KEY in the environment; the key is never logged or saved)
Against a vLLM server or our own (`python -m citrus_jax.infer.serve ...`):
  ... --config=configs/benchmark_build.py:vllm --config.backend.model=<served name>
Rerunning the same command resumes (committed sources skipped, answered calls from the cache).
Then score the built file:
  python -m citrus_jax.main --config=configs/eval.py:paper --config.eval.benchmarks=unified \
      --config.eval.data_paths=runs/bench_build/benchmark.jsonl --config.init.hf_dir=...
Input records: {"id", "diagnosis", "dialogue": [{"role", "text"}] | "record": text,
"lookalikes": [...] (optional), "department" (optional)}.
Presets: openai (gpt-4o), vllm (http://127.0.0.1:8000/v1), demo (the in-process sampler).
"""
import ml_collections

from configs import synth

_ROLES = {"case": (0.0, 512), "distractors": (0.7, 256), "check": (0.0, 16)}


def get_config(preset: str = "openai"):
  preset = preset or "openai"
  if preset not in ("demo", "openai", "vllm"):
    raise ValueError(f"configs/benchmark_build.py: unknown preset {preset!r}; known: demo, "
                     "openai, vllm")
  s = synth.get_config(preset)
  c = ml_collections.ConfigDict()
  c.stage = "benchmark_build"
  c.seed = 0
  c.out_dir = f"runs/bench_build_{preset}"
  c.workers = s.workers
  c.exam_name = "built_mcq"  # the unified records' exam_name (the eval source name)
  c.n_options = 5  # JMED's; gold + n_options - 1 distractors
  c.n_proposed = 6  # look-alikes asked of the distractors role
  c.input = ml_collections.ConfigDict(dict(
      paths="",  # comma-separated JSONL / JSON array files of source records
      lookalikes="",  # optional JSON {diagnosis: [look-alikes]}
      on_error="raise",  # raise | skip (bad records counted in stats.json)
      limit=0,  # 0 = all sources
  ))
  c.quality = ml_collections.ConfigDict(dict(
      llm_check=True,  # the check role answers each item; another or a second letter drops it
      dup_n=5,  # word n-grams compared between cases
      dup_threshold=0.5,  # share of the shorter case's n-grams that makes a duplicate
  ))
  c.backend = s.backend  # the synthesis backends (configs/synth.py)
  c.cache = s.cache
  c.roles = ml_collections.ConfigDict({
      role: dict(temperature=t, max_tokens=m) for role, (t, m) in _ROLES.items()})
  return c
