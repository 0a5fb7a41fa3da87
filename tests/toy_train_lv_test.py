"""The learned-variance toy generator's training (jaxdiffattack.toy.train_lv) on tiny configs."""
import dataclasses
import filecmp
import json
import pathlib
import shutil
import tempfile

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffattack import ddpm
from jaxdiffattack import models
from jaxdiffattack import schedulers
from jaxdiffattack import toy
from jaxdiffattack.models import hub
from jaxdiffattack.toy import train
from jaxdiffattack.models import unet as unet_lib
from jaxdiffattack.toy import train_lv
from toy_train_test import _load_config  # configs/train_toy.py's get_config


class HybridTrainingStepTest(absltest.TestCase):

  def test_the_training_step_decreases_the_hybrid_loss(self):
    config = _load_config("learned_variance,smoke")
    c = config.unet
    c.update(num_steps=60, warmup_steps=1, cooldown_steps=0, lr=2e-3)
    fixed = train.unet_module(config)
    unet = fixed.clone(config=dataclasses.replace(fixed.config, sample_size=4, out_channels=8,
                                                  cross_attention_dim=16))
    params = jax.jit(unet.init_weights)(jax.random.PRNGKey(0))
    tables = ddpm.train_tables(np.cumprod(1 - train.sd_betas(config)))
    loss_fn = train_lv.hybrid_loss_fn(unet, tables, 0.001)
    opt = train._optimizer(c)  # pylint: disable=protected-access
    rng = np.random.default_rng(0)
    bank = jnp.asarray(rng.normal(size=(3, 8, 16)), jnp.float32)
    step_fn = train.unet_train_step(config, c, opt, loss_fn, 1.0, bank)
    batch = (rng.normal(size=(8, 4, 4, 4)).astype(np.float32), np.full((8, 4, 4, 4), 0.01,
             np.float32), np.arange(8, dtype=np.int32) % 3)
    # A fixed evaluation: the batch's latents at 8 noise levels spanning [0, T).
    t = jnp.asarray(np.linspace(0, 999, 8).astype(np.int32))
    noise = jnp.asarray(rng.normal(size=(8, 4, 4, 4)), jnp.float32)
    z0 = jnp.asarray(batch[0])
    a = jnp.asarray(tables.sqrt_abar)[t][:, None, None, None]
    zt = a * z0 + jnp.sqrt(1 - a ** 2) * noise
    evaluate = jax.jit(lambda p: loss_fn(p, z0, zt, t, noise, bank[batch[2]]))
    state = train.TrainState(jnp.array(0), params, opt.init(params), params)
    before = float(evaluate(state.params))
    losses = []
    for _ in range(c.num_steps):
      state, loss = step_fn(state, batch)
      losses.append(float(loss))
    after = float(evaluate(state.params))
    self.assertTrue(np.isfinite(losses).all())
    self.assertLess(after, 0.7 * before)
    self.assertLess(np.mean(losses[-10:]), np.mean(losses[:10]))


@pytest.mark.slow
class SmokeRunTest(absltest.TestCase):
  """One tiny run end to end, and the same run interrupted after its step-2 checkpoint."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.workdir = pathlib.Path(tempfile.mkdtemp(prefix="toy_lv_smoke_"))
    cls.config = _load_config("learned_variance,smoke")
    cls.metrics = train_lv.run(cls.config, cls.workdir / "a")

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.workdir, ignore_errors=True)
    super().tearDownClass()

  def test_export_is_a_learned_variance_pipeline(self):
    out = self.workdir / "a" / "export" / "sd_lv"
    self.assertEqual(self.metrics["export"], str(out))
    self.assertEqual(self.metrics["unet_step"], 3)
    sd, params = models.load_stable_diffusion(str(out))
    base, _ = models.load_stable_diffusion("toy")
    self.assertEqual(sd.unet.config.out_channels, 2 * sd.latent_channels)
    self.assertEqual(sd.unet.config.block_out_channels, (32,))
    self.assertEqual(sd.latent_shape, base.latent_shape)
    self.assertEqual(sd.scaling_factor, base.scaling_factor)
    for sub in train_lv.SHARED_SUBFOLDERS:
      cmp = filecmp.dircmp(out / sub, base.path / sub)
      self.assertEqual((cmp.left_only, cmp.right_only, cmp.diff_files), ([], [], []), sub)
    self.assertEqual(json.loads((out / "model_index.json").read_text())["scheduler"],
                     ["diffusers", "DDPMScheduler"])
    self.assertEqual(sd.scheduler_config["variance_type"], "learned_range")
    ddpm_step = schedulers.make_scheduler("ddpm", sd.scheduler_config, 5)
    self.assertEqual(ddpm_step.variance_type, "learned_range")
    self.assertIsNone(ddpm_step.clip_range)
    # The same file drives the deterministic samplers, as for the fixed-variance pipeline.
    ddim = schedulers.make_scheduler("ddim", sd.scheduler_config, 5)
    base_ddim = schedulers.make_scheduler("ddim", base.scheduler_config, 5)
    np.testing.assert_array_equal(ddim.alpha_prev, base_ddim.alpha_prev)
    # One UNet call gives (ε, v); the learned step turns them into a finite sample.
    x = jnp.ones((1,) + sd.latent_shape)
    cond = jnp.zeros((1, sd.max_length, sd.text_dim))
    out = sd.unet.apply({"params": params["unet"]}, x, 500, cond)
    self.assertEqual(out.shape, (1, 8) + sd.latent_shape[1:])
    prev, _, _ = ddpm_step.step((), jnp.int32(0), out, x, x)
    self.assertTrue(np.isfinite(np.asarray(prev)).all())

  def test_resumed_run_equals_the_uninterrupted_one(self):
    config = self.config.copy_and_resolve_references()
    config.learned_variance.export_every = 2  # on_checkpoint exports after the step-2 write
    workdir = self.workdir / "b"
    real_export = train_lv.export

    def killed(*args, **kwargs):
      del args, kwargs
      raise KeyboardInterrupt("killed after the step-2 checkpoint")

    train_lv.export = killed
    try:
      with self.assertRaises(KeyboardInterrupt):
        train_lv.run(config, workdir)
    finally:
      train_lv.export = real_export
    ckpt = workdir / "checkpoints" / "unet_lv.msgpack"
    self.assertFalse((workdir / "export").exists())
    train_lv.run(config, workdir)
    self.assertEqual(ckpt.read_bytes(),
                     (self.workdir / "a" / "checkpoints" / "unet_lv.msgpack").read_bytes())


class ShippedLearnedVarianceTest(absltest.TestCase):
  """The shipped sd_lv is the fixed-variance pipeline with a (ε, v) UNet and a DDPM scheduler."""

  def test_layout(self):
    read = lambda path: json.loads(path.read_text())
    # The two files differ in spelling (sd/ was written by diffusers' Flax export with every
    # default key, sd_lv/ by the project's writer with the keys it implements): compare what
    # the project's UNet reads from them.
    lv, fixed = (unet_lib.unet_config(read(d / "unet" / "config.json"), d)
                 for d in (toy.SD_LV_DIR, toy.SD_DIR))
    self.assertEqual(lv.out_channels, 2 * fixed.out_channels)
    self.assertEqual(dataclasses.replace(lv, out_channels=fixed.out_channels), fixed)
    for sub in train_lv.SHARED_SUBFOLDERS:
      cmp = filecmp.dircmp(toy.SD_LV_DIR / sub, toy.SD_DIR / sub)
      self.assertEqual((cmp.left_only, cmp.right_only, cmp.diff_files), ([], [], []), sub)
    scheduler = read(toy.SD_LV_DIR / "scheduler" / "scheduler_config.json")
    self.assertEqual(scheduler.pop("variance_type"), "learned_range")
    self.assertEqual(scheduler.pop("_class_name"), "DDPMScheduler")
    fixed_scheduler = read(toy.SD_DIR / "scheduler" / "scheduler_config.json")
    fixed_scheduler.pop("_class_name")
    self.assertEqual(scheduler, fixed_scheduler)
    self.assertEqual(hub.resolve("toy_lv", "sd"), toy.SD_LV_DIR)


class ConfigAndAliasTest(absltest.TestCase):

  def test_config_variants(self):
    self.assertEqual(_load_config().job, "all")
    config = _load_config("learned_variance")
    self.assertEqual(config.job, "learned_variance")
    self.assertEqual(config.learned_variance.lambda_vlb, 0.001)
    # The learned-variance run has the fixed-variance UNet's budget: it trains config.unet.
    self.assertEqual(config.unet.to_dict(), _load_config().unet.to_dict())
    self.assertEqual(_load_config("learned_variance,smoke").unet.num_steps, 3)
    with self.assertRaisesRegex(ValueError, "nonsense"):
      _load_config("learned_variance,nonsense")

  def test_toy_lv_alias(self):
    self.assertEqual(hub.resolve("toy_lv", "vit"), hub.resolve("toy", "vit"))
    self.assertEqual(hub.resolve("toy_lv", "sd"), hub.TOY_ROOT / "sd_lv")   # shipped


if __name__ == "__main__":
  absltest.main()
