"""configs/citrus.py: the whole recipe as one resumable pipeline.

The end-to-end test runs `python -m citrus_jax.main --config=configs/citrus.py:tiny` as a user
does (one CPU device, a subprocess) on its generated data, crashes it inside SFT-2, reruns it to
the end, then checks what the run left: every step's done.json and resolved config, the chain
of stages, the resume, and the HF export against our forward pass. The other tests build the
paper presets and check the config errors, in-process and fast.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from configs import citrus, demo  # noqa: E402

STEP_DIRS = ("data", "tokenizer", "init", "cpt", "sft/sft1", "sft/sft2", "sft/sft3", "sft",
             "rejection", "rl", "eval", "export")
PAPER = ("llama3_1_8b", "llama3_1_70b", "qwen2_5_72b", "qwen3_8b", "qwen3_32b")


def _main(*args, cwd=REPO, timeout=900):
  env = dict(os.environ)
  env["XLA_FLAGS"] = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                            env.get("XLA_FLAGS", "")).strip()
  return subprocess.run([sys.executable, "-m", "citrus_jax.main", *args,
                         "--config.progress=False"], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout)


def _json(path):
  with open(path) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """The tiny recipe, killed after SFT-2's second step (a simulated crash, exit 17), then rerun
  with the same command to the end."""
  workdir = tmp_path_factory.mktemp("citrus") / "run"
  crashed = _main("--config=configs/citrus.py:tiny", f"--config.workdir={workdir}",
                  "--config.steps.sft2.set=train.kill_after_step=2")
  assert crashed.returncode == 17, crashed.stdout[-3000:] + crashed.stderr[-3000:]
  assert (workdir / "sft" / "sft1" / "done.json").exists()
  assert not (workdir / "sft" / "sft2" / "done.json").exists()
  resumed = _main("--config=configs/citrus.py:tiny", f"--config.workdir={workdir}")
  assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
  return workdir, crashed.stdout, resumed.stdout


@pytest.mark.slow
def test_every_step_ran_and_saved_its_config(run):
  workdir, _, stdout = run
  assert stdout.strip().splitlines()[-1] == str(workdir)
  for step in STEP_DIRS:
    assert (workdir / step / "done.json").exists(), step
  for step in ("data", "tokenizer", "init", "cpt", "sft/sft1", "sft/sft2", "sft/sft3",
               "rejection", "rl", "eval/init", "eval/rl", "export"):
    assert (workdir / step / "config.json").exists(), step
  assert _json(workdir / "rl" / "config.json")["optim"]["lr"] == 1e-3  # configs/rl.py:tiny
  assert _json(workdir / "cpt" / "config.json")["train"]["num_steps"] == 4  # the override
  summary = _json(workdir / "summary.json")
  assert list(summary["stages"]) == ["init", "rl"]
  assert set(summary["stages"]["rl"]["benchmarks"]) == {"medqa", "mmlu_anatomy"}
  assert summary["stages"]["rl"]["n"] == 12 + 8
  assert summary["stages"]["init"]["accuracy"] is None  # a baseline: log-likelihood only
  assert 0 <= summary["stages"]["init"]["loglik_acc"] <= 1
  assert summary["rl_pairs"]["kept"] >= 4
  report = (workdir / "report.md").read_text()
  assert "# Citrus run report" in report and re.search(r"^\| rl \|", report, re.M)


@pytest.mark.slow
def test_rerun_resumed_inside_the_interrupted_stage(run):
  workdir, crashed, resumed = run
  assert "[pipeline] sft2 ..." in crashed and "[pipeline] rejection" not in crashed
  for step in ("data", "tokenizer", "init", "cpt", "sft1"):
    assert f"[pipeline] {step}: done earlier" in resumed, step
  assert "[pipeline] sft2 ..." in resumed  # the unfinished step runs again ...
  assert f"resumed from step 2 in {workdir / 'sft' / 'sft2'}" in resumed  # ... from its checkpoint
  again = _main("--config=configs/citrus.py:tiny", f"--config.workdir={workdir}", timeout=300)
  assert again.returncode == 0 and " ..." not in again.stdout  # nothing left to run


@pytest.mark.slow
def test_stages_are_chained(run):
  workdir, _, _ = run
  cpt = _json(workdir / "cpt" / "config.json")
  assert os.path.samefile(cpt["init"]["hf_dir"], workdir / "data" / "hf_model")
  for stage, parent in [("sft/sft1", "cpt"), ("sft/sft2", "sft/sft1"), ("sft/sft3", "sft/sft2"),
                        ("rl", "sft/sft3")]:
    cfg = _json(workdir / stage / "config.json")
    assert os.path.samefile(cfg["init"]["checkpoint"], workdir / parent), (stage, cfg["init"])
  rej = _json(workdir / "rejection" / "config.json")
  assert os.path.samefile(rej["model"], workdir / "sft" / "sft3")
  assert _json(workdir / "export" / "done.json")["stage"] == "rl"


@pytest.mark.slow
def test_hf_export_logits_match(run):
  """The exported directory loads in transformers and gives our forward pass's logits."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from citrus_jax.model import transformer
  from citrus_jax.train import checkpoint
  workdir, _, _ = run
  hf_dir = _json(workdir / "summary.json")["hf_export"]
  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
  tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
  ids = tok("A 40-year-old woman presents with wheeze and nocturnal cough.").input_ids
  with torch.no_grad():
    theirs = model(torch.tensor([ids])).logits[0].numpy()
  cfg = checkpoint.read_model_config(str(workdir / "rl"))
  params = checkpoint.load_params(str(workdir / "rl"), cfg)
  ours = np.asarray(transformer.forward(params, np.array([ids], np.int32), cfg)[0][0])
  assert ours.shape == theirs.shape and len(ids) > 5
  np.testing.assert_allclose(theirs, ours, atol=2e-4, rtol=1e-4)


# --- configs and errors (fast) -----------------------------------------------------------------


@pytest.mark.parametrize("preset", PAPER)
def test_paper_presets_build_every_stage(preset):
  """Each step's stage config builds from its preset with the paper's settings."""
  from citrus_jax import pipeline
  from citrus_jax.pipeline import runner
  import importlib
  c = citrus.get_config(preset)
  pipeline.preflight(c)
  built = {s: runner.stage_config(importlib.import_module(f"configs.{pipeline.STAGE_FILES[s]}"),
                                  "x", c, s, "/w", "", {}) for s in ("cpt", "sft1", "rl")}
  sft, rl = built["sft1"], built["rl"]
  assert (sft.optim.lr, sft.optim.schedule, sft.optim.warmup_frac, sft.data.num_epochs,
          sft.data.seq_len, sft.data.global_batch_size) == (5e-6, "cosine", 0.05, 3, 8192, 512)
  assert (rl.rl.loss, rl.rl.beta, rl.rl.gamma, rl.rl.cpo_alpha) == ("cpo_simpo", 10.0, 5.4, 0.05)
  assert (rl.optim.lr, rl.optim.warmup_frac, rl.data.num_epochs, rl.optim.weight_decay,
          rl.optim.grad_clip, rl.rl.max_length, rl.rl.max_prompt_length,
          rl.data.global_batch_size) == (1e-6, 0.1, 1, 0.0, 1.0, 2048, 1800, 512)
  assert all(b.model.preset == c.model.preset and tuple(b.mesh.shape) == tuple(c.mesh.shape)
             for b in built.values())
  assert c.steps.grpo.skip and not c.steps.rejection.skip
  assert (c.steps.rejection.n_samples, c.steps.rejection.temperature) == (10, 0.7)


def test_overrides_and_set_reach_the_stage_config():
  from citrus_jax.pipeline import runner
  from configs import cpt
  c = citrus.get_config("llama3_1_8b")
  c.steps.cpt.overrides.optim.grad_accum = 4
  c.steps.cpt.set = "optim.lr=2e-5; train.num_steps=7;mesh.shape=(1, -1, 2)"
  s = runner.stage_config(cpt, "cpt.py", c, "cpt", "/w", "tok", {"hf_dir": "/h"},
                          data={"train_paths": "/d/*.jsonl"})
  assert (s.optim.grad_accum, s.optim.lr, s.train.num_steps) == (4, 2e-5, 7)
  assert tuple(s.mesh.shape) == (1, -1, 2) and s.data.train_paths == "/d/*.jsonl"
  assert (s.init.hf_dir, s.tokenizer.path, s.workdir) == ("/h", "tok", "/w")


def test_config_errors_name_the_field(tmp_path):
  from citrus_jax import pipeline
  from citrus_jax.pipeline import sources
  from citrus_jax.runtime import ConfigError
  c = citrus.get_config("llama3_1_8b")
  c.steps.sft2.set = "optim.lrr=1e-5"
  with pytest.raises(ConfigError, match=r"config.steps.sft2.set: configs/sft.py:citrus_llama3_1_8b "
                                         r"has no field 'optim.lrr'.*optim.lr"):
    pipeline.preflight(c)
  c = citrus.get_config("llama3_1_8b")
  c.steps.sft1.train_paths = str(tmp_path / "missing.jsonl")
  with pytest.raises(ConfigError) as e:
    sources.inputs(c, {"paths": {}})
  msg = str(e.value)
  for field in ("steps.cpt.train_paths: empty", "steps.sft2.train_paths: empty",
                "steps.rejection.questions: empty", "steps.eval.data_paths: empty",
                f"steps.sft1.train_paths: {tmp_path / 'missing.jsonl'} does not exist"):
    assert f"config.{field}" in msg, (field, msg)
  c.steps.cpt.skip = c.steps.sft2.skip = c.steps.rejection.skip = c.steps.eval.skip = True
  c.steps.sft1.train_paths = str(tmp_path)
  assert "config.steps.sft3.train_paths: empty" in _error(sources.inputs, c, {"paths": {}})
  c.pipeline.stop_after = "sft4"
  assert "stop_after='sft4'" in _error(pipeline.preflight, c)


def _error(fn, *args):
  from citrus_jax.runtime import ConfigError
  with pytest.raises(ConfigError) as e:
    fn(*args)
  return str(e.value)


def test_cli_override_typo_exits_2_before_any_step(tmp_path):
  out = _main("--config=configs/citrus.py:tiny", f"--config.workdir={tmp_path / 'w'}",
              "--config.steps.rl.overrides.train.log_every=2", "--config.steps.rl.set=rl.betaa=3",
              timeout=120)
  assert out.returncode == 2, out.stdout + out.stderr
  assert "config error: config.steps.rl.set: configs/rl.py:tiny has no field 'rl.betaa'" \
      in out.stderr
  assert not (tmp_path / "w" / "data").exists()


def test_demo_is_the_same_pipeline():
  """configs/demo.py is the recipe's config with the clinical world as the data source; its
  knobs land in the steps' overrides."""
  c = demo.get_config("small")
  assert c.stage == "pipeline" and c.pipeline.source == "clinic_world"
  assert set(c.steps) == set(citrus.get_config("tiny").steps)
  assert c.steps.cpt.overrides.train.num_steps == c.demo.cpt_steps == 100
  assert [c.steps[s].overrides.train.num_steps for s in ("sft1", "sft2", "sft3")] == \
      list(c.demo.sft_steps)
  assert c.steps.grpo.skip and c.steps.eval.overrides.eval.limit == c.demo.eval_items
  c.demo.grpo_steps = 16
  from citrus_jax.pipeline import clinic
  clinic.apply_knobs(c)
  assert not c.steps.grpo.skip and c.steps.grpo.overrides.train.num_steps == 16


@pytest.mark.slow
def test_plan_mode_compiles_each_training_step(tmp_path):
  """Plan mode on the local (8 simulated CPU) devices for the tiny recipe: one compiled step
  per distinct shape, recorded in plan.json."""
  from citrus_jax import main
  c = citrus.get_config("tiny")
  c.mode = "plan"
  c.workdir = str(tmp_path / "plan")
  out = main.run(c)
  plan = _json(os.path.join(out, "plan.json"))
  assert set(plan) == {"cpt", "sft1", "sft2", "sft3", "rl"}
  assert plan["sft2"]["same_as"] == "sft1" and "same_as" not in plan["cpt"]
  assert plan["rl"]["batch"] == 8 and plan["rl"]["seq_len"] == 320  # chosen + rejected rows
  assert all(p["n_devices"] == 8 and p["peak_bytes_per_device"] > 0 for p in plan.values())


def test_local_io_step_is_staged_and_uploaded_for_a_remote_workdir(tmp_path, monkeypatch):
  """On a gs:// workdir a step whose runner writes with open() (rejection, eval, export) runs
  in a local staging dir; its files are copied to the workdir and its result's paths point
  there. (A local path stands in for the bucket: is_remote is patched.)"""
  from citrus_jax.pipeline import runner
  monkeypatch.setattr(runner, "is_remote", lambda path: True)
  monkeypatch.setenv("CITRUS_STAGING_DIR", str(tmp_path / "staging"))
  workdir = str(tmp_path / "bucket" / "run")
  seen = []

  def fn(d):
    seen.append(d)
    os.makedirs(os.path.join(d, "hf"))
    with open(os.path.join(d, "hf", "config.json"), "w") as f:
      f.write("{}")
    return {"hf_export": os.path.join(d, "hf"), "n": 3}

  result = runner.run_step(workdir, "export", fn, local_io=True)
  assert seen[0].startswith(str(tmp_path / "staging"))
  assert result["hf_export"] == os.path.join(workdir, "export", "hf") and result["n"] == 3
  assert os.path.exists(os.path.join(workdir, "export", "hf", "config.json"))
  assert _json(os.path.join(workdir, "export", "done.json"))["hf_export"] == result["hf_export"]
  assert runner.run_step(workdir, "export", fn, local_io=True)["n"] == 3 and len(seen) == 1


@pytest.mark.slow
def test_skipped_steps_chain_to_the_last_stage_that_ran(tmp_path):
  """Only SFT-3 trains (from the HF init), then the export; every other step is skipped, the
  report says so, and unskipping nothing reruns nothing."""
  skip = [f"--config.steps.{s}.skip=True" for s in ("cpt", "sft1", "sft2", "rejection", "rl",
                                                      "eval")]
  args = ["--config=configs/citrus.py:tiny", f"--config.workdir={tmp_path / 'w'}", *skip,
          "--config.steps.sft3.set=train.num_steps=1"]
  out = _main(*args)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  w = tmp_path / "w"
  sft3 = _json(w / "sft" / "sft3" / "config.json")
  assert os.path.samefile(sft3["init"]["hf_dir"], w / "data" / "hf_model")
  assert sft3["train"]["num_steps"] == 1
  assert _json(w / "export" / "done.json")["stage"] == "sft3"
  for step in ("cpt", "sft/sft1", "rejection", "rl", "eval"):
    assert not (w / step).exists(), step
  summary = _json(w / "summary.json")
  assert summary["skipped"] == ["cpt", "eval", "rejection", "rl", "sft1", "sft2"]
  assert summary["stages"] == {} and summary["rl_pairs"] is None
  assert "Skipped steps: cpt, eval, rejection, rl, sft1, sft2." in (w / "report.md").read_text()


def test_empty_workdir_is_an_error_not_the_working_directory(tmp_path):
  out = _main("--config=configs/citrus.py:tiny", "--config.workdir=", cwd=str(tmp_path),
              timeout=120)
  assert out.returncode == 2 and "config.workdir: empty" in out.stderr, out.stderr[-2000:]
  assert os.listdir(tmp_path) == []
