"""Random token substitution (arXiv 2306.02583 §4.2): ATM's baseline, and an attack of its own.

`random_substitution` is the kernel: sample j of prompt p replaces `changed[p, j]` of its free
positions, chosen uniformly, by uniform draws from the ordinary (non-special) tokens. The ATM job
uses it as the baseline at ATM's own numbers of changed tokens (`config.baseline`); as the attack
"random" of `registry.ATTACKS` (`config.attack.name = "random"`) it spends no iterations and draws
`num_samples` prompts per attacked prompt, sample j changing a number of free positions drawn
uniformly from 1..(free positions of p). The budget is counted as for every attack: 0 sampler
passes while attacking (`evaluations`), `num_samples` generated and judged samples per prompt.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack.attacks import atm
from jaxdiffattack.errors import check

# Purposes folded into the readout key.
_COUNTS, _TOKENS = 0, 1


def random_substitution(key: jax.Array, prompts: atm.Prompts, changed: jax.Array,
                        tokens: np.ndarray) -> jax.Array:
  """Prompts [P, S, L]: sample j of prompt p gets `changed[p, j]` of its free positions, chosen
  uniformly, replaced by uniform draws from `tokens` (fold_in(fold_in(key, p's index), j))."""
  tokens = jnp.asarray(tokens)

  def one(k, ids, free, count):
    k_pos, k_tok = jax.random.split(k)
    order = jnp.where(free, jax.random.uniform(k_pos, ids.shape), 2.0)
    rank = jnp.argsort(jnp.argsort(order))
    draw = tokens[jax.random.randint(k_tok, ids.shape, 0, len(tokens))]
    return jnp.where(free & (rank < count), draw, ids)

  def per_prompt(k, ids, free, counts):
    return jax.vmap(lambda j, n: one(jax.random.fold_in(k, j), ids, free, n))(
        jnp.arange(counts.shape[0], dtype=jnp.uint32), counts)

  return jax.vmap(per_prompt)(atm.prompt_keys(key, jnp.asarray(prompts.index)),
                              jnp.asarray(prompts.ids), jnp.asarray(prompts.free), changed)


def change_counts(key: jax.Array, prompts: atm.Prompts, sample_index) -> jax.Array:
  """[P, S] numbers of changed positions, uniform in 1..free(p) (fold_in(fold_in(key, p), j))."""
  sample_index = jnp.asarray(sample_index, jnp.uint32)
  free = jnp.asarray(prompts.free).sum(-1)                                     # [P]

  def per_prompt(k, n):
    draw = lambda j: jax.random.randint(jax.random.fold_in(k, j), (), 1, jnp.maximum(n, 1) + 1)
    return jnp.minimum(jax.vmap(draw)(sample_index), n)

  return jax.vmap(per_prompt)(atm.prompt_keys(key, jnp.asarray(prompts.index)), free)


class State(NamedTuple):
  iteration: jax.Array   # [] int32 (always 0: the attack takes no steps)


@dataclasses.dataclass(frozen=True)
class RandomAttack:
  """The registry's interface (see `registry.py`) with no iterations."""
  tokens: np.ndarray     # [T] int32 ordinary token ids
  iterations: int = 0
  metrics: tuple[str, ...] = ()

  def compile(self, mesh, steps_per_call: int = 1) -> atm.Compiled:
    del mesh, steps_per_call
    return atm.Compiled(init=lambda ids: State(jnp.zeros((), jnp.int32)), step=None)

  def readout(self, key: jax.Array, state: State, prompts: atm.Prompts,
              sample_index) -> jax.Array:
    del state
    counts = change_counts(jax.random.fold_in(key, _COUNTS), prompts, sample_index)
    return random_substitution(jax.random.fold_in(key, _TOKENS), prompts, counts, self.tokens)


def validate(config) -> None:
  check(config.baseline == "", "baseline", config.baseline,
        "use '' with attack.name='random' (the random attack is the baseline itself)")


def build(sd, config, score_fn, latent_shape, tokens) -> RandomAttack:
  del sd, config, score_fn, latent_shape
  return RandomAttack(np.asarray(tokens, np.int32))


def evaluations(config) -> int:
  del config
  return 0
