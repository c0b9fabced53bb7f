"""The whole Citrus lifecycle on a laptop CPU, on the shipped clinical world.

  python -m citrus_jax.main --config=configs/demo.py          # the full demo (~10 min, 2 cores)
  python -m citrus_jax.main --config=configs/demo.py:small    # 22 conditions, ~6.5 min (e2e test)
  python -m citrus_jax.main --config=configs/demo.py:tiny     # ~3 min smoke run (the notebook's)
  python -m citrus_jax.main --config=configs/demo.py:noisy_teacher  # SFT-3 taught by a wrong teacher

world -> sentencepiece tokenizer -> CPT -> SFT-1 -> SFT-2 -> SFT-3 -> rejection sampling ->
CPO+SimPO -> evaluation of every stage -> HF export -> report. Rerunning the same command
continues where it stopped (each step records `done.json` in its directory). This is
configs/citrus.py's pipeline with the clinical world as its data source; the `demo` knobs set
the steps' overrides (citrus_jax/pipeline/clinic.py apply_knobs), and config.steps.* takes the
rest (e.g. --config.steps.eval.skip=True).
"""
import ml_collections

from citrus_jax.demo import clinic_conditions
from citrus_jax.pipeline import clinic
from configs import citrus

# The small preset's world: three clusters of the table (chest pain, breathlessness and upper
# abdominal pain; acute pelvic pain; rashes) whose 22 conditions each keep >= 3 look-alikes inside
# it, two of them CPT-only. A few minutes of training learn a world this size (README, The demo).
SMALL_WORLD = (
    "Acute myocardial infarction", "Stable angina", "Acute pericarditis", "Aortic dissection",
    "Heart failure", "Pulmonary embolism", "Spontaneous pneumothorax",
    "Community-acquired pneumonia", "Asthma", "Chronic obstructive pulmonary disease",
    "Gastroesophageal reflux disease", "Peptic ulcer disease", "Acute pancreatitis",
    "Acute cholecystitis", "Acute appendicitis", "Ectopic pregnancy", "Ovarian torsion",
    "Pelvic inflammatory disease", "Psoriasis", "Atopic dermatitis", "Contact dermatitis",
    "Tinea corporis")
SMALL_CPT_ONLY = ("Aortic dissection", "Spontaneous pneumothorax")

# preset -> knobs that set the size of the run.
# Token budget: the "clinic" model trains at ~5k tokens/s on 2 CPU cores; SFT rows of 256 tokens
# hold one chat (phrase tokenizer: ~110 prompt + ~80 answer tokens). How the default splits its
# ~8 training minutes (chosen on the dev split, README): CPT and SFT-1/2 carry the world's
# knowledge (with a quarter of their steps SFT-3 reached 2% dev accuracy instead of 35%), more
# CPT beat more SFT-3 steps (64% vs 54%), and SFT-3 learns more per token in batches of 4 chats
# than of 8 (35% vs 25%); more distinct SFT-3 cases (6000 instead of 1500) did worse (35% vs 54%).
_PRESETS = {
    "default": dict(model="clinic", vocab=4096, cpt_seq_len=256, seq_len=256, batch=8,
                    cpt_steps=200, sft_steps=(200, 100, 1180), sft_batch_sizes=(8, 8, 4),
                    rs_questions=64, rs_samples=4,
                    rl_epochs=1, eval_items=200, eval_max_new_tokens=160, world_scale=1.0),
    "small": dict(model="clinic", vocab=4096, cpt_seq_len=256, seq_len=256, batch=8,
                  cpt_steps=100, sft_steps=(100, 50, 1000), sft_batch_sizes=(8, 8, 4),
                  rs_questions=32, rs_samples=4,
                  rl_epochs=1, eval_items=100, eval_max_new_tokens=160, world_scale=0.5,
                  conditions=SMALL_WORLD, cpt_only=SMALL_CPT_ONLY),
    # The designed experiment of README (The demo): the default run with an SFT-3 teacher that
    # misreads a fifth of the conditions (argues the closest look-alike in 70% of their chats).
    "noisy_teacher": dict(model="clinic", vocab=4096, cpt_seq_len=256, seq_len=256, batch=8,
                          cpt_steps=200, sft_steps=(200, 100, 1180), sft_batch_sizes=(8, 8, 4),
                          rs_questions=64, rs_samples=4, rl_epochs=1, eval_items=200,
                          eval_max_new_tokens=160, world_scale=1.0, teacher_misread=0.2,
                          teacher_error_rate=0.7),
    # A smoke run (~3 min on 2 cores; the notebook's test): a handful of steps.
    "tiny": dict(model="clinic", vocab=1024, cpt_seq_len=128, seq_len=256, batch=8,
                 cpt_steps=10, sft_steps=(3, 3, 10), rs_questions=8, rs_samples=2,
                 rl_epochs=3, eval_items=16, eval_max_new_tokens=32, world_scale=0.1),
}


def get_config(preset: str = "default"):
  """configs/citrus.py's pipeline with the clinical world as its data source; the `demo` knobs
  below set the steps' overrides (citrus_jax/pipeline/clinic.py apply_knobs)."""
  preset = preset or "default"
  if preset not in _PRESETS:
    raise ValueError(f"configs/demo.py: unknown preset {preset!r}; known: {sorted(_PRESETS)}")
  p = _PRESETS[preset]
  none = ml_collections.config_dict.placeholder
  c = citrus.recipe(
      source="clinic_world", model=p["model"], mesh=(1, -1, 1),
      cpt=citrus.step("demo", overrides=_train_keys()),
      sft=tuple(citrus.step("demo", train_paths="", eval_paths="",
                            overrides=_train_keys(data={"num_epochs": 0})) for _ in range(3)),
      rl=citrus.step("demo", train_paths="", overrides=_train_keys(
          data={"num_epochs": 1}, rl={"max_length": 0, "max_prompt_length": 0,
                                      "beta": none(float), "gamma": none(float),
                                      "cpo_alpha": none(float)})),
      grpo=citrus.step("demo", skip=True, train_paths="", init_from="sft3", overrides={
          "optim": {"lr": 0.0}, "train": {"num_steps": 0, "log_every": 1},
          "checkpoint": {"every": 1},
          "grpo": {"prompts_per_step": 0, "num_generations": 0, "max_new_tokens": 0,
                   "temperature": 0.0, "loss_type": "", "max_prompt_length": 0,
                   "sampled_prompts": 0, "length_bucket": 0}}),
      rejection=citrus.rejection_step(prompt="citrus", scorer=""),
      eval_step=citrus.eval_step("demo", checkpoints="random,cpt,sft3,rl,grpo",
                                 baselines="random,cpt", overrides={"eval": {
                                     "mode": "both", "prompt": "citrus", "temperature": 0.0,
                                     "max_new_tokens": 0, "batch_size": 0, "limit": 0}}),
      workdir=f"runs/demo_{preset}" if preset != "default" else "runs/demo")
  c.data.seq_len = p["seq_len"]
  c.data.global_batch_size = p["batch"]
  c.checkpoint.every = 50
  c.train.log_every = 10
  c.demo = ml_collections.ConfigDict(dict(
      world_seed=0,
      world_scale=p["world_scale"],  # multiplies the world's default split sizes
      world_conditions=p.get("conditions", ()),  # part of the condition table (empty: all of it)
      world_cpt_only=p.get("cpt_only", clinic_conditions.DEFAULT_CPT_ONLY),  # seen only in CPT
      sft3_cases=p.get("sft3_cases", 0),  # SFT-3 chats in the world (0: its default x scale)
      tokenizer_vocab=p["vocab"],
      tokenizer_phrases=True,  # pieces may span words (frequent phrases become one id)
      cpt_steps=p["cpt_steps"], cpt_lr=3e-3, cpt_seq_len=p["cpt_seq_len"],
      sft_steps=p["sft_steps"], sft_lr=3e-3,
      sft_batch_sizes=p.get("sft_batch_sizes", (p["batch"],) * 3),  # rows per step, per stage
      sft3_source="template",  # template | synth (expert-pathway synthesis output, sft3_path)
      sft3_path="",
      sft3_options_fraction=1.0,  # SFT-3 chats with the options listed (the rest: open question)
      # An SFT-3 teacher without a final-answer check (clinic_world.teacher_errors): it misreads
      # this fraction of the conditions, and argues the closest look-alike in teacher_error_rate
      # of their chats. 0: the clean teacher. The "noisy_teacher" preset is the designed
      # experiment of README (The demo): what RL on verified answers does when SFT taught errors.
      teacher_misread=p.get("teacher_misread", 0.0),
      teacher_error_rate=p.get("teacher_error_rate", 0.0),
      rs_questions=p["rs_questions"], rs_samples=p["rs_samples"], rs_temperature=0.7,
      rs_max_new_tokens=p["eval_max_new_tokens"], rs_min_think_chars=100,
      rs_unverified_as_wrong=True,  # an answer naming no option is a wrong answer
      rs_min_pairs=32,  # below this, top up with gold-chain pairs (reported separately)
      rl_epochs=p["rl_epochs"], rl_lr=1e-4, rl_max_length=p["seq_len"],
      rl_batch_size=8,  # pairs per RL step
      rl_beta=none(float),  # unset: CPO+SimPO's beta 10
      rl_gamma=none(float),  # unset: gamma 5.4
      rl_cpo_alpha=none(float),  # unset: alpha 0.05
      rl_max_prompt_length=p["seq_len"] * 2 // 3,
      # Online RL (configs/grpo.py "demo"): steps of grpo_prompts questions x grpo_generations
      # samples with verified rewards, from the SFT-3 params (grpo_from="sft3") or from CPO+SimPO's
      # ("rl"); 0 steps: no GRPO stage. Chosen on the dev split (README, The demo): 16 steps at
      # lr 5e-5 and temperature 0.7 from SFT-3 gave 63% vs SFT-3's 60% (24 steps at 1e-4: 63%;
      # 10 steps at 2e-5 from CPO+SimPO at temperature 1.0: 60%).
      grpo_steps=p.get("grpo_steps", 0), grpo_lr=p.get("grpo_lr", 5e-5),
      grpo_prompts=p.get("grpo_prompts", 8), grpo_generations=p.get("grpo_generations", 8),
      grpo_temperature=0.7, grpo_loss="dapo", grpo_from="sft3",
      grpo_sampled=p.get("grpo_sampled", 0),  # prompts sampled per step (0: grpo_prompts)
      grpo_length_bucket=32,  # rows trimmed to the step's longest (a multiple of 32 tokens)
      eval_generate_baselines=False,  # random/CPT: log-likelihood only (they never answer)
      eval_items=p["eval_items"], eval_max_new_tokens=p["eval_max_new_tokens"],
      eval_batch_size=50, decontam_n=13,
  ))
  clinic.apply_knobs(c)
  return c


def _train_keys(**extra: dict) -> dict:
  """The override fields the demo knobs set (values filled by clinic.apply_knobs)."""
  keys = {"train": {"num_steps": 0, "log_every": 0}, "optim": {"lr": 0.0},
          "data": {"seq_len": 0, "global_batch_size": 0}, "checkpoint": {"every": 0}}
  for section, fields in extra.items():
    keys.setdefault(section, {}).update(fields)
  return keys
