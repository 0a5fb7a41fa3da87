"""jaxdiffattack: find failure modes of text-to-image diffusion models at population scale.

Modules (one concept each), from the model up to the jobs:
  models/       the project's own Flax UNet, VAE, CLIP, ViT and ResNet; loading diffusers /
                transformers layouts (safetensors, msgpack); attention and its capture.
  schedulers    pure-JAX DDIM / PNDM / DPM-Solver++ / Euler steps for a `lax.scan` sampler.
  ddpm          DDPM reverse-process maths with a learned variance (training and sampling).
  text          tokenising and encoding prompts; soft token embeddings.
  sampler       `sample` (pure, with a gradient depth), `FusedSampler` (sampler + scorer, one
                differentiable function) and `PopulationSampler` (its sharded, chunked runner).
  sharding      the device mesh, padding and microbatching of populations.
  planner       the device-memory planner: a compiled program's bytes, the largest microbatch
                that fits (`auto_microbatch`); below the sampler.
  costs         FLOPs per image from XLA's cost analysis; roofline bounds; the gradient and
                attack programs the planner measures.
  preprocess    the transformers image processors in differentiable JAX.
  scorers       CLIP score, CLIP zero-shot and image classifiers by name (`SCORERS`).
  labels        label sets (ImageNet-1k, ImageNet-100, toy), templates, label → output maps.
  scoring       `Scoring`: the job's scoring bundle, what every job scores its images with.
  objectives    scorer roles (surrogate, evaluator, ...) and what their scores measure
                (`OBJECTIVES`); `make_scoring(config)` builds a job's `Scoring`.
  judges        the judge interface: who reads an image (model roles, image judges such as the
                toy oracle v2: `IMAGE_JUDGES`; people: `ratings.human_verdict`), the one
                verdict record type (`Verdict`), and the verdict rules that call an image a
                failure (`VERDICTS`); records and captions.
  perturb       seed-vector shifts with their metadata (`SHIFTS`).
  stats         intervals and tests: independent, paired (Newcombe, bootstrap, McNemar), clustered.
  io            atomic writes of JSON / JSONL / CSV / PNG; image grids.
  runs          what every job's run shares: config hash, checkpoints by field name, progress
                with ETA, figures.
  errors        one-line user errors.
  pages         static pages of a run from its files: every job's index.html, the rating page.
  ratings       human ratings: the ratings file format and its checks, consensus, Cohen's and
                Fleiss' κ, SSR(H) with target-clustered CIs, judges against the human consensus.
  rate          the `launch/rate.py` job: a blind rating kit for any run; ingesting ratings as
                the run's `human` judge.
  generate      the `launch/generate.py` job (prompts × seeds → images).
  sweep/        the `launch/sweep.py` job: the seed-vector shift study (plan, run, report,
                trajectories).
  search/       the `launch/search.py` job: SAGE's failure search (spaces, strategies, gradient
                methods, criterion, targets, driver, report, the search-vs-random protocol).
  analysis/     the `launch/analyze.py` job: why generations fail (ATM's generation speed with
                SSIM, cross-attention overlap, word orders, injected words; the brittleness
                paper's class-wise robustness, confusion, displacement); object finders by
                name (`objects.FINDERS`).
  toy/          the toy world: renderer, tokenizer, training, evaluation, the oracle (a
                judge-free reading of a toy image); shipped weights.
  data/         label lists and templates (data/README.md says where each comes from).
  attacks/      the `launch/attack.py` job: ATM's Gumbel-softmax token attack (gumbel, modes,
                prompt sets, similarity, the population step, job, report).
"""

__version__ = "0.1.0"
