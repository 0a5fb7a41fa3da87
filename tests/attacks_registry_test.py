"""The attack registry (jaxdiffattack.attacks.registry.ATTACKS): a dummy attack registered in the
test runs through the job (its steps, checkpoint, readout and budget reach the outputs); the
random-substitution attack of its own (config.attack.name="random"); one-line errors."""

import json
import types
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attacks_job_test import prompt_file  # noqa: F401  pylint: disable=unused-import  # fixture
from attacks_job_test import tiny_config
from attacks_job_test import vision_dirs  # noqa: F401  pylint: disable=unused-import  # fixture
from jaxdiffattack import io
from jaxdiffattack.attacks import atm
from jaxdiffattack.attacks import job
from jaxdiffattack.attacks import random_substitution
from jaxdiffattack.attacks import registry
from jaxdiffattack.errors import UserError


class _State(NamedTuple):
  steps: jax.Array       # [P] float32
  iteration: jax.Array   # [] int32


class _Metrics(NamedTuple):
  loss: jax.Array        # [n, P]


def _keep_attack(seen: dict):
  """A registry entry whose attack keeps every prompt as it is (loss = iterations done)."""

  class Keep:
    iterations = 3
    metrics = ("loss",)

    def compile(self, mesh, steps_per_call):
      seen["steps_per_call"] = steps_per_call
      init = lambda ids: _State(jnp.zeros(ids.shape[:1], jnp.float32), jnp.zeros((), jnp.int32))

      def step(params, state, prompts, key):
        del params, prompts, key
        new = _State(state.steps + 1.0, state.iteration + 1)
        return new, _Metrics(new.steps[None])
      return atm.Compiled(init=init, step=jax.jit(step))

    def readout(self, key, state, prompts, sample_index):
      seen["final_steps"] = np.asarray(state.steps).tolist()
      ids = np.asarray(prompts.ids)
      return np.repeat(ids[:, None], len(sample_index), axis=1)

  return types.SimpleNamespace(
      validate=lambda config: seen.setdefault("validated", config.attack.name),
      build=lambda *args: Keep(), evaluations=lambda config: 7)


@pytest.mark.slow
def test_a_registered_dummy_attack_runs_through_the_job(tiny_sd_dirs, vision_dirs, prompt_file,
                                                        tmp_path, monkeypatch):
  seen = {}
  monkeypatch.setitem(registry.ATTACKS, "keep", _keep_attack(seen))
  config = tiny_config(tiny_sd_dirs[1], vision_dirs, prompt_file)
  config.attack.name = "keep"
  config.checkpoint_every = 2          # a checkpoint at iterations 2 and 3
  out = job.run(config, tmp_path)
  assert seen["validated"] == "keep" and seen["steps_per_call"] == 1
  assert seen["final_steps"][0] == 3.0           # the readout got the final state
  rows = io.read_jsonl(tmp_path / "results.jsonl")
  attacked = [r for r in rows if r["attacked"]]
  assert len(attacked) == 3 and [r["index"] for r in attacked] == [0, 1, 3]
  for r in attacked:
    assert r["loss_curve"] == [1.0, 2.0, 3.0] and r["curves"] == {}
    assert r["tokens_changed_mean"] == 0.0 and r["samples"] == 3
    assert set(r["successful_prompts"]) <= {r["prompt"]}      # the prompt, unchanged
    assert r["baseline"]["tokens_changed_mean"] == 0.0
  assert out["summary"]["budget"] == {"attack": "keep", "attack_evaluations_per_prompt": 7,
                                      "samples_per_prompt": 3, "baseline_samples_per_prompt": 3}
  assert json.loads((tmp_path / "config.json").read_text())["attack"]["name"] == "keep"


@pytest.mark.slow
def test_random_attack_of_its_own(tiny_sd_dirs, vision_dirs, prompt_file, tmp_path):
  config = tiny_config(tiny_sd_dirs[1], vision_dirs, prompt_file)
  config.attack.name = "random"
  config.baseline = ""
  out = job.run(config, tmp_path)
  rows = io.read_jsonl(tmp_path / "results.jsonl")
  attacked = [r for r in rows if r["attacked"]]
  assert len(attacked) == 3 and not (tmp_path / "checkpoint.msgpack").exists()  # no iterations
  for r in attacked:
    assert r["loss_curve"] == [] and r["samples"] == 3 and "baseline" not in r
    assert r["tokens_changed_mean"] >= 1.0
  budget = out["summary"]["budget"]
  assert budget == {"attack": "random", "attack_evaluations_per_prompt": 0,
                    "samples_per_prompt": 3, "baseline_samples_per_prompt": 0}
  timing = json.loads((tmp_path / "timing.json").read_text())
  assert timing["short"]["prompt_iterations"] == 0 and timing["short"]["images"] == 3 * 3
  assert (tmp_path / "plots" / "loss_curves.png").is_file()


def test_random_readout_changes_a_uniform_number_of_free_positions():
  p, length, samples = 2, 12, 4000
  ids = np.tile(np.arange(length, dtype=np.int32), (p, 1))
  free = np.zeros((p, length), bool)
  free[0, 2:6] = True                 # 4 free positions
  free[1, 1:2] = True                 # 1 free position
  prompts = atm.Prompts(np.array([5, 9], np.uint32), ids, free, np.zeros(p, np.int32),
                        np.zeros((p, length, 1)), np.zeros((p, length)))
  attack = random_substitution.build(None, None, None, None, np.arange(100, 200))
  out = np.asarray(attack.readout(jax.random.PRNGKey(1), None, prompts, np.arange(samples)))
  changed = (out != ids[:, None]).sum(-1)                                    # [P, S]
  assert not (out != ids[:, None])[~np.broadcast_to(free[:, None], out.shape)].any()
  assert (changed[1] == 1).all()
  counts = np.bincount(changed[0], minlength=5)
  assert counts[0] == 0
  # Uniform over 1..4: each count within 4 standard deviations of samples / 4.
  sd = np.sqrt(samples * 0.25 * 0.75)
  assert np.all(np.abs(counts[1:] - samples / 4) < 4 * sd), counts
  # Keyed by prompt index and sample: a prompt's draws do not depend on its batch.
  alone = np.asarray(attack.readout(jax.random.PRNGKey(1), None,
                                    atm.Prompts(*(np.asarray(a)[:1] for a in prompts)),
                                    np.arange(samples)))
  np.testing.assert_array_equal(alone[0], out[0])


@pytest.mark.parametrize("name, baseline, message", [
    ("gcg", "", r"config\.attack\.name='gcg' is invalid: use one of \['atm', 'random'\]"),
    ("random", "random_substitution", r"config\.baseline='random_substitution' is invalid"),
])
def test_bad_attack_names_are_one_line_errors(name, baseline, message, tmp_path):
  import atm as atm_config  # pylint: disable=g-import-not-at-top
  config = atm_config.get_config("toy,smoke")
  config.attack.name = name
  config.baseline = baseline
  with pytest.raises(UserError, match=message) as e:
    job.run(config, tmp_path)
  assert "\n" not in str(e.value) and not any(tmp_path.iterdir())


@pytest.mark.slow
def test_fixed_noise_evaluation_reproduces_the_clean_check(tiny_sd_dirs, vision_dirs,
                                                           prompt_file, tmp_path, monkeypatch):
  """eval_noise="both" with the dummy attack that keeps every prompt: on the clean check's noise
  every sample is the clean prompt on its clean noise — read correctly by the clean check, so no
  sample succeeds (fixed_noise); on fresh noises the same prompts are judged again (attack)."""
  monkeypatch.setitem(registry.ATTACKS, "keep", _keep_attack({}))
  config = tiny_config(tiny_sd_dirs[1], vision_dirs, prompt_file)
  config.attack.name = "keep"
  config.eval_noise = "both"
  out = job.run(config, tmp_path)
  rows = [r for r in io.read_jsonl(tmp_path / "results.jsonl") if r["attacked"]]
  assert len(rows) == 3
  for r in rows:
    fixed = r["fixed_noise"]
    assert fixed["successful_samples"] == 0 and fixed["judges"]["attack"]["failures"] == 0
    assert fixed["tokens_changed_mean"] == r["tokens_changed_mean"] == 0.0
  summary = out["summary"]
  assert summary["fixed_noise"]["asr_short"] == {
      "rate": 0.0, "successes": 0, "attacked": 3, "skipped_clean_failures": 1,
      "ci95": summary["fixed_noise"]["asr_short"]["ci95"]}
  assert summary["fixed_noise"]["sample_success_rate"]["short"]["samples"] == 9
  timing = json.loads((tmp_path / "timing.json").read_text())
  assert timing["short"]["images"] == 3 * 3 * 3        # attack, baseline, fixed noise
  assert "clean check's noise" in (tmp_path / "report.md").read_text()
