"""The attack job's experiment: the model, scorers and compiled functions (`Job`), its prompt sets
(`PromptData`), generation and judging of prompts (`judges.make_judges(...).read`: one
`judges.Verdict` per judge, as in every job), the clean check (cached as clean_<set>.json), and
the evaluation of an attacked group's hard samples and of the random-substitution baseline
(arXiv 2306.02583 §4; the job's steps are listed in `job.py`).

The attack's success rule sits on top of the verdicts (§4.2, `Judged.success`): a sample succeeds
for a judge when the judge calls it a failure (its top-1 is not the prompt's class; the toy oracle:
it is sure the named object is not drawn — an image it cannot read is `unclear`, never a failure)
AND the class word is still in the decoded prompt (`prompts.class_word_present`)."""

import dataclasses
import json
import pathlib
from typing import NamedTuple
import zlib

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdiffattack import io
from jaxdiffattack import judges as judges_lib
from jaxdiffattack import labels as labels_lib
from jaxdiffattack import objectives as objectives_lib
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import scoring as scoring_lib
from jaxdiffattack import sharding
from jaxdiffattack import text
from jaxdiffattack.attacks import atm
from jaxdiffattack.attacks import config as config_lib
from jaxdiffattack.attacks import modes
from jaxdiffattack.attacks import prompts as prompts_lib
from jaxdiffattack.attacks import random_substitution as random_lib
from jaxdiffattack.attacks import similarity
from jaxdiffattack.attacks import step as step_lib
from jaxdiffattack.errors import check

ATTACK_JUDGE = config_lib.ATTACK_JUDGE
# clean_<set>.json format: 2 since the judges' verdicts (`judges.Verdict`: the oracle's unclear
# reading is pred None with `unclear`, model judges' preds are class names); caches of another
# version are recomputed, not misread.
CLEAN_VERSION = 2


@dataclasses.dataclass
class PromptData:
  """One prompt set, tokenized and prepared for the attack (host arrays, N prompts)."""
  name: str
  prompt_set: prompts_lib.PromptSet
  encoded: prompts_lib.EncodedPrompts
  free: np.ndarray        # [N, L] bool
  reference: np.ndarray   # [N, L, D] clean text-encoder states
  weights: np.ndarray     # [N, L] idf weights
  key: jax.Array          # the set's key: fold_in(run key, crc32(name))

  def prompts(self, index: np.ndarray) -> atm.Prompts:
    return atm.prompts_from(self.encoded.ids[index], self.free[index],
                            np.asarray(self.prompt_set.labels)[index], index,
                            self.reference[index], self.weights[index])

  def purpose_key(self, purpose: int) -> jax.Array:
    return jax.random.fold_in(self.key, purpose)


class Judged(NamedTuple):
  """M generated prompts, their images and every judge's verdict on them."""
  texts: list                      # [M] decoded prompts
  images: np.ndarray               # [M, H, W, 3] in [0, 1]
  verdicts: dict                   # judge name → judges.Verdict of the M images
  class_word_present: np.ndarray   # [M] bool: the class word is still in the prompt
  changed: np.ndarray | None = None  # [M] tokens changed from the clean prompt

  def success(self, judge: str) -> np.ndarray:
    """[M] bool: the attack's success by `judge` (module docstring; arXiv 2306.02583 §4.2)."""
    return self.verdicts[judge].failure & self.class_word_present


class Job:
  """A loaded attack run: model, scorers, the attack (`registry.ATTACKS`), compiled functions."""

  def __init__(self, config, workdir: pathlib.Path, mesh=None, model_loader=None):
    self.config = config
    self.workdir = workdir
    self.mesh = sharding.make_mesh() if mesh is None else mesh
    if model_loader is None:
      from jaxdiffattack.models import load_stable_diffusion  # pylint: disable=g-import-not-at-top
      model_loader = load_stable_diffusion
    self.sd, params = model_loader(config.model, dtype=config.dtype)
    self.label_set = labels_lib.get_label_set(config.label_set)
    self.latent_shape = _latent_shape(self.sd, config.image_size)
    self.guidance = config.guidance_scale > 1.0
    self.scoring = _build_scoring(config)
    self.judges = judges_lib.make_judges((ATTACK_JUDGE,) + tuple(config.judges), self.scoring)
    self.judge_names = self.judges.names
    uncond = text.encode_prompts(self.sd, params["text_encoder"], [""])[0]
    self.params = sharding.put_replicated(
        {"text_encoder": params["text_encoder"], "uncond": uncond,
         "fused": sampler_lib.fused_params(params, self.scoring.params)}, self.mesh)
    self.text_params = params["text_encoder"]
    self.vocab_size = int(self.sd.text_encoder.config.vocab_size)
    special = [self.sd.tokenizer.bos_token_id, self.sd.tokenizer.eos_token_id,
               self.sd.tokenizer.pad_token_id]
    self.ordinary_tokens = np.setdiff1d(np.arange(self.vocab_size), special).astype(np.int32)
    self.attack = config_lib.attack_module(config).build(
        self.sd, config, self.scoring.score_fn, self.latent_shape, self.ordinary_tokens)
    self.settings = getattr(self.attack, "settings", None)   # ATM's (benchmarks read them)
    self.compiled = self.attack.compile(self.mesh, config.steps_per_call)
    self.image_sampler = sampler_lib.PopulationSampler(
        self.sd, params, sampler_lib.SamplerSettings(
            scheduler=config.scheduler, num_steps=config.num_steps, guidance=self.guidance),
        mesh=self.mesh, microbatch=config.microbatch, score_fn=self.scoring.score_fn,
        memory_budget_gb=config.get("memory_budget_gb"),
        score_params=self.scoring.params)
    self.uncond = np.asarray(uncond)
    self.key = jax.random.PRNGKey(config.seed)

  def prepare(self, name: str, spec: str) -> PromptData:
    c = self.config
    labels = None
    if c.labels:
      labels = labels_lib.indices(self.label_set, list(c.labels)).tolist()
    prompt_set = prompts_lib.load(spec, name, self.label_set, labels, c.per_label)
    if c.max_prompts:
      prompt_set = prompts_lib.PromptSet(*(field[:c.max_prompts] if isinstance(field, tuple)
                                           else field for field in prompt_set))
    enc = prompts_lib.encode(self.sd, prompt_set)
    free = modes.free_positions(c.mode, enc.ids, enc.lengths, enc.class_mask, c.extend_tokens)
    idf = similarity.idf_table(enc.ids, enc.lengths, self.vocab_size)
    weights = similarity.reference_weights(enc.ids, enc.lengths, idf)
    reference = np.asarray(text.encode_prompts(self.sd, self.text_params,
                                               list(prompt_set.prompts)), np.float32)
    key = jax.random.fold_in(self.key, zlib.crc32(name.encode()))
    return PromptData(name, prompt_set, enc, free, reference, weights, key)

  def sample_scores(self, texts: list[str], latents: np.ndarray, labels: np.ndarray) -> dict:
    """Generates and scores prompts in slices of `eval_batch`: {"images", "<judge>/<score>"} (the
    image judges' scores, `judges.judge_scores`, among them)."""
    batch = self.config.eval_batch
    out = {}
    for start in range(0, len(texts), batch):
      stop = min(start + batch, len(texts))
      pad = lambda a: sharding.pad_population(np.asarray(a)[start:stop], batch)
      chunk = pad(np.asarray(texts, object))
      cond = text.encode_prompts(self.sd, self.text_params, [str(t) for t in chunk])
      result = self.image_sampler(pad(latents), cond, self.uncond, self.config.guidance_scale,
                                  aux=self.scoring.aux(labels=pad(labels)))
      got = {"images": result.images, **result.scores,
             **self.judges.image_scores(np.asarray(result.images)[:stop - start],
                                        np.asarray(labels)[start:stop])}
      for k, v in got.items():
        out.setdefault(k, []).append(np.asarray(v)[:stop - start])
    return {k: np.concatenate(v) for k, v in out.items()}

  def noise(self, key: jax.Array, index: np.ndarray, samples: int | None) -> np.ndarray:
    """Latents [N, *shape] (samples None) or [N, S, *shape]: fold_in(fold_in(key, i), j)."""
    draw = lambda k: jax.random.normal(k, self.latent_shape, jnp.float32)
    keys = atm.prompt_keys(key, jnp.asarray(index))
    if samples is None:
      return np.asarray(jax.vmap(draw)(keys))
    per = lambda k: jax.vmap(lambda j: draw(jax.random.fold_in(k, j)))(
        jnp.arange(samples, dtype=jnp.uint32))
    return np.asarray(jax.vmap(per)(keys))

  def read(self, scores: dict, texts, class_text) -> Judged:
    """The judges' verdicts on generated prompts `texts` (scores from `sample_scores`)."""
    present = np.array([prompts_lib.class_word_present(t, c) for t, c in zip(texts, class_text)],
                       bool)
    return Judged(list(texts), scores["images"], self.judges.read(scores), present)

  def clean_check(self, data: PromptData) -> dict:
    """{"correct": [N] bool, "nonfinite", and per judge "pred", "confidence" (and "unclear", for
    judges that give reasons)} of the clean prompts: correct by the attack's classifier. Cached
    on disk (`CLEAN_VERSION`)."""
    path = self.workdir / f"clean_{data.name}.json"
    if path.exists():
      cached = json.loads(path.read_text())
      if cached.get("version") == CLEAN_VERSION:
        return cached
      logging.info("[%s] clean check cached in an older format: recomputed", data.name)
    n = len(data.prompt_set)
    index = np.arange(n)
    latents = self.noise(data.purpose_key(step_lib.CLEAN_NOISE), index, None)
    scores = self.sample_scores(list(data.prompt_set.prompts), latents,
                                np.asarray(data.prompt_set.labels))
    verdicts = self.judges.read(scores)
    # A prompt whose clean image is not finite (the model overflowed) is not "correctly
    # generated": the classifier cannot read it (`unclear`); it is skipped like a clean failure
    # and flagged `nonfinite`.
    attack = verdicts[ATTACK_JUDGE]
    clean = {"version": CLEAN_VERSION,
             "correct": (~(attack.failure | attack.unclear)).tolist(),
             "nonfinite": attack.unclear.tolist(),
             "pred": {j: list(v.pred) for j, v in verdicts.items()},
             "confidence": {j: v.confidence.tolist() for j, v in verdicts.items()},
             "unclear": {j: v.unclear.tolist() for j, v in verdicts.items() if v.reason}}
    for i, image in enumerate(scores["images"]):   # beside the attacked images on index.html
      io.write_png(self.workdir / "images" / data.name / "clean" / f"p{i:04d}.png", image)
    io.write_json(path, clean)
    logging.info("[%s] clean check: %d of %d prompts correctly generated (the rest are skipped; "
                 "%d non-finite)", data.name, sum(clean["correct"]), n, int(attack.unclear.sum()))
    return clean

  def evaluate_group(self, data: PromptData, index: np.ndarray, state, padded: np.ndarray,
                     clean_latents: np.ndarray) -> dict:
    """Hard samples of the attacked prompts (the attack's `readout` of its final `state`, of the
    `padded` population) and their baseline, generated and judged: on fresh noises per sample
    (eval_noise "per_sample"), on the clean check's noise ("fixed"), or on both ("both": fresh
    as "attack", fixed as "fixed_noise")."""
    c = self.config
    s = c.num_samples
    prompts = data.prompts(index)
    ids = np.asarray(self.attack.readout(data.purpose_key(step_lib.SAMPLES), state,
                                         data.prompts(padded), np.arange(s)))[:len(index)]
    fixed = np.repeat(clean_latents[:, None], s, axis=1)      # the clean check's noise
    if c.eval_noise == "fixed":
      latents = fixed
    else:
      latents = self.noise(data.purpose_key(step_lib.EVAL_NOISE), index, s)
    flat = lambda a: a.reshape(len(index) * s, *a.shape[2:])
    labels = np.repeat(np.asarray(data.prompt_set.labels)[index], s)
    class_text = np.repeat(np.asarray(data.encoded.class_text, object)[index], s)
    changed = (ids != data.encoded.ids[index][:, None]).sum(-1)                   # [P, S]
    judge = lambda token_ids, noise: self._judge_ids(flat(token_ids), flat(noise), labels,
                                                     class_text)._replace(changed=flat(changed))
    out = {"prompts": len(index), "attack": judge(ids, latents)}
    if c.eval_noise == "both":      # the same hard prompts on the clean check's noise as well
      out["fixed_noise"] = judge(ids, fixed)
    if c.baseline:
      base_ids = np.asarray(random_lib.random_substitution(
          data.purpose_key(step_lib.BASELINE), prompts, jnp.asarray(changed),
          self.ordinary_tokens))
      out["baseline"] = judge(base_ids, latents)
    return out

  def _judge_ids(self, ids, latents, labels, class_text) -> Judged:
    texts = prompts_lib.decode(self.sd, ids)
    return self.read(self.sample_scores(texts, latents, labels), texts, class_text)


def _latent_shape(sd, image_size: int) -> tuple[int, ...]:
  if not image_size:
    return tuple(sd.latent_shape)
  check(image_size % sd.vae_scale_factor == 0, "image_size", image_size,
        f"use a multiple of the VAE's factor {sd.vae_scale_factor} (0: the model's default)")
  side = image_size // sd.vae_scale_factor
  return (sd.latent_channels, side, side)


def _build_scoring(config) -> scoring_lib.Scoring:
  """One scoring for the loss and the judges: role "attack" (config.classifier: margin for the
  loss — XLA drops the other judges from the compiled attack step, whose loss does not read
  them) and, by `objectives.with_judge_roles`, one role per further judge that is a scorer, each
  with `judges.JUDGE_OBJECTIVES` (image judges read the images on the host)."""
  block = ml_collections.ConfigDict({
      "label_set": config.label_set,
      "judges": (ATTACK_JUDGE,) + tuple(config.judges),
      "scoring": {"kind": "models",
                  "roles": {ATTACK_JUDGE: {"classifiers": (config.classifier,)}},
                  "objectives": {ATTACK_JUDGE: ("margin",)},
                  "scorers": dict(config.scorers)}})
  return objectives_lib.make_scoring(block)
