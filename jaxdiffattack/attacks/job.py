"""The ATM attack job (arXiv 2306.02583 §4): prompt sets → clean check → attack → hard samples.

`run(config, workdir)` does, for each prompt set ("short", "long"):
  1. clean check — one image per clean prompt (noise `fold_in(clean key, prompt index)`), judged by
     the attack's classifier; prompts it already misclassifies are skipped and counted, as the
     released code does;
  2. attack — the clean-correct prompts in groups of `population`, each group one sharded
     population (`atm.Attack`), `attack.num_iters` Adam steps; checkpointed every
     `checkpoint_every` iterations (atomic msgpack), so a killed run resumes where it stopped and
     ends with the same results as an uninterrupted one;
  3. evaluation — `num_samples` hard prompts per attacked prompt drawn from softmax(θ), decoded to
     text, re-tokenized and generated (noise per sample, or the clean check's noise with
     `eval_noise="fixed"`), judged by every judge. Success of a sample (the paper's rule): the
     attack's classifier's top-1 is not the prompt's class AND the class word is still in the
     decoded prompt (`prompts.class_word_present`); a prompt is attacked successfully when any of
     its samples succeeds. Further judges (`config.judges`) read the same images with the same rule
     and are reported beside it;
  4. baseline — random token substitution at the same number of sampled prompts: sample j of a
     prompt replaces as many of its free positions as the attack's sample j changed, chosen at
     random, with random non-special tokens, and is generated with sample j's noise.

Outputs (workdir): config.json; results.jsonl (one row per prompt, see `_row`); clean_<set>.json;
images/<set>/*.png (captioned successful samples); summary.json, report.md and plots/ (rebuilt from
the files by `report.write_report`); timing.json (kept apart so results.jsonl is identical across
resumes); checkpoint.msgpack (the group in progress).
"""

import dataclasses
import json
import math
import pathlib
import time
import zlib

from absl import logging
import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdiffattack import costs
from jaxdiffattack import io
from jaxdiffattack import labels as labels_lib
from jaxdiffattack import pages
from jaxdiffattack import runs
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import objectives as objectives_lib
from jaxdiffattack import scoring as scoring_lib
from jaxdiffattack import sharding
from jaxdiffattack import text
from jaxdiffattack.attacks import atm
from jaxdiffattack.attacks import modes
from jaxdiffattack.attacks import prompts as prompts_lib
from jaxdiffattack.attacks import report
from jaxdiffattack.attacks import similarity
from jaxdiffattack.errors import check
from jaxdiffattack.toy import oracle

EVAL_NOISE = ("per_sample", "fixed")
BASELINES = ("random_substitution", "")
# Root keys of the run: fold_in(fold_in(key, set), purpose).
_ATTACK, _SAMPLES, _EVAL_NOISE, _CLEAN_NOISE, _BASELINE = range(5)
# Keys that change how a run is split or saved, not its results (excluded from the resume hash).
RUN_SHAPE_KEYS = ("microbatch", "memory_budget_gb", "checkpoint_every", "eval_batch", "steps_per_call",
                  "images_per_prompt", "report_only")


def grad_steps_of(grad_depth, num_steps: int) -> int | None:
  """config.attack.grad_depth → `Settings.grad_steps`: "last" → 1, "all" → None, "K" → K."""
  depth = str(grad_depth).strip()
  if depth == "last":
    return 1
  if depth == "all":
    return None
  check(depth.isdigit() and 1 <= int(depth) <= num_steps, "attack.grad_depth", grad_depth,
        f"use 'last' (as published), 'all', or an integer K in 1..num_steps={num_steps} (the "
        "last K steps)")
  return int(depth)


def settings_of(config) -> atm.Settings:
  a = config.attack
  return atm.Settings(
      init_logit=a.init_logit, kappa=a.kappa, lam_sim=a.lam_sim, lam_fluency=a.lam_fluency,
      lr=a.lr, num_iters=a.num_iters, batch_size=a.batch_size, tau=a.tau, hard=a.hard,
      grad_steps=grad_steps_of(a.grad_depth, config.num_steps), remat=a.remat,
      guidance_scale=config.guidance_scale)


def validate(config) -> None:
  """One-line ConfigErrors for bad values, before anything is loaded or written."""
  settings_of(config).validate(config.num_steps, prefix="attack.")
  costs.validate_microbatch(config.get("microbatch"), config.get("memory_budget_gb"))
  check(config.mode in modes.MODES, "mode", config.mode, f"use one of {sorted(modes.MODES)}")
  check(isinstance(config.num_samples, int) and config.num_samples >= 1, "num_samples",
        config.num_samples, "use an integer >= 1")
  check(isinstance(config.population, int) and config.population >= 0, "population",
        config.population, "use an integer >= 1, or 0 for all prompts at once")
  check(config.eval_noise in EVAL_NOISE, "eval_noise", config.eval_noise, f"use one of {EVAL_NOISE}")
  check(config.baseline in BASELINES, "baseline", config.baseline, f"use one of {BASELINES}")
  check(isinstance(config.checkpoint_every, int) and config.checkpoint_every >= 1,
        "checkpoint_every", config.checkpoint_every, "use an integer >= 1 (iterations)")
  check(isinstance(config.steps_per_call, int) and config.steps_per_call >= 1
        and config.checkpoint_every % config.steps_per_call == 0, "steps_per_call",
        config.steps_per_call, "use an integer >= 1 that divides checkpoint_every")
  check(isinstance(config.eval_batch, int) and config.eval_batch >= 1, "eval_batch",
        config.eval_batch, "use an integer >= 1")
  check(len(config.prompt_sets) > 0, "prompt_sets", dict(config.prompt_sets),
        "name at least one set, e.g. {'short': 'short'}")
  for name in config.prompt_sets:
    check(name in ("short", "long"), f"prompt_sets.{name}", config.prompt_sets[name],
          "the sets are named 'short' and 'long'")
  check(math.isfinite(config.guidance_scale), "guidance_scale", config.guidance_scale,
        "use a finite number")
  check(not config.oracle or config.label_set == "toy", "oracle", config.oracle,
        "the oracle reads toy-world images only: set oracle=False or label_set='toy'")


def config_hash(config) -> str:
  """16 hex digits of the resolved config (a ConfigDict or its JSON dict) without run-shape keys."""
  return runs.config_hash(config, RUN_SHAPE_KEYS)


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


class Job:
  """A loaded attack run: model, scorers, compiled functions (see the module docstring)."""

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
    self.settings = settings_of(config)
    self.guidance = config.guidance_scale > 1.0
    self.scoring = _build_scoring(config)
    self.judge_names = tuple(self.scoring.roles) + (("oracle",) if config.oracle else ())
    uncond = text.encode_prompts(self.sd, params["text_encoder"], [""])[0]
    self.params = sharding.put_replicated(
        {"text_encoder": params["text_encoder"], "uncond": uncond,
         "fused": sampler_lib.fused_params(params, self.scoring.params)}, self.mesh)
    self.text_params = params["text_encoder"]
    self.attack = atm.Attack.build(self.sd, self.settings, self.scoring.score_fn,
                                   "attack/margin", scheduler=config.scheduler,
                                   num_steps=config.num_steps, latent_shape=self.latent_shape)
    self.compiled = self.attack.compile(self.mesh, config.steps_per_call)
    self.image_sampler = sampler_lib.PopulationSampler(
        self.sd, params, sampler_lib.SamplerSettings(
            scheduler=config.scheduler, num_steps=config.num_steps, guidance=self.guidance),
        mesh=self.mesh, microbatch=config.microbatch, score_fn=self.scoring.score_fn,
        memory_budget_gb=config.get("memory_budget_gb"),
        score_params=self.scoring.params)
    self.uncond = np.asarray(uncond)
    self.key = jax.random.PRNGKey(config.seed)
    special = [self.sd.tokenizer.bos_token_id, self.sd.tokenizer.eos_token_id,
               self.sd.tokenizer.pad_token_id]
    self.ordinary_tokens = np.setdiff1d(np.arange(self.attack.vocab_size), special).astype(np.int32)

  # ---------------------------------------------------------------------------------- data --
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
    idf = similarity.idf_table(enc.ids, enc.lengths, self.attack.vocab_size)
    weights = similarity.reference_weights(enc.ids, enc.lengths, idf)
    reference = np.asarray(text.encode_prompts(self.sd, self.text_params,
                                               list(prompt_set.prompts)), np.float32)
    key = jax.random.fold_in(self.key, zlib.crc32(name.encode()))
    return PromptData(name, prompt_set, enc, free, reference, weights, key)

  # ---------------------------------------------------------------------------- generation --
  def judge(self, texts: list[str], latents: np.ndarray, labels: np.ndarray) -> dict:
    """Generates and judges prompts in slices of `eval_batch`: {"images", "<judge>/<score>"}."""
    batch = self.config.eval_batch
    out = {}
    for start in range(0, len(texts), batch):
      stop = min(start + batch, len(texts))
      pad = lambda a: sharding.pad_population(np.asarray(a)[start:stop], batch)
      chunk = pad(np.asarray(texts, object))
      cond = text.encode_prompts(self.sd, self.text_params, [str(t) for t in chunk])
      result = self.image_sampler(pad(latents), cond, self.uncond, self.config.guidance_scale,
                                  aux=self.scoring.aux(labels=pad(labels)))
      got = {"images": result.images, **result.scores}
      if self.config.oracle:
        verdicts = oracle.verdict(result.images[:stop - start], np.asarray(labels)[start:stop])
        got.update({f"oracle/{k}": np.array([v[k] for v in verdicts], object)
                    for k in ("pred", "confidence", "failure", "unclear", "reason")})
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

  def readings(self, scores: dict, label: np.ndarray, texts, class_text) -> dict:
    """Per judge: pred names, confidences, failure and success flags of judged samples.

    The toy oracle (`toy.oracle.verdict`) fails an image only when it is sure the class is not
    drawn; an image it cannot read is `unclear` (pred None), neither failure nor success.
    """
    del label
    present = np.array([prompts_lib.class_word_present(t, c) for t, c in zip(texts, class_text)])
    out = {}
    for name in self.judge_names:
      if name == "oracle":
        failure = scores["oracle/failure"].astype(bool)
        out[name] = {"pred": [p if p is not None else "unclear" for p in scores["oracle/pred"]],
                     "confidence": np.array([np.nan if c is None else c
                                             for c in scores["oracle/confidence"]], np.float64),
                     "failure": failure, "success": failure & present,
                     "unclear": scores["oracle/unclear"].astype(bool),
                     # Scores cached before oracle v2 have no reason.
                     "reason": list(scores.get("oracle/reason",
                                               [""] * len(scores["oracle/pred"])))}
        continue
      role = self.scoring.roles[name]
      pred = np.asarray(scores[f"{name}/pred"], np.int64)
      top1_hit = np.asarray(scores[f"{name}/top1_hit"], np.float64)
      # A non-finite image/score (`sampler.nonfinite_as_nan`) is neither a failure nor correct.
      nonfinite = ~np.isfinite(top1_hit)
      failure = top1_hit < 0.5
      out[name] = {"pred": [None if bad else role.output_ids[p]
                            for p, bad in zip(pred, nonfinite)],
                   "confidence": np.asarray(scores[f"{name}/confidence"], np.float64),
                   "failure": failure, "success": failure & present, "nonfinite": nonfinite}
    out["class_word_present"] = present
    return out

  def clean_check(self, data: PromptData) -> dict:
    """{"correct": [N] bool, "pred", "confidence"} by the attack's judge, cached on disk."""
    path = self.workdir / f"clean_{data.name}.json"
    if path.exists():
      return json.loads(path.read_text())
    n = len(data.prompt_set)
    index = np.arange(n)
    latents = self.noise(data.purpose_key(_CLEAN_NOISE), index, None)
    scores = self.judge(list(data.prompt_set.prompts), latents,
                        np.asarray(data.prompt_set.labels))
    read = self.readings(scores, np.asarray(data.prompt_set.labels), data.prompt_set.prompts,
                         data.encoded.class_text)
    # A prompt whose clean image is not finite (the model overflowed) is not "correctly
    # generated": it is skipped like a clean failure and flagged `nonfinite`.
    nonfinite = read["attack"]["nonfinite"]
    clean = {"correct": [not (f or bad) for f, bad in zip(read["attack"]["failure"].tolist(),
                                                          nonfinite.tolist())],
             "nonfinite": nonfinite.tolist(),
             "pred": {j: read[j]["pred"] for j in self.judge_names},
             "confidence": {j: read[j]["confidence"].tolist() for j in self.judge_names}}
    for i, image in enumerate(scores["images"]):   # beside the attacked images on index.html
      io.write_png(self.workdir / "images" / data.name / "clean" / f"p{i:04d}.png", image)
    io.write_json(path, clean)
    logging.info("[%s] clean check: %d of %d prompts correctly generated (the rest are skipped; "
                 "%d non-finite)", data.name, sum(clean["correct"]), n, int(nonfinite.sum()))
    return clean

  # -------------------------------------------------------------------------------- attack --
  def attack_group(self, data: PromptData, group: int, index: np.ndarray, progress) -> tuple:
    """Runs (or resumes) the attack of prompts `index`.

    Returns (final logits [P, L, V], curves {metric: [iterations, P]}, iteration resumed at).
    """
    c = self.config
    padded = _pad_index(index, self.mesh.size)
    prompts = jax.tree_util.tree_map(lambda a: sharding.put_population(a, self.mesh),
                                     data.prompts(padded))
    state = self.compiled.init(sharding.put_population(data.encoded.ids[padded], self.mesh))
    curves = {name: np.zeros((0, len(padded)), np.float32) for name in atm.Metrics._fields}
    saved = self._load_checkpoint(data.name, group, state, curves)
    if saved is not None:
      state, curves = saved
    key = sharding.put_replicated(data.purpose_key(_ATTACK), self.mesh)
    done = start = int(state.iteration)
    while done < self.settings.num_iters:
      calls = min(c.checkpoint_every, self.settings.num_iters - done) // c.steps_per_call
      for _ in range(max(calls, 1)):
        state, metrics = self.compiled.step(self.params, state, prompts, key)
        curves = {k: np.concatenate([curves[k], sharding.to_host(getattr(metrics, k))])
                  for k in curves}
      done = int(state.iteration)
      self._save_checkpoint(data.name, group, state, curves)
      progress(data.name, group, done, curves)
    logits = sharding.to_host(state.logits)[:len(index)]
    return logits, {k: v[:, :len(index)] for k, v in curves.items()}, start

  def evaluate_group(self, data: PromptData, index: np.ndarray, logits: np.ndarray,
                     clean_latents: np.ndarray) -> dict:
    """Hard samples of the attacked prompts and their baseline, generated and judged."""
    c = self.config
    s = c.num_samples
    prompts = data.prompts(index)
    ids = np.asarray(atm.hard_ids(data.purpose_key(_SAMPLES), jnp.asarray(logits), prompts,
                                  np.arange(s)))                                  # [P, S, L]
    if c.eval_noise == "fixed":
      latents = np.repeat(clean_latents[:, None], s, axis=1)
    else:
      latents = self.noise(data.purpose_key(_EVAL_NOISE), index, s)
    flat = lambda a: a.reshape(len(index) * s, *a.shape[2:])
    labels = np.repeat(np.asarray(data.prompt_set.labels)[index], s)
    class_text = np.repeat(np.asarray(data.encoded.class_text, object)[index], s)
    out = {"prompts": len(index),
           "attack": self._judge_ids(flat(ids), flat(latents), labels, class_text)}
    if c.baseline:
      changed = (ids != data.encoded.ids[index][:, None]).sum(-1)                 # [P, S]
      base_ids = np.asarray(random_substitution(
          data.purpose_key(_BASELINE), prompts, jnp.asarray(changed), self.ordinary_tokens))
      out["baseline"] = self._judge_ids(flat(base_ids), flat(latents), labels, class_text)
      out["baseline"]["changed"] = changed.reshape(-1)
    out["attack"]["changed"] = (ids != data.encoded.ids[index][:, None]).sum(-1).reshape(-1)
    return out

  def _judge_ids(self, ids, latents, labels, class_text) -> dict:
    texts = prompts_lib.decode(self.sd, ids)
    scores = self.judge(texts, latents, labels)
    read = self.readings(scores, labels, texts, class_text)
    return {"texts": texts, "images": scores["images"], "read": read}

  # ----------------------------------------------------------------------------- checkpoint --
  def _checkpoint_path(self) -> pathlib.Path:
    return self.workdir / "checkpoint.msgpack"

  def _save_checkpoint(self, name, group, state, curves) -> None:
    host = jax.tree_util.tree_map(sharding.to_host, state)
    payload = {"config_hash": config_hash(self.config), "set": name, "group": group,
               "state": flax.serialization.to_state_dict(host), "curves": curves}
    runs.write_checkpoint(self._checkpoint_path(), payload)

  def _load_checkpoint(self, name, group, template, curves):
    path = self._checkpoint_path()
    payload = runs.read_checkpoint(path)
    if payload is None:
      return None
    check(payload["config_hash"] == config_hash(self.config), "workdir", str(self.workdir),
          "holds an attack with a different config; use a new --workdir")
    if payload["set"] != name or int(payload["group"]) != group:
      return None
    host = jax.tree_util.tree_map(sharding.to_host, template)
    state = flax.serialization.from_state_dict(host, payload["state"])
    state = jax.tree_util.tree_map(
        lambda a, t: sharding.put_global(a, t.sharding), state, template)
    logging.info("[%s] resuming group %d at iteration %d from %s", name, group,
                 int(state.iteration), path)
    return state, {k: np.asarray(payload["curves"][k]) for k in curves}


def random_substitution(key: jax.Array, prompts: atm.Prompts, changed: jax.Array,
                        tokens: np.ndarray) -> jax.Array:
  """Baseline prompts [P, S, L]: sample j of prompt p gets `changed[p, j]` of its free positions,
  chosen uniformly, replaced by uniform draws from `tokens` (fold_in(fold_in(key, p), j))."""
  tokens = jnp.asarray(tokens)

  def one(k, ids, free, count):
    k_pos, k_tok = jax.random.split(k)
    order = jnp.where(free, jax.random.uniform(k_pos, ids.shape), 2.0)
    rank = jnp.argsort(jnp.argsort(order))
    draw = tokens[jax.random.randint(k_tok, ids.shape, 0, len(tokens))]
    return jnp.where(free & (rank < count), draw, ids)

  def per_prompt(k, ids, free, counts):
    return jax.vmap(lambda j, n: one(jax.random.fold_in(k, j), ids, free, n))(
        jnp.arange(counts.shape[0], dtype=jnp.uint32), counts)

  return jax.vmap(per_prompt)(atm.prompt_keys(key, jnp.asarray(prompts.index)),
                              jnp.asarray(prompts.ids), jnp.asarray(prompts.free), changed)


def _latent_shape(sd, image_size: int) -> tuple[int, ...]:
  if not image_size:
    return tuple(sd.latent_shape)
  check(image_size % sd.vae_scale_factor == 0, "image_size", image_size,
        f"use a multiple of the VAE's factor {sd.vae_scale_factor} (0: the model's default)")
  side = image_size // sd.vae_scale_factor
  return (sd.latent_channels, side, side)


def _pad_index(index: np.ndarray, devices: int) -> np.ndarray:
  """Pads prompt indices to a multiple of the device count by repeating the last one."""
  size = -(-len(index) // devices) * devices
  return np.concatenate([index, np.repeat(index[-1:], size - len(index))])


def _build_scoring(config) -> scoring_lib.Scoring:
  """One scoring for the loss and the judges: role "attack" (the attack's classifier: margin for
  the loss — XLA drops the other judges from the compiled attack step, whose loss does not read
  them) and one role per further judge, each with pred / confidence / top1_hit."""
  roles = {"attack": {"classifiers": (config.judge,)}}
  roles.update({name: {"classifiers": (name,)} for name in config.judges})
  objectives = {name: ("pred", "confidence", "top1_hit") for name in roles}
  objectives["attack"] = ("margin",) + objectives["attack"]
  block = ml_collections.ConfigDict({
      "label_set": config.label_set,
      "scoring": {"kind": "models", "roles": roles, "objectives": objectives,
                  "scorers": dict(config.scorers)}})
  return objectives_lib.make_scoring(block)


def _groups(indices: np.ndarray, population: int) -> list[np.ndarray]:
  size = population or max(len(indices), 1)
  return [indices[i:i + size] for i in range(0, len(indices), size)]


def _rounded(x) -> float | None:
  x = float(x)
  return round(x, 6) if math.isfinite(x) else None


def _row(data: PromptData, i: int, clean: dict, judges, result=None, position=None,
         curves=None) -> dict:
  """results.jsonl row of prompt i (attacked when `result` is given)."""
  ps = data.prompt_set
  row = {"set": data.name, "index": i, "prompt": ps.prompts[i], "class_word": ps.class_words[i],
         "label": int(ps.labels[i]), "clean_correct": bool(clean["correct"][i]),
         # Clean checks cached before the flag existed have no "nonfinite".
         "clean_nonfinite": "nonfinite" in clean and bool(clean["nonfinite"][i]),
         "clean": {j: {"pred": clean["pred"][j][i],
                       "confidence": _rounded(clean["confidence"][j][i])} for j in judges}}
  if result is None:
    row.update(attacked=False, success=None, samples=0, successful_prompts=[])
    return row
  s = len(result["attack"]["texts"]) // result["prompts"]
  sl = slice(position * s, (position + 1) * s)
  for method in ("attack", "baseline"):
    if method not in result:
      continue
    got = result[method]
    read = got["read"]
    successes = read["attack"]["success"][sl]
    block = {
        "success": bool(successes.any()),
        "successful_samples": int(successes.sum()),
        "successful_prompts": list(dict.fromkeys(np.asarray(got["texts"][sl], object)[successes]
                                                 .tolist())),
        "class_word_kept": int(read["class_word_present"][sl].sum()),
        "tokens_changed_mean": round(float(np.mean(got["changed"][sl])), 4),
        "judges": {j: {"success": bool(read[j]["success"][sl].any()),
                       "successful_samples": int(read[j]["success"][sl].sum()),
                       "failures": int(read[j]["failure"][sl].sum()),
                       **({"unclear": int(read[j]["unclear"][sl].sum())}
                          if "unclear" in read[j] else {})} for j in judges},
    }
    if method == "attack":
      row.update(attacked=True, samples=s, **block)
      row["loss_curve"] = [round(float(v), 5) for v in curves["loss"][:, position]]
      row["curves"] = {k: [round(float(v), 5) for v in curves[k][:, position]]
                       for k in ("adv_loss", "similarity", "margin", "entropy")}
    else:
      row["baseline"] = block
  return row


def run(config: ml_collections.ConfigDict, workdir, *, mesh=None, model_loader=None) -> dict:
  """Runs (or resumes) the attack on every prompt set; writes every output (module docstring)."""
  validate(config)
  workdir = pathlib.Path(workdir)
  if config.report_only:
    out = report.write_report(workdir)
    pages.write_index(workdir)
    return out
  # Results and clean checks on disk belong to the config that wrote them.
  runs.check_workdir(config, workdir, "attack", RUN_SHAPE_KEYS)
  job = Job(config, workdir, mesh=mesh, model_loader=model_loader)
  datas = [job.prepare(name, spec) for name, spec in config.prompt_sets.items()]
  # The inputs are read and checked: only now is anything written.
  runs.write_config(config, workdir)      # (multi-host: also checks the workdir is shared)
  results_path = workdir / "results.jsonl"
  rows = io.read_jsonl(results_path) if results_path.exists() else []
  done = {(r["set"], r["index"]) for r in rows}
  timing_path = workdir / "timing.json"
  timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
  plan = []
  for data in datas:
    clean = job.clean_check(data)
    correct = np.flatnonzero(clean["correct"])
    for i in np.flatnonzero(~np.asarray(clean["correct"])):
      if (data.name, int(i)) not in done:
        rows.append(_row(data, int(i), clean, job.judge_names))
    plan += [(data, clean, g, idx) for g, idx in enumerate(_groups(correct, config.population))]
  io.write_jsonl(results_path, rows)
  total = sum(len(idx) for *_, idx in plan) * config.attack.num_iters
  tracker = _Progress(total, sum(len(idx) for d, _, _, idx in plan
                                 if all((d.name, int(i)) in done for i in idx)) *
                      config.attack.num_iters)
  for data, clean, group, index in plan:
    if all((data.name, int(i)) in done for i in index):
      continue
    t0 = time.perf_counter()
    logits, curves, resumed_at = job.attack_group(data, group, index, tracker.log)
    t1 = time.perf_counter()
    clean_latents = job.noise(data.purpose_key(_CLEAN_NOISE), index, None)
    result = job.evaluate_group(data, index, logits, clean_latents)
    t2 = time.perf_counter()
    new = [_row(data, int(i), clean, job.judge_names, result, k, curves)
           for k, i in enumerate(index)]
    report.save_images(workdir, data.name, index, new, result, job.judge_names,
                       config.images_per_prompt)
    rows += new
    rows.sort(key=lambda r: (r["set"], r["index"]))
    io.write_jsonl(results_path, rows)
    timing.setdefault(data.name, {"attack_s": 0.0, "eval_s": 0.0, "prompt_iterations": 0,
                                  "images": 0})
    t = timing[data.name]
    t["attack_s"] += t1 - t0
    t["eval_s"] += t2 - t1
    t["prompt_iterations"] += int(len(index) * (config.attack.num_iters - resumed_at))
    t["images"] += sum(len(result[m]["texts"]) for m in ("attack", "baseline") if m in result)
    io.write_json(timing_path, timing)
    tracker.finish_group(len(index) * config.attack.num_iters)
    for r in new:
      logging.info("[%s] prompt %d %r: %s (%d/%d samples succeed; baseline %s)", data.name,
                   r["index"], r["prompt"], "SUCCESS" if r["success"] else "no success",
                   r["successful_samples"], r["samples"],
                   r.get("baseline", {}).get("successful_samples", "-"))
  rows.sort(key=lambda r: (r["set"], r["index"]))
  io.write_jsonl(results_path, rows)
  out = report.write_report(workdir)
  pages.write_index(workdir)
  return out


class _Progress:
  """Log lines with iterations done, loss, margin and an ETA over the whole attack."""

  def __init__(self, total: int, already: int):
    self.total, self.done_before, self.start = total, already, time.perf_counter()
    self.finished = already

  def log(self, name, group, iteration, curves):
    width = curves["loss"].shape[1]
    done = self.finished + width * iteration
    elapsed = time.perf_counter() - self.start
    rate = (done - self.done_before) / max(elapsed, 1e-9)
    eta = (self.total - done) / rate if rate > 0 else float("nan")
    logging.info("[%s] group %d iteration %d  loss %.3f  margin %.3f  similarity %.3f  "
                 "%.2f prompt-iterations/s  %d/%d (%.0f%%)  elapsed %.0fs  attack ETA %.0fs",
                 name, group, iteration, float(curves["loss"][-1].mean()),
                 float(curves["margin"][-1].mean()), float(curves["similarity"][-1].mean()),
                 rate, done, self.total, 100.0 * done / max(self.total, 1), elapsed, eta)

  def finish_group(self, count: int):
    self.finished += count
