#!/usr/bin/env bash
# Downloads, here (where PyPI is reachable), the pure-Python wheels the GPU suite needs on the
# target GPU machine, which has no network: Python 3.12, manylinux x86-64, with jax 0.11 (CUDA
# 13), flax, optax, chex, orbax, transformers 5, torch 2.11, safetensors, scipy, matplotlib,
# pillow, PyYAML, regex, httpx, huggingface-hub, zipp and absl already installed
# (/work/.library/device/KINDS.md), but not these:
#
#   bash benchmarks/prepare_wheels.sh [DIR]      # DIR default: .whl (git-ignored)
#
#   evosax          the search strategies (its Requires-Dist: numpy, jax, flax, matplotlib, dotmap)
#   ml_collections  configs (absl-py, PyYAML)
#   diffusers       the PyTorch baselines' UNet/VAE/schedulers (importlib_metadata, filelock,
#                   httpx, huggingface-hub, numpy, regex, requests, safetensors, Pillow)
#   dotmap, importlib_metadata   the only requirements of theirs missing there
# About 6 MB. gpu_suite.sh installs them there with
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
# (never from an index). One version per package: wheels of these names already in DIR are
# replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-.whl}"
PY="${PYTHON:-python3}"
PINS=(evosax==0.3.2 ml_collections==1.1.0 diffusers==0.39.0 dotmap==1.3.30
      importlib_metadata==8.7.0)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$tmp" "${PINS[@]}"
mkdir -p "$DIR"
for pin in "${PINS[@]}"; do
  name="${pin%%==*}"
  rm -f "$DIR/${name}"-*.whl "$DIR/${name//_/-}"-*.whl
done
mv "$tmp"/*.whl "$DIR"/
ls -1 "$DIR"/*.whl
echo "$(du -sh "$DIR" | cut -f1) in $DIR: carry it to the GPU machine (device run: carry [\".whl\"])"
