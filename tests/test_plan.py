"""Plan mode: compiled memory analysis on 8 simulated devices, consistent with the param count."""
import subprocess
import sys

from citrus_jax.model import config as mc, transformer
from citrus_jax.train import plan
from configs import base


def test_plan_tiny_on_eight_devices():
  config = base.get_config()
  config.mesh.shape = (1, 4, 2)
  config.data.seq_len = 64
  config.data.global_batch_size = 8
  cfg = mc.get_preset("tiny")
  p = plan.plan(config, cfg)
  n = transformer.count_params(cfg)
  assert p["n_params"] == n and p["n_devices"] == 8
  # fp32 params sharded 8 ways (a few small vectors replicated): between n*4/8 and n*4 bytes.
  assert n * 4 / 8 <= p["params_bytes_per_device"] < n * 4 / 2
  # AdamW keeps two moments per parameter, sharded like the params.
  assert 2 * p["params_bytes_per_device"] <= p["opt_state_bytes_per_device"] <= \
      2 * p["params_bytes_per_device"] + 64
  assert p["temp_bytes"] > 0 and p["peak_bytes_per_device"] >= p["argument_bytes"]
  assert "parameters" in plan.format_plan(p, hbm_bytes=16 * 2**30)


def test_plan_mode_from_the_command_line(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "citrus_jax.main", "--config=configs/cpt.py:tiny",
       "--config.mode=plan", f"--config.workdir={tmp_path}", "--config.mesh.shape=(2,2,2)"],
      capture_output=True, text=True, timeout=300,
      env={**__import__("os").environ,
           "XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
  assert out.returncode == 0, out.stderr[-2000:]
  assert "opt state / device" in out.stdout and (tmp_path / "plan.json").exists()
