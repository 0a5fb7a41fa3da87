"""World 2's clean failure census (issue #23 item 4, issue #26 item 1): per class, how often the
clean generator fails and how (jaxdiffattack/census.py).

  python launch/census.py --config configs/census.py:world2 --workdir runs/census_world2

`world2`: every class (83) × 1 scene × (a single-object scene and a two-object scene, each with
a short and a long caption) = 332 prompts × 64 seeds = 21,248 images, DDIM 20 steps, guidance
7.5 (the world-2 jobs' sampler), judged by the scene oracle and the held-out RegNetY evaluator.
Estimated cost on this 2-core machine (docs/results/census_cost.json, benchmarks/census_cost.py:
world 2's full UNet and VAE with random weights, and the oracle on rendered census scenes):
0.17 CPU-s per image (8.9 GFLOP), about 1.0 CPU-hour for the 21,248 images (the 20 UNet steps
~80 % of it, the oracle ~15 %); 0.49 s per image of wall time at this shared machine's load (the
process got ~35 % of a core), about 2.9 hours. With the `f4` generator (train_world2.py:f4;
docs/results/census_cost_f4.json): 0.21 CPU-s per image, about 1.2 CPU-hours. Resumable:
stop it any time; the same command resumes at the first unfinished chunk (`--config.max_chunks=N`
does N chunks and stops, for time-sliced runs).
`world2,smoke`: 2 classes × 1 scene × 4 prompts × 4 seeds, 2 steps, 3 chunks (the tests; seconds
on the smoke export, $JAXDIFFATTACK_WORLD2_ASSETS).
For the rating kit (benchmarks/world2_rating_set.py), run it with
`--config.save_images=sample`: the failures and every image of seeds 0..sample_per_prompt-1.
Any key can be overridden, e.g. `--config.classes='("red circle", "crimson circle")'
--config.kinds='("single", "long")' --config.seeds_per_prompt=128`.
"""

import ml_collections

from jaxdiffattack import variants as variants_lib

VARIANTS = ("world2", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = variants_lib.parse(arg, VARIANTS, __file__)
  if "world2" not in variants:
    raise ValueError(f"configs/census.py:{arg}: name the world: 'world2' or 'world2,smoke'")
  c = ml_collections.ConfigDict()
  c.model = "world2"         # 'world2' ($JAXDIFFATTACK_WORLD2_ASSETS) or an export's sd directory
  c.dtype = "float32"
  c.label_set = "world2"
  # Prompts (census.make_prompts): classes (() = all 83), scenes per class, prompt kinds.
  c.classes = ()
  c.scenes_per_class = 1
  c.kinds = ("single", "two_objects", "long")
  c.two_object_layouts = ("pair", "two")   # scene j of a class uses layouts[j % n]
  c.short_tokens = (4, 16)   # target CLIP tokens of a short caption (the grammar overshoots: 6-22)
  c.long_tokens = (40, 60)   # ... of its long caption (issue #23: 40-60)
  c.prompt_seed = 0
  # Seeds: seed s of every prompt is fold_in(PRNGKey(seed), s).
  c.seeds_per_prompt = 64
  c.seed = 0
  c.scheduler = "ddim"
  c.num_steps = 20
  c.guidance_scale = 7.5
  # Judges: world 2's scene oracle (the census counts its verdicts) and the held-out evaluator.
  c.judges = ("world2_oracle", "evaluator")
  c.scoring = ml_collections.ConfigDict({
      "kind": "models",
      "roles": {"evaluator": {"classifiers": ("world2_regnet",), "clip": ""}},
      "objectives": {"evaluator": ("top1_hit",)},
      "scorers": {}})
  # Targets (issue #26 item 1): prompts failing on band of their seeds, at least min_seeds each.
  c.band = (0.01, 0.10)
  c.num_targets = 40
  c.min_seeds = 64
  # Run shape.
  c.chunk_prompts = 8        # prompts per resumable chunk
  c.max_chunks = ml_collections.config_dict.placeholder(int)   # None: every chunk
  c.microbatch = 64          # members per device per compiled call (one shape for every chunk)
  c.memory_budget_gb = ml_collections.config_dict.placeholder(float)
  c.save_images = "failures"  # PNGs of: "failures" (not holding), "sample", "all", "none"
  c.sample_per_prompt = 4    # "sample": also every image of seeds 0..3 of each prompt (passes too)
  c.grid_images = 16         # failures per kind in the report's grids
  if "smoke" in variants:
    c.classes = ("red circle", "blue square")
    c.seeds_per_prompt = 4
    c.min_seeds = 4
    c.num_steps = 2
    c.chunk_prompts = 3
    c.microbatch = 4
    c.grid_images = 4
  return c
