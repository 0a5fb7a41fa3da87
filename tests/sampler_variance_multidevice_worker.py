"""Runs in its own process with 8 fake CPU devices (see sampler_variance_test.py); not a test.

Usage: python sampler_variance_multidevice_worker.py LV_SD_DIR OUT.npz
Samples P = 5 members with the ancestral learned-variance DDPM sampler on a 1-device mesh, on
the 8-device mesh, and on it with microbatch 1; saves the final latents of each.
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


def main(sd_dir, out_path):
  assert jax.device_count() == 8, jax.devices()
  sd, params = load_stable_diffusion(sd_dir)
  prompts = ["a red cube", "b", "c", "a green ball", "e"]
  cond = np.asarray(text.encode_prompts(sd, params["text_encoder"], prompts))
  uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0])
  members = np.arange(5)
  latents = np.asarray(sampler_lib.member_latents(jax.random.PRNGKey(0), members,
                                                  sd.latent_shape))
  keys = np.asarray(sampler_lib.member_noise_keys(jax.random.PRNGKey(1), members))
  settings = sampler_lib.SamplerSettings(scheduler="ddpm", num_steps=3,
                                         variance_type="learned_range", return_latents=True,
                                         return_images=False)
  results = {}
  for name, mesh, microbatch in [("single", sharding.make_mesh(jax.devices()[:1]), None),
                                 ("eight", sharding.make_mesh(), None),
                                 ("eight_mb1", sharding.make_mesh(), 1)]:
    pop_sampler = sampler_lib.PopulationSampler(
        sd, params, settings, mesh=mesh, microbatch=microbatch,
        score_fn=lambda p, images, aux: {"mean": images.mean(axis=(1, 2, 3))})
    results[name] = pop_sampler(latents, cond, uncond, 7.5, noise_keys=keys).latents
  np.savez(out_path, **results)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
