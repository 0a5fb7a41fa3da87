"""Runs in its own process with 8 fake CPU devices (see sharding_test.py); not a test module.

Usage: python multidevice_worker.py SD_DIR OUT.npz [ancestral]
Samples the same population on a 1-device mesh and on the 8-device mesh (P=5, not a multiple
of 8; and microbatch 1) and saves all results for the parent test to compare. With `ancestral`
(SD_DIR a learned-variance model): DDPM with the learned variance and per-member noise keys.
"""

import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdiffattack import sampler as sampler_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdiffattack import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdiffattack import text  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxdiffattack.models import load_stable_diffusion  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(sd_dir, out_path, mode="ddim"):
  assert jax.device_count() == 8, jax.devices()
  sd, params = load_stable_diffusion(sd_dir)
  prompts = ["a red cube", "b", "c", "a green ball", "e"]
  cond = np.asarray(text.encode_prompts(sd, params["text_encoder"], prompts))
  uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0])
  latents = np.asarray(sampler_lib.member_latents(jax.random.PRNGKey(0), np.arange(5),
                                                  sd.latent_shape))
  settings = sampler_lib.SamplerSettings(num_steps=3, return_latents=True)
  noise_keys = None
  if mode == "ancestral":
    settings = sampler_lib.SamplerSettings(scheduler="ddpm", variance_type="learned_range",
                                           num_steps=3, return_latents=True)
    noise_keys = np.asarray(sampler_lib.member_noise_keys(jax.random.PRNGKey(1), np.arange(5)))
  results = {}
  for name, mesh, microbatch in [("single", sharding.make_mesh(jax.devices()[:1]), None),
                                 ("eight", sharding.make_mesh(), None),
                                 ("eight_mb1", sharding.make_mesh(), 1)]:
    pop_sampler = sampler_lib.PopulationSampler(sd, params, settings, mesh=mesh,
                                                microbatch=microbatch)
    out = pop_sampler(latents, cond, uncond, 7.5, noise_keys=noise_keys)
    results[name + "_images"] = out.images
    results[name + "_latents"] = out.latents
    # The compiled call really spreads members over the mesh: one chunk's images live on
    # every device of it.
    size = sharding.chunk_size(mesh, 5, None)
    put = lambda a: sharding.put_population(sharding.pad_population(a, size), mesh)  # pylint: disable=cell-var-from-loop
    chunk = [put(a) for a in (latents, cond, np.broadcast_to(uncond, cond.shape),
                              np.full(5, 7.5, np.float32))]
    extra = [] if noise_keys is None else [put(noise_keys)]
    images = pop_sampler.compiled(pop_sampler.params, *chunk, {}, *extra).images
    results[name + "_devices"] = np.array(len(images.sharding.device_set))
  np.savez(out_path, **results)


if __name__ == "__main__":
  main(*sys.argv[1:])
