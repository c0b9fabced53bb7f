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


# What libtpu 0.0.42.1 (jax 0.10.2) said, compiling the CPT llama3_2_1b step (batch 256, 4096
# tokens, remat dots) for v5e:2x2; and an older libtpu's phrasing, and a GPU allocation's.
_LIBTPU_OOM = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
               "temporaries (390.23G) exceeds available HBM (15.75G).")
_OLD_LIBTPU_OOM = ("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in "
                   "memory space hbm. Used 21.95G of 15.48G hbm.\n Exceeded hbm capacity by 6.47G.")
_GPU_OOM = "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9000000000000 bytes."


def _pod_config():
  from configs import cpt
  config = cpt.get_config("llama3_2_1b")
  config.plan.topology = "v5e:2x2"
  return config


def test_a_step_that_does_not_fit_says_needed_vs_available_and_the_fixes():
  import jax
  config, devices = _pod_config(), [object()] * 4  # the AOT devices are only counted
  err = plan.out_of_memory(jax.errors.JaxRuntimeError(_LIBTPU_OOM), config, devices)
  assert isinstance(err, plan.PlanError) and err.field == "memory"
  text = str(err)
  assert "needs 390.23 GiB of HBM per device, 15.75 GiB available" in text
  # 64 sequences per shard: 390/15.75 = 25x -> the first power of two above, 32 (2 per device).
  assert "config.optim.grad_accum=32 (now 1: 64 sequences per device per microbatch -> 2)" in text
  assert "config.model.remat=full (now 'dots'" in text and "more chips (now 4" in text
  assert "config.data.global_batch_size=256" in text
  old = str(plan.out_of_memory(RuntimeError(_OLD_LIBTPU_OOM), config, devices))
  assert "needs 21.95 GiB of hbm per device, 15.48 GiB available" in old
  gpu = str(plan.out_of_memory(RuntimeError(_GPU_OOM), config, devices))
  assert "needs 8381.90 GiB of device memory per device, 16.00 GiB available" in gpu  # v5e
  assert plan.out_of_memory(ValueError("shapes do not match"), config, devices) is None


def test_checked_plan_turns_only_out_of_memory_into_a_plan_error(monkeypatch):
  import jax
  import pytest
  config, devices = _pod_config(), [object()] * 4

  def oom(*args):
    raise jax.errors.JaxRuntimeError(_LIBTPU_OOM)
  monkeypatch.setattr(plan, "plan", oom)
  with pytest.raises(plan.PlanError, match=r"^memory: the train step needs 390\.23 GiB") as e:
    plan.checked_plan(config, mc.get_preset("llama3_2_1b"), devices)
  assert e.value.__cause__ is None and e.value.__suppress_context__  # no chained traceback

  def other(*args):
    raise TypeError("not a memory problem")
  monkeypatch.setattr(plan, "plan", other)
  with pytest.raises(TypeError, match="not a memory problem"):
    plan.checked_plan(config, mc.get_preset("llama3_2_1b"), devices)


def test_a_tpu_topology_without_libtpu_is_a_clean_error(tmp_path):
  import importlib.util
  import pytest
  if importlib.util.find_spec("libtpu") is not None:
    pytest.skip("libtpu is installed: the topology exists")
  out = subprocess.run(
      [sys.executable, "-m", "citrus_jax.main", "--config=configs/cpt.py:tiny",
       "--config.mode=plan", "--config.plan.topology=v5p:2x4x4", f"--config.workdir={tmp_path}"],
      capture_output=True, text=True, timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  assert "plan error: config.plan.topology: no devices for 'v5p:2x4x4'" in out.stderr
  assert "libtpu" in out.stderr and "Traceback" not in out.stderr
  assert not (tmp_path / "plan.json").exists()
  with pytest.raises(plan.PlanError, match="is not a TPU slice"):
    plan.topology_devices("v5p-64")  # a slice name, not a topology


def test_plan_with_splash_patched_in_compiles_and_restores_the_model():
  """plan(attention_fn=splash_or_einsum): the step compiles with the splash kernel (Pallas
  interpret mode on CPU) in every layer, and transformer._attention is restored afterwards."""
  config = base.get_config()
  config.mesh.shape = (1, 4, 2)
  config.data.seq_len = 128  # splash needs a multiple of 128
  config.data.global_batch_size = 8
  cfg = mc.get_preset("tiny")
  calls = []

  def counted(*args):
    calls.append(args[0].shape)
    return plan.splash_or_einsum(*args)

  original = transformer._attention
  p = plan.plan(config, cfg, attention_fn=counted)
  assert calls and all(s[1] == 128 for s in calls)  # traced through the override
  assert transformer._attention is original
  assert p["temp_bytes"] > 0 and p["n_devices"] == 8


def test_plan_table_rows_name_the_attention_and_its_wiring():
  from launch import plan_table
  cfg = mc.get_preset("tiny")
  got_cfg, fn, wiring = plan_table._attention_setup(cfg, "splash")
  if wiring == "patched":  # transformer.py does not accept attention="splash" yet
    assert fn is plan.splash_or_einsum and got_cfg.attention == "einsum"
  else:
    assert fn is None and got_cfg.attention == "splash"
  assert plan_table._attention_setup(cfg, "einsum")[1:] == (None, "config")
  row = {"preset": "p", "attention": "splash", "slice": "v5p-64", "n_devices": 32,
         "mesh": {"data": 1, "fsdp": 32, "tensor": 1}, "fits": True, "global_batch": 512,
         "grad_accum": 4, "params_bytes_per_device": 2 ** 30, "opt_state_bytes_per_device": 2 ** 31,
         "peak_bytes_per_device": 40 * 2 ** 30}
  row.update(remat="full", loss_chunk=1024)
  failed = {**row, "fits": False, "grad_accum": 2, "temp_needed": "97.5G", "loss_chunk": 0}
  table = plan_table.markdown([row, failed])
  assert ("| p | splash | full | 1024 | v5p-64 (32) | (1, 32, 1) | 4 | 4 | 3.0 GiB | 40.0 GiB |"
          in table)
  assert "| p | splash | full | off | v5p-64 (32) | (1, 32, 1) | 2 | 8 | - | needs 97.5 GiB" in table
