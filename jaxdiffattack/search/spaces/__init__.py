"""Search spaces of SAGE (arXiv 2306.00974), one small module each, all with one interface.

A space maps a flat solution vector x [n] (what evosax searches) to the sampler's inputs for one
target — initial latent z [C, h, w] and text hidden states [L, D] — and states its constraint:

  * `latent`:    the initial noise of the clean prompt, kept in distribution (on the sphere of
                 radius √d, or penalised by its KL to N(0, 1));
  * `embedding`: a bounded perturbation of the clean prompt's text-encoder output (or of its input
                 token embeddings), ‖δ_k‖ ≤ ε ‖e_k‖ per token position;
  * `token`:     one extra input token embedding appended to the prompt (norm-bounded);
  * `prompt`:    natural-language edits (word substitutions / insertions from a vocabulary) that
                 keep the class noun, with a text-similarity constraint to the clean prompt.

Interface (`Space`, see `base`): `num_dims`, `init_means() -> [T, n]` (start of each target's
search), `sample_prior(key) -> [n]` (the random baseline's draw, jit-able), `decode(params, x
[M, n], t) -> Decoded` (latents, hidden states, penalty, feasibility, constraint figures: pure
JAX, jit-able, differentiable where the space is continuous; `decode_population` runs it over the
targets of a generation), `clean(t)` (the unperturbed inputs), and the reporting hooks
`similarity` (for the diversity term), `describe`, `artifacts(x, t)` (files saved for a found
failure) and `annotate_rows` (e.g. the latent space's Non-Gaussian Rate). The registry `SPACES`
picks one by the config's name.
"""

from jaxdiffattack.search.spaces.base import Decoded
from jaxdiffattack.search.spaces.base import Space
from jaxdiffattack.search.spaces.embedding import EmbeddingSpace
from jaxdiffattack.search.spaces.latent import LatentSpace
from jaxdiffattack.search.spaces.prompt import PromptSpace
from jaxdiffattack.search.spaces.token import TokenSpace
from jaxdiffattack.errors import ConfigError

SPACES = {"latent": LatentSpace, "embedding": EmbeddingSpace, "token": TokenSpace,
          "prompt": PromptSpace}


def make_space(name: str, config, sd, params, targets, key) -> Space:
  """The space called `name`, built for these targets (its options in config.<name>)."""
  if name not in SPACES:
    raise ConfigError(f"config.space={name!r} is invalid: use one of {sorted(SPACES)}")
  return SPACES[name](config, sd, params, targets, key)
