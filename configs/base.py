"""Defaults shared by every stage; stage files (cpt.py, sft.py, rl.py, eval.py) override them.

Every field can be overridden from the command line, e.g.
  python -m citrus_jax.main --config=configs/cpt.py:tiny --config.optim.lr=1e-3
"""
import ml_collections


def lora_section(enabled: bool = False, rank: int = 8, alpha: float = 16.0,
                 targets: str = "q,k,v,o,gate,up,down", dropout: float = 0.0,
                 rslora: bool = False, quant: str = "none") -> ml_collections.ConfigDict:
  """config.model.lora: LoRA adapters on the named projections (q k v o gate up down, or the
  HF names q_proj ..) with the base frozen; scale alpha/r (rslora: alpha/sqrt(r)); dropout on
  the adapters' input; quant none | int8 | nf4 stores the frozen base quantised (QLoRA) in
  blocks of quant_block input entries; dtype of the adapters. See citrus_jax/model/lora.py."""
  return ml_collections.ConfigDict(dict(
      enabled=enabled, rank=rank, alpha=alpha, targets=targets, dropout=dropout, rslora=rslora,
      quant=quant, quant_block=64, dtype="float32"))


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.stage = "cpt"  # cpt | sft | rl | eval | pipeline | info
  c.mode = "train"  # train | plan | inspect
  c.workdir = "runs/default"
  c.seed = 0
  c.progress = True
  c.tensorboard = True

  # Model: a preset name (citrus_jax/model/config.py PRESETS) plus numerics overrides.
  c.model = ml_collections.ConfigDict(dict(
      preset="tiny", param_dtype="float32", compute_dtype="float32", scan_layers=True,
      remat="none", attention="auto",  # auto: cudnn fused attention on GPUs in bf16, else einsum
      vocab_size=0))  # vocab_size 0: the preset's (or the tokenizer's)
  # LoRA/QLoRA on any trained stage: --config.model.lora.enabled=True (off by default).
  c.model.lora = lora_section()
  # Where the initial params come from: random (both empty), a citrus_jax params/run dir, or HF.
  c.init = ml_collections.ConfigDict(dict(checkpoint="", hf_dir=""))
  c.tokenizer = ml_collections.ConfigDict(dict(path=""))

  # Mesh axes (data, fsdp, tensor); one -1 takes the remaining devices.
  c.mesh = ml_collections.ConfigDict(dict(shape=(1, -1, 1)))
  # Multi-host: empty values mean auto-detect (TPU VM, SLURM) or single host.
  c.distributed = ml_collections.ConfigDict(dict(
      coordinator_address="", num_processes=0, process_id=-1))

  c.data = ml_collections.ConfigDict(dict(
      train_paths="", eval_paths="", format="auto", text_field="text", seq_len=256,
      global_batch_size=8, shuffle=True, num_epochs=0, worker_count=0, on_error="raise",
      add_bos=True,  # format: auto | jsonl | text | tfds | hf
      # Logical data shards (0: one per process). Fix it to the largest host count you will use
      # and a 1-host run sees the same global batches as the pod run (citrus_jax/multihost.py).
      num_shards=0))

  c.optim = ml_collections.ConfigDict(dict(
      lr=3e-4, schedule="cosine", warmup_frac=0.05, warmup_steps=0, end_lr_frac=0.0,
      b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1, decay_norms_and_biases=False,
      grad_clip=1.0, grad_accum=1))

  c.train = ml_collections.ConfigDict(dict(
      num_steps=100, log_every=10, eval_every=0, eval_batches=4, z_loss=0.0,
      # < 1: the output layer runs only on trained targets (up to this share of each row);
      # saves the [B, T, V] logits when most slots carry no loss (SFT's prompts)
      logits_fraction=1.0,
      # > 0: cross-entropy over sequence chunks of this many tokens (train/chunked_ce.py), so
      # the full [B, T, V] fp32 logits never exist; pays off from ~4k tokens per microbatch
      loss_chunk=0,
      kill_after_step=0,
      # consecutive non-finite (skipped) steps that stop the run; 0: never stop
      max_skipped_steps=10))
  c.checkpoint = ml_collections.ConfigDict(dict(every=100, keep=3, async_save=True))
  c.plan = ml_collections.ConfigDict(dict(topology="", batch_size=0))
  return c


def check_preset(file: str, presets: dict, preset: str) -> None:
  if preset not in presets:
    raise ValueError(f"configs/{file}: unknown preset {preset!r}; known: {sorted(presets)}")


def stage_config(file: str, presets: dict, preset: str, stage: str, *, model: str, mesh: tuple,
                 remat: str, dtype: str) -> ml_collections.ConfigDict:
  """The shared start of every stage file's get_config: check the preset, set stage, workdir,
  model numerics and mesh."""
  check_preset(file, presets, preset)
  c = get_config()
  c.stage = stage
  c.workdir = f"runs/{stage}_{preset}"
  c.model.preset = model
  c.model.remat = remat
  c.model.compute_dtype = dtype
  c.mesh.shape = mesh
  return c
