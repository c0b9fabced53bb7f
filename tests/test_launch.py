"""Launchers: the gcloud commands of a TPU pod run (dry run), the worker-side job script run for
real on this machine, the preemption -> re-create -> resume loop, and the SLURM script with fake
srun/scontrol."""
import os
import pathlib
import shlex
import subprocess
import sys
import time

import pytest

from launch import tpu_pod

ROOT = pathlib.Path(__file__).resolve().parent.parent
JOB = ["--config=configs/cpt.py:llama3_1_8b", "--config.data.train_paths=gs://b/corpus/*.jsonl"]


def test_hosts_per_slice():
  # v4/v5p count TensorCores (2 per chip), v5e/v6e count chips; 4 chips per multi-host VM.
  cases = {"v5p-8": 1, "v5p-64": 8, "v5p-128": 16, "v5p-512": 64, "v4-32": 4, "v6e-8": 1,
           "v6e-64": 16, "v6e-256": 64, "v5litepod-16": 4}
  assert {a: tpu_pod.num_hosts(a) for a in cases} == cases
  with pytest.raises(ValueError, match="expected e.g. v5p-128"):
    tpu_pod.num_hosts("v5p128")


def _dry_run(*args):
  out = subprocess.run([sys.executable, "-m", "launch.tpu_pod", "--dry-run", *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  cmds, buf = [], None  # a multi-line --command spans several printed lines
  for line in out.stdout.splitlines():
    if buf is None:
      if not line.startswith("[dry-run] "):
        continue
      buf = line[len("[dry-run] "):]
    else:
      buf += "\n" + line
    try:
      cmds.append(shlex.split(buf))
      buf = None
    except ValueError:  # an open quote: the command goes on on the next line
      pass
  assert buf is None
  return cmds, out.stdout


def _flag(cmd, name):
  return next(a.split("=", 1)[1] for a in cmd if a.startswith(f"--{name}="))


def test_dry_run_prints_the_whole_spot_pod_lifecycle():
  cmds, out = _dry_run("--name=citrus", "--zone=us-east5-a", "--accelerator=v5p-128", "--spot",
                       "--queued", "--project=proj", "--workdir=gs://b/runs/cpt_8b", "launch",
                       "--", *JOB)
  create = next(c for c in cmds if c[3:5] == ["queued-resources", "create"])
  assert create[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "citrus"]
  assert {"--node-id=citrus", "--accelerator-type=v5p-128", "--runtime-version=v2-alpha-tpuv5",
          "--spot", "--zone=us-east5-a", "--project=proj"} <= set(create)
  ssh = [c for c in cmds if c[3:5] == ["tpu-vm", "ssh"]]
  install, start, follow, read_rc = ssh
  assert _flag(install, "worker") == "all" and "jax[tpu]==" in _flag(install, "command")
  scp = next(c for c in cmds if c[3:5] == ["tpu-vm", "scp"])
  assert "--worker=all" in scp and "citrus:~/citrus_jax.tar.gz" in scp
  # The same entry point on every worker, with the workdir and the process count (16 hosts).
  assert _flag(start, "worker") == "all"
  script = _flag(start, "command")
  main_line = next(l for l in script.splitlines() if "citrus_jax.main" in l)
  argv = shlex.split(main_line)
  assert argv[1:] == ["-m", "citrus_jax.main", *JOB, "--config.workdir=gs://b/runs/cpt_8b",
                      "--config.distributed.num_processes=16"]
  assert _flag(follow, "worker") == "0" and "tail" in _flag(follow, "command")
  assert _flag(read_rc, "worker") == "0"
  assert cmds[-1][3:6] == ["queued-resources", "delete", "citrus"] and "--force" in cmds[-1]
  assert "[launch] job finished" in out
  # Every worker-side command is valid bash.
  for c in ssh:
    check = subprocess.run(["bash", "-n", "-c", _flag(c, "command")], capture_output=True)
    assert check.returncode == 0, (_flag(c, "command"), check.stderr)


def test_dry_run_plain_tpu_vm_and_single_host():
  cmds, _ = _dry_run("--name=t", "--zone=z", "--accelerator=v6e-8", "--workdir=gs://b/w",
                     "launch", "--", *JOB)
  create = next(c for c in cmds if c[3:5] == ["tpu-vm", "create"])
  assert "--version=v2-alpha-tpuv6e" in create and "--spot" not in create
  start = next(c for c in cmds if "citrus_jax.main" in " ".join(c))
  assert "num_processes" not in _flag(start, "command")  # one host: no jax.distributed
  assert cmds[-1][3:6] == ["tpu-vm", "delete", "t"]


def test_job_script_runs_on_a_worker(tmp_path):
  """The worker-side commands, run here with a fake venv python: background job, log, exit code,
  and `follow` returns once the job ends."""
  home = tmp_path / "home"
  (home / "citrus_jax").mkdir(parents=True)
  (home / "citrus_venv" / "bin").mkdir(parents=True)
  fake = home / "citrus_venv" / "bin" / "python"
  fake.write_text("#!/bin/bash\necho \"cwd=$PWD args=$*\"\nsleep 1\nexit 3\n")
  fake.chmod(0o755)
  env = {**os.environ, "HOME": str(home)}
  start = tpu_pod.train_command(JOB, "gs://b/w", hosts=2)
  assert subprocess.run(["bash", "-c", start], env=env, timeout=30).returncode == 0
  t0 = time.monotonic()
  follow = subprocess.run(["bash", "-c", tpu_pod.FOLLOW], env=env, capture_output=True, text=True,
                          timeout=30)
  assert time.monotonic() - t0 < 20 and follow.returncode == 0
  assert f"cwd={home / 'citrus_jax'}" in follow.stdout
  assert "--config.data.train_paths=gs://b/corpus/*.jsonl" in follow.stdout  # glob not expanded
  assert "--config.distributed.num_processes=2" in follow.stdout
  rc = subprocess.run(["bash", "-c", tpu_pod.READ_RC], env=env, capture_output=True, text=True)
  assert rc.stdout.strip() == "3"


class FakeGcloud:
  """Plays a spot slice that is preempted during the first run (ssh drops, state changes)."""

  def __init__(self, first_run_rc=None, state_after_first="SUSPENDED"):
    self.calls, self.runs, self.state = [], 0, None  # None: no such TPU
    self.first_run_rc, self.state_after_first = first_run_rc, state_after_first

  def __call__(self, cmd, capture=False):
    self.calls.append(cmd)
    if "describe" in cmd:
      return (1, "") if self.state is None else (0, self.state)
    if "create" in cmd:
      self.state = "ACTIVE"
    if "delete" in cmd:
      self.state = None
    if "citrus_jax.main" in " ".join(cmd):
      self.runs += 1
      if self.runs == 1:
        self.state = self.state_after_first
    if "--command=cat ~/citrus_run.rc" in cmd:
      if self.runs == 1:
        return (255, "") if self.first_run_rc is None else (0, str(self.first_run_rc))
      return 0, "0"
    return 0, ""


def _launcher(fake):
  pod = tpu_pod.Pod("citrus", "us-east5-a", "v5p-64", spot=True, queued=True)
  return tpu_pod.Launcher(pod, fake, "gs://b/w", "0.10.2", sleep=lambda s: None)


def test_preempted_slice_is_recreated_and_the_job_resumes():
  fake = FakeGcloud()
  assert _launcher(fake).launch(JOB) == 0
  verbs = [c[3] + " " + c[4] for c in fake.calls if c[0] == "gcloud"]
  assert verbs.count("queued-resources create") == 2
  assert verbs.count("queued-resources delete") == 2  # the preempted one, and at the end
  starts = [c for c in fake.calls if "citrus_jax.main" in " ".join(c)]
  assert len(starts) == 2 and starts[0] == starts[1]  # same command, same gs:// workdir
  # The second start comes after the re-create and a fresh install.
  i_delete = next(i for i, c in enumerate(fake.calls) if c[3:5] == ["queued-resources", "delete"])
  i_start2 = max(i for i, c in enumerate(fake.calls) if c in starts)
  assert any(c[3:5] == ["queued-resources", "create"] for c in fake.calls[i_delete:i_start2])
  assert any(c[3:5] == ["tpu-vm", "scp"] for c in fake.calls[i_delete:i_start2])


def test_sigterm_exit_is_resumed_and_a_crash_is_not():
  fake = FakeGcloud(first_run_rc=tpu_pod.RESUMABLE_EXIT, state_after_first="ACTIVE")
  assert _launcher(fake).launch(JOB) == 0 and fake.runs == 2
  fake = FakeGcloud(first_run_rc=1, state_after_first="ACTIVE")
  assert _launcher(fake).launch(JOB) == 1 and fake.runs == 1
  assert not any("delete" in c for c in fake.calls)  # kept for debugging


def test_job_arguments_are_checked():
  with pytest.raises(ValueError, match="--config=configs"):
    tpu_pod.train_command(["--config.seed=1"], "gs://b/w", 1)
  with pytest.raises(ValueError, match="--workdir"):
    tpu_pod.train_command([*JOB, "--config.workdir=x"], "gs://b/w", 1)


# --- SLURM ------------------------------------------------------------------------------------


def _sbatch(tmp_path, srun_rc):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  (bin_dir / "srun").write_text(
      f"#!/bin/bash\necho \"srun $*\" >> {tmp_path}/calls\necho \"XLA_FLAGS=$XLA_FLAGS\" >> "
      f"{tmp_path}/calls\nexit {srun_rc}\n")
  (bin_dir / "scontrol").write_text(f"#!/bin/bash\necho \"scontrol $*\" >> {tmp_path}/calls\n")
  for f in ("srun", "scontrol"):
    (bin_dir / f).chmod(0o755)
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
         "SLURM_SUBMIT_DIR": str(ROOT), "XLA_FLAGS": ""}
  (tmp_path / "calls").write_text("")
  out = subprocess.run(["bash", str(ROOT / "launch" / "slurm.sbatch"), *JOB,
                        "--config.workdir=/shared/w"], env=env, capture_output=True, text=True,
                       timeout=30)
  return out.returncode, (tmp_path / "calls").read_text().splitlines()


def test_slurm_script_runs_the_entry_point_and_requeues_on_preemption(tmp_path):
  assert subprocess.run(["bash", "-n", str(ROOT / "launch" / "slurm.sbatch")]).returncode == 0
  rc, calls = _sbatch(tmp_path, 0)
  assert rc == 0
  assert shlex.split(calls[0]) == ["srun", "python", "-m", "citrus_jax.main", *JOB,
                                   "--config.workdir=/shared/w"]
  assert "latency_hiding_scheduler" in calls[1] and not any("scontrol" in c for c in calls)
  rc, calls = _sbatch(tmp_path, tpu_pod.RESUMABLE_EXIT)
  assert rc == tpu_pod.RESUMABLE_EXIT and calls[-1] == "scontrol requeue 4242"
  rc, calls = _sbatch(tmp_path, 1)
  assert rc == 1 and not any("scontrol" in c for c in calls)
  # The directives ask for one task per GPU (JAX's SLURM detection: one process per device).
  text = (ROOT / "launch" / "slurm.sbatch").read_text()
  assert "#SBATCH --ntasks-per-node=8" in text and "#SBATCH --gpus-per-node=8" in text
  assert "#SBATCH --requeue" in text and "#SBATCH --signal=TERM@" in text


def test_create_waits_for_the_queue_and_stops_on_failure():
  states = iter(["WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"])
  calls, sleeps = [], []

  def fake(cmd, capture=False):
    calls.append(cmd)
    return (0, next(states)) if "describe" in cmd else (0, "")

  pod = tpu_pod.Pod("q", "z", "v6e-256", queued=True)
  tpu_pod.Launcher(pod, fake, sleep=sleeps.append, poll_s=30).create()
  assert [c[4] for c in calls] == ["create", "describe", "describe", "describe"]
  assert sleeps == [30, 30]
  states = iter(["WAITING_FOR_RESOURCES", "FAILED"])
  with pytest.raises(RuntimeError, match="did not become ACTIVE"):
    tpu_pod.Launcher(pod, fake, sleep=sleeps.append).create()


def test_plan_table_records_a_step_that_does_not_fit(monkeypatch):
  """The table calls plan.plan, which raises XLA's own RESOURCE_EXHAUSTED (main's plan mode goes
  through plan.checked_plan instead): in libtpu 0.0.42's phrasing the row says it does not fit
  and what the temporaries needed."""
  import jax
  from launch import plan_table
  from citrus_jax.train import plan

  def oom(*args, **kwargs):
    raise jax.errors.JaxRuntimeError(
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
        "temporaries (36.97G) exceeds available HBM (31.25G).")
  monkeypatch.setattr(plan, "plan", oom)
  row = plan_table.plan_one("llama3_1_70b", "v6e-64", 64, [object()] * 64)
  assert row["fits"] is False and row["temp_needed"] == "36.97G" and row["n_devices"] == 64


def test_dry_run_of_the_citrus_recipe_on_a_v5p_256():
  """The whole recipe (configs/citrus.py) launched on a pod: the full command list, and every
  worker runs the one pipeline command with the data paths, the gs:// workdir and 32 hosts (128 chips)."""
  job = ["--config=configs/citrus.py:llama3_1_70b", "--config.init.hf_dir=/ckpt/Llama-3.1-70B",
         "--config.steps.cpt.train_paths=gs://b/corpus/*.jsonl",
         "--config.steps.sft1.train_paths=gs://b/sft/general.jsonl",
         "--config.steps.sft2.train_paths=gs://b/sft/complex.jsonl",
         "--config.steps.sft3.train_paths=gs://b/sft/citrus_s3.jsonl",
         "--config.steps.rejection.questions=gs://b/rl/mcq_bank.jsonl",
         "--config.steps.eval.data_dir=/data/benchmarks"]
  cmds, out = _dry_run("--name=citrus", "--zone=us-east5-a", "--accelerator=v5p-256", "--spot",
                       "--workdir=gs://b/runs/citrus_70b", "launch", "--", *job)
  verbs = [" ".join(c[3:5]) for c in cmds if c[0] == "gcloud"]
  assert verbs == ["tpu-vm describe", "tpu-vm create", "tpu-vm describe", "tpu-vm scp",
                   "tpu-vm ssh", "tpu-vm ssh", "tpu-vm ssh", "tpu-vm ssh", "tpu-vm delete"]
  assert any(c[:2] == ["git", "-C"] and "archive" in c for c in cmds)  # ships the checkout
  create = next(c for c in cmds if c[3:5] == ["tpu-vm", "create"])
  assert {"--accelerator-type=v5p-256", "--version=v2-alpha-tpuv5", "--spot"} <= set(create)
  start = [c for c in cmds if c[3:5] == ["tpu-vm", "ssh"]][1]
  assert _flag(start, "worker") == "all"
  main_line = next(l for l in _flag(start, "command").splitlines() if "citrus_jax.main" in l)
  assert shlex.split(main_line)[1:] == ["-m", "citrus_jax.main", *job,
                                        "--config.workdir=gs://b/runs/citrus_70b",
                                        "--config.distributed.num_processes=32"]
  assert "[launch] job finished" in out
