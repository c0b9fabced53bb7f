#!/bin/bash
# The GPU numbers in docs/benchmarks.md, in one call (~8 min on one H100/H200 with a start):
#   bash benchmarks/gpu_suite.sh [OUT_DIR]
# Each part has its own time limit, so one that fails or runs long does not cost the others.
# PARTS="train attention generate" picks parts; DEMO_ARGS="--config.demo.cpt_steps=400 ..." also
# runs configs/demo.py on the GPU with those overrides.
set -u
OUT=${1:-${OUT:-/tmp/gpu_suite}}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # torch shares the GPU in the same process
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
nvidia-smi -L
$PY -c "import jax, torch; print('jax', jax.__version__, jax.devices(), 'torch', torch.__version__)"
PARTS=${PARTS:-train attention generate}   # which parts to run
TRAIN="benchmarks/train_throughput.py --preset=llama3_2_1b --seq_len=4096 --batch=4 \
  --compute_dtype=bfloat16 --remat=dots --steps 5"
if [[ " $PARTS " == *" train "* ]]; then
  echo "== train step, Llama-3.2-1B shape, bf16, batch 4 x 4096, cudnn attention vs torch"
  timeout 150 $PY $TRAIN --attention=cudnn --torch_autocast_bf16 2>&1 | tee "$OUT/train_1b.txt"
  echo "== the same, einsum attention (the default)"
  timeout 90 $PY $TRAIN --attention=einsum --skip_torch 2>&1 | tee "$OUT/train_1b_einsum.txt"
fi
if [[ " $PARTS " == *" attention "* ]]; then
  echo "== attention kernels, batch 4 x 4096, 32/8 heads"
  timeout 50 $PY benchmarks/attention_kernels.py --seq 4096 --batch 4 --heads 32 --kv_heads 8 \
    2>&1 | tee "$OUT/attention.txt"
fi
if [[ " $PARTS " == *" generate "* ]]; then
  echo "== generation, Llama-3.2-1B shape, bf16, batch 8 x 128 new tokens"
  timeout 80 $PY benchmarks/generate_throughput.py --preset llama3_2_1b --dtype bfloat16 \
    --batch 8 --new_tokens 128 --repeats 3 2>&1 | tee "$OUT/generate_1b.txt"
fi
if [ -n "${DEMO_ARGS+x}" ]; then
  echo "== demo pipeline on the GPU: $DEMO_ARGS"
  timeout 170 $PY -m citrus_jax.main --config=configs/demo.py --config.workdir=runs/gpu_demo \
    $DEMO_ARGS 2>&1 | tail -40 | tee "$OUT/demo.txt"
  cp runs/gpu_demo/summary.json runs/gpu_demo/report.md "$OUT/" 2>/dev/null
fi
