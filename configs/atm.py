r"""ATM, the Gumbel-softmax token attack (Du et al. 2023, "Stable Diffusion is Unstable",
arXiv 2306.02583): attack success rates on short and long prompts, vs random token substitution.

  python launch/attack.py --config configs/atm.py:toy,smoke --workdir runs/atm_smoke
  python launch/attack.py --config configs/atm.py:toy --workdir runs/atm_toy
  python launch/attack.py --config configs/atm.py:toy --workdir runs/atm_toy_all \
      --config.attack.grad_depth=all --config.attack.remat=True
  python launch/attack.py --config configs/atm.py:sd21 --workdir runs/atm_sd21 \
      --config.prompt_sets.long=/path/to/long_prompts.csv

Variants after the colon (comma-separated; unknown ones are errors):
  (none)  the published setting: SD 2.1 at 256², 50 DDIM steps, CFG 7.5, CLIP ViT-B/16 zero-shot
          with the 80 CLIP templates over ImageNet-1k as the attack's classifier, 1000
          short prompts; `released` mode, logits 15 at the clean tokens, κ = 30, λ_sim = 4, Adam
          lr 0.3, 100 iterations, gradient through the last denoising step, 100 hard samples.
  sd21    the same (named for clarity). Long prompts: give a CSV file (columns prompt, classname;
          see jaxdiffattack/attacks/prompts.py) as prompt_sets.long.
  toy     the shipped toy world (32×32, toy CLIP zero-shot classifier; the toy ViT and the
          procedural oracle, jaxdiffattack/toy/oracle.py, as further judges): all
          20 labels, one short and two long prompts each; 20 DDIM steps (paper: 50) and 16 hard
          samples per prompt (paper: 100), for 2 CPU cores; everything else as published (see the
          README's ATM section).
  world2  world 2 (its 64² generator; `world2` in models.hub): its CLIP zero-shot as the attack's
          classifier, its held-out RegNetY and its scene oracle ("world2_oracle", judging each
          image against "a <label>") as further judges; 5 near-neighbour
          labels, a short (6–9 tokens) and a long (40–43 tokens) grammar caption of each
          (prompt sets world2_short / world2_long); otherwise as `toy`.
  study   with `world2` (issue #26 item 2): the ATM study, one command that writes
          docs/results/atm_world2.{json,md} (`results_file`: provenance + summary.json /
          report.md) beside its workdir:
            python launch/attack.py --config configs/atm.py:world2,study \
                --workdir runs/atm_world2_study
          Prompts: the clean census's single-object prompts (prompt sets world2_census_short /
          world2_census_long, jaxdiffattack/attacks/prompts.py), 3 scenes of each of the 83
          classes = 249 short captions (6–22 CLIP tokens) and the same 249 scenes' long captions
          (40–60 tokens), all at lengths the generator was trained on (4–60); the clean check
          skips those the attack's classifier misreads, so >= 100 per set are attacked while
          world 2's CLIP reads >= 41 % of clean images (its zero-shot top-1 was 54 %,
          docs/results/world2_clip_check_run2_clip_tune2000.json; ~134 per set at that rate:
          Newcombe's interval of short − long then spans about ±12 points). Hard samples on
          fresh noises AND on the clean check's noises (eval_noise="both"); the
          random-substitution baseline at the same samples and noises, in the same run
          (config.baseline; a separate `random` run, launch/attack_compare.py, stays
          possible); `released` mode with the idf-weighted similarity term active
          (attacks/similarity.py: world 2's tokenizer pads with EOS, which the stand-in counts
          as a token in no prompt, so the padding the mode edits weighs idf log(M + 1) and
          carries the term's weight, as SD 2.1's "!" padding does in the released code);
          judged by the attack's CLIP (the "attack" judge), the held-out RegNetY evaluator and
          the scene oracle; summary.json's "intervals": per-prompt ASR with a bootstrap over
          prompts, per-sample rates clustered by prompt, short − long (independent sets),
          ATM − random (paired), per noise and judge. 50 iterations (paper: 100; add
          --config.attack.num_iters=100 for about +1.3 CPU-hours at a 54 % clean pass rate),
          16 hard samples per prompt (paper: 100).
          COST (benchmarks/world2_study_cost.py, docs/results/world2_study_cost.json: unit
          costs measured on the smoke export, scaled to world 2's 0.28 CPU-s per 64² image):
          about 2.3 CPU-hours at a 54 % clean pass rate, 4.3 if
          every prompt is attacked; about half that in wall time on 2 free cores.
          `world2,study,smoke`: 2 classes × 1 scene, 3 steps, 2 iterations, 2 samples; writes
          its results file into the workdir (tests/world2_study_test.py).
  smoke   a few prompts and iterations: minutes on 2 CPU cores (with `toy`: under 2 minutes;
          with `world2`: 3 steps).

`attack.name` picks the attack (jaxdiffattack/attacks/registry.py): "atm" (the paper's) or
"random" (random token substitution as an attack of its own, `num_samples` samples per prompt;
set baseline='' with it). `classifier` is the attack's classifier (a scorer name: the loss's
margin and the success rule); `judges` names further judges as every job does (scorer names, and
"oracle" on the toy world, "world2_oracle" on world 2; the old keys `judge` and `oracle` are
one-line errors). Every
hyper-parameter of the paper is a key below; `attack.grad_depth` is the gradient depth: "last"
(the last denoising step, as published), "K" (an integer: the last K steps) or "all" (every step;
with attack.remat=True each step is rematerialised in the backward pass).
"""

import ml_collections

from jaxdiffattack import variants as variants_lib

VARIANTS = ("sd21", "toy", "world2", "study", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = variants_lib.parse(arg, VARIANTS, __file__)
  if "study" in variants and "world2" not in variants:
    raise ValueError(f"configs/atm.py:{arg}: 'study' is the world-2 ATM study: use "
                     "'world2,study' (or 'world2,study,smoke')")
  c = ml_collections.ConfigDict()
  # Generator and sampler (the released code: SD 2.1 fp16, 256², 50 steps, guidance 7.5).
  c.model = "stabilityai/stable-diffusion-2-1"
  c.dtype = "bfloat16"
  c.image_size = 256                 # 0: the model's default size
  c.scheduler = "ddim"
  c.num_steps = 50
  c.guidance_scale = 7.5
  c.seed = 0
  # Classes, judges and prompts.
  c.label_set = "imagenet1k"
  c.classifier = "clip_vit_b16"      # the attack's classifier (loss and success; the judge
                                     # "attack" in rows and reports), a scorer name
  c.judges = ()                      # further judges, reported beside it: scorer names and image
                                     # judges ("oracle": the toy world's oracle, toy only)
  c.scorers = ml_collections.ConfigDict()  # scorer overrides (jaxdiffattack.scorers.get_spec)
  c.prompt_sets = ml_collections.ConfigDict({"short": "short"})  # set → registry name or CSV
  c.labels = ()                      # restrict to these classes (names); () = all
  c.per_label = 1                    # prompts per class for template sets
  c.max_prompts = 0                  # first N prompts of each set (0: all)
  # The attack (arXiv 2306.02583 §3; the released code's data/config.py).
  c.mode = "released"                # replace | extend | released (jaxdiffattack/attacks/modes.py)
  c.extend_tokens = 5                # tokens appended by mode=extend
  c.attack = ml_collections.ConfigDict({
      "name": "atm",                 # the attack (jaxdiffattack/attacks/registry.py): atm | random
      "init_logit": 15.0, "kappa": 30.0, "lam_sim": 4.0, "lam_fluency": 0.0, "lr": 0.3,
      "num_iters": 100, "batch_size": 1, "tau": 1.0, "hard": False, "grad_depth": "last",
      "remat": False})
  c.num_samples = 100                # hard prompts drawn per attacked prompt
  c.eval_noise = "per_sample"        # per_sample (released: new noise per generation) | fixed | both
  c.baseline = "random_substitution"  # "" for none
  # Run shape (not part of the results; excluded from the resume check).
  c.population = 8                   # prompts attacked at once (0: all); sharded over devices
  c.microbatch = ml_collections.config_dict.placeholder(object)  # None | int | "auto"
  c.memory_budget_gb = ml_collections.config_dict.placeholder(float)  # "auto": GB per device
  c.eval_batch = 100                 # generated prompts per evaluation call
  c.steps_per_call = 1               # attack iterations per compiled call
  c.checkpoint_every = 10            # iterations
  c.sharded_checkpoint_mb = 64.0     # state (MB) above which checkpoints are orbax-sharded (0: never)
  c.images_per_prompt = 4            # captioned successful images kept per prompt
  c.report_only = False
  if "toy" in variants:
    c.model = "toy"
    c.dtype = "float32"
    c.image_size = 0
    c.label_set = "toy"
    c.classifier = "toy_clip"
    c.judges = ("toy_vit", "oracle")
    c.prompt_sets = ml_collections.ConfigDict({"short": "short", "long": "toy_long"})
    c.per_label = 2
    c.num_steps = 20
    c.num_samples = 16
    c.population = 20
    c.eval_batch = 160
  if "world2" in variants:
    c.model = "world2"
    c.dtype = "float32"
    c.image_size = 0                 # the model's own: 64² (a smoke export's: 32²)
    c.label_set = "world2"
    c.classifier = "world2_clip"
    c.judges = ("world2_regnet", "world2_oracle")
    c.prompt_sets = ml_collections.ConfigDict({"short": "world2_short", "long": "world2_long"})
    c.labels = ("red circle", "crimson oval", "blue rounded square", "green six-pointed star",
                "orange orange")
    c.num_steps = 20
    c.num_samples = 16
    c.population = 10
    c.eval_batch = 160
  if "study" in variants:
    c.prompt_sets = ml_collections.ConfigDict({"short": "world2_census_short",
                                               "long": "world2_census_long"})
    c.labels = ()                    # all 83 classes
    c.per_label = 3                  # scenes per class: 249 prompts per set
    c.eval_noise = "both"
    c.baseline = "random_substitution"
    c.mode = "released"
    c.attack.num_iters = 50          # paper: 100 (see the docstring's COST)
    c.num_samples = 16
    c.population = 16
    c.eval_batch = 128
    c.results_file = "docs/results/atm_world2"
    if "smoke" in variants:
      c.labels = ("red circle", "blue triangle")
      c.per_label = 1
      c.attack.num_iters = 2
      c.num_samples = 2
      c.checkpoint_every = 2
      c.population = 2
      c.eval_batch = 8
      c.num_steps = 3
      c.results_file = "{workdir}/atm_world2_smoke"
  elif "smoke" in variants:
    c.labels = ("red circle", "blue triangle")
    c.attack.num_iters = 4
    c.num_samples = 4
    c.checkpoint_every = 2
    c.population = 2
    c.eval_batch = 8
    if "toy" in variants:
      c.num_steps = 10
    if "world2" in variants:
      c.num_steps = 3
  return c
