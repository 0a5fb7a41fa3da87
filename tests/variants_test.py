"""variants.parse (strict config variants), load_config and train_stage (a training stage's block)."""

import pytest

from jaxdiffattack import variants
from jaxdiffattack.toy import train as toy_train

_config = variants.load_config


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


def test_load_config_by_name_or_path_with_variants():
  by_name = variants.load_config("train_world2", "smoke")
  by_path = variants.load_config(variants.CONFIGS_DIR / "train_world2.py", "smoke")
  assert by_name.to_dict() == by_path.to_dict()
  assert by_name.data.num_train == 48 and variants.load_config("train_world2").data.num_train \
      == 60000
  assert variants.load_config("train_world2", "").to_dict() == \
      variants.load_config("train_world2").to_dict()
  with pytest.raises(FileNotFoundError, match=r"configs/no_such\.py does not exist; name one of "
                                              r"\[.*'train_world2'"):
    variants.load_config("no_such")
  with pytest.raises(ValueError, match="unknown variant 'tiny'"):
    variants.load_config("train_toy", "tiny")
