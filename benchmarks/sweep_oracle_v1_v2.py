r"""The sweep's oracle metrics under oracle v1 and v2 on the same toy generations (issue #24).

  python benchmarks/sweep_oracle_v1_v2.py --seeds=5 --num_steps=10 --guidance_scale=7.5

Until issue #24 the sweep's `oracle_top1` / `oracle_unclear` were v1's (`toy.oracle.judge`: the
label read == the prompt's label; unclear = no label read); since then they are v2's through
`judges.judge_scores` (`sweep.plan.image_judge_metrics`: top-1 = v2 says the prompt holds).
This generates every toy label × --seeds images with the shipped toy SD (DDIM, unshifted seed
vectors fold_in(PRNGKey(--seed), member), "a photo of a {label}") and prints both readings with
95 % Wilson intervals, and how often they agree on top-1. Committed sweep results
(docs/results/variance_study*) were measured with v1 and are not rewritten.
"""

import json

from absl import app
from absl import flags
import jax
import numpy as np

from jaxdiffattack import io
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import stats
from jaxdiffattack import text
from jaxdiffattack.models import load_stable_diffusion
from jaxdiffattack.sweep import plan as plan_lib
from jaxdiffattack.toy import oracle
from jaxdiffattack.toy import world

_SEEDS = flags.DEFINE_integer("seeds", 5, "Images per label.")
_STEPS = flags.DEFINE_integer("num_steps", 10, "DDIM steps.")
_SCALE = flags.DEFINE_float("guidance_scale", 7.5, "Classifier-free guidance scale.")
_SEED = flags.DEFINE_integer("seed", 0, "Root PRNG seed of the seed vectors.")
_OUT = flags.DEFINE_string("out", None, "Optional JSON file for the figures.")


def main(_):
  sd, params = load_stable_diffusion("toy")
  prompts = [f"a photo of a {label}" for label in world.LABELS]
  seeds = _SEEDS.value
  settings = sampler_lib.SamplerSettings(scheduler="ddim", num_steps=_STEPS.value,
                                         guidance=_SCALE.value > 1.0)
  members = np.arange(len(prompts) * seeds)
  latents = sampler_lib.member_latents(jax.random.PRNGKey(_SEED.value), members,
                                       sd.latent_shape)
  emb = np.asarray(text.encode_prompts(sd, params["text_encoder"], prompts))
  uncond = np.asarray(text.encode_prompts(sd, params["text_encoder"], [""])[0])
  images = np.asarray(sampler_lib.PopulationSampler(sd, params, settings)(
      latents, emb[members // seeds], uncond, _SCALE.value).images)
  label = members // seeds
  read = oracle.judge(images)
  v2 = plan_lib.image_judge_metrics("oracle", images, label, world.LABELS)
  hits = {"v1_oracle_top1": np.array([r == world.LABELS[i] for r, i in zip(read, label)]),
          "v1_oracle_unclear": np.array([r is None for r in read]),
          "v2_oracle_top1": v2["oracle_top1"] > 0.5,
          "v2_oracle_unclear": v2["oracle_unclear"] > 0.5}
  out = {"images": len(members), "num_steps": _STEPS.value, "guidance_scale": _SCALE.value,
         "agree_on_top1": float(np.mean(hits["v1_oracle_top1"] == hits["v2_oracle_top1"]))}
  for name, x in hits.items():
    low, high = stats.wilson_interval(int(x.sum()), len(x))
    out[name] = {"rate": float(x.mean()), "hits": int(x.sum()), "ci95": [low, high]}
    print(f"{name}: {x.mean():.3f} ({int(x.sum())}/{len(x)}) [{low:.3f}, {high:.3f}]")
  print(f"agree on top-1: {out['agree_on_top1']:.3f}")
  if _OUT.value:
    io.write_json(_OUT.value, out)
  else:
    print(json.dumps(out))


if __name__ == "__main__":
  app.run(main)
