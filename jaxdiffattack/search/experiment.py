"""Failure search on a text-to-image model: SAGE's four spaces with evosax and gradients (a job).

`run(config, workdir)` builds the targets (one search per label × seed), the search space, the
fused sampler + scorer (`PopulationSampler(score_fn=...)`, population sharded over the device mesh),
and runs the batch of searches with every configured method at the same budget — an evosax
strategy, a gradient method (`search.gradient`, through the differentiable sampler) and SAGE's
random baseline (same targets, same judges) — each resumable from its own checkpoint. Per
generation all active targets' members form ONE population for the sampler.

Every evaluated image is read by the job's judges (`jaxdiffattack.judges`: the evaluator, further
models and, on the toy world, the oracle); the verdict rule (`criterion`) decides which are
failures, and each judge's failures are tracked per target too (success rates by judge). With
`filter_clean` only targets whose clean image every judge reads as the prompt's class are
searched (the others are counted and reported; with `filter_clean_judges`, only targets whose
clean image none of those judges fails). `targets_file` takes the targets from a census
(`search.targets.census_targets`). With `transfer_per_target` > 0, found latents are
tried with every other label's prompt (`search.protocol`).

Outputs in the workdir:
  config.json            the resolved config
  results.jsonl          one row per method × target: success, generation / evaluations of the
                         first success (by the rule and by each judge), evaluations used, best
                         fitness and its scores, clean-generation figures and judges, NGR (latent
                         space), CLIP figures, non-finite count, fitness curve, and the found
                         failures with their files and `judges` ({judge: {pred, confidence,
                         failure}})
  failures/<method>/tNNN/failure_K.png (+ _latent.npy, _embedding.npy, _token.npy, _prompt.txt)
                         and best.png (+ same) for every target; failures/<method>/grid.png
                         (captioned: each judge's reading under every tile)
  transfer.jsonl         (transfer_per_target > 0) found latents × other labels' prompts
  summary.json, report.md, plots/fitness_curves.png, protocol.{md,json}
                         (`report.write_report` rebuilds them)
  timing.json            wall time, images/s, ask/tell time per method
  checkpoint_<method>.msgpack   the loop state by field name (`runs.save_checkpoint`)
"""

import functools
import io as _io
import math
import pathlib

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdiffattack import costs
from jaxdiffattack import io
from jaxdiffattack import judges as judges_lib
from jaxdiffattack import labels as labels_lib
from jaxdiffattack import objectives
from jaxdiffattack import pages
from jaxdiffattack import runs
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import scoring as scoring_lib
from jaxdiffattack import sharding
from jaxdiffattack import text
from jaxdiffattack.errors import check
from jaxdiffattack.search import criterion as criterion_lib
from jaxdiffattack.search import driver
from jaxdiffattack.search import gradient
from jaxdiffattack.search import protocol
from jaxdiffattack.search import report
from jaxdiffattack.search import spaces
from jaxdiffattack.search import strategies as strategies_lib
from jaxdiffattack.search import targets as targets_lib


def validate(config: ml_collections.ConfigDict) -> None:
  check(config.space in spaces.SPACES, "space", config.space, f"use one of {sorted(spaces.SPACES)}")
  space = spaces.SPACES[config.space]
  for method in methods_of(config):
    key = "strategy.name" if method == config.strategy.name else (
        "baseline" if method == config.baseline else "methods")
    check(method in strategies_lib.names(), key, method,
          f"use one of {strategies_lib.names()}")
    check(not strategies_lib.is_gradient(method) or space.continuous, key, method,
          f"the {config.space} space is not continuous (it has no gradient): use an evosax "
          "strategy")
  check(not config.baseline or config.baseline in strategies_lib.names(), "baseline",
        config.baseline, "use 'random', another strategy name, or '' for none")
  check(isinstance(config.population_size, int) and config.population_size >= 2,
        "population_size", config.population_size, "use an integer >= 2")
  costs.validate_microbatch(config.get("microbatch"), config.get("memory_budget_gb"))
  check(config.get("microbatch") != "auto" or not any(
      strategies_lib.is_gradient(m) for m in methods_of(config)), "microbatch", "auto",
        "'auto' plans the sampler's forward pass; a gradient strategy needs more memory per "
        "member: give an integer")
  check(isinstance(config.num_generations, int) and config.num_generations >= 1,
        "num_generations", config.num_generations, "use an integer >= 1")
  check(config.stop_after_failures >= 0, "stop_after_failures", config.stop_after_failures,
        "use an integer >= 0 (0: search the whole budget)")
  check(config.archive_size >= 1, "archive_size", config.archive_size, "use an integer >= 1")
  check(config.checkpoint_every >= 1, "checkpoint_every", config.checkpoint_every,
        "use an integer >= 1 (generations between checkpoints)")
  check(0 < config.ngr_alpha < 1, "ngr_alpha", config.ngr_alpha, "use a number in (0, 1)")
  check(config.scoring.kind in objectives.KINDS, "scoring.kind", config.scoring.kind,
        f"use one of {objectives.KINDS}")
  check(np.isfinite(config.guidance_scale), "guidance_scale", config.guidance_scale,
        "use a finite number (<= 1: no guidance)")
  grad_steps = config.strategy.grad_steps
  check(grad_steps is None or not space.initial_noise or grad_steps == config.num_steps,
        "strategy.grad_steps", grad_steps, f"use None for the {config.space} space: the latents "
        "enter only through the first step, so a gradient through the last K < num_steps is zero")
  check(config.transfer_per_target >= 0 and (
      not config.transfer_per_target or space.initial_noise), "transfer_per_target",
        config.transfer_per_target, "use 0, or an integer >= 1 with a space that searches the "
        "initial noise (latent)")
  check(isinstance(config.transfer_prompts, int) and config.transfer_prompts >= 0,
        "transfer_prompts", config.transfer_prompts, "use 0 (every other label) or an integer >= 1")
  check(not config.filter_clean or not config.target_labels, "filter_clean",
        config.filter_clean, "use False for targeted searches (target_labels)")
  unknown = [j for j in config.get("filter_clean_judges", ()) if j not in config.judges]
  check(not unknown, "filter_clean_judges", tuple(config.get("filter_clean_judges", ())),
        f"name judges of config.judges={tuple(config.judges)} (empty: every judge)")
  if config.get("targets_file"):
    check(config.space == "latent", "targets_file", config.targets_file,
          f"census targets are searched in the latent space (the census measured clean seeds), "
          f"not {config.space!r}; use configs/latent_search.py or set targets_file=''")
    check(not config.target_labels, "targets_file", config.targets_file,
          "census targets are untargeted: leave target_labels empty")
    targets_lib.read_census_targets(config.targets_file)   # one-line error if missing / empty
  criterion_lib.Criterion.from_config(config)
  strategies_lib.parse_overrides(config.strategy.get("param_overrides", ""))


def methods_of(config) -> list[str]:
  """The methods of a run, in order: config.methods, or strategy.name and the baseline."""
  if config.methods:
    return list(dict.fromkeys(config.methods))
  methods = [config.strategy.name]
  if config.baseline and config.baseline != config.strategy.name:
    methods.append(config.baseline)
  return methods


def method_kind(name: str) -> str:
  if strategies_lib.is_gradient(name):
    return "gradient"
  return "random" if name in (strategies_lib.RANDOM, "RandomSearch") else "evolution"


class Search:
  """The pieces of one search run on a loaded model (shared by all methods)."""

  def __init__(self, config, sd, params, scoring, mesh=None):
    self.config = config
    self.sd = sd
    self.params = params
    self.scoring = scoring
    self.targets = targets_lib.make_targets(config)
    self.criterion = criterion_lib.Criterion.from_config(config)
    self.judges = judges_lib.make_judges(
        config.judges, scoring, labels_lib.class_names(config.get("label_set"), config.labels),
        targeted=bool(config.target_labels))
    judges_lib.check_rule(self.criterion.rule, self.judges)
    scoring.check_names(self.criterion.score_names, "criterion")
    self.key = jax.random.PRNGKey(config.seed)
    self.space = spaces.make_space(config.space, config, sd, params, self.targets, self.key)
    self.mesh = sharding.make_mesh() if mesh is None else mesh
    population = config.population_size
    self.microbatch = config.microbatch or -(-population // self.mesh.size)   # or "auto"
    self.guidance = config.guidance_scale > 1.0
    self.settings = sampler_lib.SamplerSettings(
        scheduler=config.scheduler, num_steps=config.num_steps, guidance=self.guidance)
    # Images leave the devices only when a judge reads them on the host (the toy oracle).
    self.sampler = sampler_lib.PopulationSampler(
        sd, params, sampler_lib.SamplerSettings(
            scheduler=config.scheduler, num_steps=config.num_steps, guidance=self.guidance,
            return_images=self.judges.needs_images),
        mesh=self.mesh, microbatch=self.microbatch, score_fn=scoring.score_fn,
        score_params=scoring.params, memory_budget_gb=config.get("memory_budget_gb"))
    self.uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0])
    # Per target: the class to judge against (the prompt's, or the targeted search's target
    # class) and the CLEAN prompt (CLIP scores compare with it).
    self.target_labels = np.array([t.target_index for t in self.targets], np.int32)
    self.target_prompts = np.array([t.prompt for t in self.targets], object)  # [T] clean
    self.target_aux = scoring.aux(labels=self.target_labels,
                                  prompts=[t.prompt for t in self.targets])
    self._gradient_fn = None
    self.clean = self._evaluate_clean()
    self.included = self.clean["passes"] if config.filter_clean else np.ones(
        len(self.targets), bool)

  # ---------------------------------------------------------------------------- evaluation --
  def _member_aux(self, target_of_member):
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[target_of_member], self.target_aux)

  def sample_scores(self, latents, cond, labels, aux, prompts=None) -> dict:
    """Scores [M] of generated images (the oracle's among them when it judges) made for labels
    [M] from prompts [M] (the clean prompts: what the images were made for)."""
    out = self.sampler(latents, cond, self.uncond, self.config.guidance_scale, aux=aux)
    scores = {k: np.asarray(v, np.float64) for k, v in out.scores.items() if np.ndim(v) == 1}
    return scores | self.judges.image_scores(out.images, labels, prompts)

  def _evaluate_clean(self) -> dict:
    """Scores and judges' readings of every target's unperturbed generation (its base latent and
    clean prompt); `passes`: every judge reads the prompt's class."""
    t_idx = np.arange(len(self.targets))
    latents, cond = zip(*(self.space.clean(t) for t in t_idx))
    scores = self.sample_scores(np.stack(latents), np.stack(cond), self.target_labels,
                                self._member_aux(t_idx), self.target_prompts[t_idx])
    readings = self.judges.read(scores)
    clip = scores[self.criterion.clip] if self.criterion.clip else np.full(len(t_idx), np.nan)
    names = [t.label for t in self.targets]
    filter_judges = tuple(self.config.get("filter_clean_judges", ()))
    if filter_judges:   # the named judges do not fail the clean image
      passes = np.logical_and.reduce([~readings[j].failure for j in filter_judges])
    else:               # every judge reads the prompt's class
      passes = np.logical_and.reduce([np.array([p == n for p, n in zip(r.pred, names)])
                                      for r in readings.values()])
    return {"scores": scores, "clip": clip, "verdict": self.criterion.verdict(readings),
            "readings": readings, "passes": passes}

  def _evaluation(self, scores, decoded, active, population, grad=None) -> driver.Evaluation:
    """Fitness, success, records, counts and judge flags of A × P members."""
    target_of_member = np.repeat(active, population)
    penalty = np.asarray(decoded.penalty, np.float64)
    feasible = np.asarray(decoded.feasible, bool)
    readings = self.judges.read(scores)
    fitness, success, clip_ok = self.criterion.reduce(
        scores, readings, penalty, feasible, self.clean["clip"][target_of_member])
    verdict = self.criterion.verdict(readings)
    records = {f"score/{k}": v for k, v in scores.items()}
    records.update({f"space/{name}": v for name, v in decoded.metrics.items()})
    records["penalty"] = penalty
    shape = (len(active), population)
    per_target = lambda v: v.reshape(shape).sum(axis=1)
    counts = {"verdict": per_target(verdict), "clip_rejected": per_target(verdict & ~clip_ok),
              "infeasible": per_target(verdict & ~feasible)}
    flags = {f"judge/{name}": r.failure.reshape(shape) for name, r in readings.items()}
    return driver.Evaluation(
        fitness=fitness.reshape(shape), success=success.reshape(shape),
        records={k: np.asarray(v, np.float64).reshape(shape) for k, v in records.items()},
        counts=counts, flags=flags,
        grad=None if grad is None else grad.reshape(shape + grad.shape[1:]))

  def evaluate(self, solutions: np.ndarray, active: np.ndarray) -> driver.Evaluation:
    """Solutions [A, P, n] of the active targets → fitness, success, records, counts, flags."""
    population = solutions.shape[1]
    decoded = self.space.decode_population(solutions, active)          # [A·P, ...]
    target_of_member = np.repeat(active, population)
    scores = self.sample_scores(decoded.latents, decoded.cond, self.target_labels[target_of_member],
                                self._member_aux(target_of_member),
                                self.target_prompts[target_of_member])
    return self._evaluation(scores, decoded, active, population)

  def evaluate_with_grad(self, solutions: np.ndarray, active: np.ndarray) -> driver.Evaluation:
    """`evaluate` plus ∇ fitness w.r.t. the solutions (one forward and one backward pass of the
    fused sampler + scorer per member, sharded over the mesh)."""
    if self._gradient_fn is None:
      s = self.config.strategy
      settings = sampler_lib.SamplerSettings(
          scheduler=self.config.scheduler, num_steps=self.config.num_steps,
          guidance=self.guidance, return_images=self.judges.needs_images, remat=s.remat,
          grad_steps=s.grad_steps)
      self._gradient_fn = gradient.FitnessGradient(
          self.space, self.sd, settings, self.scoring.score_fn, self.sampler.params,
          functools.partial(self.criterion.fitness_of, xp=jnp), self.uncond,
          self.config.guidance_scale, self.mesh, self.microbatch)
    population = solutions.shape[1]
    target_of_member = np.repeat(active, population)
    out = self._gradient_fn(solutions.reshape(-1, solutions.shape[-1]), target_of_member,
                            self._member_aux(target_of_member),
                            self.clean["clip"][target_of_member])
    scores = out["scores"] | self.judges.image_scores(out["images"],
                                                       self.target_labels[target_of_member],
                                                       self.target_prompts[target_of_member])
    return self._evaluation(scores, out["decoded"], active, population, grad=out["grad"])

  # -------------------------------------------------------------------------------- search --
  def make_strategy(self, name: str):
    s = self.config.strategy
    if strategies_lib.is_gradient(name):
      # Device arrays: the projection indexes them by a traced target index.
      space, space_params = self.space, jax.tree_util.tree_map(jnp.asarray, self.space.params)
      return gradient.GradientStrategy(
          name, self.config.population_size, self.space.num_dims,
          num_targets=len(self.targets), lr=s.lr, std_init=s.std_init, pgd_norm=s.pgd_norm,
          project=lambda x, t: space.project(space_params, x, t))
    return strategies_lib.BatchedStrategy(
        name, self.config.population_size, self.space.num_dims, num_targets=len(self.targets),
        std_init=s.std_init,
        params=dict(s.params) | strategies_lib.parse_overrides(s.get("param_overrides", "")),
        kwargs=dict(s.kwargs),
        sampling_fn=self.space.sample_prior, max_full_cov_dims=s.max_full_cov_dims)

  def run_method(self, name: str, checkpoint_path=None) -> driver.LoopState:
    c = self.config
    strategy = self.make_strategy(name)
    settings = driver.LoopSettings(
        num_generations=c.num_generations, stop_after_failures=c.stop_after_failures,
        archive_size=c.archive_size, diversity_weight=c.criterion.diversity_weight,
        checkpoint_every=c.checkpoint_every, label=f"search[{c.space}/{name}]")
    evaluate = self.evaluate_with_grad if strategy.needs_grad else self.evaluate
    return driver.run_loop(
        strategy, evaluate, jax.random.fold_in(self.key, 2),
        self.space.init_means(), settings, checkpoint_path=checkpoint_path,
        config_hash=runs.config_hash(c), similarity=self.space.similarity,
        initial_active=self.included)

  def member_readings(self, records: dict, index) -> dict:
    """The judges' readings of one stored member (records by name → arrays; index into them)."""
    scores = {name[len("score/"):]: np.atleast_1d(np.asarray(v)[index])
              for name, v in records.items() if name.startswith("score/")}
    return self.judges.read(scores)

  def member_judges(self, records: dict, index) -> dict:
    """The `judges` entry of one stored member."""
    return judges_lib.record(self.member_readings(records, index), 0)


def _json_scalar(x):
  x = float(x)
  return x if math.isfinite(x) else None


def _records_at(records: dict, index) -> dict:
  return {k: _json_scalar(v[index]) for k, v in records.items()}


def _short(records: dict, criterion: criterion_lib.Criterion) -> dict:
  """The scores a reader looks at first, named by their part in the criterion."""
  rule = criterion.rule
  judge = rule.judge if rule.name in ("top1_miss", "confident_miss") else ""
  out = {"fitness_score": records.get(f"score/{criterion.fitness}"),
         "verdict_margin": records.get(f"score/{judge}/margin") if judge else None}
  if criterion.clip:
    out["clip"] = records.get(f"score/{criterion.clip}")
  return out


def target_rows(search: Search, method: str, state: driver.LoopState, files: dict) -> list[dict]:
  """results.jsonl rows of one method (deterministic: no timing)."""
  c = search.config
  obj = search.criterion
  best_rec, arch_rec, counts = state.best_record, state.archive_record, state.counts
  gradient_method = strategies_lib.is_gradient(method)
  rows = []
  for target in search.targets:
    t = target.index
    n_found = int(state.failures[t])
    failures = []
    for k in range(min(n_found, c.archive_size)):
      rec = {name: _json_scalar(v[t, k]) for name, v in arch_rec.items()}
      entry = {"generation": int(state.archive_generation[t, k]),
               "member": int(state.archive_member[t, k]),
               "fitness": _json_scalar(state.archive_fitness[t, k]),
               "scores": _short(rec, obj),
               "judges": search.member_judges(arch_rec, (t, k)),
               "records": rec,
               "files": files.get((t, f"failure_{k}"), []),
               **search.space.describe(state.archive_solution[t, k], t)}
      failures.append(entry)
    n_arch = len(failures)
    if n_arch >= 2:
      sim = search.space.similarity(state.archive_solution[t, :n_arch],
                                    state.archive_solution[t, :n_arch])
      failure_similarity = float(sim[np.triu_indices(n_arch, 1)].mean())
    else:
      failure_similarity = None
    first = int(state.first_success[t])
    best = _records_at(best_rec, t) if best_rec else {}
    best_judges = search.member_judges(best_rec, t) if best_rec else None
    clean_scores = {k: _json_scalar(v[t]) for k, v in search.clean["scores"].items()}
    per_judge_first = {name[len("judge/"):]: int(v[t]) if v[t] >= 0 else None
                       for name, v in state.flag_first.items()}
    row = {
        "method": method, "strategy": method, "kind": method_kind(method), "space": c.space,
        "target": t, "label": target.label, "prompt": target.prompt,
        "seed_index": target.seed_index, "target_label": target.target_label,
        **({"prompt_kind": target.kind, "clean_rate": target.clean_rate} if target.kind else {}),
        "searched": bool(search.included[t]), "population_size": c.population_size,
        "budget": c.population_size * c.num_generations,
        "success": first >= 0,
        "first_success_generation": first if first >= 0 else None,
        "evaluations_to_first_success": (first + 1) * c.population_size if first >= 0 else None,
        "evaluations": int(state.evaluations[t]),
        "gradient_evaluations": int(state.evaluations[t]) if gradient_method else 0,
        # Budget accounting (protocol.budgets): sampler + scorer forward passes of one member,
        # and backward passes (gradient methods: one per evaluation).
        "forward_evaluations": int(state.evaluations[t]),
        "backward_passes": int(state.evaluations[t]) if gradient_method else 0,
        "failures_found": n_found,
        # Each judge: the generation its first failure was seen, and failing images seen.
        "judge_first_generation": per_judge_first,
        "judge_failures": {name[len("judge/"):]: int(v[t])
                           for name, v in state.flag_count.items()},
        "best_fitness": _json_scalar(state.best_fitness[t]),
        "best_generation": int(state.best_generation[t]),
        "best": {"scores": _short(best, obj), "records": best,
                 "verdict": (None if best_judges is None else
                             bool(obj.verdict(search.member_readings(best_rec, t))[0])),
                 "judges": best_judges,
                 "files": files.get((t, "best"), []),
                 **search.space.describe(state.best_solution[t], t)},
        "clean": {"scores": clean_scores, "verdict": bool(search.clean["verdict"][t]),
                  "judges": judges_lib.record(search.clean["readings"], t),
                  "passes": bool(search.clean["passes"][t]),
                  "clip": _json_scalar(search.clean["clip"][t])},
        "failure_similarity": failure_similarity,   # mean pairwise, in the space's measure
        "nonfinite": int(state.nonfinite[t]),
        "counts": {k: int(v[t]) for k, v in counts.items()},
        "curve_best": [_json_scalar(v) for v in state.curve_best[:, t]],
        "curve_mean": [_json_scalar(v) for v in state.curve_mean[:, t]],
        "curve_successes": [int(v) for v in state.curve_successes[:, t]],
        "failures": failures,
    }
    rows.append(row)
  return rows


def save_failures(search: Search, method: str, state: driver.LoopState, workdir: pathlib.Path,
                  render: bool) -> dict:
  """Writes each target's failures and best solution (PNG + artifacts) and a grid of the
  failures captioned with every judge's reading; returns their files."""
  items = []  # (t, name, solution, judges record or None)
  for target in search.targets:
    t = target.index
    if not search.included[t]:
      continue
    for k in range(min(int(state.failures[t]), search.config.archive_size)):
      items.append((t, f"failure_{k}", state.archive_solution[t, k],
                    search.member_judges(state.archive_record, (t, k))))
    items.append((t, "best", state.best_solution[t], None))
  files = {}
  images = None
  if render and items:
    decoded = search.space.decode_population(np.stack([x for _, _, x, _ in items])[:, None],
                                             np.array([t for t, _, _, _ in items]))
    image_sampler = sampler_lib.PopulationSampler(
        search.sd, search.params, search.settings, mesh=search.mesh,
        microbatch=search.microbatch, memory_budget_gb=search.config.get("memory_budget_gb"))
    images = image_sampler(decoded.latents, decoded.cond, search.uncond,
                           search.config.guidance_scale).images
  base = workdir / "failures" / method
  for i, (t, name, x, _) in enumerate(items):
    rel = []
    folder = base / f"t{t:03d}"
    if images is not None:
      io.write_png(folder / f"{name}.png", images[i])
      rel.append(str((folder / f"{name}.png").relative_to(workdir)))
    for fname, value in search.space.artifacts(x, t).items():
      path = folder / f"{name}_{fname}"
      if isinstance(value, str):
        io.atomic_write_bytes(path, (value + "\n").encode())
      else:
        buffer = _io.BytesIO()
        np.save(buffer, np.asarray(value))
        io.atomic_write_bytes(path, buffer.getvalue())
      rel.append(str(path.relative_to(workdir)))
    files[(t, name)] = rel
  if images is not None:
    found = [i for i, item in enumerate(items) if item[1].startswith("failure")]
    if found:
      captions = [[f"t{items[i][0]} {search.targets[items[i][0]].label}"] +
                  judges_lib.caption(items[i][3]) for i in found]
      io.write_png(base / "grid.png", runs.captioned_grid(
          images[found], captions, cols=min(6, len(found)),
          upscale=max(1, 96 // images.shape[1])))
  return files


def save_clean(search: Search, workdir: pathlib.Path) -> None:
  """clean/t<t>.png: every searched target's unperturbed image (its base latent and clean
  prompt), shown beside its failures on the run's index.html and rated on the rating page."""
  t_idx = [t.index for t in search.targets if search.included[t.index]]
  if not t_idx:
    return
  latents, cond = zip(*(search.space.clean(t) for t in t_idx))
  image_sampler = sampler_lib.PopulationSampler(
      search.sd, search.params, search.settings, mesh=search.mesh, microbatch=search.microbatch)
  images = image_sampler(np.stack(latents), np.stack(cond), search.uncond,
                         search.config.guidance_scale).images
  for t, image in zip(t_idx, images):
    io.write_png(workdir / "clean" / f"t{t:03d}.png", image)


def run(config: ml_collections.ConfigDict, workdir, *,
        scoring: scoring_lib.Scoring | None = None, model_loader=None, mesh=None) -> dict:
  """Runs (or resumes) every method of the search; writes every output. Returns the report."""
  validate(config)
  if config.get("report_only", False):
    out = report.write_report(workdir)
    pages.write_index(workdir)
    return out
  workdir, scoring, model_loader = runs.begin(config, workdir, scoring, model_loader, "search")
  sd, params = model_loader(config.model, dtype=config.dtype)
  search = Search(config, sd, params, scoring, mesh=mesh)
  runs.write_config(config, workdir)
  if config.filter_clean:
    logging.info("filter_clean: %d of %d targets pass every judge when clean; searching those",
                 int(search.included.sum()), len(search.targets))
  if config.save_images:
    save_clean(search, workdir)
  rows, timing, transfer, transferred = [], {}, [], set()
  for method in methods_of(config):
    state = search.run_method(method, workdir / f"checkpoint_{method}.msgpack")
    files = save_failures(search, method, state, workdir, config.save_images)
    method_rows = target_rows(search, method, state, files)
    search.space.annotate_rows(method_rows, state.archive_solution)
    rows += method_rows
    timing[method] = state.timing.as_dict()
    _log_failures(method, method_rows)
    if config.transfer_per_target:
      found = protocol.found_latents(search, method, state)
      transfer += protocol.transfer(search, found)
      transferred.update(t for _, t, _, _ in found)
  if config.transfer_per_target:
    transfer += protocol.transfer(search, protocol.clean_latents(search, transferred))
  io.write_jsonl(workdir / "results.jsonl", rows)
  io.write_json(workdir / "timing.json", timing)
  if config.transfer_per_target:
    io.write_jsonl(workdir / "transfer.jsonl", transfer)
  out = report.write_report(workdir)
  pages.write_index(workdir)
  for method, s in out["summary"]["methods"].items():
    logging.info("%s: success %d/%d targets, evaluations to first success %s, images/s %s",
                 method, s["successes"], s["targets"], s["evaluations_to_first_success_mean"],
                 s["images_per_s"])
  return out


def _log_failures(method, rows):
  for r in rows:
    if not r["searched"]:
      continue
    if r["success"]:
      f = r["failures"][0]
      where = f["files"][0] if f["files"] else ""
      extra = f" prompt {f['prompt']!r}" if "prompt" in f else ""
      logging.info("[%s] target %d %r: failure at generation %d (%d evaluations)%s %s", method,
                   r["target"], r["prompt"], r["first_success_generation"],
                   r["evaluations_to_first_success"], extra, where)
    else:
      logging.info("[%s] target %d %r: no failure in %d evaluations (best fitness %s)", method,
                   r["target"], r["prompt"], r["evaluations"], r["best_fitness"])
