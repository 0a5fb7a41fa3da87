#!/usr/bin/env bash
# Everything worth measuring on a lent GPU, in one go: < 8 minutes on one H200 (issue #12, item 5).
#
#   bash benchmarks/gpu_suite.sh [--smoke] [OUT_DIR]
#
# OUT_DIR: default $OUT (the device machine's return folder), else ./gpu_suite_out. Writes
# OUT_DIR/gpu_suite.json (all numbers) and OUT_DIR/gpu_suite.md (the table), plus parts/ and logs/.
#
# Measured on SD1.5-shaped random weights (weights' values do not change speed), population 64,
# 50 DDIM steps, CFG 7.5, bfloat16:
#   1. sampler (benchmarks/sampler_benchmark.py): compile time, images/s, TFLOP/s and MFU with
#      XLA and with cuDNN attention on the same params; PyTorch diffusers on the same GPU, batched
#      and one candidate at a time;
#   2. search loop (benchmarks/search_benchmark.py with the loop): generations/s and ask/tell's
#      share of the wall time (Sep-CMA-ES), next to its bound at the GPU's peak.
# Each phase has its own time limit, so a slow phase cannot eat the others; a failed or timed-out
# phase is reported in the table, not hidden. PEAK_TFLOPS (env) overrides the peak used for MFU
# (default: 989, dense bf16 of an H100/H200 SXM).
#
# A bare machine gets what it needs first: jax's CUDA 12 plugin at the installed jax version
# (`jax[cuda12]==<version>`, jax's own extra) and this package with its benchmark extra
# (`pip install -e ".[bench]"`: torch). Installs are skipped when the imports already work.
#
# --smoke: the same Python entry points on CPU with the toy model and tiny sizes (attention "xla"
# and "reference" in place of "xla" and "cudnn"); tests/gpu_suite_test.py runs it.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # this checkout's jaxdiffattack

SMOKE=0
if [[ "${1:-}" == "--smoke" ]]; then SMOKE=1; shift; fi
DIR="${1:-${OUT:-gpu_suite_out}}"
mkdir -p "$DIR/parts" "$DIR/logs"
: > "$DIR/parts/status.txt"
PEAK="${PEAK_TFLOPS:-989}"

# phase NAME LIMIT_S COMMAND...: runs COMMAND under `timeout`, logs it, records its status.
phase() {
  local name="$1" limit="$2"; shift 2
  local start=$SECONDS
  echo "[gpu_suite] $name (limit ${limit}s): $*"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" > "$DIR/logs/$name.log" 2>&1
  local code=$?
  echo "$name $((SECONDS - start)) $code" >> "$DIR/parts/status.txt"
  echo "[gpu_suite] $name: exit $code after $((SECONDS - start))s"
  tail -n 20 "$DIR/logs/$name.log"
}

if [[ $SMOKE == 1 ]]; then
  export JAX_PLATFORMS=cpu
  echo "cpu (smoke)" > "$DIR/parts/device.txt"
  MODEL=(--model=toy --population=2 --steps=2 --dtype=float32 --peak_tflops=1)
  ATTENTION=xla,reference
  SAMPLER_EXTRA=(--repeats=1 --torch_one_by_one=1 --nodiffusers_flax)
  SEARCH_EXTRA=(--generations=1 --repeats=1)
  LIMIT_SAMPLER=600; LIMIT_SEARCH=600
else
  phase install 60 bash -c '
    jax_version=$(python -c "import jax; print(jax.__version__)" 2>/dev/null || echo 0.10.2)
    python -c "import jax, sys; sys.exit(jax.default_backend() != \"gpu\")" 2>/dev/null ||
      pip install -q "jax[cuda12]==${jax_version}"
    python -c "import torch, diffusers, evosax, ml_collections" 2>/dev/null ||
      pip install -q -e ".[bench]"
    python -c "import jax, sys; print(jax.devices()); sys.exit(jax.default_backend() != \"gpu\")"'

  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    > "$DIR/parts/device.txt" 2>/dev/null || echo "unknown" > "$DIR/parts/device.txt"
  # --microbatch=16: 16 members (32 UNet rows with CFG) per compiled call, so XLA attention's
  # [rows, 8 heads, 4096, 4096] float32 logits at the 64×64 level stay at 17 GB.
  MODEL=(--model=sd15 --population=64 --steps=50 --dtype=bfloat16 --peak_tflops="$PEAK"
         --microbatch=16)
  ATTENTION=xla,cudnn
  SAMPLER_EXTRA=(--repeats=1 --torch_one_by_one=2 --nodiffusers_flax)
  SEARCH_EXTRA=(--generations=1 --repeats=5)
  LIMIT_SAMPLER=250; LIMIT_SEARCH=140   # with install (60): at most 7.5 min
fi

phase sampler "$LIMIT_SAMPLER" python benchmarks/sampler_benchmark.py "${MODEL[@]}" \
  --attention="$ATTENTION" "${SAMPLER_EXTRA[@]}" --out="$DIR/parts/sampler.json"
phase search "$LIMIT_SEARCH" python benchmarks/search_benchmark.py "${MODEL[@]}" \
  --strategies=Sep_CMA_ES "${SEARCH_EXTRA[@]}" --out="$DIR/parts/search.json"
python benchmarks/gpu_suite_report.py --parts="$DIR/parts" --out_dir="$DIR"
