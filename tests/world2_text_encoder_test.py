"""World 2's option to train the text tower with the UNet (config.unet.text_encoder_lr, issue #23):
off is the frozen path (checked against a step on precomputed text states), on trains the tower
by the denoising loss, resumes exactly, and exports it as sd/text_encoder (clip/ stays CLIP's)."""
import pathlib
import shutil
import tempfile

from absl.testing import absltest
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffattack import errors
from jaxdiffattack import variants
from jaxdiffattack.models import clip as clip_lib
from jaxdiffattack.models import convert_transformers
from jaxdiffattack.toy import train as toy_train
from jaxdiffattack.world2 import data as data_lib
from jaxdiffattack.world2 import preview
from jaxdiffattack.world2 import train


class _Stop(Exception):
  pass


def _config(text_encoder_lr=0.0):
  config = variants.load_config("train_world2", "smoke")
  config.unet.text_encoder_lr = text_encoder_lr
  return config


def _raw(workdir, name):
  return flax.serialization.msgpack_restore(
      (pathlib.Path(workdir) / "checkpoints" / f"{name}.msgpack").read_bytes())


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _assert_trees_equal(a, b, msg=""):
  la, lb = _leaves(a), _leaves(b)
  assert len(la) == len(lb) and len(la) > 0, msg
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(x, y, err_msg=msg)


class ConfigTest(absltest.TestCase):

  def test_defaults_and_a_negative_rate_is_a_one_line_error(self):
    # The full recipe trains the tower (the frozen one drew no shapes); the smoke one keeps it.
    self.assertEqual(variants.load_config("train_world2").unet.text_encoder_lr, 1e-4)
    self.assertEqual(variants.load_config("train_world2", "smoke").unet.text_encoder_lr, 0.0)
    train.validate(_config(1e-4))
    with self.assertRaisesRegex(errors.ConfigError,
                                "config.unet.text_encoder_lr=-0.001 is invalid") as cm:
      train.validate(_config(-1e-3))
    self.assertNotIn("\n", str(cm.exception))

  def test_split_unet_params(self):
    unet = {"conv_in": {"kernel": np.ones(2)}}
    text = {"text_model": {"w": np.zeros(1)}}
    self.assertIs(train.split_unet_params(unet)[0], unet)
    self.assertIsNone(train.split_unet_params(unet)[1])
    got = train.split_unet_params({"unet": unet, "text_encoder": text})
    self.assertIs(got[0], unet)
    self.assertIs(got[1], text)


@pytest.mark.slow
class TextEncoderTrainingTest(absltest.TestCase):
  """One smoke workdir with vae, clip, vit and resnet trained; each test copies it."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.base = pathlib.Path(tempfile.mkdtemp(prefix="w2text_base_"))
    config = _config()
    config.stages = "vae,clip,vit,resnet"
    train.run(config, cls.base)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.base, ignore_errors=True)
    super().tearDownClass()

  def _workdir(self):
    d = pathlib.Path(tempfile.mkdtemp(prefix="w2text_"))
    self.addCleanup(shutil.rmtree, d, ignore_errors=True)
    shutil.copytree(self.base, d, dirs_exist_ok=True)
    return d

  def _run_unet(self, config, workdir, stop_at=None):
    config.stages = "unet"
    if stop_at is None:
      train.run(config, workdir)
      return

    def stop(name, state):
      if name == "unet" and int(state.step) == stop_at:
        raise _Stop()
    train.CHECKPOINT_HOOK = stop
    try:
      with self.assertRaises(_Stop):
        train.run(config, workdir)
    finally:
      train.CHECKPOINT_HOOK = None

  def test_off_is_the_frozen_path(self):
    config, workdir = _config(), self._workdir()
    self._run_unet(config, workdir, stop_at=2)
    ck = _raw(workdir, "unet")
    # The reference: the frozen step as train_unet built it before the option existed (the text
    # states under stop_gradient inside the jitted step), on the same batches; bit-identical.
    c = config.unet
    unet = train.unet_module(config)
    vae, vae_params, scaling = train.load_vae(config, workdir)
    clip, tok, _ = train.load_clip(config, workdir)
    text_model = clip_lib.CLIPTextModel(clip.module.config.text)
    text_params = {"text_model": clip.params["text_model"]}
    d = train.make_data(config, workdir)
    mean, std = train.cached_latents(config, workdir, vae, vae_params, d.train.images)
    state, opt = toy_train.unet_init_state("ref", config, c, unet)
    init_keys = set(state.params)

    def loss_fn(params, z0, zt, t, noise, cond):
      del z0
      return jnp.mean((unet.apply({"params": params}, zt, t, cond) - noise) ** 2)

    def encode_text(text_params, ids):
      return jax.lax.stop_gradient(text_model.apply({"params": text_params}, ids
                                                    ).last_hidden_state)

    step_fn = toy_train.unet_train_step(config, c, opt, loss_fn, scaling, encode_text)
    for step in range(2):
      rng = train._rng(config, "unet", step)  # pylint: disable=protected-access
      idx = data_lib.sample_batch(rng, d.train, c.batch_size)
      texts, _ = data_lib.draw_captions(rng, d.train, idx)
      texts = ["" if rng.random() < c.caption_dropout else t for t in texts]
      ids = train.tokenize(tok, texts, train.MODEL_MAX_LENGTH)
      state, _ = step_fn(state, (mean[idx], std[idx], ids), text_params)
    self.assertEqual(set(ck), {"step", "params", "opt_state", "ema"})
    self.assertEqual(set(ck["params"]), init_keys)  # The UNet's params alone, as before.
    self.assertEqual(int(ck["step"]), 2)
    for name, ref in (("params", state.params), ("opt_state", state.opt_state),
                      ("ema", state.ema)):
      _assert_trees_equal(ck[name], flax.serialization.to_state_dict(ref), name)

  def test_on_trains_resumes_exactly_and_exports_the_trained_tower(self):
    config = _config(1e-3)
    full, part = self._workdir(), self._workdir()
    self._run_unet(config, full)
    self._run_unet(config, part, stop_at=2)
    self.assertEqual(int(_raw(part, "unet")["step"]), 2)
    self._run_unet(config, part)
    a, b = _raw(full, "unet"), _raw(part, "unet")
    self.assertEqual(int(a["step"]), config.unet.num_steps)
    _assert_trees_equal(a, b, "resumed != uninterrupted")

    clip_text = {"text_model": _raw(full, "clip")["params"]["text_model"]}
    for key in ("params", "ema"):
      self.assertEqual(set(a[key]), {"unet", "text_encoder"})
      self.assertEqual(jax.tree_util.tree_structure(a[key]["text_encoder"]),
                       jax.tree_util.tree_structure(clip_text))
      changed = [not np.array_equal(x, y)
                 for x, y in zip(_leaves(a[key]["text_encoder"]), _leaves(clip_text))]
      self.assertTrue(any(changed), key)
    # The loss gradient reaches the tower: Adam's first moment (a decaying sum of the clipped
    # gradients) of the token embedding is non-zero, and only at the rows of tokens in captions.
    flat = flax.traverse_util.flatten_dict(a["opt_state"], sep="/")
    mu = [v for k, v in flat.items() if "/mu/text_encoder/" in f"/{k}/"
          and k.endswith("token_embedding/embedding")]
    self.assertLen(mu, 1)
    used = np.abs(mu[0]).sum(-1) > 0
    self.assertTrue(used.any())
    self.assertLess(used.sum(), len(used))  # Tokens no caption had get no gradient.
    bos = train._tokenizer(full)[0].bos_token_id  # pylint: disable=protected-access
    self.assertTrue(used[bos])

    # Export: sd/text_encoder = the unet checkpoint's EMA text tower; clip/ = the CLIP stage's.
    # The tune stages are stood in for by copies of the stages they tune (export reads
    # vae_tune's, clip_tune's and robust's checkpoints; their training is tested elsewhere).
    for tuned, src in (("vae_tune", "vae"), ("clip_tune", "clip"), ("robust", "resnet")):
      shutil.copy(full / "checkpoints" / f"{src}.msgpack", full / "checkpoints" /
                  f"{tuned}.msgpack")
      shutil.copy(train.stage_file(full, src), train.stage_file(full, tuned))
    train.export(config, full)
    out = full / "export"
    prev = full.parent / (full.name + "_preview")
    self.addCleanup(shutil.rmtree, prev, ignore_errors=True)
    preview.preview_export(config, full, prev)
    from jaxdiffattack import models  # pylint: disable=g-import-not-at-top
    for export_dir in (out, prev):
      _, params = models.load_stable_diffusion(str(export_dir / "sd"))
      _assert_trees_equal(params["text_encoder"]["text_model"],
                          a["ema"]["text_encoder"]["text_model"], str(export_dir))
      judge = convert_transformers.load(export_dir / "clip", "clip")
      _assert_trees_equal(judge.params["text_model"], clip_text["text_model"], str(export_dir))


if __name__ == "__main__":
  absltest.main()
