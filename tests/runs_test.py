"""What every job's run shares: the config hash without run-shape keys, checkpoints by field name
(round trip, other config refused, old npz format refused), progress lines."""

import flax.struct
import ml_collections
import numpy as np
import pytest

from jaxdiffattack import runs
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.errors import UserError


@flax.struct.dataclass
class Inner:
  step: np.ndarray


@flax.struct.dataclass
class State:
  values: np.ndarray
  by_name: dict
  inner: Inner


def _config(**overrides):
  c = ml_collections.ConfigDict({"seed": 0, "num_steps": 20, "microbatch": None, "unit": 64,
                                 "report_only": False, "nested": {"a": 1}})
  c.update(overrides)
  return c


def test_config_hash_ignores_exactly_the_run_shape_keys():
  base = runs.config_hash(_config())
  assert runs.config_hash(_config(microbatch=4, unit=7, report_only=True)) == base
  assert runs.config_hash(_config(num_steps=21)) != base
  assert runs.config_hash(_config(nested={"a": 2})) != base
  assert {"microbatch", "unit", "checkpoint_every", "report_only"} <= set(runs.RUN_SHAPE_KEYS)


def test_checkpoint_round_trip_by_field_name(tmp_path):
  template = State(np.zeros(3), {}, Inner(np.array(0)))
  state = State(np.arange(3.0), {"a/b": np.ones((2, 2), bool), "c": np.array([7])},
                Inner(np.array(5)))
  path = tmp_path / "ckpt.msgpack"
  assert runs.load_checkpoint(path, "h", template) is None
  runs.save_checkpoint(path, state, "h")
  got = runs.load_checkpoint(path, "h", template)
  assert isinstance(got, State) and isinstance(got.inner, Inner)
  assert set(got.by_name) == {"a/b", "c"}      # keys that appeared during the run come back
  np.testing.assert_array_equal(got.values, state.values)
  np.testing.assert_array_equal(got.by_name["a/b"], state.by_name["a/b"])
  assert int(got.inner.step) == 5
  got.values[0] = 9.0                           # writable copies
  with pytest.raises(ConfigError, match="holds a run with a different config"):
    runs.load_checkpoint(path, "other", template)


def test_old_npz_checkpoint_is_refused_in_one_line(tmp_path):
  np.savez(tmp_path / "checkpoint.npz", generation=np.array(3))
  with pytest.raises(UserError) as e:
    runs.load_checkpoint(tmp_path / "checkpoint.msgpack", "h", State(None, {}, Inner(None)))
  assert "old npz format" in str(e.value) and "\n" not in str(e.value)


def test_progress_logs_pace_and_eta(caplog, monkeypatch):
  clock = iter([100.0, 110.0])
  monkeypatch.setattr(runs.time, "perf_counter", lambda: next(clock))
  progress = runs.Progress("job", total=30, done=10, unit="members")
  with caplog.at_level("INFO"):
    progress.log(15, "extra")
  assert "job 15/30 members (50.0%)  0.50 members/s  extra  elapsed 10s  ETA 30s" in caplog.text
