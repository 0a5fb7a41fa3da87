#!/usr/bin/env bash
# Everything worth measuring on a lent GPU, in one call, on the target GPU machine as it is
# (issue #25; docs/gpu.md says how to run it there):
#
#   bash benchmarks/gpu_suite.sh [--rehearse | --check] [OUT_DIR]
#
# --check: only the package step below (a few seconds): exit 0 when every module is found.
# OUT_DIR: default $OUT (the device machine's return folder), else ./gpu_suite_out. It receives
# exactly three files, rewritten after every phase, so a later phase that fails or is killed
# loses nothing: gpu_suite.json (every number, each phase's status), gpu_suite.md (the tables)
# and gpu_suite_logs.tar.gz (each phase's log and JSON part).
#
# No network: it uses the machine's jax/flax/optax/chex/torch/transformers and installs only the
# wheels found in .whl/ (made here by `bash benchmarks/prepare_wheels.sh`) with
#   python3 -m pip install -q --no-index --no-deps --no-compile --target $GPU_SUITE_SITE .whl/*.whl
# and PYTHONPATH; a module neither installed nor in .whl/ stops it with one line naming the
# module and that command. XLA_PYTHON_CLIENT_PREALLOCATE=false, and each framework runs in its
# own process (PyTorch phases with JAX_PLATFORMS=cpu), so each has the GPU to itself.
#
# Phases (SD-shaped random weights: values do not change speed), each under `timeout` with its
# own limit, and all within GPU_SUITE_BUDGET_S (default 480 s, i.e. 8 minutes, compiles and the
# report included): a phase gets min(its limit, what is left), and one that would get under 20 s
# is skipped and reported so; phases run in order of priority. Estimated on one H100 (nothing has
# run there yet; compiles are the unknown): env 15 s, sampler_jax 170 s, sampler_torch 50 s,
# attack_jax 120 s, attack_torch 40 s, search 80 s: 7.9 min, so the search phase may be cut.
#   env           versions, devices, the GPU (benchmarks/gpu_suite_env.py)                 30 s
#   sampler_jax   SD1.5 shape, population 64, bf16, 50 DDIM steps, CFG 7.5, microbatch 16:
#                 XLA vs cuDNN attention (cuDNN where the kernel takes the shape, see
#                 models/attention.py), compile s, images/s, TFLOP/s and MFU from XLA's FLOP
#                 count (PEAK_TFLOPS, default 989: H100/H200 SXM dense bf16)             200 s
#   sampler_torch diffusers' PyTorch UNet/VAE on the same GPU: batched and one at a time    60 s
#   attack_jax    ATM at SD 2.1 shapes (768-v UNet, 23-layer text tower, 49,408 tokens) at
#                 256², 8 prompts at once, gradient through the last step and through all
#                 steps with remat (benchmarks/attack_scale_benchmark.py)               130 s
#   attack_torch  the released one-prompt PyTorch loop at the same shapes                   45 s
#   search        Sep-CMA-ES driver loop with the SD1.5 sampler: ask/tell's share         90 s
#   memory        memory per member by gradient depth (benchmarks/memory_benchmark.py)  90 s
#
# --rehearse: the identical script on CPU with tiny shapes (sd15_tiny / sd21_tiny, 2 steps,
# population 2), PIP_NO_INDEX=1, offline hub flags, and "reference" in place of "cudnn"
# attention; then checks what would come back (at most 8 files, legal names, sizes).
# tests/gpu_suite_test.py runs it (under `unshare --net` where it can). Exit status: 0 when every
# phase passed, 1 when one failed, timed out or was skipped, 3 for missing packages, 4 when the
# rehearsal's returned files break the device tool's limits.
#
# Environment knobs (tests use them): PYTHON (default python3), GPU_SUITE_WHEELS (default
# .whl), GPU_SUITE_SITE (default /tmp/site), GPU_SUITE_MODULES (the imports required),
# GPU_SUITE_BUDGET_S, GPU_SUITE_LIMIT_SCALE (rehearsal: 36000 s and 20), PEAK_TFLOPS.
set -uo pipefail
{   # the whole script is read before it runs: editing the file mid-run cannot change a run
cd "$(dirname "$0")/.."
ROOT="$PWD"
PY="${PYTHON:-python3}"

MODE=gpu
case "${1:-}" in
  --rehearse) MODE=rehearse; shift ;;
  --check) MODE=check; shift ;;    # the package step alone (installs from .whl/ if needed)
esac
OUT_DIR="${1:-${OUT:-gpu_suite_out}}"
mkdir -p "$OUT_DIR" && OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_suite.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
PARTS="$WORK/parts"; LOGS="$WORK/logs"
mkdir -p "$PARTS" "$LOGS"
: > "$PARTS/status.txt"
BUDGET="${GPU_SUITE_BUDGET_S:-480}"
SCALE="${GPU_SUITE_LIMIT_SCALE:-1}"   # multiplies every phase's limit
PEAK="${PEAK_TFLOPS:-989}"

export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PIP_NO_INDEX=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"   # this checkout's jaxdiffattack
if [[ $MODE == rehearse ]]; then
  # A few shared CPU cores compile tiny models far slower than an H100 compiles SD, and their
  # load varies: the limits are a guard here, not a budget (the caller's timeout is the budget).
  BUDGET="${GPU_SUITE_BUDGET_S:-36000}"; SCALE="${GPU_SUITE_LIMIT_SCALE:-20}"
  export JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES=""
  # A shared compilation cache (the tests' JAXDIFFATTACK_TEST_CACHE) keeps reruns short.
  [[ -n "${JAXDIFFATTACK_TEST_CACHE:-}" ]] && export JAX_COMPILATION_CACHE_DIR="$JAXDIFFATTACK_TEST_CACHE"
fi

# ------------------------------------------------------------------------------ packages --
# Everything imported by the suite's Python (jaxdiffattack included) that is not stdlib.
MODULES=(${GPU_SUITE_MODULES:-jax flax optax chex numpy absl ml_collections evosax transformers
         safetensors PIL matplotlib scipy regex torch diffusers})
WHEELS="${GPU_SUITE_WHEELS:-$ROOT/.whl}"
SITE="${GPU_SUITE_SITE:-/tmp/site}"
missing_modules() {
  "$PY" -c 'import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))' "${MODULES[@]}"
}
missing="$(missing_modules)"
if [[ -n "$missing" ]] && compgen -G "$WHEELS/*.whl" > /dev/null; then
  echo "[gpu_suite] missing here: $missing; installing the wheels of $WHEELS into $SITE"
  if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" \
         "$WHEELS"/*.whl > "$LOGS/install.log" 2>&1; then
    echo "gpu_suite: installing $WHEELS/*.whl failed ($(tail -n 1 "$LOGS/install.log")): rerun" \
         "bash benchmarks/prepare_wheels.sh here and carry .whl" >&2
    exit 3
  fi
  export PYTHONPATH="$PYTHONPATH:$SITE"
  missing="$(missing_modules)"
fi
if [[ -n "$missing" ]]; then
  echo "gpu_suite: missing Python modules: $missing (neither installed nor in $WHEELS/):" \
       "run 'bash benchmarks/prepare_wheels.sh' here, then carry .whl" >&2
  exit 3
fi

if [[ $MODE == check ]]; then
  echo "gpu_suite: every module found: ${MODULES[*]}"
  exit 0
fi

# ---------------------------------------------------------------------------------- phases --
collect() {   # the files that come back, rewritten after every phase
  "$PY" benchmarks/gpu_suite_report.py --parts="$PARTS" --out_dir="$OUT_DIR" --quiet \
    > "$LOGS/report.log" 2>&1 || echo "[gpu_suite] report failed: $(tail -n 1 "$LOGS/report.log")"
  tar -czf "$OUT_DIR/.gpu_suite_logs.tmp.tar.gz" -C "$WORK" parts logs &&
    mv "$OUT_DIR/.gpu_suite_logs.tmp.tar.gz" "$OUT_DIR/gpu_suite_logs.tar.gz"
}

FAILED=()
# phase NAME LIMIT_S COMMAND...: runs COMMAND under `timeout` (at most what is left of the
# budget), logs it, records "name seconds exit-code limit" and collects the files.
phase() {
  local name="$1" limit=$(($2 * SCALE)); shift 2
  local left=$((BUDGET - SECONDS - 10))   # 10 s kept for the last report
  (( left < limit )) && limit=$left
  if (( limit < 20 )); then
    echo "$name 0 skipped $limit" >> "$PARTS/status.txt"
    FAILED+=("$name")
    echo "[gpu_suite] $name: skipped (suite budget of ${BUDGET}s spent)"
    collect
    return
  fi
  local start=$SECONDS
  echo "[gpu_suite] $name (limit ${limit}s): $*"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local code=$?
  (( code != 0 )) && FAILED+=("$name")
  echo "$name $((SECONDS - start)) $code $limit" >> "$PARTS/status.txt"
  echo "[gpu_suite] $name: exit $code after $((SECONDS - start))s"
  (( code != 0 )) && tail -n 15 "$LOGS/$name.log"
  collect
}

if [[ $MODE == rehearse ]]; then
  SAMPLER=(--model=sd15_tiny --population=2 --steps=2 --dtype=float32 --peak_tflops=1
           --attention=xla,reference --repeats=1 --torch_one_by_one=1 --nodiffusers_flax)
  ATTACK=(--model=sd21_tiny --image_size=16 --steps=2 --iters=1 --dtype=float32)
  ATTACK_JAX=(--prompts=2); ATTACK_TORCH=(--torch_prompts=1)
  SEARCH=(--model=sd15_tiny --population=2 --steps=2 --dtype=float32 --peak_tflops=1
          --generations=1 --repeats=1)
  MEMORY=(--model=toy --steps=2 --dtype=float32 --programs=forward)
else
  # --microbatch=16: 16 members (32 UNet rows with CFG) per compiled call, so XLA attention's
  # [32, 8 heads, 4096, 4096] float32 logits at the 64×64 level stay at 17 GB.
  SAMPLER=(--model=sd15 --population=64 --steps=50 --dtype=bfloat16 --peak_tflops="$PEAK"
           --microbatch=16 --attention=xla,cudnn --repeats=2 --torch_one_by_one=2
           --nodiffusers_flax)
  ATTACK=(--model=sd21 --image_size=256 --steps=50 --iters=2 --dtype=bfloat16)
  ATTACK_JAX=(--prompts=8 --depths=last,all_remat); ATTACK_TORCH=(--torch_prompts=2)
  SEARCH=(--model=sd15 --population=64 --steps=50 --dtype=bfloat16 --peak_tflops="$PEAK"
          --microbatch=16 --generations=1 --repeats=5)
  MEMORY=(--model=sd21 --resolution=256 --population=8 --steps=50 --dtype=bfloat16
          --programs=forward,grad_last,grad_all_remat)
fi

phase env 30 "$PY" benchmarks/gpu_suite_env.py --out="$PARTS/env.json"
phase sampler_jax 200 "$PY" benchmarks/sampler_benchmark.py "${SAMPLER[@]}" --notorch \
  --out="$PARTS/sampler_jax.json"
JAX_PLATFORMS=cpu phase sampler_torch 60 "$PY" benchmarks/sampler_benchmark.py \
  "${SAMPLER[@]}" --nojax --out="$PARTS/sampler_torch.json"
phase attack_jax 130 "$PY" benchmarks/attack_scale_benchmark.py --side=jax "${ATTACK[@]}" \
  "${ATTACK_JAX[@]}" --out="$PARTS/attack_jax.json"
JAX_PLATFORMS=cpu phase attack_torch 45 "$PY" benchmarks/attack_scale_benchmark.py --side=torch \
  "${ATTACK[@]}" "${ATTACK_TORCH[@]}" --out="$PARTS/attack_torch.json"
phase search 90 "$PY" benchmarks/search_benchmark.py "${SEARCH[@]}" --strategies=Sep_CMA_ES \
  --out="$PARTS/search.json"
# Memory per member by gradient depth (benchmarks/memory_benchmark.py): XLA's compiled memory
# analysis at populations 1 and 2 of the forward sampler and the gradients through the last step
# and through every step with remat (SD 2.1 at 256², CLIP ViT-B/16 judge fused), then each run at
# population 8 with random weights for the measured peak. About 6 compiles + 3 runs; last, so it
# gets what the budget leaves (the ATM step's memory is left to the attack phase).
phase memory 90 "$PY" benchmarks/memory_benchmark.py "${MEMORY[@]}" --out="$PARTS/memory.json"

collect
cat "$OUT_DIR/gpu_suite.md"
if [[ $MODE == rehearse ]]; then
  # What the device tool would bring back: at most 8 files, 16 MiB each, names of letters,
  # digits, '.', '_' and '-', no deeper than 2 folders.
  "$PY" - "$OUT_DIR" <<'EOF' || exit 4
import pathlib, re, sys
root = pathlib.Path(sys.argv[1])
files = [p for p in root.rglob("*") if p.is_file()]
problems = [f"{len(files)} files (at most 8)"] if len(files) > 8 else []
for p in files:
  rel = p.relative_to(root)
  if not all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in rel.parts):
    problems.append(f"illegal name {rel}")
  if len(rel.parts) > 3:
    problems.append(f"too deep: {rel}")
  if p.stat().st_size > 16 * 2**20:
    problems.append(f"over 16 MiB: {rel}")
print(f"[gpu_suite] rehearsal: {len(files)} files would come back: "
      + ", ".join(f"{p.name} ({p.stat().st_size} B)" for p in files))
if problems:
  sys.exit("gpu_suite: rehearsal: " + "; ".join(problems))
EOF
fi
if (( ${#FAILED[@]} )); then
  echo "[gpu_suite] phases failed, timed out or skipped: ${FAILED[*]} (see gpu_suite.md)"
  exit 1
fi
exit 0
}
