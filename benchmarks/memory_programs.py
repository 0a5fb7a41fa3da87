"""The programs whose device memory `memory_benchmark.py` and `memory_table.py` report.

Model shapes (toy, SD 1.5, SD 2.1; abstract params, or random weights for a measured peak) with
the judge fused as the jobs run it (CLIP zero-shot margin over 1000 classes: ViT-B/16's image tower
at 224², ATM's judge; the toy CLIP for the toy model; images resized bilinearly to its input), and
per model the programs of `PROGRAMS` as `costs.Program`s: the forward sampler, the gradient
w.r.t. the text embeddings at each depth of `costs.GRAD_DEPTHS`, and one ATM iteration.
"""


import dataclasses
import datetime
import pathlib
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack import costs
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack.attacks import atm
from jaxdiffattack.models import clip as clip_lib
from jaxdiffattack.models import random_init
from jaxdiffattack.models.stable_diffusion import DTYPES

# CLIP ViT-B/16 (openai/clip-vit-base-patch16): ATM's judge.
CLIP_B16 = {"text_config": {"hidden_size": 512, "intermediate_size": 2048,
                            "num_attention_heads": 8, "num_hidden_layers": 12},
            "vision_config": {"hidden_size": 768, "intermediate_size": 3072,
                              "num_attention_heads": 12, "num_hidden_layers": 12,
                              "image_size": 224, "patch_size": 16},
            "projection_dim": 512}
NUM_CLASSES = 1000
PROGRAMS = ("forward", "grad_last", "grad_all_remat", "atm_step")
MARGIN = "judge/margin"


@dataclasses.dataclass(frozen=True)
class Setup:
  """A model shape with its judge, as programs of the population size."""
  name: str
  sd: object
  params: dict          # {"unet", "vae", "text_encoder"} arrays or ShapeDtypeStructs
  judge_params: dict    # {"model": CLIP params, "class_emb": [K, D]}
  score_fn: object
  text_shape: tuple
  steps: int

  def fused(self, grad_steps=None, remat=False, return_images=True):
    settings = sampler_lib.SamplerSettings(num_steps=self.steps, grad_steps=grad_steps,
                                           remat=remat, return_images=return_images)
    return sampler_lib.FusedSampler.build(self.sd, settings, self.score_fn)

  def fused_params(self):
    return sampler_lib.fused_params(self.params, self.judge_params)

  def programs(self) -> dict:
    """{name: costs.Program} of `PROGRAMS`."""
    aux = {"label": jax.ShapeDtypeStruct((), jnp.int32)}
    shape = self.sd.latent_shape
    out = {"forward": costs.sampler_program(self.fused(), self.fused_params(), shape,
                                            self.text_shape, aux)}
    for depth, (grad_steps, remat) in costs.GRAD_DEPTHS.items():
      out[f"grad_{depth}"] = costs.gradient_program(
          self.fused(grad_steps, remat, return_images=False), self.fused_params(), shape,
          self.text_shape, aux, score_key=MARGIN)
    attack = atm.Attack.build(self.sd, atm.Settings(), self.score_fn, MARGIN,
                              num_steps=self.steps)
    attack_params = {"text_encoder": self.params["text_encoder"],
                     "uncond": jax.ShapeDtypeStruct(self.text_shape, jnp.float32),
                     "fused": self.fused_params()}
    out["atm_step"] = costs.attack_program(attack, attack_params, self.text_shape[0])
    return out


def clip_judge(clip_model, num_classes: int):
  """score_fn(params, images [P, H, W, 3], aux) → {MARGIN: [P]}: CLIP zero-shot margin."""
  size = clip_model.config.vision.image_size
  mean = jnp.asarray([0.48145466, 0.4578275, 0.40821073])
  std = jnp.asarray([0.26862954, 0.26130258, 0.27577711])

  def score_fn(params, images, aux):
    pixels = jax.image.resize(images, (images.shape[0], size, size, 3), "bilinear")
    pixels = ((pixels - mean) / std).astype(clip_model.dtype)
    emb = clip_model.apply({"params": params["model"]}, pixels, method="get_image_features")
    emb = emb.astype(jnp.float32)
    emb = emb / jnp.linalg.norm(emb, axis=-1, keepdims=True)
    logits = 100.0 * emb @ params["class_emb"].T                     # [P, K]
    own = jnp.take_along_axis(logits, aux["label"][:, None], axis=1)[:, 0]
    others = jnp.where(jnp.arange(num_classes)[None] == aux["label"][:, None], -jnp.inf, logits)
    return {MARGIN: own - others.max(axis=1)}

  return score_fn


def setup(model: str, resolution: int | None, dtype: str, steps: int,
          abstract: bool = True) -> Setup:
  """The model shape `model` ("toy", "sd15", "sd21") with its judge; abstract params unless
  `abstract=False` (random weights, for the measured peak)."""
  jdtype = DTYPES[dtype]
  if model == "toy":
    from jaxdiffattack.models import load_stable_diffusion  # pylint: disable=g-import-not-at-top
    from jaxdiffattack.models import vision  # pylint: disable=g-import-not-at-top
    sd, params = load_stable_diffusion("toy", dtype=dtype)
    bundle, clip_params = vision.load_clip("toy", dtype)
    clip_model = bundle.model
    text_shape = (sd.max_length, sd.text_dim)
    if resolution:
      raise ValueError("the toy model's resolution is fixed (32²): give none")
  else:
    sd, params = random_init.random_stable_diffusion(model, dtype, abstract=abstract,
                                                     resolution=resolution, text_encoder=True)
    config = clip_lib.CLIPConfig.from_dict(CLIP_B16, "memory_benchmark.CLIP_B16")
    clip_model = clip_lib.CLIPModel(config, jdtype)
    init = lambda key: clip_model.init(key, jnp.zeros((1, 77), jnp.int32),
                                       jnp.zeros((1, 224, 224, 3), jdtype))["params"]
    key = jax.random.PRNGKey(1)
    clip_params = jax.eval_shape(init, key) if abstract else jax.jit(init)(key)
    text_shape = random_init.text_shape(model)
  dim = clip_model.config.projection_dim
  class_emb = jax.ShapeDtypeStruct((NUM_CLASSES, dim), jnp.float32)
  if not abstract:
    class_emb = jax.random.normal(jax.random.PRNGKey(2), class_emb.shape)
  judge_params = {"model": clip_params, "class_emb": class_emb}
  return Setup(model, sd, params, judge_params, clip_judge(clip_model, NUM_CLASSES), text_shape,
               steps)


def analyse(s: Setup, names=PROGRAMS, sizes=(1, 2), log=print) -> dict:
  """{program: {fixed_bytes, per_member_bytes, sizes, totals, compile_s}} from the analysis."""
  programs = s.programs()
  out = {}
  for name in names:
    start = time.perf_counter()
    cost = costs.memory_cost(programs[name], sizes)
    out[name] = {"fixed_bytes": cost.fixed, "per_member_bytes": cost.per_member,
                 "sizes": list(cost.sizes), "totals": list(cost.totals),
                 "compile_s": round(time.perf_counter() - start, 1)}
    log(f"{s.name}: {name}: {cost.per_member / 2**20:.1f} MiB per member, "
        f"{cost.fixed / 2**30:.2f} GiB fixed ({out[name]['compile_s']} s)")
  return out


def measured_peaks(s: Setup, population: int, order, log=print) -> dict:
  """Runs each program on random arrays at `population`; peak_bytes_in_use after each."""
  device = jax.local_devices()[0]
  programs = s.programs()
  fill = lambda a: (jnp.zeros(a.shape, a.dtype) if not jnp.issubdtype(a.dtype, jnp.floating)
                    else jax.random.normal(jax.random.PRNGKey(3), a.shape, a.dtype) * 0.1)
  peaks = {}
  for name in order:
    fn, args = programs[name](population)
    concrete = (s.fused_params(),) if name != "atm_step" else None
    args = jax.tree_util.tree_map(
        lambda a: fill(a) if isinstance(a, jax.ShapeDtypeStruct) else a, args)
    if concrete is not None:
      args = concrete + tuple(args[1:])
    else:
      params = {"text_encoder": s.params["text_encoder"], "uncond": args[0]["uncond"],
                "fused": s.fused_params()}
      state = atm.Attack.build(s.sd, atm.Settings(), s.score_fn, MARGIN,
                               num_steps=s.steps).init(jnp.zeros((population, s.text_shape[0]),
                                                                 jnp.int32))
      args = (params, state) + tuple(args[2:])
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    jax.block_until_ready(jitted(*args))
    peaks[name] = int(device.memory_stats()["peak_bytes_in_use"])
    log(f"{s.name}: {name}: peak {peaks[name] / 2**30:.2f} GiB (population {population})")
  return peaks


def provenance() -> dict:
  try:
    revision = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=False, cwd=pathlib.Path(__file__).parent).stdout.strip()
  except OSError:
    revision = ""
  device = jax.local_devices()[0]
  return {"command": " ".join([pathlib.Path(sys.executable).name] + sys.argv),
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "machine": f"{platform.node()} {platform.machine()} {jax.device_count()}× "
                     f"{device.device_kind} ({device.platform})",
          "jax": jax.__version__, "git_revision": revision}


