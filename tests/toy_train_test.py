"""Toy-world training smoke test and quality tests of the shipped weights."""
import json
import pathlib
import shutil
import tempfile

from absl.testing import absltest
import jax
import numpy as np
import pytest

from jaxdiffattack import toy
from jaxdiffattack import variants
from jaxdiffattack.toy import evaluate
from jaxdiffattack.toy import train
from jaxdiffattack.toy import world

_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Thresholds for the shipped weights: measured value minus a margin (see
# docs/toy_model_card.md for the measured numbers).
_MIN_VIT_TOP1 = 0.96
_MIN_RESNET_TOP1 = 0.97
_MIN_CLIP_ZERO_SHOT = 0.93
# Toy-SD generation on a fixed sample (20 classes x 2 seeds + 190 pairs x 1 seed, DDIM 20
# steps, CFG 7.5), judged by the ViT / the ResNet: measured top-1 95 % / 100 % and both
# objects 30.5 % / 26.3 % (2026-11-22, toy release 2), minus a margin for numerics across
# platforms; chance is 5 % for top-1 and ~0.5 % for "both objects".
_MIN_GEN_TOP1 = {"vit": 0.8, "resnet": 0.85}
_MIN_PAIR_BOTH = 0.12
_MAX_ASSETS_MB = 40


def _load_config(arg=None):
  return variants.load_config("train_toy", arg)


def _check_export_loads(test, out: pathlib.Path):
  from diffusers import DDIMScheduler, PNDMScheduler  # pylint: disable=g-import-not-at-top
  from transformers import AutoImageProcessor, CLIPTokenizer  # pylint: disable=g-import-not-at-top
  from jaxdiffattack import models  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.models import convert_transformers  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.models import weights  # pylint: disable=g-import-not-at-top
  sd = out / "sd"
  index = json.loads((sd / "model_index.json").read_text())
  for sub in ("tokenizer", "text_encoder", "unet", "vae", "scheduler"):
    test.assertIn(sub, index)
    test.assertTrue((sd / sub).is_dir(), sub)
  unet, _ = weights.load_diffusers_model("unet", sd / "unet")
  vae, _ = weights.load_diffusers_model("vae", sd / "vae")
  text, text_params = convert_transformers.load_text_encoder(sd / "text_encoder")
  test.assertEqual(unet.config.cross_attention_dim, text.config.hidden_size)
  test.assertNotEqual(vae.config.scaling_factor, 1.0)
  sched = DDIMScheduler.from_pretrained(sd, subfolder="scheduler")   # diffusers reads it
  test.assertEqual(sched.config.beta_schedule, "scaled_linear")
  test.assertEqual(sched.config.prediction_type, "epsilon")
  PNDMScheduler.from_pretrained(sd, subfolder="scheduler")
  test.assertEqual(CLIPTokenizer.from_pretrained(
      sd, subfolder="tokenizer").model_max_length, 77)
  _, params = models.load_stable_diffusion(str(sd))
  test.assertIn("unet", params)
  clip = convert_transformers.load(out / "clip", "clip")
  CLIPTokenizer.from_pretrained(out / "clip")
  # The SD text encoder is CLIP's text tower, unchanged.
  test.assertEqual(text.config, clip.config.text)
  for a, b in zip(jax.tree_util.tree_leaves(text_params["text_model"]),
                  jax.tree_util.tree_leaves(clip.params["text_model"])):
    np.testing.assert_array_equal(a, b)
  for kind in ("vit", "resnet"):
    id2label = convert_transformers.load(out / kind, kind).raw_config["id2label"]
    test.assertEqual(id2label["0"], world.LABELS[0])
    test.assertLen(id2label, world.NUM_CLASSES)
  img = world.make_dataset("heldout", 1).images[0]
  ref = ((img / 255 - 0.5) / 0.5).transpose(2, 0, 1)[None]
  for sub in ("clip", "vit", "resnet"):
    proc = AutoImageProcessor.from_pretrained(out / sub)
    np.testing.assert_allclose(proc(images=img, return_tensors="np")
                               ["pixel_values"], ref, atol=1e-5)


class LrScheduleTest(absltest.TestCase):

  def _cfg(self, **kw):
    import ml_collections  # pylint: disable=g-import-not-at-top
    return ml_collections.ConfigDict(dict(dict(
        lr=2e-3, warmup_steps=10, num_steps=100, final_lr_fraction=1.0,
        cooldown_steps=0), **kw))

  def test_cooldown_continues_a_constant_run(self):
    constant = train.lr_schedule(self._cfg())
    cooled = train.lr_schedule(self._cfg(num_steps=160, cooldown_steps=40))
    steps = np.arange(0, 120)
    # Up to the cool-down the schedule is that of the constant run: a checkpoint of the
    # constant run at step <= 120 resumes exactly into the cooled one.
    np.testing.assert_allclose([cooled(n) for n in steps], [constant(n) for n in steps])
    self.assertAlmostEqual(float(constant(50)), 2e-3, places=9)
    self.assertAlmostEqual(float(cooled(140)), 1e-3, places=7)
    self.assertAlmostEqual(float(cooled(160)), 0.0, places=9)
    self.assertTrue(np.all(np.diff([float(cooled(n)) for n in range(120, 161)]) < 0))

  def test_cooldown_longer_than_the_run_is_refused(self):
    with self.assertRaisesRegex(ValueError, "cooldown_steps=95"):
      train.lr_schedule(self._cfg(cooldown_steps=95))

  def test_frozen_optimizer_moves_only_the_unfrozen_entries(self):
    """One step of frozen_optimizer == one step of the plain optimiser on the unfrozen entries
    (AdamW's first step, clipped to global norm 1 over those), the frozen ones unchanged."""
    cfg = self._cfg(warmup_steps=0, weight_decay=0.0)
    params = {"encoder": {"w": np.ones(3, np.float32)}, "decoder": {"w": np.ones(2, np.float32)}}
    grads = {"encoder": {"w": np.full(3, 5.0, np.float32)},
             "decoder": {"w": np.asarray([0.3, -0.4], np.float32)}}
    opt = train.frozen_optimizer(cfg, params, ("encoder",))
    state = train.TrainState(0, params, opt.init(params), None)
    new, _ = train._apply_gradients(opt, state, grads)  # pylint: disable=protected-access
    np.testing.assert_array_equal(new["encoder"]["w"], params["encoder"]["w"])
    # AdamW's first update is lr * g / (|g| + eps) = lr * sign(g) at step 0 (cosine at lr).
    np.testing.assert_allclose(new["decoder"]["w"], 1 - 2e-3 * np.sign([0.3, -0.4]), rtol=1e-5)


@pytest.mark.slow
class SmokeTrainTest(absltest.TestCase):

  def test_smoke_trains_exports_and_loads(self):
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="toy_smoke_"))
    self.addCleanup(shutil.rmtree, workdir, ignore_errors=True)
    config = _load_config("smoke")
    metrics = train.run(config, workdir)
    self.assertIn("clip_zero_shot_top1", metrics)
    out = workdir / "export"
    _check_export_loads(self, out)
    for name in ("clip", "vit", "resnet", "vae", "unet"):
      self.assertTrue((workdir / "checkpoints" / f"{name}.msgpack").exists())
    # The evaluation loop runs on the export (2 DDIM steps, one seed).
    m = evaluate.evaluate(out / "sd", out / "vit", seeds_per_class=1,
                          pair_seeds=0, num_inference_steps=2)
    self.assertEqual(m["single_samples"], world.NUM_CLASSES)
    self.assertBetween(m["single_top1"], 0.0, 1.0)

  def test_config(self):
    config = _load_config()
    self.assertEqual(config.scheduler.beta_start, 0.00085)
    self.assertEqual(config.scheduler.beta_end, 0.012)
    self.assertEqual(config.scheduler.num_train_timesteps, 1000)
    self.assertFalse(config.export.to_assets)
    source = (_ROOT / "configs" / "train_toy.py").read_text()
    self.assertIn("python launch/train_toy.py --config configs/train_toy.py "
                  "--workdir", source)
    with self.assertRaises(ValueError):
      _load_config("nonsense")


@absltest.skipUnless((toy.SD_DIR / "model_index.json").exists(),
                     "no shipped toy weights")
class ShippedWeightsTest(absltest.TestCase):
  """Quality of the shipped weights on a fixed held-out sample."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data = world.make_dataset("heldout", 400)

  def test_layout_and_size(self):
    _check_export_loads(self, toy.ASSETS_DIR)
    size = sum(f.stat().st_size for f in toy.ASSETS_DIR.rglob("*")
               if f.is_file())
    self.assertLess(size / 2**20, _MAX_ASSETS_MB)
    for f in toy.ASSETS_DIR.rglob("*"):
      self.assertNotIn(f.suffix, (".bin", ".safetensors", ".pt"))

  def test_classifiers(self):
    labels = self.data.labels[:, 0]
    for sub, minimum in (("vit", _MIN_VIT_TOP1), ("resnet", _MIN_RESNET_TOP1)):
      logits = evaluate.load_classifier(toy.ASSETS_DIR / sub)(self.data.images)
      acc = float(np.mean(logits.argmax(-1) == labels))
      self.assertGreaterEqual(acc, minimum, msg=sub)

  @pytest.mark.slow
  def test_generation_quality(self):
    m = evaluate.evaluate(toy.SD_DIR, (toy.VIT_DIR, toy.RESNET_DIR), seeds_per_class=2,
                          pair_seeds=1, num_inference_steps=20)
    self.assertEqual(m["single_samples"], 2 * world.NUM_CLASSES)
    for judge, minimum in _MIN_GEN_TOP1.items():
      self.assertGreaterEqual(m["by_judge"][judge]["single_top1"], minimum, msg=judge)
      self.assertGreaterEqual(m["by_judge"][judge]["pair_both_rate"], _MIN_PAIR_BOTH,
                              msg=judge)
    # Pixel level (independent of the judges): both colours of two-colour pairs are drawn
    # (measured 95.3 % of 150; 99.7 % on real scenes).
    self.assertEqual(m["pair_colours_samples"], 150)
    self.assertGreaterEqual(m["pair_colours_shown"], 0.85)
    # The oracle (judge-free) reads most single-object images, and each judge agrees with it
    # on nearly all of them; it reads both objects of every real two-object scene. Oracle v2
    # (calibrated on blind ratings) reads every image, where v1 left the hardest 22.5 %
    # unclear, so the judges are compared with it on harder images too. Measured here with v2
    # (2026-12-06): it reads 92.5 % as their prompt; the ViT agrees with it on 87.5 % (35 of
    # 40), the ResNet on 92.5 % (v1: 77.5 % read, both judges agreeing on all of those).
    self.assertGreaterEqual(m["oracle"]["single_agreement"], 0.6)
    for judge in _MIN_GEN_TOP1:
      self.assertGreaterEqual(m["by_judge"][judge]["oracle_agreement"], 0.85, msg=judge)
    self.assertGreaterEqual(m["oracle"]["pair_both_read_on_real"], 0.97)
    # The top-level numbers are the first judge's.
    self.assertEqual(m["single_top1"], m["by_judge"]["vit"]["single_top1"])

  def test_clip_zero_shot(self):
    from transformers import CLIPTokenizer  # pylint: disable=g-import-not-at-top
    from jaxdiffattack.models import convert_transformers  # pylint: disable=g-import-not-at-top
    loaded = convert_transformers.load(toy.CLIP_DIR, "clip")
    tok = CLIPTokenizer.from_pretrained(toy.CLIP_DIR)
    acc = train.clip_zero_shot_accuracy(train.Net(loaded.module, loaded.params), tok,
                                        self.data)
    self.assertGreaterEqual(acc, _MIN_CLIP_ZERO_SHOT)


if __name__ == "__main__":
  absltest.main()
