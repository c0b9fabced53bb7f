"""The demo's report: report.md, a loss-curve figure and summary.json, from the steps' results."""
from __future__ import annotations

import json
import os
from typing import Any

from citrus_jax.train import metrics_log

EVAL_ORDER = ("random", "cpt", "sft3", "rl", "grpo")
# (panel title, stage directory, metric): losses for the supervised and preference stages, the
# mean verified reward of each step's rollouts for GRPO.
CURVES = (("CPT", "cpt", "loss"), ("SFT-1", "sft/sft1", "loss"), ("SFT-2", "sft/sft2", "loss"),
          ("SFT-3", "sft/sft3", "loss"), ("CPO+SimPO", "rl", "loss"),
          ("GRPO reward", "grpo", "reward/mean"))


def loss_curves(workdir: str) -> dict[str, tuple[list[int], list[float]]]:
  curves = {}
  for label, sub, key in CURVES:
    rows = metrics_log.read_metrics(os.path.join(workdir, sub, "metrics.jsonl"), "train/")
    steps = sorted(s for s in rows if f"train/{key}" in rows[s])
    if steps:
      curves[label] = (steps, [rows[s][f"train/{key}"] for s in steps])
  return curves


def plot(curves: dict[str, tuple[list[int], list[float]]], path: str) -> str:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, max(len(curves), 1), figsize=(3.2 * max(len(curves), 1), 2.8))
  axes = [axes] if len(curves) <= 1 else list(axes)
  for ax, (label, (steps, loss)) in zip(axes, curves.items()):
    ax.plot(steps, loss, lw=1.2)
    ax.set_title(label)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("train loss (GRPO: mean reward)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _pct(x: Any) -> str:
  return "-" if x is None else f"{100 * x:.1f}%"


def paired_test(eval_dir: str, base: str = "sft3", final: str = "rl") -> dict[str, Any] | None:
  """McNemar exact test and paired bootstrap of `final` vs `base` on the items both answered."""
  from citrus_jax.eval import compare
  paths = [os.path.join(eval_dir, f"{name}_items.jsonl") for name in (base, final)]
  if not all(os.path.exists(p) for p in paths):
    return None
  (row,) = compare.compare_predictions(*paths)["benchmarks"].values()
  return None if row["p"] is None else {"base": base, "final": final, **row}


def _rl_rows(workdir: str, steps: dict[str, Any]) -> str:
  """One row per RL stage: what it trained on and how long."""
  lines = ["| stage | starts from | trained on | steps | seconds |", "|---|---|---|---|---|"]
  if "rl" in steps:
    lines.append(f"| CPO+SimPO (rl) | sft3 | {steps['rejection']['n_pairs']} rejection-sampled pairs | "
                 f"{steps['rl'].get('steps')} | {steps['rl'].get('wall_s', 0):.0f} |")
  if "grpo" in steps:
    rows = metrics_log.read_metrics(os.path.join(workdir, "grpo", "metrics.jsonl"), "train/")
    r = [rows[s].get("train/reward/mean", 0.0) for s in sorted(rows)]
    k = max(len(r) // 4, 1)
    trend = (f"; mean reward {sum(r[:k]) / k:.2f} (first {k} steps) -> {sum(r[-k:]) / k:.2f} "
             f"(last {k})") if r else ""
    lines.append(f"| GRPO (grpo) | {steps['grpo'].get('init', 'rl')} | group rollouts on the RL "
                 f"questions{trend} | "
                 f"{steps['grpo'].get('steps')} | {steps['grpo'].get('wall_s', 0):.0f} |")
  return "\n".join(lines)


def write(workdir: str, steps: dict[str, Any]) -> dict[str, Any]:
  """Writes report.md, loss_curves.png and summary.json; prints the summary table."""
  evals = steps["eval"]["results"]
  walls = {k: v.get("wall_s", 0.0) for k, v in steps.items()}
  groups = sorted({g for r in evals.values() for g in r.get("by_group", {})})
  summary = {
      "stages": {name: {"accuracy": evals[name].get("acc"), "n": evals[name]["n"],
                        "valid_acc": evals[name].get("valid_acc"),
                        "no_answer": evals[name].get("n_no_answer"),
                        "loglik_acc": evals[name].get("loglik", {}).get("acc"),
                        "loglik_acc_norm": evals[name].get("loglik", {}).get("acc_norm"),
                        "by_group": evals[name].get("by_group", {})}
                 for name in EVAL_ORDER if name in evals},
      "wall_s": {**walls, "total": sum(walls.values())},
      "hf_export": steps["export"]["hf_export"],
      "rl_pairs": {"kept": steps["rejection"]["n_pairs"],
                   "from_samples": steps["rejection"].get("n_sampled_pairs"),
                   "gold_fallback": steps["rejection"].get("n_fallback_pairs", 0),
                   "stats": steps["rejection"]["stats"]},
      "decontamination": steps["data"].get("decontamination"),
      "paired_test": paired_test(os.path.join(workdir, "eval"),
                                 final=[n for n in EVAL_ORDER if n in evals][-1]),
  }
  figure = plot(loss_curves(workdir), os.path.join(workdir, "loss_curves.png"))
  head = ("| checkpoint | accuracy (generate) | valid acc | no answer | loglik acc | "
          "loglik acc_norm | " + " | ".join(groups) + " |")
  lines = [head, "|" + "---|" * (6 + len(groups))]
  for name, s in summary["stages"].items():
    gen = "not generated" if s["accuracy"] is None else f"{_pct(s['accuracy'])} (n={s['n']})"
    cells = [name, gen, _pct(s["valid_acc"]),
             "-" if s["no_answer"] is None else str(s["no_answer"]), _pct(s["loglik_acc"]), _pct(s["loglik_acc_norm"])]
    cells += [f"{_pct(s['by_group'][g]['acc'])} (n={s['by_group'][g]['n']})"
              if g in s["by_group"] else "-" for g in groups]
    lines.append("| " + " | ".join(cells) + " |")
  table = "\n".join(lines)
  pt = summary["paired_test"]
  paired = "(no per-item records to pair)" if pt is None else (
      f"{pt['final']} vs {pt['base']} on the same {pt['n']} items: {_pct(pt['acc_b'])} vs "
      f"{_pct(pt['acc_a'])} ({100 * pt['diff']:+.1f} points); right "
      f"only after {pt['final']}: {pt['b_only']}, only before: {pt['a_only']}; McNemar exact "
      f"p = {pt['p']:.3g}; 95% bootstrap interval of the difference "
      f"[{100 * pt['diff_ci95'][0]:+.1f}, {100 * pt['diff_ci95'][1]:+.1f}] points")
  rs = steps["rejection"]["stats"]
  rl_rows = _rl_rows(workdir, steps)
  wall_rows = "\n".join(f"| {k} | {v:.0f} |" for k, v in summary["wall_s"].items())
  md = f"""# Citrus demo report

Held-out test split of the clinical world: 4-option MCQs, never used for any choice. Chance is 25%.
Generation uses the Citrus prompt (greedy); log-likelihood scores each option's text.

{table}

Paired test (final vs SFT-3): {paired}

RL stages:

{rl_rows}

Stages that did not help are shown as measured; groups: `unique_finding` (a finding unique to the
diagnosis), `shared_only` (decided by weighing shared findings), `cpt_only` (conditions seen only
in the CPT corpus).

## Loss curves

![loss curves](loss_curves.png)

## RL pairs (rejection sampling of the SFT-3 model)

Pairs kept: {steps['rejection']['n_pairs']} ({steps['rejection'].get('n_sampled_pairs')} from the
model's own samples, {steps['rejection'].get('n_fallback_pairs', 0)} gold-chain fallback pairs where
no sample was correct). Sampling statistics:

```
{json.dumps(rs, indent=2)[:3000]}
```

## Wall time (seconds)

| step | seconds |
|---|---|
{wall_rows}

## Hugging Face export

`{summary['hf_export']}` (loads with `transformers.AutoModelForCausalLM.from_pretrained`).
"""
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(md)
  summary["figure"] = figure
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  print("\n" + table + "\n", flush=True)
  print(f"paired test: {paired}", flush=True)
  print(f"RL pairs kept: {steps['rejection']['n_pairs']}; total wall time "
        f"{summary['wall_s']['total']:.0f}s; HF export: {summary['hf_export']}", flush=True)
  print(f"report: {os.path.join(workdir, 'report.md')}", flush=True)
  return summary
