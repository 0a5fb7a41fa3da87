"""The analysis job's one compiled generator: prompts × seeds (× a seed shift) → images, each
step's decoded predicted x0, per-step cross-attention maps per token, and the latent trajectory.

Every analysis draws through it, so the sampler compiles once (fixed chunk of `unit` members;
`PopulationSampler` pads the last chunk) and the same seed index gives the same seed vector in
every analysis: member noise is `fold_in(key, seed)` (`sampler.member_latents`), independent of
the prompt, so word orders and injected words are compared on the same noise (ATM arXiv
2306.02583 §4.3–4.4 compare prompts on fixed noise). Seed shifts are the brittleness paper's
(arXiv 2312.11473 §3, `perturb.SHIFTS`).
"""

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack import perturb
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import text


class Batch(NamedTuple):
  prompts: list[str]             # [P]
  images: np.ndarray             # [P, H, W, 3] in [0, 1]
  x0_images: np.ndarray | None   # [P, S, H', W', 3] each step's decoded predicted x0, pooled
                                 # to at most `x0_size` a side (`pool`)
  attention: np.ndarray          # [P, S, g, g, L] cross-attention per text token (sums to 1)
  latent_trajectory: np.ndarray  # [P, S, C, h, w] z_t after each step
  initial: np.ndarray            # [P, C, h, w] the σ-scaled (shifted) starting latents


class Generator:
  """Samples with per-step trajectories and attention capture, one compiled program."""

  def __init__(self, sd, params, *, scheduler: str, num_steps: int, guidance_scale: float,
               unit: int, seed: int, x0_size: int):
    self.sd, self.params, self.unit, self.x0_size = sd, params, unit, x0_size
    self.guidance_scale = guidance_scale
    settings = sampler_lib.SamplerSettings(scheduler=scheduler, num_steps=num_steps,
                                           trajectory=("x0", "latents"), capture_attention=True)
    self.sampler = sampler_lib.PopulationSampler(sd, params, settings, microbatch=unit)
    self.key = jax.random.PRNGKey(seed)
    self.uncond = np.asarray(self._encode([""]))[0]
    self._decode = jax.jit(lambda vae, z: sampler_lib.decode_latents(sd, vae, z))
    self._shift = jax.jit(perturb.apply_shifts, static_argnames="kinds")
    self.images_made = 0

  def _encode(self, prompts: Sequence[str]) -> np.ndarray:
    """Text states [P, L, D], encoded in fixed chunks of `unit` (one compiled shape)."""
    prompts = list(prompts)
    out = []
    for start in range(0, len(prompts), self.unit):
      chunk = prompts[start:start + self.unit]
      padded = chunk + [chunk[-1]] * (self.unit - len(chunk))
      out.append(np.asarray(text.encode_prompts(self.sd, self.params["text_encoder"],
                                                padded))[:len(chunk)])
    return np.concatenate(out)

  def latents(self, seeds: Sequence[int], shift: str = perturb.UNSHIFTED,
              alpha: float = 0.0) -> np.ndarray:
    """Seed vectors [P, C, h, w]: seed s is `fold_in(key, s)`, then `shift` by `alpha` (the
    shift's random draws, e.g. RMS's, come from `fold_in(fold_in(key, s), 1)`)."""
    z = sampler_lib.member_latents(self.key, seeds, self.sd.latent_shape)
    if shift == perturb.UNSHIFTED:
      return np.asarray(z)
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.fold_in(self.key, s), 1))(
        jnp.asarray(seeds, jnp.uint32))
    alphas = jnp.zeros((len(seeds), perturb.ALPHA_SIZE)).at[:, 0].set(alpha)
    return np.asarray(self._shift(jnp.zeros(len(seeds), jnp.int32), z, alphas, keys,
                                  kinds=(shift,)))

  def __call__(self, prompts: Sequence[str], seeds: Sequence[int], *,
               shift: str = perturb.UNSHIFTED, alpha: float = 0.0,
               decode_steps: bool = False) -> Batch:
    if len(prompts) != len(seeds):
      raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    z = self.latents(seeds, shift, alpha)
    out = self.sampler(z, self._encode(prompts), self.uncond, self.guidance_scale)
    self.images_made += len(prompts)
    x0_images = self.decode_steps(out.x0_trajectory) if decode_steps else None
    return Batch(list(prompts), out.images, x0_images, out.attention_trajectory,
                 out.latent_trajectory,
                 z * float(self.sampler.scheduler.init_noise_sigma))

  def decode_steps(self, x0_trajectory: np.ndarray) -> np.ndarray:
    """[P, S, C, h, w] predicted latents → [P, S, H', W', 3] images pooled to at most `x0_size`
    a side (fixed chunks of `unit`; only pooled images are kept on the host)."""
    p, s = x0_trajectory.shape[:2]
    flat = x0_trajectory.reshape(p * s, *x0_trajectory.shape[2:])
    out = []
    for start in range(0, len(flat), self.unit):
      chunk = flat[start:start + self.unit]
      padded = np.concatenate([chunk, np.repeat(chunk[-1:], self.unit - len(chunk), 0)])
      decoded = np.asarray(self._decode(self.params["vae"], padded))[:len(chunk)]
      out.append(pool(decoded, self.x0_size))
    return np.concatenate(out).reshape(p, s, *out[0].shape[1:])


def pool(images: np.ndarray, size: int) -> np.ndarray:
  """Mean-pools images [..., H, W, C] by the smallest integer factor k dividing H with
  H / k <= size (unchanged when H <= size)."""
  h = images.shape[-3]
  k = next(f for f in range(1, h + 1) if h % f == 0 and h // f <= size)
  if k == 1:
    return images
  shape = images.shape[:-3] + (h // k, k, images.shape[-2] // k, k, images.shape[-1])
  return images.reshape(shape).mean((-4, -2))
