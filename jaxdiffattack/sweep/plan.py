"""What a sweep generates: its cells (shift × α), its members, their seed vectors, and the
sampler of one generator setting.

Members of one setting are flattened cell-major, then prompt, then seed. Member (cell c, prompt p,
seed s) starts from the base seed vector of (p, s) — drawn from fold_in(fold_in(key, p), s), α
never enters — shifted by its cell's shift (`jaxdiffattack.perturb`). An ancestral sampler's noise
is (p, s)'s too (`sampler.member_noise_keys`), so cells differ by their shift alone.

A setting may choose its own sampler: `setting.scheduler` (default `config.scheduler`) and
`setting.variance_type` (the ancestral "ddpm" rule's variance; default: the model's).
"""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdiffattack import costs
from jaxdiffattack import judges as judges_lib
from jaxdiffattack import labels as labels_lib
from jaxdiffattack import perturb
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import text
from jaxdiffattack.errors import check

# results.csv metric → the score (of `scoring.Scoring`) it is read from.
METRIC_SCORES = {"top1": "evaluator/top1_hit", "top5": "evaluator/top5_hit",
                 "clip_score": "evaluator/clip_score"}
# Metrics of an image judge named in config.judges (the toy oracle, world 2's oracle), read on
# the host from the images (`judges.judge_scores`): "<judge>_top1" (1 where its verdict is that
# the image shows the label: neither a failure nor unclear) and "<judge>_unclear".
IMAGE_JUDGE_METRICS = ("top1", "unclear")
ORACLE_METRICS = tuple(f"oracle_{m}" for m in IMAGE_JUDGE_METRICS)
METRICS = tuple(METRIC_SCORES)
ALL_METRICS = METRICS + tuple(f"{j}_{m}" for j in judges_lib.IMAGE_JUDGES
                              for m in IMAGE_JUDGE_METRICS)


def image_judges(config) -> tuple[str, ...]:
  """The image judges (`judges.IMAGE_JUDGES`) named in config.judges."""
  return tuple(n for n in config.get("judges", ()) if n in judges_lib.IMAGE_JUDGES)


def metrics(config) -> tuple[str, ...]:
  """The metrics a sweep records: the scores', each image judge's of config.judges, and with
  config.object_positions the named object's centroid (`OBJECT_METRICS`)."""
  out = METRICS + tuple(f"{j}_{m}" for j in image_judges(config) for m in IMAGE_JUDGE_METRICS)
  return out + (OBJECT_METRICS if config.get("object_positions", False) else ())


# The named object's centroid (x, y), fractions of the image side (x right, y down), read by
# world 2's scene oracle: object displacement under seed shifts (arXiv 2312.11473 §5).
OBJECT_METRICS = ("object_cx", "object_cy")


def object_positions(images, labels, label_names) -> dict:
  """{"object_cx", "object_cy"}: [P] float32 centroid of the largest object the world-2 oracle
  reads in the hue of each image's class (NaN when none; as `analysis.objects`' world-2
  finder), images [P, H, W, 3] made for labels [P] (indices into `label_names`)."""
  from jaxdiffattack.world2 import oracle  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.world2 import scene  # pylint: disable=g-import-not-at-top
  out = np.full((2, len(labels)), np.nan, np.float32)
  for i, (reading, label) in enumerate(zip(oracle.read(np.asarray(images)), labels)):
    hue = scene.class_hue(scene.CLASS2ID[label_names[int(label)]])
    matches = [o for o in reading.objects if o.hue == hue]
    if matches:
      out[:, i] = max(matches, key=lambda o: o.area).centroid
  return dict(zip(OBJECT_METRICS, out))


def image_judge_metrics(name: str, images, labels, label_names, prompts=None) -> dict:
  """Image judge `name`'s metrics ("<name>_top1", "<name>_unclear", each [P] float32) of
  images [P, H, W, 3] made for labels [P] (indices into `label_names`) from prompts [P]."""
  scores = judges_lib.judge_scores(name, images, labels, label_names, prompts=prompts)
  failure, unclear = scores[f"{name}/failure"] > 0.5, scores[f"{name}/unclear"] > 0.5
  return {f"{name}_top1": (~failure & ~unclear).astype(np.float32),
          f"{name}_unclear": unclear.astype(np.float32)}


@dataclasses.dataclass(frozen=True)
class Cell:
  shift: str                  # a name of perturb.SHIFTS
  alpha: tuple[float, ...]    # [perturb.ALPHA_SIZE]; the shift reads its first `arity` entries

  @property
  def label(self) -> str:
    """"0.1", or "0.1,-0.2" for a two-parameter shift."""
    arity = max(perturb.SHIFTS[self.shift].arity, 1)
    return ",".join(f"{a:g}" for a in self.alpha[:arity])


def unshifted() -> Cell:
  return Cell(perturb.UNSHIFTED, (0.0,) * perturb.ALPHA_SIZE)


def grid_cells(grids: ml_collections.ConfigDict, shifts) -> list[Cell]:
  """The unshifted cell first, then each shift's grid — the product of its parameters' values
  (`config.grids.<key>` for each of its grid keys) — except the identity (every α = 0)."""
  cells = [unshifted()]
  for shift in shifts:
    spec = perturb.SHIFTS[shift]
    for values in itertools.product(*(grids[key] for key in spec.grid)):
      if any(values):
        padding = (0.0,) * (perturb.ALPHA_SIZE - spec.arity)
        cells.append(Cell(shift, tuple(float(a) for a in values) + padding))
  return cells


def resolve_labels(config: ml_collections.ConfigDict) -> tuple[list[str], np.ndarray]:
  """(labels, their class indices [N]): config.labels, or every label of config.label_set when
  empty; indices into the label set (or into config.labels when no label set is named)."""
  names = labels_lib.class_names(config.label_set, config.labels)
  labels = list(config.labels) or list(names)
  index = {name: i for i, name in enumerate(names)}
  for label in labels:
    check(label in index, "labels", label, f"not in label_set {config.label_set!r}")
  return labels, np.asarray([index[label] for label in labels], np.int32)


def validate(config: ml_collections.ConfigDict) -> None:
  judges_lib.check_retired_keys(config)
  check(bool(config.labels) or bool(config.label_set), "labels", config.labels,
        "give labels or a label_set")
  check("{}" in config.template, "template", config.template, "must contain '{}'")
  costs.validate_microbatch(config.get("microbatch"), config.get("memory_budget_gb"))
  check(config.images_per_prompt >= 1, "images_per_prompt", config.images_per_prompt,
        "use an integer >= 1")
  shifts = sorted(name for name, spec in perturb.SHIFTS.items() if spec.arity)
  for shift in config.shifts:
    check(shift in shifts, "shifts", shift, f"use names from {shifts}")
    for key in perturb.SHIFTS[shift].grid:
      check(key in config.grids, f"grids.{key}", None, f"give the α values of shift {shift!r}")
      values = config.grids[key]
      check(isinstance(values, (list, tuple)) and all(
          isinstance(a, (int, float)) and not isinstance(a, bool) for a in values),
            f"grids.{key}", values, "give a tuple of numbers, e.g. '(-0.2, 0.2)'")
  check(len(config.settings) > 0, "settings", config.settings, "give at least one setting")
  names = [s.name for s in config.settings]
  check(len(set(names)) == len(names), "settings", names, "setting names must be unique")
  for s in config.settings:
    check(np.isfinite(s.guidance_scale), f"settings[{s.name}].guidance_scale", s.guidance_scale,
          "use a finite number (<= 1: no guidance)")
  check(config.unit >= 1, "unit", config.unit, "use an integer >= 1 (members per checkpoint)")
  if config.get("object_positions", False):
    check(config.label_set == "world2" and judges_lib.WORLD2_ORACLE in image_judges(config),
          "object_positions", True, "object positions are read by world 2's scene oracle: use "
          "label_set='world2' with 'world2_oracle' in config.judges, or False")
  for pair in config.get("paired", ()):
    check(len(pair) == 2 and all(n in names for n in pair), "paired", pair,
          f"give pairs of setting names from {names}")


@dataclasses.dataclass
class Plan:
  """The flattened members of one setting: cell-major, then prompt, then seed."""
  cells: list[Cell]
  n_prompts: int
  n_seeds: int

  @property
  def size(self) -> int:
    return len(self.cells) * self.n_prompts * self.n_seeds

  def decompose(self, members: np.ndarray):
    per_cell = self.n_prompts * self.n_seeds
    return members // per_cell, (members % per_cell) // self.n_seeds, members % self.n_seeds


def base_latents(key, prompt_idx, seed_idx, latent_shape):
  """z [P, C, h, w] and the shift keys [P] of (prompt, seed) members — α never enters."""
  def one(p, s):
    k = jax.random.fold_in(jax.random.fold_in(key, p), s)
    return (jax.random.normal(jax.random.fold_in(k, 0), latent_shape, jnp.float32),
            jax.random.fold_in(k, 1))
  return jax.vmap(one)(jnp.asarray(prompt_idx, jnp.uint32), jnp.asarray(seed_idx, jnp.uint32))


def noise_keys(plan: "Plan", members: np.ndarray, key) -> np.ndarray:
  """[P, 2] ancestral-noise keys of members: (prompt p, seed s)'s `fold_in(.., 2)` of
  fold_in(fold_in(key, p), s) — shared by every cell, α never enters."""
  _, prompt_idx, seed_idx = plan.decompose(members)
  one = lambda p, s: jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, p), s), 2)
  return np.asarray(jax.vmap(one)(jnp.asarray(prompt_idx, jnp.uint32),
                                  jnp.asarray(seed_idx, jnp.uint32)))


def shifted_latents(plan: Plan, members: np.ndarray, key, latent_shape) -> np.ndarray:
  cell_idx, prompt_idx, seed_idx = plan.decompose(members)
  z, keys = base_latents(key, prompt_idx, seed_idx, latent_shape)
  kinds = tuple(sorted({c.shift for c in plan.cells}))
  kind_ids = np.array([kinds.index(plan.cells[i].shift) for i in cell_idx], np.int32)
  alphas = np.array([plan.cells[i].alpha for i in cell_idx], np.float32)
  return np.asarray(_apply_shifts(kind_ids, z, alphas, keys, kinds))


_apply_shifts = jax.jit(perturb.apply_shifts, static_argnums=4)


@dataclasses.dataclass(frozen=True)
class SettingSampler:
  """One generator setting, loaded: its sampler and the text conditions of the sweep's prompts."""
  sd: object
  sampler: sampler_lib.PopulationSampler
  prompt_emb: np.ndarray   # [N_prompts, L, D]
  uncond: np.ndarray       # [L, D]
  guidance_scale: float

  def generate(self, plan: Plan, members: np.ndarray, key, aux=None):
    """(SampleOutput, the members' shifted seed vectors [P, C, h, w]) of `plan`'s members."""
    latents = shifted_latents(plan, members, key, self.sd.latent_shape)
    _, prompt_idx, _ = plan.decompose(members)
    keys = noise_keys(plan, members, key) if self.sampler.function.ancestral else None
    out = self.sampler(latents, self.prompt_emb[prompt_idx], self.uncond, self.guidance_scale,
                       aux=aux, noise_keys=keys)
    return out, latents


def setting_sampler(config, setting, prompts, model_loader, *, mesh=None, score_fn=None,
                    score_params=None, **settings) -> SettingSampler:
  """Loads `setting.model` and builds its `PopulationSampler` (extra `SamplerSettings` fields
  in `settings`; guidance on when the setting's scale is > 1; the setting's own `scheduler`
  and `variance_type` when it names them)."""
  sd, params = model_loader(setting.model, dtype=config.dtype)
  pop_sampler = sampler_lib.PopulationSampler(
      sd, params, sampler_lib.SamplerSettings(
          scheduler=setting.get("scheduler") or config.scheduler, num_steps=config.num_steps,
          guidance=setting.guidance_scale > 1.0, variance_type=setting.get("variance_type"),
          **settings),
      microbatch=config.microbatch, score_fn=score_fn, score_params=score_params, mesh=mesh,
      memory_budget_gb=config.get("memory_budget_gb"))
  return SettingSampler(
      sd, pop_sampler, np.asarray(text.encode_prompts(sd, params["text_encoder"], prompts)),
      np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0]),
      float(setting.guidance_scale))
