"""Run logs through etils.epath: local appends, the rewrite mode object stores (gs://) need,
TensorBoard events (tensorboardX) that read back, and resumed runs that keep one record a step."""
import json
import os

from etils import epath
from tensorboardX.proto import event_pb2

from helpers import tensorboard_events as _events, tensorboard_scalars
from citrus_jax.train import metrics_log


def _lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_local_logs_append_across_runs(tmp_path):
  workdir = str(tmp_path / "run")
  log = metrics_log.MetricsLogger(workdir)
  log.write(1, {"loss": 2.5}, prefix="train/")
  # Flushed at every write: a crashed run keeps its lines.
  assert _lines(os.path.join(workdir, "metrics.jsonl")) == [{"step": 1, "train/loss": 2.5}]
  log.close()
  log = metrics_log.MetricsLogger(workdir, tensorboard=False)  # a resumed run appends
  log.write(2, {"loss": 2.0}, prefix="train/")
  log.write(2, {"loss": 1.0}, prefix="eval/")
  log.close()
  assert metrics_log.read_metrics(log.jsonl_path) == {
      1: {"train/loss": 2.5}, 2: {"train/loss": 2.0, "eval/loss": 1.0}}
  assert metrics_log.read_metrics(log.jsonl_path, "eval/") == {2: {"eval/loss": 1.0}}
  assert tensorboard_scalars(workdir) == [(1, "train/loss", 2.5)]


def test_rewrite_mode_keeps_earlier_lines_and_writes_on_close(tmp_path):
  """What a gs:// workdir gets (no appends there): whole-file rewrites, here on a local dir."""
  workdir = str(tmp_path / "run")
  log = metrics_log.MetricsLogger(workdir, append=True)
  log.write(1, {"loss": 3.0})
  log.close()
  log = metrics_log.MetricsLogger(workdir, append=False, flush_secs=1e9)
  log.write(2, {"loss": 2.0})
  assert len(_lines(log.jsonl_path)) == 1  # not rewritten yet (flush_secs)
  log.close()
  assert [r["step"] for r in _lines(log.jsonl_path)] == [1, 2]
  eager = metrics_log.MetricsLogger(str(tmp_path / "eager"), append=False, flush_secs=0)
  eager.write(5, {"loss": 1.0})
  assert _lines(eager.jsonl_path) == [{"step": 5, "loss": 1.0}]  # rewritten at once
  eager.close()
  assert tensorboard_scalars(str(tmp_path / "eager")) == [(5, "loss", 1.0)]


def test_a_resumed_run_keeps_one_record_per_step(tmp_path):
  """Steps 1-4 logged, a checkpoint at 2, a crash (with a torn last line): the resumed run drops
  records 3-4 (and the torn line) and TensorBoard is told to purge events after step 2."""
  workdir = str(tmp_path / "run")
  log = metrics_log.MetricsLogger(workdir)
  for step in range(1, 5):
    log.write(step, {"loss": 10.0 - step}, prefix="train/")
  log.write(2, {"loss": 7.5}, prefix="eval/")
  log.close()
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 5, "train/lo')  # killed mid-write
  log = metrics_log.MetricsLogger(workdir, resume_step=2)
  for step in (3, 4):
    log.write(step, {"loss": 20.0 - step}, prefix="train/")
  log.close()
  rows = _lines(log.jsonl_path)
  assert [r["step"] for r in rows] == [1, 2, 2, 3, 4]
  assert metrics_log.read_metrics(log.jsonl_path, "train/") == {
      1: {"train/loss": 9.0}, 2: {"train/loss": 8.0}, 3: {"train/loss": 17.0},
      4: {"train/loss": 16.0}}
  events = _events(workdir)
  purges = [e.step for e in events if e.session_log.status == event_pb2.SessionLog.START]
  assert purges == [3]  # TensorBoard discards the first run's events from step 3 on
  assert metrics_log.drop_records_after(log.jsonl_path, 4) == 0


def test_paths_go_through_epath(tmp_path, monkeypatch):
  seen, real = [], epath.Path

  def path(p):
    seen.append(os.fspath(p))
    return real(p)
  monkeypatch.setattr(metrics_log.epath, "Path", path)
  log = metrics_log.MetricsLogger(str(tmp_path / "run"), tensorboard=False)
  log.write(1, {"loss": 1.0})
  log.close()
  assert str(tmp_path / "run") in seen
  assert metrics_log.read_metrics(log.jsonl_path) == {1: {"loss": 1.0}}
  assert log.jsonl_path in seen
  # Remote paths are rewritten, never appended to (object stores cannot append).
  assert not metrics_log.can_append(real("gs://bucket/run") / "metrics.jsonl")
  assert metrics_log.can_append(real(str(tmp_path)) / "metrics.jsonl")
