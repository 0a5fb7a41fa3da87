r"""The GPU suite's first phase: what this machine is and has, as JSON.

  python3 benchmarks/gpu_suite_env.py --out=parts/env.json

Versions of the packages the suite uses (and where each was imported from: the machine's own or
the `.whl/` wheels installed by gpu_suite.sh), JAX's devices and backend, the GPU's name, memory
and compute capability, and the largest head dim cuDNN's fused attention takes there
(`models.attention.cudnn_max_head_dim`). PyTorch is only looked up, not imported: each framework
gets the GPU in its own process.
"""

import argparse
import importlib.metadata
import importlib.util
import json
import pathlib
import platform
import subprocess

PACKAGES = ("jax", "jaxlib", "flax", "optax", "chex", "numpy", "transformers", "torch",
            "diffusers", "evosax", "ml_collections", "safetensors")


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  versions, origins = {"python": platform.python_version()}, {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
    spec = importlib.util.find_spec(name)
    origins[name] = str(pathlib.Path(spec.origin).parent.parent) if spec and spec.origin else None
  import jax  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.models import attention  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  out = {"versions": versions, "origins": origins, "backend": jax.default_backend(),
         "devices": [str(d) for d in jax.devices()],
         "compute_capability": getattr(device, "compute_capability", None),
         "cudnn_max_head_dim": attention.cudnn_max_head_dim(device)}
  try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=30,
                         check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    smi = None
  out["nvidia_smi"] = smi
  out["device"] = smi or f"{jax.default_backend()} ({device.device_kind})"
  print(json.dumps(out, indent=2))
  path = pathlib.Path(args.out)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(out, indent=2) + "\n")
  tmp.replace(path)


if __name__ == "__main__":
  main()
