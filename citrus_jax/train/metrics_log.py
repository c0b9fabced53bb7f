"""Run logs: a JSONL metrics file, TensorBoard event files (no TensorFlow needed), and MFU.
Both are written through etils.epath, so a gs:// workdir gets them next to its checkpoints.

TensorBoard's format is a TFRecord stream of `Event` protos; the three fields we write
(wall_time, step, summary.value[tag, simple_value]) are encoded here by hand in ~30 lines,
which spares users a TensorFlow install.
"""
from __future__ import annotations

import json
import os
import socket
import struct
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

def _crc32c_table() -> list[int]:
  table = []
  for i in range(256):
    crc = i
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    bits, n = n & 0x7F, n >> 7
    out.append(bits | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _field(num: int, wire: int, payload: bytes) -> bytes:
  key = _varint((num << 3) | wire)
  if wire == 2:
    return key + _varint(len(payload)) + payload
  return key + payload


def encode_event(step: int, scalars: dict[str, float] | None = None, wall_time: float | None = None,
                 file_version: str | None = None) -> bytes:
  """An `Event` proto: wall_time=1 (double), step=2 (int64), file_version=3, summary=5."""
  msg = _field(1, 1, struct.pack("<d", time.time() if wall_time is None else wall_time))
  msg += _field(2, 0, _varint(step))
  if file_version:
    msg += _field(3, 2, file_version.encode())
  if scalars:
    values = b"".join(
        _field(1, 2, _field(1, 2, tag.encode()) + _field(2, 5, struct.pack("<f", float(v))))
        for tag, v in scalars.items())
    msg += _field(5, 2, values)
  return msg


def encode_record(data: bytes) -> bytes:
  header = struct.pack("<Q", len(data))
  return (header + struct.pack("<I", _masked_crc(header)) + data
          + struct.pack("<I", _masked_crc(data)))


def read_records(path: str) -> list[bytes]:
  """Reads a TFRecord file back, checking both CRCs (used by tests and by curious users)."""
  out = []
  with open(path, "rb") as f:
    while header := f.read(8):
      (length,) = struct.unpack("<Q", header)
      if struct.unpack("<I", f.read(4))[0] != _masked_crc(header):
        raise ValueError(f"{path}: corrupt record header")
      data = f.read(length)
      if struct.unpack("<I", f.read(4))[0] != _masked_crc(data):
        raise ValueError(f"{path}: corrupt record data")
      out.append(data)
  return out


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

  `workdir` may be local or remote (gs://...: see `_AppendFile`); `append=None` picks by path."""

  def __init__(self, workdir: str, tensorboard: bool = True, append: bool | None = None,
               flush_secs: float = 30.0):
    self.active = jax.process_index() == 0
    workdir = epath.Path(workdir)
    self.jsonl_path = os.fspath(workdir / "metrics.jsonl")
    self._jsonl = self._tb = None
    if not self.active:
      return
    workdir.mkdir(parents=True, exist_ok=True)
    self._jsonl = _AppendFile(workdir / "metrics.jsonl", append, flush_secs)
    if tensorboard:
      tb_dir = workdir / "tensorboard"
      tb_dir.mkdir(parents=True, exist_ok=True)
      name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
      self._tb = _AppendFile(tb_dir / name, append, flush_secs)
      self._tb.write(encode_record(encode_event(0, file_version="brain.Event:2")))

  def write(self, step: int, metrics: dict[str, Any], prefix: str = "") -> None:
    if not self.active:
      return
    scalars = {f"{prefix}{k}": float(v) for k, v in metrics.items()}
    self._jsonl.write((json.dumps({"step": int(step), **scalars}) + "\n").encode())
    if self._tb:
      self._tb.write(encode_record(encode_event(int(step), scalars)))

  def close(self) -> None:
    for f in (self._jsonl, self._tb):
      if f:
        f.close()


def read_metrics(path: str, prefix: str = "") -> dict[int, dict[str, float]]:
  """step -> metrics from a metrics.jsonl; a resumed run's re-done steps replace earlier lines."""
  out: dict[int, dict[str, float]] = {}
  path = epath.Path(path)
  if not path.exists():
    return out
  for line in path.read_text().splitlines():
    if not line.strip():
      continue
    row = json.loads(line)
    keys = [k for k in row if k != "step" and k.startswith(prefix)]
    if keys:
      out.setdefault(row["step"], {}).update({k: row[k] for k in keys})
  return out
