"""The generate job end to end on the tiny SD, and its one-line config errors."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxdiffattack import generate
from jaxdiffattack import io
from jaxdiffattack.errors import UserError
from jax_only import JAX_ONLY

_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT / "configs"))
import generate as generate_config  # pylint: disable=g-import-not-at-top,wrong-import-position


def _config(model_dir, **overrides):
  config = generate_config.get_config("fast")
  config.model = str(model_dir)
  config.prompts = ["a red cube", "a blue ball"]
  config.images_per_prompt = 3
  config.num_steps = 3
  for key, value in overrides.items():
    config[key] = value
  return config


def test_run_writes_workdir(tiny_sd_dirs, tmp_path):
  rows = generate.run(_config(tiny_sd_dirs[1]), tmp_path)
  assert [r["member"] for r in rows] == list(range(6))
  assert rows[4] == {"member": 4, "prompt_index": 1, "seed_index": 1, "prompt": "a blue ball",
                     "file": "images/00004.png"}
  assert io.read_jsonl(tmp_path / "results.jsonl") == rows
  assert json.loads((tmp_path / "config.json").read_text())["num_steps"] == 3
  first = np.asarray(Image.open(tmp_path / "images/00000.png"))
  assert first.shape == (16, 16, 3) and first.dtype == np.uint8
  grid = np.asarray(Image.open(tmp_path / "grid.png"))
  assert grid.shape == (2 * (128 + 1) + 1, 3 * (128 + 1) + 1, 3)
  # Same seed → same images; the microbatch does not change them.
  again = generate.run(_config(tiny_sd_dirs[1], microbatch=1), tmp_path / "again")
  assert len(again) == 6
  np.testing.assert_allclose(
      np.asarray(Image.open(tmp_path / "again/images/00005.png"), np.int32),
      np.asarray(Image.open(tmp_path / "images/00005.png"), np.int32), atol=1)


@pytest.mark.parametrize("key,value,message", [
    ("scheduler", "heun", "config.scheduler='heun' is invalid: use one of"),
    ("num_steps", 0, "config.num_steps=0 is invalid: use an integer >= 1"),
    ("guidance_scale", float("nan"), "config.guidance_scale=nan is invalid"),
    ("prompts", [], "config.prompts=[] is invalid: give at least one prompt"),
    ("images_per_prompt", 0, "config.images_per_prompt=0 is invalid"),
    ("dtype", "float16", "config.dtype='float16' is invalid"),
    ("microbatch", 0, "config.microbatch=0 is invalid"),
    ("microbatch", "big", "config.microbatch='big' is invalid"),
    ("microbatch", "auto", "config.microbatch='auto' needs a memory budget"),  # CPU: no limit
])
def test_bad_config_is_one_line_error(key, value, message):
  config = _config("toy")
  config[key] = value
  with pytest.raises(UserError) as e:
    generate.validate(config)
  assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_missing_model_dir(tmp_path):
  with pytest.raises(UserError, match="is not 'toy', an existing directory, or a hub id"):
    generate.run(_config("./no/such/model"), tmp_path)


def test_launch_exits_nonzero_with_one_line(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(_ROOT), **JAX_ONLY)
  proc = subprocess.run(
      [sys.executable, str(_ROOT / "launch/generate.py"),
       f"--config={_ROOT / 'configs/generate.py'}", f"--workdir={tmp_path}",
       "--config.num_steps=-3"], env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert last == "error: config.num_steps=-3 is invalid: use an integer >= 1", proc.stderr[-2000:]


def test_unknown_config_variant():
  with pytest.raises(ValueError, match="unknown variant 'slow'"):
    generate_config.get_config("slow")


def test_index_page_in_headless_chromium(tiny_sd_dirs, tmp_path, chrome_driver):
  """The job's index.html shows every generated image with its prompt; all load, no console
  error, not blank."""
  import browser  # pylint: disable=g-import-not-at-top
  rows = generate.run(_config(tiny_sd_dirs[1]), tmp_path)
  page = (tmp_path / "index.html").read_text()
  for r in rows:
    assert f'src="{r["file"]}"' in page
  assert page.count("prompt: a red cube") == 3 and page.count("prompt: a blue ball") == 3
  shown = browser.check_page(chrome_driver[0], tmp_path / "index.html")
  assert shown == len(rows) + 1      # + grid.png


def test_launch_auto_microbatch_asks_for_a_budget_on_cpu(tmp_path):
  """`--config.microbatch=auto` parses from the command line; a CPU reports no memory limit."""
  env = dict(os.environ, PYTHONPATH=str(_ROOT), **JAX_ONLY)
  proc = subprocess.run(
      [sys.executable, str(_ROOT / "launch/generate.py"),
       f"--config={_ROOT / 'configs/generate.py'}", f"--workdir={tmp_path}",
       "--config.microbatch=auto"], env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: config.microbatch='auto' needs a memory budget") and (
      "--config.memory_budget_gb" in last), proc.stderr[-2000:]
