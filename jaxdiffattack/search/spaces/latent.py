"""Latent space: the initial noise z [C, h, w] of the clean prompt (SAGE, arXiv 2306.00974, §3.3).

SAGE searches for latents that give distorted or unrelated images for ordinary prompts while the
latents themselves are "not outliers" of N(0, I). Two ways to keep them in distribution
(`config.latent.mode`):

  * "sphere" (default): z = √d · x / ‖x‖. A d-dimensional N(0, I) draw concentrates on this sphere
    (‖z‖ = √d (1 + O(1/√d))), so every candidate has exactly the typical norm; the search is over
    directions. No penalty; always feasible.
  * "penalty": z = x, and fitness += weight · KL(N(μ̂, σ̂²) ‖ N(0, 1)) with μ̂, σ̂² the mean and
    variance of z's d elements, KL = (σ̂² + μ̂² − 1 − ln σ̂²) / 2; feasible when KL ≤ max_kl.

Each target's search starts from its base latent z_t (the clean generation). The random baseline
draws fresh z ~ N(0, I) (then mapped by the same rule), i.e. SAGE's random sampling of seeds.
Found latents are judged by the Non-Gaussian Rate (`annotate_rows`, with
`jaxdiffattack.search.report.normality_pvalues`).
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack.errors import check
from jaxdiffattack.search import report
from jaxdiffattack.search.spaces.base import Decoded
from jaxdiffattack.search.spaces.base import Space

MODES = ("sphere", "penalty")


def gaussian_kl(z: jax.Array) -> jax.Array:
  """KL(N(mean, var) ‖ N(0, 1)) of each row's elements; z [M, d] → [M]."""
  mean = z.mean(axis=1)
  var = jnp.maximum(z.var(axis=1), 1e-12)
  return 0.5 * (var + mean**2 - 1.0 - jnp.log(var))


class LatentSpace(Space):
  name = "latent"
  initial_noise = True

  def __init__(self, config, sd, params, targets, key):
    super().__init__(config, sd, params, targets, key)
    self.cfg = config.latent
    check(self.cfg.mode in MODES, "latent.mode", self.cfg.mode, f"use one of {MODES}")
    self.num_dims = int(np.prod(self.latent_shape))

  def init_means(self) -> np.ndarray:
    return self.base_latents.reshape(len(self.targets), -1).astype(np.float32)

  def sample_prior(self, key):
    return jax.random.normal(key, (self.num_dims,))

  def to_latents(self, x: jax.Array) -> jax.Array:
    """Solutions [M, n] → latents [M, C, h, w] (the constraint applied)."""
    if self.cfg.mode == "sphere":
      norm = jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), 1e-12)
      x = x * (np.sqrt(self.num_dims) / norm)
    return x.reshape((-1,) + self.latent_shape)

  def project(self, params, x, t):
    """On the sphere: x scaled to norm √d (the decoded latent itself); penalty mode: x."""
    del params, t
    return self.to_latents(x).reshape(x.shape) if self.cfg.mode == "sphere" else x

  def encode(self, latents, t) -> np.ndarray:
    del t
    return np.asarray(latents, np.float32).reshape(len(latents), -1)

  def decode(self, params, x, t) -> Decoded:
    latents = self.to_latents(x)
    flat = latents.reshape(latents.shape[0], -1)
    kl = gaussian_kl(flat)
    if self.cfg.mode == "penalty":
      penalty = self.cfg.penalty_weight * kl
      feasible = kl <= self.cfg.max_kl
    else:
      penalty = jnp.zeros(len(flat))
      feasible = jnp.ones(len(flat), bool)
    metrics = {"latent_norm_ratio": jnp.linalg.norm(flat, axis=1) / np.sqrt(self.num_dims),
               "latent_mean": flat.mean(axis=1), "latent_std": flat.std(axis=1),
               "latent_kl": kl}
    return Decoded(latents, self._clean_cond(params, t, len(flat)), penalty, feasible, metrics)

  def annotate_rows(self, rows, archive) -> None:
    """NGR per found failure (KS vs N(0, 1) and D'Agostino–Pearson at config.ngr_alpha)."""
    alpha = self.config.ngr_alpha
    for row in rows:
      if not row["failures"]:
        row["ngr"] = None
        continue
      found = archive[row["target"], :len(row["failures"])]
      p = report.normality_pvalues(np.asarray(self.to_latents(jnp.asarray(found))))
      for k, failure in enumerate(row["failures"]):
        failure["ngr_pvalue"] = {name: float(p[name][k]) for name in report.NGR_TESTS}
        failure["ngr_reject"] = {name: bool(p[name][k] < alpha) for name in report.NGR_TESTS}
      row["ngr"] = {name: float(np.mean(p[name] < alpha)) for name in report.NGR_TESTS}
