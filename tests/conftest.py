"""Shared fixtures: a tiny random SD in both weight formats, loaded once per test session.

JAX's persistent compilation cache (in .jax_cache/ at the repo root, shared with every subprocess
the tests start) makes re-runs, and the many launches of the same job, much faster.
"""

import os
import pathlib
import sys

import jax
import pytest

_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # tests/ helpers (tiny_sd)

# One persistent compilation cache for the session and every subprocess it starts (launchers,
# multi-device workers, the GPU suite's rehearsal): they inherit it through JAX's own environment
# variables, so a program compiled once (in-process or in any subprocess) is read back, not
# compiled again, by the next process that builds it. Every compile is cached (minimum 0 s): the
# tiny test programs compile in well under a second each, and there are thousands of them. On CI
# (a fresh clone) the cache starts empty in .jax_cache/; $JAXDIFFATTACK_TEST_CACHE moves it.
CACHE_DIR = os.environ.get("JAXDIFFATTACK_TEST_CACHE", str(_ROOT / ".jax_cache"))
os.environ["JAX_COMPILATION_CACHE_DIR"] = CACHE_DIR
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_addoption(parser):
  parser.addoption("--kill-points", type=int, default=None,
                   help="kills per job in tests/reliability_kill_test.py (default 2, kinds rotating "
                   "per job; 3: every kind on every job; also "
                   "$JAXDIFFATTACK_KILL_POINTS)")


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: end-to-end jobs, multi-process, kill-and-resume and 8-fake-device runs "
      "(about half the suite's time); CI runs them, `-m 'not slow'` is the quick loop")


@pytest.fixture(scope="session")
def tiny_sd_dirs(tmp_path_factory):
  """(pt_dir, flax_dir): the same tiny random SD as safetensors and as Flax msgpack."""
  import tiny_sd  # pylint: disable=g-import-not-at-top
  return tiny_sd.build(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="session")
def tiny_sd_model(tiny_sd_dirs):
  """(sd, params) loaded from the Flax msgpack copy."""
  from jaxdiffattack.models import load_stable_diffusion  # pylint: disable=g-import-not-at-top
  return load_stable_diffusion(str(tiny_sd_dirs[1]))


@pytest.fixture(scope="session")
def tiny_lv_dir(tmp_path_factory):
  """A tiny random SD whose UNet outputs 8 channels (ε, then the variance v) over 4-channel
  latents (a learned-variance model), as Flax msgpack."""
  import tiny_sd  # pylint: disable=g-import-not-at-top
  _, flax_dir = tiny_sd.build(tmp_path_factory.mktemp("tiny_lv"), seed=3,
                              unet_config=dict(tiny_sd.SD1_UNET, out_channels=8))
  return flax_dir


@pytest.fixture(scope="session")
def chrome_driver(tmp_path_factory):
  """(driver, download dir): one headless Chromium for the session's page tests (tests/browser.py;
  skips without chromium off CI, fails on CI)."""
  import browser  # pylint: disable=g-import-not-at-top
  browser.require_chrome()
  downloads = tmp_path_factory.mktemp("downloads")
  driver = browser.chrome(downloads)
  yield driver, downloads
  driver.quit()


@pytest.fixture(scope="session")
def world2_smoke(tmp_path_factory):
  """(workdir, config, train.run's metrics): world 2 trained and exported once per session by
  `configs/train_world2.py:smoke` (every stage a few steps; the export is workdir/export).
  Shared by tests/world2_train_test.py and tests/world2_jobs_test.py. $JAXDIFFATTACK_TEST_WORLD2
  names a directory to keep it in across sessions (train.run skips finished stages)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.world2 import train  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("train_world2_config",
                                                _ROOT / "configs" / "train_world2.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  keep = os.environ.get("JAXDIFFATTACK_TEST_WORLD2", "")
  workdir = pathlib.Path(keep) if keep else tmp_path_factory.mktemp("w2smoke")
  return workdir, config, train.run(config, workdir)



@pytest.fixture(scope="module")
def world2_assets(world2_smoke):
  """$JAXDIFFATTACK_WORLD2_ASSETS → the session's smoke export while the requesting module runs
  (tests/world2_jobs_test.py, tests/census_test.py)."""
  from jaxdiffattack.models import hub  # pylint: disable=g-import-not-at-top
  workdir, _, _ = world2_smoke
  old = os.environ.get(hub.WORLD2_ENV)
  os.environ[hub.WORLD2_ENV] = str(workdir / "export")
  yield workdir / "export"
  if old is None:
    os.environ.pop(hub.WORLD2_ENV)
  else:
    os.environ[hub.WORLD2_ENV] = old
