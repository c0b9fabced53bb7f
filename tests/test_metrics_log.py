"""Run logs through etils.epath: local appends, the rewrite mode object stores (gs://) need, and
TensorBoard records that read back."""
import json
import os

from etils import epath

from citrus_jax.train import metrics_log


def _lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def _event_file(workdir):
  (name,) = os.listdir(os.path.join(workdir, "tensorboard"))
  return os.path.join(workdir, "tensorboard", name)


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
  records = metrics_log.read_records(_event_file(workdir))
  assert len(records) == 2 and b"train/loss" in records[1]


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
  records = metrics_log.read_records(_event_file(str(tmp_path / "eager")))
  assert len(records) == 2 and b"loss" in records[1]


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
