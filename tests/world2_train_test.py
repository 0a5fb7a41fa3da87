"""World 2's training pipeline (jaxdiffattack.world2.train, world2.data): the shared data
shards, caption targets, the stage waits, one-line config errors, resume == uninterrupted and
the smoke run end to end with a loadable export (the robust stage's own checks:
tests/world2_robust_test.py)."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from absl.testing import absltest
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffattack import errors
from jaxdiffattack import variants
from jaxdiffattack.world2 import captions
from jaxdiffattack.world2 import data
from jaxdiffattack.world2 import render
from jaxdiffattack.world2 import scene
from jaxdiffattack.world2 import train

_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_config(arg=None):
  return variants.load_config("train_world2", arg)


def _tmp(test, prefix):
  d = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
  test.addCleanup(shutil.rmtree, d, ignore_errors=True)
  return d


class ConfigTest(absltest.TestCase):

  def test_full_config_is_the_model_card_plan(self):
    c = _load_config()
    self.assertEqual(c.data.image_size, 64)
    self.assertEqual(tuple(c.vae.block_out_channels), (16, 32, 64, 64))
    self.assertEqual(c.vae.latent_channels, 16)
    self.assertEqual(train.latent_size(c), 8)
    self.assertEqual(tuple(c.unet.block_out_channels), (64, 128))
    self.assertEqual((c.clip.text_width, c.clip.text_layers, c.clip.patch_size), (128, 4, 8))
    train.validate(c)
    self.assertEqual(train.parse_stages(_with(c, stages="vae, unet")), ["vae", "unet"])
    self.assertEqual(train.parse_stages(c), list(train.ALL_STAGES))
    # "all" leaves out the evaluator when config.evaluator.arch names no architecture.
    no_eval = _with(c)
    no_eval.evaluator.arch = ""
    self.assertEqual(train.parse_stages(no_eval),
                     [s for s in train.ALL_STAGES if s != "evaluator"])
    from jaxdiffattack.models import regnet  # pylint: disable=g-import-not-at-top
    module, kind = train.CLASSIFIERS[c.evaluator.arch](c, c.evaluator)
    self.assertEqual(kind, "regnet")
    self.assertEqual(module.config, regnet.WORLD2_EVALUATOR)
    f4 = _load_config("f4")
    self.assertEqual(train.latent_size(f4), 16)
    unet = train.unet_module(f4).config
    self.assertEqual((unet.sample_size, unet.in_channels, unet.block_out_channels),
                     (16, 4, (32, 64, 128)))
    self.assertEqual(unet.down_block_types,
                     ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"))
    self.assertEqual(unet.up_block_types,
                     ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
    self.assertEqual(train.unet_module(_load_config("f4,smoke")).config.down_block_types,
                     ("CrossAttnDownBlock2D",))
    f4.unet.down_block_types = ("DownBlock2D", "CrossAttnDownBlock2D")
    with self.assertRaisesRegex(errors.ConfigError, "config.unet.down_block_types=.*give 3 "
                                "entries"):
      train.unet_module(f4)

  def test_bad_stages_are_one_line_errors(self):
    c = _load_config()
    for stages, match in (("vae,bogus", "config.stages='vae,bogus' is invalid"),
                          ("", "config.stages='' is invalid"),
                          ("vae,vae", "names a stage twice"),
                          ("evaluator", r"config.evaluator.arch='vgg' is invalid")):
      bad = _with(c, stages=stages)
      bad.evaluator.arch = "vgg"
      with self.assertRaisesRegex(errors.ConfigError, match) as cm:
        train.parse_stages(bad)
      self.assertNotIn("\n", str(cm.exception))

  def test_bad_sizes_are_one_line_errors(self):
    c = _load_config()
    c.data.image_size = 60
    with self.assertRaisesRegex(errors.ConfigError, "config.data.image_size=60 is invalid"):
      train.validate(c)
    c = _load_config()
    c.clip.patch_size = 7
    with self.assertRaisesRegex(errors.ConfigError, "config.clip.patch_size=7"):
      train.validate(c)
    with self.assertRaisesRegex(ValueError, "unknown variant 'tiny'"):
      _load_config("tiny")

  def test_data_mismatch_is_a_one_line_error(self):
    workdir = _tmp(self, "w2data_")
    data.ensure_split(workdir, "test", 4, 4, 16, 0)
    with self.assertRaisesRegex(errors.UserError, "holds 4 test scenes .* asks 4 of"):
      data.load_split(workdir, "test", 1, 4, 32)


def _with(config, **kw):
  c = config.copy_and_resolve_references()
  c.update(kw)
  return c


class DataTest(absltest.TestCase):

  def test_shards_hold_the_scenes_and_their_specs(self):
    workdir = _tmp(self, "w2data_")
    split = data.ensure_split(workdir, "train", 10, 4, 16, seed=3)
    self.assertLen(list((workdir / "data").glob("train_*.npz")), 3)
    self.assertEmpty(list((workdir / "data").glob("*.claim")))
    specs = scene.sample_scenes("train", 0, 10, seed=3)
    np.testing.assert_array_equal(split.images, render.render_batch(specs, 16))
    for i, s in enumerate(specs):
      got = split.spec(i)
      self.assertEqual(got.groups, s.groups)
      self.assertEqual(got.relation, s.relation)
      self.assertEqual(got.background.kind, s.background.kind)
      self.assertEqual(got.layout, s.layout)
      # A caption drawn from the stored spec is the caption of the full spec.
      self.assertEqual(captions.caption(got, np.random.default_rng(i)),
                       captions.caption(s, np.random.default_rng(i)))
    with np.load(workdir / "data" / "train_00000.npz", allow_pickle=False) as z:
      self.assertEqual(set(z.files), set(data.Split._fields))

  def test_caption_matches_is_captions_consistent(self):
    split = data.Split(**data.render_shard("train", 0, 120, 8, 0))
    full = scene.sample_scenes("train", 0, 120)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 120, 120)
    _, facts = data.draw_captions(rng, split, idx)
    got = data.caption_matches(facts, split, idx)
    want = np.array([[captions.consistent(f, full[j]) for j in idx] for f in facts])
    np.testing.assert_array_equal(got, want)
    self.assertTrue(np.diag(got).all())
    self.assertGreater(got.sum(), len(idx))  # Some captions are true of other scenes too.

  def test_soft_targets(self):
    split = data.Split(**data.render_shard("train", 0, 200, 8, 0))
    idx = np.arange(200)
    t = data.soft_targets(split, idx, scene.NUM_CLASSES)
    np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-6)
    for i in range(200):
      s = scene.scene("train", i)
      want = np.zeros(scene.NUM_CLASSES)
      for o in s.objects:
        want[o.cls] += 1 / len(s.objects)
      np.testing.assert_allclose(t[i], want, rtol=1e-6)
    rng = np.random.default_rng(0)
    b = data.sample_batch(rng, split, 50, single_fraction=0.6)
    self.assertEqual(int(split.single[b].sum()), 30)

  def test_hue_groups_share_the_first_hue_and_the_group_count(self):
    split = data.Split(**data.render_shard("train", 0, 200, 8, 0))
    specs = scene.sample_scenes("train", 0, 200)
    b = data.sample_hue_groups(np.random.default_rng(3), split, 64, 4)
    self.assertEqual(b.shape, (64,))
    for g in b.reshape(16, 4):
      keys = {(scene.class_hue(specs[i].groups[0].cls), len(specs[i].groups)) for i in g}
      self.assertLen(keys, 1)
    # Within groups the shapes differ (that is what the groups are for), and anchors vary.
    shapes = [len({scene.class_shape(specs[i].groups[0].cls) for i in g})
              for g in b.reshape(16, 4)]
    self.assertGreater(np.mean(shapes), 2.0)
    self.assertGreater(len({specs[i].groups[0].cls for i in b[::4]}), 8)
    # group 1 is the uniform batch, unchanged (runs made before the groups resume exactly).
    np.testing.assert_array_equal(
        data.sample_hue_groups(np.random.default_rng(5), split, 32, 1),
        data.sample_batch(np.random.default_rng(5), split, 32))
    with self.assertRaisesRegex(errors.UserError, "hue group 5 must be >= 1 and divide the "
                                "batch 64"):
      data.sample_hue_groups(np.random.default_rng(0), split, 64, 5)

  def test_two_processes_render_each_shard_once(self):
    workdir = _tmp(self, "w2share_")
    code = ("import sys; from absl import logging; logging.set_verbosity('info');"
            "from jaxdiffattack.world2 import data;"
            "s = data.ensure_split(sys.argv[1], 'train', 24, 3, 12, 0, poll_s=0.1);"
            "print('N', len(s), s.images.sum())")
    env = dict(os.environ, PYTHONPATH=str(_ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(workdir)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
      self.assertEqual(p.returncode, 0, err)
    totals = {out.split()[-1] for out, _ in outs}
    self.assertLen(totals, 1)  # Both loaded the same data.
    written = sum(err.count("shard ") for _, err in outs)
    self.assertEqual(written, 8)  # 8 shards, each rendered by exactly one of the two.
    ref = render.render_batch(scene.sample_scenes("train", 0, 24), 12)
    self.assertEqual(str(int(ref.sum())), totals.pop())

  def test_a_dead_processs_claim_is_taken_over(self):
    workdir = _tmp(self, "w2claim_")
    (workdir / "data").mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket  # pylint: disable=g-import-not-at-top
    claim = workdir / "data" / "test_00000.npz.claim"
    claim.write_text(f"{socket.gethostname()} {dead.pid}")
    split = data.ensure_split(workdir, "test", 4, 4, 16, 0, poll_s=0.05)
    self.assertLen(split, 4)
    self.assertFalse(claim.exists())


class ClipLossTest(absltest.TestCase):

  def test_class_prompt_term_is_the_cross_entropy_of_the_class_prompts(self):
    config = _load_config("smoke")
    tok, _ = train._tokenizer(_tmp(self, "w2tok"))  # pylint: disable=protected-access
    model = train.clip_net(config, tok)
    split = data.Split(**data.render_shard("train", 0, 6, config.data.image_size, 0))
    idx = np.arange(6)
    rng = np.random.default_rng(0)
    texts, facts = data.draw_captions(rng, split, idx)
    ids = jnp.asarray(train.tokenize(tok, texts, train.TRAIN_SEQ_LEN))
    match = data.caption_matches(facts, split, idx).astype(np.float32)
    soft = data.soft_targets(split, idx, scene.NUM_CLASSES)
    pixels = train.to_pixels(split.images)
    class_ids = jnp.asarray(train.tokenize(
        tok, [train.class_prompt(i) for i in range(scene.NUM_CLASSES)], train.TRAIN_SEQ_LEN))
    base = float(train.clip_loss(model, class_ids, 0.0)(model.params, ids, pixels,
                                                         (match, soft)))
    with_cls = float(train.clip_loss(model, class_ids, 0.5)(model.params, ids, pixels,
                                                            (match, soft)))
    # NumPy: CLIP's logits of the class prompts against each image, cross-entropy vs soft.
    apply = lambda method, x: np.asarray(model.module.apply(
        {"params": model.params}, x, method=method), np.float64)
    img = apply("get_image_features", train._channels_last(pixels))  # pylint: disable=protected-access
    txt = apply("get_text_features", class_ids)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    logits = np.exp(float(model.params["logit_scale"])) * img @ txt.T
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    want = -np.mean(np.sum(soft * logp, 1))
    self.assertAlmostEqual(with_cls - base, 0.5 * want, places=4)
    self.assertGreater(want, 0.1)


class WaitTest(absltest.TestCase):

  def test_waits_until_the_other_stage_finishes(self):
    workdir = _tmp(self, "w2wait_")
    config = _load_config("smoke")
    config.poll_s = 0.05

    def finish_later():
      time.sleep(0.5)
      train._finish(config, workdir, "vae", {"scaling_factor": 1.0})  # pylint: disable=protected-access

    thread = threading.Thread(target=finish_later)
    t0 = time.time()
    thread.start()
    with self.assertLogs(level="INFO") as logs:
      train.wait_for(config, workdir, ("vae",), "unet")
    thread.join()
    self.assertGreaterEqual(time.time() - t0, 0.45)
    self.assertTrue(any("[unet] waiting for stage 'vae'" in m for m in logs.output))
    self.assertIsNotNone(train.stage_done(config, workdir, "vae"))

  def test_times_out_with_one_line(self):
    workdir = _tmp(self, "w2wait_")
    config = _load_config("smoke")
    config.poll_s, config.wait_timeout_s = 0.05, 0.2
    with self.assertRaisesRegex(errors.UserError, r"stage 'unet' waited 0.2s for \['clip'\]"):
      train.wait_for(config, workdir, ("clip",), "unet")

  def test_a_stage_finished_at_fewer_steps_is_not_done(self):
    workdir = _tmp(self, "w2wait_")
    config = _load_config("smoke")
    train._finish(config, workdir, "clip", {})  # pylint: disable=protected-access
    self.assertIsNotNone(train.stage_done(config, workdir, "clip"))
    config.clip.num_steps += 2
    self.assertIsNone(train.stage_done(config, workdir, "clip"))


class _Stop(Exception):
  pass


def _ckpt_leaves(workdir, name):
  raw = flax.serialization.msgpack_restore(
      (workdir / "checkpoints" / f"{name}.msgpack").read_bytes())
  return raw["step"], jax.tree_util.tree_leaves(raw)


@pytest.mark.slow
class ResumeTest(absltest.TestCase):

  def test_resumed_stages_equal_uninterrupted_ones(self):
    config = _load_config("smoke")
    config.stages = "vae,clip,unet,resnet,robust"
    full = _tmp(self, "w2full_")
    train.run(config, full)
    for stage in ("clip", "unet", "robust"):
      part = _tmp(self, "w2part_")
      shutil.copytree(full / "data", part / "data")
      for dep in train.DEPENDS[stage]:
        (part / "stages").mkdir(exist_ok=True)
        (part / "checkpoints").mkdir(exist_ok=True)
        shutil.copy(train.stage_file(full, dep), train.stage_file(part, dep))
        shutil.copy(full / "checkpoints" / f"{dep}.msgpack", part / "checkpoints")
      config.stages = stage

      def stop_after_first(name, state):
        if name == stage and int(state.step) == 2:
          raise _Stop()

      train.CHECKPOINT_HOOK = stop_after_first
      try:
        with self.assertRaises(_Stop):
          train.run(config, part)
      finally:
        train.CHECKPOINT_HOOK = None
      self.assertEqual(int(_ckpt_leaves(part, stage)[0]), 2)
      self.assertIsNone(train.stage_done(config, part, stage))
      train.run(config, part)
      step_a, a = _ckpt_leaves(full, stage)
      step_b, b = _ckpt_leaves(part, stage)
      self.assertEqual(int(step_a), int(step_b))
      self.assertEqual(int(step_a), config[stage].num_steps)
      self.assertEqual(len(a), len(b))
      for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y, err_msg=stage)


@pytest.mark.slow
def test_smoke_every_stage_trains_and_exports_loadable_files(world2_smoke, caplog):
  # The session's smoke run (tests/conftest.py), shared with tests/world2_jobs_test.py.
  workdir, config, out = world2_smoke
  assert set(out) == set(train.ALL_STAGES)
  for name in train.ALL_STAGES:
    assert train.stage_file(workdir, name).exists(), name
  assert out["vae"]["scaling_factor"] > 0
  # A rerun skips every finished stage (and re-exports).
  with caplog.at_level("INFO"):
    train.run(config, workdir)
  assert any("[unet] already finished" in r.getMessage() for r in caplog.records)
  export = workdir / "export"
  from jaxdiffattack import models  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.models import convert_transformers  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.models import weights  # pylint: disable=g-import-not-at-top
  from transformers import CLIPTokenizer  # pylint: disable=g-import-not-at-top
  unet, _ = weights.load_diffusers_model("unet", export / "sd" / "unet")
  vae, _ = weights.load_diffusers_model("vae", export / "sd" / "vae")
  assert unet.config.sample_size == train.latent_size(config)
  assert vae.config.sample_size == config.data.image_size
  assert abs(vae.config.scaling_factor - out["vae"]["scaling_factor"]) < 1e-5
  text, text_params = convert_transformers.load_text_encoder(export / "sd" / "text_encoder")
  assert text.config.max_position_embeddings == 77
  clip = convert_transformers.load(export / "clip", "clip")
  for a, b in zip(jax.tree_util.tree_leaves(text_params["text_model"]),
                  jax.tree_util.tree_leaves(clip.params["text_model"])):
    np.testing.assert_array_equal(a, b)  # clip_tune kept the text tower frozen.
  _, params = models.load_stable_diffusion(str(export / "sd"))
  assert "unet" in params
  tok = CLIPTokenizer.from_pretrained(export / "sd" / "tokenizer")
  assert len(tok("a red circle").input_ids) == 5  # BOS, 3 words, EOS.
  for kind, sub in (("vit", "vit"), ("resnet", "resnet"), ("resnet", "robust"),
                    ("regnet", "evaluator")):
    raw = convert_transformers.load(export / sub, kind).raw_config
    assert len(raw["id2label"]) == scene.NUM_CLASSES
    assert raw["id2label"]["0"] == scene.CLASSES[0]
  metrics = json.loads((export / "train_metrics.json").read_text())
  assert "unet" in metrics


if __name__ == "__main__":
  absltest.main()


# ------------------------------------------------------ VAE loss terms (issue #23) --
def _np_edge(rec, x):
  rec, x = np.asarray(rec, np.float64), np.asarray(x, np.float64)
  dx = lambda a: np.diff(a, axis=3)
  dy = lambda a: np.diff(a, axis=2)
  return (np.abs(dx(rec) - dx(x)).mean() + np.abs(dy(rec) - dy(x)).mean()) / 2


def _np_features(fa, fb):
  terms = []
  for a, b in zip(fa, fb):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a = a / np.sqrt((a ** 2).sum(-1, keepdims=True))
    b = b / np.sqrt((b ** 2).sum(-1, keepdims=True))
    terms.append(((a - b) ** 2).sum(-1).mean())
  return np.mean(terms)


def _tiny_vit_checkpoint(test, config):
  """A random transformers ViT shaped as config.vit, its params as a vit-stage checkpoint;
  returns (checkpoint path, the PyTorch model)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(_ROOT / "tests"))
  import tiny_vision  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.models import convert_transformers  # pylint: disable=g-import-not-at-top
  c = config.vit
  model = transformers.ViTForImageClassification(transformers.ViTConfig(
      image_size=config.data.image_size, patch_size=c.patch_size, hidden_size=c.width,
      num_hidden_layers=c.layers, num_attention_heads=c.heads,
      intermediate_size=c.width * c.mlp_ratio, num_labels=train.NUM_CLASSES)).eval()
  d = _tmp(test, "w2vit_")
  tiny_vision.save_random(model, d / "hf", seed=5)
  params = convert_transformers.load(d / "hf", "vit").params
  path = d / "vit.msgpack"
  path.write_bytes(flax.serialization.msgpack_serialize(
      {"step": 7, "params": jax.tree_util.tree_map(np.asarray, params)}))
  del torch
  return path, model


class VAELossTermsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.config = _load_config("smoke")
    self.config.vit.layers = 2
    rng = np.random.default_rng(0)
    s = self.config.data.image_size
    self.x = rng.uniform(-1, 1, (3, 3, s, s)).astype(np.float32)
    self.rec = rng.uniform(-1, 1, (3, 3, s, s)).astype(np.float32)

  def test_edge_loss_is_the_numpy_gradient_l1(self):
    np.testing.assert_allclose(float(train.edge_loss(self.rec, self.x)),
                               _np_edge(self.rec, self.x), rtol=1e-5)
    self.assertAlmostEqual(float(train.edge_loss(self.x + 0.25, self.x)), 0.0, places=6)

  def test_feature_distance_is_the_numpy_lpips_sum(self):
    rng = np.random.default_rng(1)
    fa = [rng.normal(size=(2, 5, 8)), rng.normal(size=(2, 3, 4, 6))]
    fb = [rng.normal(size=(2, 5, 8)), rng.normal(size=(2, 3, 4, 6))]
    fa32 = [jax.numpy.asarray(a, np.float32) for a in fa]
    fb32 = [jax.numpy.asarray(b, np.float32) for b in fb]
    np.testing.assert_allclose(float(train.feature_distance(fa32, fb32)), _np_features(fa, fb),
                               rtol=1e-5)
    self.assertAlmostEqual(float(train.feature_distance(fa32, [2 * a for a in fa32])), 0.0,
                           places=6)  # Scale-invariant per position.

  def test_features_are_the_pytorch_vits_hidden_states(self):
    import torch  # pylint: disable=g-import-not-at-top
    path, model = _tiny_vit_checkpoint(self, self.config)
    self.config.vae.feature_ckpt = str(path)
    got = train.feature_extractor(self.config, "/nonexistent")(self.x)
    with torch.no_grad():
      want = model(pixel_values=torch.from_numpy(self.x), output_hidden_states=True
                   ).hidden_states[1:]  # The layers' outputs (hidden_states[0]: embeddings).
    self.assertLen(got, 2)
    for g, w in zip(got, want):
      np.testing.assert_allclose(np.asarray(g), w.numpy(), rtol=1e-4, atol=1e-4)

  @pytest.mark.slow  # ~45 CPU-s (eager VAE passes).
  def test_loss_adds_each_weighted_term_and_weight_zero_is_the_old_loss(self):
    config = self.config
    path, _ = _tiny_vit_checkpoint(self, config)
    config.vae.feature_ckpt = str(path)
    vae = train.vae_module(config)
    params = vae.init_weights(jax.random.PRNGKey(0))
    x, key = jax.numpy.asarray(self.x), jax.random.PRNGKey(3)
    old = train.toy_train.vae_loss_fn(vae, config.vae.kl_weight)
    self.assertIs(type(train.vae_loss_fn(config, "/nonexistent", vae)), type(old))
    base = float(old(params, x, key))
    self.assertEqual(float(train.vae_loss_fn(config, "/nonexistent", vae)(params, x, key)), base)
    # The reconstruction the loss sees: the decoded posterior sample under the same key.
    post = vae.apply({"params": params}, x, method=vae.encode)
    rec = vae.apply({"params": params}, post.sample(key), method=vae.decode)
    feats = train.feature_extractor(config, "/nonexistent")
    want_edge, want_feat = _np_edge(rec, x), _np_features(feats(rec), feats(x))
    self.assertGreater(want_edge, 0)
    self.assertGreater(want_feat, 0)
    for edge_w, feat_w in ((0.7, 0.0), (0.0, 0.3), (0.7, 0.3)):
      config.vae.edge_weight, config.vae.feature_weight = edge_w, feat_w
      got = float(train.vae_loss_fn(config, "/nonexistent", vae)(params, x, key))
      np.testing.assert_allclose(got, base + edge_w * want_edge + feat_w * want_feat,
                                 rtol=1e-5, err_msg=f"{edge_w}, {feat_w}")
    # The feature net is frozen: gradients reach only the VAE's params.
    grads = jax.grad(train.vae_loss_fn(config, "/nonexistent", vae))(params, x, key)
    self.assertEqual(jax.tree_util.tree_structure(grads), jax.tree_util.tree_structure(params))
    # vae_tune (the decoder): MSE + its l1_weight L1, no KL; the same terms from its own block.
    config.vae_tune.update(feature_ckpt=str(path), l1_weight=0.3)
    tune = lambda: train.vae_loss_fn(config, "/nonexistent", vae, "vae_tune")
    self.assertIs(type(tune()), type(train.toy_train.vae_decoder_loss_fn(vae, 0.3)))
    err = np.asarray(rec, np.float64) - self.x
    base_tune = np.mean(err ** 2) + 0.3 * np.mean(np.abs(err))
    np.testing.assert_allclose(float(tune()(params, x, key)), base_tune, rtol=1e-5)
    config.vae_tune.update(edge_weight=0.7, feature_weight=0.3)
    np.testing.assert_allclose(float(tune()(params, x, key)),
                               base_tune + 0.7 * want_edge + 0.3 * want_feat, rtol=1e-5)

  def test_bad_loss_keys_are_one_line_errors(self):
    vae = train.vae_module(self.config)
    cases = [(dict(edge_weight=-1.0), r"config.vae.edge_weight=-1.0 is invalid"),
             (dict(feature_weight=-0.5), r"config.vae.feature_weight=-0.5 is invalid"),
             (dict(feature_weight=1.0, feature_net="vgg"),
              r"config.vae.feature_net='vgg' is invalid: one of \['vit'\]"),
             (dict(feature_weight=1.0, feature_ckpt="/nonexistent/vit.msgpack"),
              r"needs the 'vit' classifier's checkpoint /nonexistent/vit.msgpack")]
    cases = [("vae", kw, pattern) for kw, pattern in cases] + [
        ("vae_tune", dict(feature_weight=-0.5), r"config.vae_tune.feature_weight=-0.5 is invalid"),
        ("vae_tune", dict(feature_weight=1.0, feature_ckpt="/nonexistent/vit.msgpack"),
         r"config.vae_tune.feature_weight=1.0 needs the 'vit' classifier's checkpoint")]
    for stage, kw, pattern in cases:
      config = _load_config("smoke")
      config[stage].update(kw)
      with self.assertRaisesRegex(errors.UserError, pattern) as ctx:
        train.vae_loss_fn(config, "/nonexistent", vae, stage)
      self.assertNotIn("\n", str(ctx.exception))
    config = _load_config("smoke")
    config.vae.feature_weight = 1.0
    with self.assertRaisesRegex(errors.UserError,
                                r"checkpoint /nonexistent/checkpoints/vit.msgpack"):
      train.vae_loss_fn(config, "/nonexistent", vae)
