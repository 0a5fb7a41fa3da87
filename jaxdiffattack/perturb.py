"""Seed-vector shifts of "Investigating the Brittle Nature of Latent Space in Diffusion Models".

arXiv 2312.11473, §3.2: generation x = G(z̃, c) from a shifted initial latent z̃ = z + η, with
z ~ N(0, I) of shape [C, h, w]. The five transformations, as pure, vmap-able functions
`shift(z [C, h, w], alpha [2], key) -> z̃ [C, h, w]` (alpha is always a length-2 vector so every
shift has the same signature; unused entries are ignored):

  ums  Uniform (constant) Mean Shift:   η = α_c                      (alpha = [α_c, ·])
  rms  Uniform Random Mean Shift:       η = α_u · U[0, 1], one uniform draw per element
                                                                     (alpha = [α_u, ·])
  sds  Standard-Deviation Shift:        η = −α_s · z, i.e. z̃ = (1 − α_s) z   (alpha = [α_s, ·])
  ms   Mixed Shift:                     η = η_m + η_s = α_c − α_s · z       (alpha = [α_c, α_s])
  pas  Arrangement (sort) Shift:        the first α_a latent pixels in raster order from the top
                                        left are sorted ascending, per channel; values unchanged
                                                                     (alpha = [α_a, ·])
  pas_fraction  the same with α_a a FRACTION of the h·w latent pixels (alpha = [f, ·]):
                                        α_a = ⌊f·h·w + ½⌋ pixels (`pas_pixels`). The paper sorts
                                        8–64 of SD's 64×64 = 4096 latent pixels, f = 0.2–1.6 %
                                        (`PAPER_PAS_FRACTIONS`); on the toy's 8×8 latent that is
                                        0–1 pixel, where `pas` with 16 and 64 pixels sorted 25 %
                                        and 100 % — not the paper's shift.

Ambiguities (the literal reading is the default; alternatives are named entries):
  * SDS sign: the paper defines η = −α_s·z but also speaks of a "positive std shift" making
    the std larger. `sds_flipped` uses η = +α_s·z (z̃ = (1 + α_s) z).
  * PAS order/axis: `pas` sorts each channel's first α_a raster-order values ascending;
    `pas_descending` sorts them descending; `pas_pixels` moves whole C-vectors (pixels),
    ordering the first α_a pixels by their channel mean, ascending.
The random draw of `rms` comes from `key`; the sweep derives it from the (prompt, seed) member
only, never from α, so all α values of one seed share the same U (a paired design).

The registry `SHIFTS` holds each shift with what a sweep needs to know of it (`Shift`): its
parameters' grid keys in the config (`config.grids.<key>`, one per parameter: their product is the
shift's grid) and axis labels. A new shift is one function plus one line here.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

ALPHA_SIZE = 2   # every shift takes alpha [2]; a shift reads its first `arity` entries
UNSHIFTED = "none"
# The paper's PAS grid (8, 16, 32, 64 of SD's 64 × 64 latent pixels) as fractions of h·w.
PAPER_PAS_FRACTIONS = tuple(k / 4096 for k in (8, 16, 32, 64))


def pas_pixels(fraction, latent_hw: tuple[int, int]):
  """The number of latent pixels a PAS `fraction` sorts on an h × w latent: ⌊f·h·w + ½⌋ (round
  half up; works on Python floats and traced arrays)."""
  h, w = latent_hw
  return jnp.floor(jnp.asarray(fraction, jnp.float32) * (h * w) + 0.5).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class Shift:
  """A seed-vector shift and its metadata."""
  fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # (z [C, h, w], alpha [2], key)
  grid: tuple[str, ...]   # config.grids key of each parameter's values (sweeps: their product)
  axis: tuple[str, ...]   # axis label of each parameter (plots: x = the first)

  @property
  def arity(self) -> int:
    """How many entries of alpha the shift reads."""
    return len(self.grid)

  def __post_init__(self):
    if len(self.axis) != len(self.grid) or len(self.grid) > ALPHA_SIZE:
      raise ValueError(f"a shift has one grid key and one axis label per parameter (at most "
                       f"{ALPHA_SIZE}): grid={self.grid}, axis={self.axis}")


def no_shift(z, alpha, key):
  del alpha, key
  return z


def uniform_mean_shift(z, alpha, key):
  del key
  return z + alpha[0]


def random_mean_shift(z, alpha, key):
  return z + alpha[0] * jax.random.uniform(key, z.shape, z.dtype)


def std_shift(z, alpha, key):
  del key
  return z - alpha[0] * z


def std_shift_flipped(z, alpha, key):
  del key
  return z + alpha[0] * z


def mixed_shift(z, alpha, key):
  del key
  return z + alpha[0] - alpha[1] * z


def _sort_prefix(values, count, descending=False):
  """Sorts values[..., :count] along the last axis (count may be traced); rest unchanged."""
  index = jnp.arange(values.shape[-1])
  inside = index < count
  key = -values if descending else values
  masked = jnp.where(inside, key, jnp.inf)
  order = jnp.argsort(masked, axis=-1, stable=True)
  sorted_values = jnp.take_along_axis(values, order, axis=-1)
  return jnp.where(inside, sorted_values, values)


def arrangement_shift(z, alpha, key):
  del key
  c, h, w = z.shape
  return _sort_prefix(z.reshape(c, h * w), alpha[0]).reshape(c, h, w)


def arrangement_shift_fraction(z, alpha, key):
  """PAS with alpha[0] a fraction of the h·w latent pixels (`pas_pixels`)."""
  del key
  c, h, w = z.shape
  return _sort_prefix(z.reshape(c, h * w), pas_pixels(alpha[0], (h, w))).reshape(c, h, w)


def arrangement_shift_descending(z, alpha, key):
  del key
  c, h, w = z.shape
  return _sort_prefix(z.reshape(c, h * w), alpha[0], descending=True).reshape(c, h, w)


def arrangement_shift_pixels(z, alpha, key):
  """Moves whole pixels: the first α_a pixels ordered by channel mean, ascending."""
  del key
  c, h, w = z.shape
  flat = z.reshape(c, h * w)
  index = jnp.arange(h * w)
  inside = index < alpha[0]
  order = jnp.argsort(jnp.where(inside, flat.mean(axis=0), jnp.inf), stable=True)
  order = jnp.where(inside, order, index)
  return flat[:, order].reshape(c, h, w)


SHIFTS: dict[str, Shift] = {
    UNSHIFTED: Shift(no_shift, (), ()),
    "ums": Shift(uniform_mean_shift, ("ums",), ("α_c",)),
    "rms": Shift(random_mean_shift, ("rms",), ("α_u",)),
    "sds": Shift(std_shift, ("sds",), ("α_s",)),
    "sds_flipped": Shift(std_shift_flipped, ("sds",), ("α_s",)),
    "ms": Shift(mixed_shift, ("ms_alpha_c", "ms_alpha_s"), ("α_c", "α_s")),
    "pas": Shift(arrangement_shift, ("pas",), ("α_a (pixels)",)),
    "pas_fraction": Shift(arrangement_shift_fraction, ("pas_fraction",),
                          ("α_a (fraction of latent pixels)",)),
    "pas_descending": Shift(arrangement_shift_descending, ("pas",), ("α_a (pixels)",)),
    "pas_pixels": Shift(arrangement_shift_pixels, ("pas",), ("α_a (pixels)",)),
}


def apply_shifts(kind_ids: jax.Array, latents: jax.Array, alphas: jax.Array, keys: jax.Array,
                 kinds: tuple[str, ...]) -> jax.Array:
  """Shifts a population: member i gets SHIFTS[kinds[kind_ids[i]]].fn(latents[i], alphas[i],
  keys[i]).

  Args:
    kind_ids: [P] int, index into `kinds`.
    latents: [P, C, h, w] standard-normal seed vectors.
    alphas: [P, 2] shift parameters.
    keys: [P] PRNG keys (for `rms`).
    kinds: static tuple of shift names.
  """
  branches = [SHIFTS[k].fn for k in kinds]
  one = lambda i, z, a, k: jax.lax.switch(i, branches, z, a, k)
  return jax.vmap(one)(kind_ids, latents, alphas, keys)
