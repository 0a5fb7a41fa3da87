"""Runs in its own process with 8 fake CPU devices (see objectives_test.py); not a test module.

Usage: python scorers_multidevice_worker.py SD_DIR CLIP_DIR VIT_DIR RESNET_DIR OUT.npz
Runs the sampler fused with the toy fitness (tiny checkpoints) on the 8-device mesh with
microbatch 1 (P=3: padded to 8), on exactly the inputs of objectives_test.py's single-device run,
returning only the per-member scores, and saves them for the parent test to compare.
"""

import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
jax.config.update("jax_compilation_cache_dir", os.environ.get(
    "JAXDIFFATTACK_TEST_CACHE", os.path.join(_ROOT, ".jax_cache")))  # as tests/conftest.py
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/ helpers
from jaxdiffattack import objectives
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import sharding
from jaxdiffattack.models import load_stable_diffusion
import objectives_test
import tiny_vision
# pylint: enable=g-import-not-at-top,wrong-import-position


def main(sd_dir, clip_dir, vit_dir, resnet_dir, out_path):
  assert jax.device_count() == 8, jax.devices()
  sd, params = load_stable_diffusion(sd_dir)
  fit = objectives.build(tiny_vision.fitness_config(
      {"clip": clip_dir, "vit": vit_dir, "resnet": resnet_dir}))
  aux = fit.aux(labels=objectives_test.LABELS, prompts=objectives_test.PROMPTS)
  mesh = sharding.make_mesh()
  settings = sampler_lib.SamplerSettings(num_steps=2, return_images=False)
  pop_sampler = sampler_lib.PopulationSampler(sd, params, settings, mesh=mesh, microbatch=1,
                                              score_fn=fit.score_fn, score_params=fit.params)
  inputs = objectives_test.sampler_inputs(sd, params)
  out = pop_sampler(*inputs, 7.5, aux=aux)
  assert out.images is None
  results = {key.replace("/", "."): value for key, value in out.scores.items()}
  results["devices"] = np.array(mesh.size)
  # The compiled call really spreads members over the mesh: one chunk's scores live on every
  # device.
  chunk = [sharding.put_population(sharding.pad_population(a, 8), mesh)
           for a in (inputs[0], inputs[1], np.broadcast_to(inputs[2], inputs[1].shape),
                     np.full(len(inputs[0]), 7.5, np.float32))]
  chunk_aux = jax.tree_util.tree_map(
      lambda a: sharding.put_population(sharding.pad_population(a, 8), mesh), aux)
  scores = pop_sampler.compiled(pop_sampler.params, *chunk, chunk_aux).scores
  results["devices_holding_scores"] = np.array(
      len(scores["surrogate/target_prob"].sharding.device_set))
  np.savez(out_path, **results)


if __name__ == "__main__":
  main(*sys.argv[1:6])
