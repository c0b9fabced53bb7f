"""The Colab notebook runs headlessly, top to bottom, with the "tiny" demo preset (~3-4 min).

It executes in a fresh kernel with the repository root as its working directory, the way a user
runs it from a checkout; the install cell sees citrus_jax importable and installs nothing.
"""
import json
import os
import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "notebooks", "citrus_jax_colab.ipynb")


def _cell(nb, marker: str):
  cells = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
  assert len(cells) == 1, f"expected one code cell containing {marker!r}, found {len(cells)}"
  return cells[0]


def _text(cell) -> str:
  return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@pytest.mark.slow
def test_notebook_runs_end_to_end(tmp_path, monkeypatch):
  workdir = tmp_path / "colab"
  monkeypatch.setenv("CITRUS_NOTEBOOK_WORKDIR", str(workdir))
  monkeypatch.setenv("CITRUS_NOTEBOOK_PRESET", "tiny")
  # The kernel inherits this environment: run on one CPU device like a user's notebook, not on
  # the 8 simulated devices conftest.py sets up for the in-process tests.
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                 os.environ.get("XLA_FLAGS", "")).strip()
  monkeypatch.setenv("XLA_FLAGS", flags)
  monkeypatch.setenv("MPLBACKEND", "agg")

  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": REPO}})
  client.execute()  # raises CellExecutionError (with the traceback) if any cell fails

  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type == "error"]
  assert not errors, errors
  assert "skipping the install" in _text(_cell(nb, "REPO_URL}"))

  # The loss-curve cell drew its figure inline.
  plot = _cell(nb, "report.loss_curves(workdir)")
  assert any("image/png" in o.get("data", {}) for o in plot.outputs), plot.outputs

  summary_path = workdir / "summary.json"
  assert summary_path.exists()
  summary = json.loads(summary_path.read_text())
  assert set(summary["stages"]) == {"random", "cpt", "sft3", "rl"}
  assert all(s["n"] == 16 for s in summary["stages"].values())  # the tiny preset's eval_items

  # The accuracy table and the generated answers came from this run's files.
  table = _text(_cell(nb, 'summary["stages"].items()'))
  assert all(re.search(rf"^{stage}\s", table, re.M) for stage in summary["stages"]), table
  answers = _text(_cell(nb, "rl_items.jsonl"))
  assert answers.count("--- test-") == 3 and "Q: " in answers, answers

  # The HF export loads back with transformers and matches citrus_jax's forward pass.
  export = _text(_cell(nb, "hf.load(hf_dir)"))
  assert "model.safetensors" in export and "config.json" in export, export
  if "skipping the load-back check" not in export:
    diff = float(re.search(r"citrus_jax\)\| = (\S+)", export).group(1))
    assert diff < 1e-3, export
