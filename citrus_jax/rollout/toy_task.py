"""A self-contained verifiable task for smoke runs (`configs/grpo.py:tiny`) and tests.

Each question names one finding in the vignette and lists it among distractors, so the answer is
in the prompt: a model can learn it from reward alone. Written with a sentencepiece tokenizer
trained on the questions, so the tiny preset runs from a clean checkout with no data.
"""
from __future__ import annotations

import json
import os
import random

from citrus_jax import tokenizer

FINDINGS = ("fever", "cough", "rash", "headache", "wheeze", "chest pain", "jaundice", "edema",
            "syncope", "dysuria", "hematuria", "palpitations")


def make_questions(n: int, seed: int = 0, n_options: int = 4) -> list[dict]:
  rng = random.Random(seed)
  out = []
  for i in range(n):
    names = rng.sample(FINDINGS, n_options)
    gold = rng.randrange(n_options)
    letters = [chr(ord("A") + k) for k in range(n_options)]
    question = f"The patient reports {names[gold]}. Which finding is reported?"
    options = dict(zip(letters, names))
    listed = " ".join(f"{k}. {v}" for k, v in options.items())
    out.append({"id": f"toy{i}", "question": question, "options": options,
                "answer_idx": letters[gold],
                "input": f"{question} {listed} Answer as <answer>letter</answer>."})
  return out


def write_task(out_dir: str, n: int, seed: int = 0, vocab_size: int = 512) -> tuple[str, str]:
  """(questions.jsonl, tokenizer model) under out_dir; reused when already there."""
  os.makedirs(out_dir, exist_ok=True)
  questions = os.path.join(out_dir, "questions.jsonl")
  model = os.path.join(out_dir, "tokenizer.model")
  if not os.path.exists(questions):
    records = make_questions(n, seed)
    with open(questions + ".tmp", "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in records)
    os.replace(questions + ".tmp", questions)
  if not os.path.exists(model):
    corpus = os.path.join(out_dir, "corpus.txt")
    with open(questions) as f, open(corpus, "w") as g:
      for line in f:
        r = json.loads(line)
        g.write(r["input"] + " <think> The answer is </think> <answer> </answer>\n")
    tokenizer.train_sentencepiece([corpus], os.path.join(out_dir, "tokenizer"), vocab_size)
  return questions, model
