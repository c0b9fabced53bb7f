"""Run logs: a JSONL metrics file, TensorBoard event files (through tensorboardX: no TensorFlow),
and MFU. Both land in the workdir, so a gs:// workdir gets them next to its checkpoints (the JSONL
through etils.epath, the events through tensorboardX's own GCS writer).

A resumed run re-does the steps after its last checkpoint. `MetricsLogger(resume_step=N)` drops
the JSONL records after step N and tells TensorBoard to purge its events after N, so neither log
keeps two values for one step.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
from etils import epath

# Dense bf16 peak FLOP/s per chip, for MFU. Keys are matched against `device.device_kind`.
PEAK_FLOPS = {
    "H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12,
    "TPU v6": 918e12, "TPU v5p": 459e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12,
    "TPU v5": 459e12, "TPU v4": 275e12, "TPU v3": 123e12,
}


def peak_flops(device: Any = None) -> float | None:
  device = device or jax.devices()[0]
  kind = getattr(device, "device_kind", "")
  for key, flops in PEAK_FLOPS.items():
    if key.lower() in kind.lower():
      return flops
  return None  # CPU: report tokens/s only


def train_flops_per_token(n_params: int, n_layers: int, seq_len: int, q_dim: int) -> float:
  """6N for the matmuls (fwd + bwd) plus causal attention scores and values (PaLM appendix)."""
  return 6.0 * n_params + 6.0 * n_layers * seq_len * q_dim


# --- TensorBoard events -----------------------------------------------------------------------

def can_append(path: Any) -> bool:
  """Local files can be appended to; object stores (gs://, s3://) cannot."""
  return "://" not in os.fspath(path)


class _AppendFile:
  """An append-only log file through etils.epath. Local files are appended to and flushed at
  every write. Object stores (gs://) cannot append and show an object only once it is closed,
  so there the whole content (earlier runs' lines included) is rewritten, at most every
  `flush_secs` and on close."""

  def __init__(self, path: epath.Path, append: bool | None = None, flush_secs: float = 30.0):
    self.path, self.flush_secs = path, flush_secs
    self.append = can_append(path) if append is None else append
    self._file = path.open("ab") if self.append else None
    self._data = bytearray(path.read_bytes() if not self.append and path.exists() else b"")
    self._dirty, self._last = False, time.monotonic()

  def write(self, data: bytes) -> None:
    if self._file is not None:
      self._file.write(data)
      self._file.flush()
      return
    self._data += data
    self._dirty = True
    if time.monotonic() - self._last >= self.flush_secs:
      self._rewrite()

  def _rewrite(self) -> None:
    self.path.write_bytes(bytes(self._data))
    self._dirty, self._last = False, time.monotonic()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    elif self._dirty:
      self._rewrite()


class MetricsLogger:
  """Writes scalars to `metrics.jsonl` and a TensorBoard event file; only process 0 writes.

  `workdir` may be local or remote (gs://...: see `_AppendFile`); `append=None` picks by path.
  `resume_step`: the step a resumed run restarts from; later records are dropped (see above)."""

  def __init__(self, workdir: str, tensorboard: bool = True, append: bool | None = None,
               flush_secs: float = 30.0, resume_step: int | None = None):
    self.active = jax.process_index() == 0
    workdir = epath.Path(workdir)
    self.jsonl_path = os.fspath(workdir / "metrics.jsonl")
    self._jsonl = self._tb = None
    if not self.active:
      return
    workdir.mkdir(parents=True, exist_ok=True)
    if resume_step is not None:
      drop_records_after(workdir / "metrics.jsonl", resume_step)
    self._jsonl = _AppendFile(workdir / "metrics.jsonl", append, flush_secs)
    if tensorboard:
      # Imported only when event files are wanted: tensorboardX imports torch whenever torch is
      # installed (~1.2 s here), a cost runs with tensorboard=False should not pay.
      import tensorboardX  # pylint: disable=g-import-not-at-top
      self._tb = tensorboardX.SummaryWriter(os.fspath(workdir / "tensorboard"),
                                            flush_secs=min(flush_secs, 3600.0),
                                            purge_step=None if resume_step is None else resume_step + 1)

  def write(self, step: int, metrics: dict[str, Any], prefix: str = "") -> None:
    if not self.active:
      return
    scalars = {f"{prefix}{k}": float(v) for k, v in metrics.items()}
    self._jsonl.write((json.dumps({"step": int(step), **scalars}) + "\n").encode())
    if self._tb:
      wall = time.time()
      for tag, value in scalars.items():
        self._tb.add_scalar(tag, value, int(step), walltime=wall)

  def close(self) -> None:
    if self._jsonl:
      self._jsonl.close()
    if self._tb:
      self._tb.close()


def drop_records_after(path: Any, step: int) -> int:
  """Rewrites a metrics.jsonl without its records after `step` (atomically: a crash leaves the
  old file or the new one); returns how many were dropped."""
  path = epath.Path(path)
  if not path.exists():
    return 0
  keep, dropped = [], 0
  for line in path.read_text().split("\n"):
    if not line.strip():
      continue
    try:
      later = int(json.loads(line)["step"]) > step
    except (ValueError, KeyError, TypeError):
      later = True  # the torn last line of a killed run: dropped, so appends start clean
    if later:
      dropped += 1
    else:
      keep.append(line)
  if dropped:
    tmp = path.parent / (path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    tmp.replace(path)
  return dropped


def read_metrics(path: str, prefix: str = "") -> dict[int, dict[str, float]]:
  """step -> metrics from a metrics.jsonl; a resumed run's re-done steps replace earlier lines."""
  out: dict[int, dict[str, float]] = {}
  path = epath.Path(path)
  if not path.exists():
    return out
  for line in path.read_text().split("\n"):  # not splitlines(): U+2028 may sit in a string
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except ValueError:
      continue  # the torn last line of a killed run
    keys = [k for k in row if k != "step" and k.startswith(prefix)]
    if keys:
      out.setdefault(row["step"], {}).update({k: row[k] for k in keys})
  return out
