"""Generate an image grid: a few prompts × a few seeds.

  python launch/generate.py --config configs/generate.py --workdir runs/generate
  python launch/generate.py --config configs/generate.py:world2 --workdir runs/generate_world2

Any key can be overridden, e.g. `--config.model=/path/to/stable-diffusion-v1-5
--config.scheduler=dpmsolver++ --config.num_steps=25`. Variants after a colon:
  fast: 10 steps (seconds on a CPU with the toy model).
  world2: world 2's generator (64²; `world2` in models.hub): short and long grammar captions of
    the same objects, a near-neighbour pair, a relation and a count, each image judged against
    its caption by world 2's scene oracle (config.judges; results.jsonl "judges").
  smoke (with world2): 2 prompts × 1 image, 3 steps (the tests).
"""

import ml_collections

from jaxdiffattack import variants as variants_lib

VARIANTS = ("fast", "world2", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = variants_lib.parse(arg, VARIANTS, __file__)
  c = ml_collections.ConfigDict()
  c.model = "toy"            # 'toy', a local diffusers-layout directory, or a hub id
  c.dtype = "float32"        # or 'bfloat16'
  c.prompts = ("a photo of a red circle", "a photo of a blue square",
               "a photo of a green triangle", "a photo of a yellow star",
               "a photo of a red cross and a blue circle")
  c.images_per_prompt = 4
  c.label_set = "toy"         # image judges: the class a prompt names first (labels.prompt_class)
  c.judges = ()               # image judges (judges.IMAGE_JUDGES), e.g. ("oracle",) on the toy
  c.seed = 0
  c.scheduler = "ddim"       # ddim | pndm | dpmsolver++ | euler
  c.num_steps = 50
  c.guidance_scale = 7.5     # <= 1 disables classifier-free guidance (one UNet call per step)
  c.microbatch = ml_collections.config_dict.placeholder(object)  # None | int | "auto"
  c.memory_budget_gb = ml_collections.config_dict.placeholder(float)  # "auto": GB per device
  if "fast" in variants:
    c.num_steps = 10
  if "world2" in variants:
    from jaxdiffattack import labels as labels_lib  # pylint: disable=g-import-not-at-top
    c.model = "world2"
    c.label_set = "world2"
    c.judges = ("world2_oracle",)
    c.prompts = (labels_lib.WORLD2_SHORT.format("red circle"),
                 labels_lib.WORLD2_LONG.format("red circle"),
                 "a crimson oval next to an orange circle",
                 "two blue stars left of a teal ring on a star field",
                 "an orange orange above a green six-pointed star, high quality")
  if "smoke" in variants:
    c.prompts = tuple(c.prompts)[:2]
    c.images_per_prompt = 1
    c.num_steps = 3
  return c
