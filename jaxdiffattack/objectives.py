"""Objectives — what a score measures — of classifier / CLIP roles, built into a `Scoring`.

Three modules, one concept each: `scorers` are the models that score images, `objectives`
(here) what each score of a role measures, and `scoring.Scoring` the job's bundle of them;
`make_scoring(config)` builds that bundle from a job's config (scoring → objectives →
scorers: no module imports one above it).

Roles. A *surrogate* is what a search optimises; an *evaluator* decides success — configured
separately and by default different models, so a search cannot win by fooling the judge (SAGE,
arXiv 2306.00974, optimises an ensemble of classifiers and judges success separately). A role is
an ensemble of classifier-like scorers (image classifiers and/or CLIP zero-shot), combined by
  * "mean_probs": role logits = log(mean_m softmax(logits_m)) (softmax of them = mean
    probability; margins are then in log-probability units), or
  * "mean_logits": role logits = mean_m logits_m;
(a single member's logits pass through unchanged), plus optionally one CLIP for `clip_score`.
Members are combined over their shared output classes (`space="model"`, e.g. all ImageNet-1k
heads, or the toy models; reordered to the first member's order where their id2label orders
differ), or over the experiment's label set (`space="labels"`: every member restricted to the
label-set classes, i.e. a K-way classifier).

Objectives (`OBJECTIVES`: one function + one line to add one), each → [P]:
  target_prob, target_logprob, margin (ATM's logit_y − max_{j≠y} logit_j; ATM's loss is
  max(margin + κ, 0)), top1_hit, top5_hit (1.0 / 0.0) — all against the target aux["label"];
  pred (the role's top-1 output index) and confidence (its softmax probability) — a judge's
  reading, no target needed; clip_score (CLIPScore with the member's prompt, Hessel et al. 2021).
All are jit-able and vmap-able; target_prob, target_logprob, margin, confidence and clip_score
are differentiable (the hits and pred have zero gradient).

`build(config)` returns a `scoring.Scoring` whose scores are named "<role>/<objective>", fused
with the sampler (one compiled program; only [P]-shaped scores leave the devices):

  fit = objectives.build(objectives.default_config("toy"))
  sampler = PopulationSampler(sd, params, SamplerSettings(..., return_images=False),
                              score_fn=fit.score_fn, score_params=fit.params)
  out = sampler(latents, cond, uncond, 7.5, aux=fit.aux(labels=labels, prompts=prompts))
  out.scores["surrogate/target_prob"], out.scores["evaluator/top1_hit"]   # [P] each

`aux` holds per-member inputs: "label" [P] int32 label-set indices, and "clip_text"
{CLIP scorer name: [P, D] normalised prompt embeddings} (computed on the host once per prompt).
"""

import dataclasses
import math
from typing import Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdiffattack import judges as judges_lib
from jaxdiffattack import labels as labels_lib
from jaxdiffattack import scorers as scorers_lib
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.errors import UserError
from jaxdiffattack import scoring as scoring_lib
from jaxdiffattack.scoring import Scoring

COMBINE = ("mean_probs", "mean_logits")
SPACES = ("model", "labels")


class RoleOutput(NamedTuple):
  """What objectives see for one role."""
  logits: jax.Array | None      # [P, K] over the role's output classes
  target: jax.Array | None      # [P] int32 target index among them
  clip_score: jax.Array | None  # [P]


class Objective(NamedTuple):
  fn: Callable[[RoleOutput], jax.Array]   # → [P]
  needs: str   # "target" (logits and aux["label"]), "logits" (logits only) or "clip"


def _target_prob(o: RoleOutput):
  return scorers_lib.target_prob(o.logits, o.target)


def _target_logprob(o: RoleOutput):
  return scorers_lib.target_logprob(o.logits, o.target)


def _margin(o: RoleOutput):
  return scorers_lib.margin(o.logits, o.target)


def _top1_hit(o: RoleOutput):
  return scorers_lib.topk_hit(o.logits, o.target, 1)


def _top5_hit(o: RoleOutput):
  return scorers_lib.topk_hit(o.logits, o.target, 5)


def _pred(o: RoleOutput):
  return jnp.argmax(o.logits, axis=-1).astype(jnp.int32)


def _confidence(o: RoleOutput):
  return jnp.max(jax.nn.softmax(o.logits, axis=-1), axis=-1)


def _clip_score(o: RoleOutput):
  return o.clip_score


OBJECTIVES = {
    "target_prob": Objective(_target_prob, "target"),
    "target_logprob": Objective(_target_logprob, "target"),
    "margin": Objective(_margin, "target"),
    "top1_hit": Objective(_top1_hit, "target"),
    "top5_hit": Objective(_top5_hit, "target"),
    "pred": Objective(_pred, "logits"),
    "confidence": Objective(_confidence, "logits"),
    "clip_score": Objective(_clip_score, "clip"),
}


@dataclasses.dataclass(frozen=True)
class RoleSpec:
  """A role's configuration: which scorers, combined how."""
  classifiers: tuple[str, ...] = ()   # scorer names (classifiers and/or CLIP zero-shot)
  clip: str = ""                      # CLIP scorer for clip_score ("" = none)
  combine: str = "mean_probs"         # COMBINE
  space: str = "model"                # SPACES


@dataclasses.dataclass(frozen=True, eq=False)
class Role:
  """A loaded role (static; hashable by identity)."""
  name: str
  spec: RoleSpec
  classifiers: tuple[scorers_lib.Scorer, ...]
  clip: scorers_lib.Scorer | None
  output_ids: tuple[str, ...]       # [K] class ids of the role's outputs
  label_index: np.ndarray           # [K_label] int32: label-set index → role output index
  member_outputs: tuple[np.ndarray | None, ...] = ()  # per member [K] its output index of
                                                      # each role output (None: identity)

  @property
  def scorers(self) -> tuple[scorers_lib.Scorer, ...]:
    return self.classifiers + ((self.clip,) if self.clip is not None else ())


# Default roles per label set: surrogate and evaluator are different models (checked in `build`).
# The toy surrogate is an ensemble (SAGE optimises an ensemble, so that a search cannot win by
# fooling one classifier): the toy ResNet and CLIP zero-shot, mean probabilities.
DEFAULT_ROLES = {
    "toy": {"surrogate": dict(classifiers=("toy_resnet", "toy_clip")),
            "evaluator": dict(classifiers=("toy_vit",), clip="toy_clip")},
    # World 2: optimise against its ViT + ResNet + noise-trained ResNet (SAGE's robust member)
    # + CLIP, judge with the held-out RegNetY.
    "world2": {"surrogate": dict(classifiers=("world2_vit", "world2_resnet", "world2_robust",
                                              "world2_clip")),
               "evaluator": dict(classifiers=("world2_regnet",), clip="world2_clip")},
    "imagenet": {"surrogate": dict(classifiers=("resnet50",)),
                 "evaluator": dict(classifiers=("vit_b16",), clip="clip_vit_l14")},
}
DEFAULT_OBJECTIVES = {"surrogate": ("target_prob", "margin"),
                      "evaluator": ("top1_hit", "top5_hit", "margin", "clip_score")}


def default_config(label_set: str = "toy") -> ml_collections.ConfigDict:
  """The fitness config: label set, extra scorers, roles and objectives."""
  roles = DEFAULT_ROLES[label_set if label_set in DEFAULT_ROLES else "imagenet"]
  config = ml_collections.ConfigDict()
  config.labels = label_set
  config.scorers = ml_collections.ConfigDict()  # name → ScorerSpec fields (adds/overrides)
  config.roles = ml_collections.ConfigDict(
      {role: dict(dataclasses.asdict(RoleSpec(**spec))) for role, spec in roles.items()})
  config.objectives = ml_collections.ConfigDict(dict(DEFAULT_OBJECTIVES))
  return config


def _as_dict(value) -> dict:
  if value is None:
    return {}
  return dict(value.to_dict() if hasattr(value, "to_dict") else value)


def role_spec(name: str, value) -> RoleSpec:
  if isinstance(value, RoleSpec):
    spec = value
  else:
    fields = _as_dict(value)
    allowed = {f.name for f in dataclasses.fields(RoleSpec)}
    unknown = sorted(set(fields) - allowed)
    if unknown:
      raise ConfigError(f"config.roles.{name} has unknown key {unknown[0]!r}: allowed "
                        f"{sorted(allowed)}")
    if isinstance(fields.get("classifiers"), str):
      fields["classifiers"] = (fields["classifiers"],)
    fields["classifiers"] = tuple(fields.get("classifiers", ()))
    spec = RoleSpec(**fields)
  if spec.combine not in COMBINE:
    raise ConfigError(f"config.roles.{name}.combine={spec.combine!r} is invalid: use one of "
                      f"{COMBINE}")
  if spec.space not in SPACES:
    raise ConfigError(f"config.roles.{name}.space={spec.space!r} is invalid: use one of {SPACES}")
  if not spec.classifiers and not spec.clip:
    raise ConfigError(f"config.roles.{name} names no scorer: set classifiers and/or clip")
  return spec


def make_role(name: str, spec: RoleSpec, classifiers: Sequence[scorers_lib.Scorer],
              clip: scorers_lib.Scorer | None) -> Role:
  """Checks that the members can be combined and fixes the role's output space.

  space="model": the role's outputs are the first member's; other members must have the same
  classes (in any order: they are reordered). space="labels": the label set's classes.
  """
  if clip is not None and clip.type != "clip":
    raise ConfigError(f"config.roles.{name}.clip={clip.name!r} is a classifier, not a CLIP")
  output_ids, label_index, member_outputs = (), np.zeros((0,), np.int32), []
  if classifiers:
    label_set = classifiers[0].label_set
    if spec.space == "labels":
      output_ids = label_set.ids
      label_index = np.arange(len(label_set), dtype=np.int32)
      member_outputs = [m.label_map.indices for m in classifiers]
    else:
      first = classifiers[0]
      output_ids, label_index = first.label_map.output_ids, first.label_map.indices
      member_outputs = [None]
      for member in classifiers[1:]:
        position = {output_id: i for i, output_id in enumerate(member.label_map.output_ids)}
        if len(position) != len(output_ids) or set(position) != set(output_ids):
          raise ConfigError(
              f"config.roles.{name}: {first.name!r} and {member.name!r} have different output "
              f"classes ({len(output_ids)} vs {member.num_outputs}); set "
              f"config.roles.{name}.space='labels' to combine them over the label set")
        order = np.asarray([position[i] for i in output_ids], np.int32)
        member_outputs.append(None if np.array_equal(order, np.arange(len(order))) else order)
  return Role(name=name, spec=spec, classifiers=tuple(classifiers), clip=clip,
              output_ids=tuple(output_ids), label_index=np.asarray(label_index, np.int32),
              member_outputs=tuple(member_outputs))


def _combine(member_logits: list[jax.Array], how: str) -> jax.Array:
  if len(member_logits) == 1:
    return member_logits[0]
  stacked = jnp.stack(member_logits)                                     # [M, P, K]
  if how == "mean_logits":
    return stacked.mean(axis=0)
  log_probs = jax.nn.log_softmax(stacked, axis=-1)
  return jax.nn.logsumexp(log_probs, axis=0) - math.log(len(member_logits))


def role_output(role: Role, score_params, images: jax.Array, aux, cache=None) -> RoleOutput:
  """The role's logits, targets and CLIP score for images [P, H, W, 3] (pure)."""
  cache = {} if cache is None else cache

  def run(scorer):
    if scorer.name not in cache:
      cache[scorer.name] = scorers_lib.forward(scorer, score_params[scorer.name], images)
    return cache[scorer.name]

  logits = target = clip_score = None
  if role.classifiers:
    members = []
    for scorer, outputs in zip(role.classifiers, role.member_outputs):
      member = run(scorer).logits                                          # [P, C_member]
      if outputs is not None:
        member = member[:, jnp.asarray(outputs)]                           # [P, K]
      members.append(member)
    logits = _combine(members, role.spec.combine)
    if aux is not None and "label" in aux:
      target = jnp.asarray(role.label_index)[jnp.asarray(aux["label"], jnp.int32)]
  if role.clip is not None and aux is not None and "clip_text" in aux:
    text_emb = aux["clip_text"][role.clip.name]
    clip_score = scorers_lib.clip_score_from_embeddings(
        run(role.clip).image_emb, text_emb, role.clip.spec.clip_score_weight)
  return RoleOutput(logits, target, clip_score)


def _check_objectives(roles: Mapping[str, Role], objectives) -> dict[str, tuple[str, ...]]:
  if isinstance(objectives, (list, tuple)):
    objectives = {role: tuple(objectives) for role in roles}
  objectives = {k: tuple(v) for k, v in _as_dict(objectives).items()}
  for role_name, names in objectives.items():
    if role_name not in roles:
      raise ConfigError(f"config.objectives.{role_name}: no such role; roles are "
                        f"{sorted(roles)}")
    role = roles[role_name]
    for objective in names:
      if objective not in OBJECTIVES:
        raise ConfigError(f"config.objectives.{role_name}: objective {objective!r} is unknown; "
                          f"use one of {sorted(OBJECTIVES)}")
      needs = OBJECTIVES[objective].needs
      if needs == "clip" and role.clip is None:
        raise ConfigError(f"config.objectives.{role_name}: {objective!r} needs a CLIP: set "
                          f"config.roles.{role_name}.clip")
      if needs in ("target", "logits") and not role.classifiers:
        raise ConfigError(f"config.objectives.{role_name}: {objective!r} needs classifiers: set "
                          f"config.roles.{role_name}.classifiers")
  return objectives


def make_score_fn(roles: Mapping[str, Role], objectives):
  """The fused scorer for `PopulationSampler(score_fn=..., score_params=...)`.

  Args:
    roles: role name → `Role`.
    objectives: role name → objective names, or one list of names for every role.

  Returns:
    (score_fn, score_params): `score_fn(score_params, images [P, H, W, 3], aux)` →
    {"<role>/<objective>": [P]}; score_params = {scorer name: params} (each scorer once, also
    when several roles share it; its forward pass is also computed once per call).
  """
  objectives = _check_objectives(roles, objectives)
  score_params = {}
  for role in roles.values():
    for scorer in role.scorers:
      score_params[scorer.name] = scorer.params

  def score_fn(params, images, aux):
    cache, scores = {}, {}
    for role_name, names in objectives.items():
      if not names:
        continue
      out = role_output(roles[role_name], params, images, aux, cache)
      for objective in names:
        needs = OBJECTIVES[objective].needs
        if needs == "target" and out.target is None:
          raise UserError(f"objective {role_name}/{objective} needs aux['label'] (label-set "
                          "indices [P])")
        if needs == "clip" and out.clip_score is None:
          raise UserError(f"objective {role_name}/{objective} needs aux['clip_text'] (use "
                          "Scoring.aux(prompts=...))")
        scores[f"{role_name}/{objective}"] = OBJECTIVES[objective].fn(out)
    return scores

  return score_fn, score_params


def build(config, *, loaded: Mapping[str, scorers_lib.Scorer] | None = None) -> Scoring:
  """Loads every scorer the roles name (each once) and makes the fused score function.

  Args:
    config: `default_config()`-shaped: labels, scorers, roles, objectives.
    loaded: already loaded scorers by name, reused instead of loading (tests, notebooks).
  """
  get = lambda key: (config.get(key) if isinstance(config, Mapping) or hasattr(config, "get")
                     else getattr(config, key, None))
  label_set = labels_lib.get_label_set(get("labels") or "toy")
  extra = _as_dict(get("scorers"))
  role_values = _as_dict(get("roles"))
  if not role_values:
    raise ConfigError("config.roles is empty: configure at least one role (e.g. surrogate)")
  cache = dict(loaded or {})

  def scorer(name: str, key: str) -> scorers_lib.Scorer:
    if name not in cache:
      spec = scorers_lib.get_spec(name, key, extra)
      cache[name] = scorers_lib.load_scorer(name, spec, label_set)
    return cache[name]

  roles = {}
  for role_name, value in role_values.items():
    spec = role_spec(role_name, value)
    classifiers = [scorer(n, f"roles.{role_name}.classifiers") for n in spec.classifiers]
    clip = scorer(spec.clip, f"roles.{role_name}.clip") if spec.clip else None
    roles[role_name] = make_role(role_name, spec, classifiers, clip)
  check_held_out(roles)
  objectives = _check_objectives(roles, get("objectives") or {})
  score_fn, params = make_score_fn(roles, objectives)
  names = tuple(f"{role}/{objective}" for role, chosen in objectives.items()
                for objective in chosen)
  return Scoring(score_fn=score_fn, params=params, names=names,
                 make_aux=_aux_builder(roles), label_set=label_set, roles=roles,
                 jitted=jax.jit(score_fn))


def check_held_out(roles: Mapping[str, Role], optimised: str = "surrogate",
                   held_out: str = "evaluator") -> None:
  """ConfigError unless the held-out evaluator shares no classifier with the surrogate (a search
  that optimises a model also judged by it finds that model's errors, SAGE §4)."""
  if optimised not in roles or held_out not in roles:
    return
  shared = sorted({s.name for s in roles[optimised].classifiers} &
                  {s.name for s in roles[held_out].classifiers})
  if shared:
    raise ConfigError(f"config.roles.{held_out}.classifiers shares {shared} with "
                      f"config.roles.{optimised}: the held-out evaluator must differ from every "
                      "surrogate member")


def _aux_builder(roles: Mapping[str, Role]) -> Callable:
  """`make_aux(labels [P] int32, prompts [P])` → {"label": [P], "clip_text": {CLIP scorer name:
  [P, D] normalised text embeddings}}; text embeddings are computed once per prompt."""
  clips = {r.clip.name: r.clip for r in roles.values() if r.clip is not None}
  cache = {}  # (CLIP scorer name, prompt) → [D]

  def make_aux(labels, prompts):
    aux = {}
    if labels is not None:
      aux["label"] = labels
    if prompts is not None:
      aux["clip_text"] = {}
      for name, scorer in clips.items():
        new = sorted({p for p in prompts if (name, p) not in cache})
        if new:
          emb = scorers_lib.text_embeddings(scorer.model, scorer.params["model"], new)
          cache.update({(name, p): e for p, e in zip(new, emb)})
        aux["clip_text"][name] = np.stack([cache[(name, p)] for p in prompts])
    return aux

  return make_aux


# ------------------------------------------------------------------- a job's scoring --
KINDS = ("models", "synthetic")
SCORING_KEYS = ("roles", "objectives", "scorers")  # config.scoring.<key>: overrides of
                                                   # `default_config`


def make_scoring(config) -> Scoring:
  """The scoring of a job from its config: config.scoring.{kind, roles, objectives, scorers}
  and config.label_set (see the module docstring)."""
  block = config.scoring
  if block.kind not in KINDS:
    raise ConfigError(f"config.scoring.kind={block.kind!r} is invalid: use one of {KINDS}")
  if block.kind == "synthetic":
    return scoring_lib.synthetic_scoring()
  return build(scoring_config(config))


def scoring_config(config):
  """The `build` config a "models" job's config resolves to (nothing loaded):
  `default_config(config.label_set)` with the non-empty config.scoring entries in place of the
  defaults, plus the judges' roles (`with_judge_roles`)."""
  fit_config = default_config(config.label_set or "toy")
  for key in SCORING_KEYS:
    value = config.scoring.get(key)
    value = value.to_dict() if hasattr(value, "to_dict") else value
    if value:
      fit_config[key] = value
  return with_judge_roles(fit_config, config.get("judges") or ())


def with_judge_roles(fit_config, judges):
  """The objectives config with every judge's objectives: a judge that is a role gets
  `judges.JUDGE_OBJECTIVES` added to its objectives; a judge that is a scorer name becomes a role
  of that one scorer; image judges ("oracle") are skipped (they read images on the host)."""
  roles = dict(fit_config.roles.to_dict() if hasattr(fit_config.roles, "to_dict")
               else fit_config.roles)
  objectives = {k: tuple(v) for k, v in (
      fit_config.objectives.to_dict() if hasattr(fit_config.objectives, "to_dict")
      else dict(fit_config.objectives)).items()}
  for name in judges:
    if name in judges_lib.IMAGE_JUDGES:
      continue
    if name not in roles:
      roles[name] = {"classifiers": (name,)}   # a scorer by name (checked when built)
    objectives[name] = tuple(dict.fromkeys(objectives.get(name, ()) +
                                           judges_lib.JUDGE_OBJECTIVES))
  fit_config = fit_config.copy_and_resolve_references() if hasattr(
      fit_config, "copy_and_resolve_references") else dict(fit_config)
  fit_config["roles"] = roles
  fit_config["objectives"] = objectives
  return fit_config
