"""Hostile and broken inputs (issue #15): each is one line (`error: ...` from a launcher, exit code
!= 0, no traceback) naming what is wrong and how to fix it, and nothing is written.

Covered here: unknown config keys and wrong types for every launcher; a workdir of another job
or another config; a truncated, corrupted or foreign checkpoint; PyTorch pickle weights under a
.safetensors name; an invalid-UTF-8 prompt file at the attack job; NaN from a model or scorer
(reported per member, never ranked); a full disk (a real file-size limit in a subprocess, and a
failing checkpoint write in the middle of a sweep). docs/reliability.md lists the older tests
that cover the rest (corrupted weights, pickle .bin/.ckpt, bad prompt files, ...).
"""

import dataclasses
import errno
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffattack import io
from jaxdiffattack import runs
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import scoring as scoring_lib
from jaxdiffattack import sweep
from jaxdiffattack import text
from jaxdiffattack.errors import UserError
from jax_only import JAX_ONLY

_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT / "configs"))
import generate as generate_config  # pylint: disable=g-import-not-at-top,wrong-import-position

LAUNCHERS = {"sweep": "configs/shift_sweep.py:toy", "search": "configs/latent_search.py:toy",
             "attack": "configs/atm.py:toy,smoke", "analyze": "configs/analysis.py:toy",
             "generate": "configs/generate.py", "train_toy": "configs/train_toy.py"}


def _snapshot(directory):
  """{relative path: bytes} of every file under `directory` (None if it does not exist)."""
  directory = pathlib.Path(directory)
  if not directory.exists():
    return None
  return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*")
          if p.is_file()}


def _one_line(error: BaseException, *fragments):
  message = str(error)
  assert "\n" not in message, message
  for fragment in fragments:
    assert fragment in message, message
  return message


def _another_jobs_workdir(path):
  """A workdir holding a generate run's config.json and an image."""
  runs.write_config(generate_config.get_config("fast"), path)
  (path / "images").mkdir()
  (path / "images" / "00000.png").write_bytes(b"not really a png")
  return path


@pytest.mark.slow   # 15 launcher processes (each imports JAX): ~1–3 min on 2 cores
def test_every_launcher_flag_error_is_one_line(tmp_path):
  cases = []
  for name, config in LAUNCHERS.items():
    cases += [(name, config, "--config.nonexistent=1",
               "error: --config.nonexistent: the config has no key 'nonexistent'; fix the name"),
              (name, config, "--config.seed=abc",
               "error: flag --config.seed=abc: invalid literal for int() with base 10: 'abc'")]
  # A tuple field given a string passes flag parsing: the job's validation names it.
  cases.append(("sweep", LAUNCHERS["sweep"], "--config.grids.ums=abc",
                "error: config.grids.ums=('abc',) is invalid: give a tuple of numbers"))
  # A job-level refusal through a launcher: another job's workdir, left as it was.
  other = _another_jobs_workdir(tmp_path / "other")
  before = _snapshot(other)
  env = dict(os.environ, PYTHONPATH=str(_ROOT), JAX_PLATFORMS="cpu", **JAX_ONLY)
  launches = [(tmp_path / f"w{i}", expected, [f"launch/{name}.py", f"--config={_ROOT / config}",
                                              f"--workdir={tmp_path / f'w{i}'}", flag])
              for i, (name, config, flag, expected) in enumerate(cases)]
  launches.append((other, "error: config.workdir=", [
      "launch/sweep.py", f"--config={_ROOT / LAUNCHERS['sweep']}", f"--workdir={other}"]))
  results = []
  for start in range(0, len(launches), 4):   # 4 at a time: each start-up is CPU-bound
    batch = [(workdir, expected, subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, str(_ROOT / args[0]), *args[1:]], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True))
             for workdir, expected, args in launches[start:start + 4]]
    results += [(workdir, expected, proc, proc.communicate(timeout=300)[1])
                for workdir, expected, proc in batch]
  for workdir, expected, proc, stderr in results:
    assert proc.returncode != 0, (proc.args, stderr)
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr
    assert errors[0].startswith(expected), (errors[0], expected)
    if workdir == other:
      assert "holds a sweep with a different config or another job's files" in errors[0]
      assert _snapshot(other) == before
    else:
      assert not workdir.exists(), workdir


def _sweep_config(model_dir):
  from sweep_test import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config(model_dir)
  config.grid_images = False
  config.trajectory.prompts = ()
  return config


def _attack_config():
  import atm as atm_config  # pylint: disable=g-import-not-at-top
  return atm_config.get_config("toy,smoke")


def _search_config(model_dir):
  from search_multidevice_worker import tiny_config  # pylint: disable=g-import-not-at-top
  return tiny_config("latent", model_dir)


@pytest.mark.parametrize("job", ["sweep", "search", "attack", "generate"])
def test_workdir_of_another_job_or_config_is_refused_untouched(job, tiny_sd_dirs, tmp_path):
  from jaxdiffattack import generate  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import search  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.attacks import job as attack_job  # pylint: disable=g-import-not-at-top
  make, run = {
      "sweep": (lambda: _sweep_config(tiny_sd_dirs[1]), sweep.run),
      "search": (lambda: _search_config(tiny_sd_dirs[1]), search.run),
      "attack": (_attack_config, attack_job.run),
      "generate": (lambda: generate_config.get_config("fast"), generate.run)}[job]
  what = {"generate": "a generate run", "attack": "an attack"}.get(job, f"a {job}")
  # Another job's files (for generate: a sweep's).
  other = tmp_path / "other"
  if job == "generate":
    runs.write_config(_sweep_config(tiny_sd_dirs[1]), other)
  else:
    _another_jobs_workdir(other)
  # The same job with another config (seed changed), with a checkpoint of that config.
  same = tmp_path / "same"
  changed = make()
  changed.seed = 17
  runs.write_config(changed, same)
  runs.save_checkpoint(same / "checkpoint.msgpack", {"x": np.arange(3)}, "hash")
  for workdir in (other, same):
    before = _snapshot(workdir)
    with pytest.raises(UserError) as e:
      run(make(), workdir)
    _one_line(e.value, f"holds {what} with a different config or another job's files",
              "use a new --workdir")
    if workdir == same:
      assert "config.json differs in seed)" in str(e.value)
    assert _snapshot(workdir) == before


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not_a_checkpoint"])
def test_damaged_checkpoint_is_one_line_and_left_alone(damage, tiny_sd_dirs, tmp_path):
  config = _sweep_config(tiny_sd_dirs[1])
  runs.write_config(config, tmp_path)
  path = tmp_path / "checkpoint.msgpack"
  runs.save_checkpoint(path, {"scores": np.arange(100.0)}, runs.config_hash(config))
  data = path.read_bytes()
  path.write_bytes({"truncated": data[:len(data) // 2], "garbage": b"\xc1\xff" + bytes(range(99)),
                    "empty": b"", "not_a_checkpoint": b"\x05"}[damage])
  before = _snapshot(tmp_path)
  with pytest.raises(UserError) as e:
    sweep.run(config, tmp_path, scoring=scoring_lib.synthetic_scoring())
  expected = ("is not a jaxdiffattack checkpoint" if damage == "not_a_checkpoint" else
              "is truncated or corrupted")
  _one_line(e.value, str(path), expected, "delete it to restart")
  assert _snapshot(tmp_path) == before
  # The attack job reads its checkpoint through the same function.
  with pytest.raises(UserError, match=expected):
    runs.read_checkpoint(path)


def test_pytorch_pickle_under_a_safetensors_name_is_refused(tiny_sd_dirs, tmp_path, monkeypatch):
  import pickle  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import models  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.models import weights  # pylint: disable=g-import-not-at-top
  sd_dir = shutil.copytree(tiny_sd_dirs[0], tmp_path / "sd")
  path = sd_dir / "unet" / "diffusion_pytorch_model.safetensors"
  torch.save(weights.read_safetensors(path), path)                 # a zip of pickles
  raw = sd_dir / "vae" / "diffusion_pytorch_model.safetensors"
  raw.write_bytes(pickle.dumps({"conv_in.weight": np.zeros(3)}))  # a bare pickle

  def never(*args, **kwargs):
    raise AssertionError("a pickle was loaded")
  monkeypatch.setattr(pickle, "load", never)
  monkeypatch.setattr(pickle, "loads", never)
  monkeypatch.setattr(torch, "load", never)
  for damaged in (path, raw):
    with pytest.raises(weights.CorruptWeightsError) as e:
      if damaged == raw:
        weights.read_safetensors(raw)
      else:
        models.load_stable_diffusion(str(sd_dir))
    _one_line(e.value, str(damaged), "is a PyTorch pickle under a .safetensors name",
              "convert it")


def test_attack_with_an_invalid_utf8_prompt_file_writes_nothing(tiny_sd_dirs, tmp_path,
                                                               tmp_path_factory):
  import tiny_vision  # pylint: disable=g-import-not-at-top
  from attacks_job_test import tiny_config  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.attacks import job  # pylint: disable=g-import-not-at-top
  prompts = tmp_path / "prompts.csv"
  prompts.write_bytes(b"prompt,classname\na red st\xffar,red star\n")
  config = tiny_config(tiny_sd_dirs[1], tiny_vision.build_all_cached(tmp_path_factory), prompts)
  with pytest.raises(UserError) as e:
    job.run(config, tmp_path / "workdir")
  _one_line(e.value, str(prompts), "is not valid UTF-8 (byte 25): save it as UTF-8")
  assert not (tmp_path / "workdir").exists()


def test_nonfinite_as_nan_against_numpy():
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(5, 4, 4, 3)).astype(np.float32)
  images[1, 2, 3, 0] = np.nan
  images[2, 0, 0, 2] = np.inf
  scores = {"margin": rng.normal(size=5).astype(np.float32), "pred": np.arange(5, dtype=np.int32),
            "logits": rng.normal(size=(5, 3)).astype(np.float32)}
  scores["logits"][3, 1] = -np.inf              # a scorer overflow for member 3
  got = jax.tree_util.tree_map(np.asarray, sampler_lib.nonfinite_as_nan(
      jax.tree_util.tree_map(jnp.asarray, scores), jnp.asarray(images)))
  broken = np.array([False, True, True, True, False])
  for name in ("margin", "logits"):
    expected = scores[name].copy()
    expected[broken] = np.nan
    np.testing.assert_array_equal(got[name], expected)
  np.testing.assert_array_equal(got["pred"], scores["pred"])   # integers pass unchanged


def test_nan_from_the_model_is_reported_per_member(tiny_sd_model):
  """NaN seed vectors stand in for a model that overflows on some members: those members' float
  scores are NaN (so "top1_hit" cannot read them as a class), the others are unchanged."""
  sd, params = tiny_sd_model
  scoring = scoring_lib.synthetic_scoring()
  pop = sampler_lib.PopulationSampler(sd, params, sampler_lib.SamplerSettings(num_steps=2),
                                      score_fn=scoring.score_fn, score_params=scoring.params)
  latents = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (4, *sd.latent_shape)))
  cond = np.asarray(text.encode_prompts(sd, params["text_encoder"], ["a"] * 4))
  aux = scoring.aux(labels=np.array([0, 1, 2, 0]))
  clean = pop(latents, cond, cond[0], 1.0, aux=aux).scores
  broken = latents.copy()
  broken[2, 0, 0, 0] = np.nan
  got = pop(broken, cond, cond[0], 1.0, aux=aux).scores
  for name, values in got.items():
    values, reference = np.asarray(values), np.asarray(clean[name])
    if name == "evaluator/pred":
      continue
    assert np.isnan(values[2]).all(), name
    np.testing.assert_allclose(values[[0, 1, 3]], reference[[0, 1, 3]], rtol=1e-6, err_msg=name)


def test_sweep_leaves_nonfinite_members_out_and_counts_them(tiny_sd_dirs, tmp_path):
  """A scorer that yields NaN for every member of class 1 ("blue ball"): members.csv shows NaN
  for each of their metrics; results.csv computes every value over the finite members only and
  counts the others in `nonfinite`."""
  base = scoring_lib.synthetic_scoring()

  def overflowing(params, images, aux):
    scores = dict(base.score_fn(params, images, aux))
    scores["evaluator/clip_score"] = jnp.where(aux["label"] == 1, jnp.nan,
                                               scores["evaluator/clip_score"])
    return scores
  scoring = dataclasses.replace(base, score_fn=overflowing, jitted=jax.jit(overflowing))
  config = _sweep_config(tiny_sd_dirs[1])
  sweep.run(config, tmp_path, scoring=scoring)
  members = io.read_csv(tmp_path / "members.csv")
  metrics = ("top1", "top5", "clip_score")
  for m in members:
    assert all(np.isnan(float(m[k])) for k in metrics) == (m["label"] == "blue ball"), m
  results = io.read_csv(tmp_path / "results.csv")
  assert results
  for r in results:
    cell = [m for m in members if m["shift"] in (r["shift"], "none")
            and (float(m["alpha_c"]), float(m["alpha_s"])) == (float(r["alpha_c"]),
                                                                  float(r["alpha_s"]))
            and r["class"] in ("all", m["label"])]
    values = np.array([float(m[r["metric"]]) for m in cell])
    finite = values[np.isfinite(values)]
    assert (int(r["n"]), int(r["nonfinite"])) == (len(finite), len(values) - len(finite)), r
    if len(finite):
      np.testing.assert_allclose(float(r["value"]), finite.mean(), rtol=1e-5)
    else:
      assert r["value"] == "nan"
  assert "non-finite, left out" in (tmp_path / "report.md").read_text()


_FULL_DISK_SCRIPT = """
import resource, signal, sys
import numpy as np
from jaxdiffattack import runs
from jaxdiffattack.errors import UserError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)           # EFBIG instead of being killed
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
path = sys.argv[1]
runs.save_checkpoint(path, {"x": np.zeros(100)}, "h")            # fits under the limit
try:
  runs.save_checkpoint(path, {"x": np.zeros(100_000)}, "h")      # does not
except UserError as e:
  sys.exit(f"error: {e}")
"""


def test_full_disk_keeps_the_last_good_checkpoint(tmp_path):
  """A real write failure: a 64 KiB file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored, so the write
  fails with EFBIG as a full disk fails with ENOSPC) set inside a subprocess."""
  path = tmp_path / "checkpoint.msgpack"
  proc = subprocess.run([sys.executable, "-c", _FULL_DISK_SCRIPT, str(path)],
                        env=dict(os.environ, PYTHONPATH=str(_ROOT), JAX_PLATFORMS="cpu"),
                        capture_output=True, text=True, timeout=120,
                        check=False)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
  line = proc.stderr.strip().splitlines()[-1]
  assert line.startswith(f"error: could not write {path}: File too large; the last good "
                         f"checkpoint {path} (written "), line
  assert line.endswith(") is intact; free space and rerun to resume"), line
  assert runs.load_checkpoint(path, "h", {"x": np.zeros(1)})["x"].shape == (100,)
  assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.msgpack"]   # no temp file left


def test_full_disk_in_the_middle_of_a_sweep_then_resume(tiny_sd_dirs, tmp_path, monkeypatch):
  """The sweep's 2nd checkpoint write fails with ENOSPC: one line, the 1st checkpoint intact
  and loadable, nothing else left behind; with space again the sweep resumes and finishes."""
  config = _sweep_config(tiny_sd_dirs[1])
  real_replace, writes = os.replace, []

  def replace(src, dst):
    if pathlib.Path(dst).name == "checkpoint.msgpack":
      writes.append(pathlib.Path(dst).read_bytes() if pathlib.Path(dst).exists() else None)
      if len(writes) == 2:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_replace(src, dst)
  monkeypatch.setattr(io.os, "replace", replace)
  with pytest.raises(UserError) as e:
    sweep.run(config, tmp_path, scoring=scoring_lib.synthetic_scoring())
  path = tmp_path / "checkpoint.msgpack"
  _one_line(e.value, f"could not write {path}: No space left on device; the last good "
            f"checkpoint {path} (written ", ") is intact; free space and rerun to resume")
  assert path.read_bytes() == writes[1]           # the 1st checkpoint, as it was written
  assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.msgpack", "config.json"]
  saved = runs.read_checkpoint(path)
  assert int(saved["state"]["done"][config.settings[0].name]) == config.unit
  monkeypatch.setattr(io.os, "replace", real_replace)
  sweep.run(config, tmp_path, scoring=scoring_lib.synthetic_scoring())
  assert len(io.read_csv(tmp_path / "members.csv")) == 24
