"""Small stand-ins for a user's files (configs/citrus.py:tiny), written in the layouts real runs
read: a CPT corpus, three SFT sets (chat `messages`, Citrus `input`/`target`), an MCQ bank in
MedQA layout, two benchmark files (MedQA JSONL, MMLU CSV) and a tiny random Llama-shaped model
saved as a Hugging Face directory with its own tokenizer.

Generated, not shipped, so the recipe's tiny preset runs from any directory after a
non-editable install (the tests' fixtures are not installed).
"""
from __future__ import annotations

import csv
import json
import os
import random
from typing import Any

import jax

from citrus_jax import hf, tokenizer
from citrus_jax.eval import prompts
from citrus_jax.model import config as model_config
from citrus_jax.model import transformer

FINDINGS = {
    "Acute myocardial infarction": ("crushing chest pain", "ST elevation", "raised troponin"),
    "Pulmonary embolism": ("sudden dyspnoea", "pleuritic pain", "raised D-dimer"),
    "Community-acquired pneumonia": ("productive cough", "fever", "focal crackles"),
    "Acute appendicitis": ("right lower quadrant pain", "rebound tenderness", "anorexia"),
    "Acute pancreatitis": ("epigastric pain radiating to the back", "raised lipase", "vomiting"),
    "Asthma": ("wheeze", "nocturnal cough", "reversible airflow obstruction"),
    "Psoriasis": ("silvery scaly plaques", "nail pitting", "extensor surface lesions"),
    "Iron deficiency anaemia": ("fatigue", "microcytic red cells", "low ferritin"),
}
LETTERS = "ABCD"


def _case(rng: random.Random, diagnosis: str) -> str:
  age, sex = rng.randint(18, 85), rng.choice(("man", "woman"))
  findings = list(FINDINGS[diagnosis])
  rng.shuffle(findings)
  return f"A {age}-year-old {sex} presents with {', '.join(findings[:-1])} and {findings[-1]}."


def _chain(diagnosis: str, case: str) -> str:
  f = FINDINGS[diagnosis]
  return (f"<think>\nThe patient: {case} Candidates include {diagnosis} and its look-alikes. "
          f"{f[0].capitalize()} with {f[1]} and {f[2]} fit {diagnosis} best; the others lack "
          f"{f[2]}.\n</think>\n<answer>\n{diagnosis}\n</answer>")


def _mcq(rng: random.Random, i: int, prefix: str) -> dict[str, Any]:
  names = sorted(FINDINGS)
  diagnosis = rng.choice(names)
  distractors = rng.sample([n for n in names if n != diagnosis], 3)
  options = [diagnosis, *distractors]
  rng.shuffle(options)
  case = _case(rng, diagnosis)
  letter = LETTERS[options.index(diagnosis)]
  return {"id": f"{prefix}{i}", "question": f"{case} What is the most likely diagnosis?",
          "options": dict(zip(LETTERS, options)), "answer_idx": letter, "answer": diagnosis,
          "target": _chain(diagnosis, case)}


def _write_jsonl(path: str, rows: list[dict[str, Any]]) -> str:
  with open(path, "w", encoding="utf-8") as f:
    for r in rows:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")
  return path


def write_files(out_dir: str, seed: int = 0, n: int = 48) -> dict[str, str]:
  """The data files; returns their paths by role (cpt, sft1..3, questions, benchmarks dir)."""
  rng = random.Random(seed)
  os.makedirs(os.path.join(out_dir, "benchmarks"), exist_ok=True)
  names = sorted(FINDINGS)
  corpus = []
  for i in range(4 * n):
    d = names[i % len(names)]
    f = FINDINGS[d]
    corpus.append({"text": f"{d} typically shows {f[0]}, {f[1]} and {f[2]}. "
                           f"{_case(rng, d)} Such a picture suggests {d}."})
  sft1 = [{"messages": [{"role": "user", "content": f"List the key findings of {d}."},
                        {"role": "assistant", "content": ", ".join(FINDINGS[d]) + "."}]}
          for d in names for _ in range(n // len(names))]
  sft2 = [{"input": f"Explain step by step how to tell {a} from {b}.",
           "target": f"First, {a} shows {FINDINGS[a][0]}. Second, {b} shows {FINDINGS[b][0]}. "
                     f"Finally, {FINDINGS[a][2]} points to {a}."}
          for a in names for b in names if a != b][:n]
  sft3 = []
  for i in range(n):  # the Citrus_S3 layout: the Citrus user prompt as input, a pathway target
    q = _mcq(rng, i, "s3-")
    sft3.append({"id": q["id"], "input": prompts.citrus_user_prompt(q["question"]),
                 "target": q["target"]})
  bank = [_mcq(rng, i, "bank-") for i in range(n // 2)]
  test = [{k: v for k, v in _mcq(rng, i, "test-").items() if k != "target"} for i in range(12)]
  paths = {"cpt": _write_jsonl(os.path.join(out_dir, "corpus.jsonl"), corpus),
           "sft1": _write_jsonl(os.path.join(out_dir, "sft1_general.jsonl"), sft1),
           "sft2": _write_jsonl(os.path.join(out_dir, "sft2_complex.jsonl"), sft2),
           "sft3": _write_jsonl(os.path.join(out_dir, "sft3_citrus_s3.jsonl"), sft3),
           "questions": _write_jsonl(os.path.join(out_dir, "mcq_bank.jsonl"), bank)}
  _write_jsonl(os.path.join(out_dir, "benchmarks", "medqa_test.jsonl"), test)
  with open(os.path.join(out_dir, "benchmarks", "anatomy_test.csv"), "w", newline="") as f:
    w = csv.writer(f)  # MMLU's header-less rows: question, 4 options, answer letter
    for i in range(8):
      q = _mcq(rng, i, "mmlu-")
      w.writerow([q["question"], *q["options"].values(), q["answer_idx"]])
  paths["eval_dir"] = os.path.join(out_dir, "benchmarks")
  return paths


def write_model(out_dir: str, text_files: list[str], seed: int = 0, vocab: int = 1024,
                max_seq_len: int = 1024) -> dict[str, str]:
  """A BPE tokenizer on the texts and a random Llama-shaped model (the "tiny" preset's shape)
  with it, saved as a Hugging Face directory: the checkpoint the recipe starts from."""
  text = os.path.join(out_dir, "tokenizer_text.txt")
  with open(text, "w", encoding="utf-8") as out:
    for _ in range(32):  # the prompts' fixed wording becomes a few long pieces
      out.write(prompts.SYSTEM_PROMPT + "\n" + prompts.citrus_user_prompt("Q") + "\n")
    for path in text_files:
      with open(path, encoding="utf-8") as f:
        out.write(f.read())
  sp = tokenizer.train_sentencepiece([text], os.path.join(out_dir, "sp"), vocab,
                                     split_by_whitespace=False, max_piece_length=32)
  tok = tokenizer.load_tokenizer(sp)
  cfg = model_config.get_preset("tiny").replace(vocab_size=tok.vocab_size,
                                                max_seq_len=max_seq_len)
  params = transformer.init_params(cfg, jax.random.key(seed))
  hf_dir = os.path.join(out_dir, "hf_model")
  hf.save(hf_dir, params, cfg, tokenizer=tok, provenance={"source": "random init (tiny)"},
          overwrite=True)
  return {"hf_dir": hf_dir, "sp_model": sp}
