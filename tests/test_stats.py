"""eval/stats.py (bootstrap intervals, exact McNemar) and eval/compare.py (paired comparison)."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from citrus_jax.eval import compare, harness, stats
from configs import eval as eval_config
from tests.test_harness import FIX, MEDQA, ROOT

MEDQA_GOLD = ["C", "B", "D", "B", "A", "A", "D", "A"]  # medqa_mini.jsonl, ids 00000..00007


def _pairs(both, a_only, b_only, neither):
  a = [1] * both + [1] * a_only + [0] * b_only + [0] * neither
  b = [1] * both + [0] * a_only + [1] * b_only + [0] * neither
  return a, b


@pytest.mark.parametrize("a_only,b_only,p", [
    (0, 5, 0.0625),            # 2 / 2^5
    (1, 9, 22 / 1024),         # 2 (1 + 10) / 2^10 = 0.021484375
    (9, 1, 22 / 1024),         # symmetric
    (3, 3, 1.0),               # capped at 1
    (0, 0, 1.0),               # no discordant pairs
    (2, 4, 2 * (1 + 6 + 15) / 64),
])
def test_mcnemar_exact_known_values(a_only, b_only, p):
  a, b = _pairs(both=7, a_only=a_only, b_only=b_only, neither=4)
  r = stats.mcnemar_exact(a, b)
  assert (r["a_only"], r["b_only"]) == (a_only, b_only)
  assert r["p"] == pytest.approx(p, rel=1e-12)


def test_mcnemar_large_counts_match_normal_approximation():
  r = stats.mcnemar_exact(*_pairs(0, 4000, 4300, 0))  # big integers, no overflow
  z = (4300 - 4000) / math.sqrt(8300)
  assert r["p"] == pytest.approx(math.erfc(z / math.sqrt(2)), rel=0.05) and 0 < r["p"] < 0.01


def test_bootstrap_interval_contains_mean_and_shrinks_with_n():
  widths = []
  for n in (20, 200, 2000):
    x = np.arange(n) % 10 < 6  # accuracy 0.6
    lo, hi = stats.bootstrap_interval(x)
    assert 0 <= lo <= 0.6 <= hi <= 1
    widths.append(hi - lo)
  assert widths[0] > widths[1] > widths[2]
  # ~ 2 * 1.96 * sqrt(p (1 - p) / n) at n = 2000
  assert widths[2] == pytest.approx(2 * 1.96 * math.sqrt(0.24 / 2000), rel=0.15)
  assert stats.bootstrap_interval([1] * 10) == (1.0, 1.0)
  assert stats.bootstrap_interval([0, 0, 0]) == (0.0, 0.0)


def test_bootstrap_matches_index_resampling():
  # Binomial counts are the distribution of an index resample's mean for 0/1 data.
  rng = np.random.default_rng(1)
  x = rng.random(150) < 0.3
  idx = rng.integers(0, x.size, size=(20000, x.size))
  ref = np.quantile(x[idx].mean(axis=1), [0.025, 0.975])
  got = stats.bootstrap_interval(x, n_boot=20000, seed=2)
  assert np.allclose(got, ref, atol=0.015)


def test_seeded_determinism():
  x = (np.arange(57) % 3 == 0).astype(int)
  assert stats.bootstrap_interval(x, seed=3) == stats.bootstrap_interval(x, seed=3)
  # (a discrete statistic: two seeds may give the same interval, but not the same resamples)
  assert not np.array_equal(stats.bootstrap_means(x, seed=3), stats.bootstrap_means(x, seed=4))
  a, b = _pairs(20, 5, 9, 6)
  assert stats.paired_bootstrap_diff(a, b, 500, 7) == stats.paired_bootstrap_diff(a, b, 500, 7)
  groups = [x, x[:20]]
  assert stats.macro_bootstrap_interval(groups) == stats.macro_bootstrap_interval(groups)


def test_paired_bootstrap_diff():
  a, b = _pairs(both=30, a_only=2, b_only=12, neither=16)
  diff, lo, hi = stats.paired_bootstrap_diff(a, b, n_boot=2000, seed=0)
  assert diff == pytest.approx(10 / 60) and lo <= diff <= hi and lo > 0
  # Pairing matters: concordant items carry no variance of the difference.
  assert stats.paired_bootstrap_diff(a, a, 100, 0) == (0.0, 0.0, 0.0)
  _, lo2, hi2 = stats.paired_bootstrap_diff(*_pairs(300, 20, 120, 160), 2000, 0)
  assert hi2 - lo2 < hi - lo


def test_macro_interval_contains_macro_mean():
  g1, g2 = np.arange(40) % 2 == 0, np.arange(100) % 5 == 0  # 0.5 and 0.2
  lo, hi = stats.macro_bootstrap_interval([g1, g2])
  assert lo <= 0.35 <= hi


def test_bad_inputs():
  with pytest.raises(ValueError, match="0/1"):
    stats.bootstrap_interval([0, 0.5, 1])
  with pytest.raises(ValueError, match="empty"):
    stats.bootstrap_interval([])
  with pytest.raises(ValueError, match="length"):
    stats.mcnemar_exact([1, 0], [1])
  with pytest.raises(ValueError, match="level"):
    stats.bootstrap_interval([1, 0], level=1.5)


# ------------------------------------------------------------------------------------------------
# compare: two harness runs scored from prediction files (offline, no model).


def _scored_run(tmp_path, name, outputs):
  preds = tmp_path / f"{name}.preds.jsonl"
  preds.write_text("".join(json.dumps({"id": f"{i:05d}", "output": o}) + "\n"
                           for i, o in enumerate(outputs)))
  c = eval_config.get_config("tiny")
  c.workdir, c.progress = str(tmp_path / name), False
  c.eval.benchmarks, c.eval.data_paths, c.eval.predictions = "medqa", MEDQA, str(preds)
  return harness.run(c, c.workdir)


def test_compare_two_eval_dirs(tmp_path):
  # A: the fixture predictions (right on 00000, 00001, 00006); B: gold everywhere but 00000.
  a_dir = _scored_run(tmp_path, "a", [json.loads(l)["output"] for l in
                                      open(FIX / "preds_medqa.jsonl")])
  b_dir = _scored_run(tmp_path, "b", ["B"] + MEDQA_GOLD[1:])
  r = compare.compare_predictions(a_dir, b_dir)
  m = r["benchmarks"]["medqa"]
  assert (m["n"], m["n_a_unmatched"], m["n_b_unmatched"]) == (8, 0, 0)
  assert (m["acc_a"], m["acc_b"], m["diff"]) == (3 / 8, 7 / 8, 0.5)
  assert (m["b_only"], m["a_only"]) == (5, 1)            # B only: 2,3,4,5,7; A only: 0
  assert m["p"] == pytest.approx(2 * (1 + 6) / 64)       # exact binomial, n = 6 discordant
  lo, hi = m["diff_ci95"]
  assert lo <= 0.5 <= hi
  assert compare.compare_predictions(a_dir, b_dir) == r  # seeded
  # A per-item file against a directory; items on one side only are counted, not paired.
  part = tmp_path / "part.jsonl"
  part.write_text("".join(l for l in open(os.path.join(b_dir, "medqa.jsonl")).readlines()[2:]))
  m2 = compare.compare_predictions(a_dir, str(part))["benchmarks"]["medqa"]
  assert (m2["n"], m2["n_a_unmatched"], m2["n_b_unmatched"]) == (6, 2, 0)
  assert (m2["b_only"], m2["a_only"]) == (5, 0)
  # The CLI prints the table.
  out = subprocess.run([sys.executable, "-m", "citrus_jax.eval.compare", a_dir, b_dir],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert "medqa" in out.stdout and "0.2188" in out.stdout and "+50.00" in out.stdout


def test_compare_demo_stage_files(tmp_path):
  # The demo pipeline's <stage>_items.jsonl: one benchmark per file, labelled per stage.
  def write(name, correct):
    p = tmp_path / f"{name}_items.jsonl"
    p.write_text("".join(json.dumps({"id": f"q{i}", "benchmark": f"test/{name}", "correct": c,
                                     "loglik": {"correct": not c, "correct_norm": c}}) + "\n"
                         for i, c in enumerate(correct)))
    return str(p)
  a = write("cpt", [False] * 10)
  b = write("rl", [True] * 9 + [False])
  r = compare.compare_predictions(a, b)
  (name, m), = r["benchmarks"].items()
  assert name == "test/cpt vs test/rl" and (m["b_only"], m["a_only"]) == (9, 0)
  assert m["p"] == pytest.approx(2 / 2**9)
  ll = compare.compare_predictions(a, b, metric="loglik")["benchmarks"][name]
  assert (ll["b_only"], ll["a_only"]) == (0, 9)
  with pytest.raises(ValueError, match="metric"):
    compare.compare_predictions(a, b, metric="acc")
