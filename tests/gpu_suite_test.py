"""benchmarks/gpu_suite.sh: the rehearsal runs the identical script on CPU with tiny shapes and no
network and returns what the device tool can bring back; the package step installs only from
.whl/ and names what is missing in one line; the report says what was not measured."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

_ROOT = pathlib.Path(__file__).resolve().parent.parent
_SCRIPT = _ROOT / "benchmarks" / "gpu_suite.sh"
sys.path.insert(0, str(_ROOT / "benchmarks"))
import gpu_suite_report  # pylint: disable=g-import-not-at-top,wrong-import-position


def _env(**extra) -> dict:
  env = dict(os.environ, PIP_NO_INDEX="1", PYTHON=sys.executable, **extra)
  env.pop("OUT", None)
  return env


def _no_network_prefix() -> list[str]:
  """`unshare --net --` where this user may make a network namespace (root on CI), else none
  (PIP_NO_INDEX=1 and the offline hub flags still hold)."""
  unshare = shutil.which("unshare")
  if unshare and subprocess.run([unshare, "--net", "true"], capture_output=True,
                                check=False).returncode == 0:
    return [unshare, "--net", "--"]
  return []


@pytest.mark.slow
def test_rehearsal_returns_every_phase_in_three_files(tmp_path):
  pytest.importorskip("torch")
  pytest.importorskip("diffusers")
  out = tmp_path / "out"
  proc = subprocess.run(
      _no_network_prefix() + ["bash", str(_SCRIPT), "--rehearse", str(out)],
      capture_output=True, text=True, timeout=3600, check=False,
      env=_env(GPU_SUITE_WHEELS=str(tmp_path / "no_wheels")))
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
  assert "rehearsal: 3 files would come back" in proc.stdout
  check_rehearsal(out)


def check_rehearsal(out: pathlib.Path) -> None:
  """What the rehearsal left in `out` (also callable on an earlier rehearsal's folder)."""
  # At most 8 files come back from the device tool: here exactly three, legal names, small.
  files = sorted(p.name for p in out.rglob("*") if p.is_file())
  assert files == ["gpu_suite.json", "gpu_suite.md", "gpu_suite_logs.tar.gz"]
  assert all((out / f).stat().st_size < 2**20 for f in files)

  suite = json.loads((out / "gpu_suite.json").read_text())
  phases = suite["phases"]
  assert set(phases) == {"env", "sampler_jax", "sampler_torch", "attack_jax", "attack_torch",
                         "search", "memory"}
  assert all(p["exit_code"] == 0 and not p["skipped"] for p in phases.values()), phases
  assert suite["env"]["backend"] == "cpu" and suite["env"]["cudnn_max_head_dim"] == 128

  memory = suite["memory"]["analysis"]["forward"]   # the toy model: analysis only on CPU
  assert memory["per_member_bytes"] > 0 and memory["fixed_bytes"] > 0
  assert suite["memory"]["peak_bytes_in_use"] is None

  sampler = suite["sampler_jax"]
  assert sampler["model"] == "sd15_tiny" and sampler["population"] == 2
  rows = {"xla": sampler["jax"], "reference": sampler["jax_reference"]}
  for row in rows.values():
    assert row["images_per_s"] > 0 and row["mfu"] == pytest.approx(row["tflops_per_s"] / 1.0)
  assert rows["reference"]["max_image_difference"] < 1e-4   # the same images either way
  sites = sampler["attention_sites"]                        # the rule, at this device's limit
  # sd15_tiny: 4 transformer blocks (down 1, mid 1, up 2) × (self, cross) + the VAE's one;
  # float32 here, so never cuDNN.
  assert sites["sites"] == 9 and sites["cudnn_sites"] == 0
  assert "torch" not in sampler                             # PyTorch ran in its own process
  torch_part = suite["sampler_torch"]["torch"]
  assert torch_part["batched_images_per_s"] > 0 and torch_part["one_by_one_images_per_s"] > 0

  attack = suite["attack_jax"]
  assert [r["depth"] for r in attack["jax"]] == ["last", "all_remat"]
  for row in attack["jax"]:
    assert row["prompts"] == 2 and row["prompt_iterations_per_s"] > 0 and row["loss_finite"]
    assert row["temp_bytes"] > 0
  assert suite["attack_torch"]["prompt_iterations_per_s"] > 0
  assert suite["attack_torch"]["loss_finite"]

  search = suite["search"]["strategies"]["Sep_CMA_ES"]
  assert 0 < search["ask_tell_share"] < 1 and search["generations_per_s"] > 0

  table = (out / "gpu_suite.md").read_text()
  for text in ("| JAX, attention reference |", "| PyTorch diffusers one by one |",
               "| JAX, gradient depth all_remat |", "| Sep_CMA_ES |", "| attack_torch |"):
    assert text in table
  with tarfile.open(out / "gpu_suite_logs.tar.gz") as tar:
    names = set(tar.getnames())
  assert {"parts/sampler_jax.json", "parts/attack_torch.json", "logs/search.log"} <= names


def _run_check(tmp_path, modules: str, wheels: pathlib.Path):
  return subprocess.run(
      ["bash", str(_SCRIPT), "--check", str(tmp_path / "out")], capture_output=True, text=True,
      timeout=300, check=False,
      env=_env(GPU_SUITE_MODULES=modules, GPU_SUITE_WHEELS=str(wheels),
               GPU_SUITE_SITE=str(tmp_path / "site")))


def test_missing_module_is_one_line(tmp_path):
  (tmp_path / "wheels").mkdir()
  proc = _run_check(tmp_path, "json jda_missing_module", tmp_path / "wheels")
  assert proc.returncode == 3
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert "missing Python modules: jda_missing_module " in lines[0]
  assert "bash benchmarks/prepare_wheels.sh" in lines[0]
  assert not list((tmp_path / "out").glob("*"))           # nothing to bring back


def _write_wheel(directory: pathlib.Path, name: str) -> pathlib.Path:
  """A minimal pure-Python wheel holding module `name` (VALUE = 42)."""
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / f"{name}-0.1-py3-none-any.whl"
  info = f"{name}-0.1.dist-info"
  files = {f"{name}/__init__.py": "VALUE = 42\n",
           f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
           f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                            "Tag: py3-none-any\n"}
  files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{info}/RECORD,,\n"
  with zipfile.ZipFile(path, "w") as z:
    for f, text in files.items():
      z.writestr(f, text)
  return path


def test_missing_module_is_installed_from_the_wheels_folder(tmp_path):
  _write_wheel(tmp_path / "wheels", "jda_fake_wheel")
  proc = _run_check(tmp_path, "json jda_fake_wheel", tmp_path / "wheels")
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "missing here: jda_fake_wheel" in proc.stdout
  assert "every module found: json jda_fake_wheel" in proc.stdout
  assert (tmp_path / "site" / "jda_fake_wheel" / "__init__.py").read_text() == "VALUE = 42\n"
  # A module still missing after the install is named in one line.
  proc = _run_check(tmp_path, "jda_fake_wheel jda_other_module", tmp_path / "wheels")
  assert proc.returncode == 3 and len(proc.stderr.strip().splitlines()) == 1
  assert "missing Python modules: jda_other_module " in proc.stderr


def test_report_says_what_was_not_measured(tmp_path):
  parts = tmp_path / "parts"
  parts.mkdir()
  (parts / "env.json").write_text(json.dumps({"device": "NVIDIA H100 80GB HBM3",
                                              "versions": {"jax": "0.11.2"}}))
  (parts / "attack_torch.json").write_text(json.dumps({
      "model": "sd21", "image_size": 256, "steps": 50, "guidance_scale": 7.5,
      "dtype": "bfloat16", "free_tokens": 8, "device": "cuda", "prompt_iterations_per_s": 0.5}))
  (parts / "attack_jax.json").write_text("{truncated")
  (parts / "status.txt").write_text("env 12 0 45\nsampler_jax 150 124 150\n"
                                    "attack_jax 3 1 140\nsearch 0 skipped 15\n")
  suite = gpu_suite_report.build(parts)
  assert suite["device"] == "NVIDIA H100 80GB HBM3"
  assert suite["phases"]["sampler_jax"]["timed_out"]
  assert suite["phases"]["search"] == {"seconds": 0.0, "exit_code": None, "limit_s": 15.0,
                                       "skipped": True, "timed_out": False}
  assert suite["sampler_jax"] == {"error": "not written"}
  assert suite["attack_jax"] == {"error": "attack_jax.json: JSONDecodeError"}
  table = gpu_suite_report.markdown(suite)
  assert "Sampler: not measured (not written; PyTorch: not written)." in table
  assert "| JAX | not measured (attack_jax.json: JSONDecodeError) |" in table
  assert "| PyTorch one prompt at a time, last step (cuda) | 1 | – | 2.000 | 0.500 |" in table
  assert "| sampler_jax | 150 | 150 | 124 (timed out) |" in table
  assert "| search | 0 | 15 | skipped (suite budget spent) |" in table
