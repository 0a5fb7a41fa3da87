"""Evolutionary failure search on a text-to-image model: SAGE's four spaces with evosax (a job).

`run(config, workdir)` builds the targets (one search per label × seed), the search space, the
fused sampler + scorer (`PopulationSampler(score_fn=...)`, population sharded over the device mesh,
only scores leave the devices), and runs the batch of searches with the configured strategy, then
the equal-budget random baseline (SAGE's comparison; same targets, same judge), each resumable from
its own checkpoint. Per generation all active targets' members form ONE population for the sampler.

Outputs in the workdir:
  config.json            the resolved config
  results.jsonl          one row per method × target: success, generation / evaluations of the
                         first success, evaluations used, best fitness and its scores, evaluator
                         verdict, clean-generation figures, NGR (latent space), CLIP figures,
                         non-finite count, fitness curve, and the found failures with their files
  failures/<method>/tNNN/failure_K.png (+ _latent.npy, _embedding.npy, _token.npy, _prompt.txt)
                         and best.png (+ same) for every target; failures/<method>/grid.png
  summary.json, report.md, plots/fitness_curves.png   (`report.write_report` rebuilds them)
  timing.json            wall time, images/s, ask/tell time per method
  checkpoint_<method>.npz
"""

import hashlib
import io as _io
import json
import math
import pathlib

from absl import logging
import jax
import ml_collections
import numpy as np

from jaxdiffattack import io
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import scoring as scoring_lib
from jaxdiffattack import sharding
from jaxdiffattack import text
from jaxdiffattack.errors import check
from jaxdiffattack.search import criterion as criterion_lib
from jaxdiffattack.search import driver
from jaxdiffattack.search import report
from jaxdiffattack.search import spaces
from jaxdiffattack.search import strategies as strategies_lib
from jaxdiffattack.search import targets as targets_lib


def validate(config: ml_collections.ConfigDict) -> None:
  check(config.space in spaces.SPACES, "space", config.space, f"use one of {sorted(spaces.SPACES)}")
  check(config.strategy.name in strategies_lib.STRATEGIES, "strategy.name", config.strategy.name,
        f"use one of {strategies_lib.names()}")
  check(not config.baseline or config.baseline in strategies_lib.STRATEGIES, "baseline",
        config.baseline, "use 'random', another strategy name, or '' for none")
  check(isinstance(config.population_size, int) and config.population_size >= 2,
        "population_size", config.population_size, "use an integer >= 2")
  check(isinstance(config.num_generations, int) and config.num_generations >= 1,
        "num_generations", config.num_generations, "use an integer >= 1")
  check(config.stop_after_failures >= 0, "stop_after_failures", config.stop_after_failures,
        "use an integer >= 0 (0: search the whole budget)")
  check(config.archive_size >= 1, "archive_size", config.archive_size, "use an integer >= 1")
  check(config.checkpoint_every >= 1, "checkpoint_every", config.checkpoint_every,
        "use an integer >= 1 (generations between checkpoints)")
  check(0 < config.ngr_alpha < 1, "ngr_alpha", config.ngr_alpha, "use a number in (0, 1)")
  check(config.scoring.kind in scoring_lib.KINDS, "scoring.kind", config.scoring.kind,
        f"use one of {scoring_lib.KINDS}")
  check(np.isfinite(config.guidance_scale), "guidance_scale", config.guidance_scale,
        "use a finite number (<= 1: no guidance)")
  criterion_lib.Criterion.from_config(config)
  strategies_lib.parse_overrides(config.strategy.get("param_overrides", ""))


def config_hash(config) -> str:
  keep = {k: v for k, v in io.config_to_dict(config).items()
          if k not in ("report_only", "save_images", "checkpoint_every", "microbatch")}
  return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def methods_of(config) -> list[str]:
  methods = [config.strategy.name]
  if config.baseline and config.baseline != config.strategy.name:
    methods.append(config.baseline)
  return methods


class Search:
  """The pieces of one search run on a loaded model (shared by all methods)."""

  def __init__(self, config, sd, params, scoring, mesh=None):
    self.config = config
    self.sd = sd
    self.params = params
    self.targets = targets_lib.make_targets(config)
    self.criterion = criterion_lib.Criterion.from_config(config)
    scoring.check_names(self.criterion.score_names, "criterion")
    self.key = jax.random.PRNGKey(config.seed)
    self.space = spaces.make_space(config.space, config, sd, params, self.targets, self.key)
    self.mesh = sharding.make_mesh() if mesh is None else mesh
    population = config.population_size
    self.microbatch = config.microbatch or -(-population // self.mesh.size)
    self.guidance = config.guidance_scale > 1.0
    self.settings = sampler_lib.SamplerSettings(
        scheduler=config.scheduler, num_steps=config.num_steps, guidance=self.guidance)
    self.sampler = sampler_lib.PopulationSampler(
        sd, params, sampler_lib.SamplerSettings(
            scheduler=config.scheduler, num_steps=config.num_steps, guidance=self.guidance,
            return_images=False),
        mesh=self.mesh, microbatch=self.microbatch, score_fn=scoring.score_fn,
        score_params=scoring.params)
    self.uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0])
    # Per target: the class to judge against (the prompt's, or the targeted search's target
    # class) and the CLEAN prompt (CLIP scores compare with it).
    self.target_aux = scoring.aux(labels=[t.target_index for t in self.targets],
                                  prompts=[t.prompt for t in self.targets])
    self.clean = self._evaluate_clean()

  # ---------------------------------------------------------------------------- evaluation --
  def _sample_scores(self, latents, cond, target_of_member) -> dict:
    out = self.sampler(latents, cond, self.uncond, self.config.guidance_scale,
                       aux=jax.tree_util.tree_map(lambda a: np.asarray(a)[target_of_member],
                                                  self.target_aux))
    return {k: np.asarray(v, np.float64) for k, v in out.scores.items() if np.ndim(v) == 1}

  def _evaluate_clean(self) -> dict:
    """Scores of every target's unperturbed generation (its base latent and clean prompt)."""
    t_idx = np.arange(len(self.targets))
    latents, cond = zip(*(self.space.clean(t) for t in t_idx))
    scores = self._sample_scores(np.stack(latents), np.stack(cond), t_idx)
    clip = scores[self.criterion.clip] if self.criterion.clip else np.full(len(t_idx), np.nan)
    return {"scores": scores, "clip": clip, "verdict": self.criterion.verdict(scores)}

  def evaluate(self, solutions: np.ndarray, active: np.ndarray) -> driver.Evaluation:
    """Solutions [A, P, n] of the active targets → fitness, success, records, counts."""
    num_active, population = solutions.shape[:2]
    decoded = [self.space.decode(solutions[a], int(t)) for a, t in enumerate(active)]
    target_of_member = np.repeat(active, population)
    scores = self._sample_scores(np.concatenate([d.latents for d in decoded]),
                                 np.concatenate([d.cond for d in decoded]), target_of_member)
    penalty = np.concatenate([d.penalty for d in decoded])
    feasible = np.concatenate([d.feasible for d in decoded])
    fitness, success, clip_ok = self.criterion.reduce(
        scores, penalty, feasible, self.clean["clip"][target_of_member])
    verdict = self.criterion.verdict(scores)
    records = {f"score/{k}": v for k, v in scores.items()}
    for name in decoded[0].metrics:
      records[f"space/{name}"] = np.concatenate([d.metrics[name] for d in decoded])
    records["penalty"] = penalty
    shape = (num_active, population)
    per_target = lambda v: v.reshape(shape).sum(axis=1)
    counts = {"verdict": per_target(verdict), "clip_rejected": per_target(verdict & ~clip_ok),
              "infeasible": per_target(verdict & ~feasible)}
    return driver.Evaluation(
        fitness=fitness.reshape(shape), success=success.reshape(shape),
        records={k: np.asarray(v, np.float64).reshape(shape) for k, v in records.items()},
        counts=counts)

  # -------------------------------------------------------------------------------- search --
  def make_strategy(self, name: str) -> strategies_lib.BatchedStrategy:
    s = self.config.strategy
    return strategies_lib.BatchedStrategy(
        name, self.config.population_size, self.space.num_dims, num_targets=len(self.targets),
        std_init=s.std_init,
        params=dict(s.params) | strategies_lib.parse_overrides(s.get("param_overrides", "")),
        kwargs=dict(s.kwargs),
        sampling_fn=self.space.sample_prior, max_full_cov_dims=s.max_full_cov_dims)

  def run_method(self, name: str, checkpoint_path=None) -> dict:
    c = self.config
    settings = driver.LoopSettings(
        num_generations=c.num_generations, stop_after_failures=c.stop_after_failures,
        archive_size=c.archive_size, diversity_weight=c.criterion.diversity_weight,
        checkpoint_every=c.checkpoint_every, label=f"search[{c.space}/{name}]")
    return driver.run_loop(
        self.make_strategy(name), self.evaluate, jax.random.fold_in(self.key, 2),
        self.space.init_means(), settings, checkpoint_path=checkpoint_path,
        config_hash=config_hash(c), similarity=self.space.similarity)


def _json_scalar(x):
  x = float(x)
  return x if math.isfinite(x) else None


def _records_at(records: dict, index) -> dict:
  return {k: _json_scalar(v[index]) for k, v in records.items()}


def _short(records: dict, criterion: criterion_lib.Criterion) -> dict:
  """The scores a reader looks at first, named by their part in the criterion."""
  out = {"fitness_score": records.get(f"score/{criterion.fitness}"),
         "verdict_score": records.get(f"score/{criterion.success}")}
  if criterion.clip:
    out["clip"] = records.get(f"score/{criterion.clip}")
  return out


def target_rows(search: Search, method: str, state: dict, files: dict) -> list[dict]:
  """results.jsonl rows of one method (deterministic: no timing)."""
  c = search.config
  obj = search.criterion
  best_rec = driver.records_of(state, "best_record")
  arch_rec = driver.records_of(state, "archive_record")
  counts = driver.records_of(state, "count")
  rows = []
  for target in search.targets:
    t = target.index
    n_found = int(state["failures"][t])
    failures = []
    for k in range(min(n_found, c.archive_size)):
      rec = {name: _json_scalar(v[t, k]) for name, v in arch_rec.items()}
      entry = {"generation": int(state["archive_generation"][t, k]),
               "member": int(state["archive_member"][t, k]),
               "fitness": _json_scalar(state["archive_fitness"][t, k]),
               "scores": _short(rec, obj), "records": rec,
               "files": files.get((t, f"failure_{k}"), []),
               **search.space.describe(state["archive_solution"][t, k], t)}
      failures.append(entry)
    n_arch = len(failures)
    if n_arch >= 2:
      sim = search.space.similarity(state["archive_solution"][t, :n_arch],
                                    state["archive_solution"][t, :n_arch])
      failure_similarity = float(sim[np.triu_indices(n_arch, 1)].mean())
    else:
      failure_similarity = None
    first = int(state["first_success"][t])
    best = _records_at(best_rec, t) if best_rec else {}
    best_score = best.get(f"score/{obj.success}")
    best_verdict = (None if best_score is None else
                    bool(obj.verdict({obj.success: np.array([best_score])})[0]))
    clean_scores = {k: _json_scalar(v[t]) for k, v in search.clean["scores"].items()}
    row = {
        "method": method, "strategy": method, "space": c.space, "target": t,
        "label": target.label, "prompt": target.prompt, "seed_index": target.seed_index,
        "target_label": target.target_label, "population_size": c.population_size,
        "budget": c.population_size * c.num_generations,
        "success": first >= 0,
        "first_success_generation": first if first >= 0 else None,
        "evaluations_to_first_success": (first + 1) * c.population_size if first >= 0 else None,
        "evaluations": int(state["evaluations"][t]),
        "failures_found": n_found,
        "best_fitness": _json_scalar(state["best_fitness"][t]),
        "best_generation": int(state["best_generation"][t]),
        "best": {"scores": _short(best, obj), "records": best,
                 "verdict": best_verdict,
                 "files": files.get((t, "best"), []),
                 **search.space.describe(state["best_solution"][t], t)},
        "clean": {"scores": clean_scores, "verdict": bool(search.clean["verdict"][t]),
                  "clip": _json_scalar(search.clean["clip"][t])},
        "failure_similarity": failure_similarity,   # mean pairwise, in the space's measure
        "nonfinite": int(state["nonfinite"][t]),
        "counts": {k: int(v[t]) for k, v in counts.items()},
        "curve_best": [_json_scalar(v) for v in state["curve_best"][:, t]],
        "curve_mean": [_json_scalar(v) for v in state["curve_mean"][:, t]],
        "curve_successes": [int(v) for v in state["curve_successes"][:, t]],
        "failures": failures,
    }
    rows.append(row)
  return rows


def add_ngr(search: Search, rows: list[dict], state: dict) -> None:
  """Latent space: NGR per found failure (KS vs N(0, 1) and D'Agostino–Pearson at α)."""
  if search.config.space != "latent":
    return
  alpha = search.config.ngr_alpha
  for row in rows:
    t = row["target"]
    if not row["failures"]:
      row["ngr"] = None
      continue
    latents = search.space.to_latents(state["archive_solution"][t, :len(row["failures"])])
    p = report.normality_pvalues(latents)
    for k, failure in enumerate(row["failures"]):
      failure["ngr_pvalue"] = {name: float(p[name][k]) for name in report.NGR_TESTS}
      failure["ngr_reject"] = {name: bool(p[name][k] < alpha) for name in report.NGR_TESTS}
    row["ngr"] = {name: float(np.mean(p[name] < alpha)) for name in report.NGR_TESTS}


def save_failures(search: Search, method: str, state: dict, workdir: pathlib.Path,
                  render: bool) -> dict:
  """Writes each target's failures and best solution (PNG + artifacts); returns their files."""
  items = []  # (t, name, solution)
  for target in search.targets:
    t = target.index
    for k in range(min(int(state["failures"][t]), search.config.archive_size)):
      items.append((t, f"failure_{k}", state["archive_solution"][t, k]))
    items.append((t, "best", state["best_solution"][t]))
  files = {}
  images = None
  if render and items:
    decoded = [search.space.decode(np.asarray(x)[None], t) for t, _, x in items]
    image_sampler = sampler_lib.PopulationSampler(
        search.sd, search.params, search.settings, mesh=search.mesh,
        microbatch=search.microbatch)
    images = image_sampler(np.concatenate([d.latents for d in decoded]),
                           np.concatenate([d.cond for d in decoded]), search.uncond,
                           search.config.guidance_scale).images
  base = workdir / "failures" / method
  for i, (t, name, x) in enumerate(items):
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
    found = [i for i, (_, name, _) in enumerate(items) if name.startswith("failure")]
    if found:
      upscale = max(1, 64 // images.shape[1])
      io.write_png(base / "grid.png", io.image_grid(images[found], cols=min(8, len(found)),
                                                    upscale=upscale))
  return files


def run(config: ml_collections.ConfigDict, workdir, *,
        scoring: scoring_lib.Scoring | None = None, model_loader=None, mesh=None) -> dict:
  """Runs (or resumes) the search and its baseline; writes every output. Returns the rows."""
  validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if config.get("report_only", False):
    return report.write_report(workdir)
  io.write_json(workdir / "config.json", io.config_to_dict(config))
  if model_loader is None:
    from jaxdiffattack.models import load_stable_diffusion  # pylint: disable=g-import-not-at-top
    model_loader = load_stable_diffusion
  if scoring is None:
    scoring = scoring_lib.make_scoring(config)
  sd, params = model_loader(config.model, dtype=config.dtype)
  search = Search(config, sd, params, scoring, mesh=mesh)
  rows, timing = [], {}
  for method in methods_of(config):
    state = search.run_method(method, workdir / f"checkpoint_{method}.npz")
    files = save_failures(search, method, state, workdir, config.save_images)
    method_rows = target_rows(search, method, state, files)
    add_ngr(search, method_rows, state)
    rows += method_rows
    timing[method] = {k: float(state[k]) for k in driver.TIMING_KEYS}
    _log_failures(method, method_rows)
  io.write_jsonl(workdir / "results.jsonl", rows)
  io.write_json(workdir / "timing.json", timing)
  out = report.write_report(workdir)
  for method, s in out["summary"]["methods"].items():
    logging.info("%s: success %d/%d targets, evaluations to first success %s, images/s %s",
                 method, s["successes"], s["targets"], s["evaluations_to_first_success_mean"],
                 s["images_per_s"])
  return out


def _log_failures(method, rows):
  for r in rows:
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
