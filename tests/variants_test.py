"""variants.parse (strict config variants) and variants.train_stage (a training stage's block)."""

import importlib.util
import pathlib

import pytest

from jaxdiffattack import variants
from jaxdiffattack.toy import train as toy_train

_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _config(name, arg=None):
  path = _ROOT / "configs" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_parse_keeps_order_and_rejects_an_unknown_variant_by_file():
  assert variants.parse("b,a", ("a", "b"), "/x/configs/f.py") == ["b", "a"]
  assert variants.parse(None, ("a",), "f.py") == []
  with pytest.raises(ValueError, match=r"unknown variant 'c' in configs/f.py:a,c; use \('a',\)"):
    variants.parse("a,c", ("a",), "/x/configs/f.py")


def test_train_stage_defaults_overrides_and_the_required_decay():
  c = variants.train_stage(10, 4, 1e-3, final_lr_fraction=0.5, warmup_steps=2, kl_weight=0.1)
  assert c.to_dict() == dict(num_steps=10, batch_size=4, lr=1e-3, warmup_steps=2,
                             weight_decay=1e-4, final_lr_fraction=0.5, cooldown_steps=0,
                             log_every=50, ckpt_every=250, kl_weight=0.1)
  with pytest.raises(TypeError, match="final_lr_fraction"):
    variants.train_stage(10, 4, 1e-3)  # pylint: disable=missing-kwoa
  # The block is what the training loop's schedule reads: warm-up to lr, decay to lr * 0.5.
  sched = toy_train.lr_schedule(c)
  assert float(sched(2)) == pytest.approx(1e-3)
  assert float(sched(10)) == pytest.approx(0.5e-3)


@pytest.mark.parametrize("name,stage,fraction", [
    ("train_toy", "vae", 0.05), ("train_toy", "resnet", 0.05), ("train_toy", "vit", 1.0),
    ("train_world2", "vae", 1.0), ("train_world2", "evaluator", 1.0)])
def test_training_configs_keep_their_decay(name, stage, fraction):
  """The toy's stages decay to 5 % unless set to 1.0; world 2's are constant (WSD)."""
  assert _config(name)[stage].final_lr_fraction == fraction
  assert _config(name, "smoke")[stage].final_lr_fraction == fraction
