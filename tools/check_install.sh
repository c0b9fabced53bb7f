#!/usr/bin/env bash
# A non-editable install (a wheel built from this checkout, in a fresh venv that borrows the
# already-installed dependencies) runs the shipped configs from a directory outside the checkout.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m venv --system-site-packages "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "$repo"
rm -rf "$repo/build"
mkdir "$tmp/empty" && cd "$tmp/empty"
where="$("$tmp/venv/bin/python" -c 'import citrus_jax; print(citrus_jax.__file__)')"
case "$where" in "$tmp/venv/"*) ;; *) echo "citrus_jax imported from $where, not the venv" >&2; exit 1;; esac
"$tmp/venv/bin/python" -m citrus_jax.main --config=configs/info.py:demo
out="$("$tmp/venv/bin/python" -m citrus_jax.main --config=configs/grpo.py:tiny --config.progress=False | tail -1)"
case "$out" in /*) ;; *) echo "run path not absolute: $out" >&2; exit 1;; esac
test -f "$out/config.json" && test -f "$out/metrics.jsonl"
# The whole recipe (configs/citrus.py:tiny: generated data, every step, HF export) from here too.
run="$("$tmp/venv/bin/python" -m citrus_jax.main --config=configs/citrus.py:tiny --config.progress=False | tail -1)"
case "$run" in "$tmp/empty/"*) ;; *) echo "recipe run path not absolute under $tmp/empty: $run" >&2; exit 1;; esac
for f in summary.json report.md export/done.json export/hf/config.json export/hf/model.safetensors; do
  test -f "$run/$f" || { echo "recipe run lacks $f" >&2; exit 1; }
done
echo "non-editable install OK: $where -> $out, $run"
