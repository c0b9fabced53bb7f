"""Cloud TPU pods through the gcloud CLI: create, install, run on every worker, follow, resume.

  python -m launch.tpu_pod --name=citrus --zone=us-east5-a --accelerator=v5p-128 --spot \\
      --workdir=gs://my-bucket/runs/cpt_8b launch -- \\
      --config=configs/cpt.py:llama3_1_8b --config.data.train_paths='gs://my-bucket/corpus/*.jsonl'

Commands (after the flags):
  create   the TPU VM, or a queued resource with --queued, and wait until it is ready
  setup    ship this checkout (`git archive HEAD`) to every worker; install it and jax[tpu] in a
           Python 3.11 venv made by uv
  run      start `python -m citrus_jax.main <args> --config.workdir=<workdir>` on every worker
           (in the background, logging to ~/citrus_run.log) and follow worker 0's log
  logs     follow worker 0's log of the current run
  status   print the TPU's state
  delete   tear the TPU (and queued resource) down
  launch   create, setup, run; after a preemption (spot) delete, re-create, setup and run again,
           which resumes from the last checkpoint in --workdir; delete when done
--dry-run prints every command instead of running it (and pretends each one succeeds).
The workdir must be a gs:// path for a resume on new VMs to find the checkpoints.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
import subprocess
import sys
import time
from typing import Callable, Sequence

# Software images for JAX (cloud.google.com/tpu/docs/runtimes).
RUNTIME_VERSIONS = {"v6e": "v2-alpha-tpuv6e", "v5p": "v2-alpha-tpuv5",
                    "v5litepod": "v2-alpha-tpuv5-lite", "v4": "tpu-ubuntu2204-base"}
READY = {False: "READY", True: "ACTIVE"}  # tpu-vm state, queued-resource state
PREEMPTED = {"PREEMPTED", "TERMINATED", "STOPPED", "SUSPENDING", "SUSPENDED", "FAILED"}
RESUMABLE_EXIT = 75  # citrus_jax.main's exit code when a stage saved and stopped on SIGTERM
LOG, PID, RC = "~/citrus_run.log", "~/citrus_run.pid", "~/citrus_run.rc"
SCRIPT = "~/citrus_run.sh"
VENV_PY = "~/citrus_venv/bin/python"


def num_hosts(accelerator: str) -> int:
  """Worker VMs of a slice: v4/v5p names count TensorCores (2 per chip), v5e/v6e count chips;
  multi-host slices have 4 chips per VM."""
  m = re.fullmatch(r"(v4|v5p|v5litepod|v6e)-(\d+)", accelerator)
  if not m:
    raise ValueError(f"--accelerator={accelerator!r}: expected e.g. v5p-128, v6e-64, "
                     "v5litepod-16 or v4-32")
  kind, n = m.group(1), int(m.group(2))
  chips = n // 2 if kind in ("v4", "v5p") else n
  return 1 if chips <= (4 if kind in ("v4", "v5p") else 8) else chips // 4


@dataclasses.dataclass(frozen=True)
class Pod:
  name: str
  zone: str
  accelerator: str
  project: str = ""
  runtime_version: str = ""  # "" = the JAX image for the accelerator's generation
  spot: bool = False
  queued: bool = False  # a queued resource (waits for capacity) instead of a direct create

  @property
  def version(self) -> str:
    return self.runtime_version or RUNTIME_VERSIONS[self.accelerator.split("-")[0]]

  def gcloud(self, *args: str) -> list[str]:
    project = [f"--project={self.project}"] if self.project else []
    return ["gcloud", "compute", "tpus", *args, f"--zone={self.zone}", *project]

  def create(self) -> list[str]:
    spot = ["--spot"] if self.spot else []
    if self.queued:
      return self.gcloud("queued-resources", "create", self.name, f"--node-id={self.name}",
                         f"--accelerator-type={self.accelerator}",
                         f"--runtime-version={self.version}", *spot)
    return self.gcloud("tpu-vm", "create", self.name, f"--accelerator-type={self.accelerator}",
                       f"--version={self.version}", *spot)

  def state(self) -> list[str]:
    if self.queued:
      return self.gcloud("queued-resources", "describe", self.name, "--format=value(state.state)")
    return self.gcloud("tpu-vm", "describe", self.name, "--format=value(state)")

  def delete(self) -> list[str]:
    if self.queued:  # --force deletes the node with it
      return self.gcloud("queued-resources", "delete", self.name, "--force", "--quiet")
    return self.gcloud("tpu-vm", "delete", self.name, "--quiet")

  def ssh(self, command: str, worker: str = "all") -> list[str]:
    return self.gcloud("tpu-vm", "ssh", self.name, f"--worker={worker}", f"--command={command}")

  def scp(self, src: str, dst: str) -> list[str]:
    return self.gcloud("tpu-vm", "scp", src, f"{self.name}:{dst}", "--worker=all")


def install_command(jax_version: str, python: str = "3.11", extra: Sequence[str] = ()) -> str:
  """Unpacks the shipped checkout into ~/citrus_jax and installs it with jax[tpu] (TPU images
  ship an older Python; uv fetches the one setup.py needs)."""
  jax_req = f"jax[tpu]=={jax_version}" if jax_version else "jax[tpu]"
  steps = ["set -e", "rm -rf ~/citrus_jax", "mkdir -p ~/citrus_jax",
           "tar xzf ~/citrus_jax.tar.gz -C ~/citrus_jax",
           "python3 -m pip install --quiet --user uv",
           f"python3 -m uv venv --quiet --allow-existing --python={python} ~/citrus_venv",
           f"python3 -m uv pip install --quiet --python={VENV_PY} {shlex.quote(jax_req)} "
           "-e ~/citrus_jax", *extra]
  return "; ".join(steps)


def train_command(args: Sequence[str], workdir: str, hosts: int) -> str:
  """What every worker runs: writes the job script, starts it in the background (it outlives
  the ssh session), keeps its pid, log and exit code in the home directory."""
  if not any(a.startswith("--config=") for a in args):
    raise ValueError("give the entry point's --config=configs/<file>.py[:preset] after '--'")
  if any(a.startswith("--config.workdir") for a in args):
    raise ValueError("set the work directory with --workdir (the launcher passes it on)")
  dist = [f"--config.distributed.num_processes={hosts}"] if hosts > 1 else []
  main = f"{VENV_PY} " + shlex.join(["-m", "citrus_jax.main", *args, f"--config.workdir={workdir}",
                                     *dist])
  return (f"cd ~/citrus_jax && rm -f {RC} && cat > {SCRIPT} <<'EOF'\n{main}\necho $? > {RC}\n"
          f"EOF\nnohup bash {SCRIPT} > {LOG} 2>&1 < /dev/null & echo $! > {PID}")


FOLLOW = f"tail -n +1 --pid=$(cat {PID}) -F {LOG}"
READ_RC = f"cat {RC}"


class Runner:
  """Runs (or, dry, prints) one command; returns (exit code, stdout).

  A dry run pretends every command succeeds: the TPU exists once created, and the job exits 0.
  """

  def __init__(self, dry_run: bool = False, out=None):
    self.dry_run, self.out, self.exists = dry_run, out, False

  def __call__(self, cmd: list[str], capture: bool = False) -> tuple[int, str]:
    print(("[dry-run] " if self.dry_run else "+ ") + shlex.join(cmd), file=self.out or sys.stdout,
          flush=True)
    if self.dry_run:
      return self.pretend(cmd)
    done = subprocess.run(cmd, stdout=subprocess.PIPE if capture else None, text=True)
    return done.returncode, done.stdout or ""

  def pretend(self, cmd: list[str]) -> tuple[int, str]:
    if "create" in cmd or "delete" in cmd:
      self.exists = "create" in cmd
    if "describe" in cmd:
      ready = READY["queued-resources" in cmd]
      return (0, ready) if self.exists else (1, "")
    return 0, "0" if f"--command={READ_RC}" in cmd else ""


class Launcher:
  def __init__(self, pod: Pod, runner: Runner, workdir: str = "", jax_version: str = "",
               setup_extra: Sequence[str] = (), repo: str = ".", poll_s: float = 30.0,
               sleep: Callable[[float], None] = time.sleep):
    self.pod, self.run_cmd, self.workdir, self.jax_version = pod, runner, workdir, jax_version
    self.setup_extra, self.repo, self.poll_s, self.sleep = setup_extra, repo, poll_s, sleep

  def _check(self, cmd: list[str], what: str) -> str:
    rc, out = self.run_cmd(cmd, capture=True)
    if rc:
      raise RuntimeError(f"{what} failed (exit {rc}): {shlex.join(cmd)}")
    return out

  def state(self) -> str:
    rc, out = self.run_cmd(self.pod.state(), capture=True)
    return out.strip() if rc == 0 else "NOT_FOUND"

  def create(self, timeout_s: float | None = None) -> None:
    self._check(self.pod.create(), "create")
    self.wait_ready(timeout_s)

  def wait_ready(self, timeout_s: float | None = None) -> None:
    """Polls until READY (ACTIVE for a queued resource, which may wait hours for capacity)."""
    start, ready = time.monotonic(), READY[self.pod.queued]
    while (state := self.state()) != ready:
      if state in PREEMPTED | {"NOT_FOUND"} or (timeout_s and time.monotonic() - start > timeout_s):
        raise RuntimeError(f"{self.pod.name} did not become {ready} (state {state})")
      self.sleep(self.poll_s)

  def ensure_ready(self) -> None:
    """Re-uses a healthy slice, waits for one being created, replaces a preempted one."""
    state = self.state()
    if state in PREEMPTED:
      self.delete()
      state = "NOT_FOUND"
    if state == "NOT_FOUND":
      self.create()
    else:
      self.wait_ready()

  def setup(self) -> None:
    tarball = f"/tmp/citrus_jax-{self.pod.name}.tar.gz"
    self._check(["git", "-C", self.repo, "archive", "--format=tar.gz", "-o", tarball, "HEAD"],
                "git archive (ships the last commit: commit your changes first)")
    self._check(self.pod.scp(tarball, "~/citrus_jax.tar.gz"), "copy to workers")
    self._check(self.pod.ssh(install_command(self.jax_version, extra=self.setup_extra)),
                "install on workers")

  def run(self, args: Sequence[str]) -> int | None:
    """Starts the job on every worker, follows worker 0; its exit code (None: VM unreachable)."""
    if not self.workdir:
      raise ValueError("--workdir is required to run (a gs:// path, so a resume finds it)")
    self._check(self.pod.ssh(train_command(args, self.workdir, num_hosts(self.pod.accelerator))),
                "start the job")
    return self.follow()

  def follow(self) -> int | None:
    self.run_cmd(self.pod.ssh(FOLLOW, worker="0"))
    rc, out = self.run_cmd(self.pod.ssh(READ_RC, worker="0"), capture=True)
    return int(out.strip()) if rc == 0 and out.strip().isdigit() else None

  def delete(self) -> None:
    self.run_cmd(self.pod.delete())

  def launch(self, args: Sequence[str], max_restarts: int = 20, keep: bool = False) -> int:
    """create -> setup -> run until the job exits 0; a preempted slice is re-created and the
    job resumes from its checkpoints. A job that fails on a healthy slice is not retried (the
    slice is kept for debugging)."""
    for attempt in range(max_restarts + 1):
      self.ensure_ready()
      self.setup()
      rc = self.run(args)
      if rc == 0:
        print(f"[launch] job finished (attempt {attempt + 1})", flush=True)
        if not keep:
          self.delete()
        return 0
      state = self.state()
      if rc != RESUMABLE_EXIT and state not in PREEMPTED:
        print(f"[launch] job failed with exit {rc} on a {state} slice; keeping it for "
              f"debugging (delete with the 'delete' command)", flush=True)
        return rc or 1
      print(f"[launch] preempted (exit {rc}, state {state}); resuming from {self.workdir} on a "
            f"{'re-created' if state in PREEMPTED else 'healthy'} slice", flush=True)
    print(f"[launch] gave up after {max_restarts} restarts", flush=True)
    return 1


def _local_jax_version() -> str:
  try:
    from importlib import metadata
    return metadata.version("jax")
  except Exception:  # jax not installed here: let pip pick
    return ""


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  job_args = argv[argv.index("--") + 1:] if "--" in argv else []
  argv = argv[:argv.index("--")] if "--" in argv else argv
  p = argparse.ArgumentParser(prog="python -m launch.tpu_pod", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("command", choices=["create", "setup", "run", "logs", "status", "delete",
                                     "launch"])
  p.add_argument("--name", required=True, help="TPU (and queued resource) name")
  p.add_argument("--zone", required=True)
  p.add_argument("--accelerator", required=True, help="e.g. v5p-128, v6e-64")
  p.add_argument("--project", default="")
  p.add_argument("--runtime-version", default="", help="default: the JAX image for the chip")
  p.add_argument("--spot", action="store_true", help="spot capacity (preemptible, cheaper)")
  p.add_argument("--queued", action="store_true", help="create through a queued resource")
  p.add_argument("--workdir", default="", help="gs://bucket/path for checkpoints and logs")
  p.add_argument("--jax-version", default=_local_jax_version())
  p.add_argument("--setup-cmd", action="append", default=[],
                 help="extra shell command run on every worker after the install")
  p.add_argument("--max-restarts", type=int, default=20)
  p.add_argument("--keep", action="store_true", help="launch: do not delete the TPU at the end")
  p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
  a = p.parse_args(argv)
  num_hosts(a.accelerator)  # validates the name early
  pod = Pod(a.name, a.zone, a.accelerator, a.project, a.runtime_version, a.spot, a.queued)
  launcher = Launcher(pod, Runner(a.dry_run), a.workdir, a.jax_version, a.setup_cmd,
                      poll_s=0 if a.dry_run else 30)
  if a.command == "create":
    launcher.create()
  elif a.command == "setup":
    launcher.setup()
  elif a.command == "run":
    rc = launcher.run(job_args)
    return 1 if rc is None else rc
  elif a.command == "logs":
    launcher.follow()
  elif a.command == "status":
    print(launcher.state())
  elif a.command == "delete":
    launcher.delete()
  else:
    return launcher.launch(job_args, a.max_restarts, a.keep)
  return 0


if __name__ == "__main__":
  sys.exit(main())
