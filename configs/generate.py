"""Generate an image grid: a few prompts × a few seeds.

  python launch/generate.py --config configs/generate.py --workdir runs/generate

Any key can be overridden, e.g. `--config.model=/path/to/stable-diffusion-v1-5
--config.scheduler=dpmsolver++ --config.num_steps=25`. Variants after a colon:
  fast: 10 steps (seconds on a CPU with the toy model).
"""

import ml_collections

from jaxdiffattack import variants as variants_lib

VARIANTS = ("fast",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = variants_lib.parse(arg, VARIANTS, __file__)
  c = ml_collections.ConfigDict()
  c.model = "toy"            # 'toy', a local diffusers-layout directory, or a hub id
  c.dtype = "float32"        # or 'bfloat16'
  c.prompts = ("a photo of a red circle", "a photo of a blue square",
               "a photo of a green triangle", "a photo of a yellow star",
               "a photo of a red cross and a blue circle")
  c.images_per_prompt = 4
  c.seed = 0
  c.scheduler = "ddim"       # ddim | pndm | dpmsolver++ | euler
  c.num_steps = 50
  c.guidance_scale = 7.5     # <= 1 disables classifier-free guidance (one UNet call per step)
  c.microbatch = ml_collections.config_dict.placeholder(object)  # None | int | "auto"
  c.memory_budget_gb = ml_collections.config_dict.placeholder(float)  # "auto": GB per device
  if "fast" in variants:
    c.num_steps = 10
  return c
