"""A pipeline run's report: report.md, a loss-curve figure and summary.json, from the steps'
results (citrus_jax/pipeline/; the demo's and configs/citrus.py's runs alike).

report.md is a list of sections (`SECTIONS`): each takes a `Report` and returns its markdown, or
None when its steps did not run. A new section is one function appended there; summary.json
keys are added in `build_summary`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Any, Callable

import jax
from etils import epath

from citrus_jax import tokenizer
from citrus_jax.data import stats
from citrus_jax.eval import compare
from citrus_jax.train import metrics_log

EVAL_ORDER = ("random", "init", "cpt", "sft1", "sft2", "sft3", "rl", "grpo")
# (panel title, stage directory, metric): losses for the supervised and preference stages, the
# mean verified reward of each step's rollouts for GRPO.
CURVES = (("CPT", "cpt", "loss"), ("SFT-1", "sft/sft1", "loss"), ("SFT-2", "sft/sft2", "loss"),
          ("SFT-3", "sft/sft3", "loss"), ("CPO+SimPO", "rl", "loss"),
          ("GRPO reward", "grpo", "reward/mean"))


@dataclasses.dataclass
class Report:
  workdir: str
  steps: dict[str, Any]  # step name -> its done.json results ({"skipped": True} if skipped)
  summary: dict[str, Any]
  demo: bool  # the clinic world (configs/demo.py): its groups and wording

  def ran(self, name: str) -> bool:
    return name in self.steps and not self.steps[name].get("skipped")


def loss_curves(workdir: str) -> dict[str, tuple[list[int], list[float]]]:
  curves = {}
  for label, sub, key in CURVES:
    rows = metrics_log.read_metrics(os.path.join(workdir, sub, "metrics.jsonl"), "train/")
    steps = sorted(s for s in rows if f"train/{key}" in rows[s])
    if steps:
      curves[label] = (steps, [rows[s][f"train/{key}"] for s in steps])
  return curves


def plot(curves: dict[str, tuple[list[int], list[float]]], path: str) -> str:
  import matplotlib  # heavy (~0.5 s) and needed only to draw; the backend is set before pyplot loads
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
  """McNemar exact test and paired bootstrap of `final` vs `base` on the items both answered
  (the first benchmark with a result; every benchmark's row under "benchmarks")."""
  paths = [os.path.join(eval_dir, f"{name}_items.jsonl") for name in (base, final)]
  if base == final or not all(epath.Path(p).exists() for p in paths):
    return None
  try:
    compared = compare.compare_predictions(*paths)["benchmarks"]
  except ValueError:  # a side scored by log-likelihood only: no generations to pair
    return None
  rows = {k: r for k, r in compared.items() if r["p"] is not None}
  if not rows:
    return None
  first = next(iter(rows.values()))
  return {"base": base, "final": final, **first,
          **({"benchmarks": rows} if len(rows) > 1 else {})}


def _stage_row(r: dict[str, Any]) -> dict[str, Any]:
  return {"accuracy": r.get("acc"), "n": r.get("n"), "valid_acc": r.get("valid_acc"),
          "no_answer": r.get("n_no_answer"), "loglik_acc": r.get("loglik", {}).get("acc"),
          "loglik_acc_norm": r.get("loglik", {}).get("acc_norm"),
          "by_group": r.get("by_group", {}),
          "benchmarks": {k: {"accuracy": b.get("acc"), "n": b.get("n"),
                             "loglik_acc": b.get("loglik", {}).get("acc")}
                         for k, b in r.get("benchmarks", {}).items()}}


def build_summary(workdir: str, steps: dict[str, Any]) -> dict[str, Any]:
  evals = steps.get("eval", {}).get("results", {})
  walls = {k: v.get("wall_s", 0.0) for k, v in steps.items() if isinstance(v, dict)
           and "wall_s" in v}
  rej = steps.get("rejection", {})
  names = list(evals)
  base = "sft3" if "sft3" in evals else names[0] if names else None
  return {
      "stages": {name: _stage_row(evals[name]) for name in names},
      "wall_s": {**walls, "total": sum(walls.values())},
      "hf_export": steps.get("export", {}).get("hf_export"),
      "rl_pairs": None if rej.get("skipped") or not rej else {
          "kept": rej["n_pairs"], "from_samples": rej.get("n_sampled_pairs"),
          "gold_fallback": rej.get("n_fallback_pairs", 0), "stats": rej.get("stats")},
      "decontamination": steps.get("data", {}).get("decontamination"),
      "paired_test": paired_test(os.path.join(workdir, "eval"), base=base, final=names[-1])
      if names else None,
      "skipped": sorted(k for k, v in steps.items() if isinstance(v, dict) and v.get("skipped")),
  }


def eval_table(r: Report) -> str:
  stages = r.summary["stages"]
  groups = sorted({g for s in stages.values() for g in s["by_group"]})
  head = "| " + " | ".join(["checkpoint", "accuracy (generate)", "valid acc", "no answer",
                            "loglik acc", "loglik acc_norm", *groups]) + " |"
  lines = [head, "|" + "---|" * (6 + len(groups))]
  for name, s in stages.items():
    gen = "not generated" if s["accuracy"] is None else f"{_pct(s['accuracy'])} (n={s['n']})"
    cells = [name, gen, _pct(s["valid_acc"]),
             "-" if s["no_answer"] is None else str(s["no_answer"]), _pct(s["loglik_acc"]),
             _pct(s["loglik_acc_norm"])]
    cells += [f"{_pct(s['by_group'][g]['acc'])} (n={s['by_group'][g]['n']})"
              if g in s["by_group"] else "-" for g in groups]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _paired_line(pt: dict[str, Any] | None) -> str:
  if pt is None:
    return "(no per-item records to pair)"
  return (f"{pt['final']} vs {pt['base']} on the same {pt['n']} items: {_pct(pt['acc_b'])} vs "
          f"{_pct(pt['acc_a'])} ({100 * pt['diff']:+.1f} points); right only after "
          f"{pt['final']}: {pt['b_only']}, only before: {pt['a_only']}; McNemar exact p = "
          f"{pt['p']:.3g}; 95% bootstrap interval of the difference "
          f"[{100 * pt['diff_ci95'][0]:+.1f}, {100 * pt['diff_ci95'][1]:+.1f}] points")


def section_eval(r: Report) -> str | None:
  if not r.summary["stages"]:
    return None
  if r.demo:
    intro = ("Held-out test split of the clinical world: 4-option MCQs, never used for any "
             "choice. Chance is 25%.\nGeneration uses the Citrus prompt (greedy); "
             "log-likelihood scores each option's text.")
  else:
    intro = "Benchmarks: " + ", ".join(sorted({b for s in r.summary["stages"].values()
                                               for b in s["benchmarks"]})) + "."
  out = [intro, "", eval_table(r), ""]
  multi = [s for s in r.summary["stages"].values() if len(s["benchmarks"]) > 1]
  if multi:
    benches = sorted({b for s in r.summary["stages"].values() for b in s["benchmarks"]})
    out += ["Per benchmark (accuracy, generate; macro average above):", "",
            "| checkpoint | " + " | ".join(benches) + " |", "|" + "---|" * (1 + len(benches))]
    for name, s in r.summary["stages"].items():
      out.append(f"| {name} | " + " | ".join(
          _pct(s["benchmarks"].get(b, {}).get("accuracy")) for b in benches) + " |")
    out.append("")
  pt = r.summary["paired_test"]
  base = pt["base"] if pt else "SFT-3"
  out.append(f"Paired test (final vs {base}): {_paired_line(pt)}")
  return "\n".join(out)


def section_rl(r: Report) -> str | None:
  lines = ["RL stages:", "", "| stage | starts from | trained on | steps | seconds |",
           "|---|---|---|---|---|"]
  if r.ran("rl"):
    pairs = r.summary["rl_pairs"]
    data = f"{pairs['kept']} rejection-sampled pairs" if pairs else "the given pairs"
    lines.append(f"| CPO+SimPO (rl) | {r.steps['rl'].get('start', 'sft3')} | {data} | {r.steps['rl'].get('steps')} | "
                 f"{r.steps['rl'].get('wall_s', 0):.0f} |")
  if r.ran("grpo"):
    rows = metrics_log.read_metrics(os.path.join(r.workdir, "grpo", "metrics.jsonl"), "train/")
    rw = [rows[s].get("train/reward/mean", 0.0) for s in sorted(rows)]
    k = max(len(rw) // 4, 1)
    trend = (f"; mean reward {sum(rw[:k]) / k:.2f} (first {k} steps) -> {sum(rw[-k:]) / k:.2f} "
             f"(last {k})") if rw else ""
    lines.append(f"| GRPO (grpo) | {r.steps['grpo'].get('init', 'rl')} | group rollouts on the "
                 f"RL questions{trend} | {r.steps['grpo'].get('steps')} | "
                 f"{r.steps['grpo'].get('wall_s', 0):.0f} |")
  if len(lines) == 4:
    return None
  if r.demo:
    lines += ["", "Stages that did not help are shown as measured; groups: `unique_finding` (a "
              "finding unique to the\ndiagnosis), `shared_only` (decided by weighing shared "
              "findings), `cpt_only` (conditions seen only\nin the CPT corpus)."]
  return "\n".join(lines)


def section_curves(r: Report) -> str | None:
  return "## Loss curves\n\n![loss curves](loss_curves.png)" if r.summary.get("figure") else None


def section_pairs(r: Report) -> str | None:
  pairs = r.summary["rl_pairs"]
  if not pairs:
    return None
  return (f"## RL pairs (rejection sampling of the SFT-3 model)\n\nPairs kept: {pairs['kept']} "
          f"({pairs['from_samples']} from the\nmodel's own samples, {pairs['gold_fallback']} "
          "gold-chain fallback pairs where\nno sample was correct). Sampling statistics:\n\n"
          f"```\n{json.dumps(pairs['stats'], indent=2)[:3000]}\n```")


def section_wall(r: Report) -> str:
  rows = "\n".join(f"| {k} | {v:.0f} |" for k, v in r.summary["wall_s"].items())
  skipped = r.summary["skipped"]
  note = f"\n\nSkipped steps: {', '.join(skipped)}." if skipped else ""
  return f"## Wall time (seconds)\n\n| step | seconds |\n|---|---|\n{rows}{note}"


def section_export(r: Report) -> str | None:
  if not r.summary["hf_export"]:
    return None
  return (f"## Hugging Face export\n\n`{r.summary['hf_export']}` (loads with "
          "`transformers.AutoModelForCausalLM.from_pretrained`).")


def _stage_seq_len(workdir: str, sub: str, default: int,
                   key: tuple[str, str] = ("data", "seq_len")) -> int:
  """The length a stage trained at, from the resolved config it saved."""
  try:
    with epath.Path(workdir, sub, "config.json").open() as f:
      return int(json.load(f)[key[0]][key[1]])
  except (OSError, KeyError, ValueError, TypeError):
    return default


def section_data(r: Report) -> str | None:
  """Token lengths of each stage's training files (the paper's token-length figure)."""
  if not (r.ran("data") and r.ran("tokenizer")) or "://" in r.workdir:
    return None  # data/stats.py writes its PNGs with plain files
  paths, tok_path = r.steps["data"].get("paths", {}), r.steps["tokenizer"].get("model")
  stages = {k: paths[f] for k, f in (("cpt", "cpt"), ("sft1", "sft1"), ("sft2", "sft2"),
                                     ("sft3", "sft3_chat")) if paths.get(f)}
  if r.ran("rejection") and r.steps["rejection"].get("pairs"):
    stages["rl"] = r.steps["rejection"]["pairs"]
  if not stages or not tok_path:
    return None
  seq = {k: _stage_seq_len(r.workdir, "cpt" if k == "cpt" else f"sft/{k}", 2048)
         for k in stages if k != "rl"}
  if "rl" in stages:
    seq["rl"] = _stage_seq_len(r.workdir, "rl", 2048, key=("rl", "max_length"))
  return stats.report_section(stages, tokenizer.load_tokenizer(tok_path), seq, r.workdir)


SECTIONS: list[Callable[[Report], str | None]] = [
    section_eval, section_rl, section_curves, section_pairs, section_data, section_wall,
    section_export]


def write(workdir: str, steps: dict[str, Any], config: Any = None) -> dict[str, Any]:
  """Writes report.md, loss_curves.png and summary.json; prints the summary table."""
  demo = config is None or config.pipeline.get("source") == "clinic_world"
  summary = build_summary(workdir, steps)
  curves = loss_curves(workdir)
  main = jax.process_index() == 0
  if curves and main:  # drawn locally, then copied (the workdir may be gs://)
    with tempfile.TemporaryDirectory() as tmp:
      with open(plot(curves, os.path.join(tmp, "loss_curves.png")), "rb") as f:
        (epath.Path(workdir) / "loss_curves.png").write_bytes(f.read())
    summary["figure"] = os.path.join(workdir, "loss_curves.png")
  r = Report(workdir, steps, summary, demo)
  title = "# Citrus demo report" if demo else "# Citrus run report"
  md = "\n\n".join([title, *[s for s in (f(r) for f in SECTIONS) if s]]) + "\n"
  if main:
    (epath.Path(workdir) / "report.md").write_text(md)
    (epath.Path(workdir) / "summary.json").write_text(json.dumps(summary, indent=2))
  if summary["stages"]:
    print("\n" + eval_table(r) + "\n", flush=True)
  print(f"paired test: {_paired_line(summary['paired_test'])}", flush=True)
  pairs = summary["rl_pairs"]
  print(f"RL pairs kept: {pairs['kept'] if pairs else '-'}; total wall time "
        f"{summary['wall_s']['total']:.0f}s; HF export: {summary['hf_export']}", flush=True)
  print(f"report: {os.path.join(workdir, 'report.md')}", flush=True)
  return summary
