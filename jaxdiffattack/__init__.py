"""jaxdiffattack: find failure modes of text-to-image diffusion models at population scale.

Modules (one concept each):
  models/      loading Stable Diffusion, CLIP and classifiers (the only place that touches
               diffusers/transformers Flax classes).
  schedulers   pure-JAX DDIM / PNDM / DPM-Solver++ / Euler steps for a `lax.scan` sampler.
  text         tokenising and encoding prompts; soft token embeddings.
  sampler      the compiled, differentiable population sampler.
  sharding     the device mesh, padding and microbatching of populations.
  generate     the `launch/generate.py` job.
"""

__version__ = "0.1.0"
