"""The token attacks the ATM job runs, by `config.attack.name`: a new attack is one module plus
one line in `ATTACKS`.

An attack module provides
  validate(config)                       one-line `ConfigError`s for the keys it reads;
  build(sd, config, score_fn, latent_shape, tokens) → an object with
      iterations: int                    steps per prompt (0: none, e.g. "random");
      metrics: tuple[str, ...]           per-iteration figures of `step` (results' curves; "loss"
                                         becomes `loss_curve`);
      compile(mesh, steps_per_call) → (init, step): init(ids [P, L]) → state (a pytree with an
                                         `iteration` field, population axis first, sharded);
                                         step(params, state, prompts, key) → (state, metrics
                                         [n, P] per name) for n = steps_per_call iterations;
      readout(key, state, prompts, sample_index) → hard prompts [P, S, L] int32 from the final
                                         state (sharded, padded population P; host `prompts`);
  evaluations(config) → int             sampler + classifier passes per prompt while attacking
                                         (the budget beside `num_samples` judged samples).
(`score_fn` is the job's fused scorer; `tokens` the ordinary, non-special token ids.)
"""

from jaxdiffattack.attacks import atm
from jaxdiffattack.attacks import random_substitution

ATTACKS = {
    "atm": atm,                          # Gumbel-softmax + margin loss (arXiv 2306.02583 §3)
    "random": random_substitution,       # random token substitution (the paper's baseline)
}
